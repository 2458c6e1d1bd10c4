//! `matrix`: actions as the plugin's bot through the room model, and reads of the rooms the bot
//! is joined to. Sends count against the plugin's send rate; retried sends with a `txn-id`
//! return the first event. `as-user` other than the bot is refused (namespaces come with the
//! bridge world); `origin-ts` is ignored for the bot, as Synapse ignores `ts` from non-bridges.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use homeserver_core::{Error, time::now_millis};
use homeserver_live::receipts::NewReceipt;
use homeserver_rooms::create::CreateRoom;
use homeserver_storage::persist::TxnRecord;
use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomOrAliasId, ServerName, UserId};
use serde_json::{Value, json};

use super::{event_to_wit, parse_object, to_wit};
use crate::{
    bindings::{matrix, types},
    coalesce::Plan,
    instance::PluginState,
    manager::PluginCtx,
};

type R<T> = Result<T, types::Error>;

/// Longest a typing notice may last.
const MAX_TYPING_MS: u32 = 120_000;
/// Most events one read returns.
const MAX_READ: u32 = 500;

fn room_id(room: &str) -> R<OwnedRoomId> {
    RoomId::parse(room).map_err(|_| types::Error::Invalid(format!("not a room id: {room}")))
}

fn event_id(id: &str) -> R<ruma::OwnedEventId> {
    EventId::parse(id).map_err(|_| types::Error::Invalid(format!("not an event id: {id}")))
}

impl PluginCtx {
    /// Who acts: the bot, unless another user is named (not granted in the bot world).
    fn actor(&self, as_user: Option<&str>) -> R<OwnedUserId> {
        match as_user {
            None => Ok(self.user.clone()),
            Some(user) if user == self.user.as_str() => Ok(self.user.clone()),
            Some(user) => Err(types::Error::Denied(format!("{user} is not in the plugin's namespaces"))),
        }
    }

    fn take_send_token(&self) -> R<()> {
        self.sends
            .lock()
            .expect("send bucket poisoned")
            .take(Instant::now())
            .map_err(types::Error::RateLimited)
    }

    fn txn(&self, user: &UserId, scope: String, txn_id: Option<String>) -> Option<TxnRecord> {
        txn_id.map(|txn_id| TxnRecord {
            user_id: user.to_string(),
            device_id: format!("plugin:{}", self.id),
            scope,
            txn_id,
        })
    }

    /// Refuses reads of rooms the bot is not joined to.
    async fn joined(&self, room: &RoomId) -> R<()> {
        match self.services.rooms.is_joined(room, &self.user).await.map_err(to_wit)? {
            true => Ok(()),
            false => Err(types::Error::Denied(format!("the bot is not in {room}"))),
        }
    }

    pub(crate) async fn send_message(
        &self,
        room: &str,
        kind: &str,
        content: Value,
        opts: matrix::SendOptions,
    ) -> R<String> {
        let sender = self.actor(opts.as_user.as_deref())?;
        let room = room_id(room)?;
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
        self.take_send_token()?;
        let id =
            self.services.rooms.send_message(&room, &sender, kind, content, txn).await.map_err(to_wit)?;
        Ok(id.to_string())
    }

    /// Sends an edit now, or leaves it to the coalescer's flush.
    async fn edit(
        self: &Arc<Self>,
        room: &str,
        target: &str,
        new_content: Value,
        opts: matrix::SendOptions,
    ) -> R<String> {
        let sender = self.actor(opts.as_user.as_deref())?;
        room_id(room)?;
        event_id(target)?;
        let body = new_content.get("body").and_then(Value::as_str).unwrap_or_default();
        let mut content = new_content.clone();
        if let Some(object) = content.as_object_mut() {
            object.insert("body".into(), json!(format!("* {body}")));
            object.insert("m.new_content".into(), new_content);
            object.insert("m.relates_to".into(), json!({ "rel_type": "m.replace", "event_id": target }));
        }
        let key = (room.to_owned(), target.to_owned());
        match self.edits.plan(&key, content.clone(), sender.to_string(), Instant::now()) {
            Plan::Now => {
                let opts =
                    matrix::SendOptions { as_user: Some(sender.to_string()), txn_id: None, origin_ts: None };
                self.send_message(room, "m.room.message", content, opts).await?;
            }
            Plan::Later(Some(after)) => self.schedule_edit_flush(key, after),
            Plan::Later(None) => {}
        }
        Ok(target.to_owned())
    }

    fn schedule_edit_flush(self: &Arc<Self>, key: (String, String), after: Duration) {
        let ctx = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some((content, sender)) = ctx.edits.take(&key, Instant::now()) else { return };
            let opts = matrix::SendOptions { as_user: Some(sender), txn_id: None, origin_ts: None };
            // The edit rate is the host's own: a flush waits for the send rate rather than
            // dropping the last edit.
            for _ in 0..20 {
                match ctx.send_message(&key.0, "m.room.message", content.clone(), opts.clone()).await {
                    Err(types::Error::RateLimited(ms)) => {
                        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
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

    async fn join(&self, as_user: Option<&str>, target: &str, via: Vec<String>) -> R<String> {
        let user = self.actor(as_user)?;
        let rooms = &self.services.rooms;
        let target = RoomOrAliasId::parse(target)
            .map_err(|_| types::Error::Invalid(format!("not a room id or alias: {target}")))?;
        let mut servers = via
            .iter()
            .map(|s| ServerName::parse(s).map(|s| s.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| types::Error::Invalid("via: not a server name".into()))?;
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
        if rooms.joins_remotely(&room).await.map_err(to_wit)? {
            rooms.join_remote_via(room.clone(), user, servers).await.map_err(to_wit)?;
        } else {
            rooms.join(&room, &user, Default::default()).await.map_err(to_wit)?;
        }
        Ok(room.to_string())
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
        self.rearm();
        let content = parse_object(&content_json, "content")?;
        self.ctx.clone().send_message(&room, &event_type, content, opts).await
    }

    async fn send_state(
        &mut self,
        room: String,
        event_type: String,
        state_key: String,
        content_json: String,
        opts: matrix::SendOptions,
    ) -> R<String> {
        self.rearm();
        let ctx = self.ctx.clone();
        let sender = ctx.actor(opts.as_user.as_deref())?;
        let room = room_id(&room)?;
        let content = parse_object(&content_json, "content")?;
        ctx.take_send_token()?;
        let id = ctx
            .services
            .rooms
            .send_state(&room, &sender, &event_type, &state_key, content)
            .await
            .map_err(to_wit)?;
        Ok(id.to_string())
    }

    async fn edit(
        &mut self,
        room: String,
        target: String,
        new_content_json: String,
        opts: matrix::SendOptions,
    ) -> R<String> {
        self.rearm();
        let content = parse_object(&new_content_json, "new content")?;
        self.ctx.clone().edit(&room, &target, content, opts).await
    }

    async fn react(
        &mut self,
        room: String,
        target: String,
        key: String,
        opts: matrix::SendOptions,
    ) -> R<String> {
        self.rearm();
        event_id(&target)?;
        let content =
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": target, "key": key } });
        self.ctx.clone().send_message(&room, "m.reaction", content, opts).await
    }

    async fn redact(
        &mut self,
        room: String,
        target: String,
        reason: Option<String>,
        opts: matrix::SendOptions,
    ) -> R<String> {
        self.rearm();
        let ctx = self.ctx.clone();
        let sender = ctx.actor(opts.as_user.as_deref())?;
        let room = room_id(&room)?;
        let target = event_id(&target)?;
        let txn = ctx.txn(&sender, format!("redact/{room}"), opts.txn_id);
        ctx.take_send_token()?;
        let id = ctx
            .services
            .rooms
            .redact(&room, &sender, &target, reason.as_deref(), txn)
            .await
            .map_err(to_wit)?;
        Ok(id.to_string())
    }

    async fn join(&mut self, as_user: Option<String>, room_or_alias: String, via: Vec<String>) -> R<String> {
        self.rearm();
        self.ctx.clone().join(as_user.as_deref(), &room_or_alias, via).await
    }

    async fn leave(&mut self, as_user: Option<String>, room: String) -> R<()> {
        self.rearm();
        let ctx = self.ctx.clone();
        let user = ctx.actor(as_user.as_deref())?;
        let room = room_id(&room)?;
        ctx.services.rooms.leave(&room, &user, None).await.map_err(to_wit)?;
        Ok(())
    }

    async fn invite(&mut self, as_user: Option<String>, room: String, target: String) -> R<()> {
        self.rearm();
        let ctx = self.ctx.clone();
        let user = ctx.actor(as_user.as_deref())?;
        let room = room_id(&room)?;
        let target =
            UserId::parse(&target).map_err(|_| types::Error::Invalid(format!("not a user id: {target}")))?;
        ctx.take_send_token()?;
        ctx.services.rooms.invite(&room, &user, &target, None, false).await.map_err(to_wit)?;
        Ok(())
    }

    async fn create_room(&mut self, as_user: Option<String>, options_json: String) -> R<String> {
        self.rearm();
        let ctx = self.ctx.clone();
        let user = ctx.actor(as_user.as_deref())?;
        parse_object(&options_json, "options")?;
        let request = CreateRoom::from_client_body(user.clone(), options_json.as_bytes()).map_err(to_wit)?;
        ctx.take_send_token()?;
        let rooms = &ctx.services.rooms;
        let profile = rooms.profile_of(&user).await.map_err(to_wit)?;
        let room = rooms.create_room(request, profile).await.map_err(to_wit)?;
        Ok(room.to_string())
    }

    async fn set_profile(
        &mut self,
        as_user: Option<String>,
        displayname: Option<String>,
        avatar_url: Option<String>,
    ) -> R<()> {
        self.rearm();
        let ctx = self.ctx.clone();
        let user = ctx.actor(as_user.as_deref())?;
        let db = &ctx.services.db;
        if displayname.as_ref().is_some_and(|n| n.chars().count() > 256) {
            return Err(types::Error::Invalid("display names are at most 256 characters".into()));
        }
        if avatar_url.as_ref().is_some_and(|u| !u.is_empty() && !u.starts_with("mxc://")) {
            return Err(types::Error::Invalid("avatar urls are mxc:// urls".into()));
        }
        if let Some(name) = &displayname {
            db.set_displayname(user.as_str(), Some(name).filter(|n| !n.is_empty()).map(String::as_str))
                .await
                .map_err(|e| to_wit(e.into()))?;
        }
        if let Some(url) = &avatar_url {
            db.set_avatar_url(user.as_str(), Some(url).filter(|u| !u.is_empty()).map(String::as_str))
                .await
                .map_err(|e| to_wit(e.into()))?;
        }
        ctx.services.rooms.propagate_profile(&user).await.map_err(to_wit)
    }

    async fn set_typing(
        &mut self,
        as_user: Option<String>,
        room: String,
        typing: bool,
        timeout_ms: u32,
    ) -> R<()> {
        self.rearm();
        let ctx = self.ctx.clone();
        let user = ctx.actor(as_user.as_deref())?;
        let room = room_id(&room)?;
        let rooms = &ctx.services.rooms;
        if !rooms.is_joined(&room, &user).await.map_err(to_wit)? {
            return Err(types::Error::Denied(format!("{user} is not in {room}")));
        }
        let until = typing.then(|| {
            tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms.min(MAX_TYPING_MS)))
        });
        let members = rooms.joined_members(&room).await.map_err(to_wit)?;
        ctx.services.live.typing.set(&room, &user, until, members);
        Ok(())
    }

    async fn send_receipt(&mut self, as_user: Option<String>, room: String, target: String) -> R<()> {
        self.rearm();
        let ctx = self.ctx.clone();
        let user = ctx.actor(as_user.as_deref())?;
        let room = room_id(&room)?;
        let target = event_id(&target)?;
        if !ctx.services.rooms.is_joined(&room, &user).await.map_err(to_wit)? {
            return Err(types::Error::Denied(format!("{user} is not in {room}")));
        }
        let receipt = NewReceipt {
            room_id: &room,
            user_id: &user,
            event_id: &target,
            receipt_type: "m.read",
            thread_id: "",
            ts: now_millis() as i64,
        };
        ctx.services.live.receipts.store(&receipt).await.map_err(to_wit)?;
        Ok(())
    }

    async fn get_event(&mut self, room: String, id: String) -> R<types::Event> {
        self.rearm();
        let ctx = self.ctx.clone();
        let room = room_id(&room)?;
        ctx.joined(&room).await?;
        let row = ctx.services.db.event(event_id(&id)?.as_str()).await.map_err(|e| to_wit(e.into()))?;
        match row {
            Some(row) if row.room_id == room.as_str() && !row.soft_failed => Ok(event_to_wit(&row)),
            _ => Err(types::Error::NotFound(format!("no event {id} in {room}"))),
        }
    }

    async fn get_state(&mut self, room: String, event_type: String, state_key: String) -> R<Option<String>> {
        self.rearm();
        let ctx = self.ctx.clone();
        let room = room_id(&room)?;
        ctx.joined(&room).await?;
        let event =
            ctx.services.rooms.current_state_event(&room, &event_type, &state_key).await.map_err(to_wit)?;
        Ok(event.map(|pdu| pdu.content_value().to_string()))
    }

    async fn members(&mut self, room: String) -> R<Vec<String>> {
        self.rearm();
        let ctx = self.ctx.clone();
        let room = room_id(&room)?;
        ctx.joined(&room).await?;
        let members = ctx.services.rooms.joined_members(&room).await.map_err(to_wit)?;
        Ok(members.into_iter().map(|m| m.to_string()).collect())
    }

    async fn relations(
        &mut self,
        room: String,
        target: String,
        rel_type: Option<String>,
        limit: u32,
    ) -> R<Vec<types::Event>> {
        self.rearm();
        let ctx = self.ctx.clone();
        let room = room_id(&room)?;
        ctx.joined(&room).await?;
        let target = event_id(&target)?;
        let mut rows = ctx
            .services
            .db
            .related_events(
                &[target.to_string()],
                rel_type.as_deref(),
                None,
                None,
                false,
                i64::from(limit.min(MAX_READ)),
            )
            .await
            .map_err(|e| to_wit(e.into()))?;
        rows.retain(|row| row.room_id == room.as_str());
        rows.reverse();
        Ok(rows.iter().map(event_to_wit).collect())
    }

    async fn thread(&mut self, room: String, root: String, limit: u32) -> R<Vec<types::Event>> {
        self.rearm();
        let ctx = self.ctx.clone();
        let room_id = room_id(&room)?;
        ctx.joined(&room_id).await?;
        let root_id = event_id(&root)?;
        let db = &ctx.services.db;
        let root_row = db
            .event(root_id.as_str())
            .await
            .map_err(|e| to_wit(e.into()))?
            .filter(|row| row.room_id == room_id.as_str())
            .ok_or_else(|| types::Error::NotFound(format!("no event {root} in {room}")))?;
        let limit = limit.clamp(1, MAX_READ);
        let mut replies = db
            .related_events(&[root_id.to_string()], Some("m.thread"), None, None, false, i64::from(limit - 1))
            .await
            .map_err(|e| to_wit(e.into()))?;
        replies.retain(|row| row.room_id == room_id.as_str());
        replies.reverse();
        let mut events = vec![event_to_wit(&root_row)];
        events.extend(replies.iter().map(event_to_wit));
        Ok(events)
    }

    async fn resolve_alias(&mut self, alias: String) -> R<Option<String>> {
        self.rearm();
        let alias = RoomAliasId::parse(&alias)
            .map_err(|_| types::Error::Invalid(format!("not an alias: {alias}")))?;
        match self.ctx.services.rooms.resolve_alias(&alias).await {
            Ok((room, _)) => Ok(Some(room.to_string())),
            Err(Error { kind: homeserver_core::ErrorKind::NotFound, .. }) => Ok(None),
            Err(err) => Err(to_wit(err)),
        }
    }
}
