//! The `lattice` binary: runs the homeserver, prints an example config, administers users.
//!
//! Exit status: 0 on success, 2 when the configuration, the database or the signing key cannot be
//! used (with a one-line message), 1 for other failures.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use homeserver::{Server, admin, config::Config, logging};
use tracing::{info, warn};

/// mimalloc returns freed memory to the OS far more readily than glibc's allocator, which keeps the
/// resident size of a long-running server close to what it actually uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "lattice", version, about = "Lattice, a Matrix homeserver")]
struct Cli {
    /// Path of the TOML configuration file (all keys optional).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the homeserver (the default).
    Run,
    /// Print a commented example configuration with every key and its default.
    GenerateConfig,
    /// Manage user accounts on the configured database.
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect outbound federation on the configured database.
    #[command(subcommand)]
    Federation(FederationCommand),
    /// Manage the running server's media repository (through its admin API).
    Media {
        /// A server admin's access token.
        #[arg(long, env = "LATTICE_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        #[command(subcommand)]
        command: MediaCommand,
    },
    /// Manage the running server's WASM plugins (through its admin API).
    Plugin {
        /// A server admin's access token.
        #[arg(long, env = "LATTICE_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Every plugin: state, version, deliveries, crashes, dead letters, last error.
    List,
    /// Start delivering to a disabled (or suspended) plugin again.
    Enable { id: String },
    /// Stop calling a plugin; its events wait (kept across restarts).
    Disable { id: String },
    /// Load the plugin's component again; the running version stays if the new one fails.
    Reload { id: String },
    /// The plugin's recent log lines.
    Logs { id: String },
    /// The events the plugin failed to take; `--replay` delivers them again (all, or `--at`).
    DeadLetters {
        id: String,
        #[arg(long)]
        replay: bool,
        /// With --replay: only the dead letter at this stream position.
        #[arg(long, requires = "replay")]
        at: Option<i64>,
    },
}

#[derive(Subcommand)]
enum FederationCommand {
    /// List the servers this one sends to: queued positions, failures, next retry, last success.
    List,
    /// Clear a destination's backoff (a running server retries it when its current wait ends;
    /// the admin API's reset_connection retries at once).
    Reset { destination: String },
}

#[derive(Subcommand)]
enum MediaCommand {
    /// Delete cached copies of other servers' media fetched longer ago than `--before`
    /// (days: `30` or `30d`); they are fetched again when next asked for.
    PurgeRemote {
        #[arg(long)]
        before: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prints the password if none was given.
    Create {
        /// Localpart (`alice`) or full user id (`@alice:server`).
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        password: Option<String>,
    },
    /// Set a new password (and log out every device).
    ResetPassword {
        name: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Deactivate a user: leave their rooms, remove their password and sessions.
    Deactivate { name: String },
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("lattice: {message}");
    ExitCode::from(code)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GenerateConfig) = cli.command {
        print!("{}", homeserver::config::EXAMPLE);
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(cli.config.as_deref(), |var| std::env::var(var).ok()) {
        Ok(config) => config,
        Err(e) => return fail(2, e),
    };
    logging::init(&config.log.level, &config.log.format);
    if let Some(Command::Plugin { token, command }) = cli.command {
        return plugin_command(&config, &token, command).await;
    }
    if let Some(Command::Media { token, command: MediaCommand::PurgeRemote { before } }) = cli.command {
        return match homeserver::media_cli::purge_remote(&config, &token, &before).await {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(message) => fail(1, message),
        };
    }
    let config = match cli.command {
        // Only the serving process runs plugins; other commands do not load them.
        Some(Command::User(_) | Command::Federation(_)) => Config { plugins: Default::default(), ..config },
        _ => config,
    };
    let server = match Server::build(config).await {
        Ok(server) => server,
        Err(e) => return fail(2, e),
    };
    match cli.command {
        None | Some(Command::Run) => run(server).await,
        Some(Command::User(command)) => user_command(&server, command).await,
        Some(Command::Federation(command)) => federation_command(&server, command).await,
        Some(Command::GenerateConfig | Command::Plugin { .. } | Command::Media { .. }) => {
            unreachable!("handled above")
        }
    }
}

async fn run(server: Server) -> ExitCode {
    let listener = match server.bind().await {
        Ok(l) => l,
        Err(e) => return fail(2, e),
    };
    match admin::leave_rooms_of_deactivated_users(&server).await {
        Ok(0) => {}
        Ok(n) => info!(memberships = n, "deactivated users left their rooms"),
        Err(e) => warn!(error = %e, "could not process deactivated users"),
    }
    let config = &server.config;
    if config.registration.enabled && config.registration.tokens.is_empty() {
        if config.listen.client.ip().is_loopback() {
            warn!(
                "open registration is enabled because the server only listens on loopback ({}); \
                 configure registration.tokens before exposing it",
                config.listen.client
            );
        } else {
            warn!("open registration is enabled on a public address (allow_open_on_public_address)");
        }
    }
    if let Ok(Some(tls)) = config.tls_address() {
        info!(address = %tls, "HTTPS listener ready");
    }
    info!(
        server_name = %config.server_name,
        address = %config.listen.client,
        database = %homeserver_storage::redact_url(&config.database_url()),
        "Lattice is ready for clients at http://{}",
        config.listen.client
    );
    match Arc::new(server).serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Closes the database, then prints a command's outcome: its message, or the error (status 1).
async fn finish(server: &Server, result: Result<String, admin::AdminError>) -> ExitCode {
    server.db.close().await;
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, e),
    }
}

async fn plugin_command(config: &Config, token: &str, command: PluginCommand) -> ExitCode {
    use homeserver::plugin_cli::{PluginRequest, run};
    let request = match command {
        PluginCommand::List => PluginRequest::List,
        PluginCommand::Enable { id } => PluginRequest::Enable(id),
        PluginCommand::Disable { id } => PluginRequest::Disable(id),
        PluginCommand::Reload { id } => PluginRequest::Reload(id),
        PluginCommand::Logs { id } => PluginRequest::Logs(id),
        PluginCommand::DeadLetters { id, replay: false, .. } => PluginRequest::DeadLetters(id),
        PluginCommand::DeadLetters { id, replay: true, at } => PluginRequest::Replay(id, at),
    };
    match run(config, token, request).await {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => fail(1, message),
    }
}

async fn federation_command(server: &Server, command: FederationCommand) -> ExitCode {
    let result = match command {
        FederationCommand::List => admin::destinations_table(server).await,
        FederationCommand::Reset { destination } => admin::reset_destination(server, &destination).await,
    };
    finish(server, result).await
}

async fn user_command(server: &Server, command: UserCommand) -> ExitCode {
    let result = match command {
        UserCommand::Create { name, admin: is_admin, password } => {
            let generated = password.is_none();
            admin::create_user(server, &name, password, is_admin).await.map(|(id, pw)| {
                if generated { format!("created {id} with password {pw}") } else { format!("created {id}") }
            })
        }
        UserCommand::ResetPassword { name, password } => {
            let generated = password.is_none();
            admin::reset_password(server, &name, password).await.map(|(id, pw)| {
                if generated {
                    format!("new password for {id}: {pw}")
                } else {
                    format!("password of {id} changed")
                }
            })
        }
        UserCommand::Deactivate { name } => admin::deactivate(server, &name)
            .await
            .map(|id| format!("deactivated {id}; they leave their rooms when the server next starts")),
    };
    finish(server, result).await
}
