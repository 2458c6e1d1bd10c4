//! `POST /rooms/{roomId}/upgrade`: replacing a room with one of a newer version. The work is the
//! room model's (`homeserver-rooms::upgrade`); this is the thin handler. When a user joins the
//! replacement (the upgrader at once, the others as they follow the tombstone), their own view of
//! the old room comes along, as Synapse does it: its tags (favourite, low priority), its
//! room-specific push rule (a muted room stays muted) and its place in `m.direct`.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use ruma::{OwnedRoomId, RoomId, UserId, api::client::room::upgrade_room};
use serde_json::{Value, json};

use crate::{App, push_rule_set::Placement, pushrules, ratelimit::Action};

pub fn routes(router: Router<App>) -> Router<App> {
    router.ruma_route(upgrade)
}

/// `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
async fn upgrade(app: App, req: Ruma<upgrade_room::v3::Request>) -> Result<JsonBody, ApiError> {
    app.limit(Action::RoomCreation, req.auth.user_id.as_str())?;
    let b = &req.body;
    let new_room = app
        .rooms
        .upgrade_room(&b.room_id, &req.auth.user_id, b.new_version.clone(), b.additional_creators.clone())
        .await?;
    carry_user_state(&app, &req.auth.user_id, &new_room).await;
    Ok(JsonBody(json!({ "replacement_room": new_room })))
}

/// After `user` joined `room`: if it replaced another room, copies their tags, room push rule
/// and `m.direct` entry over, where the new room has none yet. Failures are logged; the join
/// stands either way.
pub async fn carry_user_state(app: &App, user: &UserId, room: &RoomId) {
    let result = async {
        let Some(old) = predecessor(app, room).await? else { return Ok(()) };
        copy_tags(app, user, &old, room).await?;
        copy_room_rule(app, user, &old, room).await?;
        copy_direct(app, user, &old, room).await
    };
    if let Err(err) = result.await {
        tracing::warn!(%user, %room, error = %err, "could not carry user state over a room upgrade");
    }
}

async fn predecessor(app: &App, room: &RoomId) -> Result<Option<OwnedRoomId>, Error> {
    let Some(create) = app.rooms.current_state_event(room, "m.room.create", "").await? else {
        return Ok(None);
    };
    Ok(create
        .content_value()
        .get("predecessor")
        .and_then(|p| p.get("room_id"))
        .and_then(Value::as_str)
        .and_then(|r| RoomId::parse(r).ok()))
}

async fn copy_tags(app: &App, user: &UserId, old: &RoomId, new: &RoomId) -> Result<(), Error> {
    let Some(tags) = app.db.account_data(user.as_str(), old.as_str(), "m.tag").await.map_err(Error::from)?
    else {
        return Ok(());
    };
    // Only where the new room has no tags yet, decided atomically with the write.
    app.live
        .account_data
        .update(user, new.as_str(), "m.tag", |stored| Ok(stored.is_none().then_some(tags)))
        .await
        .map(|_| ())
}

async fn copy_room_rule(app: &App, user: &UserId, old: &RoomId, new: &RoomId) -> Result<(), Error> {
    pushrules::update(app, user, |rules| {
        let Ok(rule) = rules.get("room", old.as_str()).cloned() else { return Ok(false) };
        if rules.get("room", new.as_str()).is_ok() {
            return Ok(false);
        }
        let copy = json!({ "actions": rule["actions"] });
        // A rule the set would not take now (its actions no longer valid) is not copied.
        if rules.put("room", new.as_str(), &copy, Placement::default()).is_err() {
            return Ok(false);
        }
        rules.set_enabled("room", new.as_str(), rule["enabled"] != false)?;
        Ok(true)
    })
    .await
}

async fn copy_direct(app: &App, user: &UserId, old: &RoomId, new: &RoomId) -> Result<(), Error> {
    app.live
        .account_data
        .update(user, "", "m.direct", |stored| {
            let Some(content) = stored else { return Ok(None) };
            let mut direct: Value = serde_json::from_str(content).unwrap_or_default();
            let mut changed = false;
            for rooms in direct.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
                if let Some(list) = rooms.as_array_mut()
                    && list.iter().any(|r| r == old.as_str())
                    && !list.iter().any(|r| r == new.as_str())
                {
                    list.push(json!(new));
                    changed = true;
                }
            }
            Ok(changed.then(|| direct.to_string()))
        })
        .await
        .map(|_| ())
}
