//! Typing notifications.

use crate::prelude::*;

backend_tests!(
    typing_start_and_stop,
    typing_times_out,
    typing_for_another_user_is_forbidden,
    typing_in_room_not_joined_is_forbidden,
);

fn typing_users(sync: &Value, room: &str) -> Option<Vec<Value>> {
    ephemeral(sync, room)
        .into_iter()
        .find(|e| e["type"] == "m.typing")
        .map(|e| arr(&e["content"]["user_ids"]))
}

async fn set_typing(c: &Client, room: &str, typing: bool, timeout: Option<u64>) -> Resp {
    let mut body = json!({"typing": typing});
    if let Some(t) = timeout {
        body["timeout"] = json!(t);
    }
    c.put(
        &format!("{V3}/rooms/{}/typing/{}", enc(room), enc(&c.user_id)),
        &body,
    )
    .await
}

async fn typing_start_and_stop(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let since = alice.sync_token().await;
    set_typing(&bob, &room, true, Some(30_000)).await.ok();
    let sync = alice
        .sync_until(Some(&since), |s| {
            typing_users(s, &room).is_some_and(|u| u.contains(&json!(bob.user_id)))
        })
        .await;
    set_typing(&bob, &room, false, None).await.ok();
    alice
        .sync_until(Some(&next_batch(&sync)), |s| {
            typing_users(s, &room).is_some_and(|u| !u.contains(&json!(bob.user_id)))
        })
        .await;
}

async fn typing_times_out(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let since = alice.sync_token().await;
    set_typing(&bob, &room, true, Some(1000)).await.ok();
    let sync = alice
        .sync_until(Some(&since), |s| {
            typing_users(s, &room).is_some_and(|u| u.contains(&json!(bob.user_id)))
        })
        .await;
    // Without a "stop", the notification expires after its timeout.
    alice
        .sync_until(Some(&next_batch(&sync)), |s| {
            typing_users(s, &room).is_some_and(|u| !u.contains(&json!(bob.user_id)))
        })
        .await;
}

async fn typing_for_another_user_is_forbidden(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    bob.put(
        &format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id)),
        &json!({"typing": true, "timeout": 10_000}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
}

async fn typing_in_room_not_joined_is_forbidden(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    set_typing(&eve, &room, true, Some(10_000))
        .await
        .expect_err(403, "M_FORBIDDEN");
}
