//! Room aliases: PUT/GET/DELETE /directory/room/{alias}, /rooms/{roomId}/aliases.

use crate::prelude::*;

backend_tests!(
    create_resolve_delete_alias,
    duplicate_alias_is_409,
    unknown_alias_is_404,
    room_alias_list,
    alias_list_requires_membership,
    foreign_alias_is_invalid_param,
    alias_deletion_needs_creator_or_power,
    deleting_canonical_alias_updates_state,
);

fn alias_path(alias: &str) -> String {
    format!("{V3}/directory/room/{}", enc(alias))
}

async fn create_resolve_delete_alias(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    let a = alias(&server, "coffee");
    alice
        .put(&alias_path(&a), &json!({"room_id": room}))
        .await
        .ok();
    // Anyone may resolve it.
    let bob = server.register("bob").await;
    let resolved = bob.get(&alias_path(&a)).await.ok();
    assert_eq!(resolved["room_id"], room.as_str());
    let servers = arr(&resolved["servers"]);
    assert!(servers.contains(&json!(server.server_name)), "{resolved}");

    alice.delete(&alias_path(&a)).await.ok();
    bob.get(&alias_path(&a))
        .await
        .expect_err(404, "M_NOT_FOUND");
    // The alias can be reused afterwards.
    let room2 = alice.create_room(json!({})).await;
    alice
        .put(&alias_path(&a), &json!({"room_id": room2}))
        .await
        .ok();
    assert_eq!(
        bob.get(&alias_path(&a)).await.ok()["room_id"],
        room2.as_str()
    );
}

async fn duplicate_alias_is_409(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let r1 = alice.create_room(json!({})).await;
    let r2 = alice.create_room(json!({})).await;
    let a = alias(&server, "taken");
    alice
        .put(&alias_path(&a), &json!({"room_id": r1}))
        .await
        .ok();
    let (status, body) = alice.put(&alias_path(&a), &json!({"room_id": r2})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        alice.get(&alias_path(&a)).await.ok()["room_id"],
        r1.as_str()
    );
}

async fn unknown_alias_is_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .get(&alias_path(&alias(&server, "nothing-here")))
        .await
        .expect_err(404, "M_NOT_FOUND");
    let (status, body) = alice
        .delete(&alias_path(&alias(&server, "nothing-here")))
        .await;
    assert_eq!(status, 404, "{body}");
}

async fn room_alias_list(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({"room_alias_name": "main-alias"}))
        .await;
    let extra = alias(&server, "extra-alias");
    alice
        .put(&alias_path(&extra), &json!({"room_id": room}))
        .await
        .ok();
    let body = alice
        .get(&format!("{V3}/rooms/{}/aliases", enc(&room)))
        .await
        .ok();
    let list = arr(&body["aliases"]);
    assert!(
        list.contains(&json!(alias(&server, "main-alias"))),
        "{body}"
    );
    assert!(list.contains(&json!(extra)), "{body}");
    alice.delete(&alias_path(&extra)).await.ok();
    let body = alice
        .get(&format!("{V3}/rooms/{}/aliases", enc(&room)))
        .await
        .ok();
    assert!(!arr(&body["aliases"]).contains(&json!(extra)), "{body}");
}

async fn alias_list_requires_membership(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let eve = server.register("eve").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "room_alias_name": "hidden"}))
        .await;
    eve.get(&format!("{V3}/rooms/{}/aliases", enc(&room)))
        .await
        .expect_err(403, "M_FORBIDDEN");
}

async fn foreign_alias_is_invalid_param(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice.create_room(json!({})).await;
    alice
        .put(
            &alias_path("#elsewhere:other.example.org"),
            &json!({"room_id": room}),
        )
        .await
        .expect_err(400, "M_INVALID_PARAM");
}

async fn alias_deletion_needs_creator_or_power(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    // Alice's alias: bob (joined, power 0) may not delete it.
    let a = alias(&server, "alices");
    alice
        .put(&alias_path(&a), &json!({"room_id": room}))
        .await
        .ok();
    bob.delete(&alias_path(&a))
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Bob's own alias: he may delete it, and so may alice (she has the power).
    let b1 = alias(&server, "bobs-one");
    let b2 = alias(&server, "bobs-two");
    for x in [&b1, &b2] {
        bob.put(&alias_path(x), &json!({"room_id": room}))
            .await
            .ok();
    }
    bob.delete(&alias_path(&b1)).await.ok();
    alice.delete(&alias_path(&b2)).await.ok();
    // A user who is not in the room cannot create an alias for it.
    let eve = server.register("eve").await;
    let (status, body) = eve
        .put(
            &alias_path(&alias(&server, "eves")),
            &json!({"room_id": room}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

async fn deleting_canonical_alias_updates_state(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = alice
        .create_room(json!({"room_alias_name": "primary"}))
        .await;
    let primary = alias(&server, "primary");
    alice.delete(&alias_path(&primary)).await.ok();
    let state = alice
        .get(&format!("{V3}/rooms/{}/state", enc(&room)))
        .await
        .ok();
    let canonical = arr(&state)
        .into_iter()
        .find(|e| e["type"] == "m.room.canonical_alias")
        .map(|e| e["content"].clone())
        .unwrap_or_default();
    assert!(canonical.get("alias").is_none(), "{canonical}");
}
