//! Joining a room on other servers, as the joining server: `make_join` to one of the `via`
//! servers (up to five, in order) for a template of a supported room version, which is checked
//! (the user's own join of that room), stamped, hashed and signed here; `send_join` v2 for the
//! room's state and auth chain (v1 for a server that knows only that). Of the template, only the prev and auth events and the depth are
//! taken; the rest of the join (content with the user's profile included) is built here, so
//! nothing else a resident puts in a template is ever signed. The state and auth chain (each event
//! once, at most 250,000, every event after its auth events) must found a room of the version
//! the template was for; they enter the room model as outliers, the create event founding the
//! room here, then the join itself as a live event with the state before it given — its prev
//! events are the resident's, unknown here. A room known only through outliers takes no events
//! from other servers (see `transactions`), and only this server's own join skips the soft-fail
//! check there, so a failed join leaves nothing anyone can build on; a retry goes remote again.

use std::collections::HashMap;

use homeserver_core::{Error, ErrorKind, time::now_millis};
use homeserver_rooms::{
    remote::{Arrival, IncomingPdu, Verdict},
    versions,
};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedServerName, RoomId, ServerName, UserId,
    api::federation::membership::{create_join_event, prepare_join_event},
    room_version_rules::RoomVersionRules,
};
use serde_json::Value;

use crate::{FederationState, client::remote_error, legacy, transactions::event_id_of};

/// `via` servers tried for one join.
const MAX_VIA: usize = 5;
/// Most state and auth-chain events a join takes in.
const MAX_JOIN_EVENTS: usize = 250_000;

/// Joins `user` to `room_id` through the first of `via` (at most five) that lets it.
pub(crate) async fn join(
    state: &FederationState,
    room_id: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
) -> Result<(), Error> {
    let mut last = Error::not_found("No server could let this server join the room");
    for server in via.iter().filter(|s| **s != state.key.server_name()).take(MAX_VIA) {
        match join_via(state, room_id, user, server).await {
            Ok(()) => return Ok(()),
            Err(err) => {
                tracing::info!(%room_id, %server, error = %err.message, "remote join failed");
                last = err;
            }
        }
    }
    Err(last)
}

async fn join_via(
    state: &FederationState,
    room_id: &RoomId,
    user: &UserId,
    server: &ServerName,
) -> Result<(), Error> {
    let mut ask = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
    ask.ver = versions::SUPPORTED_VERSIONS.to_vec();
    let made = state.client.send(server, ask).await.map_err(remote_error)?;
    let version = made.room_version.unwrap_or(ruma::RoomVersionId::V1);
    let rules = versions::rules(&version).ok_or_else(|| {
        Error::new(ErrorKind::UnsupportedRoomVersion, format!("room version {version} is not supported"))
    })?;
    let mut content = member_content(state, user, "join").await?;
    if let Some(authoriser) = restricted_authoriser(made.event.get(), server) {
        // A restricted room: the resident named one of its members to vouch for the join, and
        // will countersign it.
        content.insert("join_authorised_via_users_server".into(), CanonicalJsonValue::String(authoriser));
    }
    let (join, join_id) = sign_membership(state, room_id, user, made.event.get(), content, &rules)?;
    let raw = serde_json::value::to_raw_value(&join).map_err(Error::internal_from)?;
    let send = create_join_event::v2::Request::new(room_id.to_owned(), join_id.clone(), raw.clone());
    let joined = match state.client.send(server, send).await {
        Ok(answer) => answer.room_state,
        Err(err) if legacy::only_v1(&err) => {
            let send =
                legacy::EventRequest::<legacy::SendJoinV1>::new(room_id.to_owned(), join_id.clone(), raw);
            let answer = state.client.send(server, send).await.map_err(remote_error)?;
            serde_json::from_value::<create_join_event::v2::RoomState>(answer.0).map_err(|e| {
                Error::bad_json(format!("the room's server sent an unusable join answer: {e}"))
            })?
        }
        Err(err) => return Err(remote_error(err)),
    };
    // A countersigned join (restricted rooms) replaces ours; it must be the same event.
    let join = match joined.event.as_ref() {
        Some(event) => {
            let value: Value =
                serde_json::from_str(event.get()).map_err(|e| Error::bad_json(e.to_string()))?;
            if event_id_of(&value, &rules).as_ref() != Some(&join_id) {
                return Err(Error::forbidden("The room's server changed the join"));
            }
            value
        }
        None => join,
    };

    let known = in_auth_order(joined.auth_chain.iter().chain(joined.state.iter()), &rules)?;
    // The room must be of the version the template was signed for, founded by its own create.
    let create = known.iter().find(|e| e.value.get("type").and_then(Value::as_str) == Some("m.room.create"));
    let create_version = create
        .and_then(|c| c.value.get("content")?.get("room_version")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "1".to_owned());
    if create.is_none() || create_version != version.as_str() {
        return Err(Error::forbidden(
            "The room's server sent a state that does not found a room of its version",
        ));
    }
    for event in &known {
        state.keys.prefetch_for_event(&event.value, &rules).await?;
    }
    let outliers: Vec<IncomingPdu> = known.iter().map(|e| IncomingPdu::new(e.text.clone())).collect();
    let verdicts = state.rooms.receive_remote(room_id, outliers, Arrival::Outlier).await?;
    // The state is what of it was taken in: an entry with a bad signature (dropped) or one its
    // auth events reject is no part of it, as Synapse leaves it out too.
    let stored: std::collections::HashSet<OwnedEventId> = verdicts
        .into_iter()
        .filter_map(|verdict| match verdict {
            Verdict::Accepted(id) | Verdict::Duplicate(id) => Some(id),
            _ => None,
        })
        .collect();
    let state_ids: Vec<OwnedEventId> = joined
        .state
        .iter()
        .filter_map(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        .filter_map(|value| event_id_of(&value, &rules))
        .filter(|id| stored.contains(id))
        .collect();
    let incoming = IncomingPdu { json: join.to_string(), state_before: Some(state_ids) };
    match state.rooms.receive_remote(room_id, vec![incoming], Arrival::Live).await?.pop() {
        Some(Verdict::Accepted(_) | Verdict::Duplicate(_)) => Ok(()),
        Some(other) => {
            let why = other.rejection().map(|r| r.to_string()).unwrap_or_default();
            Err(Error::forbidden(format!("The room's state does not admit the join: {why}")))
        }
        None => Err(Error::internal("no verdict")),
    }
}

/// One event of a join's state or auth chain.
pub(crate) struct Known {
    pub text: String,
    pub value: Value,
}

/// The events of the state and auth chain, each once, every event after its auth events (so the
/// room model finds them stored), depth breaking ties. At most [`MAX_JOIN_EVENTS`].
pub(crate) fn in_auth_order<'a>(
    raws: impl Iterator<Item = &'a Box<serde_json::value::RawValue>>,
    rules: &RoomVersionRules,
) -> Result<Vec<Known>, Error> {
    let mut events: Vec<Known> = Vec::new();
    let mut index: HashMap<OwnedEventId, usize> = HashMap::new();
    for raw in raws {
        if events.len() >= MAX_JOIN_EVENTS {
            return Err(Error::forbidden("The room's state is larger than this server accepts"));
        }
        let value: Value = serde_json::from_str(raw.get()).map_err(|e| Error::bad_json(e.to_string()))?;
        let Some(id) = event_id_of(&value, rules) else { continue };
        if index.contains_key(&id) {
            continue;
        }
        index.insert(id.clone(), events.len());
        events.push(Known { text: raw.get().to_owned(), value });
    }
    // Kahn's algorithm over the auth edges inside the set.
    let auth_of = |e: &Known| -> Vec<usize> {
        homeserver_rooms::event_format::referenced_ids(&e.value, "auth_events")
            .into_iter()
            .filter_map(|a| index.get(a).copied())
            .collect()
    };
    let mut waiting: Vec<usize> = events.iter().map(|e| auth_of(e).len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); events.len()];
    for (i, event) in events.iter().enumerate() {
        for a in auth_of(event) {
            dependents[a].push(i);
        }
    }
    let depth = |i: usize| events[i].value.get("depth").and_then(Value::as_u64).unwrap_or(0);
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>> =
        (0..events.len()).filter(|i| waiting[*i] == 0).map(|i| std::cmp::Reverse((depth(i), i))).collect();
    let mut order = Vec::with_capacity(events.len());
    while let Some(std::cmp::Reverse((_, i))) = ready.pop() {
        order.push(i);
        for d in std::mem::take(&mut dependents[i]) {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(std::cmp::Reverse((depth(d), d)));
            }
        }
    }
    // Events on an auth cycle (no valid room has one) are left out.
    let mut slots: Vec<Option<Known>> = events.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// The member of `server` a join template names to vouch for a restricted join, if any (a
/// resident can only vouch with its own users: it must countersign).
fn restricted_authoriser(template: &str, server: &ServerName) -> Option<String> {
    let template: Value = serde_json::from_str(template).ok()?;
    let user = template.get("content")?.get("join_authorised_via_users_server")?.as_str()?;
    let user = UserId::parse(user).ok()?;
    (user.server_name() == server).then(|| user.to_string())
}

/// A join's (or knock's) content: membership, and the user's display name and avatar as in
/// local joins.
pub(crate) async fn member_content(
    state: &FederationState,
    user: &UserId,
    membership: &str,
) -> Result<CanonicalJsonObject, Error> {
    let mut content =
        CanonicalJsonObject::from([("membership".into(), CanonicalJsonValue::String(membership.into()))]);
    if let Some(profile) = state.db.user(user.as_str()).await? {
        if let Some(name) = profile.displayname {
            content.insert("displayname".into(), CanonicalJsonValue::String(name));
        }
        if let Some(url) = profile.avatar_url {
            content.insert("avatar_url".into(), CanonicalJsonValue::String(url));
        }
    }
    Ok(content)
}

/// Checks the template is the user's own member event of the room with the membership of
/// `content`, and builds the event from the fields the template may decide (prev and auth
/// events, depth) and ours (everything else), then signs it: nothing else the resident put in
/// the template is ever signed.
pub(crate) fn sign_membership(
    state: &FederationState,
    room_id: &RoomId,
    user: &UserId,
    template: &str,
    content: CanonicalJsonObject,
    rules: &RoomVersionRules,
) -> Result<(Value, OwnedEventId), Error> {
    let template: CanonicalJsonObject =
        serde_json::from_str(template).map_err(|e| Error::bad_json(format!("member event template: {e}")))?;
    let text = |field: &str| match template.get(field) {
        Some(CanonicalJsonValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let membership = match template.get("content") {
        Some(CanonicalJsonValue::Object(content)) => content.get("membership").cloned(),
        _ => None,
    };
    if text("type").as_deref() != Some("m.room.member")
        || text("state_key").as_deref() != Some(user.as_str())
        || text("sender").as_deref() != Some(user.as_str())
        || text("room_id").as_deref() != Some(room_id.as_str())
        || membership.is_none()
        || membership.as_ref() != content.get("membership")
    {
        return Err(Error::bad_json("the resident's template is not this user's member event of this room"));
    }
    let mut object = CanonicalJsonObject::new();
    for field in ["prev_events", "auth_events", "depth"] {
        let value = template
            .get(field)
            .ok_or_else(|| Error::bad_json(format!("the member event template has no {field}")))?;
        object.insert(field.into(), value.clone());
    }
    for (field, value) in [("type", "m.room.member"), ("sender", user.as_str()), ("state_key", user.as_str())]
    {
        object.insert(field.into(), CanonicalJsonValue::String(value.into()));
    }
    object.insert("room_id".into(), CanonicalJsonValue::String(room_id.to_string()));
    object.insert("content".into(), CanonicalJsonValue::Object(content));
    object.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(now_millis().try_into().unwrap_or_default()),
    );
    if homeserver_rooms::event_format::ids_are_named(rules) {
        let id = homeserver_rooms::event_format::new_named_id(state.key.server_name());
        object.insert("event_id".into(), CanonicalJsonValue::String(id.to_string()));
    }
    ruma::state_res::check_pdu_format(&object, &rules.event_format)
        .map_err(|e| Error::bad_json(format!("the member event template is malformed: {e}")))?;
    ruma::signatures::hash_and_sign_event(
        state.key.server_name().as_str(),
        state.key.pair(),
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| Error::internal(e.to_string()))?;
    let value = serde_json::to_value(&object).map_err(Error::internal_from)?;
    let id = event_id_of(&value, rules).ok_or_else(|| Error::internal("no event id for the member event"))?;
    Ok((value, id))
}
