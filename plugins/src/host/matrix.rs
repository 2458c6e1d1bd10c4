//! `matrix`: actions as the plugin's bot through the room model, and reads of the rooms the bot
//! is joined to, filtered by history visibility as the bot's client reads would be. Every call
//! that produces room events takes tokens from the plugin's event bucket (a room creation one
//! per event it creates), typing and receipts from the ephemeral bucket, profile changes from
//! the profile bucket; retried sends with a `txn-id` return the first event for free. `as-user`
//! names a puppet: a user of the plugin's namespaces whose account it owns (`puppets`);
//! `origin-ts` dates a puppet's message (bridged history) and is ignored for the bot, as Synapse
//! honours `ts` only from application services. The work runs on the server's runtime
//! (`PluginCtx::on_main`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use homeserver_core::{Error, ErrorKind, time::now_millis};
use homeserver_live::receipts::NewReceipt;
use homeserver_rooms::create::CreateRoom;
use homeserver_storage::{events::EventRow, persist::TxnRecord};
use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomOrAliasId, ServerName, UserId};
use serde_json::{Value, json};

use super::{event_to_wit, parse_object, storage, to_wit};
use crate::{
    bindings::{matrix, types},
    coalesce::Plan,
    context::PluginCtx,
    instance::PluginState,
};

type R<T> = Result<T, types::Error>;

/// Longest a typing notice may last.
const MAX_TYPING_MS: u32 = 120_000;
/// Most events one read returns.
const MAX_READ: u32 = 500;
/// Most `via` servers a join names.
const MAX_VIA: usize = 10;

fn room_id(room: &str) -> R<OwnedRoomId> {
    RoomId::parse(room).map_err(|_| types::Error::Invalid(format!("not a room id: {room}")))
}

fn event_id(id: &str) -> R<ruma::OwnedEventId> {
    EventId::parse(id).map_err(|_| types::Error::Invalid(format!("not an event id: {id}")))
}

impl PluginCtx {
    /// Who acts: the bot, or a puppet — a user of the plugin's namespaces whose account the
    /// plugin owns (made by `puppets.ensure`).
    async fn actor(&self, as_user: Option<&str>) -> R<OwnedUserId> {
        match as_user {
            None => Ok(self.user.clone()),
            Some(user) if user == self.user.as_str() => Ok(self.user.clone()),
            Some(user) => self.puppet(user).await,
        }
    }

    fn events(&self, n: usize) -> R<()> {
        self.take(|b| &mut b.events, n as f64)
    }

    fn txn(&self, user: &UserId, scope: String, txn_id: Option<String>) -> Option<TxnRecord> {
        txn_id.map(|txn_id| TxnRecord {
            user_id: user.to_string(),
            device_id: format!("plugin:{}", self.id),
            scope,
            txn_id,
        })
    }

    /// A room id the plugin named, within its `rooms` grant.
    fn room(&self, room: &str) -> R<OwnedRoomId> {
        let room = room_id(room)?;
        self.in_scope(&room)?;
        Ok(room)
    }

    /// Refuses rooms outside the plugin's `rooms` grant (when it has one).
    fn in_scope(&self, room: &RoomId) -> R<()> {
        match &self.scope {
            Some(rooms) if !rooms.contains(room) => {
                Err(types::Error::Denied(format!("{room} is not one of the plugin's rooms (grants.rooms)")))
            }
            _ => Ok(()),
        }
    }

    /// Refuses what concerns rooms the bot is not joined to.
    async fn joined(&self, room: &RoomId) -> R<()> {
        match self.services.rooms.is_joined(room, &self.user).await.map_err(to_wit)? {
            true => Ok(()),
            false => Err(types::Error::Denied(format!("the bot is not in {room}"))),
        }
    }

    /// Of `rows` (events of `room`), those the bot may see, as plugin events.
    async fn visible(&self, room: &RoomId, rows: Vec<EventRow>) -> R<Vec<types::Event>> {
        let rows: Vec<EventRow> =
            rows.into_iter().filter(|r| r.room_id == room.as_str() && !r.outlier && !r.soft_failed).collect();
        let rows = self.services.rooms.filter_visible(&self.user, rows).await.map_err(to_wit)?;
        Ok(rows.iter().map(event_to_wit).collect())
    }

    pub(crate) async fn send_message(
        self: Arc<Self>,
        room: String,
        kind: String,
        content: Value,
        opts: matrix::SendOptions,
    ) -> R<String> {
        let sender = self.actor(opts.as_user.as_deref()).await?;
        let room = self.room(&room)?;
        if kind.is_empty() || kind.len() > 255 {
            return Err(types::Error::Invalid("event types are 1 to 255 bytes".into()));
        }
        let txn = self.txn(&sender, format!("send/{room}/{kind}"), opts.txn_id);
        // A retry of a sent transaction is answered without spending the send rate.
        if let Some(txn) = &txn
            && let Ok(Some(id)) =
                self.services.db.txn_event(&txn.user_id, &txn.device_id, &txn.scope, &txn.txn_id).await
        {
            return Ok(id);
        }
        self.events(1)?;
        let rooms = &self.services.rooms;
        // Bridged history keeps its time; only puppets send it (as Synapse lets only
        // application services set `ts`).
        let id = match opts.origin_ts {
            Some(ts) if sender != self.user => {
                rooms.send_message_dated(&room, &sender, &kind, content, txn, ts).await
            }
            _ => rooms.send_message(&room, &sender, &kind, content, txn).await,
        };
        Ok(id.map_err(to_wit)?.to_string())
    }

    /// Sends an edit now, or leaves it to the coalescer's flush.
    async fn edit(
        self: Arc<Self>,
        room: String,
        target: String,
        new_content: Value,
        opts: matrix::SendOptions,
    ) -> R<String> {
        let sender = self.actor(opts.as_user.as_deref()).await?;
        let room_id = self.room(&room)?;
        let target_id = event_id(&target)?;
        self.joined(&room_id).await?;
        let known = self.services.db.event(target_id.as_str()).await.map_err(storage)?;
        if known.is_none_or(|row| row.room_id != room_id.as_str()) {
            return Err(types::Error::NotFound(format!("no event {target} in {room}")));
        }
        let body = new_content.get("body").and_then(Value::as_str).unwrap_or_default();
        let mut content = new_content.clone();
        if let Some(object) = content.as_object_mut() {
            object.insert("body".into(), json!(format!("* {body}")));
            object.insert("m.new_content".into(), new_content);
            object.insert("m.relates_to".into(), json!({ "rel_type": "m.replace", "event_id": target }));
        }
        let key = (room.clone(), target.clone());
        match self.edits.plan(&key, content.clone(), sender.to_string(), Instant::now())? {
            Plan::Now => {
                let opts =
                    matrix::SendOptions { as_user: Some(sender.to_string()), txn_id: None, origin_ts: None };
                self.clone().send_message(room, "m.room.message".into(), content, opts).await?;
            }
            Plan::Later(Some(after)) => self.schedule_edit_flush(key, after),
            Plan::Later(None) => {}
        }
        Ok(target)
    }

    /// Sends the waiting edit of `key` when its interval ends (waiting for the send rate
    /// rather than dropping the last edit).
    fn schedule_edit_flush(self: &Arc<Self>, key: (String, String), after: Duration) {
        let ctx = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some((content, sender)) = ctx.edits.take(&key, Instant::now()) else { return };
            let opts = matrix::SendOptions { as_user: Some(sender), txn_id: None, origin_ts: None };
            for _ in 0..20 {
                let sent = ctx.clone().send_message(
                    key.0.clone(),
                    "m.room.message".into(),
                    content.clone(),
                    opts.clone(),
                );
                match sent.await {
                    Err(types::Error::RateLimited(ms)) => {
                        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await
                    }
                    Err(err) => {
                        ctx.log("warn", format!("a coalesced edit of {} failed: {err:?}", key.1));
                        return;
                    }
                    Ok(_) => return,
                }
            }
        });
    }

    async fn join(self: Arc<Self>, as_user: Option<String>, target: String, via: Vec<String>) -> R<String> {
        let user = self.actor(as_user.as_deref()).await?;
        let rooms = &self.services.rooms;
        let target = RoomOrAliasId::parse(&target)
            .map_err(|_| types::Error::Invalid(format!("not a room id or alias: {target}")))?;
        if via.len() > MAX_VIA {
            return Err(types::Error::Invalid(format!("at most {MAX_VIA} via servers")));
        }
        let mut servers = via
            .iter()
            .map(|s| ServerName::parse(s).map(|s| s.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| types::Error::Invalid("via: not a server name".into()))?;
        self.events(1)?;
        let room = match RoomId::parse(target.as_str()) {
            Ok(room) => room,
            Err(_) => {
                let alias =
                    RoomAliasId::parse(target.as_str()).map_err(|e| types::Error::Invalid(e.to_string()))?;
                let (room, found) = rooms.resolve_alias(&alias).await.map_err(to_wit)?;
                servers.extend(found);
                room
            }
        };
        self.in_scope(&room)?;
        if rooms.joins_remotely(&room).await.map_err(to_wit)? {
            rooms.join_remote_via(room.clone(), user, servers).await.map_err(to_wit)?;
        } else {
            rooms.join(&room, &user, Default::default()).await.map_err(to_wit)?;
        }
        Ok(room.to_string())
    }

    async fn send_state(
        self: Arc<Self>,
        room: String,
        kind: String,
        key: String,
        content: String,
        opts: matrix::SendOptions,
    ) -> R<String> {
        let sender = self.actor(opts.as_user.as_deref()).await?;
        let room = self.room(&room)?;
        let content = parse_object(&content, "content")?;
        self.events(1)?;
        let id =
            self.services.rooms.send_state(&room, &sender, &kind, &key, content).await.map_err(to_wit)?;
        Ok(id.to_string())
    }

    async fn redact(
        self: Arc<Self>,
        room: String,
        target: String,
        reason: Option<String>,
        opts: matrix::SendOptions,
    ) -> R<String> {
        let sender = self.actor(opts.as_user.as_deref()).await?;
        let room = self.room(&room)?;
        let target = event_id(&target)?;
        let txn = self.txn(&sender, format!("redact/{room}"), opts.txn_id);
        self.events(1)?;
        let id = self
            .services
            .rooms
            .redact(&room, &sender, &target, reason.as_deref(), txn)
            .await
            .map_err(to_wit)?;
        Ok(id.to_string())
    }

    async fn leave(self: Arc<Self>, as_user: Option<String>, room: String) -> R<()> {
        let user = self.actor(as_user.as_deref()).await?;
        let room = room_id(&room)?;
        self.events(1)?;
        self.services.rooms.leave(&room, &user, None).await.map_err(to_wit)?;
        Ok(())
    }

    async fn invite(self: Arc<Self>, as_user: Option<String>, room: String, target: String) -> R<()> {
        let user = self.actor(as_user.as_deref()).await?;
        let room = self.room(&room)?;
        let target =
            UserId::parse(&target).map_err(|_| types::Error::Invalid(format!("not a user id: {target}")))?;
        self.events(1)?;
        self.services.rooms.invite(&room, &user, &target, None, false).await.map_err(to_wit)?;
        Ok(())
    }

    async fn create_room(self: Arc<Self>, as_user: Option<String>, options: String) -> R<String> {
        let user = self.actor(as_user.as_deref()).await?;
        if self.scope.is_some() {
            return Err(types::Error::Denied(
                "a plugin limited to its rooms (grants.rooms) creates none".into(),
            ));
        }
        parse_object(&options, "options")?;
        let request = CreateRoom::from_client_body(user.clone(), options.as_bytes()).map_err(to_wit)?;
        // The create event, the join, power levels and the preset's state, then one per
        // invitee and initial state event.
        self.events(5 + request.invite.len() + request.initial_state.len())?;
        let rooms = &self.services.rooms;
        let profile = rooms.profile_of(&user).await.map_err(to_wit)?;
        let room = rooms.create_room(request, profile).await.map_err(to_wit)?;
        Ok(room.to_string())
    }

    async fn set_profile(
        self: Arc<Self>,
        as_user: Option<String>,
        name: Option<String>,
        avatar: Option<String>,
    ) -> R<()> {
        let user = self.actor(as_user.as_deref()).await?;
        self.take(|b| &mut b.profile, 1.0)?;
        self.apply_profile(&user, name, avatar).await
    }

    /// Sets a display name and avatar (`None` leaves it, empty clears it) and updates the
    /// user's member events.
    pub(crate) async fn apply_profile(
        &self,
        user: &UserId,
        name: Option<String>,
        avatar: Option<String>,
    ) -> R<()> {
        if name.as_ref().is_some_and(|n| n.chars().count() > 256) {
            return Err(types::Error::Invalid("display names are at most 256 characters".into()));
        }
        if avatar.as_ref().is_some_and(|u| u.len() > 1024 || (!u.is_empty() && !u.starts_with("mxc://"))) {
            return Err(types::Error::Invalid("avatar urls are mxc:// urls of at most 1024 bytes".into()));
        }
        let db = &self.services.db;
        if let Some(name) = &name {
            db.set_displayname(user.as_str(), Some(name.as_str()).filter(|n| !n.is_empty()))
                .await
                .map_err(storage)?;
        }
        if let Some(url) = &avatar {
            db.set_avatar_url(user.as_str(), Some(url.as_str()).filter(|u| !u.is_empty()))
                .await
                .map_err(storage)?;
        }
        self.services.rooms.propagate_profile(user).await.map_err(to_wit)
    }

    async fn set_typing(
        self: Arc<Self>,
        as_user: Option<String>,
        room: String,
        typing: bool,
        timeout_ms: u32,
    ) -> R<()> {
        let user = self.actor(as_user.as_deref()).await?;
        let room = self.room(&room)?;
        self.take(|b| &mut b.ephemeral, 1.0)?;
        let rooms = &self.services.rooms;
        if !rooms.is_joined(&room, &user).await.map_err(to_wit)? {
            return Err(types::Error::Denied(format!("{user} is not in {room}")));
        }
        let until = typing.then(|| {
            tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms.min(MAX_TYPING_MS)))
        });
        let members = rooms.joined_members(&room).await.map_err(to_wit)?;
        self.services.live.typing.set(&room, &user, until, members);
        Ok(())
    }

    async fn send_receipt(self: Arc<Self>, as_user: Option<String>, room: String, target: String) -> R<()> {
        let user = self.actor(as_user.as_deref()).await?;
        let room = self.room(&room)?;
        let target = event_id(&target)?;
        self.take(|b| &mut b.ephemeral, 1.0)?;
        if !self.services.rooms.is_joined(&room, &user).await.map_err(to_wit)? {
            return Err(types::Error::Denied(format!("{user} is not in {room}")));
        }
        // The receipt service checks that the event is one of this room's.
        let receipt = NewReceipt {
            room_id: &room,
            user_id: &user,
            event_id: &target,
            receipt_type: "m.read",
            thread_id: "",
            ts: now_millis() as i64,
        };
        self.services.live.receipts.store(&receipt).await.map_err(to_wit)?;
        Ok(())
    }

    async fn get_event(self: Arc<Self>, room: String, id: String) -> R<types::Event> {
        let room = self.room(&room)?;
        self.joined(&room).await?;
        let row = self.services.db.event(event_id(&id)?.as_str()).await.map_err(storage)?;
        let visible = self.visible(&room, row.into_iter().collect()).await?;
        visible.into_iter().next().ok_or_else(|| types::Error::NotFound(format!("no event {id} in {room}")))
    }

    async fn get_state(self: Arc<Self>, room: String, kind: String, key: String) -> R<Option<String>> {
        let room = self.room(&room)?;
        self.joined(&room).await?;
        let event = self.services.rooms.current_state_event(&room, &kind, &key).await.map_err(to_wit)?;
        Ok(event.map(|pdu| pdu.content_value().to_string()))
    }

    async fn members(self: Arc<Self>, room: String) -> R<Vec<String>> {
        let room = self.room(&room)?;
        self.joined(&room).await?;
        let members = self.services.rooms.joined_members(&room).await.map_err(to_wit)?;
        Ok(members.into_iter().map(|m| m.to_string()).collect())
    }

    async fn relations(
        self: Arc<Self>,
        room: String,
        target: String,
        rel_type: Option<String>,
        limit: u32,
    ) -> R<Vec<types::Event>> {
        let room = self.room(&room)?;
        self.joined(&room).await?;
        let target = event_id(&target)?;
        let limit = i64::from(limit.min(MAX_READ));
        let mut rows = self
            .services
            .db
            .related_events(&[target.to_string()], rel_type.as_deref(), None, None, false, limit)
            .await
            .map_err(storage)?;
        rows.reverse();
        self.visible(&room, rows).await
    }

    async fn thread(self: Arc<Self>, room: String, root: String, limit: u32) -> R<Vec<types::Event>> {
        let room_id = self.room(&room)?;
        self.joined(&room_id).await?;
        let root_id = event_id(&root)?;
        let db = &self.services.db;
        let root_row = db.event(root_id.as_str()).await.map_err(storage)?;
        let limit = limit.clamp(1, MAX_READ);
        let mut replies = db
            .related_events(&[root_id.to_string()], Some("m.thread"), None, None, false, i64::from(limit - 1))
            .await
            .map_err(storage)?;
        replies.reverse();
        let mut rows: Vec<EventRow> = root_row.into_iter().collect();
        if rows.is_empty() {
            return Err(types::Error::NotFound(format!("no event {root} in {room}")));
        }
        rows.extend(replies);
        let events = self.visible(&room_id, rows).await?;
        match events.first() {
            Some(first) if first.event_id == root_id.as_str() => Ok(events),
            _ => Err(types::Error::NotFound(format!("no event {root} in {room}"))),
        }
    }

    async fn resolve_alias(self: Arc<Self>, alias: String) -> R<Option<String>> {
        let alias = RoomAliasId::parse(&alias)
            .map_err(|_| types::Error::Invalid(format!("not an alias: {alias}")))?;
        match self.services.rooms.resolve_alias(&alias).await {
            Ok((room, _)) => Ok(Some(room.to_string())),
            Err(Error { kind: ErrorKind::NotFound, .. }) => Ok(None),
            Err(err) => Err(to_wit(err)),
        }
    }
}

impl matrix::Host for PluginState {
    async fn whoami(&mut self) -> String {
        self.rearm();
        self.ctx.user.to_string()
    }

    async fn send(
        &mut self,
        room: String,
        event_type: String,
        content_json: String,
        opts: matrix::SendOptions,
    ) -> R<String> {
        let content = parse_object(&content_json, "content")?;
        on_main!(self, send_message(room, event_type, content, opts))
    }

    async fn send_state(
        &mut self,
        room: String,
        event_type: String,
        state_key: String,
        content_json: String,
        opts: matrix::SendOptions,
    ) -> R<String> {
        on_main!(self, send_state(room, event_type, state_key, content_json, opts))
    }

    async fn edit(
        &mut self,
        room: String,
        target: String,
        new_content_json: String,
        opts: matrix::SendOptions,
    ) -> R<String> {
        let content = parse_object(&new_content_json, "new content")?;
        on_main!(self, edit(room, target, content, opts))
    }

    async fn react(
        &mut self,
        room: String,
        target: String,
        key: String,
        opts: matrix::SendOptions,
    ) -> R<String> {
        event_id(&target)?;
        let content =
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } });
        on_main!(self, send_message(room, "m.reaction".to_owned(), content, opts))
    }

    async fn redact(
        &mut self,
        room: String,
        target: String,
        reason: Option<String>,
        opts: matrix::SendOptions,
    ) -> R<String> {
        on_main!(self, redact(room, target, reason, opts))
    }

    async fn join(&mut self, as_user: Option<String>, room_or_alias: String, via: Vec<String>) -> R<String> {
        on_main!(self, join(as_user, room_or_alias, via))
    }

    async fn leave(&mut self, as_user: Option<String>, room: String) -> R<()> {
        on_main!(self, leave(as_user, room))
    }

    async fn invite(&mut self, as_user: Option<String>, room: String, target: String) -> R<()> {
        on_main!(self, invite(as_user, room, target))
    }

    async fn create_room(&mut self, as_user: Option<String>, options_json: String) -> R<String> {
        on_main!(self, create_room(as_user, options_json))
    }

    async fn set_profile(
        &mut self,
        as_user: Option<String>,
        displayname: Option<String>,
        avatar_url: Option<String>,
    ) -> R<()> {
        on_main!(self, set_profile(as_user, displayname, avatar_url))
    }

    async fn set_typing(
        &mut self,
        as_user: Option<String>,
        room: String,
        typing: bool,
        timeout_ms: u32,
    ) -> R<()> {
        on_main!(self, set_typing(as_user, room, typing, timeout_ms))
    }

    async fn send_receipt(&mut self, as_user: Option<String>, room: String, target: String) -> R<()> {
        on_main!(self, send_receipt(as_user, room, target))
    }

    async fn get_event(&mut self, room: String, id: String) -> R<types::Event> {
        on_main!(self, get_event(room, id))
    }

    async fn get_state(&mut self, room: String, event_type: String, state_key: String) -> R<Option<String>> {
        on_main!(self, get_state(room, event_type, state_key))
    }

    async fn members(&mut self, room: String) -> R<Vec<String>> {
        on_main!(self, members(room))
    }

    async fn relations(
        &mut self,
        room: String,
        target: String,
        rel_type: Option<String>,
        limit: u32,
    ) -> R<Vec<types::Event>> {
        on_main!(self, relations(room, target, rel_type, limit))
    }

    async fn thread(&mut self, room: String, root: String, limit: u32) -> R<Vec<types::Event>> {
        on_main!(self, thread(room, root, limit))
    }

    async fn resolve_alias(&mut self, alias: String) -> R<Option<String>> {
        on_main!(self, resolve_alias(alias))
    }
}
