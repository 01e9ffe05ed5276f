//! POST /createRoom: presets, name/topic/alias, initial_state, invites, power level overrides,
//! room versions, is_direct.

use crate::prelude::*;

backend_tests!(
    create_room_basic,
    preset_private_chat,
    preset_public_chat,
    preset_trusted_private_chat,
    name_and_topic,
    room_alias_name,
    room_alias_name_in_use,
    initial_state_overrides_preset,
    invite_list,
    is_direct_marks_invite,
    power_level_content_override,
    creation_content,
    room_version_10,
    room_version_12,
    unsupported_room_version,
    default_room_version_from_config,
    default_visibility_is_private,
);

/// The content of one state event, looked up in the room's full state (`GET /state`), so that
/// these createRoom tests do not depend on the single-state-event endpoint (tested in state.rs).
async fn state_content(c: &Client, room: &str, ty: &str, key: &str) -> Value {
    let all = c.get(&format!("{V3}/rooms/{}/state", enc(room))).await.ok();
    arr(&all)
        .into_iter()
        .find(|e| e["type"] == ty && e["state_key"] == key)
        .map(|e| e["content"].clone())
        .unwrap_or_else(|| panic!("no {ty}/{key:?} in the room state: {all}"))
}

/// Like `state_content` but `None` when the state event does not exist.
async fn maybe_state_content(c: &Client, room: &str, ty: &str, key: &str) -> Option<Value> {
    let all = c.get(&format!("{V3}/rooms/{}/state", enc(room))).await.ok();
    arr(&all)
        .into_iter()
        .find(|e| e["type"] == ty && e["state_key"] == key)
        .map(|e| e["content"].clone())
}

async fn create_room_basic(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    assert!(room.starts_with('!'), "room id {room}");
    let create = state_content(&alice, &room, "m.room.create", "").await;
    assert!(create["room_version"].is_string(), "{create}");
    let member = state_content(&alice, &room, "m.room.member", &alice.user_id).await;
    assert_eq!(member["membership"], "join");
    let pl = state_content(&alice, &room, "m.room.power_levels", "").await;
    assert!(pl.is_object(), "{pl}");
    let joined = alice.get(&format!("{V3}/joined_rooms")).await.ok();
    assert!(
        arr(&joined["joined_rooms"]).contains(&json!(room)),
        "{joined}"
    );
    // The full state has a create event with an empty state key sent by alice.
    let all = alice
        .get(&format!("{V3}/rooms/{}/state", enc(&room)))
        .await
        .ok();
    let create_ev = arr(&all)
        .into_iter()
        .find(|e| e["type"] == "m.room.create")
        .unwrap_or_else(|| panic!("no create event in {all}"));
    assert_eq!(create_ev["state_key"], "");
    assert_eq!(create_ev["sender"], alice.user_id.as_str());
}

async fn preset_private_chat(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    let jr = state_content(&alice, &room, "m.room.join_rules", "").await;
    assert_eq!(jr["join_rule"], "invite");
    let hv = state_content(&alice, &room, "m.room.history_visibility", "").await;
    assert_eq!(hv["history_visibility"], "shared");
    let ga = state_content(&alice, &room, "m.room.guest_access", "").await;
    assert_eq!(ga["guest_access"], "can_join");
}

async fn preset_public_chat(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let jr = state_content(&alice, &room, "m.room.join_rules", "").await;
    assert_eq!(jr["join_rule"], "public");
    let hv = state_content(&alice, &room, "m.room.history_visibility", "").await;
    assert_eq!(hv["history_visibility"], "shared");
    if let Some(ga) = maybe_state_content(&alice, &room, "m.room.guest_access", "").await {
        assert_eq!(ga["guest_access"], "forbidden");
    }
}

async fn preset_trusted_private_chat(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // Room version 10: creators are ordinary entries in `users` there.
    let room = alice
        .create_room(json!({
            "preset": "trusted_private_chat",
            "invite": [bob.user_id],
            "room_version": "10",
        }))
        .await;
    let jr = state_content(&alice, &room, "m.room.join_rules", "").await;
    assert_eq!(jr["join_rule"], "invite");
    let pl = state_content(&alice, &room, "m.room.power_levels", "").await;
    let creator_pl = &pl["users"][alice.user_id.as_str()];
    assert!(
        creator_pl.is_i64(),
        "creator has no explicit power level: {pl}"
    );
    assert_eq!(
        &pl["users"][bob.user_id.as_str()],
        creator_pl,
        "invitee must get the creator's power level: {pl}"
    );
    let member = state_content(&alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "invite");
}

async fn name_and_topic(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({"name": "The Lounge", "topic": "Tea and biscuits"}))
        .await;
    let name = state_content(&alice, &room, "m.room.name", "").await;
    assert_eq!(name["name"], "The Lounge");
    let topic = state_content(&alice, &room, "m.room.topic", "").await;
    assert_eq!(topic["topic"], "Tea and biscuits");
}

async fn room_alias_name(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({"room_alias_name": "lounge"}))
        .await;
    let alias = alias(&server, "lounge");
    let resolved = alice
        .get(&format!("{V3}/directory/room/{}", enc(&alias)))
        .await
        .ok();
    assert_eq!(resolved["room_id"], room.as_str());
    let canonical = state_content(&alice, &room, "m.room.canonical_alias", "").await;
    assert_eq!(canonical["alias"], alias.as_str());
}

async fn room_alias_name_in_use(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .create_room(json!({"room_alias_name": "lounge"}))
        .await;
    alice
        .post(
            &format!("{V3}/createRoom"),
            &json!({"room_alias_name": "lounge"}),
        )
        .await
        .expect_err(400, "M_ROOM_IN_USE");
    // Alice is still in exactly one room.
    let joined = alice.get(&format!("{V3}/joined_rooms")).await.ok();
    assert_eq!(arr(&joined["joined_rooms"]).len(), 1, "{joined}");
}

async fn initial_state_overrides_preset(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({
            "preset": "private_chat",
            "initial_state": [
                {"type": "m.room.history_visibility", "state_key": "",
                 "content": {"history_visibility": "world_readable"}},
                {"type": "com.example.custom", "state_key": "k1", "content": {"answer": 42}},
            ],
        }))
        .await;
    let hv = state_content(&alice, &room, "m.room.history_visibility", "").await;
    assert_eq!(hv["history_visibility"], "world_readable");
    let custom = state_content(&alice, &room, "com.example.custom", "k1").await;
    assert_eq!(custom, json!({"answer": 42}));
}

async fn invite_list(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({"invite": [bob.user_id]})).await;
    let member = state_content(&alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "invite");
    let sync = bob
        .sync_until(None, |s| !s["rooms"]["invite"][room.as_str()].is_null())
        .await;
    assert!(sync["rooms"]["invite"][room.as_str()]["invite_state"]["events"].is_array());
    bob.join(&room).await;
}

async fn is_direct_marks_invite(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({
            "preset": "trusted_private_chat",
            "invite": [bob.user_id],
            "is_direct": true,
        }))
        .await;
    let member = state_content(&alice, &room, "m.room.member", &bob.user_id).await;
    assert_eq!(member["membership"], "invite");
    assert_eq!(member["is_direct"], true, "{member}");
}

async fn power_level_content_override(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({
            "power_level_content_override": {
                "events_default": 50,
                "events": {"m.room.name": 75},
            },
        }))
        .await;
    let pl = state_content(&alice, &room, "m.room.power_levels", "").await;
    assert_eq!(pl["events_default"], 50, "{pl}");
    assert_eq!(pl["events"]["m.room.name"], 75, "{pl}");
    // The creator can still act.
    alice
        .send_state(&room, "com.example.setting", "k", &json!({"v": 1}))
        .await;
    alice.send_text(&room, "hello").await;
}

async fn creation_content(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({"creation_content": {"m.federate": false}}))
        .await;
    let create = state_content(&alice, &room, "m.room.create", "").await;
    assert_eq!(create["m.federate"], false, "{create}");
}

async fn check_room_version(b: Backend, version: &str) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({"room_version": version, "preset": "public_chat"}))
        .await;
    let create = state_content(&alice, &room, "m.room.create", "").await;
    assert_eq!(create["room_version"], version, "{create}");
    // The room is usable: a second user can join, both can talk.
    bob.join(&room).await;
    let e1 = alice.send_text(&room, "from alice").await;
    let e2 = bob.send_text(&room, "from bob").await;
    assert!(e1.starts_with('$') && e2.starts_with('$'));
    let ev = bob.event(&room, &e1).await.ok();
    assert_eq!(ev["content"]["body"], "from alice");
}

async fn room_version_10(b: Backend) {
    check_room_version(b, "10").await;
}

async fn room_version_12(b: Backend) {
    check_room_version(b, "12").await;
}

async fn unsupported_room_version(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .post(
            &format!("{V3}/createRoom"),
            &json!({"room_version": "999-no-such-version"}),
        )
        .await
        .expect_err(400, "M_UNSUPPORTED_ROOM_VERSION");
}

async fn default_room_version_from_config(b: Backend) {
    let server = start_with(
        b,
        ServerOptions {
            default_room_version: Some("10".to_owned()),
            ..Default::default()
        },
    )
    .await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let create = state_content(&alice, &room, "m.room.create", "").await;
    assert_eq!(create["room_version"], "10");
    let caps = alice.get(&format!("{V3}/capabilities")).await.ok();
    if !caps["capabilities"]["m.room_versions"].is_null() {
        assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "10");
    }
}

async fn default_visibility_is_private(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "Not listed"}))
        .await;
    let vis = alice
        .get(&format!("{V3}/directory/list/room/{}", enc(&room)))
        .await
        .ok();
    assert_eq!(vis["visibility"], "private");
    let list = alice.get(&format!("{V3}/publicRooms")).await.ok();
    assert!(
        !arr(&list["chunk"])
            .iter()
            .any(|r| r["room_id"] == room.as_str()),
        "{list}"
    );
}
