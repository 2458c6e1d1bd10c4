//! The chat-feature runs: sending into a 1,000-member room (push rules evaluated and unread
//! counts kept for every member) against a 2-member room, full-text search over a large history,
//! and how fast typing notices and read receipts reach long-polling members.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use futures::{StreamExt, stream};
use serde_json::json;

use crate::client::{Server, User, enc, percentile, throughput, verify_room};

/// Registers `count` users named `{prefix}{i}`, a few at a time (password hashing dominates).
pub async fn register_many(server: &Arc<Server>, prefix: &str, count: usize) -> Result<Vec<User>> {
    stream::iter(0..count)
        .map(|i| {
            let server = server.clone();
            let name = format!("{prefix}{i}");
            async move { server.register(&name).await }
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Send throughput with 10 concurrent requests from one sender into a room of `members` users.
pub struct BigRoom {
    pub two_members: f64,
    pub many_members: f64,
    pub members: usize,
}

pub async fn big_room(server: &Arc<Server>, run: u32, members: usize, per_task: usize) -> Result<BigRoom> {
    let users = register_many(server, &format!("big{run}u"), members).await?;
    let sender = users[0].clone();
    let small = server.create_room(&sender).await?;
    server.join(&users[1], &small).await?;
    let big = server.create_room(&sender).await?;
    stream::iter(users.iter().skip(1).cloned())
        .map(|u| {
            let (server, big) = (server.clone(), big.clone());
            async move { server.join(&u, &big).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let tasks = vec![sender.clone(); 10];
    let two_members = throughput(server, &tasks, std::slice::from_ref(&small), per_task, "small").await?;
    let many_members = throughput(server, &tasks, std::slice::from_ref(&big), per_task, "big").await?;
    let expected: HashMap<String, u64> = (0..10).map(|i| (format!("big-{i}"), per_task as u64)).collect();
    verify_room(server, &users[1], &big, &expected).await.context("big-room run")?;
    // The counts were kept: a member who read nothing has every message unread.
    let sync = server.sync(&users[members - 1], None, 0, r#"{"room":{"timeline":{"limit":1}}}"#).await?;
    let unread =
        sync["rooms"]["join"][&big]["unread_notifications"]["notification_count"].as_u64().unwrap_or(0);
    ensure!(unread as usize == 10 * per_task, "unread count {unread}, expected {}", 10 * per_task);
    Ok(BigRoom { two_members, many_members, members })
}

/// Search latency over a history of `messages` messages.
pub struct Search {
    pub messages: usize,
    pub fill_rate: f64,
    /// `(query, order, hits, p50 ms, p95 ms)`.
    pub queries: Vec<(String, &'static str, u64, f64, f64)>,
}

const WORDS: &[&str] = &[
    "meeting", "lunch", "project", "deadline", "coffee", "weekend", "report", "budget", "design", "review",
    "launch", "customer", "server", "release", "holiday", "train", "photo", "music", "dinner", "football",
];

pub async fn search(server: &Arc<Server>, run: u32, messages: usize) -> Result<Search> {
    let users = register_many(server, &format!("search{run}u"), 10).await?;
    let mut rooms = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let room = server.create_room(user).await?;
        if i != 0 {
            server.join(&users[0], &room).await?;
        }
        rooms.push(room);
    }
    let started = Instant::now();
    let per_user = messages / users.len();
    let mut tasks = Vec::new();
    for (u, user) in users.iter().enumerate() {
        let (server, user, room) = (server.clone(), user.clone(), rooms[u].clone());
        tasks.push(tokio::spawn(async move {
            for seq in 0..per_user {
                let n = u * per_user + seq;
                // Two common words, a rarer numbered word, and Chinese text every 50th message.
                let mut body =
                    format!("{} {} item{}", WORDS[n % WORDS.len()], WORDS[(n / 7) % WORDS.len()], n % 1000);
                if n.is_multiple_of(50) {
                    body.push_str(" 你好世界，明天见");
                }
                let content = json!({ "msgtype": "m.text", "body": body });
                server.send(&user, &room, &format!("s{run}-{u}-{seq}"), content).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let fill_rate = (per_user * users.len()) as f64 / started.elapsed().as_secs_f64();
    let searcher = &users[0];
    let mut queries = Vec::new();
    for (term, order) in [
        ("item123", "rank"),
        ("你好", "rank"),
        ("coffee", "rank"),
        ("coffee", "recent"),
        ("lunch meeting", "rank"),
    ] {
        let body =
            json!({ "search_categories": { "room_events": { "search_term": term, "order_by": order } } });
        let mut times = Vec::new();
        let mut hits = 0;
        for _ in 0..20 {
            let t = Instant::now();
            let res = server
                .call(
                    reqwest::Method::POST,
                    "/_matrix/client/v3/search",
                    Some(&searcher.token),
                    Some(body.clone()),
                )
                .await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            hits = res["search_categories"]["room_events"]["count"].as_u64().unwrap_or(0);
            ensure!(
                !res["search_categories"]["room_events"]["results"].as_array().is_none_or(|r| r.is_empty()),
                "search for {term} found nothing"
            );
        }
        times.sort_by(|a, b| a.total_cmp(b));
        queries.push((term.to_owned(), order, hits, percentile(&times, 0.5), percentile(&times, 0.95)));
    }
    Ok(Search { messages: per_user * users.len(), fill_rate, queries })
}

/// Delivery latency of typing notices and read receipts to long-polling members.
pub struct Ephemeral {
    /// `(p50, p95)` in ms.
    pub typing: (f64, f64),
    pub receipts: (f64, f64),
    pub receivers: usize,
}

pub async fn ephemeral(
    server: &Arc<Server>,
    run: u32,
    receivers: usize,
    updates: usize,
) -> Result<Ephemeral> {
    let users = register_many(server, &format!("eph{run}u"), receivers + 1).await?;
    let actor = users[0].clone();
    let room = server.create_room(&actor).await?;
    for u in &users[1..] {
        server.join(u, &room).await?;
    }
    // Events to put receipts on.
    let mut events = Vec::new();
    for i in 0..updates {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/e{run}-{i}", enc(&room));
        let res = server
            .call(
                reqwest::Method::PUT,
                &path,
                Some(&actor.token),
                Some(json!({ "msgtype": "m.text", "body": i.to_string() })),
            )
            .await?;
        events.push(res["event_id"].as_str().unwrap_or_default().to_owned());
    }
    let typing = measure(server, &users[1..], &room, "m.typing", updates, {
        let (server, actor, room) = (server.clone(), actor.clone(), room.clone());
        move |i: usize| {
            let (server, actor, room) = (server.clone(), actor.clone(), room.clone());
            async move {
                let user = actor_id(&server, &actor).await?;
                let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&user));
                let body = if i.is_multiple_of(2) {
                    json!({ "typing": true, "timeout": 30000 })
                } else {
                    json!({ "typing": false })
                };
                server.call(reqwest::Method::PUT, &path, Some(&actor.token), Some(body)).await.map(|_| ())
            }
        }
    })
    .await?;
    let receipts = measure(server, &users[1..], &room, "m.receipt", updates, {
        let (server, actor, room, events) = (server.clone(), actor.clone(), room.clone(), Arc::new(events));
        move |i: usize| {
            let (server, actor, room, events) = (server.clone(), actor.clone(), room.clone(), events.clone());
            async move {
                let path =
                    format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&events[i]));
                server
                    .call(reqwest::Method::POST, &path, Some(&actor.token), Some(json!({})))
                    .await
                    .map(|_| ())
            }
        }
    })
    .await?;
    Ok(Ephemeral { typing, receipts, receivers })
}

async fn actor_id(server: &Server, user: &User) -> Result<String> {
    let me = server
        .call(reqwest::Method::GET, "/_matrix/client/v3/account/whoami", Some(&user.token), None)
        .await?;
    Ok(me["user_id"].as_str().unwrap_or_default().to_owned())
}

/// Receivers long-poll for `ty` updates while `update(i)` is called `count` times, 50 ms apart;
/// each update's latency is the time until every receiver saw an update after it was sent.
async fn measure<F, Fut>(
    server: &Arc<Server>,
    receivers: &[User],
    room: &str,
    ty: &'static str,
    count: usize,
    update: F,
) -> Result<(f64, f64)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let filter = json!({ "room": { "rooms": [room], "timeline": { "limit": 0 }, "state": { "types": [] } },
                         "presence": { "types": [] }, "account_data": { "types": [] } })
    .to_string();
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for r in receivers {
        let (server, r, room, filter) = (server.clone(), r.clone(), room.to_owned(), filter.clone());
        let since =
            server.sync(&r, None, 0, &filter).await?["next_batch"].as_str().unwrap_or_default().to_owned();
        tasks.push(tokio::spawn(async move {
            let mut since = since;
            let mut arrivals = Vec::new();
            while arrivals.len() < count {
                let sync = server.sync(&r, Some(&since), 10_000, &filter).await?;
                let now = epoch.elapsed().as_secs_f64() * 1000.0;
                let events = sync["rooms"]["join"][&room]["ephemeral"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if events.iter().any(|e| e["type"] == ty) {
                    arrivals.push(now);
                }
                since = sync["next_batch"].as_str().unwrap_or_default().to_owned();
            }
            anyhow::Ok(arrivals)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        sent.push(epoch.elapsed().as_secs_f64() * 1000.0);
        update(i).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut latencies = Vec::new();
    for t in tasks {
        let arrivals: Vec<f64> =
            tokio::time::timeout(Duration::from_secs(30), t).await.context("receivers timed out")???;
        for (arrived, sent) in arrivals.iter().zip(&sent) {
            latencies.push(arrived - sent);
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&latencies, 0.5), percentile(&latencies, 0.95)))
}
