//! Server-side message search (`POST /search`).

use crate::prelude::*;

backend_tests!(
    search_finds_messages_in_joined_rooms,
    search_pages_by_recent_and_rank,
    search_context_state_and_groups,
    search_respects_membership_and_filters,
    search_bad_requests,
);

const SEARCH: &str = "/_matrix/client/v3/search";

fn query(term: &str, extra: Value) -> Value {
    let mut room_events = json!({"search_term": term});
    if let (Some(r), Some(e)) = (room_events.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    json!({"search_categories": {"room_events": room_events}})
}

fn result_bodies(resp: &Value) -> Vec<String> {
    arr(&resp["search_categories"]["room_events"]["results"])
        .iter()
        .filter_map(|r| r["result"]["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

async fn search_finds_messages_in_joined_rooms(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    alice.send_text(&room, "Lunch at noon?").await;
    bob.send_text(&room, "Sure, lunch sounds good").await;
    alice.send_text(&room, "Meeting moved to Friday").await;
    let resp = bob
        .post(SEARCH, &query("LUNCH", json!({"order_by": "recent"})))
        .await
        .ok();
    let events = &resp["search_categories"]["room_events"];
    assert_eq!(
        result_bodies(&resp),
        ["Sure, lunch sounds good", "Lunch at noon?"],
        "{resp}"
    );
    assert_eq!(events["count"], 2);
    assert!(arr(&events["highlights"]).iter().any(|h| h == "lunch"));
    assert_eq!(events["results"][0]["result"]["room_id"], room.as_str());
    // Every word must be there.
    let both = bob.post(SEARCH, &query("lunch noon", json!({}))).await.ok();
    assert_eq!(result_bodies(&both), ["Lunch at noon?"]);
    // Room names are searched too.
    alice
        .send_state(&room, "m.room.name", "", &json!({"name": "Lunch club"}))
        .await;
    let names = bob
        .post(SEARCH, &query("club", json!({"keys": ["content.name"]})))
        .await
        .ok();
    let results = arr(&names["search_categories"]["room_events"]["results"]);
    assert_eq!(results.len(), 1, "{names}");
    assert_eq!(results[0]["result"]["type"], "m.room.name");
    let none = bob.post(SEARCH, &query("zebra", json!({}))).await.ok();
    assert!(result_bodies(&none).is_empty());
}

async fn search_pages_by_recent_and_rank(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..5 {
        alice.send_text(&room, &format!("report number {i}")).await;
    }
    alice.send_text(&room, "report report report").await;
    // Recent: newest first, two at a time.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..10 {
        let path = match &next {
            Some(t) => format!("{SEARCH}?next_batch={}", enc(t)),
            None => SEARCH.to_owned(),
        };
        let resp = alice
            .post(
                &path,
                &query(
                    "report",
                    json!({"order_by": "recent", "filter": {"limit": 2}}),
                ),
            )
            .await
            .ok();
        seen.extend(result_bodies(&resp));
        next = resp["search_categories"]["room_events"]["next_batch"]
            .as_str()
            .map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    let expected: Vec<String> = std::iter::once("report report report".to_owned())
        .chain((0..5).rev().map(|i| format!("report number {i}")))
        .collect();
    assert_eq!(seen, expected);
    // Rank: the message with the most hits first; pages do not repeat.
    let page1 = alice
        .post(SEARCH, &query("report", json!({"filter": {"limit": 3}})))
        .await
        .ok();
    let first = result_bodies(&page1);
    assert_eq!(first[0], "report report report", "{page1}");
    let token = page1["search_categories"]["room_events"]["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let page2 = alice
        .post(
            &format!("{SEARCH}?next_batch={}", enc(&token)),
            &query("report", json!({"filter": {"limit": 3}})),
        )
        .await
        .ok();
    let second = result_bodies(&page2);
    assert_eq!(first.len() + second.len(), 6, "{page2}");
    assert!(second.iter().all(|b| !first.contains(b)));
}

async fn search_context_state_and_groups(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    alice.send_text(&room, "before one").await;
    alice.send_text(&room, "before two").await;
    let hit = bob.send_text(&room, "the needle").await;
    alice.send_text(&room, "after one").await;
    let resp = alice
        .post(
            SEARCH,
            &query(
                "needle",
                json!({
                    "event_context": {"before_limit": 2, "after_limit": 1, "include_profile": true},
                    "include_state": true,
                    "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
                }),
            ),
        )
        .await
        .ok();
    let events = &resp["search_categories"]["room_events"];
    let result = &events["results"][0];
    assert_eq!(result["result"]["event_id"], hit.as_str(), "{resp}");
    let ctx = &result["context"];
    let before: Vec<String> = arr(&ctx["events_before"])
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(before, ["before two", "before one"], "{ctx}");
    let after: Vec<String> = arr(&ctx["events_after"])
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(after, ["after one"]);
    assert!(ctx["start"].is_string() && ctx["end"].is_string());
    assert_eq!(
        ctx["profile_info"][bob.user_id.as_str()]["displayname"],
        "bob"
    );
    let state = arr(&events["state"][room.as_str()]);
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{resp}");
    assert_eq!(
        events["groups"]["room_id"][room.as_str()]["results"][0],
        hit.as_str()
    );
    assert_eq!(events["groups"]["sender"][bob.user_id.as_str()]["order"], 1);
}

async fn search_respects_membership_and_filters(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let private = alice.create_room(json!({"preset": "private_chat"})).await;
    alice.send_text(&private, "secret plans").await;
    alice.send_text(&room, "public plans").await;
    let found = bob.post(SEARCH, &query("plans", json!({}))).await.ok();
    assert_eq!(
        result_bodies(&found),
        ["public plans"],
        "only rooms bob is in"
    );
    // After leaving, later messages are not found; earlier ones still are.
    bob.leave(&room).await.ok();
    alice.send_text(&room, "plans after bob left").await;
    let later = bob.post(SEARCH, &query("plans", json!({}))).await.ok();
    assert_eq!(result_bodies(&later), ["public plans"], "{later}");
    // Filters: by room and by sender.
    let in_private = alice
        .post(
            SEARCH,
            &query("plans", json!({"filter": {"rooms": [private]}})),
        )
        .await
        .ok();
    assert_eq!(result_bodies(&in_private), ["secret plans"]);
    let not_alice = alice
        .post(
            SEARCH,
            &query("plans", json!({"filter": {"not_senders": [alice.user_id]}})),
        )
        .await
        .ok();
    assert!(result_bodies(&not_alice).is_empty());
    // A redacted message is no longer found.
    let gone = alice.send_text(&room, "plans to delete").await;
    alice
        .put(
            &format!(
                "{V3}/rooms/{}/redact/{}/{}",
                enc(&room),
                enc(&gone),
                alice.next_txn()
            ),
            &json!({}),
        )
        .await
        .ok();
    let after_redaction = alice.post(SEARCH, &query("delete", json!({}))).await.ok();
    assert!(
        result_bodies(&after_redaction).is_empty(),
        "{after_redaction}"
    );
}

async fn search_bad_requests(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .post(SEARCH, &json!({}))
        .await
        .expect_err(400, "M_MISSING_PARAM");
    alice
        .post(SEARCH, &query("x", json!({"order_by": "sideways"})))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .post(SEARCH, &query("x", json!({"keys": ["content.nope"]})))
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .post(
            &format!("{SEARCH}?next_batch=bogus"),
            &query("x", json!({})),
        )
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .anonymous()
        .post(SEARCH, &query("x", json!({})))
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}
