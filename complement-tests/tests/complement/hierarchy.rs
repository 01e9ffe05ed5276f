//! Space hierarchies for clients (`GET /_matrix/client/v1/rooms/{roomId}/hierarchy`): the
//! rooms of a space the caller may see, breadth first, with their summaries and
//! `m.space.child` state; `suggested_only`, `max_depth`, pagination; private children left
//! out; children known only to another server fetched over federation. Also room summaries
//! (`GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`).

use complement_tests::FederationOptions;

use crate::prelude::*;

backend_tests!(
    space_with_children,
    suggested_only_filters,
    max_depth_limits_walk,
    pagination_covers_all_rooms,
    private_children_left_out,
    restricted_child_visible_to_space_members,
    remote_child_fetched_over_federation,
    room_summary_of_local_rooms,
    room_summary_of_a_remote_room,
);

async fn hierarchy(c: &Client, room: &str, query: &str) -> Resp {
    c.get(&format!("{V1}/rooms/{}/hierarchy?{query}", enc(room)))
        .await
}

fn ids(body: &Value) -> Vec<String> {
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["room_id"].as_str().expect("room_id").to_owned())
        .collect()
}

async fn create_space(c: &Client, name: &str, preset: &str) -> String {
    c.create_room(json!({
        "preset": preset,
        "name": name,
        "creation_content": {"type": "m.space"},
    }))
    .await
}

async fn create_room(c: &Client, name: &str, preset: &str) -> String {
    c.create_room(json!({"preset": preset, "name": name})).await
}

async fn add_child(c: &Client, space: &str, child: &str, via: &str, extra: Value) {
    let mut content = json!({"via": [via]});
    if let (Some(obj), Value::Object(more)) = (content.as_object_mut(), extra) {
        obj.extend(more);
    }
    c.send_state(space, "m.space.child", child, &content).await;
}

/// Space S: R2 (order "a", suggested), R1 (order "b"), then sub-space S2 (no order) with R3.
struct Tree {
    space: String,
    r1: String,
    r2: String,
    sub: String,
    r3: String,
}

async fn tree(alice: &Client) -> Tree {
    let server = alice.server_name.clone();
    let space = create_space(alice, "Space", "public_chat").await;
    let r1 = create_room(alice, "Room one", "public_chat").await;
    let r2 = create_room(alice, "Room two", "public_chat").await;
    let sub = create_space(alice, "Sub space", "public_chat").await;
    let r3 = create_room(alice, "Room three", "public_chat").await;
    add_child(alice, &space, &r1, &server, json!({"order": "b"})).await;
    add_child(
        alice,
        &space,
        &r2,
        &server,
        json!({"order": "a", "suggested": true}),
    )
    .await;
    add_child(alice, &space, &sub, &server, json!({})).await;
    add_child(alice, &sub, &r3, &server, json!({"suggested": true})).await;
    Tree {
        space,
        r1,
        r2,
        sub,
        r3,
    }
}

async fn space_with_children(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let t = tree(&alice).await;

    let body = hierarchy(&alice, &t.space, "").await.ok();
    assert_eq!(
        ids(&body),
        vec![
            t.space.clone(),
            t.r2.clone(),
            t.r1.clone(),
            t.sub.clone(),
            t.r3.clone()
        ],
        "{body}"
    );
    assert!(body.get("next_batch").is_none(), "{body}");
    let root = &body["rooms"][0];
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["name"], "Space");
    assert_eq!(root["join_rule"], "public");
    assert_eq!(root["num_joined_members"], 1);
    assert_eq!(root["world_readable"], false);
    assert_eq!(root["guest_can_join"], false);
    assert!(root.get("allowed_room_ids").is_none());
    let children = root["children_state"].as_array().expect("children_state");
    assert_eq!(children.len(), 3, "{root}");
    for ev in children {
        assert_eq!(ev["type"], "m.space.child");
        assert!(ev["origin_server_ts"].is_i64(), "{ev}");
        assert_eq!(ev["sender"], alice.user_id.as_str());
        assert!(ev["content"]["via"].is_array());
        assert!(ev.get("event_id").is_none(), "stripped: {ev}");
    }
    let r1 = &body["rooms"][2];
    assert_eq!(r1["name"], "Room one");
    assert!(r1.get("room_type").is_none());
    assert_eq!(r1["children_state"], json!([]));
    let sub = &body["rooms"][3];
    assert_eq!(sub["children_state"].as_array().map(Vec::len), Some(1));

    // Someone who is in none of the rooms sees the same public tree.
    let bobs = hierarchy(&bob, &t.space, "").await.ok();
    assert_eq!(ids(&bobs), ids(&body));

    // Unknown room: 403, and the endpoint needs a token.
    hierarchy(&alice, "!unknown:example.org", "")
        .await
        .expect_err(403, "M_FORBIDDEN");
    let (status, _) = alice
        .anonymous()
        .get(&format!("{V1}/rooms/{}/hierarchy", enc(&t.space)))
        .await;
    assert_eq!(status, 401);
}

async fn suggested_only_filters(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let t = tree(&alice).await;
    let body = hierarchy(&alice, &t.space, "suggested_only=true")
        .await
        .ok();
    assert_eq!(ids(&body), vec![t.space.clone(), t.r2.clone()], "{body}");
    let children = body["rooms"][0]["children_state"]
        .as_array()
        .expect("children_state");
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["state_key"], t.r2.as_str());
    let _ = (&t.r1, &t.sub, &t.r3);
}

async fn max_depth_limits_walk(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let t = tree(&alice).await;
    let body = hierarchy(&alice, &t.space, "max_depth=0").await.ok();
    assert_eq!(ids(&body), vec![t.space.clone()]);
    // The root still lists its children.
    assert_eq!(
        body["rooms"][0]["children_state"].as_array().map(Vec::len),
        Some(3)
    );
    let body = hierarchy(&alice, &t.space, "max_depth=1").await.ok();
    assert_eq!(
        ids(&body),
        vec![t.space.clone(), t.r2.clone(), t.r1.clone(), t.sub.clone()]
    );
    let body = hierarchy(&alice, &t.space, "max_depth=2").await.ok();
    assert!(ids(&body).contains(&t.r3));
    // Starting from the sub-space.
    let body = hierarchy(&alice, &t.sub, "").await.ok();
    assert_eq!(ids(&body), vec![t.sub.clone(), t.r3.clone()]);
}

async fn pagination_covers_all_rooms(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let t = tree(&alice).await;
    let full = ids(&hierarchy(&alice, &t.space, "").await.ok());
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..10 {
        let query = match &from {
            Some(f) => format!("limit=2&from={}", enc(f)),
            None => "limit=2".to_owned(),
        };
        let body = hierarchy(&alice, &t.space, &query).await.ok();
        let page = ids(&body);
        assert!(page.len() <= 2, "{body}");
        seen.extend(page);
        match body["next_batch"].as_str() {
            Some(n) => from = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, full);

    // Tokens belong to their query.
    let first = hierarchy(&alice, &t.space, "limit=1").await.ok();
    let token = first["next_batch"].as_str().expect("next_batch").to_owned();
    hierarchy(
        &alice,
        &t.space,
        &format!("limit=1&suggested_only=true&from={}", enc(&token)),
    )
    .await
    .expect_err(400, "M_INVALID_PARAM");
    hierarchy(&alice, &t.space, "from=garbage")
        .await
        .expect_err(400, "M_INVALID_PARAM");
    hierarchy(&alice, &t.space, "limit=0")
        .await
        .expect_status(400);
}

async fn private_children_left_out(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let me = server.server_name.clone();
    let space = create_space(&alice, "Space", "public_chat").await;
    let open = create_room(&alice, "Open", "public_chat").await;
    let secret = create_room(&alice, "Secret", "private_chat").await;
    add_child(&alice, &space, &open, &me, json!({})).await;
    add_child(&alice, &space, &secret, &me, json!({})).await;

    let all = ids(&hierarchy(&alice, &space, "").await.ok());
    assert!(all.contains(&secret), "members see their private rooms");
    let bobs = hierarchy(&bob, &space, "").await.ok();
    assert_eq!(ids(&bobs), vec![space.clone(), open.clone()], "{bobs}");
    // The link itself is still part of the space's state.
    assert_eq!(
        bobs["rooms"][0]["children_state"].as_array().map(Vec::len),
        Some(2)
    );

    // Once invited, bob sees it.
    alice.invite(&secret, &bob.user_id).await.ok();
    assert!(ids(&hierarchy(&bob, &space, "").await.ok()).contains(&secret));

    // A private space is 403 for outsiders.
    let hidden = create_space(&alice, "Hidden", "private_chat").await;
    hierarchy(&bob, &hidden, "")
        .await
        .expect_err(403, "M_FORBIDDEN");
    hierarchy(&alice, &hidden, "").await.ok();
}

async fn restricted_child_visible_to_space_members(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let me = server.server_name.clone();
    let space = create_space(&alice, "Space", "public_chat").await;
    let members_only = alice
        .create_room(json!({
            "preset": "private_chat",
            "name": "Members only",
            "room_version": "10",
            "initial_state": [{
                "type": "m.room.join_rules",
                "state_key": "",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{"type": "m.room_membership", "room_id": space}]
                }
            }]
        }))
        .await;
    add_child(&alice, &space, &members_only, &me, json!({})).await;
    bob.join(&space).await;
    let bobs = hierarchy(&bob, &space, "").await.ok();
    assert!(ids(&bobs).contains(&members_only), "{bobs}");
    let entry = bobs["rooms"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["room_id"] == members_only.as_str()))
        .expect("entry")
        .clone();
    assert_eq!(entry["join_rule"], "restricted");
    assert!(entry.get("allowed_room_ids").is_none(), "{entry}");
    let carols = hierarchy(&carol, &space, "").await.ok();
    assert_eq!(ids(&carols), vec![space.clone()], "{carols}");
}

async fn remote_child_fetched_over_federation(b: Backend) {
    let opts = || ServerOptions {
        federation: Some(FederationOptions::default()),
        ..Default::default()
    };
    let (a, bn) = tokio::join!(start_with(b, opts()), start_with(b, opts()));
    let alice = a.register("alice").await;
    let bob = bn.register("bob").await;
    // Rooms that only B knows.
    let remote_space = create_space(&bob, "Remote space", "public_chat").await;
    let remote_room = create_room(&bob, "Remote room", "public_chat").await;
    let remote_secret = create_room(&bob, "Remote secret", "private_chat").await;
    add_child(
        &bob,
        &remote_space,
        &remote_room,
        &bn.server_name,
        json!({}),
    )
    .await;
    // A's space links them with B in `via`.
    let space = create_space(&alice, "Space", "public_chat").await;
    add_child(&alice, &space, &remote_space, &bn.server_name, json!({})).await;
    add_child(&alice, &space, &remote_secret, &bn.server_name, json!({})).await;
    // A child nobody can serve is left out too.
    add_child(
        &alice,
        &space,
        "!nowhere:127.0.0.1:1",
        "127.0.0.1:1",
        json!({}),
    )
    .await;

    let body = hierarchy(&alice, &space, "").await.ok();
    assert_eq!(
        ids(&body),
        vec![space.clone(), remote_space.clone(), remote_room.clone()],
        "{body}"
    );
    let rs = &body["rooms"][1];
    assert_eq!(rs["name"], "Remote space");
    assert_eq!(rs["room_type"], "m.space");
    assert_eq!(rs["children_state"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["rooms"][2]["name"], "Remote room");
    assert_eq!(body["rooms"][2]["num_joined_members"], 1);
}

async fn room_summary(c: &Client, room: &str, query: &str) -> Resp {
    c.get(&format!("{V1}/room_summary/{}{query}", enc(room)))
        .await
}

async fn room_summary_of_local_rooms(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let public = alice
        .create_room(
            json!({"preset": "public_chat", "name": "Lobby", "topic": "hello",
                            "room_alias_name": "lobby"}),
        )
        .await;
    let secret = create_room(&alice, "Secret", "private_chat").await;

    // Anyone, even without a token, sees a public room; by id or by alias.
    let anon = room_summary(&server.client(), &public, "").await.ok();
    assert_eq!(anon["room_id"], public.as_str());
    assert_eq!(anon["name"], "Lobby");
    assert_eq!(anon["topic"], "hello");
    assert_eq!(anon["join_rule"], "public");
    assert_eq!(anon["num_joined_members"], 1);
    assert_eq!(anon["room_version"], "12");
    assert!(anon.get("membership").is_none(), "{anon}");
    let by_alias = room_summary(&bob, &alias(&server, "lobby"), "").await.ok();
    assert_eq!(by_alias["room_id"], public.as_str());
    assert_eq!(by_alias["membership"], "leave");
    assert_eq!(
        room_summary(&alice, &public, "").await.ok()["membership"],
        "join"
    );

    // A private room: only members and invitees.
    room_summary(&bob, &secret, "")
        .await
        .expect_err(404, "M_NOT_FOUND");
    room_summary(&server.client(), &secret, "")
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice.invite(&secret, &bob.user_id).await.ok();
    let invited = room_summary(&bob, &secret, "").await.ok();
    assert_eq!(invited["name"], "Secret");
    assert_eq!(invited["membership"], "invite");
    room_summary(&bob, "!unknown:localhost", "")
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn room_summary_of_a_remote_room(b: Backend) {
    let opts = || ServerOptions {
        federation: Some(FederationOptions::default()),
        ..Default::default()
    };
    let (a, bn) = tokio::join!(start_with(b, opts()), start_with(b, opts()));
    let alice = a.register("alice").await;
    let bob = bn.register("bob").await;
    let remote = create_space(&bob, "Far away", "public_chat").await;
    let secret = create_room(&bob, "Far secret", "private_chat").await;
    let sum = room_summary(&alice, &remote, &format!("?via={}", enc(&bn.server_name)))
        .await
        .ok();
    assert_eq!(sum["room_id"], remote.as_str());
    assert_eq!(sum["name"], "Far away");
    assert_eq!(sum["room_type"], "m.space");
    assert_eq!(sum["membership"], "leave");
    room_summary(&alice, &secret, &format!("?via={}", enc(&bn.server_name)))
        .await
        .expect_err(404, "M_NOT_FOUND");
}
