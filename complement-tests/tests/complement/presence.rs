//! Presence.

use crate::prelude::*;

backend_tests!(
    set_and_get_presence,
    presence_of_other_user_cannot_be_set,
    invalid_presence_is_400,
    presence_visible_to_room_members,
    presence_of_strangers_is_forbidden,
);

fn status_path(user: &str) -> String {
    format!("{V3}/presence/{}/status", enc(user))
}

async fn set_and_get_presence(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .put(
            &status_path(&alice.user_id),
            &json!({"presence": "online", "status_msg": "Working"}),
        )
        .await
        .ok();
    let body = alice.get(&status_path(&alice.user_id)).await.ok();
    assert_eq!(body["presence"], "online");
    assert_eq!(body["status_msg"], "Working");

    alice
        .put(
            &status_path(&alice.user_id),
            &json!({"presence": "unavailable"}),
        )
        .await
        .ok();
    let body = alice.get(&status_path(&alice.user_id)).await.ok();
    assert_eq!(body["presence"], "unavailable");
}

async fn presence_of_other_user_cannot_be_set(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    bob.put(
        &status_path(&alice.user_id),
        &json!({"presence": "offline"}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
}

async fn invalid_presence_is_400(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let (status, body) = alice
        .put(
            &status_path(&alice.user_id),
            &json!({"presence": "dancing"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

async fn presence_visible_to_room_members(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    let since = bob.sync_token().await;
    alice
        .put(
            &status_path(&alice.user_id),
            &json!({"presence": "online", "status_msg": "here"}),
        )
        .await
        .ok();
    let body = bob.get(&status_path(&alice.user_id)).await.ok();
    assert_eq!(body["presence"], "online");
    let sync = bob
        .sync_until(Some(&since), |s| {
            arr(&s["presence"]["events"]).iter().any(|e| {
                e["type"] == "m.presence"
                    && e["sender"] == alice.user_id.as_str()
                    && e["content"]["presence"] == "online"
            })
        })
        .await;
    let ev = arr(&sync["presence"]["events"])
        .into_iter()
        .find(|e| e["sender"] == alice.user_id.as_str())
        .expect("presence event");
    assert_eq!(ev["content"]["status_msg"], "here");
}

async fn presence_of_strangers_is_forbidden(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    alice
        .put(&status_path(&alice.user_id), &json!({"presence": "online"}))
        .await
        .ok();
    bob.get(&status_path(&alice.user_id))
        .await
        .expect_err(403, "M_FORBIDDEN");
}
