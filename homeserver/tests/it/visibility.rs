//! History visibility across every event-returning endpoint, over raw HTTP: a member who left
//! (Bob), users who were never joined (Carol, who rejected an invite, and Eve, a stranger) and a
//! late joiner (Dave) under each `history_visibility`, compared with what the spec allows
//! (Synapse's reading where the spec leaves room): `/messages`, `/event`, `/context`, `/state`,
//! `/members` (also `at` a token), `/joined_members`, `/sync`, `/search`, `/relations`,
//! `/threads`, `/notifications`, `timestamp_to_event` and the legacy `initialSync` and `/events`.
//! The bundled aggregations (`unsigned.m.relations`: thread summary, latest edit, references)
//! get one test per path: they must never show a reply or edit the reader may not see.

use serde_json::{Value, json};

use crate::harness::{TestServer, User, bodies, enc, rand_u64};

fn r(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}{rest}", enc(room))
}

fn v1(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}{rest}", enc(room))
}

const BEFORE: [&str; 2] = ["before: pineapple mango", "before: nothing to see"];
const INVITED_MSG: &str = "while dave was invited: papaya";
const ROOT: &str = "rootword: who is up for lunch?";
const REPLY_DURING: &str = "reply during bob's stay";
const EDITED: &str = "editword: the original text";
const EDIT_DURING: &str = "edited while bob was here";
const BOB_SAYS: &str = "bob says mango";
/// In every event sent after Bob left (bodies, edits, the topic).
const MARKER: &str = "after bob left";
const AFTER_MSG: &str = "after bob left: avocado mango";
const REPLY_AFTER: &str = "reply after bob left";
const EDIT_AFTER: &str = "edited after bob left";
const REFERENCE_AFTER: &str = "reference after bob left";
const AFTER_ROOT: &str = "thread root after bob left: avocado";
const AFTER_ROOT_REPLY: &str = "a reply in the thread started after bob left";
const TOPIC_AFTER: &str = "topic after bob left";
const SIDE_ROOT: &str = "a side thread while bob was here";
const SIDE_REPLY: &str = "a side reply while bob was here";
const QUIET_ROOT: &str = "nobody answered this while bob was here";
const QUIET_REPLY: &str = "the first reply, after bob left";

/// An initial sync filter that shows left rooms with their whole timeline.
fn leave_filter() -> Value {
    json!({ "room": { "include_leave": true, "timeline": { "limit": 100 } } })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hv {
    Shared,
    Joined,
    Invited,
    WorldReadable,
}

impl Hv {
    const ALL: [Hv; 4] = [Hv::Shared, Hv::Joined, Hv::Invited, Hv::WorldReadable];
    /// The settings under which a departed member sees nothing sent after they left.
    const HIDING: [Hv; 3] = [Hv::Shared, Hv::Joined, Hv::Invited];

    fn as_str(self) -> &'static str {
        match self {
            Hv::Shared => "shared",
            Hv::Joined => "joined",
            Hv::Invited => "invited",
            Hv::WorldReadable => "world_readable",
        }
    }

    /// Whether a member still joined sees what was sent before they were invited.
    fn shows_earlier_history(self) -> bool {
        matches!(self, Hv::Shared | Hv::WorldReadable)
    }
}

fn ids(chunk: &Value) -> Vec<String> {
    chunk
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn find<'a>(events: &'a Value, id: &str) -> Option<&'a Value> {
    events.as_array()?.iter().find(|e| e["event_id"] == id)
}

fn search_bodies(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .map(|a| {
            a.iter().filter_map(|r| r["result"]["content"]["body"].as_str().map(str::to_owned)).collect()
        })
        .unwrap_or_default()
}

async fn send(server: &TestServer, user: &User, room: &str, content: Value) -> String {
    let path = r(room, &format!("/send/m.room.message/v{}", rand_u64()));
    let (status, body) = server.put(&path, Some(&user.token), content).await;
    assert_eq!(status, 200, "send: {body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn thread_reply(server: &TestServer, user: &User, room: &str, root: &str, body: &str) -> String {
    let content = json!({
        "msgtype": "m.text", "body": body,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                          "m.in_reply_to": { "event_id": root } },
    });
    send(server, user, room, content).await
}

async fn edit(server: &TestServer, user: &User, room: &str, target: &str, body: &str) -> String {
    let content = json!({
        "msgtype": "m.text", "body": format!("* {body}"),
        "m.new_content": { "msgtype": "m.text", "body": body },
        "m.relates_to": { "rel_type": "m.replace", "event_id": target },
    });
    send(server, user, room, content).await
}

async fn leave(server: &TestServer, user: &User, room: &str) {
    let (status, body) = server.post(&r(room, "/leave"), Some(&user.token), json!({})).await;
    assert_eq!(status, 200, "leave: {body}");
}

/// The id of the room's newest event, as its creator sees it.
async fn last_event(server: &TestServer, creator: &User, room: &str) -> String {
    let (status, page) = server.get(&r(room, "/messages?dir=b&limit=1"), Some(&creator.token)).await;
    assert_eq!(status, 200, "{page}");
    page["chunk"][0]["event_id"].as_str().expect("an event").to_owned()
}

/// A fresh stream token (`next_batch` of an initial sync).
async fn sync_token(server: &TestServer, user: &User) -> String {
    server.sync(user, None, 0).await["next_batch"].as_str().unwrap().to_owned()
}

/// One room's story under one history visibility.
///
/// Alice creates a public room and posts `BEFORE`; she invites Dave, posts `INVITED_MSG`, Dave
/// joins; she invites Bob, Bob joins. While Bob is there: a thread root mentioning him with one
/// reply, a message mentioning him that references the root and is edited once, a side thread
/// with one reply, Bob's own message, a message nobody answers yet, and Carol is invited and
/// rejects. Bob leaves. Then Alice replies in the thread again, edits the message again,
/// references the root again, starts a new thread, answers the quiet message in a thread,
/// changes the topic and Frank joins: everything in that last phase carries `MARKER`, or
/// Frank's id. Eve never touches the room.
struct Scenario {
    hv: Hv,
    server: TestServer,
    room: String,
    alice: User,
    bob: User,
    carol: User,
    dave: User,
    eve: User,
    frank: User,
    before: Vec<String>,
    invited_msg: String,
    /// A token from before Dave was invited.
    before_dave: String,
    /// A token from while Dave was invited, not yet joined.
    dave_invited: String,
    dave_invite: String,
    dave_join: String,
    /// Bob's sync token right after he joined.
    bob_since: String,
    root: String,
    reply_during: String,
    edited: String,
    edit_during: String,
    bob_says: String,
    carol_invite: String,
    carol_reject: String,
    bob_leave: String,
    after_msg: String,
    reply_after: String,
    edit_after: String,
    reference_after: String,
    after_root: String,
    /// A second thread with its only reply while Bob was there, after `reply_during`.
    side_root: String,
    /// A message Bob saw whose thread began (its first reply) after he left.
    quiet_root: String,
    /// Every event sent after Bob left.
    after: Vec<String>,
}

impl Scenario {
    async fn build(hv: Hv) -> Scenario {
        let server = TestServer::start().await;
        let alice = server.register("alice").await;
        let bob = server.register("bob").await;
        let carol = server.register("carol").await;
        let dave = server.register("dave").await;
        let eve = server.register("eve").await;
        let frank = server.register("frank").await;
        let room = server
            .create_room(
                &alice,
                json!({
                    "preset": "public_chat",
                    "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
                                        "content": { "history_visibility": hv.as_str() } }],
                }),
            )
            .await;
        let (status, setting) =
            server.get(&r(&room, "/state/m.room.history_visibility/"), Some(&alice.token)).await;
        assert_eq!((status, setting["history_visibility"].as_str()), (200, Some(hv.as_str())), "{setting}");
        // Distinct timestamps between the phases, for jumping to a date.
        let tick = || tokio::time::sleep(std::time::Duration::from_millis(3));
        tick().await;

        let mut before = Vec::new();
        for body in BEFORE {
            before.push(server.send_text(&alice, &room, body).await);
        }
        tick().await;
        let before_dave = sync_token(&server, &alice).await;
        server.invite(&alice, &room, &dave.user_id).await;
        let dave_invite = last_event(&server, &alice, &room).await;
        let invited_msg = server.send_text(&alice, &room, INVITED_MSG).await;
        let dave_invited = sync_token(&server, &alice).await;
        server.join(&dave, &room).await;
        let dave_join = last_event(&server, &alice, &room).await;
        server.invite(&alice, &room, &bob.user_id).await;
        server.join(&bob, &room).await;
        let bob_since = sync_token(&server, &bob).await;

        let mention = json!({ "user_ids": [bob.user_id] });
        let root =
            send(&server, &alice, &room, json!({ "msgtype": "m.text", "body": ROOT, "m.mentions": mention }))
                .await;
        let reply_during = thread_reply(&server, &alice, &room, &root, REPLY_DURING).await;
        let edited = send(
            &server,
            &alice,
            &room,
            json!({ "msgtype": "m.text", "body": EDITED, "m.mentions": mention,
                    "m.relates_to": { "rel_type": "m.reference", "event_id": root } }),
        )
        .await;
        let edit_during = edit(&server, &alice, &room, &edited, EDIT_DURING).await;
        let side_root = server.send_text(&alice, &room, SIDE_ROOT).await;
        thread_reply(&server, &alice, &room, &side_root, SIDE_REPLY).await;
        let bob_says = server.send_text(&bob, &room, BOB_SAYS).await;
        let quiet_root = server.send_text(&alice, &room, QUIET_ROOT).await;
        server.invite(&alice, &room, &carol.user_id).await;
        let carol_invite = last_event(&server, &alice, &room).await;
        leave(&server, &carol, &room).await;
        let carol_reject = last_event(&server, &alice, &room).await;
        leave(&server, &bob, &room).await;
        let bob_leave = last_event(&server, &alice, &room).await;
        tick().await;

        let after_msg = server.send_text(&alice, &room, AFTER_MSG).await;
        let reply_after = thread_reply(&server, &alice, &room, &root, REPLY_AFTER).await;
        let edit_after = edit(&server, &alice, &room, &edited, EDIT_AFTER).await;
        let reference_after = send(
            &server,
            &alice,
            &room,
            json!({ "msgtype": "m.text", "body": REFERENCE_AFTER,
                    "m.relates_to": { "rel_type": "m.reference", "event_id": root } }),
        )
        .await;
        let after_root = server.send_text(&alice, &room, AFTER_ROOT).await;
        let after_root_reply = thread_reply(&server, &alice, &room, &after_root, AFTER_ROOT_REPLY).await;
        let quiet_reply = thread_reply(&server, &alice, &room, &quiet_root, QUIET_REPLY).await;
        let (status, topic) = server
            .put(&r(&room, "/state/m.room.topic/"), Some(&alice.token), json!({ "topic": TOPIC_AFTER }))
            .await;
        assert_eq!(status, 200, "{topic}");
        server.invite(&alice, &room, &frank.user_id).await;
        let frank_invite = last_event(&server, &alice, &room).await;
        server.join(&frank, &room).await;
        let frank_join = last_event(&server, &alice, &room).await;
        let after = vec![
            after_msg.clone(),
            reply_after.clone(),
            edit_after.clone(),
            reference_after.clone(),
            after_root.clone(),
            after_root_reply,
            quiet_reply,
            topic["event_id"].as_str().unwrap().to_owned(),
            frank_invite,
            frank_join,
        ];

        let scenario = Scenario {
            hv,
            server,
            room,
            alice,
            bob,
            carol,
            dave,
            eve,
            frank,
            before,
            invited_msg,
            before_dave,
            dave_invited,
            dave_invite,
            dave_join,
            bob_since,
            root,
            reply_during,
            edited,
            edit_during,
            bob_says,
            carol_invite,
            carol_reject,
            bob_leave,
            after_msg,
            reply_after,
            edit_after,
            reference_after,
            after_root,
            side_root,
            quiet_root,
            after,
        };
        scenario.check_alice_sees_everything().await;
        scenario
    }

    /// The aggregations as Alice, who saw it all, sees them: the later reply, edit and reference
    /// count, so a reader who does not see them would notice.
    async fn check_alice_sees_everything(&self) {
        let (status, root) = self.get(&self.alice, &self.event_path(&self.root)).await;
        assert_eq!(status, 200, "{root}");
        let relations = &root["unsigned"]["m.relations"];
        assert_eq!(
            (
                relations["m.thread"]["count"].as_u64(),
                relations["m.thread"]["latest_event"]["event_id"].as_str()
            ),
            (Some(2), Some(self.reply_after.as_str())),
            "alice's view of the root: {root}"
        );
        assert_eq!(
            relations["m.reference"],
            json!({ "chunk": [{ "event_id": self.edited }, { "event_id": self.reference_after }] }),
            "{root}"
        );
        let (_, quiet) = self.get(&self.alice, &self.event_path(&self.quiet_root)).await;
        assert_eq!(quiet["unsigned"]["m.relations"]["m.thread"]["count"], 1, "{quiet}");
        let (_, edited) = self.get(&self.alice, &self.event_path(&self.edited)).await;
        let replace = &edited["unsigned"]["m.relations"]["m.replace"];
        assert_eq!(
            (replace["event_id"].as_str(), replace["content"]["m.new_content"]["body"].as_str()),
            (Some(self.edit_after.as_str()), Some(EDIT_AFTER)),
            "alice's view of the edited message: {edited}"
        );
    }

    fn path(&self, rest: &str) -> String {
        r(&self.room, rest)
    }

    fn v1(&self, rest: &str) -> String {
        v1(&self.room, rest)
    }

    fn event_path(&self, id: &str) -> String {
        self.path(&format!("/event/{}", enc(id)))
    }

    async fn get(&self, user: &User, path: &str) -> (u16, Value) {
        self.server.get(path, Some(&user.token)).await
    }

    async fn get_ok(&self, user: &User, path: &str) -> Value {
        let (status, body) = self.get(user, path).await;
        assert_eq!(status, 200, "{:?}: {path}: {body}", self.hv);
        body
    }

    async fn search(&self, user: &User, criteria: Value) -> Value {
        let (status, body) = self
            .server
            .post(
                "/_matrix/client/v3/search",
                Some(&user.token),
                json!({ "search_categories": { "room_events": criteria } }),
            )
            .await;
        assert_eq!(status, 200, "{:?}: search: {body}", self.hv);
        body["search_categories"]["room_events"].clone()
    }

    async fn sync_with(&self, user: &User, since: Option<&str>, filter: &Value) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(&filter.to_string()));
        if let Some(since) = since {
            path.push_str(&format!("&since={}", enc(since)));
        }
        self.get_ok(user, &path).await
    }

    /// Alice invites Bob back and he joins: what was sent meanwhile is a gap in his history.
    async fn bob_rejoins(&self) {
        self.server.invite(&self.alice, &self.room, &self.bob.user_id).await;
        self.server.join(&self.bob, &self.room).await;
    }

    /// Fails if `body` shows anything sent after Bob left: an event id, `MARKER`, or Frank.
    fn assert_nothing_after(&self, what: &str, body: &Value) {
        let text = body.to_string();
        let leaked: Vec<&String> = self.after.iter().filter(|id| text.contains(id.as_str())).collect();
        assert!(
            leaked.is_empty() && !text.contains(MARKER) && !text.contains(&self.frank.user_id),
            "{:?}: {what} shows what was sent after bob left (ids {leaked:?}): {body}",
            self.hv
        );
    }

    /// The thread root as Bob may see it: one reply (the one before he left), one reference.
    fn assert_root_bundle(&self, what: &str, root: &Value) {
        let relations = &root["unsigned"]["m.relations"];
        let thread = &relations["m.thread"];
        assert_eq!(
            (thread["count"].as_u64(), thread["latest_event"]["event_id"].as_str()),
            (Some(1), Some(self.reply_during.as_str())),
            "{:?}: {what}: the root's thread summary must count and show only the reply bob may see \
             ({} is the reply sent after he left): {root}",
            self.hv,
            self.reply_after
        );
        assert_eq!(
            relations["m.reference"],
            json!({ "chunk": [{ "event_id": self.edited }] }),
            "{:?}: {what}: the root's references must not list the one sent after bob left: {root}",
            self.hv
        );
    }

    /// The edited message as Bob may see it: the edit from before he left.
    fn assert_edited_bundle(&self, what: &str, edited: &Value) {
        let replace = &edited["unsigned"]["m.relations"]["m.replace"];
        assert_eq!(
            (replace["event_id"].as_str(), replace["content"]["m.new_content"]["body"].as_str()),
            (Some(self.edit_during.as_str()), Some(EDIT_DURING)),
            "{:?}: {what}: the latest edit must be the one bob may see: {edited}",
            self.hv
        );
    }

    /// Both bundles in a list of events, which must hold the root and the edited message.
    fn assert_bundles_in(&self, what: &str, events: &Value) {
        let root = find(events, &self.root)
            .unwrap_or_else(|| panic!("{:?}: {what}: the thread root is missing: {events}", self.hv));
        self.assert_root_bundle(what, root);
        let edited = find(events, &self.edited)
            .unwrap_or_else(|| panic!("{:?}: {what}: the edited message is missing: {events}", self.hv));
        self.assert_edited_bundle(what, edited);
    }
}

// ---------------------------------------------------------------------------------------------
// Timelines: /messages and /event for each kind of reader under each setting.

#[tokio::test]
async fn messages_and_event_follow_each_history_visibility() {
    for hv in Hv::ALL {
        let sc = Scenario::build(hv).await;
        let after_bodies = [AFTER_MSG, REPLY_AFTER, REFERENCE_AFTER, AFTER_ROOT];

        // Bob, who left: up to his departure, whichever way he pages.
        let fresh = sync_token(&sc.server, &sc.bob).await;
        for path in [
            format!("/messages?dir=b&limit=100&from={}", enc(&fresh)),
            "/messages?dir=b&limit=100".to_owned(),
            "/messages?dir=f&limit=100".to_owned(),
        ] {
            let page = sc.get_ok(&sc.bob, &sc.path(&path)).await;
            let seen = bodies(&page["chunk"]);
            for during in [ROOT, REPLY_DURING, EDITED, BOB_SAYS] {
                assert!(
                    seen.contains(&during.to_owned()),
                    "{hv:?}: bob {path}: {during:?} missing: {seen:?}"
                );
            }
            if hv == Hv::WorldReadable {
                // Readable by anyone; paging back without a token starts at the departure (as
                // Synapse does), paging forward reaches the end.
                if path.contains("dir=f") {
                    assert!(seen.contains(&AFTER_MSG.to_owned()), "{hv:?}: bob {path}: {seen:?}");
                }
            } else {
                sc.assert_nothing_after(&format!("bob's {path}"), &page);
            }
            if matches!(hv, Hv::Joined | Hv::Invited) {
                let earlier: Vec<&String> =
                    seen.iter().filter(|b| BEFORE.contains(&b.as_str()) || *b == INVITED_MSG).collect();
                assert!(earlier.is_empty(), "{hv:?}: bob {path} shows what preceded his invite: {earlier:?}");
            }
        }
        for id in &sc.after {
            let (status, body) = sc.get(&sc.bob, &sc.event_path(id)).await;
            let expected = if hv == Hv::WorldReadable { 200 } else { 404 };
            assert_eq!(status, expected, "{hv:?}: bob's /event of {id}, sent after he left: {body}");
        }
        assert_eq!(sc.get(&sc.bob, &sc.event_path(&sc.bob_says)).await.0, 200, "{hv:?}");
        if matches!(hv, Hv::Joined | Hv::Invited) {
            let (status, body) = sc.get(&sc.bob, &sc.event_path(&sc.before[0])).await;
            assert_eq!(status, 404, "{hv:?}: bob's /event of a message before his invite: {body}");
        }

        // Dave, who joined late and stayed: from his join (`joined`) or invite (`invited`).
        let page = sc.get_ok(&sc.dave, &sc.path("/messages?dir=b&limit=100")).await;
        let seen = bodies(&page["chunk"]);
        for body in after_bodies.iter().chain([&ROOT, &BOB_SAYS]) {
            assert!(seen.contains(&body.to_string()), "{hv:?}: dave misses {body:?}: {seen:?}");
        }
        let shows_before = hv.shows_earlier_history();
        for body in BEFORE {
            assert_eq!(seen.contains(&body.to_owned()), shows_before, "{hv:?}: dave and {body:?}: {seen:?}");
        }
        let shows_invited = hv != Hv::Joined;
        assert_eq!(seen.contains(&INVITED_MSG.to_owned()), shows_invited, "{hv:?}: dave: {seen:?}");
        let forward = sc.get_ok(&sc.dave, &sc.path("/messages?dir=f&limit=100")).await;
        let mut forward_seen = bodies(&forward["chunk"]);
        forward_seen.reverse();
        assert_eq!(forward_seen, seen, "{hv:?}: dave pages the same events both ways");
        let (status, body) = sc.get(&sc.dave, &sc.event_path(&sc.before[0])).await;
        assert_eq!(status, if shows_before { 200 } else { 404 }, "{hv:?}: dave /event before invite: {body}");
        let (status, body) = sc.get(&sc.dave, &sc.event_path(&sc.invited_msg)).await;
        assert_eq!(
            status,
            if shows_invited { 200 } else { 404 },
            "{hv:?}: dave /event while invited: {body}"
        );

        // Carol, who only rejected an invite: nobody's messages (she may page, as a departed user).
        let (status, page) = sc.get(&sc.carol, &sc.path("/messages?dir=b&limit=100")).await;
        if hv == Hv::WorldReadable {
            // Paged back from her departure, like any departed user.
            assert_eq!(status, 200, "{page}");
            assert!(bodies(&page["chunk"]).contains(&BOB_SAYS.to_owned()), "{page}");
        } else {
            assert!(status == 200 || status == 403, "{hv:?}: carol /messages: {status} {page}");
            assert_eq!(bodies(&page["chunk"]), Vec::<String>::new(), "{hv:?}: carol /messages: {page}");
            let (status, body) = sc.get(&sc.carol, &sc.event_path(&sc.root)).await;
            assert_eq!(status, 404, "{hv:?}: carol /event: {body}");
        }

        // Eve, a stranger: nothing unless the room is world readable.
        let (status, page) = sc.get(&sc.eve, &sc.path("/messages?dir=b&limit=100")).await;
        let (event_status, event) = sc.get(&sc.eve, &sc.event_path(&sc.root)).await;
        if hv == Hv::WorldReadable {
            assert_eq!(status, 200, "{page}");
            assert!(bodies(&page["chunk"]).contains(&AFTER_MSG.to_owned()), "{page}");
            assert_eq!(event_status, 200, "{event}");
        } else {
            assert_eq!((status, page["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{hv:?}: eve: {page}");
            assert_eq!(event_status, 404, "{hv:?}: eve /event: {event}");
        }
    }
}

#[tokio::test]
async fn context_stays_within_what_the_user_may_see() {
    for hv in Hv::ALL {
        let sc = Scenario::build(hv).await;
        // Bob: around his last message, nothing from after he left; after events are not his.
        let around = sc.get_ok(&sc.bob, &sc.path(&format!("/context/{}?limit=40", enc(&sc.bob_says)))).await;
        if hv == Hv::WorldReadable {
            assert!(bodies(&around["events_after"]).contains(&AFTER_MSG.to_owned()), "{around}");
        } else {
            sc.assert_nothing_after("bob's /context", &around);
            let (status, body) = sc.get(&sc.bob, &sc.path(&format!("/context/{}", enc(&sc.after_msg)))).await;
            assert!(
                status == 403 || status == 404,
                "{hv:?}: bob /context on an after event: {status} {body}"
            );
        }

        // Dave, around his join: nothing before it unless the setting shares it.
        let around =
            sc.get_ok(&sc.dave, &sc.path(&format!("/context/{}?limit=40", enc(&sc.dave_join)))).await;
        let before = bodies(&around["events_before"]);
        assert_eq!(before.contains(&BEFORE[0].to_owned()), hv.shows_earlier_history(), "{hv:?}: {before:?}");
        assert_eq!(before.contains(&INVITED_MSG.to_owned()), hv != Hv::Joined, "{hv:?}: {before:?}");
        if !hv.shows_earlier_history() {
            let (status, body) =
                sc.get(&sc.dave, &sc.path(&format!("/context/{}", enc(&sc.before[0])))).await;
            assert!(
                status == 403 || status == 404,
                "{hv:?}: dave /context before his invite: {status} {body}"
            );
        }

        // Eve: no context at all unless the room is world readable.
        let (status, body) = sc.get(&sc.eve, &sc.path(&format!("/context/{}", enc(&sc.root)))).await;
        if hv == Hv::WorldReadable {
            assert_eq!(status, 200, "{body}");
        } else {
            assert!(status == 403 || status == 404, "{hv:?}: eve /context: {status} {body}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bundled aggregations, one test per path: the thread summary, the latest edit and the
// references of events Bob may see must not show what came after he left.

#[tokio::test]
async fn bundles_in_messages_show_nothing_after_leaving() {
    for hv in Hv::HIDING {
        let sc = Scenario::build(hv).await;
        let fresh = sync_token(&sc.server, &sc.bob).await;
        for path in [
            format!("/messages?dir=b&limit=100&from={}", enc(&fresh)),
            "/messages?dir=b&limit=100".to_owned(),
            "/messages?dir=f&limit=100".to_owned(),
        ] {
            let page = sc.get_ok(&sc.bob, &sc.path(&path)).await;
            sc.assert_bundles_in(&path, &page["chunk"]);
            sc.assert_nothing_after(&path, &page);
        }
    }
}

#[tokio::test]
async fn bundles_in_event_show_nothing_after_leaving() {
    for hv in Hv::HIDING {
        let sc = Scenario::build(hv).await;
        let root = sc.get_ok(&sc.bob, &sc.event_path(&sc.root)).await;
        sc.assert_root_bundle("/event of the root", &root);
        sc.assert_nothing_after("/event of the root", &root);
        let edited = sc.get_ok(&sc.bob, &sc.event_path(&sc.edited)).await;
        sc.assert_edited_bundle("/event of the edited message", &edited);
        sc.assert_nothing_after("/event of the edited message", &edited);
    }
}

#[tokio::test]
async fn bundles_in_context_show_nothing_after_leaving() {
    for hv in Hv::HIDING {
        let sc = Scenario::build(hv).await;
        let around_root = sc.get_ok(&sc.bob, &sc.path(&format!("/context/{}?limit=40", enc(&sc.root)))).await;
        sc.assert_root_bundle("/context of the root: event", &around_root["event"]);
        let edited = find(&around_root["events_after"], &sc.edited).expect("edited message after the root");
        sc.assert_edited_bundle("/context of the root: events_after", edited);
        sc.assert_nothing_after("/context of the root", &around_root);

        let around_edited =
            sc.get_ok(&sc.bob, &sc.path(&format!("/context/{}?limit=40", enc(&sc.edited)))).await;
        sc.assert_edited_bundle("/context of the edited message: event", &around_edited["event"]);
        let root = find(&around_edited["events_before"], &sc.root).expect("root before the edited message");
        sc.assert_root_bundle("/context of the edited message: events_before", root);
        sc.assert_nothing_after("/context of the edited message", &around_edited);
    }
}

#[tokio::test]
async fn bundles_in_sync_show_nothing_after_leaving() {
    for hv in Hv::HIDING {
        let sc = Scenario::build(hv).await;
        // Initial sync with left rooms.
        let initial = sc.sync_with(&sc.bob, None, &leave_filter()).await;
        let left = &initial["rooms"]["leave"][&sc.room];
        sc.assert_bundles_in("initial /sync leave timeline", &left["timeline"]["events"]);
        sc.assert_nothing_after("initial /sync", &initial);

        // Incremental sync from before the thread began, across the departure.
        let incremental = sc.sync_with(&sc.bob, Some(&sc.bob_since), &leave_filter()).await;
        let left = &incremental["rooms"]["leave"][&sc.room];
        sc.assert_bundles_in("incremental /sync leave timeline", &left["timeline"]["events"]);
        sc.assert_nothing_after("incremental /sync", &incremental);

        // And once the departure is synced, nothing more of the room.
        let next = incremental["next_batch"].as_str().unwrap().to_owned();
        let later = sc.sync_with(&sc.bob, Some(&next), &leave_filter()).await;
        sc.assert_nothing_after("/sync after the departure", &later);
    }
}

#[tokio::test]
async fn bundles_in_relations_show_nothing_after_leaving() {
    for hv in Hv::HIDING {
        let sc = Scenario::build(hv).await;
        let root = enc(&sc.root);
        let mut all = sc.get_ok(&sc.bob, &sc.v1(&format!("/relations/{root}?limit=50"))).await;
        let mut got = ids(&all["chunk"]);
        got.sort();
        let mut expected = vec![sc.reply_during.clone(), sc.edited.clone()];
        expected.sort();
        assert_eq!(got, expected, "{hv:?}: bob's /relations of the root: {all}");
        let edited = find(&all["chunk"], &sc.edited).expect("the referencing message");
        sc.assert_edited_bundle("/relations of the root", edited);
        sc.assert_nothing_after("/relations of the root", &all);

        for (rest, want) in [
            (format!("/relations/{root}/m.thread?limit=50"), vec![sc.reply_during.clone()]),
            (format!("/relations/{root}/m.reference?limit=50"), vec![sc.edited.clone()]),
            (format!("/relations/{}/m.replace?limit=50", enc(&sc.edited)), vec![sc.edit_during.clone()]),
            (
                format!("/relations/{root}/m.thread/m.room.message?dir=f&limit=50"),
                vec![sc.reply_during.clone()],
            ),
        ] {
            let page = sc.get_ok(&sc.bob, &sc.v1(&rest)).await;
            assert_eq!(ids(&page["chunk"]), want, "{hv:?}: bob's {rest}: {page}");
            sc.assert_nothing_after(&rest, &page);
        }

        all = sc.get_ok(&sc.bob, &sc.v1(&format!("/relations/{root}?limit=50&recurse=true"))).await;
        let deep = ids(&all["chunk"]);
        assert!(deep.contains(&sc.edit_during), "{hv:?}: recursive /relations reaches the edit: {all}");
        sc.assert_nothing_after("recursive /relations of the root", &all);

        // Relations of an event sent after Bob left are not his to list.
        let (status, body) = sc.get(&sc.bob, &sc.v1(&format!("/relations/{}", enc(&sc.after_root)))).await;
        assert_eq!(status, 404, "{hv:?}: {body}");
    }
}

#[tokio::test]
async fn bundles_in_threads_show_nothing_after_leaving() {
    for hv in Hv::HIDING {
        let sc = Scenario::build(hv).await;
        let list = sc.get_ok(&sc.bob, &sc.v1("/threads?limit=50")).await;
        let root = find(&list["chunk"], &sc.root)
            .unwrap_or_else(|| panic!("{hv:?}: bob's /threads lists the thread he saw: {list}"));
        sc.assert_root_bundle("/threads", root);
        sc.assert_nothing_after("/threads", &list);
    }
}

#[tokio::test]
async fn bundles_in_search_show_nothing_from_a_gap_in_membership() {
    // A departed member's rooms are out of their search; back in the room under `joined` or
    // `invited`, what was sent while they were away stays hidden.
    for hv in [Hv::Joined, Hv::Invited] {
        let sc = Scenario::build(hv).await;
        sc.bob_rejoins().await;
        let found = sc.search(&sc.bob, json!({ "search_term": "rootword" })).await;
        let events: Vec<Value> =
            found["results"].as_array().unwrap().iter().map(|r| r["result"].clone()).collect();
        let root = find(&Value::Array(events), &sc.root)
            .unwrap_or_else(|| panic!("{hv:?}: the root is a search result: {found}"))
            .clone();
        sc.assert_root_bundle("/search result", &root);
        sc.assert_nothing_after("/search for the root", &found);

        let found = sc
            .search(
                &sc.bob,
                json!({ "search_term": "editword", "event_context": { "before_limit": 5, "after_limit": 30 } }),
            )
            .await;
        assert_eq!(found["results"][0]["result"]["event_id"], sc.edited.as_str(), "{hv:?}: {found}");
        sc.assert_edited_bundle("/search result", &found["results"][0]["result"]);
        let context = &found["results"][0]["context"];
        let root = find(&context["events_before"], &sc.root).expect("the root in the result's context");
        sc.assert_root_bundle("/search result context", root);
        sc.assert_nothing_after("/search for the edited message, with context", &found);
    }
}

#[tokio::test]
async fn bundles_in_notifications_show_nothing_after_leaving() {
    for hv in Hv::HIDING {
        let sc = Scenario::build(hv).await;
        // Bob was mentioned in the root and in the edited message before he left.
        let list = sc.get_ok(&sc.bob, "/_matrix/client/v3/notifications").await;
        let events: Vec<Value> =
            list["notifications"].as_array().unwrap().iter().map(|n| n["event"].clone()).collect();
        sc.assert_bundles_in("/notifications", &Value::Array(events));
        sc.assert_nothing_after("/notifications", &list);
    }
}

#[tokio::test]
async fn bundles_in_legacy_reads_show_nothing_after_leaving() {
    for hv in Hv::HIDING {
        let sc = Scenario::build(hv).await;
        let init = sc.get_ok(&sc.bob, "/_matrix/client/v3/initialSync?archived=true&limit=100").await;
        let entry = init["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["room_id"] == sc.room.as_str())
            .unwrap_or_else(|| panic!("{hv:?}: the left room in archived initialSync: {init}"));
        sc.assert_bundles_in("/initialSync", &entry["messages"]["chunk"]);
        sc.assert_nothing_after("/initialSync", &init);

        let room_init = sc.get_ok(&sc.bob, &sc.path("/initialSync?limit=100")).await;
        sc.assert_bundles_in("room /initialSync", &room_init["messages"]["chunk"]);
        sc.assert_nothing_after("room /initialSync", &room_init);

        let stream = sc
            .get_ok(&sc.bob, &format!("/_matrix/client/v3/events?from={}&timeout=0", enc(&sc.bob_since)))
            .await;
        sc.assert_bundles_in("/events", &stream["chunk"]);
        sc.assert_nothing_after("/events", &stream);
    }
}

// ---------------------------------------------------------------------------------------------
// State and members: only where the user could see the room.

#[tokio::test]
async fn members_at_a_token_before_the_user_could_see_the_room_are_forbidden() {
    for hv in Hv::ALL {
        let sc = Scenario::build(hv).await;
        let at = |token: &str| sc.path(&format!("/members?at={}", enc(token)));
        let has_member = |chunk: &Value, user: &User| -> Option<String> {
            chunk
                .as_array()?
                .iter()
                .find(|e| e["state_key"] == user.user_id.as_str())
                .and_then(|e| e["content"]["membership"].as_str().map(str::to_owned))
        };

        // Before Dave was invited: `joined` and `invited` hide that point from him (as Synapse,
        // 403); `shared` and `world_readable` show the members of then, without him.
        let (status, body) = sc.get(&sc.dave, &at(&sc.before_dave)).await;
        if hv.shows_earlier_history() {
            assert_eq!(status, 200, "{hv:?}: dave /members?at before his invite: {body}");
            assert_eq!(has_member(&body["chunk"], &sc.dave), None, "{hv:?}: {body}");
            assert_eq!(has_member(&body["chunk"], &sc.alice).as_deref(), Some("join"), "{hv:?}: {body}");
        } else {
            assert_eq!(
                (status, body["errcode"].as_str()),
                (403, Some("M_FORBIDDEN")),
                "{hv:?}: dave /members?at a token before he could see the room: {body}"
            );
        }
        // While he was invited: only `joined` hides it.
        let (status, body) = sc.get(&sc.dave, &at(&sc.dave_invited)).await;
        if hv == Hv::Joined {
            assert_eq!(status, 403, "{hv:?}: dave /members?at while invited: {body}");
        } else {
            assert_eq!(status, 200, "{hv:?}: dave /members?at while invited: {body}");
            assert_eq!(has_member(&body["chunk"], &sc.dave).as_deref(), Some("invite"), "{hv:?}: {body}");
        }
        // Now: everyone, Frank included.
        let now = sc.get_ok(&sc.dave, &sc.path("/members")).await;
        assert_eq!(has_member(&now["chunk"], &sc.frank).as_deref(), Some("join"), "{hv:?}: {now}");

        // Bob, who left: the members as of his departure, never Frank.
        let (status, body) = sc.get(&sc.bob, &sc.path("/members")).await;
        assert_eq!(status, 200, "{hv:?}: bob /members: {body}");
        if hv == Hv::WorldReadable {
            assert_eq!(has_member(&body["chunk"], &sc.frank).as_deref(), Some("join"), "{body}");
        } else {
            assert_eq!(has_member(&body["chunk"], &sc.bob).as_deref(), Some("leave"), "{hv:?}: {body}");
            sc.assert_nothing_after("bob's /members", &body);
            // A token from after he left does not reach past his departure.
            let now = sync_token(&sc.server, &sc.alice).await;
            let (status, body) = sc.get(&sc.bob, &at(&now)).await;
            assert_eq!(status, 200, "{hv:?}: bob /members?at now: {body}");
            assert_eq!(has_member(&body["chunk"], &sc.bob).as_deref(), Some("leave"), "{hv:?}: {body}");
            sc.assert_nothing_after("bob's /members?at=now", &body);
        }
        if matches!(hv, Hv::Joined | Hv::Invited) {
            let (status, body) = sc.get(&sc.bob, &at(&sc.before_dave)).await;
            assert_eq!(status, 403, "{hv:?}: bob /members?at before his invite: {body}");
        }

        // Eve: never, at any point, unless the room is world readable.
        for path in [sc.path("/members"), at(&sc.before_dave), at(&sc.dave_invited)] {
            let (status, body) = sc.get(&sc.eve, &path).await;
            let expected = if hv == Hv::WorldReadable { 200 } else { 403 };
            assert_eq!(status, expected, "{hv:?}: eve {path}: {body}");
        }
    }
}

#[tokio::test]
async fn state_is_not_shown_to_those_who_never_saw_the_room() {
    for hv in Hv::ALL {
        let sc = Scenario::build(hv).await;
        let alice_member = sc.path(&format!("/state/m.room.member/{}", enc(&sc.alice.user_id)));
        let state_paths =
            [sc.path("/state"), sc.path("/members"), alice_member.clone(), sc.path("/initialSync")];

        // Eve, a stranger.
        for path in state_paths.iter().chain([&sc.path("/joined_members")]) {
            let (status, body) = sc.get(&sc.eve, path).await;
            let expected = if hv == Hv::WorldReadable { 200 } else { 403 };
            assert_eq!(status, expected, "{hv:?}: eve {path}: {body}");
        }

        // Carol rejected her invite: under `shared` and `joined` she never could see the room,
        // so no state and no member list (Synapse shows the state at the rejection; the issue
        // asks for 403).
        if matches!(hv, Hv::Shared | Hv::Joined) {
            for path in &state_paths {
                let (status, body) = sc.get(&sc.carol, path).await;
                assert_eq!(status, 403, "{hv:?}: carol (rejected invite) {path}: {body}");
            }
        }
        if hv != Hv::WorldReadable {
            let (status, body) = sc.get(&sc.carol, &sc.path("/joined_members")).await;
            assert_eq!(status, 403, "{hv:?}: carol /joined_members: {body}");
        }

        // Bob, who left: the state as of his departure.
        let state = sc.get_ok(&sc.bob, &sc.path("/state")).await;
        if hv == Hv::WorldReadable {
            assert!(state.to_string().contains(TOPIC_AFTER), "{state}");
        } else {
            sc.assert_nothing_after("bob's /state", &state);
            let (status, body) = sc.get(&sc.bob, &sc.path("/state/m.room.topic/")).await;
            assert_eq!(status, 404, "{hv:?}: bob's topic, set after he left: {body}");
            let (status, body) = sc.get(&sc.bob, &sc.path("/joined_members")).await;
            assert_eq!(status, 403, "{hv:?}: bob /joined_members after leaving: {body}");
        }
    }
}

#[tokio::test]
async fn a_rejected_invitee_sees_only_her_own_membership() {
    for hv in [Hv::Shared, Hv::Joined] {
        let sc = Scenario::build(hv).await;
        // /context on her own invite and rejection: the events are hers, the room's state and
        // messages are not.
        for id in [&sc.carol_invite, &sc.carol_reject] {
            let (status, body) = sc.get(&sc.carol, &sc.path(&format!("/context/{}?limit=40", enc(id)))).await;
            if status == 200 {
                assert_eq!(body["state"], json!([]), "{hv:?}: carol /context {id}: the room's state: {body}");
                let messages: Vec<String> =
                    bodies(&body["events_before"]).into_iter().chain(bodies(&body["events_after"])).collect();
                assert!(messages.is_empty(), "{hv:?}: carol /context {id}: {messages:?}");
            } else {
                assert!(status == 403 || status == 404, "{hv:?}: carol /context {id}: {status} {body}");
            }
        }

        // The left room in her sync: her own events only, no member list.
        let sync = sc.sync_with(&sc.carol, None, &leave_filter()).await;
        let left = &sync["rooms"]["leave"][&sc.room];
        assert!(left.is_object(), "{hv:?}: carol's rejected invite is in the leave section: {sync}");
        let others: Vec<&Value> = left["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.member" && e["state_key"] != sc.carol.user_id.as_str())
            .collect();
        assert!(others.is_empty(), "{hv:?}: carol's sync shows the room's members: {others:?}");
        assert_eq!(bodies(&left["timeline"]["events"]), Vec::<String>::new(), "{hv:?}: {left}");
        let foreign: Vec<&Value> = left["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["state_key"] != sc.carol.user_id.as_str())
            .collect();
        assert!(foreign.is_empty(), "{hv:?}: carol's sync timeline: {foreign:?}");

        // Jump to date lands on her own events only.
        let (status, body) = sc.get(&sc.carol, &sc.v1("/timestamp_to_event?ts=0&dir=f")).await;
        assert_eq!(
            (status, body["event_id"].as_str()),
            (200, Some(sc.carol_invite.as_str())),
            "{hv:?}: {body}"
        );
        let now = homeserver_core::time::now_millis();
        let (status, body) = sc.get(&sc.carol, &sc.v1(&format!("/timestamp_to_event?ts={now}&dir=b"))).await;
        assert_eq!(
            (status, body["event_id"].as_str()),
            (200, Some(sc.carol_reject.as_str())),
            "{hv:?}: {body}"
        );

        // The legacy archived initialSync answers, without the room's members.
        let (status, init) = sc.get(&sc.carol, "/_matrix/client/v3/initialSync?archived=true").await;
        assert_eq!(status, 200, "{hv:?}: carol's archived initialSync: {init}");
        if let Some(entry) =
            init["rooms"].as_array().unwrap().iter().find(|e| e["room_id"] == sc.room.as_str())
        {
            let others: Vec<&Value> = entry["state"]
                .as_array()
                .map(|s| s.iter().filter(|e| e["state_key"] == sc.alice.user_id.as_str()).collect())
                .unwrap_or_default();
            assert!(others.is_empty(), "{hv:?}: carol's initialSync shows the members: {entry}");
            assert_eq!(bodies(&entry["messages"]["chunk"]), Vec::<String>::new(), "{hv:?}: {entry}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sync, search and jump to date.

#[tokio::test]
async fn sync_timelines_follow_each_history_visibility() {
    for hv in Hv::ALL {
        let sc = Scenario::build(hv).await;
        let sync = sc.sync_with(&sc.bob, None, &leave_filter()).await;
        let left = &sync["rooms"]["leave"][&sc.room];
        let seen = bodies(&left["timeline"]["events"]);
        assert!(seen.contains(&BOB_SAYS.to_owned()), "{hv:?}: bob's left room timeline: {seen:?}");
        assert!(
            !seen.contains(&AFTER_MSG.to_owned()),
            "{hv:?}: the timeline ends at the departure: {seen:?}"
        );
        if hv != Hv::WorldReadable {
            sc.assert_nothing_after("bob's initial /sync", &sync);
        }

        let filter = json!({ "room": { "timeline": { "limit": 100 } } });
        let sync = sc.sync_with(&sc.dave, None, &filter).await;
        let seen = bodies(&sync["rooms"]["join"][&sc.room]["timeline"]["events"]);
        assert!(seen.contains(&AFTER_MSG.to_owned()), "{hv:?}: dave's timeline: {seen:?}");
        assert_eq!(
            seen.contains(&BEFORE[0].to_owned()),
            hv.shows_earlier_history(),
            "{hv:?}: dave: {seen:?}"
        );
        assert_eq!(seen.contains(&INVITED_MSG.to_owned()), hv != Hv::Joined, "{hv:?}: dave: {seen:?}");
    }
}

#[tokio::test]
async fn search_counts_only_what_the_searcher_may_see() {
    for hv in Hv::ALL {
        let sc = Scenario::build(hv).await;
        let earlier = hv.shows_earlier_history();
        // (word, hits Dave may see): pineapple only before his invite, papaya while he was
        // invited, mango before, during and after, avocado only after Bob left.
        let dave_expects = [
            ("pineapple", usize::from(earlier)),
            ("papaya", usize::from(hv != Hv::Joined)),
            ("mango", 2 + usize::from(earlier)),
            ("avocado", 2),
        ];
        for (word, expected) in dave_expects {
            for order in ["rank", "recent"] {
                let found = sc.search(&sc.dave, json!({ "search_term": word, "order_by": order })).await;
                let got = search_bodies(&found);
                assert_eq!(
                    (found["count"].as_u64(), got.len()),
                    (Some(expected as u64), expected),
                    "{hv:?}: dave searches {word:?} ({order}): {found}"
                );
                if !earlier {
                    assert!(!got.iter().any(|b| b.starts_with("before")), "{hv:?}: {got:?}");
                }
            }
        }
        // Alice sees every hit.
        let found = sc.search(&sc.alice, json!({ "search_term": "mango" })).await;
        assert_eq!(found["count"], 3, "{found}");

        // Bob left: the room is out of his search; Carol and Eve were never in it.
        for (who, user) in [("bob", &sc.bob), ("carol", &sc.carol), ("eve", &sc.eve)] {
            for word in ["avocado", "mango", "rootword"] {
                let found = sc.search(user, json!({ "search_term": word })).await;
                assert_eq!(
                    (found["count"].as_u64(), search_bodies(&found)),
                    (Some(0), Vec::new()),
                    "{hv:?}: {who} searches {word:?}: {found}"
                );
            }
        }

        // Bob comes back: under `joined` and `invited`, what was sent while he was away is
        // neither found nor counted; `shared` and `world_readable` show it all to a member.
        sc.bob_rejoins().await;
        let gap_visible = hv.shows_earlier_history();
        let found = sc.search(&sc.bob, json!({ "search_term": "avocado" })).await;
        let expected = if gap_visible { 2 } else { 0 };
        assert_eq!(
            (found["count"].as_u64(), search_bodies(&found).len()),
            (Some(expected), expected as usize),
            "{hv:?}: back in the room, bob searches a word only sent while he was away: {found}"
        );
        let found = sc.search(&sc.bob, json!({ "search_term": "mango", "order_by": "recent" })).await;
        let expected: Vec<&str> =
            if gap_visible { vec![AFTER_MSG, BOB_SAYS, BEFORE[0]] } else { vec![BOB_SAYS] };
        assert_eq!(search_bodies(&found), expected, "{hv:?}: bob searches mango after rejoining: {found}");
        assert_eq!(found["count"].as_u64(), Some(expected.len() as u64), "{hv:?}: {found}");
    }
}

#[tokio::test]
async fn jump_to_date_stays_within_what_the_user_may_see() {
    for hv in Hv::ALL {
        let sc = Scenario::build(hv).await;
        let now = homeserver_core::time::now_millis();
        let (status, body) = sc.get(&sc.bob, &sc.v1(&format!("/timestamp_to_event?ts={now}&dir=b"))).await;
        assert_eq!(status, 200, "{hv:?}: {body}");
        let landed = body["event_id"].as_str().unwrap();
        if hv == Hv::WorldReadable {
            assert_eq!(landed, sc.after.last().unwrap().as_str(), "{hv:?}: the newest event: {body}");
        } else {
            assert_eq!(
                landed,
                sc.bob_leave.as_str(),
                "{hv:?}: bob jumping back from now lands on his departure, not after it: {body}"
            );
            // Forward from the first event after he left: nothing (or his departure, same ms).
            let after = sc.get_ok(&sc.alice, &sc.event_path(&sc.after_msg)).await;
            let ts = after["origin_server_ts"].as_u64().unwrap();
            let (status, body) = sc.get(&sc.bob, &sc.v1(&format!("/timestamp_to_event?ts={ts}&dir=f"))).await;
            let landed = body["event_id"].as_str();
            assert!(
                status == 404 || (status == 200 && landed == Some(sc.bob_leave.as_str())),
                "{hv:?}: bob jumping forward past his departure: {status} {body}"
            );
        }

        // Dave jumping forward from the first message: not onto history hidden from him.
        let first = sc.get_ok(&sc.alice, &sc.event_path(&sc.before[0])).await;
        let ts = first["origin_server_ts"].as_u64().unwrap();
        let (status, body) = sc.get(&sc.dave, &sc.v1(&format!("/timestamp_to_event?ts={ts}&dir=f"))).await;
        assert_eq!(status, 200, "{hv:?}: {body}");
        let landed = body["event_id"].as_str().unwrap().to_owned();
        if hv.shows_earlier_history() {
            assert_eq!(landed, sc.before[0], "{hv:?}: {body}");
        } else {
            // His invite is the first event he may see after that point (his own membership).
            let (_, event) = sc.get(&sc.alice, &sc.event_path(&landed)).await;
            assert_eq!(landed, sc.dave_invite, "{hv:?}: dave jumping forward lands on {event}");
        }

        let (status, body) = sc.get(&sc.eve, &sc.v1(&format!("/timestamp_to_event?ts={now}&dir=b"))).await;
        let expected = if hv == Hv::WorldReadable { 200 } else { 403 };
        assert_eq!(status, expected, "{hv:?}: eve: {body}");
    }
}

#[tokio::test]
async fn a_returning_member_does_not_see_the_gap() {
    for hv in [Hv::Shared, Hv::Joined, Hv::Invited] {
        let sc = Scenario::build(hv).await;
        sc.bob_rejoins().await;
        let gap_visible = hv == Hv::Shared;

        let page = sc.get_ok(&sc.bob, &sc.path("/messages?dir=b&limit=100")).await;
        let seen = bodies(&page["chunk"]);
        assert!(seen.contains(&BOB_SAYS.to_owned()), "{hv:?}: {seen:?}");
        assert_eq!(seen.contains(&AFTER_MSG.to_owned()), gap_visible, "{hv:?}: bob back: {seen:?}");
        let (status, body) = sc.get(&sc.bob, &sc.event_path(&sc.reply_after)).await;
        assert_eq!(status, if gap_visible { 200 } else { 404 }, "{hv:?}: {body}");
        if gap_visible {
            continue;
        }
        sc.assert_nothing_after("/messages after rejoining", &page["chunk"]);
        sc.assert_bundles_in("/messages after rejoining", &page["chunk"]);

        let filter = json!({ "room": { "timeline": { "limit": 100 } } });
        let sync = sc.sync_with(&sc.bob, None, &filter).await;
        let timeline = &sync["rooms"]["join"][&sc.room]["timeline"]["events"];
        sc.assert_bundles_in("/sync after rejoining", timeline);
        // The room's current state shows in a member's timeline even from the gap (Frank's join,
        // the topic: readable through /state anyway, and how clients learn of them, as with
        // Synapse); nothing else from the gap does, not even superseded state (Frank's invite): each state
        // event shown from the gap is the current one for its key.
        let (state, others): (Vec<Value>, Vec<Value>) =
            timeline.as_array().unwrap().iter().cloned().partition(|e| e.get("state_key").is_some());
        sc.assert_nothing_after("/sync timeline after rejoining", &Value::Array(others));
        let from_gap = |e: &&Value| e["event_id"].as_str().is_some_and(|id| sc.after.iter().any(|a| a == id));
        for event in state.iter().filter(from_gap) {
            let key = format!(
                "/state/{}/{}",
                enc(event["type"].as_str().unwrap()),
                enc(event["state_key"].as_str().unwrap())
            );
            let (status, current) = sc.get(&sc.bob, &sc.path(&format!("{key}?format=event"))).await;
            assert_eq!(
                (status, current["event_id"].as_str()),
                (200, event["event_id"].as_str()),
                "{hv:?}: {event}"
            );
        }

        let root = sc.get_ok(&sc.bob, &sc.event_path(&sc.root)).await;
        sc.assert_root_bundle("/event after rejoining", &root);
        let list = sc.get_ok(&sc.bob, &sc.v1("/threads?limit=50")).await;
        let listed = find(&list["chunk"], &sc.root)
            .unwrap_or_else(|| panic!("{hv:?}: /threads after rejoining: {list}"));
        sc.assert_root_bundle("/threads after rejoining", listed);
        sc.assert_nothing_after("/threads after rejoining", &list);
        let related = sc.get_ok(&sc.bob, &sc.v1(&format!("/relations/{}?limit=50", enc(&sc.root)))).await;
        sc.assert_nothing_after("/relations after rejoining", &related);
    }
}

#[tokio::test]
async fn threads_lists_only_threads_the_user_saw_replies_in() {
    for hv in Hv::HIDING {
        let sc = Scenario::build(hv).await;
        // Bob saw the quiet message, but its first thread reply came after he left: to him it is
        // no thread (no summary), so listing it would tell him a reply exists. The thread begun
        // after he left is not listed either.
        let quiet = sc.get_ok(&sc.bob, &sc.event_path(&sc.quiet_root)).await;
        assert!(quiet["unsigned"].get("m.relations").is_none(), "{hv:?}: bob's quiet message: {quiet}");
        let list = sc.get_ok(&sc.bob, &sc.v1("/threads?limit=50")).await;
        let mut listed = ids(&list["chunk"]);
        listed.sort();
        let mut expected = vec![sc.root.clone(), sc.side_root.clone()];
        expected.sort();
        assert_eq!(
            listed, expected,
            "{hv:?}: bob's /threads should list only the threads he saw a reply in ({}, {}); {} got its \
             first reply after he left, {} began after he left: {list}",
            sc.root, sc.side_root, sc.quiet_root, sc.after_root
        );
    }
}

#[tokio::test]
async fn threads_are_ordered_by_the_latest_reply_the_user_may_see() {
    for hv in Hv::HIDING {
        let sc = Scenario::build(hv).await;
        // `/threads` is ordered by each root's bundled `latest_event`. For Bob the side thread's
        // reply is newer than the root's last reply he saw; the root's reply after he left must
        // not move it ahead.
        let list = sc.get_ok(&sc.bob, &sc.v1("/threads?limit=50")).await;
        let order: Vec<String> =
            ids(&list["chunk"]).into_iter().filter(|id| *id == sc.root || *id == sc.side_root).collect();
        assert_eq!(
            order,
            vec![sc.side_root.clone(), sc.root.clone()],
            "{hv:?}: bob's /threads order (side thread {}, root {}) follows a reply sent after he left: {list}",
            sc.side_root,
            sc.root
        );
    }
}
