//! Account data: per-user (and per-room) JSON blobs clients keep on the server (`m.direct`, tags,
//! settings). Every write takes a stream position so `/sync` delivers it.

use std::{collections::HashSet, num::NonZeroUsize, sync::Mutex};

use lru::LruCache;

use axum::Router;
use homeserver_core::{Error, ErrorKind, streams::watermarks::Mark};
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use homeserver_storage::events::EventRow;
use ruma::{
    UserId,
    api::client::config::{
        get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
    },
};
use serde_json::Value;

use crate::App;

/// Account data types the server manages itself and clients may not set here.
const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

fn server_managed(data_type: &str) -> Error {
    Error::new(ErrorKind::ServerManaged, format!("Cannot set {data_type} through this API"))
}

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(set_global).ruma_route(get_global).ruma_route(set_room).ruma_route(get_room)
}

fn only_self(session: &Session, user: &UserId) -> Result<(), Error> {
    if session.user_id != user {
        return Err(Error::forbidden("You cannot access another user's account data"));
    }
    Ok(())
}

fn object_body(raw: &[u8]) -> Result<String, Error> {
    let value: Value = serde_json::from_slice(raw).map_err(|_| Error::bad_json("content is not JSON"))?;
    if !value.is_object() {
        return Err(Error::bad_json("account data content must be a JSON object"));
    }
    Ok(value.to_string())
}

/// `m.ignored_user_list` must map user ids to objects and may not contain the user themselves.
fn check_ignore_list(user: &UserId, content: &str) -> Result<(), Error> {
    let value: Value = serde_json::from_str(content).map_err(|_| Error::bad_json("invalid JSON"))?;
    let Some(ignored) = value.get("ignored_users").and_then(Value::as_object) else {
        return Err(Error::bad_json("m.ignored_user_list needs an ignored_users object"));
    };
    for id in ignored.keys() {
        if UserId::parse(id).is_err() {
            return Err(Error::bad_json(format!("{id} is not a user id")));
        }
        if id == user.as_str() {
            return Err(Error::invalid_param("You cannot ignore yourself"));
        }
    }
    Ok(())
}

/// The users someone ignores (`m.ignored_user_list`).
#[derive(Debug, Default, Clone)]
pub struct Ignored(HashSet<String>);

impl Ignored {
    /// Whether `user` is ignored (their invites, receipts, typing and presence are hidden).
    pub fn contains(&self, user: &str) -> bool {
        self.0.contains(user)
    }

    pub fn users(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }

    /// Whether an event is hidden: everything an ignored user sends except state events, which
    /// the spec keeps so the room does not look different for having ignored someone.
    pub fn hides(&self, event: &EventRow) -> bool {
        event.state_key.is_none() && self.0.contains(&event.sender)
    }
}

/// Recently read ignore lists, each with a stream position it is at least as new as. Every
/// request that returns events needs the list; this keeps it from costing a query each time.
/// Entries only ever move forward: a write stores its list at its own position, a read at the
/// position visible before it read, so a slow read cannot put back a list a write replaced.
pub struct IgnoreLists(Mutex<LruCache<String, (i64, Ignored)>>);

impl Default for IgnoreLists {
    fn default() -> Self {
        Self(Mutex::new(LruCache::new(NonZeroUsize::new(50_000).expect("non-zero"))))
    }
}

impl IgnoreLists {
    fn get(&self, user: &str) -> Option<Ignored> {
        self.0.lock().expect("ignore lists poisoned").get(user).map(|(_, list)| list.clone())
    }

    fn offer(&self, user: &str, pos: i64, list: Ignored) {
        let mut cache = self.0.lock().expect("ignore lists poisoned");
        if cache.peek(user).is_none_or(|(known, _)| *known < pos) {
            cache.put(user.to_owned(), (pos, list));
        }
    }
}

fn parse_ignore_list(content: &str) -> Ignored {
    let value: Value = serde_json::from_str(content).unwrap_or_default();
    Ignored(
        value
            .get("ignored_users")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
    )
}

/// The users `user` ignores (`m.ignored_user_list`).
pub(crate) async fn ignored_users(app: &App, user: &str) -> Result<Ignored, Error> {
    if let Some(list) = app.ignore_lists.get(user) {
        return Ok(list);
    }
    let visible = app.stream.current() as i64;
    let content = app.db.account_data(user, "", "m.ignored_user_list").await.map_err(Error::from)?;
    let list = content.as_deref().map(parse_ignore_list).unwrap_or_default();
    app.ignore_lists.offer(user, visible, list.clone());
    Ok(list)
}

/// Stores account data and wakes the user's syncs.
pub async fn put_account_data(
    app: &App,
    user: &UserId,
    room_id: &str,
    data_type: &str,
    content: &str,
) -> Result<(), Error> {
    update_account_data(app, user, room_id, data_type, |_| Ok(Some(content.to_owned()))).await.map(|_| ())
}

/// Changes one account-data document atomically and wakes the user's syncs: `change` gets the
/// stored content and returns the new one (`None`: unchanged). Concurrent changes of the same
/// document are applied one after another, each to the result of the one before, so every
/// acknowledged change is kept. Returns whether anything was written.
pub async fn update_account_data(
    app: &App,
    user: &UserId,
    room_id: &str,
    data_type: &str,
    change: impl FnOnce(Option<&str>) -> Result<Option<String>, Error>,
) -> Result<bool, Error> {
    let reservation = app.stream.reserve(1).await?;
    let pos = reservation.first();
    let written = app
        .db
        .update_account_data(user.as_str(), room_id, data_type, pos as i64, change)
        .await
        .map_err(Error::from)??;
    let Some(content) = written else { return Ok(false) };
    app.stream.marks().advance(Mark::AccountData, user.as_str(), pos);
    if room_id.is_empty() && data_type == "m.ignored_user_list" {
        app.ignore_lists.offer(user.as_str(), pos as i64, parse_ignore_list(&content));
    }
    reservation.complete(vec![user.to_owned()]);
    Ok(true)
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn set_global(app: App, req: Ruma<set_global_account_data::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    let data_type = req.body.event_type.to_string();
    if SERVER_MANAGED.contains(&data_type.as_str()) {
        return Err(server_managed(&data_type).into());
    }
    let content = object_body(&req.raw_body)?;
    if data_type == "m.ignored_user_list" {
        check_ignore_list(&req.auth.user_id, &content)?;
    }
    put_account_data(&app, &req.auth.user_id, "", &data_type, &content).await?;
    Ok(JsonBody(serde_json::json!({})))
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
async fn get_global(app: App, req: Ruma<get_global_account_data::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    let content = app
        .db
        .account_data(req.auth.user_id.as_str(), "", &req.body.event_type.to_string())
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(JsonBody(serde_json::from_str(&content).map_err(|e| Error::internal(e.to_string()))?))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn set_room(app: App, req: Ruma<set_room_account_data::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    let data_type = req.body.event_type.to_string();
    if SERVER_MANAGED.contains(&data_type.as_str()) {
        return Err(server_managed(&data_type).into());
    }
    let content = object_body(&req.raw_body)?;
    put_account_data(&app, &req.auth.user_id, req.body.room_id.as_str(), &data_type, &content).await?;
    Ok(JsonBody(serde_json::json!({})))
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
async fn get_room(app: App, req: Ruma<get_room_account_data::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    let content = app
        .db
        .account_data(req.auth.user_id.as_str(), req.body.room_id.as_str(), &req.body.event_type.to_string())
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("Account data not found"))?;
    Ok(JsonBody(serde_json::from_str(&content).map_err(|e| Error::internal(e.to_string()))?))
}
