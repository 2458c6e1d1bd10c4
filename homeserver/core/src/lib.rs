//! homeserver-core: the vocabulary every other Lattice crate shares. It does no IO.
//!
//! Layout:
//! - [`error`]: the domain error ([`Error`] with an [`ErrorKind`] per Matrix errcode). The mapping
//!   to HTTP status codes lives in `homeserver-http`, not here.
//! - [`streams`]: the global stream-position allocator ([`streams::EventStream`]) that hands out
//!   positions, exposes only the contiguous completed prefix to readers, and wakes the users whose
//!   data changed. Long-poll `/sync` waits on it; nothing polls.
//! - [`token`]: the versioned sync/pagination token.
//! - [`keys`]: the server's ed25519 signing key (loaded and stored by the binary, used by `rooms` to
//!   sign events and by `federation` to publish it).
//! - [`ids`]: small helpers for identifiers (random strings, hashing secrets).
//! - [`time`]: the wall clock in Matrix milliseconds.
//! - [`net`]: which addresses are public — the rule every outbound request others can steer
//!   (federation destinations, plugin HTTP) goes through.

pub mod error;
pub mod ids;
pub mod keys;
pub mod net;
pub mod streams;
pub mod text;
pub mod time;
pub mod token;

pub use error::{Error, ErrorKind, Result};
