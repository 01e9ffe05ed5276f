//! Room upgrades (`POST /rooms/{roomId}/upgrade`): the replacement room and its create event,
//! the state carried over, aliases and the directory entry moved, the tombstone, the old room's
//! raised power levels, and the errors.

use crate::prelude::*;

backend_tests!(
    upgrade_carries_state_aliases_and_bans,
    upgrade_locks_the_old_room,
    upgrade_to_v12_keeps_creators_out_of_power_levels,
    upgrade_errors,
    joining_the_new_room_carries_over_settings,
);

async fn upgrade(c: &Client, room: &str, version: &str) -> Resp {
    c.post(
        &format!("{V3}/rooms/{}/upgrade", enc(room)),
        &json!({"new_version": version}),
    )
    .await
}

/// The replacement room of a successful upgrade answer.
fn replacement(resp: Resp) -> String {
    resp.ok()["replacement_room"]
        .as_str()
        .expect("replacement_room")
        .to_owned()
}

async fn upgrade_carries_state_aliases_and_bans(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let old = alice
        .create_room(json!({
            "preset": "public_chat",
            "room_version": "10",
            "name": "Old town",
            "topic": "what we talk about",
            "room_alias_name": "town",
            "visibility": "public",
            "creation_content": {"type": "m.space"},
            "initial_state": [{"type": "m.room.encryption", "state_key": "",
                               "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
        }))
        .await;
    bob.join(&old).await;
    carol.join(&old).await;
    alice
        .moderate("ban", &old, &carol.user_id, Some("spam"))
        .await
        .ok();

    let new = replacement(upgrade(&alice, &old, "12").await);
    assert_ne!(new, old);

    let create = alice.state(&new, "m.room.create", "").await.ok();
    assert_eq!(create["room_version"], "12");
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(create["type"], "m.space");
    assert_eq!(
        alice.state(&new, "m.room.name", "").await.ok()["name"],
        "Old town"
    );
    assert_eq!(
        alice.state(&new, "m.room.topic", "").await.ok()["topic"],
        "what we talk about"
    );
    assert_eq!(
        alice.state(&new, "m.room.join_rules", "").await.ok()["join_rule"],
        "public"
    );
    assert_eq!(
        alice.state(&new, "m.room.encryption", "").await.ok()["algorithm"],
        "m.megolm.v1.aes-sha2"
    );
    let ban = alice
        .state(&new, "m.room.member", &carol.user_id)
        .await
        .ok();
    assert_eq!(ban["membership"], "ban", "{ban}");
    assert_eq!(ban["reason"], "spam");

    // The alias, the canonical alias and the directory entry moved.
    let resolved = alice
        .get(&format!(
            "{V3}/directory/room/{}",
            enc(&alias(&server, "town"))
        ))
        .await
        .ok();
    assert_eq!(resolved["room_id"], new.as_str());
    assert_eq!(
        alice.state(&new, "m.room.canonical_alias", "").await.ok()["alias"],
        alias(&server, "town")
    );
    let old_canonical = alice.state(&old, "m.room.canonical_alias", "").await.ok();
    assert!(old_canonical.get("alias").is_none(), "{old_canonical}");
    let listed = alice.get(&format!("{V3}/publicRooms")).await.ok();
    let ids: Vec<String> = arr(&listed["chunk"])
        .iter()
        .filter_map(|r| r["room_id"].as_str().map(str::to_owned))
        .collect();
    assert!(ids.contains(&new) && !ids.contains(&old), "{listed}");

    // The tombstone points at the new room; members see it and can follow.
    let tomb = alice.state(&old, "m.room.tombstone", "").await.ok();
    assert_eq!(tomb["replacement_room"], new.as_str());
    bob.sync_until(None, |s| {
        arr(&s["rooms"]["join"][old.as_str()]["timeline"]["events"])
            .iter()
            .any(|e| e["type"] == "m.room.tombstone")
    })
    .await;
    bob.join(&new).await;
    bob.send_text(&new, "made it").await;
    // A banned user stays out.
    carol.join_raw(&new).await.expect_err(403, "M_FORBIDDEN");
}

async fn upgrade_locks_the_old_room(b: Backend) {
    let server = start(b).await;
    let (alice, bob, old) = public_room_with_two(&server).await;
    upgrade(&alice, &old, "11").await.ok();
    let pl = alice.state(&old, "m.room.power_levels", "").await.ok();
    assert!(pl["events_default"].as_i64() >= Some(50), "{pl}");
    assert!(pl["invite"].as_i64() >= Some(50), "{pl}");
    // Ordinary members can no longer talk or invite in the old room.
    bob.try_send_event(
        &old,
        "m.room.message",
        &json!({"msgtype": "m.text", "body": "hello?"}),
    )
    .await
    .expect("request")
    .expect_err(403, "M_FORBIDDEN");
    let dave = server.register("dave").await;
    bob.invite(&old, &dave.user_id)
        .await
        .expect_err(403, "M_FORBIDDEN");
    // Upgrading the same room twice is refused.
    upgrade(&alice, &old, "12")
        .await
        .expect_err(400, "M_BAD_STATE");
}

async fn upgrade_to_v12_keeps_creators_out_of_power_levels(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let old = alice
        .create_room(json!({"preset": "private_chat", "room_version": "11",
                            "invite": [bob.user_id]}))
        .await;
    bob.join(&old).await;
    // bob gets 100 in the old room: he may upgrade too.
    let mut pl = alice.state(&old, "m.room.power_levels", "").await.ok();
    pl["users"][bob.user_id.as_str()] = json!(100);
    alice
        .put_state(&old, "m.room.power_levels", "", &pl)
        .await
        .ok();
    let new = bob
        .post(
            &format!("{V3}/rooms/{}/upgrade", enc(&old)),
            &json!({"new_version": "12", "additional_creators": [alice.user_id]}),
        )
        .await;
    let new = replacement(new);
    let create = bob.state(&new, "m.room.create", "").await.ok();
    assert_eq!(create["additional_creators"], json!([alice.user_id]));
    let new_pl = bob.state(&new, "m.room.power_levels", "").await.ok();
    assert!(
        new_pl["users"].get(bob.user_id.as_str()).is_none(),
        "{new_pl}"
    );
    assert!(
        new_pl["users"].get(alice.user_id.as_str()).is_none(),
        "{new_pl}"
    );
    // alice, an additional creator, can change state there once she joins (private room:
    // she is invited by bob first).
    bob.invite(&new, &alice.user_id).await.ok();
    alice.join(&new).await;
    alice
        .put_state(&new, "m.room.topic", "", &json!({"topic": "ours"}))
        .await
        .ok();
}

async fn upgrade_errors(b: Backend) {
    let server = start(b).await;
    let (alice, bob, room) = public_room_with_two(&server).await;
    upgrade(&alice, &room, "99")
        .await
        .expect_err(400, "M_UNSUPPORTED_ROOM_VERSION");
    // bob has no power to send a tombstone.
    upgrade(&bob, &room, "12")
        .await
        .expect_err(403, "M_FORBIDDEN");
    let carol = server.register("carol").await;
    upgrade(&carol, &room, "12")
        .await
        .expect_err(403, "M_FORBIDDEN");
    alice
        .post(&format!("{V3}/rooms/{}/upgrade", enc(&room)), &json!({}))
        .await
        .expect_err(400, "M_MISSING_PARAM");
    upgrade(&alice, "!nowhere:localhost", "12")
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn joining_the_new_room_carries_over_settings(b: Backend) {
    let server = start(b).await;
    let (alice, bob, old) = public_room_with_two(&server).await;
    let bob_id = enc(&bob.user_id);
    bob.put(
        &format!("{V3}/user/{bob_id}/rooms/{}/tags/m.favourite", enc(&old)),
        &json!({"order": 0.25}),
    )
    .await
    .ok();
    bob.put(
        &format!("{V3}/pushrules/global/room/{}", enc(&old)),
        &json!({"actions": []}),
    )
    .await
    .ok();
    bob.put(
        &format!("{V3}/user/{bob_id}/account_data/m.direct"),
        &json!({alice.user_id.clone(): [old.clone()]}),
    )
    .await
    .ok();

    let new = replacement(upgrade(&alice, &old, "12").await);
    bob.join(&new).await;

    let tags = bob
        .get(&format!("{V3}/user/{bob_id}/rooms/{}/tags", enc(&new)))
        .await
        .ok();
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.25, "{tags}");
    let rule = bob
        .get(&format!("{V3}/pushrules/global/room/{}", enc(&new)))
        .await
        .ok();
    assert_eq!(rule["actions"], json!([]), "{rule}");
    let direct = bob
        .get(&format!("{V3}/user/{bob_id}/account_data/m.direct"))
        .await
        .ok();
    assert_eq!(
        direct[alice.user_id.as_str()],
        json!([old, new]),
        "{direct}"
    );
}
