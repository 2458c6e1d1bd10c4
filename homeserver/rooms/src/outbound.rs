//! What this server asks of other servers on behalf of its users: joining and leaving rooms it
//! holds no state of, inviting their users, and reading their users' profiles. The room model
//! does not know how (that is federation's `make_join`/`send_join`, `make_leave`/`send_leave`,
//! `/invite` and `/query/profile`), so a [`RemoteServers`] implementation is plugged in once the
//! federation side exists, and the methods here hand the work to it. The client API depends
//! only on this crate, so it never reaches into federation.
//!
//! Out-of-band memberships (an invite from another server, its rejection) are stored through
//! [`Rooms::store_out_of_band`]: the room actor writes them, as it writes every room event.

use std::{collections::BTreeMap, future::Future, pin::Pin, sync::Arc};

use homeserver_core::{Error, ErrorKind};
use homeserver_storage::events::EventRow;
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedServerName,
    OwnedUserId, RoomAliasId, RoomId, RoomVersionId, UserId, events::room::member::MembershipState,
};
use serde_json::{Map, Value};

use crate::{
    Rooms,
    builder::EventTemplate,
    input::Submission,
    pdu::Pdu,
    remote::{Arrival, IncomingPdu, Verdict, check},
    versions,
};

/// Most backward extremities one backfill starts from.
const MAX_BACKFILL_FROM: usize = 20;

/// A boxed future of a request to other servers.
pub type RemoteFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

/// An invite of another server's user, built and signed here, for that server to sign too.
#[derive(Debug, Clone)]
pub struct RemoteInvite {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub version: RoomVersionId,
    /// The invite PDU, signed by this server.
    pub event: String,
    /// State events (PDUs) the invitee may see before joining, the create event among them.
    pub invite_room_state: Vec<String>,
}

/// What a client asks of a public room directory.
#[derive(Debug, Clone, Default)]
pub struct DirectoryQuery {
    pub limit: Option<u64>,
    pub since: Option<String>,
    pub search: Option<String>,
}

/// How this server reaches other servers for its users.
pub trait RemoteServers: Send + Sync {
    /// Joins `user` (a local user) to `room_id` through one of `via`.
    fn join(&self, room_id: OwnedRoomId, user: OwnedUserId, via: Vec<OwnedServerName>) -> RemoteFuture<()>;

    /// Leaves a room this server holds no state of (rejects an invite to it, withdraws a knock)
    /// through one of `via`, and stores the leave out of band.
    fn leave(&self, room_id: OwnedRoomId, user: OwnedUserId, via: Vec<OwnedServerName>) -> RemoteFuture<()>;

    /// Knocks on a room this server holds no state of through one of `via`
    /// (`make_knock`/`send_knock`), and stores the knock out of band.
    fn knock(
        &self,
        room_id: OwnedRoomId,
        user: OwnedUserId,
        via: Vec<OwnedServerName>,
        reason: Option<String>,
    ) -> RemoteFuture<()>;

    /// Has the invitee's server sign an invite (`/invite` v2); the answer is the event with
    /// that server's signature added.
    fn invite(&self, invite: RemoteInvite) -> RemoteFuture<String>;

    /// The profile (`displayname`, `avatar_url`) of a user of another server, from that server.
    fn profile(&self, user: OwnedUserId) -> RemoteFuture<Map<String, Value>>;

    /// `server`'s users' device and cross-signing keys (`/user/keys/query`).
    fn query_keys(
        &self,
        server: OwnedServerName,
        device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> RemoteFuture<Value>;

    /// Claims one-time keys of `server`'s users (`/user/keys/claim`).
    fn claim_keys(
        &self,
        server: OwnedServerName,
        claims: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> RemoteFuture<Value>;

    /// A page of `server`'s public room directory (`/publicRooms` over federation).
    fn public_rooms(&self, server: OwnedServerName, query: DirectoryQuery) -> RemoteFuture<Value>;

    /// The room an alias of another server names, and servers to join it through
    /// (`/query/directory` to the alias's server).
    fn resolve_alias(&self, alias: OwnedRoomAliasId) -> RemoteFuture<(OwnedRoomId, Vec<OwnedServerName>)>;

    /// Clears a destination's backoff and sends to it at once; false if it is not known.
    fn retry_destination(&self, destination: OwnedServerName) -> RemoteFuture<bool>;

    /// Fetches history from before `from` (the room's backward extremities) from one of
    /// `servers` and places it; returns how many events were placed. Implementations bound how
    /// often one room is backfilled.
    fn backfill(
        &self,
        room_id: OwnedRoomId,
        from: Vec<OwnedEventId>,
        limit: u32,
        servers: Vec<OwnedServerName>,
    ) -> RemoteFuture<usize>;
}

/// A local user's membership of a room this server holds no state of, and its event.
pub struct OutOfBand {
    pub membership: MembershipState,
    pub event: EventRow,
}

impl Rooms {
    /// Plugs in how other servers are reached (once, at start-up).
    pub fn set_remote_servers(&self, remote: Arc<dyn RemoteServers>) {
        let _ = self.shared.remote_servers.set(remote);
    }

    fn remote(&self) -> Result<&Arc<dyn RemoteServers>, Error> {
        self.shared.remote_servers.get().ok_or_else(|| Error::not_found("This server does not federate"))
    }

    /// Joins a local user to a room this server does not know, through `via`.
    pub async fn join_remote(
        &self,
        room_id: OwnedRoomId,
        user: OwnedUserId,
        via: Vec<OwnedServerName>,
    ) -> Result<(), Error> {
        let remote = self.remote()?;
        self.refuse_remote_guest_join(&room_id, &user).await?;
        if via.is_empty() {
            return Err(Error::new(ErrorKind::NotFound, "Unknown room: no server to join it through"));
        }
        remote.join(room_id, user, via).await
    }

    /// Knocks on a room no user of this server is in, through `via`.
    pub async fn knock_remote(
        &self,
        room_id: OwnedRoomId,
        user: OwnedUserId,
        via: Vec<OwnedServerName>,
        reason: Option<String>,
    ) -> Result<(), Error> {
        let remote = self.remote()?;
        if via.is_empty() {
            return Err(Error::not_found("Unknown room: no server to knock through"));
        }
        remote.knock(room_id, user, via, reason).await
    }

    /// Other servers' users' device and cross-signing keys, asked of `server`
    /// (`/user/keys/query`): `{device_keys, master_keys, self_signing_keys}` of its users.
    pub async fn remote_keys(
        &self,
        server: OwnedServerName,
        device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<Value, Error> {
        self.remote()?.query_keys(server, device_keys).await
    }

    /// Claims one-time keys of `server`'s users (`/user/keys/claim`): user → device → key.
    pub async fn remote_claim_keys(
        &self,
        server: OwnedServerName,
        claims: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    ) -> Result<Value, Error> {
        self.remote()?.claim_keys(server, claims).await
    }

    /// The profile of a user of another server.
    pub async fn remote_profile(&self, user: OwnedUserId) -> Result<Map<String, Value>, Error> {
        self.remote()?.profile(user).await
    }

    /// Fetches up to `limit` events of history this server does not hold from the other servers
    /// in the room (when it has backward extremities: events it knows of but not holds). Returns
    /// how many were placed; 0 when there is nothing to fetch or nobody to ask.
    pub async fn backfill(&self, room_id: &RoomId, limit: u32) -> Result<usize, Error> {
        let Some(remote) = self.shared.remote_servers.get() else { return Ok(0) };
        let from: Vec<OwnedEventId> = self
            .db()
            .backward_extremities(room_id.as_str())
            .await?
            .into_iter()
            .filter_map(|id| OwnedEventId::try_from(id).ok())
            .take(MAX_BACKFILL_FROM)
            .collect();
        if from.is_empty() {
            return Ok(0);
        }
        let mut servers = self.servers_in_room(room_id).await?;
        servers.retain(|s| s != self.server_name());
        if servers.is_empty() {
            return Ok(0);
        }
        // Not always the same servers first (a name early in the alphabet buys no priority).
        let start = rand::random::<u64>() as usize % servers.len();
        servers.rotate_left(start);
        remote.backfill(room_id.to_owned(), from, limit, servers).await
    }

    /// Clears a destination's backoff (the admin API); false if it is not a known destination.
    pub async fn retry_destination(&self, destination: OwnedServerName) -> Result<bool, Error> {
        self.remote()?.retry_destination(destination).await
    }

    /// A page of another server's public room directory.
    pub async fn remote_public_rooms(
        &self,
        server: OwnedServerName,
        query: DirectoryQuery,
    ) -> Result<Value, Error> {
        self.remote()?.public_rooms(server, query).await
    }

    /// The room an alias names and servers to join it through: this server's own aliases from
    /// the database, other servers' from them.
    pub async fn resolve_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>), Error> {
        if alias.server_name() != self.server_name() {
            return self.remote()?.resolve_alias(alias.to_owned()).await;
        }
        let record = self
            .db()
            .alias(alias.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("Room alias {alias} not found")))?;
        let room_id = RoomId::parse(&record.room_id).map_err(|e| Error::internal(e.to_string()))?;
        let mut servers = vec![self.server_name().to_owned()];
        servers.extend(self.servers_in_room(&room_id).await?.into_iter().filter(|s| s != self.server_name()));
        Ok((room_id, servers))
    }

    /// The servers with a user joined to the room, sorted.
    pub async fn servers_in_room(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>, Error> {
        let mut servers: Vec<OwnedServerName> =
            self.joined_members(room_id).await?.iter().map(|u| u.server_name().to_owned()).collect();
        servers.sort();
        servers.dedup();
        Ok(servers)
    }

    /// Whether a join must go through another server: the room is unknown here, or known only
    /// from other servers (created elsewhere, and no user of this server is in it).
    pub async fn joins_remotely(&self, room_id: &RoomId) -> Result<bool, Error> {
        let Some(room) = self.db().room(room_id.as_str()).await? else { return Ok(true) };
        let created_here = UserId::parse(&room.creator).is_ok_and(|c| c.server_name() == self.server_name());
        if created_here {
            return Ok(false);
        }
        Ok(!self.local_user_joined(room_id).await?)
    }

    /// Joins a room held by other servers through `via`; with none, an invited room is joined
    /// through the inviter's server (then the one the room id names).
    pub async fn join_remote_via(
        &self,
        room_id: OwnedRoomId,
        user: OwnedUserId,
        mut via: Vec<OwnedServerName>,
    ) -> Result<(), Error> {
        if via.is_empty() {
            via = self.servers_for_out_of_band(&room_id, &user).await?;
        }
        self.join_remote(room_id, user, via).await
    }

    /// Whether a user of this server is joined to the room (its events then reach this server
    /// through the room; otherwise memberships of it are out of band).
    pub async fn local_user_joined(&self, room_id: &RoomId) -> Result<bool, Error> {
        Ok(self.db().has_joined_member_of(room_id.as_str(), self.server_name().as_str()).await?)
    }

    /// The user's out-of-band membership of a room no user of this server is joined to.
    pub async fn out_of_band(&self, room_id: &RoomId, user: &UserId) -> Result<Option<OutOfBand>, Error> {
        let Some(row) = self.db().membership(room_id.as_str(), user.as_str()).await? else {
            return Ok(None);
        };
        if self.local_user_joined(room_id).await? {
            return Ok(None);
        }
        let Some(event) = self.db().event(row.event_id.as_str()).await? else { return Ok(None) };
        Ok(Some(OutOfBand { membership: row.membership, event }))
    }

    /// The servers to ask about a room this server holds no state of: the sender of the
    /// user's out-of-band event's server, then the server the room id names.
    pub async fn servers_for_out_of_band(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Vec<OwnedServerName>, Error> {
        let mut servers = Vec::new();
        if let Some(oob) = self.out_of_band(room_id, user).await?
            && let Ok(sender) = UserId::parse(&oob.event.sender)
        {
            servers.push(sender.server_name().to_owned());
        }
        if let Some(server) = room_id.server_name()
            && !servers.iter().any(|s| s == server)
        {
            servers.push(server.to_owned());
        }
        servers.retain(|s| s != self.server_name());
        Ok(servers)
    }

    /// Checks a PDU of another server for `room_id` (format, signatures, content hash) without
    /// storing it; a content hash mismatch is a refusal here.
    pub fn verify_remote_pdu(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        json: &str,
    ) -> Result<Arc<Pdu>, Error> {
        let rules = versions::rules(version).ok_or_else(|| {
            Error::new(ErrorKind::UnsupportedRoomVersion, format!("room version {version} is not supported"))
        })?;
        let checked = check::check_pdu(json, room_id, &rules, &*self.shared.server_keys)
            .map_err(|reason| Error::forbidden(format!("The event is not valid: {reason}")))?;
        if checked.redacted {
            return Err(Error::forbidden("The event's content does not match its hash"));
        }
        Ok(checked.pdu)
    }

    /// Stores a local user's membership event of a room no user of this server is in (see
    /// `input::out_of_band`); `None` when a user of this server is in the room after all (the
    /// event then comes through the room).
    pub async fn store_out_of_band(
        &self,
        room_id: &RoomId,
        version: RoomVersionId,
        json: String,
        unsigned_extra: Option<Value>,
    ) -> Result<Option<Arc<Pdu>>, Error> {
        let unsigned_extra = unsigned_extra.map(|v| v.to_string());
        let submission = Submission::OutOfBand { json, version, unsigned_extra };
        Ok(self.submit(room_id, submission).await?.pop())
    }

    /// Whether a user of this server may be invited: they exist, or an application service's
    /// namespace covers them.
    pub async fn may_be_invited(&self, user: &UserId) -> Result<bool, Error> {
        Ok(self.db().user(user.as_str()).await?.is_some_and(|u| !u.deactivated)
            || self.config().appservice_users.as_ref().is_some_and(|covers| (covers.0)(user)))
    }

    /// A local user leaves a room this server holds no state of, through the servers that
    /// know it.
    pub(crate) async fn leave_out_of_band(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<OwnedEventId, Error> {
        let via = self.servers_for_out_of_band(room_id, user).await?;
        self.remote()?.leave(room_id.to_owned(), user.to_owned(), via).await?;
        let row = self.db().membership(room_id.as_str(), user.as_str()).await?;
        row.map(|r| r.event_id).ok_or_else(|| Error::internal("the leave was not stored"))
    }

    /// Invites a user of another server: the invite is built and signed here, signed by the
    /// invitee's server (which learns of the invite that way), then placed like any remote
    /// event — the auth rules check it again against the state it meets.
    pub(crate) async fn invite_remote(
        &self,
        room_id: &RoomId,
        template: EventTemplate,
    ) -> Result<OwnedEventId, Error> {
        let remote = self.remote()?;
        let version = self.room_version(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let pdu = self.build_at_current(room_id, &template).await?;
        let mut invite_room_state: Vec<String> =
            self.stripped_state_pdus(room_id).await?.iter().map(|p| p.json.to_string()).collect();
        if let Some(inviter) =
            self.current_state_event(room_id, "m.room.member", template.sender.as_str()).await?
        {
            invite_room_state.push(inviter.json.to_string());
        }
        let invite = RemoteInvite {
            room_id: room_id.to_owned(),
            event_id: pdu.event_id.clone(),
            version: version.clone(),
            event: pdu.json.to_string(),
            invite_room_state,
        };
        let signed = remote.invite(invite).await?;
        let countersigned = self.verify_remote_pdu(room_id, &version, &signed)?;
        if countersigned.event_id != pdu.event_id {
            return Err(Error::forbidden("The invitee's server changed the invite"));
        }
        let verdict =
            self.receive_remote(room_id, vec![IncomingPdu::new(signed)], Arrival::Live).await?.pop();
        match verdict {
            Some(Verdict::Accepted(id) | Verdict::Duplicate(id)) => Ok(id),
            Some(other) => {
                Err(other.rejection().map(Error::from).unwrap_or_else(|| Error::internal("no verdict")))
            }
            None => Err(Error::internal("no verdict")),
        }
    }
}
