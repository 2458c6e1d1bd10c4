//! Devices: listing, renaming and deleting a user's login sessions.

use axum::Router;
use homeserver_core::Error;
use homeserver_http::{ApiError, JsonBody, RouterExt, Ruma};
use homeserver_storage::accounts::Device;
use ruma::{
    UserId,
    api::client::device::{delete_device, delete_devices, get_device, get_devices, update_device},
};
use serde_json::{Value, json};

use crate::{App, uia};

pub fn routes(router: Router<App>) -> Router<App> {
    router
        .ruma_route(list_devices)
        .ruma_route(device)
        .ruma_route(rename_device)
        .ruma_route(remove_device)
        .ruma_route(remove_devices)
}

fn device_json(d: &Device) -> Value {
    crate::without_nulls(json!({
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ip": d.last_seen_ip,
        "last_seen_ts": d.last_seen_ts,
    }))
}

/// `GET /_matrix/client/v3/devices`
async fn list_devices(app: App, req: Ruma<get_devices::v3::Request>) -> Result<JsonBody, ApiError> {
    let devices = app.db.devices(req.auth.user_id.as_str()).await.map_err(Error::from)?;
    Ok(JsonBody(json!({ "devices": devices.iter().map(device_json).collect::<Vec<_>>() })))
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
async fn device(app: App, req: Ruma<get_device::v3::Request>) -> Result<JsonBody, ApiError> {
    let device = app
        .db
        .device(req.auth.user_id.as_str(), req.body.device_id.as_str())
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::not_found("Device not found"))?;
    Ok(JsonBody(device_json(&device)))
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
async fn rename_device(app: App, req: Ruma<update_device::v3::Request>) -> Result<JsonBody, ApiError> {
    let updated = app
        .db
        .set_device_display_name(
            req.auth.user_id.as_str(),
            req.body.device_id.as_str(),
            req.body.display_name.as_deref(),
        )
        .await
        .map_err(Error::from)?;
    if !updated {
        return Err(Error::not_found("Device not found").into());
    }
    let renamed = [req.body.device_id.to_string()];
    app.live.device_lists.devices_changed(&req.auth.user_id, &renamed).await?;
    Ok(JsonBody(json!({})))
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}`
async fn remove_device(app: App, req: Ruma<delete_device::v3::Request>) -> Result<JsonBody, ApiError> {
    let user = &req.auth.user_id;
    uia::authenticate(&app, uia::Step::of(&req), &[&[uia::PASSWORD]], Some(user), false).await?;
    if app.db.delete_device(user.as_str(), req.body.device_id.as_str()).await.map_err(Error::from)? {
        app.live.device_lists.devices_changed(user, &[req.body.device_id.to_string()]).await?;
    }
    Ok(JsonBody(json!({})))
}

/// `POST /_matrix/client/v3/delete_devices`
async fn remove_devices(app: App, req: Ruma<delete_devices::v3::Request>) -> Result<JsonBody, ApiError> {
    let user = &req.auth.user_id;
    uia::authenticate(&app, uia::Step::of(&req), &[&[uia::PASSWORD]], Some(user), false).await?;
    // Only devices that exist change the list (other servers are told of each).
    let existing = ids_of(&app, user, None).await?;
    let ids: Vec<String> =
        req.body.devices.iter().map(|d| d.to_string()).filter(|d| existing.contains(d)).collect();
    app.db.delete_devices(user.as_str(), &ids).await.map_err(Error::from)?;
    app.live.device_lists.devices_changed(user, &ids).await?;
    Ok(JsonBody(json!({})))
}

/// The ids of a user's devices but `except` (those a logout is about to delete).
pub(crate) async fn ids_of(app: &App, user: &UserId, except: Option<&str>) -> Result<Vec<String>, Error> {
    let devices = app.db.devices(user.as_str()).await.map_err(Error::from)?;
    Ok(devices.into_iter().map(|d| d.device_id).filter(|d| Some(d.as_str()) != except).collect())
}
