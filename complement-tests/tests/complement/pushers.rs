//! Pushers (`GET /pushers`, `POST /pushers/set`) and notifications posted to a push gateway.

use crate::prelude::*;
use complement_tests::FakePushGateway;

backend_tests!(
    set_list_update_and_delete_pusher,
    pusher_validation,
    append_false_takes_the_pushkey_from_other_users,
    logout_removes_the_devices_pushers,
    notification_reaches_the_gateway,
    event_id_only_format_leaves_out_content,
    rejected_pushkey_removes_the_pusher,
    notifications_list_pages_and_read_state,
    pushers_survive_a_kill_and_keep_pushing,
);

const SET: &str = "/_matrix/client/v3/pushers/set";
const LIST: &str = "/_matrix/client/v3/pushers";

fn http_pusher(pushkey: &str, url: &str) -> Value {
    json!({
        "app_id": "im.example.app",
        "pushkey": pushkey,
        "kind": "http",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "profile_tag": "tag1",
        "lang": "en",
        "data": {"url": url},
    })
}

async fn pushers_of(c: &Client) -> Vec<Value> {
    arr(&c.get(LIST).await.ok()["pushers"])
}

async fn set_list_update_and_delete_pusher(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    assert!(pushers_of(&alice).await.is_empty());
    let url = "https://push.example/_matrix/push/v1/notify";
    alice.post(SET, &http_pusher("key1", url)).await.ok();
    let list = pushers_of(&alice).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let p = &list[0];
    assert_eq!(p["pushkey"], "key1");
    assert_eq!(p["app_id"], "im.example.app");
    assert_eq!(p["kind"], "http");
    assert_eq!(p["app_display_name"], "Example");
    assert_eq!(p["device_display_name"], "Phone");
    assert_eq!(p["profile_tag"], "tag1");
    assert_eq!(p["lang"], "en");
    assert_eq!(p["data"]["url"], url);

    // Same (app_id, pushkey): replaced, not added.
    let mut changed = http_pusher("key1", url);
    changed["device_display_name"] = json!("Tablet");
    alice.post(SET, &changed).await.ok();
    let list = pushers_of(&alice).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["device_display_name"], "Tablet");

    alice.post(SET, &http_pusher("key2", url)).await.ok();
    assert_eq!(pushers_of(&alice).await.len(), 2);

    // kind null deletes.
    alice
        .post(
            SET,
            &json!({"app_id": "im.example.app", "pushkey": "key1", "kind": null}),
        )
        .await
        .ok();
    let list = pushers_of(&alice).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["pushkey"], "key2");

    // Pushers are private to their user.
    let bob = server.register("bob").await;
    assert!(pushers_of(&bob).await.is_empty());
}

async fn pusher_validation(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bad_path = http_pusher("k", "https://push.example/notify");
    alice
        .post(SET, &bad_path)
        .await
        .expect_err(400, "M_INVALID_PARAM");
    let not_url = http_pusher("k", "not a url");
    alice
        .post(SET, &not_url)
        .await
        .expect_err(400, "M_INVALID_PARAM");
    let mut no_url = http_pusher("k", "");
    no_url["data"] = json!({});
    alice
        .post(SET, &no_url)
        .await
        .expect_err(400, "M_MISSING_PARAM");
    let mut no_lang = http_pusher("k", "https://push.example/_matrix/push/v1/notify");
    no_lang.as_object_mut().map(|o| o.remove("lang"));
    alice
        .post(SET, &no_lang)
        .await
        .expect_err(400, "M_MISSING_PARAM");
    let mut odd_kind = http_pusher("k", "https://push.example/_matrix/push/v1/notify");
    odd_kind["kind"] = json!("carrier-pigeon");
    alice
        .post(SET, &odd_kind)
        .await
        .expect_err(400, "M_INVALID_PARAM");
    let long_key = http_pusher(
        &"k".repeat(513),
        "https://push.example/_matrix/push/v1/notify",
    );
    alice
        .post(SET, &long_key)
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .anonymous()
        .post(SET, &http_pusher("k", "https://p/_matrix/push/v1/notify"))
        .await
        .expect_err(401, "M_MISSING_TOKEN");
    assert!(pushers_of(&alice).await.is_empty());
}

async fn append_false_takes_the_pushkey_from_other_users(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let url = "https://push.example/_matrix/push/v1/notify";
    alice.post(SET, &http_pusher("shared", url)).await.ok();
    let mut appended = http_pusher("shared", url);
    appended["append"] = json!(true);
    bob.post(SET, &appended).await.ok();
    assert_eq!(pushers_of(&alice).await.len(), 1, "append keeps the others");
    bob.post(SET, &http_pusher("shared", url)).await.ok();
    assert!(
        pushers_of(&alice).await.is_empty(),
        "without append the pushkey moves to the new user"
    );
    assert_eq!(pushers_of(&bob).await.len(), 1);
}

async fn logout_removes_the_devices_pushers(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let second = alice.login_again().await;
    let url = "https://push.example/_matrix/push/v1/notify";
    alice.post(SET, &http_pusher("first", url)).await.ok();
    second.post(SET, &http_pusher("second", url)).await.ok();
    assert_eq!(pushers_of(&alice).await.len(), 2);
    second
        .post("/_matrix/client/v3/logout", &json!({}))
        .await
        .ok();
    let list = pushers_of(&alice).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["pushkey"], "first");
}

/// Bob (with a pusher) and alice share a room; returns the room.
async fn room_with_pusher(
    server: &Server,
    gateway: &FakePushGateway,
    format: Option<&str>,
) -> (Client, Client, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "Pushy"}))
        .await;
    alice.invite(&room, &bob.user_id).await.ok();
    bob.join(&room).await;
    let mut pusher = http_pusher("bobkey", &gateway.url());
    if let Some(f) = format {
        pusher["data"]["format"] = json!(f);
    }
    pusher["data"]["custom"] = json!("kept");
    bob.post(SET, &pusher).await.ok();
    (alice, bob, room)
}

async fn notification_reaches_the_gateway(b: Backend) {
    let server = start(b).await;
    let gateway = FakePushGateway::start().await;
    let (alice, bob, room) = room_with_pusher(&server, &gateway, None).await;
    // Bob's own message does not notify him; alice's does.
    bob.send_text(&room, "from bob").await;
    let event_id = alice.send_text(&room, "hello bob").await;
    let body = gateway
        .wait_for(Duration::from_secs(20), |n| {
            n["notification"]["event_id"].as_str().is_some()
        })
        .await;
    let n = &body["notification"];
    assert_eq!(n["event_id"], event_id.as_str(), "first notification: {n}");
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], alice.user_id.as_str());
    assert_eq!(n["room_name"], "Pushy");
    assert_eq!(n["content"]["body"], "hello bob");
    assert_eq!(n["counts"]["unread"], 1);
    assert_eq!(n["prio"], "high", "a one-to-one room message makes a sound");
    let device = &n["devices"][0];
    assert_eq!(device["app_id"], "im.example.app");
    assert_eq!(device["pushkey"], "bobkey");
    assert_eq!(device["data"]["custom"], "kept");
    assert!(
        device["data"].get("url").is_none(),
        "url is not sent: {device}"
    );
    assert_eq!(device["tweaks"]["sound"], "default");
    assert!(
        !gateway
            .received()
            .iter()
            .any(|b| b["notification"]["content"]["body"] == "from bob"),
        "own messages must not be pushed"
    );
}

async fn event_id_only_format_leaves_out_content(b: Backend) {
    let server = start(b).await;
    let gateway = FakePushGateway::start().await;
    let (alice, _bob, room) = room_with_pusher(&server, &gateway, Some("event_id_only")).await;
    let event_id = alice.send_text(&room, "secret").await;
    let body = gateway
        .wait_for(Duration::from_secs(20), |n| {
            n["notification"]["event_id"] == event_id.as_str()
        })
        .await;
    let n = &body["notification"];
    assert!(n.get("content").is_none(), "{n}");
    assert!(n.get("sender").is_none(), "{n}");
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["counts"]["unread"], 1);
}

async fn rejected_pushkey_removes_the_pusher(b: Backend) {
    let server = start(b).await;
    let gateway = FakePushGateway::start().await;
    let (alice, bob, room) = room_with_pusher(&server, &gateway, None).await;
    gateway.reject("bobkey");
    let event_id = alice.send_text(&room, "are you there").await;
    gateway
        .wait_for(Duration::from_secs(20), |n| {
            n["notification"]["event_id"] == event_id.as_str()
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pushers_of(&bob).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "a rejected pushkey's pusher must be removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn notifications_list_pages_and_read_state(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    const NOTIFS: &str = "/_matrix/client/v3/notifications";
    bob.send_text(&room, "bob's own").await;
    let first = alice.send_text(&room, "one").await;
    let mention = alice
        .send_event(
            &room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "hey you", "m.mentions": {"user_ids": [bob.user_id]}}),
        )
        .await;
    let last = alice.send_text(&room, "three").await;

    let all = bob.get(NOTIFS).await.ok();
    let list = arr(&all["notifications"]);
    let ids: Vec<&str> = list
        .iter()
        .filter_map(|n| n["event"]["event_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [last.as_str(), mention.as_str(), first.as_str()],
        "{all}"
    );
    assert!(all.get("next_token").is_none(), "{all}");
    for n in &list {
        assert_eq!(n["room_id"], room.as_str());
        assert_eq!(n["read"], false);
        assert!(n["ts"].as_i64().is_some_and(|t| t > 0));
        assert!(arr(&n["actions"]).iter().any(|a| a == "notify"), "{n}");
    }

    let highlights = bob.get(&format!("{NOTIFS}?only=highlight")).await.ok();
    let list = arr(&highlights["notifications"]);
    assert_eq!(list.len(), 1, "{highlights}");
    assert_eq!(list[0]["event"]["event_id"], mention.as_str());

    // Pages of two.
    let page1 = bob.get(&format!("{NOTIFS}?limit=2")).await.ok();
    assert_eq!(arr(&page1["notifications"]).len(), 2);
    let token = page1["next_token"].as_str().expect("next_token").to_owned();
    let page2 = bob
        .get(&format!("{NOTIFS}?limit=2&from={}", enc(&token)))
        .await
        .ok();
    let rest = arr(&page2["notifications"]);
    assert_eq!(rest.len(), 1, "{page2}");
    assert_eq!(rest[0]["event"]["event_id"], first.as_str());

    // A read receipt on the newest marks them all read.
    bob.post(
        &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&last)),
        &json!({}),
    )
    .await
    .ok();
    let after = bob.get(NOTIFS).await.ok();
    assert!(
        arr(&after["notifications"])
            .iter()
            .all(|n| n["read"] == true),
        "{after}"
    );
    // Alice's own messages never notify her.
    let mine = alice.get(NOTIFS).await.ok();
    assert!(
        arr(&mine["notifications"])
            .iter()
            .all(|n| n["event"]["sender"] != alice.user_id.as_str()),
        "{mine}"
    );
    bob.get(&format!("{NOTIFS}?from=nonsense"))
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

async fn pushers_survive_a_kill_and_keep_pushing(b: Backend) {
    let mut server = start(b).await;
    let gateway = FakePushGateway::start().await;
    let (alice, bob, room) = room_with_pusher(&server, &gateway, None).await;
    let before = alice.send_text(&room, "before the kill").await;
    gateway
        .wait_for(Duration::from_secs(20), |n| {
            n["notification"]["event_id"] == before.as_str()
        })
        .await;
    server.kill9();
    server.start_again().await;
    assert_eq!(pushers_of(&bob).await.len(), 1, "the pusher is stored");
    let after = alice.send_text(&room, "after the restart").await;
    gateway
        .wait_for(Duration::from_secs(20), |n| {
            n["notification"]["event_id"] == after.as_str()
        })
        .await;
    let count = |id: &str| {
        gateway
            .received()
            .iter()
            .filter(|n| n["notification"]["event_id"] == id)
            .count()
    };
    assert_eq!(count(&after), 1);
}
