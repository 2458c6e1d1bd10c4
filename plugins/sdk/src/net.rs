//! Network connections the host keeps for the plugin (the `net` import of the `bridge` world).
//!
//! The host owns the sockets: a connection stays open across reloads of the plugin and crashes
//! of its instance, and what happens on it arrives at [`crate::Plugin::on_net`] as a
//! [`NetEvent`], in order per connection. The plugin names each connection itself
//! (`irc/@alice:example.org`); after a reload it finds the ones still open with [`list`] (or by
//! [`open`] answering `false`) and what it knew about them in [`crate::Kv`], where it should keep
//! it.
//!
//! ```ignore
//! use lattice_plugin_sdk::net::{self, NetEvent, OpenOptions};
//!
//! // In a handler: `false` means it was open already (the plugin was reloaded).
//! if net::open("irc/bot", "irc.example.org:6697", OpenOptions::lines().tls(true))? {
//!     sdk::info!("connecting");
//! }
//!
//! // In `Plugin::on_net`:
//! match event {
//!     NetEvent::Connected => net::send(name, "NICK lattice")?,
//!     NetEvent::Message(line) => sdk::debug!("{name}: {line}"),
//!     NetEvent::Closed(why) => sdk::warn!("{name} closed: {why}"),
//! }
//! ```
//!
//! # What the host allows
//!
//! Only destinations listed in the plugin's `grants.net` (`"host:port"` entries in
//! `lattice.toml`); [`open`] fails with [`Error::Denied`](crate::Error::Denied) for anything
//! else, and for private or loopback addresses unless the server allows them for testing.

use crate::Result;
use crate::bindings::lattice::plugin::net as host;

/// What happened on a connection: [`NetEvent::Connected`] (TLS included),
/// [`NetEvent::Message`] (one message, e.g. a line without its `\r\n`) or
/// [`NetEvent::Closed`] (with the reason; the name is free again).
pub use crate::bindings::exports::lattice::plugin::bridge_guest::NetEvent;
/// How a connection's bytes are cut into messages: `Lines` or `Websocket`.
pub use host::Framing;
/// The generated `open-options` record (`framing`, `tls`, `path`), with builder methods.
pub use host::OpenOptions;

impl OpenOptions {
    /// Text lines (`\r\n`-terminated, each received line one message, cut at 8 KiB), without
    /// TLS.
    pub fn lines() -> Self {
        OpenOptions { framing: Framing::Lines, tls: false, path: None }
    }

    /// A WebSocket to the request target `path` (`/socket`), without TLS (`.tls(true)` for
    /// `wss://`): each text message one message, up to 1 MiB.
    pub fn websocket(path: &str) -> Self {
        OpenOptions { framing: Framing::Websocket, tls: false, path: Some(path.to_owned()) }
    }

    /// With TLS or not (the server's name is checked against the public roots).
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }
}

impl Default for OpenOptions {
    /// [`OpenOptions::lines`].
    fn default() -> Self {
        OpenOptions::lines()
    }
}

/// Opens a connection named `name` to `destination` (`host:port`). `Ok(true)`: it is being
/// opened, and [`NetEvent::Connected`] or [`NetEvent::Closed`] follows. `Ok(false)`: a
/// connection of that name is open already, and nothing changed.
pub fn open(name: &str, destination: &str, options: OpenOptions) -> Result<bool> {
    host::open(name, destination, &options)
}

/// Sends one message: with [`Framing::Lines`], one line, to which the host adds `\r\n` (a line
/// break inside is refused as [`Error::Invalid`](crate::Error::Invalid)); with
/// [`Framing::Websocket`], one text message.
pub fn send(name: &str, message: &str) -> Result<()> {
    host::send(name, message)
}

/// Closes a connection; whether one of that name was open. No [`NetEvent::Closed`] follows.
pub fn close(name: &str) -> bool {
    host::close(name)
}

/// The names of the plugin's open connections.
pub fn list() -> Vec<String> {
    host::list()
}

/// Whether a connection of that name is open.
pub fn is_open(name: &str) -> bool {
    list().iter().any(|n| n == name)
}
