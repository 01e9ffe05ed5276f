//! Sending events: transaction ids, size limits, event by id, redaction, /context.

use crate::prelude::*;

backend_tests!(
    send_and_get_event,
    transaction_id_is_idempotent,
    transaction_ids_are_scoped_to_the_session,
    event_too_large_is_413,
    unknown_event_is_404,
    redact_own_message,
    redact_others_message_needs_power,
    event_context,
    context_limit_applies_to_both_sides,
);

async fn send_and_get_event(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let content = json!({"msgtype": "m.text", "body": "hello", "com.example.extra": [1, 2]});
    let event_id = alice.send_event(&room, "m.room.message", &content).await;
    assert!(event_id.starts_with('$'), "{event_id}");
    let ev = alice.event(&room, &event_id).await.ok();
    assert_eq!(ev["event_id"], event_id.as_str());
    assert_eq!(ev["room_id"], room.as_str());
    assert_eq!(ev["type"], "m.room.message");
    assert_eq!(ev["sender"], alice.user_id.as_str());
    assert_eq!(ev["content"], content);
    assert!(ev["origin_server_ts"].is_u64(), "{ev}");
    assert!(
        ev["state_key"].is_null(),
        "message events have no state_key: {ev}"
    );

    // Custom event types go through too.
    let custom = alice
        .send_event(&room, "com.example.ping", &json!({"n": 7}))
        .await;
    let ev = alice.event(&room, &custom).await.ok();
    assert_eq!(ev["type"], "com.example.ping");
    assert_eq!(ev["content"]["n"], 7);
}

async fn transaction_id_is_idempotent(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let path = format!("{V3}/rooms/{}/send/m.room.message/txn-fixed-1", enc(&room));
    let content = json!({"msgtype": "m.text", "body": "only once"});
    let first = alice.put(&path, &content).await.ok();
    let second = alice.put(&path, &content).await.ok();
    assert_eq!(first["event_id"], second["event_id"]);
    let other = alice
        .put(
            &format!("{V3}/rooms/{}/send/m.room.message/txn-fixed-2", enc(&room)),
            &content,
        )
        .await
        .ok();
    assert_ne!(first["event_id"], other["event_id"]);

    let all = alice.all_messages_backwards(&room).await;
    let copies = all
        .iter()
        .filter(|e| e["event_id"] == first["event_id"])
        .count();
    assert_eq!(copies, 1);
    let same_body = bodies(&all)
        .iter()
        .filter(|b| b.as_str() == "only once")
        .count();
    assert_eq!(same_body, 2, "exactly two distinct sends");
}

async fn transaction_ids_are_scoped_to_the_session(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let other_session = alice.login_again().await;
    let room = alice.create_room(json!({})).await;
    let path = format!("{V3}/rooms/{}/send/m.room.message/shared-txn", enc(&room));
    let content = json!({"msgtype": "m.text", "body": "x"});
    let a = alice.put(&path, &content).await.ok();
    let b2 = other_session.put(&path, &content).await.ok();
    assert_ne!(
        a["event_id"], b2["event_id"],
        "the same txn id from another session is a new request"
    );
}

async fn event_too_large_is_413(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let big = "x".repeat(70_000);
    let resp = alice
        .try_send_event(
            &room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": big}),
        )
        .await
        .expect("transport");
    resp.expect_err(413, "M_TOO_LARGE");
    alice
        .put_state(&room, "com.example.big", "k", &json!({"blob": big}))
        .await
        .expect_err(413, "M_TOO_LARGE");
    // Normal-sized events still work afterwards.
    alice.send_text(&room, "small").await;
}

async fn unknown_event_is_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice
        .event(&room, "$doesnotexistatall")
        .await
        .expect_err(404, "M_NOT_FOUND");
}

fn redacts_of(ev: &Value) -> Value {
    // Room v11+ carry `redacts` in content; older versions at the top level.
    if ev["content"]["redacts"].is_string() {
        ev["content"]["redacts"].clone()
    } else {
        ev["redacts"].clone()
    }
}

async fn redact_own_message(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let target = alice
        .send_event(
            &room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "oops", "format": "x"}),
        )
        .await;
    let resp = alice
        .put(
            &format!(
                "{V3}/rooms/{}/redact/{}/{}",
                enc(&room),
                enc(&target),
                alice.next_txn()
            ),
            &json!({"reason": "typo"}),
        )
        .await
        .ok();
    let redaction_id = resp["event_id"].as_str().expect("event_id").to_owned();

    let ev = bob.event(&room, &target).await.ok();
    assert_eq!(ev["type"], "m.room.message");
    assert_eq!(ev["content"], json!({}), "content not stripped: {ev}");

    let red = bob.event(&room, &redaction_id).await.ok();
    assert_eq!(red["type"], "m.room.redaction");
    assert_eq!(redacts_of(&red), json!(target), "{red}");
    assert_eq!(red["content"]["reason"], "typo");

    // /messages shows the redacted version too.
    let msgs = bob.messages(&room, "dir=b&limit=20").await.ok();
    let in_messages = arr(&msgs["chunk"])
        .into_iter()
        .find(|e| e["event_id"] == target.as_str())
        .unwrap_or_else(|| panic!("redacted event missing from /messages: {msgs}"));
    assert_eq!(in_messages["content"], json!({}));
}

async fn redact_others_message_needs_power(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let target = alice.send_text(&room, "alice's words").await;
    bob.put(
        &format!(
            "{V3}/rooms/{}/redact/{}/{}",
            enc(&room),
            enc(&target),
            bob.next_txn()
        ),
        &json!({}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
    let ev = alice.event(&room, &target).await.ok();
    assert_eq!(ev["content"]["body"], "alice's words");

    // Bob may redact his own message; alice (PL 100) may redact bob's.
    let own = bob.send_text(&room, "bob's words").await;
    bob.put(
        &format!(
            "{V3}/rooms/{}/redact/{}/{}",
            enc(&room),
            enc(&own),
            bob.next_txn()
        ),
        &json!({}),
    )
    .await
    .ok();
    let other = bob.send_text(&room, "more of bob's words").await;
    alice
        .put(
            &format!(
                "{V3}/rooms/{}/redact/{}/{}",
                enc(&room),
                enc(&other),
                alice.next_txn()
            ),
            &json!({}),
        )
        .await
        .ok();
    for id in [own, other] {
        let ev = alice.event(&room, &id).await.ok();
        assert_eq!(ev["content"], json!({}), "{ev}");
    }
}

async fn event_context(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({"name": "Ctx"})).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(alice.send_text(&room, &format!("m{i}")).await);
    }
    let body = alice
        .get(&format!(
            "{V3}/rooms/{}/context/{}?limit=10",
            enc(&room),
            enc(&ids[2])
        ))
        .await
        .ok();
    assert_eq!(body["event"]["event_id"], ids[2].as_str());
    let before = arr(&body["events_before"]);
    let after = arr(&body["events_after"]);
    // events_before is reverse-chronological, events_after chronological.
    assert_eq!(
        before.first().map(|e| e["event_id"].clone()),
        Some(json!(ids[1])),
        "{body}"
    );
    assert!(
        before.len() >= 2 && before[1]["event_id"] == ids[0].as_str(),
        "{body}"
    );
    assert_eq!(
        after
            .iter()
            .map(|e| e["event_id"].clone())
            .collect::<Vec<_>>(),
        vec![json!(ids[3]), json!(ids[4])],
        "{body}"
    );
    assert!(
        body["start"].is_string() && body["end"].is_string(),
        "{body}"
    );
    let state = arr(&body["state"]);
    assert!(
        state.iter().any(|e| e["type"] == "m.room.name") || state.is_empty(),
        "{body}"
    );
    // The start token can be used to paginate further back.
    let start_token = body["start"].as_str().expect("start");
    let older = alice
        .messages(&room, &format!("dir=b&limit=50&from={}", enc(start_token)))
        .await
        .ok();
    let older_ids: Vec<Value> = arr(&older["chunk"])
        .iter()
        .map(|e| e["event_id"].clone())
        .collect();
    for later in &ids[2..] {
        assert!(
            !older_ids.contains(&json!(later)),
            "paginating back from `start` returned {later}: {older}"
        );
    }
}

async fn context_limit_applies_to_both_sides(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(alice.send_text(&room, &format!("m{i}")).await);
    }
    let body = alice
        .get(&format!(
            "{V3}/rooms/{}/context/{}?limit=4",
            enc(&room),
            enc(&ids[4])
        ))
        .await
        .ok();
    let n = arr(&body["events_before"]).len() + arr(&body["events_after"]).len();
    assert!(
        n <= 4,
        "limit is for before+after combined, got {n}: {body}"
    );
    assert!(n > 0, "{body}");
}
