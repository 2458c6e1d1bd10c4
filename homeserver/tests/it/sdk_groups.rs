//! Group and moderation features through an unmodified Matrix client library (matrix-sdk), the
//! way an Element-style client uses them: muting a room with the notification settings (its
//! badge stays at zero while another room counts), server-side search in Chinese (and nothing
//! found after leaving), presence through sync, knocking and letting the knocker in, reporting
//! a message, and upgrading a room (tombstone and predecessor).

use std::time::Duration;

use futures::StreamExt;
use matrix_sdk::{
    Client, Room, RoomMemberships, RoomState,
    config::SyncSettings,
    notification_settings::RoomNotificationMode,
    room::MessagesOptions,
    ruma::{
        EventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
        api::client::{
            presence::{get_presence, set_presence},
            room::{
                create_room::v3::{Request as CreateRoomRequest, RoomPreset},
                upgrade_room,
            },
            search::search_events::v3::{Categories, Criteria, Request as SearchRequest},
        },
        events::{
            InitialStateEvent,
            room::{
                join_rules::{JoinRule, RoomJoinRulesEventContent},
                member::MembershipState,
                message::RoomMessageEventContent,
            },
        },
        presence::PresenceState,
    },
    sync::SyncResponse,
};
use serde_json::Value;

use crate::{harness::TestServer, sdk::register};

async fn sync(client: &Client) -> SyncResponse {
    client.sync_once(SyncSettings::new().timeout(Duration::from_millis(200))).await.expect("sync")
}

/// Syncs until `check` holds (a few seconds at most).
async fn sync_until(client: &Client, what: &str, mut check: impl FnMut(&SyncResponse) -> bool) {
    for _ in 0..25 {
        if check(&sync(client).await) {
            return;
        }
    }
    panic!("never saw: {what}");
}

/// The message bodies in `room`'s timeline of one sync response.
fn bodies(response: &SyncResponse, room: &RoomId) -> Vec<String> {
    let Some(update) = response.rooms.joined.get(room) else { return Vec::new() };
    update
        .timeline
        .events
        .iter()
        .filter_map(|ev| {
            let json: Value = serde_json::from_str(ev.raw().json().get()).ok()?;
            (json["type"] == "m.room.message").then(|| json["content"]["body"].as_str().map(str::to_owned))?
        })
        .collect()
}

/// Whether `room`'s timeline in one sync response sets `user`'s membership to `membership`.
fn has_membership(response: &SyncResponse, room: &RoomId, user: &UserId, membership: &str) -> bool {
    response.rooms.joined.get(room).is_some_and(|update| {
        update.timeline.events.iter().any(|ev| {
            let json: Value = serde_json::from_str(ev.raw().json().get()).unwrap();
            json["type"] == "m.room.member"
                && json["state_key"] == user.as_str()
                && json["content"]["membership"] == membership
        })
    })
}

/// `owner` creates a room from `request`, invites `guest`, and `guest` joins it.
async fn shared_room(owner: &Client, guest: &Client, request: CreateRoomRequest) -> (Room, OwnedRoomId) {
    let room = owner.create_room(request).await.expect("create room");
    let room_id = room.room_id().to_owned();
    room.invite_user_by_id(guest.user_id().unwrap()).await.expect("invite");
    sync_until(guest, "the invite", |r| r.rooms.invited.contains_key(&room_id)).await;
    guest.join_room_by_id(&room_id).await.expect("join");
    sync(owner).await;
    (room, room_id)
}

fn named(name: &str) -> CreateRoomRequest {
    let mut request = CreateRoomRequest::new();
    request.name = Some(name.to_owned());
    request
}

async fn search(client: &Client, term: &str) -> Vec<(OwnedRoomId, String)> {
    let mut categories = Categories::new();
    categories.room_events = Some(Criteria::new(term.to_owned()));
    let response = client.send(SearchRequest::new(categories)).await.expect("search");
    let found = response.search_categories.room_events;
    let hits: Vec<(OwnedRoomId, String)> = found
        .results
        .iter()
        .filter_map(|hit| {
            let json: Value = serde_json::from_str(hit.result.as_ref()?.json().get()).ok()?;
            let room = RoomId::parse(json["room_id"].as_str()?).ok()?;
            Some((room, json["content"]["body"].as_str()?.to_owned()))
        })
        .collect();
    assert_eq!(found.count.map(u64::from), Some(hits.len() as u64), "count matches the results");
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muting_searching_and_presence() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let alice_id: OwnedUserId = alice.user_id().unwrap().to_owned();
    let (quiet, quiet_id) = shared_room(&alice, &bob, named("Quiet")).await;
    let (lively, lively_id) = shared_room(&alice, &bob, named("Lively")).await;

    // Bob mutes one room; the new push rule comes back down his sync as account data.
    let settings = bob.notification_settings().await;
    settings.set_room_notification_mode(&quiet_id, RoomNotificationMode::Mute).await.expect("mute");
    let mut synced_mode = None;
    for _ in 0..10 {
        sync(&bob).await;
        synced_mode =
            bob.notification_settings().await.get_user_defined_room_notification_mode(&quiet_id).await;
        if synced_mode.is_some() {
            break;
        }
    }
    assert_eq!(synced_mode, Some(RoomNotificationMode::Mute), "the push rule comes back as account data");
    assert_eq!(settings.get_user_defined_room_notification_mode(&lively_id).await, None);

    // Alice writes in both; only the unmuted room's badge counts.
    for text in ["shh 1", "shh 2"] {
        quiet.send(RoomMessageEventContent::text_plain(text)).await.expect("send");
    }
    for text in ["hey 1", "hey 2"] {
        lively.send(RoomMessageEventContent::text_plain(text)).await.expect("send");
    }
    let (mut in_quiet, mut in_lively) = (Vec::new(), Vec::new());
    sync_until(&bob, "both rooms' messages", |r| {
        in_quiet.extend(bodies(r, &quiet_id));
        in_lively.extend(bodies(r, &lively_id));
        in_quiet.len() >= 2 && in_lively.len() >= 2
    })
    .await;
    assert_eq!(in_quiet, ["shh 1", "shh 2"]);
    assert_eq!(in_lively, ["hey 1", "hey 2"]);
    let counts = |id: &RoomId| bob.get_room(id).expect("bob's room").unread_notification_counts();
    assert_eq!(counts(&quiet_id).notification_count, 0, "the muted room stays silent");
    assert_eq!(counts(&lively_id).notification_count, 2, "the other room counts alice's messages");

    // Search, Chinese text included.
    lively.send(RoomMessageEventContent::text_plain("你好世界")).await.expect("send");
    lively.send(RoomMessageEventContent::text_plain("goodbye world")).await.expect("send");
    assert_eq!(search(&bob, "你好").await, vec![(lively_id.clone(), "你好世界".to_owned())]);
    assert_eq!(search(&bob, "shh").await.len(), 2, "search covers muted rooms too");

    // Presence: alice steps away; bob's sync and a direct lookup say so.
    let mut away = set_presence::v3::Request::new(alice_id.clone(), PresenceState::Unavailable);
    away.status_msg = Some("in a meeting".to_owned());
    alice.send(away).await.expect("set presence");
    sync_until(&bob, "alice's presence", |r| {
        r.presence.iter().filter_map(|p| p.deserialize().ok()).any(|p| {
            p.sender == alice_id
                && p.content.presence == PresenceState::Unavailable
                && p.content.status_msg.as_deref() == Some("in a meeting")
        })
    })
    .await;
    let got = bob.send(get_presence::v3::Request::new(alice_id.clone())).await.expect("get presence");
    assert_eq!((got.presence, got.status_msg.as_deref()), (PresenceState::Unavailable, Some("in a meeting")));

    // After leaving the room, its messages are out of bob's search.
    bob.get_room(&lively_id).unwrap().leave().await.expect("leave");
    assert_eq!(bob.get_room(&lively_id).unwrap().state(), RoomState::Left);
    assert!(search(&bob, "你好").await.is_empty(), "nothing found after leaving");
    assert_eq!(search(&alice, "你好").await.len(), 1, "alice, still in, finds it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocking_reporting_and_upgrading() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let carol_id = carol.user_id().unwrap().to_owned();

    // A room one knocks to enter.
    let mut create = named("Book club");
    let knock_rule = RoomJoinRulesEventContent::new(JoinRule::Knock);
    create.initial_state = vec![InitialStateEvent::with_empty_state_key(knock_rule).to_raw_any()];
    let club = alice.create_room(create).await.expect("create");
    let club_id = club.room_id().to_owned();
    club.send(RoomMessageEventContent::text_plain("chapter one")).await.expect("send");
    let refused = carol.join_room_by_id(&club_id).await.expect_err("no joining without an invite");
    assert_eq!(refused.as_client_api_error().map(|e| e.status_code.as_u16()), Some(403), "{refused:?}");
    let knocked =
        carol.knock(club_id.clone().into(), Some("I love books".to_owned()), vec![]).await.expect("knock");
    assert_eq!(knocked.state(), RoomState::Knocked);
    sync_until(&carol, "the knocked room", |r| r.rooms.knocked.contains_key(&club_id)).await;
    assert_eq!(carol.get_room(&club_id).unwrap().name().as_deref(), Some("Book club"), "stripped state");

    // Alice's client lists the knock as a request to join, and she accepts it.
    sync_until(&alice, "carol's knock", |r| has_membership(r, &club_id, &carol_id, "knock")).await;
    let knockers = club.members(RoomMemberships::KNOCK).await.expect("members");
    assert_eq!(knockers.iter().map(|m| m.user_id().to_owned()).collect::<Vec<_>>(), vec![carol_id.clone()]);
    assert_eq!(knockers[0].membership(), &MembershipState::Knock);
    let (requests, cleanup) = club.subscribe_to_knock_requests().await.expect("knock requests");
    let mut requests = Box::pin(requests);
    let pending = requests.next().await.expect("the current requests");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].member_info.user_id, carol_id);
    assert_eq!(pending[0].member_info.reason.as_deref(), Some("I love books"));
    pending[0].accept().await.expect("accept");
    cleanup.abort();

    // Carol is invited, joins and reads the room's history.
    sync_until(&carol, "the invite", |r| r.rooms.invited.contains_key(&club_id)).await;
    let joined = carol.join_room_by_id(&club_id).await.expect("join");
    assert_eq!(joined.state(), RoomState::Joined);
    let page = joined.messages(MessagesOptions::backward()).await.expect("messages");
    let history: Vec<String> = page
        .chunk
        .iter()
        .filter_map(|ev| {
            let json: Value = serde_json::from_str(ev.raw().json().get()).ok()?;
            json["content"]["body"].as_str().map(str::to_owned)
        })
        .collect();
    assert!(history.contains(&"chapter one".to_owned()), "{history:?}");

    // Reporting: a real message can be reported; a made-up event cannot.
    let mut create = named("Team");
    create.preset = Some(RoomPreset::PublicChat);
    create.room_version = Some(RoomVersionId::V10);
    let (team, team_id) = shared_room(&alice, &bob, create).await;
    let spam =
        team.send(RoomMessageEventContent::text_plain("buy cheap watches")).await.unwrap().response.event_id;
    let bob_team = bob.get_room(&team_id).expect("bob's team room");
    bob_team.report_content(spam, Some("spam".to_owned())).await.expect("report");
    let unknown = EventId::parse("$unknown-event:localhost").unwrap();
    let err = bob_team.report_content(unknown, Some("spam".to_owned())).await.expect_err("unknown event");
    let api_error = err.as_client_api_error().expect("a Matrix error");
    assert_eq!(api_error.status_code.as_u16(), 404, "{api_error:?}");

    // Upgrading: the old room is tombstoned, the new one names its predecessor.
    let request = upgrade_room::v3::Request::new(team_id.clone(), RoomVersionId::V11);
    let new_id = alice.send(request).await.expect("upgrade").replacement_room;
    assert_ne!(new_id, team_id);
    sync_until(&alice, "the upgrade", |_| {
        team.is_tombstoned() && alice.get_room(&new_id).is_some_and(|r| r.create_content().is_some())
    })
    .await;
    assert_eq!(team.successor_room().map(|s| s.room_id), Some(new_id.clone()));
    assert_eq!(team.tombstone_content().and_then(|t| t.replacement_room), Some(new_id.clone()));
    let new_room = alice.get_room(&new_id).unwrap();
    assert_eq!(new_room.state(), RoomState::Joined, "the upgrader is in the new room");
    assert_eq!(new_room.version(), Some(RoomVersionId::V11));
    assert_eq!(
        new_room.create_content().and_then(|c| c.predecessor).map(|p| p.room_id),
        Some(team_id.clone())
    );

    // Bob's client sees the tombstone too and follows it.
    sync_until(&bob, "the tombstone", |_| bob_team.is_tombstoned()).await;
    assert_eq!(bob_team.successor_room().map(|s| s.room_id), Some(new_id.clone()));
    let followed = bob.join_room_by_id(&new_id).await.expect("join the new room");
    sync_until(&bob, "the new room's state", |_| followed.create_content().is_some()).await;
    assert_eq!(followed.predecessor_room().map(|p| p.room_id), Some(team_id));
}
