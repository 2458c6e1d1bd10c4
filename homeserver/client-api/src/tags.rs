//! Room tags (`m.favourite`, `m.lowpriority`, custom `u.*`): pinned and sorted chats. Stored as the
//! `m.tag` room account data the spec defines, so `/sync` delivers changes.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma, Session};
use ruma::{
    RoomId, UserId,
    api::client::tag::{create_tag, delete_tag, get_tags},
};
use serde_json::{Map, Value, json};

use crate::App;

/// Longest tag name accepted.
const MAX_TAG_LEN: usize = 255;

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(list).ruma_route(put).ruma_route(delete)
}

fn only_self(session: &Session, user: &UserId) -> Result<(), Error> {
    if session.user_id != user {
        return Err(Error::forbidden("You can only manage your own tags"));
    }
    Ok(())
}

fn parse_tags(stored: Option<&str>) -> Map<String, Value> {
    stored
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .and_then(|v| v.get("tags").and_then(Value::as_object).cloned())
        .unwrap_or_default()
}

async fn tags(app: &App, user: &UserId, room: &RoomId) -> Result<Map<String, Value>, Error> {
    let stored = app.db.account_data(user.as_str(), room.as_str(), "m.tag").await.map_err(Error::from)?;
    Ok(parse_tags(stored.as_deref()))
}

/// Changes a room's tags atomically (concurrent changes apply one after another); `change`
/// returns whether it changed anything.
async fn update(
    app: &App,
    user: &UserId,
    room: &RoomId,
    change: impl FnOnce(&mut Map<String, Value>) -> bool,
) -> Result<(), Error> {
    app.live
        .account_data
        .update(user, room.as_str(), "m.tag", |stored| {
            let mut tags = parse_tags(stored);
            Ok(change(&mut tags).then(|| json!({ "tags": tags }).to_string()))
        })
        .await
        .map(|_| ())
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
async fn list(app: App, req: Ruma<get_tags::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    Ok(JsonBody(json!({ "tags": tags(&app, &req.body.user_id, &req.body.room_id).await? })))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn put(app: App, req: Ruma<create_tag::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    if req.body.tag.is_empty() || req.body.tag.len() > MAX_TAG_LEN {
        return Err(Error::invalid_param("invalid tag name").into());
    }
    // The tag's content is an object (`order` and custom keys); anything else would break
    // every later `GET …/tags`.
    let info: Value = match serde_json::from_slice(&req.raw_body) {
        Ok(value @ Value::Object(_)) => value,
        _ => return Err(Error::bad_json("a tag's content must be a JSON object").into()),
    };
    if let Some(order) = info.get("order")
        && !(order.is_number() && order.as_f64().is_some_and(|o| (0.0..=1.0).contains(&o)))
    {
        return Err(Error::invalid_param("order must be a number between 0 and 1").into());
    }
    let tag = req.body.tag.clone();
    update(&app, &req.body.user_id, &req.body.room_id, |tags| {
        tags.insert(tag, info);
        true
    })
    .await?;
    Ok(JsonBody(json!({})))
}

/// `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
async fn delete(app: App, req: Ruma<delete_tag::v3::Request>) -> Result<JsonBody, ApiError> {
    only_self(&req.auth, &req.body.user_id)?;
    update(&app, &req.body.user_id, &req.body.room_id, |tags| tags.remove(&req.body.tag).is_some()).await?;
    Ok(JsonBody(json!({})))
}
