//! `lattice plugin …`: the plugin admin API of the running server, from the command line. The
//! plugins live in the serving process, so this talks to it over HTTP (the configured client
//! listener, on loopback when it listens on every address) with a server admin's access token.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::{Value, json};

use crate::config::Config;

/// What to ask the running server.
#[derive(Debug, Clone)]
pub enum PluginRequest {
    List,
    Enable(String),
    Disable(String),
    Reload(String),
    Logs(String),
    DeadLetters(String),
    /// Deliver dead letters again: one (by stream position) or all.
    Replay(String, Option<i64>),
}

/// The running server's base URL for the configured listener.
pub(crate) fn server_url(config: &Config) -> String {
    let mut addr: SocketAddr = config.listen.client;
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => {}
    }
    format!("http://{addr}")
}

/// The plugin admin API's base URL.
fn base_url(config: &Config) -> String {
    format!("{}/_lattice/admin/v1/plugins", server_url(config))
}

/// Sends the request; returns the answer as text for the terminal, or the server's error.
pub async fn run(config: &Config, token: &str, request: PluginRequest) -> Result<String, String> {
    let base = base_url(config);
    let enc = |id: &str| -> String {
        id.bytes()
            .map(|b| match b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                true => (b as char).to_string(),
                false => format!("%{b:02X}"),
            })
            .collect()
    };
    let client = reqwest::Client::new();
    let (method, path, body) = match &request {
        PluginRequest::List => (reqwest::Method::GET, String::new(), None),
        PluginRequest::Enable(id) => (reqwest::Method::POST, format!("/{}/enable", enc(id)), Some(json!({}))),
        PluginRequest::Disable(id) => {
            (reqwest::Method::POST, format!("/{}/disable", enc(id)), Some(json!({})))
        }
        PluginRequest::Reload(id) => (reqwest::Method::POST, format!("/{}/reload", enc(id)), Some(json!({}))),
        PluginRequest::Logs(id) => (reqwest::Method::GET, format!("/{}/logs", enc(id)), None),
        PluginRequest::DeadLetters(id) => (reqwest::Method::GET, format!("/{}/dead_letters", enc(id)), None),
        PluginRequest::Replay(id, pos) => {
            let body = pos.map_or(json!({}), |p| json!({ "stream_pos": p }));
            (reqwest::Method::POST, format!("/{}/dead_letters/replay", enc(id)), Some(body))
        }
    };
    let mut builder = client.request(method, format!("{base}{path}")).bearer_auth(token);
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let response = builder.send().await.map_err(|e| format!("cannot reach the server at {base}: {e}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let error = answer["error"].as_str().unwrap_or("no details");
        return Err(format!("{status}: {} {error}", answer["errcode"].as_str().unwrap_or("")));
    }
    Ok(render(&request, &answer))
}

/// A terminal rendering of an answer.
fn render(request: &PluginRequest, answer: &Value) -> String {
    match request {
        PluginRequest::List => {
            let mut out = format!(
                "{:<16} {:<10} {:<10} {:>10} {:>8} {:>6}  last error\n",
                "id", "state", "version", "delivered", "crashes", "dead"
            );
            for p in answer["plugins"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:<16} {:<10} {:<10} {:>10} {:>8} {:>6}  {}\n",
                    p["id"].as_str().unwrap_or(""),
                    p["state"].as_str().unwrap_or(""),
                    p["version"].as_str().unwrap_or("-"),
                    p["delivered"],
                    p["crashes"],
                    p["dead_letters"],
                    p["last_error"].as_str().unwrap_or("-"),
                ));
            }
            out.trim_end().to_owned()
        }
        PluginRequest::Logs(_) => answer["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                format!(
                    "{} {:<5} {}",
                    l["ts"],
                    l["level"].as_str().unwrap_or(""),
                    l["message"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        PluginRequest::DeadLetters(_) => answer["dead_letters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                format!(
                    "{} {} {} attempts={} {}",
                    l["stream_pos"],
                    l["room_id"].as_str().unwrap_or(""),
                    l["event_id"].as_str().unwrap_or(""),
                    l["attempts"],
                    l["error"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        PluginRequest::Replay(..) => format!("replaying {} dead letter(s)", answer["replayed"]),
        PluginRequest::Enable(id) | PluginRequest::Disable(id) | PluginRequest::Reload(id) => {
            format!(
                "{id}: {}, version {}",
                answer["state"].as_str().unwrap_or("?"),
                answer["version"].as_str().unwrap_or("-")
            )
        }
    }
}
