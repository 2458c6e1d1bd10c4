//! The tracing subscriber: text or JSON lines on stderr, filtered by `log.level` (or `RUST_LOG`).

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber (once per process).
pub fn init(level: &str, format: &str) {
    // ruma's auth checks log every decision at info; keep them quiet unless asked for.
    let default = format!("{level},ruma_state_res=warn,sqlx=warn");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        "json" => builder.json().try_init(),
        _ => builder.try_init(),
    };
}
