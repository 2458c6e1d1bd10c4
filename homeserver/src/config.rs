//! The configuration file (`lattice.toml`), its defaults and `LATTICE_…` environment overrides.
//!
//! Every key has a default, so an empty file (or none) gives the zero-setup server: `localhost`,
//! `127.0.0.1:8008`, SQLite and a signing key in `./lattice-data/`. Every key can be overridden by
//! an environment variable named after its path: `database.url` → `LATTICE_DATABASE_URL`. Unknown
//! keys and bad values are errors that name the key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The server name: the part after `:` in user ids. Cannot change once users exist.
    pub server_name: String,
    /// Where the SQLite database and the signing key live by default.
    pub data_dir: PathBuf,
    pub listen: ListenConfig,
    pub tls: TlsConfig,
    pub database: DatabaseConfig,
    pub signing_key: SigningKeyConfig,
    pub registration: RegistrationConfig,
    pub rooms: RoomsSection,
    pub rate_limits: RateLimitsConfig,
    pub well_known: WellKnownConfig,
    pub sync: SyncConfig,
    pub presence: PresenceConfig,
    pub user_directory: UserDirectoryConfig,
    pub media: MediaSection,
    pub log: LogConfig,
    pub appservices: AppservicesConfig,
    pub federation: FederationConfig,
    pub testing: TestingConfig,
    /// WASM plugins, `[plugins.<id>]` (see `plugins/README.md`).
    pub plugins: std::collections::BTreeMap<String, plugins::PluginSpec>,
    /// Plugin delivery and crash policy; not in the file (tests shorten the waits).
    #[serde(skip)]
    pub plugin_settings: plugins::HostSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Address of the client (and key) API, plain HTTP.
    pub client: SocketAddr,
    /// Address of an HTTPS listener serving the same APIs. Empty: none. Needs `tls.*`.
    pub tls: String,
    /// Behind a reverse proxy: take the client's address from the last `X-Forwarded-For` entry
    /// (the one the proxy added), for rate limits and device addresses.
    pub x_forwarded: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain for the HTTPS listener.
    pub certificate: String,
    /// PEM private key for the HTTPS listener.
    pub private_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AppservicesConfig {
    /// Application-service registration files (YAML), loaded and validated at start-up.
    pub registration_files: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Extra CA certificates (PEM) trusted for outbound federation, besides the public roots.
    pub ca_file: String,
    /// Notaries asked for other servers' keys when a server cannot be reached for its own.
    pub trusted_key_servers: Vec<String>,
    /// Events replayed to a server back from an outage; of older ones, only each room's latest
    /// is sent (the server fetches the rest itself).
    pub catch_up_cap: u32,
    /// DNS servers (`ip` or `ip:port`) asked for SRV and address records instead of the
    /// system's; for split-horizon set-ups and tests. Empty: the system's resolver settings.
    pub nameservers: Vec<String>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            ca_file: String::new(),
            trusted_key_servers: Vec::new(),
            catch_up_cap: 1_000,
            nameservers: Vec::new(),
        }
    }
}

impl FederationConfig {
    /// The `nameservers` as socket addresses (port 53 unless given).
    pub fn nameserver_addresses(&self) -> Result<Vec<std::net::SocketAddr>, ConfigError> {
        self.nameservers
            .iter()
            .map(|entry| {
                entry
                    .parse::<std::net::SocketAddr>()
                    .or_else(|_| {
                        entry.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| ConfigError::Invalid {
                        key: "federation.nameservers",
                        message: format!("`{entry}` is not an IP address with an optional port"),
                    })
            })
            .collect()
    }
}

/// Switches that only make sense for test suites such as SyTest. Lattice refuses to start with
/// any of them on unless every listener is on a loopback address.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// Accept any TLS certificate from other servers (federation) and push gateways.
    pub insecure_federation_tls: bool,
    /// Allow federation and push requests to private and loopback addresses.
    pub allow_private_destinations: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path?mode=rwc` or `postgres://user@host/db`. Empty: SQLite in `data_dir`.
    pub url: String,
    /// SQLite's `synchronous`: `full` (a 200 survives power loss) or `normal` (it survives a
    /// process crash only).
    pub sqlite_synchronous: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: String::new(), sqlite_synchronous: "full".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SigningKeyConfig {
    /// Path of the ed25519 key file. Empty: `<data_dir>/signing.key` (created if missing).
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    pub enabled: bool,
    /// If set, `POST /_synapse/admin/v1/register` creates accounts with an HMAC of this secret
    /// (Synapse's shared-secret registration, used by admin tools and SyTest).
    pub shared_secret: String,
    /// If non-empty, registering needs one of these tokens.
    pub tokens: Vec<String>,
    /// Allow registration without tokens on a non-loopback address. Off by default: an open
    /// homeserver on the internet is an invitation to spammers.
    pub allow_open_on_public_address: bool,
    /// Whether `POST /register?kind=guest` creates guest accounts (the spec's guest access:
    /// a token for reading world-readable rooms and joining those whose `m.room.guest_access`
    /// is `can_join`). Off by default, as in Synapse.
    pub allow_guest_access: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsSection {
    /// Version of new rooms when the client does not ask for one.
    pub default_version: String,
    /// Parsed events kept in memory.
    pub event_cache_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    pub enabled: bool,
    pub register_per_second: f64,
    pub register_burst: u32,
    pub login_per_second: f64,
    pub login_burst: u32,
    pub message_per_second: f64,
    pub message_burst: u32,
    pub password_per_second: f64,
    pub password_burst: u32,
    pub room_creation_per_second: f64,
    pub room_creation_burst: u32,
    pub profile_per_second: f64,
    pub profile_burst: u32,
    pub join_per_second: f64,
    pub join_burst: u32,
    pub invite_per_second: f64,
    pub invite_burst: u32,
    pub anonymous_per_second: f64,
    pub anonymous_burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WellKnownConfig {
    /// Served as `m.homeserver.base_url` at `/.well-known/matrix/client`. Empty: not served.
    pub client_base_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Longest `/sync` long-poll, whatever the client asks.
    pub max_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Track and deliver presence (online/unavailable/offline). Off saves CPU on busy servers.
    pub enabled: bool,
    /// A user goes offline this long after their last sync ended.
    pub offline_after_ms: u64,
    /// An online user without activity (sending, receipts, typing) becomes unavailable after this.
    pub idle_after_ms: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true, offline_after_ms: 30_000, idle_after_ms: 300_000 }
    }
}

/// `[media]`: the media repository (content under `<data_dir>/media`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// Largest upload; `M_TOO_LARGE` above it, and what `/media/config` reports.
    pub max_upload_bytes: u64,
    /// Bytes one user may have uploaded in all; `M_FORBIDDEN` past it.
    pub user_quota_bytes: u64,
    /// Also serve new media on the legacy unauthenticated `/_matrix/media/v3/download`
    /// (off, as Synapse has it: media uploaded while it is off stays authenticated-only).
    pub legacy_unauthenticated_download: bool,
    /// Bytes of other servers' media kept cached; the oldest fetched are dropped past it.
    pub remote_cache_bytes: u64,
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            max_upload_bytes: 100 << 20,
            user_quota_bytes: 10 << 30,
            legacy_unauthenticated_download: false,
            remote_cache_bytes: 10 << 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct UserDirectoryConfig {
    /// Let the user directory find every user, not only room mates and members of public rooms.
    pub search_all_users: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `info,homeserver_rooms=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            data_dir: PathBuf::from("./lattice-data"),
            listen: ListenConfig::default(),
            tls: TlsConfig::default(),
            database: DatabaseConfig::default(),
            signing_key: SigningKeyConfig::default(),
            registration: RegistrationConfig::default(),
            rooms: RoomsSection::default(),
            rate_limits: RateLimitsConfig::default(),
            well_known: WellKnownConfig::default(),
            sync: SyncConfig::default(),
            presence: PresenceConfig::default(),
            user_directory: UserDirectoryConfig::default(),
            media: MediaSection::default(),
            log: LogConfig::default(),
            appservices: AppservicesConfig::default(),
            federation: FederationConfig::default(),
            testing: TestingConfig::default(),
            plugins: Default::default(),
            plugin_settings: Default::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { client: SocketAddr::from(([127, 0, 0, 1], 8008)), tls: String::new(), x_forwarded: false }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            shared_secret: String::new(),
            tokens: Vec::new(),
            allow_open_on_public_address: false,
            allow_guest_access: false,
        }
    }
}

impl Default for RoomsSection {
    fn default() -> Self {
        Self { default_version: "12".into(), event_cache_size: 20_000 }
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            register_per_second: 0.17,
            register_burst: 3,
            login_per_second: 0.5,
            login_burst: 5,
            message_per_second: 10.0,
            message_burst: 50,
            password_per_second: 0.17,
            password_burst: 5,
            room_creation_per_second: 0.05,
            room_creation_burst: 10,
            profile_per_second: 0.1,
            profile_burst: 5,
            join_per_second: 0.1,
            join_burst: 10,
            invite_per_second: 0.3,
            invite_burst: 10,
            anonymous_per_second: 1.0,
            anonymous_burst: 20,
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self { max_timeout_ms: 60_000 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: "text".into() }
    }
}

/// A configuration problem, reported as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Every configurable key, as `section.key`. Environment overrides and the example file are
/// checked against this list by tests.
pub const KEYS: &[&str] = &[
    "server_name",
    "data_dir",
    "listen.client",
    "listen.tls",
    "listen.x_forwarded",
    "tls.certificate",
    "tls.private_key",
    "database.url",
    "database.sqlite_synchronous",
    "signing_key.path",
    "registration.enabled",
    "registration.shared_secret",
    "registration.tokens",
    "registration.allow_open_on_public_address",
    "registration.allow_guest_access",
    "rooms.default_version",
    "rooms.event_cache_size",
    "rate_limits.enabled",
    "rate_limits.register_per_second",
    "rate_limits.register_burst",
    "rate_limits.login_per_second",
    "rate_limits.login_burst",
    "rate_limits.message_per_second",
    "rate_limits.message_burst",
    "rate_limits.password_per_second",
    "rate_limits.password_burst",
    "rate_limits.room_creation_per_second",
    "rate_limits.room_creation_burst",
    "rate_limits.profile_per_second",
    "rate_limits.profile_burst",
    "rate_limits.join_per_second",
    "rate_limits.join_burst",
    "rate_limits.invite_per_second",
    "rate_limits.invite_burst",
    "rate_limits.anonymous_per_second",
    "rate_limits.anonymous_burst",
    "well_known.client_base_url",
    "sync.max_timeout_ms",
    "presence.enabled",
    "presence.offline_after_ms",
    "presence.idle_after_ms",
    "user_directory.search_all_users",
    "media.max_upload_bytes",
    "media.user_quota_bytes",
    "media.legacy_unauthenticated_download",
    "media.remote_cache_bytes",
    "log.level",
    "log.format",
    "appservices.registration_files",
    "federation.ca_file",
    "federation.trusted_key_servers",
    "federation.catch_up_cap",
    "federation.nameservers",
    "testing.insecure_federation_tls",
    "testing.allow_private_destinations",
];

/// `section.key` → `LATTICE_SECTION_KEY`.
pub fn env_name(key: &str) -> String {
    format!("LATTICE_{}", key.replace('.', "_").to_uppercase())
}

fn set_path(root: &mut toml::Table, key: &str, value: toml::Value) {
    let mut table = root;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            table.insert(part.to_owned(), value);
            return;
        }
        let entry = table.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        table = entry.as_table_mut().expect("just made a table");
    }
}

fn get_path<'a>(root: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut value: Option<&toml::Value> = None;
    let mut table = root;
    for part in key.split('.') {
        let v = table.get(part)?;
        value = Some(v);
        if let Some(t) = v.as_table() {
            table = t;
        }
    }
    value
}

/// Interprets an environment value for `key`: strings stay strings, anything else is TOML.
fn env_value(defaults: &toml::Table, key: &str, raw: &str) -> Result<toml::Value, String> {
    if matches!(get_path(defaults, key), Some(toml::Value::String(_))) {
        return Ok(toml::Value::String(raw.to_owned()));
    }
    let doc: toml::Table =
        format!("v = {raw}").parse().map_err(|e: toml::de::Error| e.message().to_owned())?;
    doc.get("v").cloned().ok_or_else(|| "empty value".to_owned())
}

impl Config {
    /// Loads the file (if given), applies environment overrides from `env`, and validates.
    pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(path) => {
                let display = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: display.clone(), source })?;
                let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: display.clone(),
                    message: one_line(&e.to_string()),
                })?;
                (table, display)
            }
            None => (toml::Table::new(), "(defaults)".to_owned()),
        };
        let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
        for key in KEYS {
            let var = env_name(key);
            if let Some(raw) = env(&var) {
                let value = env_value(&defaults, key, &raw)
                    .map_err(|message| ConfigError::Env { var: var.clone(), message })?;
                set_path(&mut table, key, value);
            }
        }
        let config: Config = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
            ConfigError::Parse { path: origin, message: one_line(&e.to_string()) }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values the types alone cannot.
    /// `database.sqlite_synchronous` as the storage option.
    pub fn sqlite_synchronous(&self) -> Result<homeserver_storage::Synchronous, ConfigError> {
        match self.database.sqlite_synchronous.as_str() {
            "full" => Ok(homeserver_storage::Synchronous::Full),
            "normal" => Ok(homeserver_storage::Synchronous::Normal),
            other => Err(ConfigError::Invalid {
                key: "database.sqlite_synchronous",
                message: format!("`{other}` is neither `full` nor `normal`"),
            }),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        ruma::ServerName::parse(&self.server_name).map_err(|e| ConfigError::Invalid {
            key: "server_name",
            message: format!("`{}` is not a valid server name: {e}", self.server_name),
        })?;
        for notary in &self.federation.trusted_key_servers {
            ruma::ServerName::parse(notary).map_err(|e| ConfigError::Invalid {
                key: "federation.trusted_key_servers",
                message: format!("`{notary}` is not a valid server name: {e}"),
            })?;
        }
        self.federation.nameserver_addresses()?;
        let url = self.database_url();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            return Err(ConfigError::Invalid {
                key: "database.url",
                message: format!("`{url}` must start with sqlite:// or postgres://"),
            });
        }
        self.sqlite_synchronous()?;
        let version = ruma::RoomVersionId::try_from(self.rooms.default_version.as_str()).ok();
        if !version.as_ref().is_some_and(homeserver_rooms::versions::is_supported) {
            return Err(ConfigError::Invalid {
                key: "rooms.default_version",
                message: format!(
                    "room version `{}` is not supported (1 to 12 are)",
                    self.rooms.default_version
                ),
            });
        }
        let tls = self.tls_address()?;
        if tls.is_some() && (self.tls.certificate.is_empty() || self.tls.private_key.is_empty()) {
            return Err(ConfigError::Invalid {
                key: "listen.tls",
                message: "an HTTPS listener needs tls.certificate and tls.private_key".into(),
            });
        }
        let testing = self.testing.insecure_federation_tls || self.testing.allow_private_destinations;
        let all_loopback = self.listen.client.ip().is_loopback() && tls.is_none_or(|a| a.ip().is_loopback());
        if testing && !all_loopback {
            return Err(ConfigError::Invalid {
                key: "testing",
                message: "testing switches are on, so every listener must be on a loopback address".into(),
            });
        }
        if self.registration.enabled
            && self.registration.tokens.is_empty()
            && !all_loopback
            && !self.registration.allow_open_on_public_address
        {
            return Err(ConfigError::Invalid {
                key: "registration.enabled",
                message: "open registration on a non-loopback address needs registration.tokens, \
                     or registration.allow_open_on_public_address = true"
                    .into(),
            });
        }
        for (id, spec) in &self.plugins {
            let valid_id = !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
            if !valid_id {
                return Err(ConfigError::Invalid {
                    key: "plugins",
                    message: format!("plugin id `{id}` must be 1 to 64 of a-z, 0-9, `_`, `.`, `-`"),
                });
            }
            spec.grants.validate().map_err(|message| ConfigError::Invalid {
                key: "plugins",
                message: format!("plugin {id}: {message}"),
            })?;
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid {
                key: "log.format",
                message: "must be `text` or `json`".into(),
            });
        }
        Ok(())
    }

    /// The HTTPS listener address, if one is configured.
    pub fn tls_address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.tls.is_empty() {
            return Ok(None);
        }
        let addr = std::net::ToSocketAddrs::to_socket_addrs(self.listen.tls.as_str())
            .ok()
            .and_then(|mut addrs| addrs.find(|a| a.is_ipv4()).or_else(|| self.listen.tls.parse().ok()))
            .ok_or_else(|| ConfigError::Invalid {
                key: "listen.tls",
                message: format!("`{}` is not an address", self.listen.tls),
            })?;
        Ok(Some(addr))
    }

    /// The database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}?mode=rwc", self.data_dir.join("lattice.db").display())
        } else {
            self.database.url.clone()
        }
    }

    pub fn signing_key_path(&self) -> PathBuf {
        if self.signing_key.path.is_empty() {
            self.data_dir.join("signing.key")
        } else {
            PathBuf::from(&self.signing_key.path)
        }
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The commented example printed by `lattice generate-config`.
pub const EXAMPLE: &str = r#"# Lattice configuration. Every key is optional; the values shown are the defaults.
# Every key can also be set by an environment variable: `database.url` -> LATTICE_DATABASE_URL.

# The server name: the part after ':' in user ids (@alice:example.org). Cannot change later.
server_name = "localhost"

# Where the default SQLite database and the signing key are kept.
data_dir = "./lattice-data"

[listen]
# Address of the client-server API (and the key server), plain HTTP.
client = "127.0.0.1:8008"
# Address of an HTTPS listener serving the same APIs, e.g. "0.0.0.0:8448". Empty: none.
tls = ""
# Behind a reverse proxy: the client's address is the last X-Forwarded-For entry (the one the
# proxy added), for rate limits and device addresses. Only turn on behind a proxy that sets it.
x_forwarded = false

[tls]
# PEM certificate chain and private key for the HTTPS listener.
certificate = ""
private_key = ""

[database]
# "sqlite://path/to/file.db?mode=rwc" or "postgres://user:password@host:5432/dbname".
# Empty: SQLite at <data_dir>/lattice.db.
url = ""
# SQLite only: "full" (every acknowledged write survives power loss; one fsync per group commit)
# or "normal" (it survives a crash of the process, not of the machine).
sqlite_synchronous = "full"

[signing_key]
# ed25519 key file (Synapse's format). Empty: <data_dir>/signing.key, created if missing.
path = ""

[registration]
enabled = true
# If set, POST /_synapse/admin/v1/register creates accounts with an HMAC of this secret.
shared_secret = ""
# If non-empty, registration requires one of these tokens (m.login.registration_token).
tokens = []
# Open registration (no tokens) is refused on a non-loopback address unless this is true.
allow_open_on_public_address = false
# Guest accounts (POST /register?kind=guest): read world-readable rooms, join rooms whose
# m.room.guest_access is can_join, and little else.
allow_guest_access = false

[rooms]
# Version of rooms created without an explicit room_version (1 to 12 are supported).
default_version = "12"
# Parsed events kept in memory.
event_cache_size = 20000

[rate_limits]
enabled = true
# Per client address.
register_per_second = 0.17
register_burst = 3
login_per_second = 0.5
login_burst = 5
# Per user: messages, state events and redactions.
message_per_second = 10.0
message_burst = 50
# Per account and per client address: every password check (login, and re-authentication to delete devices, change the password or deactivate).
password_per_second = 0.17
password_burst = 5
# Per user: createRoom and room upgrades.
room_creation_per_second = 0.05
room_creation_burst = 10
# Per user: display name and avatar changes (each updates every joined room).
profile_per_second = 0.1
profile_burst = 5
# Per user: joins and knocks.
join_per_second = 0.1
join_burst = 10
# Per inviting user.
invite_per_second = 0.3
invite_burst = 10
# Per client address: unauthenticated lookups (public room directory, registration token validity, shared-secret nonces).
anonymous_per_second = 1.0
anonymous_burst = 20

[well_known]
# Served as m.homeserver.base_url at /.well-known/matrix/client. Empty: not served.
client_base_url = ""

[sync]
# Longest /sync long-poll, whatever the client asks for.
max_timeout_ms = 60000

[presence]
# Track and deliver presence (online/unavailable/offline). Off saves CPU on busy servers.
enabled = true
# A user goes offline this long after their last sync ended (a sync in flight keeps them online).
offline_after_ms = 30000
# An online user without activity (sending, receipts, typing) becomes unavailable after this long.
idle_after_ms = 300000

[user_directory]
# Find every user, not only room mates and members of public rooms.
search_all_users = false

[media]
# Largest upload in bytes (M_TOO_LARGE above it; what /media/config reports).
max_upload_bytes = 104857600
# Bytes one user may have uploaded in all (M_FORBIDDEN past it).
user_quota_bytes = 10737418240
# Also serve new media on the legacy unauthenticated /_matrix/media/v3/download. Off, as Synapse
# has it: media uploaded while it is off is served to authenticated requests only.
legacy_unauthenticated_download = false
# Bytes of other servers' media kept cached; the oldest fetched are dropped past it (and
# fetched again when asked for).
remote_cache_bytes = 10737418240

[log]
# A tracing filter, e.g. "info" or "info,homeserver_rooms=debug".
level = "info"
# "text" or "json".
format = "text"

[appservices]
# Application-service registration files (YAML), loaded and validated at start-up.
registration_files = []

[federation]
# Extra CA certificates (PEM) trusted for outbound federation, besides the public roots.
ca_file = ""
# Notaries asked for other servers' keys when a server cannot be reached for its own
# (e.g. ["matrix.org"]). None by default.
trusted_key_servers = []
# Events replayed to a server back from an outage; of older ones only each room's latest is
# sent, and that server fetches the rest itself (get_missing_events, backfill).
catch_up_cap = 1000
# DNS servers ("ip" or "ip:port") asked for SRV and address records instead of the system's.
nameservers = []

[testing]
# Only for test suites (SyTest). With any of these on, every listener must be on loopback.
# Accept any TLS certificate from other servers and push gateways.
insecure_federation_tls = false
# Allow federation and push requests to private and loopback addresses.
allow_private_destinations = false

# WASM plugins, one table each (none by default; see plugins/README.md):
# [plugins.echo]
# path = "plugins/examples/target/wasm32-wasip2/release/echo_bot.wasm"
# user = "echo"                    # the bot's localpart (default: the plugin id)
# config = { greeting = "hi" }     # checked against what the plugin declares
# [plugins.echo.grants]
# storage_mb = 10                  # key-value store quota
# memory_mb = 64                   # linear memory per instance
# cpu_ms_per_call = 200            # guest CPU per call (time in host calls excluded)
# wall_ms_per_call = 30000         # wall-clock time per call
# sends_per_second = 10            # events sent per second (bursts of twice that)
# max_timers = 1000
# http_hosts = []                  # hosts it may send HTTP requests to ("host", "*.domain", ":port")
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn example_parses_to_the_defaults_and_mentions_every_key() {
        let parsed: Config = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(toml::to_string(&parsed).unwrap(), toml::to_string(&Config::default()).unwrap());
        let table: toml::Table = EXAMPLE.parse().unwrap();
        for key in KEYS {
            assert!(get_path(&table, key).is_some(), "example lacks {key}");
        }
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let mut leaves = Vec::new();
        collect_leaves(&defaults, "", &mut leaves);
        for leaf in leaves {
            assert!(KEYS.contains(&leaf.as_str()), "KEYS lacks {leaf}");
        }
    }

    fn collect_leaves(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in table {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) => collect_leaves(t, &path, out),
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn env_overrides_keys_with_types() {
        let env = |var: &str| match var {
            "LATTICE_DATABASE_URL" => Some("postgres://u@h/db".to_owned()),
            "LATTICE_REGISTRATION_ENABLED" => Some("false".to_owned()),
            "LATTICE_SERVER_NAME" => Some("example.org".to_owned()),
            "LATTICE_RATE_LIMITS_LOGIN_BURST" => Some("7".to_owned()),
            _ => None,
        };
        let config = Config::load(None, env).unwrap();
        assert_eq!(config.database_url(), "postgres://u@h/db");
        assert!(!config.registration.enabled);
        assert_eq!(config.server_name, "example.org");
        assert_eq!(config.rate_limits.login_burst, 7);
    }

    #[test]
    fn errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("lattice-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("unknown.toml");
        std::fs::write(&file, "[database]\nurll = \"x\"\n").unwrap();
        let err = Config::load(Some(&file), no_env).unwrap_err().to_string();
        assert!(err.contains("urll"), "{err}");
        assert!(!err.contains('\n'));

        std::fs::write(&file, "[rate_limits]\nlogin_burst = \"many\"\n").unwrap();
        let err = Config::load(Some(&file), no_env).unwrap_err().to_string();
        assert!(err.contains("login_burst"), "{err}");

        std::fs::write(&file, "[rooms]\ndefault_version = \"13\"\n").unwrap();
        let err = Config::load(Some(&file), no_env).unwrap_err().to_string();
        assert!(err.contains("rooms.default_version"), "{err}");

        let env = |var: &str| (var == "LATTICE_SYNC_MAX_TIMEOUT_MS").then(|| "soon".to_owned());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("LATTICE_SYNC_MAX_TIMEOUT_MS"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn open_registration_on_a_public_address_is_refused() {
        let env = |var: &str| (var == "LATTICE_LISTEN_CLIENT").then(|| "0.0.0.0:8008".to_owned());
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("registration"), "{err}");
        let env = |var: &str| match var {
            "LATTICE_LISTEN_CLIENT" => Some("0.0.0.0:8008".to_owned()),
            "LATTICE_REGISTRATION_TOKENS" => Some("[\"secret\"]".to_owned()),
            _ => None,
        };
        assert!(Config::load(None, env).is_ok());
    }
}
