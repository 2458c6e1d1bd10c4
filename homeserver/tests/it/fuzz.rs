//! Property tests over what clients control: request bodies through the `Ruma<T>` extractor,
//! filters (inline and stored, with glob patterns), search criteria and pagination parameters.
//! Whatever the input, the server answers (no dropped connection, no panic), never with a 5xx,
//! and within a bounded time. Each property runs a fixed number of generated cases, so CI time
//! stays predictable; a failure prints the shrunk input.

use std::time::Duration;

use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Value, json};

use crate::harness::{TestServer, User, enc};

/// Generated cases per property.
const CASES: u32 = 128;
/// The longest any one request may take.
const BOUND: Duration = Duration::from_secs(5);

/// Strings that have broken servers: globs, ids, huge and odd text.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("*".to_owned()),
        Just("*a".repeat(40) + "b"),
        Just("m.room.*".to_owned()),
        Just("m.login.password".to_owned()),
        Just("@alice:localhost".to_owned()),
        Just("!nope:localhost".to_owned()),
        Just("$nope".to_owned()),
        Just("s0_0".to_owned()),
        Just("s18446744073709551615_1".to_owned()),
        Just("s9223372036854775807_0".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("-1".to_owned()),
        Just("x".repeat(300)),
        Just("你好 世界 ✓ \u{0}".to_owned()),
        "[a-z.*_@:!$0-9]{0,40}",
    ]
}

/// Arbitrary JSON, a few levels deep, biased towards the shapes Matrix bodies have.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e12..1.0e12f64).prop_map(Value::from),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("types".to_owned()),
                    Just("not_types".to_owned()),
                    Just("senders".to_owned()),
                    Just("rooms".to_owned()),
                    Just("limit".to_owned()),
                    Just("room".to_owned()),
                    Just("timeline".to_owned()),
                    Just("filter".to_owned()),
                    Just("identifier".to_owned()),
                    Just("auth".to_owned()),
                    Just("password".to_owned()),
                    Just("search_categories".to_owned()),
                    Just("room_events".to_owned()),
                    Just("search_term".to_owned()),
                    Just("body".to_owned()),
                    Just("msgtype".to_owned()),
                    Just("m.relates_to".to_owned()),
                    interesting_string(),
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies as sent: JSON, but also empty, truncated and non-JSON bytes.
fn raw_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => Just(Vec::new()),
        1 => json_value().prop_map(|v| { let mut b = v.to_string().into_bytes(); b.truncate(b.len() / 2); b }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    server: TestServer,
    alice: User,
    room: String,
    event: String,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (server, alice, room, event) = rt.block_on(async {
        let server = TestServer::start().await;
        let alice = server.register("alice").await;
        let room = server.create_room(&alice, json!({ "preset": "public_chat" })).await;
        let mut event = String::new();
        for i in 0..5 {
            event = server.send_text(&alice, &room, &format!("fuzz seed message {i}")).await;
        }
        (server, alice, room, event)
    });
    Fixture { rt, server, alice, room, event }
}

impl Fixture {
    /// Sends one request; fails the case on a 5xx, a dropped connection or a slow answer.
    fn check(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> Result<(), TestCaseError> {
        let url = self.server.url(path);
        let token = self.alice.token.clone();
        let http = self.server.http.clone();
        let outcome = self.rt.block_on(async move {
            let mut req = http.request(method, url).bearer_auth(token);
            if let Some(body) = body {
                req = req.header("content-type", "application/json").body(body);
            }
            tokio::time::timeout(BOUND, req.send()).await
        });
        let response = match outcome {
            Err(_) => return Err(TestCaseError::fail(format!("{path}: no answer within {BOUND:?}"))),
            Ok(Err(e)) => return Err(TestCaseError::fail(format!("{path}: request failed: {e}"))),
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        prop_assert!(status < 500, "{} answered {}", path, status);
        Ok(())
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() })
}

#[test]
fn request_bodies_never_cause_a_server_error() {
    let f = fixture();
    let room = enc(&f.room);
    let user = enc(&f.alice.user_id);
    let endpoints: Vec<(reqwest::Method, String)> = vec![
        (reqwest::Method::POST, "/_matrix/client/v3/login".into()),
        (reqwest::Method::POST, "/_matrix/client/v3/register".into()),
        (reqwest::Method::POST, "/_matrix/client/v3/createRoom".into()),
        (reqwest::Method::POST, format!("/_matrix/client/v3/user/{user}/filter")),
        (reqwest::Method::POST, "/_matrix/client/v3/search".into()),
        (reqwest::Method::POST, format!("/_matrix/client/v3/rooms/{room}/invite")),
        (reqwest::Method::POST, format!("/_matrix/client/v3/join/{room}")),
        (reqwest::Method::POST, format!("/_matrix/client/v3/rooms/{room}/read_markers")),
        (reqwest::Method::POST, "/_matrix/client/v3/publicRooms".into()),
        (reqwest::Method::POST, "/_matrix/client/v3/user_directory/search".into()),
        (reqwest::Method::PUT, format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic")),
        (reqwest::Method::PUT, format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}")),
        (reqwest::Method::PUT, format!("/_matrix/client/v3/user/{user}/rooms/{room}/tags/u.fuzz")),
        (reqwest::Method::PUT, "/_matrix/client/v3/pushrules/global/override/fuzz".into()),
        (reqwest::Method::PUT, format!("/_matrix/client/v3/directory/list/room/{room}")),
    ];
    let txn = std::cell::Cell::new(0u64);
    runner()
        .run(&(0..endpoints.len(), raw_body()), |(which, body)| {
            let (method, path) = &endpoints[which];
            f.check(method.clone(), path, Some(body))
        })
        .unwrap();
    // Room events through the pipeline: any content, each under a fresh transaction id.
    runner()
        .run(&(json_value(), interesting_string()), |(content, kind)| {
            txn.set(txn.get() + 1);
            let kind = if kind.is_empty() { "m.room.message".to_owned() } else { enc(&kind) };
            let path = format!("/_matrix/client/v3/rooms/{room}/send/{kind}/fuzz{}", txn.get());
            f.check(reqwest::Method::PUT, &path, Some(content.to_string().into_bytes()))
        })
        .unwrap();
}

#[test]
fn filters_and_pagination_parameters_never_cause_a_server_error_or_a_slow_answer() {
    let f = fixture();
    let room = enc(&f.room);
    let patterns = || prop::collection::vec(interesting_string(), 0..120);
    let filter = (patterns(), patterns(), any::<Option<u16>>(), any::<bool>()).prop_map(
        |(types, not_types, limit, lazy)| {
            json!({ "room": { "timeline": { "types": types, "not_types": not_types, "limit": limit,
                "lazy_load_members": lazy }, "state": { "types": ["*"] } }, "presence": { "not_types": ["*"] } })
        },
    );
    let token = prop_oneof![
        interesting_string(),
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| format!("s{a}_{b}")),
        any::<i64>().prop_map(|n| n.to_string()),
    ];
    let limit = prop_oneof![any::<i64>().prop_map(|n| n.to_string()), interesting_string()];
    runner()
        .run(&(filter, token, limit, prop_oneof![Just("b".to_owned()), Just("f".to_owned()), Just("x".to_owned())]), |(filter, token, limit, dir)| {
            let filter = enc(&filter.to_string());
            let token = enc(&token);
            let limit = enc(&limit);
            f.check(reqwest::Method::GET, &format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"), None)?;
            f.check(
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/sync?timeout=0&since={token}&filter={filter}"),
                None,
            )?;
            f.check(
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir={dir}&from={token}&limit={limit}&filter={filter}"),
                None,
            )?;
            f.check(
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/rooms/{room}/members?at={token}"),
                None,
            )?;
            f.check(
                reqwest::Method::GET,
                &format!("/_matrix/client/v1/rooms/{room}/threads?from={token}&limit={limit}"),
                None,
            )?;
            f.check(
                reqwest::Method::GET,
                &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={limit}&dir={dir}"),
                None,
            )?;
            f.check(
                reqwest::Method::GET,
                &format!(
                    "/_matrix/client/v1/rooms/{room}/relations/{}?from={token}&to={token}&dir={dir}&limit={limit}&recurse=true",
                    enc(&f.event)
                ),
                None,
            )?;
            f.check(
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/rooms/{room}/context/{}?limit={limit}&filter={filter}", enc(&f.event)),
                None,
            )?;
            f.check(reqwest::Method::GET, &format!("/_matrix/client/v3/notifications?from={token}&limit={limit}"), None)
        })
        .unwrap();
}

#[test]
fn search_criteria_never_cause_a_server_error_or_a_slow_answer() {
    let f = fixture();
    let criteria = (
        interesting_string(),
        prop::collection::vec(interesting_string(), 0..5),
        json_value(),
        prop_oneof![Just(json!("rank")), Just(json!("recent")), json_value()],
        json_value(),
    )
        .prop_map(|(term, keys, filter, order, context)| {
            json!({ "search_categories": { "room_events": {
                "search_term": term, "keys": keys, "filter": filter, "order_by": order,
                "event_context": context, "include_state": true, "groupings": { "group_by": [{ "key": "room_id" }] },
            } } })
        });
    runner()
        .run(&(criteria, interesting_string()), |(body, batch)| {
            let path = format!("/_matrix/client/v3/search?next_batch={}", enc(&batch));
            f.check(reqwest::Method::POST, &path, Some(body.to_string().into_bytes()))
        })
        .unwrap();
}
