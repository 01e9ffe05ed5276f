//! GET /rooms/{roomId}/messages: directions, tokens, limits, filters, visibility.

use crate::prelude::*;

backend_tests!(
    paginate_backwards,
    paginate_forwards_from_the_start,
    limit_is_respected,
    filter_by_type_and_sender,
    lazy_load_members_in_messages,
    non_member_cannot_read_messages,
    history_visibility_joined_hides_earlier_messages,
    history_visibility_shared_shows_earlier_messages,
    timestamp_to_event_both_directions,
);

async fn room_with_messages(server: &Server, n: usize) -> (Client, String, Vec<String>) {
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(alice.send_text(&room, &format!("m{i}")).await);
    }
    (alice, room, ids)
}

async fn paginate_backwards(b: Backend) {
    let server = start(b).await;
    let (alice, room, ids) = room_with_messages(&server, 10).await;
    let page1 = alice.messages(&room, "dir=b&limit=5").await.ok();
    assert!(page1["start"].is_string(), "{page1}");
    let chunk = arr(&page1["chunk"]);
    assert_eq!(
        bodies(&chunk),
        vec!["m9", "m8", "m7", "m6", "m5"],
        "newest first: {page1}"
    );
    let end = page1["end"].as_str().expect("more history => end token");
    let page2 = alice
        .messages(&room, &format!("dir=b&limit=5&from={}", enc(end)))
        .await
        .ok();
    assert_eq!(
        bodies(&arr(&page2["chunk"])),
        vec!["m4", "m3", "m2", "m1", "m0"]
    );

    // Paging to the very beginning terminates and ends with the create event.
    let all = alice.all_messages_backwards(&room).await;
    let all_ids: Vec<&str> = all.iter().filter_map(|e| e["event_id"].as_str()).collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.reverse();
    let positions: Vec<usize> = expected
        .iter()
        .map(|id| {
            all_ids
                .iter()
                .position(|x| x == id)
                .unwrap_or_else(|| panic!("{id} missing from full back-pagination"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "order broken");
    assert_eq!(
        all.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create")),
        "the oldest event is the create event"
    );
    let unique: std::collections::HashSet<&str> = all_ids.iter().copied().collect();
    assert_eq!(unique.len(), all_ids.len(), "duplicates in pagination");
}

async fn paginate_forwards_from_the_start(b: Backend) {
    let server = start(b).await;
    let (alice, room, _ids) = room_with_messages(&server, 6).await;
    // Without `from`, dir=f starts at the beginning of the room.
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let mut q = "dir=f&limit=4".to_owned();
        if let Some(f) = &from {
            q.push_str(&format!("&from={}", enc(f)));
        }
        let page = alice.messages(&room, &q).await.ok();
        let chunk = arr(&page["chunk"]);
        let done = chunk.is_empty() || page["end"].is_null();
        events.extend(chunk);
        if done {
            break;
        }
        from = page["end"].as_str().map(str::to_owned);
    }
    assert_eq!(
        events.first().map(|e| e["type"].clone()),
        Some(json!("m.room.create")),
        "forward pagination starts at the create event"
    );
    assert_eq!(bodies(&events), vec!["m0", "m1", "m2", "m3", "m4", "m5"]);
}

async fn limit_is_respected(b: Backend) {
    let server = start(b).await;
    let (alice, room, _) = room_with_messages(&server, 5).await;
    for limit in [1, 3] {
        let page = alice
            .messages(&room, &format!("dir=b&limit={limit}"))
            .await
            .ok();
        assert_eq!(arr(&page["chunk"]).len(), limit, "{page}");
    }
}

async fn filter_by_type_and_sender(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    alice.send_text(&room, "from alice").await;
    bob.send_text(&room, "from bob").await;
    alice
        .send_event(&room, "com.example.other", &json!({"x": 1}))
        .await;

    let filter = json!({"types": ["m.room.message"]}).to_string();
    let page = bob
        .messages(&room, &format!("dir=b&limit=50&filter={}", enc(&filter)))
        .await
        .ok();
    let chunk = arr(&page["chunk"]);
    assert!(!chunk.is_empty());
    assert!(
        chunk.iter().all(|e| e["type"] == "m.room.message"),
        "{page}"
    );
    assert_eq!(bodies(&chunk), vec!["from bob", "from alice"]);

    let filter = json!({"senders": [alice.user_id], "not_types": ["m.room.member"]}).to_string();
    let page = bob
        .messages(&room, &format!("dir=b&limit=50&filter={}", enc(&filter)))
        .await
        .ok();
    let chunk = arr(&page["chunk"]);
    assert!(
        chunk.iter().all(|e| e["sender"] == alice.user_id.as_str()),
        "{page}"
    );
    assert!(chunk.iter().all(|e| e["type"] != "m.room.member"), "{page}");
    assert!(
        chunk.iter().any(|e| e["type"] == "com.example.other"),
        "{page}"
    );
}

async fn lazy_load_members_in_messages(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    alice.send_text(&room, "one").await;
    alice.send_text(&room, "two").await;
    let filter = json!({"lazy_load_members": true}).to_string();
    let page = bob
        .messages(&room, &format!("dir=b&limit=2&filter={}", enc(&filter)))
        .await
        .ok();
    assert_eq!(bodies(&arr(&page["chunk"])), vec!["two", "one"]);
    let state = arr(&page["state"]);
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.user_id.as_str()),
        "sender's membership not included with lazy_load_members: {page}"
    );
}

async fn non_member_cannot_read_messages(b: Backend) {
    let server = start(b).await;
    let (_alice, room, _) = room_with_messages(&server, 2).await;
    let eve = server.register("eve").await;
    eve.messages(&room, "dir=b&limit=10")
        .await
        .expect_err(403, "M_FORBIDDEN");
}

async fn visibility_case(b: Backend, visibility: &str) -> Vec<String> {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({
            "preset": "private_chat",
            "initial_state": [{
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": visibility},
            }],
        }))
        .await;
    alice.send_text(&room, "before invite").await;
    alice.invite(&room, &bob.user_id).await.ok();
    bob.join(&room).await;
    alice.send_text(&room, "after join").await;
    let all = bob.all_messages_backwards(&room).await;
    bodies(&all)
}

async fn history_visibility_joined_hides_earlier_messages(b: Backend) {
    let seen = visibility_case(b, "joined").await;
    assert!(seen.contains(&"after join".to_owned()), "{seen:?}");
    assert!(
        !seen.contains(&"before invite".to_owned()),
        "history_visibility=joined leaked an earlier message: {seen:?}"
    );
}

async fn history_visibility_shared_shows_earlier_messages(b: Backend) {
    let seen = visibility_case(b, "shared").await;
    assert!(seen.contains(&"after join".to_owned()), "{seen:?}");
    assert!(seen.contains(&"before invite".to_owned()), "{seen:?}");
}

async fn timestamp_to_event_both_directions(b: Backend) {
    let server = start(b).await;
    let (alice, room, ids) = room_with_messages(&server, 5).await;
    let ts_of = async |id: &str| {
        alice.event(&room, id).await.ok()["origin_server_ts"]
            .as_i64()
            .expect("origin_server_ts")
    };
    let jump = async |c: &Client, ts: i64, dir: &str| {
        c.get(&format!(
            "{V1}/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}",
            enc(&room)
        ))
        .await
    };
    let first_ts = ts_of(&ids[0]).await;
    let last_ts = ts_of(&ids[4]).await;
    // Backwards from far in the future: the newest event.
    let newest = jump(&alice, last_ts + 3_600_000, "b").await.ok();
    assert_eq!(newest["event_id"], ids[4].as_str(), "{newest}");
    assert_eq!(newest["origin_server_ts"], last_ts);
    // Forwards from an event's own time: an event of that time (or that one).
    let at = jump(&alice, first_ts, "f").await.ok();
    assert_eq!(at["origin_server_ts"], first_ts, "{at}");
    // Forwards from the distant past: the room's first event, its creation.
    let start_ev = jump(&alice, 0, "f").await.ok();
    let create = alice
        .event(&room, start_ev["event_id"].as_str().expect("event_id"))
        .await
        .ok();
    assert_eq!(create["type"], "m.room.create", "{create}");
    // Nothing in the direction asked.
    jump(&alice, last_ts + 3_600_000, "f")
        .await
        .expect_err(404, "M_NOT_FOUND");
    jump(&alice, 1, "b").await.expect_err(404, "M_NOT_FOUND");
    // Only for those who may read the room, and with valid parameters.
    let bob = server.register("bob").await;
    jump(&bob, 0, "f").await.expect_err(403, "M_FORBIDDEN");
    alice
        .get(&format!(
            "{V1}/rooms/{}/timestamp_to_event?ts=1&dir=sideways",
            enc(&room)
        ))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .get(&format!(
            "{V1}/rooms/{}/timestamp_to_event?dir=f",
            enc(&room)
        ))
        .await
        .expect_err(400, "M_MISSING_PARAM");
}
