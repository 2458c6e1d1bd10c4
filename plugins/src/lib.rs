//! plugins: the WASM plugin host. Plugins are WebAssembly components built against the WIT
//! package in `plugins/wit` (`lattice:plugin@0.1.0`); the host runs them on wasmtime, sandboxed
//! (no filesystem, network or environment; memory capped per plugin; CPU cut off per call
//! through epoch interruption), and delivers the event stream to them from a persisted cursor.
//!
//! Layout:
//! - [`spec`]: a plugin as `lattice.toml` declares it (`[plugins.<id>]`), its grants, and the
//!   check of its `config` table against what the plugin declares.
//! - `engine`: the wasmtime engine (async, epochs, pooling allocator) and its epoch ticker;
//!   `cache`: components precompiled once, by content hash.
//! - `instance`: one instantiated plugin and the guarded calls into it (CPU budget, wall-clock
//!   deadline, traps turned into errors and the instance discarded).
//! - `host`: the imports — Matrix actions (`host::matrix`), `kv`, `timers`, `log`, `config`;
//!   `http`: outbound `wasi:http` for plugins granted hosts (allow-list, secrets put in by the
//!   host, size and rate bounds).
//! - `delivery`: the per-plugin dispatcher (cursor, interest, retries, dead letters, timers);
//!   `interest`: which events a plugin is offered and which are commands.
//! - `breaker`: the crash circuit breaker; `coalesce`: edits of one message at most once a second.
//! - `context`: a plugin's state across reloads (identity, grants, rate buckets, log, the hop
//!   to the server's runtime); `plugin`: one plugin, its loaded version and the one way into
//!   guest code (`Plugin::call`).
//! - [`PluginHost`] (`manager`): starting, reloading with rollback, enabling and disabling
//!   plugins, and what the admin sees.
//!
//! Guest code runs on a runtime of its own, so a plugin spending its CPU budget never takes a
//! thread from client requests; host imports hop back to the server's runtime, so room actors,
//! database connections and tasks they start never live on the guests' thread. Persistence and
//! delivery to clients never wait on plugins.

mod bindings;
mod breaker;
mod cache;
mod coalesce;
mod context;
mod delivery;
mod engine;
mod ephemeral;
mod host;
mod http;
mod instance;
mod interest;
mod manager;
mod net;
mod plugin;
mod policy;
pub mod spec;
pub mod webhook;

pub use context::LogLine;
pub use manager::{HostSettings, PluginHost, PluginStatus, Services};
pub use spec::{Grants, PluginSpec};
pub use webhook::{WebhookError, WebhookRequest, WebhookResponse};

/// Why a plugin could not be loaded, started or managed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {id}: cannot read {path}: {source}")]
    Read { id: String, path: String, source: std::io::Error },
    #[error("plugin {id}: {message}")]
    Load { id: String, message: String },
    #[error("plugin {id}: init failed: {message}")]
    Init { id: String, message: String },
    #[error("plugin {id}: configuration: {message}")]
    Config { id: String, message: String },
    #[error("no plugin {0}")]
    Unknown(String),
    #[error(transparent)]
    Storage(#[from] homeserver_storage::StorageError),
}
