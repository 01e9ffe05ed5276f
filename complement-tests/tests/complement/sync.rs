//! GET /sync: initial and incremental sync, long-polling, filters, lazy-loading, limited
//! timelines, invite/leave sections, account data, ephemeral events, to-device, device lists,
//! one-time key counts and unread notification counts.

use crate::prelude::*;

backend_tests!(
    initial_sync,
    incremental_sync,
    long_poll_wakes_on_new_event,
    long_poll_times_out_when_idle,
    full_state,
    inline_filter_timeline_limit,
    filter_id,
    filter_timeline_types,
    lazy_load_members,
    limited_timeline_prev_batch_works_with_messages,
    invite_section,
    leave_section,
    join_appears_in_incremental_sync,
    account_data_in_sync,
    typing_in_sync,
    receipts_in_sync,
    to_device_in_sync,
    device_lists_changed,
    one_time_key_counts,
    unread_notification_counts,
    unread_counts_of_many_rooms_in_one_initial_sync,
);

fn room_events(sync: &Value, room: &str) -> Vec<Value> {
    let mut all = sync_state(sync, room);
    all.extend(timeline(sync, room));
    all
}

async fn initial_sync(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({"name": "Initial"})).await;
    let eid = alice.send_text(&room, "hello").await;
    let sync = alice.sync(None, 0).await;
    assert!(sync["next_batch"].is_string());
    let tl = timeline(&sync, &room);
    assert!(
        has_event(&tl, &eid),
        "message missing from initial sync: {sync}"
    );
    let all = room_events(&sync, &room);
    for ty in ["m.room.create", "m.room.name", "m.room.power_levels"] {
        assert!(
            all.iter().any(|e| e["type"] == ty),
            "{ty} missing from initial sync state+timeline: {sync}"
        );
    }
    let ev = tl
        .iter()
        .find(|e| e["event_id"] == eid.as_str())
        .expect("event");
    assert_eq!(ev["sender"], alice.user_id.as_str());
    assert_eq!(ev["content"]["body"], "hello");
    assert!(ev["origin_server_ts"].is_u64());
}

async fn incremental_sync(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let first = alice.send_text(&room, "first").await;
    let since = alice.sync_token().await;
    let second = alice.send_text(&room, "second").await;
    let sync = alice
        .sync_until(Some(&since), |s| has_event(&timeline(s, &room), &second))
        .await;
    let tl = timeline(&sync, &room);
    assert!(
        !has_event(&tl, &first),
        "old event repeated in incremental sync: {sync}"
    );
    assert_ne!(next_batch(&sync), since);

    // Nothing new: a short long-poll returns no timeline events for the room.
    let quiet = alice.sync(Some(&next_batch(&sync)), 200).await;
    assert!(timeline(&quiet, &room).is_empty(), "{quiet}");
}

async fn long_poll_wakes_on_new_event(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let since = alice.sync_token().await;
    let poller = {
        let alice = alice.clone();
        let since = since.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let sync = alice.sync(Some(&since), 20_000).await;
            (sync, started.elapsed())
        })
    };
    // Give the long-poll a moment to be parked on the server before the event arrives; the
    // assertion below does not depend on this delay.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let eid = bob.send_text(&room, "wake up").await;
    let (sync, elapsed) = tokio::time::timeout(Duration::from_secs(25), poller)
        .await
        .expect("long-poll did not return")
        .expect("poller task");
    let mut sync = sync;
    // The wake-up may be caused by an earlier event (e.g. bob's join settling); follow on.
    if !has_event(&timeline(&sync, &room), &eid) {
        sync = alice
            .sync_until(Some(&next_batch(&sync)), |s| {
                has_event(&timeline(s, &room), &eid)
            })
            .await;
    }
    assert!(has_event(&timeline(&sync, &room), &eid));
    assert!(
        elapsed < Duration::from_secs(10),
        "long-poll took {elapsed:?} to deliver a new event (timeout was 20 s)"
    );
}

async fn long_poll_times_out_when_idle(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice.create_room(json!({})).await;
    let since = alice.sync_token().await;
    let started = Instant::now();
    let sync = alice.sync(Some(&since), 1000).await;
    let elapsed = started.elapsed();
    assert!(sync["next_batch"].is_string());
    assert!(
        elapsed < Duration::from_secs(10),
        "idle long-poll with timeout=1000 took {elapsed:?}"
    );
}

async fn full_state(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({"name": "Full"})).await;
    alice.send_text(&room, "x").await;
    let since = alice.sync_token().await;
    let body = alice
        .sync_raw(&format!("since={}&full_state=true&timeout=0", enc(&since)))
        .await
        .ok();
    let all = room_events(&body, &room);
    for ty in [
        "m.room.create",
        "m.room.name",
        "m.room.member",
        "m.room.power_levels",
    ] {
        assert!(
            all.iter().any(|e| e["type"] == ty),
            "full_state=true lacks {ty}: {body}"
        );
    }
}

async fn inline_filter_timeline_limit(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..5 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let filter = json!({"room": {"timeline": {"limit": 2}}}).to_string();
    let sync = alice.sync_filtered(None, Some(&filter), 0).await;
    let tl = timeline(&sync, &room);
    assert_eq!(bodies(&tl), vec!["m3", "m4"], "{sync}");
    assert_eq!(tl.len(), 2);
    assert_eq!(
        sync["rooms"]["join"][room.as_str()]["timeline"]["limited"],
        true
    );
    assert!(sync["rooms"]["join"][room.as_str()]["timeline"]["prev_batch"].is_string());
}

async fn filter_id(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..3 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let created = alice
        .post(
            &format!("{V3}/user/{}/filter", enc(&alice.user_id)),
            &json!({"room": {"timeline": {"limit": 1}}}),
        )
        .await
        .ok();
    let id = created["filter_id"].as_str().expect("filter_id").to_owned();
    let sync = alice.sync_filtered(None, Some(&id), 0).await;
    assert_eq!(bodies(&timeline(&sync, &room)), vec!["m2"], "{sync}");
}

async fn filter_timeline_types(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice.send_text(&room, "text").await;
    alice
        .send_event(&room, "com.example.noise", &json!({}))
        .await;
    let filter = json!({"room": {"timeline": {"types": ["m.room.message"]}}}).to_string();
    let sync = alice.sync_filtered(None, Some(&filter), 0).await;
    let tl = timeline(&sync, &room);
    assert!(!tl.is_empty(), "{sync}");
    assert!(tl.iter().all(|e| e["type"] == "m.room.message"), "{sync}");

    let filter = json!({"room": {"rooms": []}}).to_string();
    let sync = alice.sync_filtered(None, Some(&filter), 0).await;
    assert!(
        sync["rooms"]["join"][room.as_str()].is_null(),
        "rooms: [] must exclude every room: {sync}"
    );
}

async fn lazy_load_members(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let carol = server.register("carol").await;
    carol.join(&room).await;
    alice.send_text(&room, "one").await;
    alice.send_text(&room, "two").await;

    let lazy = json!({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": true}}})
        .to_string();
    let sync = bob.sync_filtered(None, Some(&lazy), 0).await;
    assert_eq!(bodies(&timeline(&sync, &room)), vec!["two"], "{sync}");
    let members: Vec<Value> = room_events(&sync, &room)
        .into_iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].clone())
        .collect();
    assert!(
        members.contains(&json!(alice.user_id)),
        "the timeline sender's membership is required: {sync}"
    );
    assert!(
        !members.contains(&json!(carol.user_id)),
        "lazy loading must omit members irrelevant to the timeline: {sync}"
    );

    // Without lazy loading the full membership is present.
    let eager = json!({"room": {"timeline": {"limit": 1}}}).to_string();
    let sync = bob.sync_filtered(None, Some(&eager), 0).await;
    let members: Vec<Value> = room_events(&sync, &room)
        .into_iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].clone())
        .collect();
    for u in [&alice.user_id, &bob.user_id, &carol.user_id] {
        assert!(
            members.contains(&json!(u)),
            "{u} missing without lazy loading: {sync}"
        );
    }
}

async fn limited_timeline_prev_batch_works_with_messages(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..10 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let filter = json!({"room": {"timeline": {"limit": 3}}}).to_string();
    let sync = alice.sync_filtered(None, Some(&filter), 0).await;
    let joined = &sync["rooms"]["join"][room.as_str()];
    assert_eq!(bodies(&timeline(&sync, &room)), vec!["m7", "m8", "m9"]);
    assert_eq!(joined["timeline"]["limited"], true);
    let prev = joined["timeline"]["prev_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("limited timeline without prev_batch: {sync}"));
    let page = alice
        .messages(&room, &format!("dir=b&limit=3&from={}", enc(prev)))
        .await
        .ok();
    assert_eq!(
        bodies(&arr(&page["chunk"])),
        vec!["m6", "m5", "m4"],
        "prev_batch must continue right before the timeline: {page}"
    );

    // An incremental sync with a gap is limited as well.
    let since = next_batch(&sync);
    for i in 10..16 {
        alice.send_text(&room, &format!("m{i}")).await;
    }
    let sync = alice
        .sync_until_filtered(Some(&since), Some(&filter), |s| {
            bodies(&timeline(s, &room)).contains(&"m15".to_owned())
        })
        .await;
    let tl = bodies(&timeline(&sync, &room));
    if tl.len() == 3 {
        assert_eq!(tl, vec!["m13", "m14", "m15"]);
        assert_eq!(
            sync["rooms"]["join"][room.as_str()]["timeline"]["limited"],
            true
        );
    }
}

async fn invite_section(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "name": "Invited"}))
        .await;
    let since = bob.sync_token().await;
    alice.invite(&room, &bob.user_id).await.ok();
    let sync = bob
        .sync_until(Some(&since), |s| {
            !s["rooms"]["invite"][room.as_str()].is_null()
        })
        .await;
    let stripped = arr(&sync["rooms"]["invite"][room.as_str()]["invite_state"]["events"]);
    let me = stripped
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap_or_else(|| panic!("own invite member event missing: {sync}"));
    assert_eq!(me["content"]["membership"], "invite");
    assert_eq!(me["sender"], alice.user_id.as_str());
    assert!(
        stripped
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Invited"),
        "stripped state should carry the room name: {sync}"
    );
    assert!(sync["rooms"]["join"][room.as_str()].is_null());

    // After joining, the room moves to `join`.
    bob.join(&room).await;
    bob.sync_until(Some(&next_batch(&sync)), |s| {
        !s["rooms"]["join"][room.as_str()].is_null()
    })
    .await;
}

async fn leave_section(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let since = bob.sync_token().await;
    bob.leave(&room).await.ok();
    let sync = bob
        .sync_until(Some(&since), |s| {
            !s["rooms"]["leave"][room.as_str()].is_null()
        })
        .await;
    assert!(sync["rooms"]["join"][room.as_str()].is_null(), "{sync}");
    let tl = arr(&sync["rooms"]["leave"][room.as_str()]["timeline"]["events"]);
    assert!(
        tl.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "leave"),
        "own leave event missing: {sync}"
    );
    // Messages after leaving are not delivered.
    let after = next_batch(&sync);
    alice.send_text(&room, "bob can't see this").await;
    let quiet = bob.sync(Some(&after), 500).await;
    assert!(
        quiet["rooms"]["join"][room.as_str()].is_null()
            && arr(&quiet["rooms"]["leave"][room.as_str()]["timeline"]["events"]).is_empty(),
        "{quiet}"
    );
}

async fn join_appears_in_incremental_sync(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "Joinable"}))
        .await;
    alice.send_text(&room, "before bob").await;
    let since = bob.sync_token().await;
    bob.join(&room).await;
    let sync = bob
        .sync_until(Some(&since), |s| {
            !s["rooms"]["join"][room.as_str()].is_null()
        })
        .await;
    let all = room_events(&sync, &room);
    assert!(
        all.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "join"),
        "{sync}"
    );
}

async fn account_data_in_sync(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let since = alice.sync_token().await;
    alice
        .put(
            &format!(
                "{V3}/user/{}/account_data/com.example.global",
                enc(&alice.user_id)
            ),
            &json!({"theme": "dark"}),
        )
        .await
        .ok();
    alice
        .put(
            &format!(
                "{V3}/user/{}/rooms/{}/account_data/com.example.room",
                enc(&alice.user_id),
                enc(&room)
            ),
            &json!({"pinned": true}),
        )
        .await
        .ok();
    let global = |s: &Value| {
        arr(&s["account_data"]["events"])
            .into_iter()
            .find(|e| e["type"] == "com.example.global")
    };
    let per_room = |s: &Value| {
        arr(&s["rooms"]["join"][room.as_str()]["account_data"]["events"])
            .into_iter()
            .find(|e| e["type"] == "com.example.room")
    };
    // Incremental sync delivers both (possibly in different responses).
    let seen_global = std::cell::Cell::new(false);
    let seen_room = std::cell::Cell::new(false);
    alice
        .sync_until(Some(&since), |s| {
            if let Some(e) = global(s) {
                assert_eq!(e["content"], json!({"theme": "dark"}), "{s}");
                seen_global.set(true);
            }
            if let Some(e) = per_room(s) {
                assert_eq!(e["content"], json!({"pinned": true}), "{s}");
                seen_room.set(true);
            }
            seen_global.get() && seen_room.get()
        })
        .await;
    // Initial sync carries both.
    let sync = alice.sync(None, 0).await;
    assert_eq!(
        global(&sync).map(|e| e["content"].clone()),
        Some(json!({"theme": "dark"})),
        "{sync}"
    );
    assert_eq!(
        per_room(&sync).map(|e| e["content"].clone()),
        Some(json!({"pinned": true})),
        "{sync}"
    );
}

async fn typing_in_sync(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let since = alice.sync_token().await;
    bob.put(
        &format!("{V3}/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id)),
        &json!({"typing": true, "timeout": 30000}),
    )
    .await
    .ok();
    alice
        .sync_until(Some(&since), |s| {
            ephemeral(s, &room).iter().any(|e| {
                e["type"] == "m.typing"
                    && arr(&e["content"]["user_ids"]).contains(&json!(bob.user_id))
            })
        })
        .await;
}

async fn receipts_in_sync(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let eid = alice.send_text(&room, "read me").await;
    let since = alice.sync_token().await;
    bob.post(
        &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&eid)),
        &json!({}),
    )
    .await
    .ok();
    let sync = alice
        .sync_until(Some(&since), |s| {
            ephemeral(s, &room).iter().any(|e| {
                e["type"] == "m.receipt"
                    && !e["content"][eid.as_str()]["m.read"][bob.user_id.as_str()].is_null()
            })
        })
        .await;
    let receipt = ephemeral(&sync, &room)
        .into_iter()
        .find(|e| e["type"] == "m.receipt")
        .expect("receipt");
    assert!(
        receipt["content"][eid.as_str()]["m.read"][bob.user_id.as_str()]["ts"].is_u64(),
        "{receipt}"
    );
}

async fn to_device_in_sync(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let since = bob.sync_token().await;
    alice
        .put(
            &format!("{V3}/sendToDevice/com.example.ping/{}", alice.next_txn()),
            &json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"n": 1}}}}),
        )
        .await
        .ok();
    let find = |s: &Value| {
        arr(&s["to_device"]["events"])
            .into_iter()
            .find(|e| e["type"] == "com.example.ping")
    };
    let sync = bob.sync_until(Some(&since), |s| find(s).is_some()).await;
    let ev = find(&sync).expect("to-device event");
    assert_eq!(ev["sender"], alice.user_id.as_str());
    assert_eq!(ev["content"], json!({"n": 1}));
    // Acknowledged by using next_batch: not delivered again.
    let again = bob.sync(Some(&next_batch(&sync)), 300).await;
    assert!(
        find(&again).is_none(),
        "to-device message redelivered: {again}"
    );
}

async fn device_lists_changed(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    let since = alice.sync_token().await;
    let bob2 = bob.login_again().await;
    let keys = crypto::DeviceKeys::new(&bob2.user_id, &bob2.device_id);
    bob2.post(
        &format!("{V3}/keys/upload"),
        &json!({"device_keys": keys.device_keys}),
    )
    .await
    .ok();
    alice
        .sync_until(Some(&since), |s| {
            arr(&s["device_lists"]["changed"]).contains(&json!(bob.user_id))
        })
        .await;
}

async fn one_time_key_counts(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let keys = crypto::DeviceKeys::new(&alice.user_id, &alice.device_id);
    let otks = keys.one_time_keys(&alice.user_id, &alice.device_id, "A", 3);
    let resp = alice
        .post(
            &format!("{V3}/keys/upload"),
            &json!({"device_keys": keys.device_keys, "one_time_keys": otks}),
        )
        .await
        .ok();
    assert_eq!(
        resp["one_time_key_counts"]["signed_curve25519"], 3,
        "{resp}"
    );
    alice
        .sync_until(None, |s| {
            s["device_one_time_keys_count"]["signed_curve25519"] == 3
        })
        .await;
}

async fn unread_notification_counts(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let since = bob.sync_token().await;
    alice.send_text(&room, "ping 1").await;
    let last = alice.send_text(&room, "ping 2").await;
    let count = |s: &Value| {
        s["rooms"]["join"][room.as_str()]["unread_notifications"]["notification_count"].as_u64()
    };
    let sync = bob
        .sync_until(Some(&since), |s| count(s).is_some_and(|n| n >= 2))
        .await;
    assert_eq!(count(&sync), Some(2), "{sync}");
    bob.post(
        &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&room), enc(&last)),
        &json!({}),
    )
    .await
    .ok();
    bob.sync_until(Some(&next_batch(&sync)), |s| count(s) == Some(0))
        .await;
}

/// The first sync of a user in several rooms counts each room's unread events on its own:
/// messages by others count, their own do not, a mention highlights, a read receipt resets
/// the count of that room only.
async fn unread_counts_of_many_rooms_in_one_initial_sync(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut rooms = Vec::new();
    for i in 0..5 {
        let room = alice
            .create_room(json!({"preset": "public_chat", "name": format!("room {i}")}))
            .await;
        bob.join(&room).await;
        rooms.push(room);
    }
    let mut last = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        // Room i gets i messages from alice and one from bob himself.
        let mut newest = None;
        for n in 0..i {
            newest = Some(alice.send_text(room, &format!("message {n}")).await);
        }
        bob.send_text(room, "my own").await;
        last.push(newest);
    }
    let mention = alice
        .send_event(
            &rooms[4],
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "hey bob",
                    "m.mentions": {"user_ids": [bob.user_id.clone()]}}),
        )
        .await;
    if let Some(read) = &last[2] {
        bob.post(
            &format!("{V3}/rooms/{}/receipt/m.read/{}", enc(&rooms[2]), enc(read)),
            &json!({}),
        )
        .await
        .ok();
    }
    let sync = bob.sync(None, 0).await;
    let counts = |room: &str| {
        let u = &sync["rooms"]["join"][room]["unread_notifications"];
        (
            u["notification_count"].as_u64(),
            u["highlight_count"].as_u64(),
        )
    };
    assert_eq!(counts(&rooms[0]), (Some(0), Some(0)), "{sync}");
    assert_eq!(counts(&rooms[1]), (Some(1), Some(0)), "{sync}");
    assert_eq!(
        counts(&rooms[2]),
        (Some(0), Some(0)),
        "read up to the last: {sync}"
    );
    assert_eq!(counts(&rooms[3]), (Some(3), Some(0)), "{sync}");
    assert_eq!(
        counts(&rooms[4]),
        (Some(5), Some(1)),
        "mention {mention}: {sync}"
    );
}
