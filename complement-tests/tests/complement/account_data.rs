//! Account data (global and per room) and room tags.

use crate::prelude::*;

backend_tests!(
    global_account_data,
    room_account_data,
    missing_account_data_is_404,
    other_users_account_data_is_forbidden,
    server_managed_account_data_is_405,
    room_tags,
    tags_in_sync,
);

fn global_path(user: &str, ty: &str) -> String {
    format!("{V3}/user/{}/account_data/{}", enc(user), enc(ty))
}

fn room_path(user: &str, room: &str, ty: &str) -> String {
    format!(
        "{V3}/user/{}/rooms/{}/account_data/{}",
        enc(user),
        enc(room),
        enc(ty)
    )
}

async fn global_account_data(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let path = global_path(&alice.user_id, "com.example.settings");
    alice.put(&path, &json!({"a": 1})).await.ok();
    assert_eq!(alice.get(&path).await.ok(), json!({"a": 1}));
    // Overwrite replaces the whole content.
    alice.put(&path, &json!({"b": 2})).await.ok();
    assert_eq!(alice.get(&path).await.ok(), json!({"b": 2}));
}

async fn room_account_data(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let r1 = alice.create_room(json!({})).await;
    let r2 = alice.create_room(json!({})).await;
    let path = room_path(&alice.user_id, &r1, "com.example.room_prefs");
    alice.put(&path, &json!({"muted": true})).await.ok();
    assert_eq!(alice.get(&path).await.ok(), json!({"muted": true}));
    // Scoped to the room, and separate from global account data.
    alice
        .get(&room_path(&alice.user_id, &r2, "com.example.room_prefs"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .get(&global_path(&alice.user_id, "com.example.room_prefs"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn missing_account_data_is_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .get(&global_path(&alice.user_id, "com.example.never"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn other_users_account_data_is_forbidden(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let path = global_path(&alice.user_id, "com.example.settings");
    alice.put(&path, &json!({"secret": true})).await.ok();
    bob.get(&path).await.expect_err(403, "M_FORBIDDEN");
    bob.put(&path, &json!({"secret": false}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    assert_eq!(alice.get(&path).await.ok(), json!({"secret": true}));
}

async fn server_managed_account_data_is_405(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice
        .put(&global_path(&alice.user_id, "m.push_rules"), &json!({}))
        .await
        .expect_err(405, "M_BAD_JSON");
    alice
        .put(
            &global_path(&alice.user_id, "m.fully_read"),
            &json!({"event_id": "$x"}),
        )
        .await
        .expect_err(405, "M_BAD_JSON");
    alice
        .put(
            &room_path(&alice.user_id, &room, "m.fully_read"),
            &json!({"event_id": "$x"}),
        )
        .await
        .expect_err(405, "M_BAD_JSON");
    alice
        .put(
            &room_path(&alice.user_id, &room, "m.push_rules"),
            &json!({}),
        )
        .await
        .expect_err(405, "M_BAD_JSON");
}

fn tags_path(user: &str, room: &str) -> String {
    format!("{V3}/user/{}/rooms/{}/tags", enc(user), enc(room))
}

async fn room_tags(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let base = tags_path(&alice.user_id, &room);
    let empty = alice.get(&base).await.ok();
    assert_eq!(empty["tags"], json!({}), "{empty}");

    alice
        .put(&format!("{base}/m.favourite"), &json!({"order": 0.25}))
        .await
        .ok();
    alice.put(&format!("{base}/u.work"), &json!({})).await.ok();
    let tags = alice.get(&base).await.ok();
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.25, "{tags}");
    assert!(tags["tags"]["u.work"].is_object(), "{tags}");

    alice.delete(&format!("{base}/u.work")).await.ok();
    let tags = alice.get(&base).await.ok();
    assert!(tags["tags"]["u.work"].is_null(), "{tags}");
    assert!(tags["tags"]["m.favourite"].is_object(), "{tags}");

    // Not readable by others.
    let bob = server.register("bob").await;
    bob.get(&base).await.expect_err(403, "M_FORBIDDEN");
}

async fn tags_in_sync(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let since = alice.sync_token().await;
    alice
        .put(
            &format!("{}/u.later", tags_path(&alice.user_id, &room)),
            &json!({"order": 0.5}),
        )
        .await
        .ok();
    let sync = alice
        .sync_until(Some(&since), |s| {
            arr(&s["rooms"]["join"][room.as_str()]["account_data"]["events"])
                .iter()
                .any(|e| e["type"] == "m.tag")
        })
        .await;
    let tag = arr(&sync["rooms"]["join"][room.as_str()]["account_data"]["events"])
        .into_iter()
        .find(|e| e["type"] == "m.tag")
        .expect("m.tag");
    assert_eq!(tag["content"]["tags"]["u.later"]["order"], 0.5, "{tag}");
}
