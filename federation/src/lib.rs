//! federation: everything server-to-server. So far: the server's signing key (kept on disk in the
//! format Synapse uses) and its publication at `GET /_matrix/key/v2/server`. Sending and receiving
//! events between servers comes with the federation issue.
//!
//! Layout:
//! - [`signing_key`]: loading or creating the key file.
//! - [`server_keys`]: the key server route ([`routes`]).

pub mod server_keys;
pub mod signing_key;

pub use server_keys::{FederationState, routes};
