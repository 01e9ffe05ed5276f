//! Room membership: invite, join (by id and alias), leave, forget, kick, ban, unban, permission
//! errors, joined_rooms, members, joined_members.

use crate::prelude::*;

backend_tests!(
    invite_then_join_by_id,
    join_by_alias,
    join_invite_only_room_uninvited_is_forbidden,
    non_member_cannot_send,
    leave_room,
    reject_invite,
    forget_room,
    kick_user,
    kick_without_power_is_forbidden,
    ban_and_unban,
    ban_without_power_is_forbidden,
    non_member_cannot_invite,
    joined_rooms,
    members_and_membership_filter,
    joined_members,
    members_of_non_member_is_forbidden,
    members_at_a_token_and_after_leaving,
    knock_then_invite_and_join,
    knock_errors_and_retraction,
);

async fn membership_of(c: &Client, room: &str, user: &str) -> Value {
    c.state(room, "m.room.member", user).await.ok()
}

async fn invite_then_join_by_id(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    alice.invite(&room, &bob.user_id).await.ok();
    assert_eq!(
        membership_of(&alice, &room, &bob.user_id).await["membership"],
        "invite"
    );
    bob.sync_until(None, |s| !s["rooms"]["invite"][room.as_str()].is_null())
        .await;
    let joined = bob
        .post(&format!("{V3}/rooms/{}/join", enc(&room)), &json!({}))
        .await
        .ok();
    assert_eq!(joined["room_id"], room.as_str());
    assert_eq!(
        membership_of(&alice, &room, &bob.user_id).await["membership"],
        "join"
    );
    bob.send_text(&room, "hi alice").await;
}

async fn join_by_alias(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "room_alias_name": "town-square"}))
        .await;
    let joined = bob.join(&alias(&server, "town-square")).await;
    assert_eq!(joined, room);
    assert_eq!(
        membership_of(&alice, &room, &bob.user_id).await["membership"],
        "join"
    );
}

async fn join_invite_only_room_uninvited_is_forbidden(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    bob.join_raw(&room).await.expect_err(403, "M_FORBIDDEN");
    let joined = bob.get(&format!("{V3}/joined_rooms")).await.ok();
    assert!(arr(&joined["joined_rooms"]).is_empty(), "{joined}");
}

async fn non_member_cannot_send(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let resp = bob
        .try_send_event(
            &room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "sneaky"}),
        )
        .await
        .expect("transport");
    resp.expect_err(403, "M_FORBIDDEN");
    bob.put_state(&room, "com.example.state", "k", &json!({"sneaky": true}))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

async fn leave_room(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    bob.post(
        &format!("{V3}/rooms/{}/leave", enc(&room)),
        &json!({"reason": "off to bed"}),
    )
    .await
    .ok();
    let member = membership_of(&alice, &room, &bob.user_id).await;
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["reason"], "off to bed");
    let joined = bob.get(&format!("{V3}/joined_rooms")).await.ok();
    assert!(
        !arr(&joined["joined_rooms"]).contains(&json!(room)),
        "{joined}"
    );
    let resp = bob
        .try_send_event(
            &room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "gone"}),
        )
        .await
        .expect("transport");
    resp.expect_err(403, "M_FORBIDDEN");
}

async fn reject_invite(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "invite": [bob.user_id]}))
        .await;
    let token = bob
        .sync_until(None, |s| !s["rooms"]["invite"][room.as_str()].is_null())
        .await;
    bob.leave(&room).await.ok();
    assert_eq!(
        membership_of(&alice, &room, &bob.user_id).await["membership"],
        "leave"
    );
    bob.sync_until(Some(&next_batch(&token)), |s| {
        !s["rooms"]["leave"][room.as_str()].is_null()
    })
    .await;
}

async fn forget_room(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    // Forgetting a room one is still joined to is refused.
    let (status, body) = alice
        .post(&format!("{V3}/rooms/{}/forget", enc(&room)), &json!({}))
        .await;
    assert_eq!(status, 400, "forget while joined: {body}");
    alice.send_text(&room, "history").await;
    bob.leave(&room).await.ok();
    // After leaving, history one could see stays readable ...
    let msgs = bob.messages(&room, "dir=b&limit=10").await.ok();
    assert!(
        bodies(&arr(&msgs["chunk"])).contains(&"history".to_owned()),
        "{msgs}"
    );
    bob.post(&format!("{V3}/rooms/{}/forget", enc(&room)), &json!({}))
        .await
        .ok();
    // ... until the room is forgotten.
    let (status, body) = bob.messages(&room, "dir=b&limit=10").await;
    assert_ne!(status, 200, "history still readable after forget: {body}");
    // The room itself is unaffected for alice.
    alice.send_text(&room, "still here").await;
}

async fn kick_user(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let since = bob.sync_token().await;
    alice
        .moderate("kick", &room, &bob.user_id, Some("be nice"))
        .await
        .ok();
    let member = membership_of(&alice, &room, &bob.user_id).await;
    assert_eq!(member["membership"], "leave");
    assert_eq!(member["reason"], "be nice");
    let sync = bob
        .sync_until(Some(&since), |s| {
            !s["rooms"]["leave"][room.as_str()].is_null()
        })
        .await;
    let leave_events = arr(&sync["rooms"]["leave"][room.as_str()]["timeline"]["events"]);
    assert!(
        leave_events.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["sender"] == alice.user_id.as_str()
            && e["content"]["membership"] == "leave"),
        "kick event not in bob's leave timeline: {sync}"
    );
    // A kicked user may rejoin a public room.
    bob.join(&room).await;
}

async fn kick_without_power_is_forbidden(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    bob.moderate("kick", &room, &alice.user_id, None)
        .await
        .expect_err(403, "M_FORBIDDEN");
    assert_eq!(
        membership_of(&bob, &room, &alice.user_id).await["membership"],
        "join"
    );
}

async fn ban_and_unban(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    alice
        .moderate("ban", &room, &bob.user_id, Some("spam"))
        .await
        .ok();
    let member = membership_of(&alice, &room, &bob.user_id).await;
    assert_eq!(member["membership"], "ban");
    assert_eq!(member["reason"], "spam");
    bob.join_raw(&room).await.expect_err(403, "M_FORBIDDEN");

    alice
        .moderate("unban", &room, &bob.user_id, None)
        .await
        .ok();
    assert_eq!(
        membership_of(&alice, &room, &bob.user_id).await["membership"],
        "leave"
    );
    bob.join(&room).await;

    // Banning someone who never joined also works and keeps them out.
    let carol = server.register("carol").await;
    alice
        .moderate("ban", &room, &carol.user_id, None)
        .await
        .ok();
    carol.join_raw(&room).await.expect_err(403, "M_FORBIDDEN");
}

async fn ban_without_power_is_forbidden(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let carol = server.register("carol").await;
    carol.join(&room).await;
    bob.moderate("ban", &room, &carol.user_id, None)
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .moderate("ban", &room, &carol.user_id, None)
        .await
        .ok();
    bob.moderate("unban", &room, &carol.user_id, None)
        .await
        .expect_err(403, "M_FORBIDDEN");
}

async fn non_member_cannot_invite(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.invite(&room, &carol.user_id)
        .await
        .expect_err(403, "M_FORBIDDEN");
}

async fn joined_rooms(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let r1 = alice.create_room(json!({})).await;
    let r2 = alice.create_room(json!({})).await;
    let body = alice.get(&format!("{V3}/joined_rooms")).await.ok();
    let mut rooms: Vec<String> = arr(&body["joined_rooms"])
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    rooms.sort();
    let mut expected = vec![r1.clone(), r2];
    expected.sort();
    assert_eq!(rooms, expected);
    alice.leave(&r1).await.ok();
    let body = alice.get(&format!("{V3}/joined_rooms")).await.ok();
    assert!(!arr(&body["joined_rooms"]).contains(&json!(r1)), "{body}");
}

async fn members_and_membership_filter(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let carol = server.register("carol").await;
    alice.invite(&room, &carol.user_id).await.ok();

    let body = bob
        .get(&format!("{V3}/rooms/{}/members", enc(&room)))
        .await
        .ok();
    let chunk = arr(&body["chunk"]);
    assert!(chunk.iter().all(|e| e["type"] == "m.room.member"), "{body}");
    let membership = |user: &str| {
        chunk
            .iter()
            .find(|e| e["state_key"] == user)
            .map(|e| e["content"]["membership"].clone())
    };
    assert_eq!(membership(&alice.user_id), Some(json!("join")));
    assert_eq!(membership(&bob.user_id), Some(json!("join")));
    assert_eq!(membership(&carol.user_id), Some(json!("invite")));

    let body = bob
        .get(&format!(
            "{V3}/rooms/{}/members?membership=join",
            enc(&room)
        ))
        .await
        .ok();
    let users: Vec<Value> = arr(&body["chunk"])
        .iter()
        .map(|e| e["state_key"].clone())
        .collect();
    assert_eq!(users.len(), 2, "{body}");
    assert!(!users.contains(&json!(carol.user_id)), "{body}");

    let body = bob
        .get(&format!(
            "{V3}/rooms/{}/members?not_membership=join",
            enc(&room)
        ))
        .await
        .ok();
    let users: Vec<Value> = arr(&body["chunk"])
        .iter()
        .map(|e| e["state_key"].clone())
        .collect();
    assert_eq!(users, vec![json!(carol.user_id)], "{body}");
}

async fn joined_members(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let carol = server.register("carol").await;
    alice.invite(&room, &carol.user_id).await.ok();
    let body = bob
        .get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
        .await
        .ok();
    let joined = body["joined"]
        .as_object()
        .unwrap_or_else(|| panic!("no joined map: {body}"));
    assert_eq!(joined.len(), 2, "{body}");
    assert!(joined.contains_key(&alice.user_id) && joined.contains_key(&bob.user_id));
    for profile in joined.values() {
        assert!(profile.is_object(), "{body}");
    }
}

async fn members_of_non_member_is_forbidden(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    eve.get(&format!("{V3}/rooms/{}/members", enc(&room)))
        .await
        .expect_err(403, "M_FORBIDDEN");
    eve.get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

fn member_ids(body: &Value) -> Vec<String> {
    let mut ids: Vec<String> = arr(&body["chunk"])
        .iter()
        .filter(|e| e["content"]["membership"] == "join")
        .filter_map(|e| e["state_key"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

async fn members_at_a_token_and_after_leaving(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    let carol = server.register("carol").await;
    let token = alice.sync_token().await;
    carol.join(&room).await;
    let path = format!("{V3}/rooms/{}/members", enc(&room));
    let mut two = vec![alice.user_id.clone(), bob.user_id.clone()];
    two.sort();
    let mut three = [two.clone(), vec![carol.user_id.clone()]].concat();
    three.sort();
    assert_eq!(member_ids(&alice.get(&path).await.ok()), three);
    let at = alice.get(&format!("{path}?at={}", enc(&token))).await.ok();
    assert_eq!(member_ids(&at), two, "members at the token: {at}");
    // Bob leaves; carol's later leave is not shown to him.
    bob.leave(&room).await.ok();
    carol.leave(&room).await.ok();
    let seen_by_bob = member_ids(&bob.get(&path).await.ok());
    assert!(
        seen_by_bob.contains(&carol.user_id),
        "a former member sees the members as they were when they left: {seen_by_bob:?}"
    );
    assert_eq!(
        member_ids(&alice.get(&path).await.ok()),
        vec![alice.user_id.clone()]
    );
    alice
        .get(&format!("{path}?at=garbage"))
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

/// A createRoom body for a v12 room that takes knocks.
fn knock_room(name: &str) -> Value {
    json!({"preset": "private_chat", "room_version": "12", "name": name,
           "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                              "content": {"join_rule": "knock"}}]})
}

async fn knock_then_invite_and_join(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice.create_room(knock_room("Knockers")).await;
    let since = alice.sync_token().await;
    let resp = bob
        .post(
            &format!("{V3}/knock/{}", enc(&room)),
            &json!({"reason": "let me in"}),
        )
        .await
        .ok();
    assert_eq!(resp["room_id"], room.as_str());
    // The knocker sees the room in the knock section, with its public state.
    let s = bob
        .sync_until(None, |s| !s["rooms"]["knock"][room.as_str()].is_null())
        .await;
    let knock_state = arr(&s["rooms"]["knock"][room.as_str()]["knock_state"]["events"]);
    assert!(
        knock_state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knockers"),
        "{knock_state:?}"
    );
    assert!(
        knock_state.iter().any(|e| e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id.as_str()
            && e["content"]["membership"] == "knock"),
        "{knock_state:?}"
    );
    // The room's members see the knock with its reason.
    alice
        .sync_until(Some(&since), |s| {
            arr(&s["rooms"]["join"][room.as_str()]["timeline"]["events"])
                .iter()
                .any(|e| {
                    e["type"] == "m.room.member"
                        && e["state_key"] == bob.user_id.as_str()
                        && e["content"]["membership"] == "knock"
                        && e["content"]["reason"] == "let me in"
                })
        })
        .await;
    // Knocking again is answered with the same room.
    bob.post(&format!("{V3}/knock/{}", enc(&room)), &json!({}))
        .await
        .ok();
    // Let in: invited, then joined.
    alice.invite(&room, &bob.user_id).await.ok();
    bob.join(&room).await;
    bob.send_text(&room, "thanks").await;
}

async fn knock_errors_and_retraction(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    // An invite-only room refuses knocks.
    let closed = alice.create_room(json!({"preset": "private_chat"})).await;
    bob.post(&format!("{V3}/knock/{}", enc(&closed)), &json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    bob.post(
        &format!("{V3}/knock/{}", enc("!nowhere:localhost")),
        &json!({}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    bob.post(
        &format!("{V3}/knock/{}", enc("#nowhere:localhost")),
        &json!({}),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    // A knock can be withdrawn by leaving; a member cannot knock.
    let room = alice.create_room(knock_room("Door")).await;
    bob.post(&format!("{V3}/knock/{}", enc(&room)), &json!({}))
        .await
        .ok();
    bob.leave(&room).await.ok();
    assert_eq!(
        membership_of(&alice, &room, &bob.user_id).await["membership"],
        "leave"
    );
    alice
        .post(&format!("{V3}/knock/{}", enc(&room)), &json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Banned users cannot knock.
    bob.post(&format!("{V3}/knock/{}", enc(&room)), &json!({}))
        .await
        .ok();
    alice.moderate("ban", &room, &bob.user_id, None).await.ok();
    bob.post(&format!("{V3}/knock/{}", enc(&room)), &json!({}))
        .await
        .expect_err(403, "M_FORBIDDEN");
}
