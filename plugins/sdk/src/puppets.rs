//! Puppets: the users of the plugin's namespaces (`grants.namespaces.users` in `lattice.toml`),
//! which a bridge creates and acts as (the `puppets` import of the `bridge` world).
//!
//! A puppet is an account the plugin owns: nobody logs in as it, and clients cannot register ids
//! in an exclusive namespace. Create it with [`ensure`], then pass it to the sending calls
//! ([`crate::matrix::as_user`], [`crate::matrix::send_json_as`], [`crate::matrix::join_as`]…).
//!
//! ```ignore
//! use lattice_plugin_sdk::{matrix, puppets};
//!
//! let bob = "@irc_bob:example.org";
//! puppets::ensure(bob, Some("bob"))?;            // the account, display name "bob"
//! matrix::join_as(bob, room)?;
//! matrix::send_text_as(bob, room, "hello from IRC")?;
//! ```

use crate::Result;
use crate::bindings::lattice::plugin::puppets as host;

/// Creates the puppet's account unless it exists, and sets its display name when one is given
/// (and differs). `user` must be in the plugin's user namespaces, else
/// [`Error::Denied`](crate::Error::Denied).
pub fn ensure(user: &str, displayname: Option<&str>) -> Result<()> {
    host::ensure(user, displayname)
}

/// Whether `user` is in the plugin's user namespaces (one of its puppets, or one it may create).
pub fn owns(user: &str) -> bool {
    host::owns(user)
}
