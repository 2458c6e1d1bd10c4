use std::{collections::BTreeMap, sync::Arc};

use homeserver_core::{ErrorKind, keys::ServerKey, streams::EventStream};
use homeserver_rooms::{
    Rooms, RoomsConfig,
    builder::{EventTemplate, Placement, build_pdu},
    create::{CreateRoom, Profile},
    pdu::Pdu,
};
use homeserver_storage::{Db, testing::TestDatabase};
use ruma::events::room::member::MembershipState;
use ruma::{
    CanonicalJsonObject, OwnedUserId, RoomVersionId, ServerName,
    serde::Base64,
    signatures::{Verified, verify_event},
};
use serde_json::json;

struct Env {
    _tdb: TestDatabase,
    rooms: Rooms,
    key: ServerKey,
}

async fn env() -> Env {
    let tdb = TestDatabase::create().await;
    let db = Db::connect(&tdb.url).await.unwrap();
    let server: &ServerName = "test.local".try_into().unwrap();
    let key = ServerKey::from_pkcs8(server, &ServerKey::generate_pkcs8(), "k1").unwrap();
    let stream = EventStream::new(db.max_stream_pos().await.unwrap() as u64);
    for u in ["@alice:test.local", "@bob:test.local", "@eve:test.local"] {
        db.create_user(u, None, false, None, 0).await.unwrap();
    }
    let rooms = Rooms::new(db, key.clone(), stream, RoomsConfig::default());
    Env { _tdb: tdb, rooms, key }
}

fn user(s: &str) -> OwnedUserId {
    s.try_into().unwrap()
}

fn create_request(creator: &str, version: RoomVersionId) -> CreateRoom {
    CreateRoom {
        creator: user(creator),
        version: Some(version),
        preset: None,
        public: false,
        alias_localpart: None,
        name: Some("Test".into()),
        topic: None,
        invite: vec![],
        is_direct: false,
        initial_state: vec![],
        creation_content: None,
        power_level_content_override: None,
        apply_preset_state: true,
        room_id: None,
    }
}

async fn verify(env: &Env, pdu: &Pdu, version: &RoomVersionId) {
    let rules = version.rules().unwrap();
    let obj: CanonicalJsonObject = serde_json::from_str(&pdu.json).unwrap();
    let mut keys = BTreeMap::new();
    keys.insert(env.key.key_id(), Base64::parse(env.key.public_key_base64()).unwrap());
    let mut map = BTreeMap::new();
    map.insert("test.local".to_owned(), keys);
    assert_eq!(verify_event(&map, &obj, &rules).unwrap(), Verified::All, "signature and hash");
    if homeserver_rooms::event_format::ids_are_named(&rules) {
        // Versions 1 and 2: the id is signed with the event and names this server.
        assert_eq!(obj["event_id"], ruma::CanonicalJsonValue::String(pdu.event_id.to_string()));
        assert!(pdu.event_id.as_str().ends_with(":test.local"), "{}", pdu.event_id);
    } else {
        let reference = ruma::signatures::reference_hash(&obj, &rules).unwrap();
        assert_eq!(pdu.event_id.as_str(), format!("${reference}"), "event id is the reference hash");
    }
    // Versions 1 and 2 reference earlier events with their reference hashes.
    let pairs = homeserver_rooms::event_format::references_carry_hashes(&rules);
    for reference in
        obj["prev_events"].as_array().unwrap().iter().chain(obj["auth_events"].as_array().unwrap())
    {
        match reference {
            ruma::CanonicalJsonValue::Array(pair) if pairs => {
                let ruma::CanonicalJsonValue::String(hash) = &pair[1].as_object().unwrap()["sha256"] else {
                    panic!("no hash in {reference:?}");
                };
                let ruma::CanonicalJsonValue::String(id) = &pair[0] else { panic!("no id in {reference:?}") };
                let referenced =
                    env.rooms.cache().get(&ruma::EventId::parse(id).unwrap()).await.unwrap().unwrap();
                let expected = homeserver_rooms::event_format::reference_hash(&referenced.json, &rules);
                assert_eq!(Some(hash.clone()), expected, "the reference hash of {id}");
            }
            ruma::CanonicalJsonValue::String(_) if !pairs => {}
            other => panic!("unexpected reference {other:?}"),
        }
    }
}

#[tokio::test]
async fn created_events_verify_for_every_supported_version() {
    let env = env().await;
    for version in homeserver_rooms::versions::SUPPORTED_VERSIONS {
        let room_id = env
            .rooms
            .create_room(create_request("@alice:test.local", version.clone()), Profile::default())
            .await
            .unwrap();
        let event_id = env
            .rooms
            .send_message(
                &room_id,
                &user("@alice:test.local"),
                "m.room.message",
                json!({"body": "hi", "msgtype": "m.text"}),
                None,
            )
            .await
            .unwrap();
        let state = env.rooms.current_state_ids(&room_id).await.unwrap();
        assert!(state.iter().any(|(t, _, _)| t == "m.room.name"), "{version}: name set");
        let mut ids: Vec<_> = state.iter().map(|(_, _, id)| id.parse().unwrap()).collect();
        ids.push(event_id.clone());
        let pdus = env.rooms.cache().get_many(&ids).await.unwrap();
        assert_eq!(pdus.len(), ids.len());
        for pdu in pdus.values() {
            verify(&env, pdu, &version).await;
        }
        let create = env.rooms.current_state_event(&room_id, "m.room.create", "").await.unwrap().unwrap();
        if version == RoomVersionId::V12 {
            assert_eq!(room_id.as_str(), format!("!{}", &create.event_id.as_str()[1..]));
            assert!(!create.json.contains("\"room_id\""));
        } else {
            assert!(room_id.as_str().ends_with(":test.local"));
        }
        let msg = &pdus[&event_id];
        assert!(!msg.prev_events.is_empty() && !msg.auth_events.is_empty());
    }
}

#[tokio::test]
async fn auth_rules_reject_unauthorised_events() {
    let env = env().await;
    let alice = user("@alice:test.local");
    let bob = user("@bob:test.local");
    let room_id = env
        .rooms
        .create_room(create_request(alice.as_str(), RoomVersionId::V12), Profile::default())
        .await
        .unwrap();

    // Not a member: cannot send.
    let err = env
        .rooms
        .send_message(&room_id, &bob, "m.room.message", json!({"body": "x"}), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Forbidden);
    // Invite-only room: cannot join uninvited.
    let err = env.rooms.join(&room_id, &bob, Default::default()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Forbidden);
    // Invited: can join, then cannot change power levels.
    env.rooms.invite(&room_id, &alice, &bob, None, false).await.unwrap();
    env.rooms.join(&room_id, &bob, Default::default()).await.unwrap();
    let err = env
        .rooms
        .send_state(&room_id, &bob, "m.room.power_levels", "", json!({"users": {bob.as_str(): 100}}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Forbidden);
    // Banned: cannot rejoin.
    env.rooms.ban(&room_id, &alice, &bob, Some("spam")).await.unwrap();
    let err = env.rooms.join(&room_id, &bob, Default::default()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Forbidden);
    assert_eq!(env.rooms.membership(&room_id, &bob).await.unwrap(), Some(MembershipState::Ban));
    // A rejected event leaves no trace: the state is unchanged.
    let pl = env.rooms.current_state_event(&room_id, "m.room.power_levels", "").await.unwrap().unwrap();
    assert!(!pl.json.contains(bob.as_str()));
}

#[tokio::test]
async fn forged_event_fails_the_auth_rules() {
    let env = env().await;
    let alice = user("@alice:test.local");
    let eve = user("@eve:test.local");
    let room_id = env
        .rooms
        .create_room(create_request(alice.as_str(), RoomVersionId::V11), Profile::default())
        .await
        .unwrap();
    let rules = RoomVersionId::V11.rules().unwrap();
    let state = env.rooms.current_state_ids(&room_id).await.unwrap();
    let id_of =
        |t: &str| state.iter().find(|(ty, _, _)| ty == t).map(|(_, _, id)| id.parse().unwrap()).unwrap();
    // Eve claims alice's membership as her authority for a power-levels change.
    let auth_events = vec![id_of("m.room.create"), id_of("m.room.power_levels"), id_of("m.room.member")];
    let template =
        EventTemplate::state("m.room.power_levels", "", &eve, json!({"users": {eve.as_str(): 100}}));
    let pdu = build_pdu(
        &env.key,
        &rules,
        &template,
        &Placement {
            room_id: Some(&room_id),
            prev_events: &[],
            auth_events: &auth_events,
            depth: 99,
            origin_server_ts: 1,
            references: &Default::default(),
        },
    )
    .unwrap();
    let pdus = env.rooms.cache().get_many(&auth_events).await.unwrap();
    let mut events = homeserver_rooms::auth::AuthEvents::default();
    for pdu in pdus.values() {
        events.by_key.insert((pdu.kind.to_string().into(), pdu.state_key.clone().unwrap()), pdu.clone());
    }
    events.by_id = pdus;
    let result = homeserver_rooms::auth::check(&rules.authorization, &pdu, &events);
    assert!(result.is_err(), "forged event accepted");
    let _: Arc<Pdu> = Arc::new(pdu);
}

#[tokio::test]
async fn oversized_events_are_refused() {
    let env = env().await;
    let alice = user("@alice:test.local");
    let room_id = env
        .rooms
        .create_room(create_request(alice.as_str(), RoomVersionId::V12), Profile::default())
        .await
        .unwrap();
    let big = "x".repeat(70_000);
    let err = env
        .rooms
        .send_message(&room_id, &alice, "m.room.message", json!({"body": big}), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::TooLarge);
}
