//! Federation queries and EDUs beyond rooms: the server endpoints other servers call
//! (profile, directory, public rooms, devices and keys, hierarchy, media, OpenID), asked by a
//! fake server with signed requests, and the client API asking a second Ganglion node (remote
//! profiles, public rooms of another server, remote keys, device-list changes, send-to-device
//! across servers).

use complement_tests::FederationOptions;
use complement_tests::fake::FakeServer;

use crate::prelude::*;

backend_tests!(
    signed_queries_answered_for_local_users,
    devices_and_keys_for_other_servers,
    space_hierarchy_for_other_servers,
    media_and_openid_for_other_servers,
    inbound_to_device_deduplicated,
    remote_profile_directory_and_keys,
);

const FED_DEADLINE: Duration = Duration::from_secs(60);
const FED: &str = "/_matrix/federation/v1";

fn fed_opts() -> ServerOptions {
    ServerOptions {
        federation: Some(FederationOptions::default()),
        ..Default::default()
    }
}

async fn fed_get(fake: &FakeServer, a: &Server, path: &str) -> Resp {
    fake.request(&a.server_name, &a.fed_url(), Method::GET, path, None)
        .await
}

async fn fed_post(fake: &FakeServer, a: &Server, path: &str, body: &Value) -> Resp {
    fake.request(&a.server_name, &a.fed_url(), Method::POST, path, Some(body))
        .await
}

/// Uploads fresh device keys and `n` one-time keys for the client's device.
async fn upload_keys(c: &Client, n: usize) -> crypto::DeviceKeys {
    let dk = crypto::DeviceKeys::new(&c.user_id, &c.device_id);
    let otks = dk.one_time_keys(&c.user_id, &c.device_id, "a", n);
    c.post(
        &format!("{V3}/keys/upload"),
        &json!({"device_keys": dk.device_keys, "one_time_keys": otks}),
    )
    .await
    .ok();
    dk
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + FED_DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn signed_queries_answered_for_local_users(b: Backend) {
    let a = start_with(b, fed_opts()).await;
    let fake = FakeServer::start().await;
    let alice = a.register("alice").await;
    alice
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
            &json!({"displayname": "Alice A"}),
        )
        .await
        .ok();
    let room = alice
        .create_room(json!({
            "preset": "public_chat", "visibility": "public",
            "room_alias_name": "queries", "name": "Query room",
        }))
        .await;

    // Profiles: whole, one field, unknown and foreign users.
    let p = fed_get(
        &fake,
        &a,
        &format!("{FED}/query/profile?user_id={}", enc(&alice.user_id)),
    )
    .await
    .ok();
    assert_eq!(p["displayname"], "Alice A", "{p}");
    let p = fed_get(
        &fake,
        &a,
        &format!(
            "{FED}/query/profile?user_id={}&field=displayname",
            enc(&alice.user_id)
        ),
    )
    .await
    .ok();
    assert_eq!(p, json!({"displayname": "Alice A"}));
    fed_get(
        &fake,
        &a,
        &format!("{FED}/query/profile?user_id={}", enc(&a.user_id("nobody"))),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    fed_get(
        &fake,
        &a,
        &format!("{FED}/query/profile?user_id={}", enc(&fake.user_id("x"))),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    // Unsigned requests are refused.
    let (status, _) = a
        .fed_get(&format!(
            "{FED}/query/profile?user_id={}",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(status, 401);

    // Aliases: ours resolve with our server listed; others are not answered for.
    let d = fed_get(
        &fake,
        &a,
        &format!(
            "{FED}/query/directory?room_alias={}",
            enc(&alias(&a, "queries"))
        ),
    )
    .await
    .ok();
    assert_eq!(d["room_id"], room);
    assert!(arr(&d["servers"]).contains(&json!(a.server_name)), "{d}");
    fed_get(
        &fake,
        &a,
        &format!(
            "{FED}/query/directory?room_alias={}",
            enc(&format!("#x:{}", fake.server_name))
        ),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");

    // The public room directory, GET and filtered POST.
    let list = fed_get(&fake, &a, &format!("{FED}/publicRooms")).await.ok();
    assert!(
        arr(&list["chunk"]).iter().any(|r| r["room_id"] == room),
        "{list}"
    );
    let hit = fed_post(
        &fake,
        &a,
        &format!("{FED}/publicRooms"),
        &json!({"filter": {"generic_search_term": "query"}}),
    )
    .await
    .ok();
    assert!(
        arr(&hit["chunk"]).iter().any(|r| r["room_id"] == room),
        "{hit}"
    );
    let miss = fed_post(
        &fake,
        &a,
        &format!("{FED}/publicRooms"),
        &json!({"filter": {"generic_search_term": "zzzz-nothing"}}),
    )
    .await
    .ok();
    assert!(arr(&miss["chunk"]).is_empty(), "{miss}");
}

async fn devices_and_keys_for_other_servers(b: Backend) {
    let a = start_with(b, fed_opts()).await;
    let fake = FakeServer::start().await;
    let alice = a.register("alice").await;
    let dk = upload_keys(&alice, 2).await;

    let d = fed_get(
        &fake,
        &a,
        &format!("{FED}/user/devices/{}", enc(&alice.user_id)),
    )
    .await
    .ok();
    assert_eq!(d["user_id"], alice.user_id);
    assert!(d["stream_id"].is_u64(), "{d}");
    let dev = arr(&d["devices"])
        .into_iter()
        .find(|x| x["device_id"] == alice.device_id.as_str())
        .unwrap_or_else(|| panic!("alice's device missing: {d}"));
    assert_eq!(
        dev["keys"]["keys"][format!("ed25519:{}", alice.device_id)],
        dk.device_keys["keys"][format!("ed25519:{}", alice.device_id)]
    );
    fed_get(
        &fake,
        &a,
        &format!("{FED}/user/devices/{}", enc(&fake.user_id("x"))),
    )
    .await
    .expect_err(404, "M_NOT_FOUND");

    let q = fed_post(
        &fake,
        &a,
        &format!("{FED}/user/keys/query"),
        &json!({"device_keys": {alice.user_id.as_str(): [], fake.user_id("x"): []}}),
    )
    .await
    .ok();
    assert!(
        q["device_keys"][&alice.user_id][&alice.device_id].is_object(),
        "{q}"
    );
    assert!(q["device_keys"].get(fake.user_id("x")).is_none(), "{q}");

    let c = fed_post(
        &fake,
        &a,
        &format!("{FED}/user/keys/claim"),
        &json!({"one_time_keys": {alice.user_id.as_str(): {alice.device_id.as_str(): "signed_curve25519"}}}),
    )
    .await
    .ok();
    let keys = c["one_time_keys"][&alice.user_id][&alice.device_id]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(keys.len(), 1, "{c}");
    assert!(keys.keys().all(|k| k.starts_with("signed_curve25519:")));
}

async fn space_hierarchy_for_other_servers(b: Backend) {
    let a = start_with(b, fed_opts()).await;
    let fake = FakeServer::start().await;
    let alice = a.register("alice").await;
    let space = alice
        .create_room(json!({
            "preset": "public_chat", "name": "Space",
            "creation_content": {"type": "m.space"},
        }))
        .await;
    let open = alice
        .create_room(json!({"preset": "public_chat", "name": "Open child"}))
        .await;
    let closed = alice
        .create_room(json!({"preset": "private_chat", "name": "Closed child"}))
        .await;
    for (child, suggested) in [(&open, true), (&closed, false)] {
        alice
            .send_state(
                &space,
                "m.space.child",
                child,
                &json!({"via": [a.server_name], "suggested": suggested}),
            )
            .await;
    }
    let h = fed_get(&fake, &a, &format!("{FED}/hierarchy/{}", enc(&space)))
        .await
        .ok();
    assert_eq!(h["room"]["room_id"], space, "{h}");
    assert_eq!(h["room"]["room_type"], "m.space", "{h}");
    assert_eq!(arr(&h["room"]["children_state"]).len(), 2, "{h}");
    let children = arr(&h["children"]);
    assert!(
        children
            .iter()
            .any(|c| c["room_id"] == open && c["name"] == "Open child"),
        "{h}"
    );
    assert!(!children.iter().any(|c| c["room_id"] == closed), "{h}");
    assert!(
        arr(&h["inaccessible_children"]).contains(&json!(closed)),
        "{h}"
    );

    let h = fed_get(
        &fake,
        &a,
        &format!("{FED}/hierarchy/{}?suggested_only=true", enc(&space)),
    )
    .await
    .ok();
    assert_eq!(arr(&h["room"]["children_state"]).len(), 1, "{h}");

    // A private room is not shown to a server with no members in it.
    fed_get(&fake, &a, &format!("{FED}/hierarchy/{}", enc(&closed)))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn media_and_openid_for_other_servers(b: Backend) {
    let a = start_with(b, fed_opts()).await;
    let fake = FakeServer::start().await;
    let alice = a.register("alice").await;

    let body = "federated media bytes";
    let resp = alice
        .raw(
            Method::POST,
            "/_matrix/media/v3/upload?filename=f.txt",
            Some(body),
            &[("content-type", "text/plain")],
            true,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let uri: Value = resp.json().await.expect("upload answer");
    let media_id = uri["content_uri"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .expect("mxc uri")
        .to_owned();
    let (status, text) = fed_get(&fake, &a, &format!("{FED}/media/download/{media_id}")).await;
    assert_eq!(status, 200, "{text}");
    let text = text.as_str().unwrap_or_default().to_owned();
    let json_part = text
        .find("Content-Type: application/json")
        .expect("JSON part");
    let file_part = text.find("Content-Type: text/plain").expect("file part");
    assert!(json_part < file_part, "{text}");
    assert!(text.contains(body), "{text}");
    fed_get(&fake, &a, &format!("{FED}/media/download/nosuchmedia"))
        .await
        .expect_err(404, "M_NOT_FOUND");

    // OpenID: a token for alice, checked by a third party without a server signature.
    let t = alice
        .post(
            &format!("{V3}/user/{}/openid/request_token", enc(&alice.user_id)),
            &json!({}),
        )
        .await
        .ok();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["matrix_server_name"], a.server_name);
    assert!(t["expires_in"].as_u64().is_some_and(|s| s > 0), "{t}");
    let token = t["access_token"].as_str().expect("token");
    let who = a
        .fed_get(&format!(
            "{FED}/openid/userinfo?access_token={}",
            enc(token)
        ))
        .await
        .ok();
    assert_eq!(who["sub"], alice.user_id);
    a.fed_get(&format!("{FED}/openid/userinfo?access_token=nope"))
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    // Only for oneself.
    let bob = a.register("bob").await;
    bob.post(
        &format!("{V3}/user/{}/openid/request_token", enc(&alice.user_id)),
        &json!({}),
    )
    .await
    .expect_err(403, "M_FORBIDDEN");
}

fn to_device_events(sync: &Value) -> Vec<Value> {
    arr(&sync["to_device"]["events"])
}

async fn inbound_to_device_deduplicated(b: Backend) {
    let a = start_with(b, fed_opts()).await;
    let fake = FakeServer::start().await;
    let alice = a.register("alice").await;
    let since = alice.sync_token().await;
    let edu = |sender: &str, body: &str, message_id: &str| {
        json!({"edu_type": "m.direct_to_device", "content": {
            "sender": sender, "type": "m.test", "message_id": message_id,
            "messages": {alice.user_id.as_str(): {"*": {"body": body}}},
        }})
    };
    let sender = fake.user_id("remote");
    // One genuine message, sent twice (same message id); one claiming another server's sender.
    for e in [
        edu(&sender, "hello", "m1"),
        edu(&sender, "hello", "m1"),
        edu("@mallory:elsewhere.example", "forged", "m2"),
    ] {
        fake.send_transaction(&a.server_name, &a.fed_url(), vec![], vec![e])
            .await
            .ok();
    }
    let marker = edu(&sender, "last", "m3");
    fake.send_transaction(&a.server_name, &a.fed_url(), vec![], vec![marker])
        .await
        .ok();
    let seen = alice
        .sync_collect_until(Some(&since), None, |s| {
            to_device_events(s)
                .iter()
                .any(|e| e["content"]["body"] == "last")
        })
        .await;
    let all: Vec<Value> = seen.iter().flat_map(to_device_events).collect();
    let hello: Vec<&Value> = all
        .iter()
        .filter(|e| e["content"]["body"] == "hello")
        .collect();
    assert_eq!(hello.len(), 1, "{all:?}");
    assert_eq!(hello[0]["sender"], sender);
    assert_eq!(hello[0]["type"], "m.test");
    assert!(
        !all.iter().any(|e| e["content"]["body"] == "forged"),
        "{all:?}"
    );
}

async fn remote_profile_directory_and_keys(b: Backend) {
    let (a, bn) = tokio::join!(start_with(b, fed_opts()), start_with(b, fed_opts()));
    let (alice, bob) = tokio::join!(a.register("alice"), bn.register("bob"));
    alice
        .put(
            &format!("{V3}/profile/{}/displayname", enc(&alice.user_id)),
            &json!({"displayname": "Alice Remote"}),
        )
        .await
        .ok();
    let room = alice
        .create_room(json!({
            "preset": "public_chat", "visibility": "public",
            "room_alias_name": "remote", "name": "Remote lobby",
        }))
        .await;

    // Profiles of another server's users.
    let p = bob
        .get(&format!("{V3}/profile/{}", enc(&alice.user_id)))
        .await
        .ok();
    assert_eq!(p["displayname"], "Alice Remote", "{p}");
    let p = bob
        .get(&format!("{V3}/profile/{}/displayname", enc(&alice.user_id)))
        .await
        .ok();
    assert_eq!(p["displayname"], "Alice Remote", "{p}");
    bob.get(&format!("{V3}/profile/{}", enc(&a.user_id("nobody"))))
        .await
        .expect_err(404, "M_NOT_FOUND");

    // Another server's public rooms.
    let list = bob
        .get(&format!("{V3}/publicRooms?server={}", enc(&a.server_name)))
        .await
        .ok();
    assert!(
        arr(&list["chunk"]).iter().any(|r| r["room_id"] == room),
        "{list}"
    );
    let list = bob
        .post(
            &format!("{V3}/publicRooms?server={}", enc(&a.server_name)),
            &json!({"filter": {"generic_search_term": "lobby"}}),
        )
        .await
        .ok();
    assert!(
        arr(&list["chunk"]).iter().any(|r| r["room_id"] == room),
        "{list}"
    );

    // Share a room, then keys.
    assert_eq!(bob.join(&alias(&a, "remote")).await, room);
    wait_until("alice sees bob joined", || async {
        let (s, m) = alice
            .get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
            .await;
        s == 200 && m["joined"][&bob.user_id].is_object()
    })
    .await;
    upload_keys(&alice, 3).await;
    let ghost = "@ghost:127.0.0.1:9";
    let q = bob
        .post(
            &format!("{V3}/keys/query"),
            &json!({"device_keys": {alice.user_id.as_str(): [], ghost: []}}),
        )
        .await
        .ok();
    assert!(
        q["device_keys"][&alice.user_id][&alice.device_id].is_object(),
        "{q}"
    );
    assert!(q["failures"]["127.0.0.1:9"].is_object(), "{q}");
    let c = bob
        .post(
            &format!("{V3}/keys/claim"),
            &json!({"one_time_keys": {alice.user_id.as_str(): {alice.device_id.as_str(): "signed_curve25519"}}}),
        )
        .await
        .ok();
    assert_eq!(
        c["one_time_keys"][&alice.user_id][&alice.device_id]
            .as_object()
            .map(|m| m.len()),
        Some(1),
        "{c}"
    );

    // A new device of alice's shows in bob's device_lists.changed.
    let since = bob.sync_token().await;
    let alice2 = alice.login_again().await;
    upload_keys(&alice2, 1).await;
    bob.sync_until(Some(&since), |s| {
        arr(&s["device_lists"]["changed"]).contains(&json!(alice.user_id))
    })
    .await;
    let q = bob
        .post(
            &format!("{V3}/keys/query"),
            &json!({"device_keys": {alice.user_id.as_str(): []}}),
        )
        .await
        .ok();
    assert!(
        q["device_keys"][&alice.user_id][&alice2.device_id].is_object(),
        "{q}"
    );

    // Cross-signing keys reach the other server too (m.signing_key_update), with the
    // self-signing key; the user-signing key stays home.
    let since = bob.sync_token().await;
    let master = crypto::Ed25519Key::generate();
    let ssk_key = crypto::Ed25519Key::generate();
    let usk_key = crypto::Ed25519Key::generate();
    let mut ssk = crypto::cross_signing_key(&alice.user_id, "self_signing", &ssk_key);
    let mut usk = crypto::cross_signing_key(&alice.user_id, "user_signing", &usk_key);
    master.add_signature(&mut ssk, &alice.user_id, &master.public_b64());
    master.add_signature(&mut usk, &alice.user_id, &master.public_b64());
    alice
        .post(
            &format!("{V3}/keys/device_signing/upload"),
            &json!({
                "master_key": crypto::cross_signing_key(&alice.user_id, "master", &master),
                "self_signing_key": ssk,
                "user_signing_key": usk,
            }),
        )
        .await
        .ok();
    bob.sync_until(Some(&since), |s| {
        arr(&s["device_lists"]["changed"]).contains(&json!(alice.user_id))
    })
    .await;
    let q = bob
        .post(
            &format!("{V3}/keys/query"),
            &json!({"device_keys": {alice.user_id.as_str(): []}}),
        )
        .await
        .ok();
    let master_id = format!("ed25519:{}", master.public_b64());
    assert!(
        q["master_keys"][&alice.user_id]["keys"][&master_id].is_string(),
        "{q}"
    );
    assert!(q["self_signing_keys"][&alice.user_id].is_object(), "{q}");
    assert!(q["user_signing_keys"].get(&alice.user_id).is_none(), "{q}");

    // Send-to-device across servers, to one device and to all.
    let since = alice.sync_token().await;
    bob.put(
        &format!("{V3}/sendToDevice/m.test/{}", bob.next_txn()),
        &json!({"messages": {alice.user_id.as_str(): {alice.device_id.as_str(): {"n": 1}}}}),
    )
    .await
    .ok();
    alice
        .sync_until(Some(&since), |s| {
            to_device_events(s)
                .iter()
                .any(|e| e["sender"] == bob.user_id.as_str() && e["content"]["n"] == 1)
        })
        .await;
    let since2 = alice2.sync_token().await;
    bob.put(
        &format!("{V3}/sendToDevice/m.test/{}", bob.next_txn()),
        &json!({"messages": {alice.user_id.as_str(): {"*": {"n": 2}}}}),
    )
    .await
    .ok();
    alice2
        .sync_until(Some(&since2), |s| {
            to_device_events(s).iter().any(|e| e["content"]["n"] == 2)
        })
        .await;
}
