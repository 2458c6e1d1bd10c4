//! What the `bridge` world adds: `puppets` (accounts in the plugin's user namespaces, owned by
//! it) and `net` (connections the host keeps, see [`crate::net`]). A puppet may act only once
//! its account exists and belongs to this plugin: a namespace regex alone never lets a plugin
//! act as an account someone registered before the grant, or another plugin's puppet.

use std::sync::Arc;

use homeserver_core::time::now_millis;
use ruma::{OwnedUserId, UserId};

use super::storage;
use crate::{
    bindings::{net, puppets, types},
    context::PluginCtx,
    instance::PluginState,
};

type R<T> = Result<T, types::Error>;

impl PluginCtx {
    /// A user id of the plugin's namespaces on this server that no one else claims
    /// exclusively (not checked to exist).
    fn namespace_user(&self, user: &str) -> R<OwnedUserId> {
        let id = UserId::parse(user).map_err(|_| types::Error::Invalid(format!("not a user id: {user}")))?;
        if id.server_name() != self.user.server_name()
            || id == self.user
            || !self.claim.covers_user(id.as_str())
        {
            return Err(types::Error::Denied(format!("{user} is not in the plugin's namespaces")));
        }
        match self.services.rooms.config().claims.user_reserved_by(id.as_str()) {
            Some(owner) if owner != self.claim.owner => {
                Err(types::Error::Denied(format!("{user} is reserved by {owner}")))
            }
            _ => Ok(id),
        }
    }

    /// Whether the user is the plugin's own: its bot or one of its puppets (events of theirs
    /// are not offered to it, and its policy does not check them).
    pub(crate) fn is_own(&self, user: &str) -> bool {
        user == self.user.as_str()
            || (self.claim.covers_user(user) && self.puppets.lock().expect("puppets poisoned").contains(user))
    }

    /// A puppet the plugin may act as: in its namespaces, with an account it owns.
    pub(crate) async fn puppet(&self, user: &str) -> R<OwnedUserId> {
        let id = self.namespace_user(user)?;
        if self.puppets.lock().expect("puppets poisoned").contains(id.as_str()) {
            return Ok(id);
        }
        match self.services.db.plugin_owner(id.as_str()).await.map_err(storage)? {
            Some(owner) if owner == self.id => {
                self.remember_puppet(&id);
                Ok(id)
            }
            Some(_) => Err(types::Error::Denied(format!("{user} belongs to another plugin"))),
            None => Err(types::Error::Denied(format!(
                "{user} is not a puppet of this plugin (puppets.ensure makes one)"
            ))),
        }
    }

    /// Remembers a puppet. Kept whole (never evicted): the set is also what tells the
    /// plugin's own events apart, and it grows only as fast as puppets are created.
    pub(crate) fn remember_puppet(&self, id: &UserId) {
        self.remember_puppet_id(id.to_string());
    }

    pub(crate) fn remember_puppet_id(&self, id: String) {
        self.puppets.lock().expect("puppets poisoned").insert(id);
    }

    /// `puppets.ensure`: the account, and its display name when it changed.
    async fn ensure_puppet(self: Arc<Self>, user: String, displayname: Option<String>) -> R<()> {
        let id = self.namespace_user(&user)?;
        let known = self.puppets.lock().expect("puppets poisoned").contains(id.as_str());
        let db = &self.services.db;
        if !known {
            self.take(|b| &mut b.puppets, 1.0)?;
            let name = displayname.clone().unwrap_or_else(|| id.localpart().to_owned());
            if name.chars().count() > 256 {
                return Err(types::Error::Invalid("display names are at most 256 characters".into()));
            }
            if !db
                .ensure_plugin_user(id.as_str(), &self.id, &name, now_millis() as i64)
                .await
                .map_err(storage)?
            {
                return Err(types::Error::Denied(format!("{user} is an account that is not this plugin's")));
            }
            self.remember_puppet(&id);
        }
        let Some(name) = displayname else { return Ok(()) };
        let current = db.user(id.as_str()).await.map_err(storage)?.and_then(|u| u.displayname);
        if current.as_deref() == Some(name.as_str()) {
            return Ok(());
        }
        self.take(|b| &mut b.puppets, 1.0)?;
        self.apply_profile(&id, Some(name), None).await
    }
}

impl puppets::Host for PluginState {
    async fn ensure(&mut self, user: String, displayname: Option<String>) -> R<()> {
        on_main!(self, ensure_puppet(user, displayname))
    }

    async fn owns(&mut self, user: String) -> bool {
        self.rearm();
        self.ctx.namespace_user(&user).is_ok()
    }
}

impl net::Host for PluginState {
    async fn open(&mut self, name: String, destination: String, options: net::OpenOptions) -> R<bool> {
        self.rearm();
        self.ctx.open_connection(name, destination, options)
    }

    async fn send(&mut self, name: String, message: String) -> R<()> {
        self.rearm();
        self.ctx.take(|b| &mut b.net, 1.0)?;
        self.ctx.net.send(&name, message)
    }

    async fn close(&mut self, name: String) -> bool {
        self.rearm();
        self.ctx.net.close(&name, &self.ctx.main)
    }

    async fn list(&mut self) -> Vec<String> {
        self.rearm();
        self.ctx.net.names()
    }
}
