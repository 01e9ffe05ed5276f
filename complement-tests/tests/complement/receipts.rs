//! Receipts (m.read, m.read.private, threaded) and read markers.

use crate::prelude::*;

backend_tests!(
    public_read_receipt,
    private_read_receipt_is_only_visible_to_self,
    threaded_receipts,
    unknown_receipt_type_is_400,
    read_markers,
);

fn receipt_for(sync: &Value, room: &str, event_id: &str, ty: &str, user: &str) -> Option<Value> {
    ephemeral(sync, room)
        .into_iter()
        .filter(|e| e["type"] == "m.receipt")
        .map(|e| e["content"][event_id][ty][user].clone())
        .find(|r| !r.is_null())
}

async fn post_receipt(c: &Client, room: &str, ty: &str, event_id: &str, body: Value) -> Resp {
    c.post(
        &format!("{V3}/rooms/{}/receipt/{}/{}", enc(room), ty, enc(event_id)),
        &body,
    )
    .await
}

async fn public_read_receipt(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let eid = alice.send_text(&room, "hello").await;
    let since = alice.sync_token().await;
    post_receipt(&bob, &room, "m.read", &eid, json!({}))
        .await
        .ok();
    let sync = alice
        .sync_until(Some(&since), |s| {
            receipt_for(s, &room, &eid, "m.read", &bob.user_id).is_some()
        })
        .await;
    let r = receipt_for(&sync, &room, &eid, "m.read", &bob.user_id).expect("receipt");
    assert!(r["ts"].is_u64(), "{r}");
    // Receipts are part of the initial sync too.
    let initial = alice.sync(None, 0).await;
    assert!(
        receipt_for(&initial, &room, &eid, "m.read", &bob.user_id).is_some(),
        "{initial}"
    );
}

async fn private_read_receipt_is_only_visible_to_self(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let e1 = alice.send_text(&room, "one").await;
    let e2 = alice.send_text(&room, "two").await;
    let alice_since = alice.sync_token().await;
    let bob_since = bob.sync_token().await;

    post_receipt(&bob, &room, "m.read.private", &e1, json!({}))
        .await
        .ok();
    // Bob sees his own private receipt.
    bob.sync_until(Some(&bob_since), |s| {
        receipt_for(s, &room, &e1, "m.read.private", &bob.user_id).is_some()
    })
    .await;

    // Alice never sees it: wait for a later public receipt, checking every response on the way.
    post_receipt(&bob, &room, "m.read", &e2, json!({}))
        .await
        .ok();
    let seen = alice
        .sync_collect_until(Some(&alice_since), None, |s| {
            receipt_for(s, &room, &e2, "m.read", &bob.user_id).is_some()
        })
        .await;
    for s in &seen {
        assert!(
            receipt_for(s, &room, &e1, "m.read.private", &bob.user_id).is_none(),
            "private receipt leaked to another user: {s}"
        );
    }
    let initial = alice.sync(None, 0).await;
    assert!(
        receipt_for(&initial, &room, &e1, "m.read.private", &bob.user_id).is_none(),
        "{initial}"
    );
}

async fn threaded_receipts(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let root = alice.send_text(&room, "thread root").await;
    let reply = alice
        .send_event(
            &room,
            "m.room.message",
            &json!({
                "msgtype": "m.text",
                "body": "in thread",
                "m.relates_to": {"rel_type": "m.thread", "event_id": root},
            }),
        )
        .await;
    let since = alice.sync_token().await;
    post_receipt(&bob, &room, "m.read", &reply, json!({"thread_id": root}))
        .await
        .ok();
    post_receipt(&bob, &room, "m.read", &root, json!({"thread_id": "main"}))
        .await
        .ok();
    let got_thread = std::cell::Cell::new(false);
    let got_main = std::cell::Cell::new(false);
    alice
        .sync_until(Some(&since), |s| {
            if let Some(r) = receipt_for(s, &room, &reply, "m.read", &bob.user_id) {
                assert_eq!(r["thread_id"], root.as_str(), "{s}");
                got_thread.set(true);
            }
            if let Some(r) = receipt_for(s, &room, &root, "m.read", &bob.user_id) {
                assert_eq!(r["thread_id"], "main", "{s}");
                got_main.set(true);
            }
            got_thread.get() && got_main.get()
        })
        .await;
}

async fn unknown_receipt_type_is_400(b: Backend) {
    let server = start(b).await;
    let (alice, _bob, room) = public_room_with_two(&server).await;
    let eid = alice.send_text(&room, "x").await;
    let (status, body) = post_receipt(&alice, &room, "com.example.bogus", &eid, json!({})).await;
    assert_eq!(status, 400, "{body}");
}

async fn read_markers(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let eid = alice.send_text(&room, "mark me").await;
    let since = alice.sync_token().await;
    bob.post(
        &format!("{V3}/rooms/{}/read_markers", enc(&room)),
        &json!({"m.fully_read": eid, "m.read": eid}),
    )
    .await
    .ok();
    let fully_read = bob
        .get(&format!(
            "{V3}/user/{}/rooms/{}/account_data/m.fully_read",
            enc(&bob.user_id),
            enc(&room)
        ))
        .await
        .ok();
    assert_eq!(fully_read["event_id"], eid.as_str());
    // The fully-read marker is in bob's room account data in sync ...
    let sync = bob.sync(None, 0).await;
    let marker = arr(&sync["rooms"]["join"][room.as_str()]["account_data"]["events"])
        .into_iter()
        .find(|e| e["type"] == "m.fully_read")
        .unwrap_or_else(|| panic!("no m.fully_read in sync: {sync}"));
    assert_eq!(marker["content"]["event_id"], eid.as_str());
    // ... and the m.read part is a normal public receipt.
    alice
        .sync_until(Some(&since), |s| {
            receipt_for(s, &room, &eid, "m.read", &bob.user_id).is_some()
        })
        .await;
}
