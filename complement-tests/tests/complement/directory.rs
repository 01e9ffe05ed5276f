//! Public room directory and user directory.

use crate::prelude::*;

backend_tests!(
    public_room_is_listed,
    private_room_is_not_listed,
    public_rooms_search,
    public_rooms_pagination,
    room_directory_visibility,
    user_directory_search,
    public_rooms_paginate_backwards,
    public_rooms_room_type_filter,
    visibility_change_needs_power,
    user_directory_hides_private_strangers,
);

async fn public_rooms(c: &Client) -> Vec<Value> {
    arr(&c.get(&format!("{V3}/publicRooms")).await.ok()["chunk"])
}

async fn public_room_is_listed(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({
            "visibility": "public",
            "preset": "public_chat",
            "name": "Lobby",
            "topic": "Say hi",
            "room_alias_name": "lobby",
        }))
        .await;
    let bob = server.register("bob").await;
    let chunk = public_rooms(&bob).await;
    let entry = chunk
        .iter()
        .find(|r| r["room_id"] == room.as_str())
        .unwrap_or_else(|| panic!("public room not listed: {chunk:?}"));
    assert_eq!(entry["name"], "Lobby");
    assert_eq!(entry["topic"], "Say hi");
    assert_eq!(entry["num_joined_members"], 1);
    assert_eq!(entry["canonical_alias"], alias(&server, "lobby").as_str());
    assert!(entry["world_readable"].is_boolean(), "{entry}");
    assert!(entry["guest_can_join"].is_boolean(), "{entry}");
    if !entry["join_rule"].is_null() {
        assert_eq!(entry["join_rule"], "public");
    }
    // Membership changes are reflected.
    bob.join(&room).await;
    let chunk = public_rooms(&bob).await;
    let entry = chunk
        .iter()
        .find(|r| r["room_id"] == room.as_str())
        .expect("still listed");
    assert_eq!(entry["num_joined_members"], 2);
}

async fn private_room_is_not_listed(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({"visibility": "private", "preset": "public_chat", "name": "Quiet"}))
        .await;
    assert!(
        !public_rooms(&alice)
            .await
            .iter()
            .any(|r| r["room_id"] == room.as_str())
    );
}

async fn public_rooms_search(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let garden = alice
        .create_room(
            json!({"visibility": "public", "preset": "public_chat", "name": "Gardening Club"}),
        )
        .await;
    let chess = alice
        .create_room(
            json!({"visibility": "public", "preset": "public_chat", "name": "Chess Club",
                            "topic": "Openings and endgames"}),
        )
        .await;
    let search = |term: &str| {
        let alice = alice.clone();
        let term = term.to_owned();
        async move {
            let body = alice
                .post(
                    &format!("{V3}/publicRooms"),
                    &json!({"filter": {"generic_search_term": term}}),
                )
                .await
                .ok();
            arr(&body["chunk"])
                .iter()
                .filter_map(|r| r["room_id"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    let found = search("Garden").await;
    assert!(
        found.contains(&garden) && !found.contains(&chess),
        "{found:?}"
    );
    let found = search("Club").await;
    assert!(
        found.contains(&garden) && found.contains(&chess),
        "{found:?}"
    );
    let found = search("Philately").await;
    assert!(found.is_empty(), "{found:?}");
}

async fn public_rooms_pagination(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let mut rooms = Vec::new();
    for i in 0..3 {
        rooms.push(
            alice
                .create_room(json!({"visibility": "public", "preset": "public_chat",
                                    "name": format!("Room {i}")}))
                .await,
        );
    }
    let first = alice.get(&format!("{V3}/publicRooms?limit=2")).await.ok();
    assert_eq!(arr(&first["chunk"]).len(), 2, "{first}");
    let next = first["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("more rooms but no next_batch: {first}"));
    let second = alice
        .get(&format!("{V3}/publicRooms?limit=2&since={}", enc(next)))
        .await
        .ok();
    let mut seen: Vec<String> = arr(&first["chunk"])
        .iter()
        .chain(arr(&second["chunk"]).iter())
        .filter_map(|r| r["room_id"].as_str().map(str::to_owned))
        .collect();
    seen.sort();
    let mut expected = rooms.clone();
    expected.sort();
    assert_eq!(seen, expected, "pages must cover every room exactly once");
    // Also via POST.
    let body = alice
        .post(&format!("{V3}/publicRooms"), &json!({"limit": 1}))
        .await
        .ok();
    assert_eq!(arr(&body["chunk"]).len(), 1, "{body}");
}

async fn room_directory_visibility(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "Toggle"}))
        .await;
    let path = format!("{V3}/directory/list/room/{}", enc(&room));
    assert_eq!(alice.get(&path).await.ok()["visibility"], "private");
    alice
        .put(&path, &json!({"visibility": "public"}))
        .await
        .ok();
    assert_eq!(alice.get(&path).await.ok()["visibility"], "public");
    assert!(
        public_rooms(&alice)
            .await
            .iter()
            .any(|r| r["room_id"] == room.as_str())
    );
    alice
        .put(&path, &json!({"visibility": "private"}))
        .await
        .ok();
    assert!(
        !public_rooms(&alice)
            .await
            .iter()
            .any(|r| r["room_id"] == room.as_str())
    );
    // Visibility of an unknown room.
    alice
        .get(&format!(
            "{V3}/directory/list/room/{}",
            enc("!unknown:nowhere")
        ))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn user_directory_search(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    alice
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
            &json!({"displayname": "Alice Liddell"}),
        )
        .await
        .ok();
    let search = |term: &str| {
        let bob = bob.clone();
        let term = term.to_owned();
        async move {
            bob.post(
                &format!("{V3}/user_directory/search"),
                &json!({"search_term": term, "limit": 10}),
            )
            .await
            .ok()
        }
    };
    let body = search("Liddell").await;
    assert!(body["limited"].is_boolean(), "{body}");
    let hit = arr(&body["results"])
        .into_iter()
        .find(|r| r["user_id"] == alice.user_id.as_str())
        .unwrap_or_else(|| panic!("alice not found by display name: {body}"));
    assert_eq!(hit["display_name"], "Alice Liddell");
    let body = search("alice").await;
    assert!(
        arr(&body["results"])
            .iter()
            .any(|r| r["user_id"] == alice.user_id.as_str()),
        "alice not found by localpart: {body}"
    );
    let body = search("zzzznotauser").await;
    assert!(arr(&body["results"]).is_empty(), "{body}");
}

async fn public_rooms_paginate_backwards(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    for i in 0..5 {
        alice
            .create_room(json!({"visibility": "public", "preset": "public_chat",
                                "name": format!("Room {i}")}))
            .await;
    }
    let first = alice.get(&format!("{V3}/publicRooms?limit=2")).await.ok();
    assert!(first.get("prev_batch").is_none(), "{first}");
    assert_eq!(first["total_room_count_estimate"], 5, "{first}");
    let next = first["next_batch"].as_str().expect("next_batch").to_owned();
    let second = alice
        .get(&format!("{V3}/publicRooms?limit=2&since={}", enc(&next)))
        .await
        .ok();
    let prev = second["prev_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("second page without prev_batch: {second}"))
        .to_owned();
    let back = alice
        .get(&format!("{V3}/publicRooms?limit=2&since={}", enc(&prev)))
        .await
        .ok();
    assert_eq!(back["chunk"], first["chunk"], "{back}");
    // The last page has no next_batch.
    let next = second["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let third = alice
        .get(&format!("{V3}/publicRooms?limit=2&since={}", enc(&next)))
        .await
        .ok();
    assert_eq!(arr(&third["chunk"]).len(), 1, "{third}");
    assert!(third.get("next_batch").is_none(), "{third}");
}

async fn public_rooms_room_type_filter(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let space = alice
        .create_room(
            json!({"visibility": "public", "preset": "public_chat", "name": "Space",
                            "creation_content": {"type": "m.space"}}),
        )
        .await;
    let plain = alice
        .create_room(json!({"visibility": "public", "preset": "public_chat", "name": "Plain"}))
        .await;
    let ids = |body: Value| -> Vec<String> {
        arr(&body["chunk"])
            .iter()
            .filter_map(|r| r["room_id"].as_str().map(str::to_owned))
            .collect()
    };
    let body = alice
        .post(
            &format!("{V3}/publicRooms"),
            &json!({"filter": {"room_types": ["m.space"]}}),
        )
        .await
        .ok();
    let entry = arr(&body["chunk"])
        .into_iter()
        .find(|r| r["room_id"] == space.as_str())
        .unwrap_or_else(|| panic!("space not listed: {body}"));
    assert_eq!(entry["room_type"], "m.space");
    assert_eq!(ids(body), vec![space.clone()]);
    let body = alice
        .post(
            &format!("{V3}/publicRooms"),
            &json!({"filter": {"room_types": [null]}}),
        )
        .await
        .ok();
    assert_eq!(ids(body), vec![plain.clone()]);
}

async fn visibility_change_needs_power(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let path = format!("{V3}/directory/list/room/{}", enc(&room));
    bob.put(&path, &json!({"visibility": "public"}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    assert_eq!(alice.get(&path).await.ok()["visibility"], "private");
    alice
        .put(&path, &json!({"visibility": "public"}))
        .await
        .ok();
    assert_eq!(bob.get(&path).await.ok()["visibility"], "public");
}

async fn user_directory_hides_private_strangers(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    // Carol is only in a private room; dave is in a public (publicly joinable) room.
    carol.create_room(json!({"preset": "private_chat"})).await;
    dave.create_room(json!({"preset": "public_chat"})).await;
    let search = |term: &str| {
        let alice = alice.clone();
        let term = term.to_owned();
        async move {
            alice
                .post(
                    &format!("{V3}/user_directory/search"),
                    &json!({"search_term": term}),
                )
                .await
                .ok()
        }
    };
    let found =
        |body: &Value, user: &str| arr(&body["results"]).iter().any(|r| r["user_id"] == user);
    let body = search("carol").await;
    assert!(!found(&body, &carol.user_id), "{body}");
    let body = search("dave").await;
    assert!(found(&body, &dave.user_id), "{body}");
    // Once carol and alice share a room, carol is found.
    let shared = carol
        .create_room(json!({"preset": "private_chat", "invite": [alice.user_id]}))
        .await;
    alice.join(&shared).await;
    let body = search("carol").await;
    assert!(found(&body, &carol.user_id), "{body}");
    // limit and limited.
    let body = alice
        .post(
            &format!("{V3}/user_directory/search"),
            &json!({"search_term": "localhost", "limit": 1}),
        )
        .await
        .ok();
    assert_eq!(arr(&body["results"]).len(), 1, "{body}");
    assert_eq!(body["limited"], true, "{body}");
}
