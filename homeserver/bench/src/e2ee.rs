//! The E2EE run: the key server's two hot paths for a user with 50 devices (a person with
//! many sessions, or a bot fleet) — `POST /keys/claim` of one one-time key from every device
//! in one request, as a client does before it sends that user a room key, and `PUT
//! /sendToDevice` of one message per device (each different, as Olm-encrypted room keys are).
//! Checked on the way: every claim gets a key from each device and no key is handed out twice;
//! one of the devices receives every to-device message exactly once, in order.

use std::{collections::HashSet, time::Instant};

use anyhow::{Result, ensure};
use serde_json::{Map, Value, json};

use crate::client::{Server, User, percentile};

/// One device of the target user: its token and id.
struct Device {
    token: String,
    id: String,
}

pub struct E2eeRun {
    pub devices: usize,
    pub rounds: usize,
    /// `/keys/claim` latency (p50, p95), ms.
    pub claim: (f64, f64),
    /// `/sendToDevice` latency (p50, p95), ms.
    pub send: (f64, f64),
}

async fn login(server: &Server, name: &str) -> Result<Device> {
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": name }, "password": "bench-password" });
    let res = server.call(reqwest::Method::POST, "/_matrix/client/v3/login", None, Some(body)).await?;
    Ok(Device {
        token: res["access_token"].as_str().unwrap_or_default().to_owned(),
        id: res["device_id"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Uploads a device's (unsigned, made-up) identity keys and `count` one-time keys.
async fn upload_keys(server: &Server, user_id: &str, device: &Device, count: usize) -> Result<()> {
    let id = &device.id;
    let device_keys = json!({
        "user_id": user_id, "device_id": id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": { format!("curve25519:{id}"): format!("curve{id}"), format!("ed25519:{id}"): format!("ed{id}") },
        "signatures": { user_id: { format!("ed25519:{id}"): "sig" } },
    });
    let one_time_keys: Map<String, Value> = (0..count)
        .map(|i| {
            (
                format!("signed_curve25519:{id}{i:05}"),
                json!({ "key": format!("otk-{id}-{i}"), "signatures": {} }),
            )
        })
        .collect();
    let body = json!({ "device_keys": device_keys, "one_time_keys": one_time_keys });
    server
        .call(reqwest::Method::POST, "/_matrix/client/v3/keys/upload", Some(&device.token), Some(body))
        .await?;
    Ok(())
}

pub async fn e2ee(server: &Server, run: u32, devices: usize, rounds: usize) -> Result<E2eeRun> {
    let name = format!("bench{run}e2ee");
    server.register(&name).await?;
    let user_id = whoami(server, &login(server, &name).await?).await?;
    let mut targets = Vec::new();
    for _ in 0..devices {
        let device = login(server, &name).await?;
        upload_keys(server, &user_id, &device, rounds).await?;
        targets.push(device);
    }
    let sender = server.register(&format!("bench{run}e2eesender")).await?;

    // Claims: one key of every device per request.
    let mut claimed = HashSet::new();
    let mut claim_ms = Vec::new();
    let ids: Map<String, Value> =
        targets.iter().map(|d| (d.id.clone(), json!("signed_curve25519"))).collect();
    let body = json!({ "one_time_keys": { &user_id: ids } });
    for _ in 0..rounds {
        let started = Instant::now();
        let res = server
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/keys/claim",
                Some(&sender.token),
                Some(body.clone()),
            )
            .await?;
        claim_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let keys = res["one_time_keys"][&user_id].as_object().cloned().unwrap_or_default();
        ensure!(keys.len() == devices, "a claim got keys of {} devices, not {devices}", keys.len());
        for key in keys.values().filter_map(Value::as_object).flat_map(|k| k.keys()) {
            ensure!(claimed.insert(key.clone()), "one-time key {key} was handed out twice");
        }
    }

    // To-device: one message per device per request, each different.
    let watcher = &targets[0];
    let since = sync_token(server, watcher, None).await?;
    let mut send_ms = Vec::new();
    for round in 0..rounds {
        let messages: Map<String, Value> = targets
            .iter()
            .map(|d| (d.id.clone(), json!({ "round": round, "ciphertext": "x".repeat(1000), "for": d.id })))
            .collect();
        let body = json!({ "messages": { &user_id: messages } });
        let path = format!("/_matrix/client/v3/sendToDevice/m.room.encrypted/bench-{run}-{round}");
        let started = Instant::now();
        server.call(reqwest::Method::PUT, &path, Some(&sender.token), Some(body)).await?;
        send_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let mut rounds_seen = Vec::new();
    let mut since = since;
    while rounds_seen.len() < rounds {
        let sync = sync_value(server, watcher, Some(&since)).await?;
        for event in sync["to_device"]["events"].as_array().into_iter().flatten() {
            ensure!(event["content"]["for"] == watcher.id.as_str(), "a message for another device arrived");
            rounds_seen.push(event["content"]["round"].as_u64().unwrap_or(u64::MAX) as usize);
        }
        since = sync["next_batch"].as_str().unwrap_or_default().to_owned();
    }
    ensure!(rounds_seen == (0..rounds).collect::<Vec<_>>(), "to-device messages out of order or repeated");

    claim_ms.sort_by(|a, b| a.total_cmp(b));
    send_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(E2eeRun {
        devices,
        rounds,
        claim: (percentile(&claim_ms, 0.5), percentile(&claim_ms, 0.95)),
        send: (percentile(&send_ms, 0.5), percentile(&send_ms, 0.95)),
    })
}

async fn whoami(server: &Server, device: &Device) -> Result<String> {
    let res = server
        .call(reqwest::Method::GET, "/_matrix/client/v3/account/whoami", Some(&device.token), None)
        .await?;
    Ok(res["user_id"].as_str().unwrap_or_default().to_owned())
}

async fn sync_value(server: &Server, device: &Device, since: Option<&str>) -> Result<Value> {
    let user = User { token: device.token.clone() };
    server.sync(&user, since, 10_000, r#"{"room":{"rooms":[]},"presence":{"types":[]}}"#).await
}

async fn sync_token(server: &Server, device: &Device, since: Option<&str>) -> Result<String> {
    Ok(sync_value(server, device, since).await?["next_batch"].as_str().unwrap_or_default().to_owned())
}
