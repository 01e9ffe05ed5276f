//! Room state: PUT/GET single state events, state keys, full state, permissions.

use crate::prelude::*;

backend_tests!(
    put_and_get_state,
    state_with_state_key,
    state_key_that_is_a_user_id,
    missing_state_is_404,
    latest_state_wins,
    full_room_state,
    state_without_power_is_forbidden,
    state_of_room_not_joined_is_forbidden,
);

async fn put_and_get_state(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    // Without a trailing state key segment the key is "".
    let resp = alice
        .put(
            &format!("{V3}/rooms/{}/state/m.room.topic", enc(&room)),
            &json!({"topic": "Weather"}),
        )
        .await
        .ok();
    let event_id = resp["event_id"].as_str().expect("event_id").to_owned();
    let content = alice
        .get(&format!("{V3}/rooms/{}/state/m.room.topic", enc(&room)))
        .await
        .ok();
    assert_eq!(content, json!({"topic": "Weather"}));
    let content = alice
        .get(&format!("{V3}/rooms/{}/state/m.room.topic/", enc(&room)))
        .await
        .ok();
    assert_eq!(content, json!({"topic": "Weather"}));
    let ev = alice.event(&room, &event_id).await.ok();
    assert_eq!(ev["type"], "m.room.topic");
    assert_eq!(ev["state_key"], "");
}

async fn state_with_state_key(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice
        .send_state(&room, "com.example.widget", "one", &json!({"n": 1}))
        .await;
    alice
        .send_state(&room, "com.example.widget", "two", &json!({"n": 2}))
        .await;
    let one = alice.state(&room, "com.example.widget", "one").await.ok();
    assert_eq!(one, json!({"n": 1}));
    let two = alice.state(&room, "com.example.widget", "two").await.ok();
    assert_eq!(two, json!({"n": 2}));
    alice
        .state(&room, "com.example.widget", "three")
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .state(&room, "com.example.widget", "")
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn state_key_that_is_a_user_id(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    // State keys with '@', ':' and '/' must survive URL encoding. (A state key starting with
    // '@' must be the sender's own user id, per the authorization rules.)
    alice
        .send_state(
            &room,
            "com.example.per_user",
            &alice.user_id,
            &json!({"ok": 1}),
        )
        .await;
    let got = alice
        .state(&room, "com.example.per_user", &alice.user_id)
        .await
        .ok();
    assert_eq!(got, json!({"ok": 1}));
    let key = "path/with/slashes:and:colons?&#";
    alice
        .send_state(&room, "com.example.per_user", key, &json!({"ok": 2}))
        .await;
    let got = alice.state(&room, "com.example.per_user", key).await.ok();
    assert_eq!(got, json!({"ok": 2}));
    // Someone else's user id as a state key is rejected.
    let bob = server.register("bob").await;
    alice
        .put_state(&room, "com.example.per_user", &bob.user_id, &json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

async fn missing_state_is_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice
        .state(&room, "m.room.name", "")
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .state(&room, "com.example.never.set", "")
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn latest_state_wins(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    for name in ["first", "second", "third"] {
        alice
            .send_state(&room, "m.room.name", "", &json!({"name": name}))
            .await;
    }
    let got = alice.state(&room, "m.room.name", "").await.ok();
    assert_eq!(got["name"], "third");
    let all = alice
        .get(&format!("{V3}/rooms/{}/state", enc(&room)))
        .await
        .ok();
    let names: Vec<Value> = arr(&all)
        .into_iter()
        .filter(|e| e["type"] == "m.room.name")
        .collect();
    assert_eq!(names.len(), 1, "full state holds one m.room.name: {all}");
    assert_eq!(names[0]["content"]["name"], "third");
}

async fn full_room_state(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "Full"}))
        .await;
    alice
        .send_state(&room, "com.example.k", "x", &json!({"v": 1}))
        .await;
    let all = alice
        .get(&format!("{V3}/rooms/{}/state", enc(&room)))
        .await
        .ok();
    let events = arr(&all);
    let find = |ty: &str, key: &str| {
        events
            .iter()
            .find(|e| e["type"] == ty && e["state_key"] == key)
            .cloned()
    };
    for (ty, key) in [
        ("m.room.create", ""),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("com.example.k", "x"),
    ] {
        let ev = find(ty, key).unwrap_or_else(|| panic!("{ty}/{key} missing from {all}"));
        for field in ["event_id", "sender", "origin_server_ts", "content"] {
            assert!(!ev[field].is_null(), "{ty} lacks {field}: {ev}");
        }
    }
    let me = find("m.room.member", &alice.user_id).expect("own member event");
    assert_eq!(me["content"]["membership"], "join");
}

async fn state_without_power_is_forbidden(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    bob.put_state(&room, "m.room.name", "", &json!({"name": "bob's room"}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    bob.put_state(
        &room,
        "m.room.power_levels",
        "",
        &json!({"users": {bob.user_id.clone(): 100}}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    let name = alice.state(&room, "m.room.name", "").await.ok();
    assert_eq!(name["name"], "Shared");
}

async fn state_of_room_not_joined_is_forbidden(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "Secret"}))
        .await;
    eve.state(&room, "m.room.name", "")
        .await
        .expect_err(403, "M_FORBIDDEN");
    eve.get(&format!("{V3}/rooms/{}/state", enc(&room)))
        .await
        .expect_err(403, "M_FORBIDDEN");
}
