//! End-to-end encryption key management: upload, query, claim, changes, cross-signing,
//! signatures, and send-to-device.

use crate::prelude::*;
use crypto::{DeviceKeys, Ed25519Key, cross_signing_key};

backend_tests!(
    upload_and_query_device_keys,
    claim_one_time_keys,
    fallback_key_is_used_when_one_time_keys_run_out,
    key_changes,
    cross_signing_keys,
    signatures_upload,
    send_to_device_specific_and_wildcard,
    send_to_device_is_idempotent,
    upload_rejects_keys_of_another_device,
    replacing_cross_signing_keys_needs_auth,
    key_backup_version_is_not_found,
    send_to_device_to_unknown_user_is_dropped,
    concurrent_claims_get_distinct_keys,
    own_device_changes_reach_a_user_in_no_rooms,
);

async fn upload_keys(c: &Client, otks: usize) -> DeviceKeys {
    let keys = DeviceKeys::new(&c.user_id, &c.device_id);
    let otk = keys.one_time_keys(&c.user_id, &c.device_id, "A", otks);
    let resp = c
        .post(
            &format!("{V3}/keys/upload"),
            &json!({"device_keys": keys.device_keys, "one_time_keys": otk}),
        )
        .await
        .ok();
    if otks > 0 {
        assert_eq!(
            resp["one_time_key_counts"]["signed_curve25519"], otks,
            "{resp}"
        );
    }
    keys
}

async fn otk_count(c: &Client) -> u64 {
    let resp = c.post(&format!("{V3}/keys/upload"), &json!({})).await.ok();
    resp["one_time_key_counts"]["signed_curve25519"]
        .as_u64()
        .unwrap_or(0)
}

async fn query(c: &Client, user: &str) -> Value {
    c.post(
        &format!("{V3}/keys/query"),
        &json!({"device_keys": {user: []}}),
    )
    .await
    .ok()
}

async fn upload_and_query_device_keys(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    let keys = upload_keys(&alice, 5).await;
    let body = query(&bob, &alice.user_id).await;
    let dev = &body["device_keys"][alice.user_id.as_str()][alice.device_id.as_str()];
    assert!(dev.is_object(), "alice's device missing: {body}");
    for field in ["user_id", "device_id", "algorithms", "keys"] {
        assert_eq!(dev[field], keys.device_keys[field], "{field}: {body}");
    }
    let sig_id = format!("ed25519:{}", alice.device_id);
    assert_eq!(
        dev["signatures"][alice.user_id.as_str()][sig_id.as_str()],
        keys.device_keys["signatures"][alice.user_id.as_str()][sig_id.as_str()],
        "{body}"
    );
    // Querying a specific device, and one with no keys.
    let other = alice.login_again().await;
    let body = bob
        .post(
            &format!("{V3}/keys/query"),
            &json!({"device_keys": {alice.user_id.clone(): [alice.device_id]}}),
        )
        .await
        .ok();
    let devices = body["device_keys"][alice.user_id.as_str()]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(devices.contains_key(&alice.device_id), "{body}");
    assert!(!devices.contains_key(&other.device_id), "{body}");
}

async fn claim_one_time_keys(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    upload_keys(&alice, 2).await;
    let claim = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let mut claimed_ids = Vec::new();
    for _ in 0..2 {
        let body = bob.post(&format!("{V3}/keys/claim"), &claim).await.ok();
        let map = body["one_time_keys"][alice.user_id.as_str()][alice.device_id.as_str()]
            .as_object()
            .cloned()
            .unwrap_or_else(|| panic!("no key claimed: {body}"));
        assert_eq!(map.len(), 1, "{body}");
        let (id, key) = map.into_iter().next().expect("one key");
        assert!(id.starts_with("signed_curve25519:"), "{id}");
        assert!(key["key"].is_string(), "{key}");
        let sig = format!("ed25519:{}", alice.device_id);
        assert!(
            key["signatures"][alice.user_id.as_str()][sig.as_str()].is_string(),
            "{key}"
        );
        claimed_ids.push(id);
    }
    assert_ne!(
        claimed_ids[0], claimed_ids[1],
        "a one-time key was handed out twice"
    );
    assert_eq!(otk_count(&alice).await, 0);
    // Exhausted: nothing more for that device.
    let body = bob.post(&format!("{V3}/keys/claim"), &claim).await.ok();
    let left = &body["one_time_keys"][alice.user_id.as_str()][alice.device_id.as_str()];
    assert!(
        left.is_null() || left.as_object().is_some_and(|m| m.is_empty()),
        "{body}"
    );
}

async fn fallback_key_is_used_when_one_time_keys_run_out(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    let keys = upload_keys(&alice, 1).await;
    let fallback = keys.signed_curve_key(&alice.user_id, &alice.device_id, true);
    alice
        .post(
            &format!("{V3}/keys/upload"),
            &json!({"fallback_keys": {"signed_curve25519:FB1": fallback}}),
        )
        .await
        .ok();
    let sync = alice.sync(None, 0).await;
    if let Some(types) = sync["device_unused_fallback_key_types"].as_array() {
        assert!(types.contains(&json!("signed_curve25519")), "{sync}");
    }
    let claim = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let first = bob.post(&format!("{V3}/keys/claim"), &claim).await.ok();
    let first_keys = first["one_time_keys"][alice.user_id.as_str()][alice.device_id.as_str()]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        !first_keys.contains_key("signed_curve25519:FB1"),
        "fallback handed out while one-time keys remain: {first}"
    );
    for _ in 0..2 {
        let body = bob.post(&format!("{V3}/keys/claim"), &claim).await.ok();
        let got = body["one_time_keys"][alice.user_id.as_str()][alice.device_id.as_str()]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let key = got
            .get("signed_curve25519:FB1")
            .unwrap_or_else(|| panic!("fallback key not returned: {body}"));
        assert_eq!(key["fallback"], true, "{body}");
    }
}

async fn key_changes(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    let from = alice.sync_token().await;
    let bob2 = bob.login_again().await;
    upload_keys(&bob2, 0).await;
    let sync = alice
        .sync_until(Some(&from), |s| {
            arr(&s["device_lists"]["changed"]).contains(&json!(bob.user_id))
        })
        .await;
    let to = next_batch(&sync);
    let body = alice
        .get(&format!(
            "{V3}/keys/changes?from={}&to={}",
            enc(&from),
            enc(&to)
        ))
        .await
        .ok();
    assert!(
        arr(&body["changed"]).contains(&json!(bob.user_id)),
        "{body}"
    );
    assert!(body["left"].is_array() || body["left"].is_null(), "{body}");
}

struct CrossSigning {
    master: Ed25519Key,
    self_signing: Ed25519Key,
    user_signing: Ed25519Key,
}

async fn upload_cross_signing(c: &Client) -> CrossSigning {
    let cs = CrossSigning {
        master: Ed25519Key::generate(),
        self_signing: Ed25519Key::generate(),
        user_signing: Ed25519Key::generate(),
    };
    let master = cross_signing_key(&c.user_id, "master", &cs.master);
    let mut ssk = cross_signing_key(&c.user_id, "self_signing", &cs.self_signing);
    let mut usk = cross_signing_key(&c.user_id, "user_signing", &cs.user_signing);
    let master_id = cs.master.public_b64();
    cs.master.add_signature(&mut ssk, &c.user_id, &master_id);
    cs.master.add_signature(&mut usk, &c.user_id, &master_id);
    c.uia(
        Method::POST,
        &format!("{V3}/keys/device_signing/upload"),
        json!({"master_key": master, "self_signing_key": ssk, "user_signing_key": usk}),
    )
    .await
    .ok();
    cs
}

async fn cross_signing_keys(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    let cs = upload_cross_signing(&alice).await;
    let key_of = |v: &Value| -> Option<String> {
        v["keys"]
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(|k| k.as_str().map(str::to_owned))
    };
    let body = query(&bob, &alice.user_id).await;
    assert_eq!(
        key_of(&body["master_keys"][alice.user_id.as_str()]),
        Some(cs.master.public_b64()),
        "{body}"
    );
    assert_eq!(
        key_of(&body["self_signing_keys"][alice.user_id.as_str()]),
        Some(cs.self_signing.public_b64()),
        "{body}"
    );
    assert!(
        body["user_signing_keys"][alice.user_id.as_str()].is_null(),
        "user-signing keys are only visible to their owner: {body}"
    );
    let own = query(&alice, &alice.user_id).await;
    assert_eq!(
        key_of(&own["user_signing_keys"][alice.user_id.as_str()]),
        Some(cs.user_signing.public_b64()),
        "{own}"
    );
    assert_eq!(
        own["master_keys"][alice.user_id.as_str()]["usage"],
        json!(["master"])
    );
}

async fn signatures_upload(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    let keys = upload_keys(&alice, 0).await;
    let cs = upload_cross_signing(&alice).await;
    let ssk_id = cs.self_signing.public_b64();
    let mut signed = keys.device_keys.clone();
    cs.self_signing
        .add_signature(&mut signed, &alice.user_id, &ssk_id);
    let body = alice
        .post(
            &format!("{V3}/keys/signatures/upload"),
            &json!({alice.user_id.clone(): {alice.device_id.clone(): signed}}),
        )
        .await
        .ok();
    let failures = &body["failures"];
    assert!(
        failures.is_null() || failures.as_object().is_some_and(|m| m.is_empty()),
        "signature upload failed: {body}"
    );
    let q = query(&bob, &alice.user_id).await;
    let sigs = &q["device_keys"][alice.user_id.as_str()][alice.device_id.as_str()]["signatures"]
        [alice.user_id.as_str()];
    let ssk_sig = format!("ed25519:{ssk_id}");
    assert!(
        sigs[ssk_sig.as_str()].is_string(),
        "cross-signature missing: {q}"
    );
    let dev_sig = format!("ed25519:{}", alice.device_id);
    assert!(
        sigs[dev_sig.as_str()].is_string(),
        "self-signature lost: {q}"
    );

    // A signature that does not verify is reported as a failure and not stored.
    let mut bogus = keys.device_keys.clone();
    let other = Ed25519Key::generate();
    other.add_signature(&mut bogus, &alice.user_id, &ssk_id);
    let body = alice
        .post(
            &format!("{V3}/keys/signatures/upload"),
            &json!({alice.user_id.clone(): {alice.device_id.clone(): bogus}}),
        )
        .await;
    let body = body.ok();
    assert!(
        !body["failures"][alice.user_id.as_str()][alice.device_id.as_str()].is_null(),
        "invalid signature accepted: {body}"
    );
}

async fn send_to_device_specific_and_wildcard(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let bob2 = bob.login_again().await;
    let s1 = bob.sync_token().await;
    let s2 = bob2.sync_token().await;
    alice
        .put(
            &format!("{V3}/sendToDevice/com.example.direct/{}", alice.next_txn()),
            &json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"to": "one"}}}}),
        )
        .await
        .ok();
    alice
        .put(
            &format!("{V3}/sendToDevice/com.example.all/{}", alice.next_txn()),
            &json!({"messages": {bob.user_id.clone(): {"*": {"to": "all"}}}}),
        )
        .await
        .ok();
    let has = |s: &Value, ty: &str| {
        arr(&s["to_device"]["events"])
            .iter()
            .any(|e| e["type"] == ty && e["sender"] == alice.user_id.as_str())
    };
    // Device 1 gets both (in any order, maybe in separate responses).
    let direct = std::cell::Cell::new(false);
    let all = std::cell::Cell::new(false);
    bob.sync_until(Some(&s1), |s| {
        direct.set(direct.get() || has(s, "com.example.direct"));
        all.set(all.get() || has(s, "com.example.all"));
        direct.get() && all.get()
    })
    .await;
    // Device 2 gets only the wildcard one.
    let seen = bob2
        .sync_collect_until(Some(&s2), None, |s| has(s, "com.example.all"))
        .await;
    assert!(
        !seen.iter().any(|s| has(s, "com.example.direct")),
        "message for another device delivered"
    );
}

async fn send_to_device_is_idempotent(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let since = bob.sync_token().await;
    let path = format!("{V3}/sendToDevice/com.example.once/fixed-txn");
    let body = json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"n": 1}}}});
    alice.put(&path, &body).await.ok();
    alice.put(&path, &body).await.ok();
    alice
        .put(
            &format!("{V3}/sendToDevice/com.example.marker/{}", alice.next_txn()),
            &json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {}}}}),
        )
        .await
        .ok();
    let seen = bob
        .sync_collect_until(Some(&since), None, |s| {
            arr(&s["to_device"]["events"])
                .iter()
                .any(|e| e["type"] == "com.example.marker")
        })
        .await;
    let copies: usize = seen
        .iter()
        .map(|s| {
            arr(&s["to_device"]["events"])
                .iter()
                .filter(|e| e["type"] == "com.example.once")
                .count()
        })
        .sum();
    assert_eq!(
        copies, 1,
        "retransmitted to-device message delivered {copies} times"
    );
}

async fn upload_rejects_keys_of_another_device(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let other = alice.login_again().await;
    let keys = DeviceKeys::new(&alice.user_id, &other.device_id);
    let resp = alice
        .post(
            &format!("{V3}/keys/upload"),
            &json!({"device_keys": keys.device_keys}),
        )
        .await;
    assert_eq!(resp.0, 400, "{}", resp.1);
    let body = query(&alice, &alice.user_id).await;
    assert!(
        body["device_keys"][alice.user_id.as_str()][other.device_id.as_str()].is_null(),
        "{body}"
    );
}

async fn replacing_cross_signing_keys_needs_auth(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    // The first upload needs no auth (as clients do right after registration).
    let master = Ed25519Key::generate();
    let first = cross_signing_key(&alice.user_id, "master", &master);
    alice
        .post(
            &format!("{V3}/keys/device_signing/upload"),
            &json!({"master_key": first}),
        )
        .await
        .ok();
    // The same key again is idempotent.
    alice
        .post(
            &format!("{V3}/keys/device_signing/upload"),
            &json!({"master_key": first}),
        )
        .await
        .ok();
    // A different master key needs the password.
    let second = Ed25519Key::generate();
    let body = json!({"master_key": cross_signing_key(&alice.user_id, "master", &second)});
    let resp = alice
        .post(&format!("{V3}/keys/device_signing/upload"), &body)
        .await;
    assert_eq!(resp.0, 401, "{}", resp.1);
    assert!(resp.1["flows"].is_array(), "{}", resp.1);
    alice
        .uia(
            Method::POST,
            &format!("{V3}/keys/device_signing/upload"),
            body,
        )
        .await
        .ok();
    let own = query(&alice, &alice.user_id).await;
    let key = format!("ed25519:{}", second.public_b64());
    assert!(
        own["master_keys"][alice.user_id.as_str()]["keys"][key.as_str()].is_string(),
        "{own}"
    );
    // A self-signing key not signed by the master key is refused.
    let ssk = cross_signing_key(&alice.user_id, "self_signing", &Ed25519Key::generate());
    let resp = alice
        .uia(
            Method::POST,
            &format!("{V3}/keys/device_signing/upload"),
            json!({"self_signing_key": ssk}),
        )
        .await;
    assert_eq!(resp.0, 400, "{}", resp.1);
}

async fn key_backup_version_is_not_found(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    alice
        .get(&format!("{V3}/room_keys/version"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn send_to_device_to_unknown_user_is_dropped(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let nobody = format!("@nobody:{}", alice.server_name);
    alice
        .put(
            &format!("{V3}/sendToDevice/com.example.x/{}", alice.next_txn()),
            &json!({"messages": {nobody: {"*": {"a": 1}}}}),
        )
        .await
        .ok();
}

async fn concurrent_claims_get_distinct_keys(b: Backend) {
    let server = start(b).await;
    let (alice, bob, _room) = public_room_with_two(&server).await;
    upload_keys(&alice, 12).await;
    let claim = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let (bob, claim) = (bob.clone(), claim.clone());
        tasks.spawn(async move { bob.post(&format!("{V3}/keys/claim"), &claim).await.ok() });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(body) = tasks.join_next().await {
        let body = body.expect("claim task");
        let map = body["one_time_keys"][alice.user_id.as_str()][alice.device_id.as_str()]
            .as_object()
            .cloned()
            .unwrap_or_else(|| panic!("no key claimed: {body}"));
        for id in map.keys() {
            assert!(ids.insert(id.clone()), "{id} handed out twice");
        }
    }
    assert_eq!(ids.len(), 12);
    assert_eq!(otk_count(&alice).await, 0);
}

/// A user who shares no room with anyone still hears of their own device changes (a new
/// device's keys), which is how their clients refresh their own keys.
async fn own_device_changes_reach_a_user_in_no_rooms(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let since = alice.sync_token().await;
    let second = alice.login_again().await;
    upload_keys(&second, 0).await;
    alice
        .sync_until(Some(&since), |s| {
            arr(&s["device_lists"]["changed"]).contains(&json!(alice.user_id))
        })
        .await;
}
