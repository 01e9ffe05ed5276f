//! Server-side key backups: backup versions (`/room_keys/version`) and the keys stored in them
//! (`/room_keys/keys`, per backup, room and session).

use crate::prelude::*;

backend_tests!(
    no_backup_is_404,
    create_and_get_versions,
    upload_keys_at_all_levels,
    empty_backup_reads,
    worse_keys_do_not_replace_better_ones,
    better_keys_replace_worse_ones,
    upload_to_wrong_version_is_403,
    delete_keys_at_all_levels,
    delete_version,
    other_users_cannot_see_the_backup,
    update_auth_data,
    invalid_bodies_are_400,
    deactivation_with_a_backup,
    concurrent_writes,
);

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
/// A realistic megolm session id: unpadded base64, with `+` and `/` (percent-encoded in paths).
const SESSION: &str = "ZW5jcnlwdGVk+c2Vzc2lvbi/pZA";

fn version_path(version: &str) -> String {
    format!("{V3}/room_keys/version/{}", enc(version))
}

fn latest_path() -> String {
    format!("{V3}/room_keys/version")
}

fn keys_path(version: &str) -> String {
    format!("{V3}/room_keys/keys?version={}", enc(version))
}

fn room_path(room: &str, version: &str) -> String {
    format!("{V3}/room_keys/keys/{}?version={}", enc(room), enc(version))
}

fn session_path(room: &str, session: &str, version: &str) -> String {
    format!(
        "{V3}/room_keys/keys/{}/{}?version={}",
        enc(room),
        enc(session),
        enc(version)
    )
}

fn auth_data(public_key: &str) -> Value {
    json!({
        "public_key": public_key,
        "signatures": {"@alice:example.org": {"ed25519:DEV": "sig"}},
    })
}

/// Creates a backup version and returns its name.
async fn create(c: &Client, public_key: &str) -> String {
    let body = c
        .post(
            &latest_path(),
            &json!({"algorithm": ALGORITHM, "auth_data": auth_data(public_key)}),
        )
        .await
        .ok();
    body["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no version: {body}"))
        .to_owned()
}

/// A `KeyBackupData` object; `tag` ends up in the session data so tests can tell keys apart.
fn key(verified: bool, first_message_index: u64, forwarded_count: u64, tag: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": verified,
        "session_data": {"ephemeral": "ZXBo", "ciphertext": tag, "mac": "bWFj"},
    })
}

fn etag(body: &Value) -> String {
    body["etag"]
        .as_str()
        .unwrap_or_else(|| panic!("etag must be a string: {body}"))
        .to_owned()
}

async fn no_backup_is_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = format!("!room:{}", server.server_name);
    alice
        .get(&latest_path())
        .await
        .expect_err(404, "M_NOT_FOUND");
    for v in ["1", "abc", "0", "-1"] {
        alice
            .get(&version_path(v))
            .await
            .expect_err(404, "M_NOT_FOUND");
        alice
            .put(&session_path(&room, SESSION, v), &key(false, 0, 0, "x"))
            .await
            .expect_err(404, "M_NOT_FOUND");
        alice
            .get(&keys_path(v))
            .await
            .expect_err(404, "M_NOT_FOUND");
        alice
            .delete(&keys_path(v))
            .await
            .expect_err(404, "M_NOT_FOUND");
        alice
            .delete(&version_path(v))
            .await
            .expect_err(404, "M_NOT_FOUND");
    }
    // Without an access token: 401.
    let (status, body) = alice.anonymous().get(&latest_path()).await;
    assert_eq!(status, 401, "{body}");
}

async fn create_and_get_versions(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    assert_eq!(create(&alice, "key1").await, "1");

    let latest = alice.get(&latest_path()).await.ok();
    assert_eq!(latest["version"], "1", "{latest}");
    assert_eq!(latest["algorithm"], ALGORITHM, "{latest}");
    assert_eq!(latest["auth_data"], auth_data("key1"), "{latest}");
    assert_eq!(latest["count"], 0, "{latest}");
    etag(&latest);
    assert_eq!(alice.get(&version_path("1")).await.ok(), latest);

    assert_eq!(create(&alice, "key2").await, "2");
    let latest = alice.get(&latest_path()).await.ok();
    assert_eq!(latest["version"], "2", "{latest}");
    assert_eq!(latest["auth_data"]["public_key"], "key2", "{latest}");
    // The older version is still readable by name.
    let old = alice.get(&version_path("1")).await.ok();
    assert_eq!(old["auth_data"]["public_key"], "key1", "{old}");

    // Versions are numbers, not strings: "10" comes after "9".
    for n in 3..=11 {
        assert_eq!(create(&alice, &format!("key{n}")).await, n.to_string());
    }
    let latest = alice.get(&latest_path()).await.ok();
    assert_eq!(latest["version"], "11", "{latest}");
    alice
        .get(&version_path("12"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .get(&version_path("01"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn upload_keys_at_all_levels(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let v = create(&alice, "key").await;
    let r1 = format!("!one:{}", server.server_name);
    let r2 = format!("!two:{}", server.server_name);
    let etag0 = etag(&alice.get(&version_path(&v)).await.ok());

    // One session.
    let up = alice
        .put(&session_path(&r1, SESSION, &v), &key(false, 0, 0, "s1"))
        .await
        .ok();
    assert_eq!(up["count"], 1, "{up}");
    let etag1 = etag(&up);
    assert_ne!(etag1, etag0);
    let got = alice.get(&session_path(&r1, SESSION, &v)).await.ok();
    assert_eq!(got, key(false, 0, 0, "s1"));

    // One room, two sessions.
    let up = alice
        .put(
            &room_path(&r1, &v),
            &json!({"sessions": {"sA": key(true, 1, 0, "a"), "sB": key(false, 2, 1, "b")}}),
        )
        .await
        .ok();
    assert_eq!(up["count"], 3, "{up}");
    let etag2 = etag(&up);
    assert_ne!(etag2, etag1);
    let room = alice.get(&room_path(&r1, &v)).await.ok();
    assert_eq!(
        room,
        json!({"sessions": {
            SESSION: key(false, 0, 0, "s1"),
            "sA": key(true, 1, 0, "a"),
            "sB": key(false, 2, 1, "b"),
        }})
    );

    // Several rooms at once.
    let up = alice
        .put(
            &keys_path(&v),
            &json!({"rooms": {
                r2.clone(): {"sessions": {"sC": key(false, 0, 3, "c")}},
                r1.clone(): {"sessions": {"sD": key(true, 0, 0, "d")}},
            }}),
        )
        .await
        .ok();
    assert_eq!(up["count"], 5, "{up}");
    let etag3 = etag(&up);
    assert_ne!(etag3, etag2);

    let all = alice.get(&keys_path(&v)).await.ok();
    let rooms = all["rooms"].as_object().expect("rooms object");
    assert_eq!(rooms.len(), 2, "{all}");
    assert_eq!(
        all["rooms"][&r1]["sessions"].as_object().map(|m| m.len()),
        Some(4),
        "{all}"
    );
    assert_eq!(
        all["rooms"][&r2]["sessions"]["sC"],
        key(false, 0, 3, "c"),
        "{all}"
    );
    assert_eq!(
        all["rooms"][&r1]["sessions"][SESSION],
        key(false, 0, 0, "s1"),
        "{all}"
    );

    // The version reports the same count and etag as the last write.
    let info = alice.get(&version_path(&v)).await.ok();
    assert_eq!(info["count"], 5, "{info}");
    assert_eq!(etag(&info), etag3);

    // An upload that changes nothing (an identical key) keeps the etag.
    let up = alice
        .put(&session_path(&r2, "sC", &v), &key(false, 0, 3, "c"))
        .await
        .ok();
    assert_eq!(up["count"], 5, "{up}");
    assert_eq!(etag(&up), etag3);
    // An empty upload too.
    let up = alice
        .put(&room_path(&r2, &v), &json!({"sessions": {}}))
        .await
        .ok();
    assert_eq!((up["count"].clone(), etag(&up)), (json!(5), etag3));

    // The keys survive a hard kill (they were committed before the answer).
    let mut server = server;
    server.kill9();
    server.start_again().await;
    let all_again = alice.get(&keys_path(&v)).await.ok();
    assert_eq!(all_again, all);
}

async fn empty_backup_reads(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let v = create(&alice, "key").await;
    let room = format!("!nothing:{}", server.server_name);
    assert_eq!(alice.get(&keys_path(&v)).await.ok(), json!({"rooms": {}}));
    assert_eq!(
        alice.get(&room_path(&room, &v)).await.ok(),
        json!({"sessions": {}})
    );
    alice
        .get(&session_path(&room, SESSION, &v))
        .await
        .expect_err(404, "M_NOT_FOUND");
    // Reads of an unknown version are 404, not empty.
    alice
        .get(&room_path(&room, "7"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .get(&session_path(&room, SESSION, "7"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn worse_keys_do_not_replace_better_ones(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let v = create(&alice, "key").await;
    let room = format!("!room:{}", server.server_name);
    // (stored, worse keys that must leave it in place)
    let cases = [
        (
            "unverified",
            (false, 10, 5),
            vec![
                (false, 11, 5),
                (false, 10, 6),
                (false, 11, 6),
                (false, 10, 5),
            ],
        ),
        (
            "verified",
            (true, 10, 5),
            vec![
                (false, 11, 5),
                (false, 10, 6),
                (false, 11, 6),
                // Unverified keys never replace a verified one, even with lower indexes.
                (false, 0, 0),
                (false, 10, 4),
                (true, 11, 5),
                (true, 10, 6),
                (true, 11, 6),
            ],
        ),
    ];
    for (session, (sv, si, sf), worse) in cases {
        let path = session_path(&room, session, &v);
        alice.put(&path, &key(sv, si, sf, "stored")).await.ok();
        let before = etag(&alice.get(&version_path(&v)).await.ok());
        for (wv, wi, wf) in worse {
            let up = alice.put(&path, &key(wv, wi, wf, "worse")).await.ok();
            assert_eq!(etag(&up), before, "a rejected key must not change the etag");
            let got = alice.get(&path).await.ok();
            assert_eq!(
                got,
                key(sv, si, sf, "stored"),
                "{session}: ({wv}, {wi}, {wf}) replaced the stored key"
            );
        }
    }
}

async fn better_keys_replace_worse_ones(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let v = create(&alice, "key").await;
    let room = format!("!room:{}", server.server_name);
    let path = session_path(&room, SESSION, &v);
    let mut last_etag = etag(&alice.put(&path, &key(false, 10, 5, "k0")).await.ok());
    // Each step is better than the one before it.
    for (i, (verified, fmi, fwd)) in [
        (false, 10, 4), // lower forwarded_count
        (false, 9, 7),  // lower first_message_index (forwarded_count does not matter)
        (true, 20, 9),  // verified beats unverified whatever the indexes
        (true, 19, 9),
        (true, 19, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("k{}", i + 1);
        let up = alice.put(&path, &key(verified, fmi, fwd, &tag)).await.ok();
        assert_eq!(up["count"], 1, "{up}");
        let now = etag(&up);
        assert_ne!(now, last_etag, "a replacement must change the etag");
        last_etag = now;
        assert_eq!(
            alice.get(&path).await.ok(),
            key(verified, fmi, fwd, &tag),
            "({verified}, {fmi}, {fwd}) should have replaced the stored key"
        );
    }
    // In a multi-room upload, each session is decided on its own.
    let up = alice
        .put(
            &keys_path(&v),
            &json!({"rooms": {room.clone(): {"sessions": {
                SESSION: key(false, 0, 0, "worse"),
                "new": key(false, 3, 3, "new"),
            }}}}),
        )
        .await
        .ok();
    assert_eq!(up["count"], 2, "{up}");
    assert_eq!(alice.get(&path).await.ok(), key(true, 19, 0, "k5"));
}

async fn upload_to_wrong_version_is_403(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = format!("!room:{}", server.server_name);
    let v1 = create(&alice, "key1").await;
    alice
        .put(&session_path(&room, "old", &v1), &key(false, 0, 0, "old"))
        .await
        .ok();
    let v2 = create(&alice, "key2").await;
    assert_eq!((v1.as_str(), v2.as_str()), ("1", "2"));

    // The old version no longer takes keys, at any level; the error names the current one.
    for (path, body) in [
        (session_path(&room, SESSION, &v1), key(false, 0, 0, "x")),
        (
            room_path(&room, &v1),
            json!({"sessions": {SESSION: key(false, 0, 0, "x")}}),
        ),
        (
            keys_path(&v1),
            json!({"rooms": {room.clone(): {"sessions": {SESSION: key(false, 0, 0, "x")}}}}),
        ),
    ] {
        let err = alice
            .put(&path, &body)
            .await
            .expect_err(403, "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(err["current_version"], "2", "{err}");
    }
    // A version that never existed is 404.
    alice
        .put(&session_path(&room, SESSION, "3"), &key(false, 0, 0, "x"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .put(&session_path(&room, SESSION, "x"), &key(false, 0, 0, "x"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    // The refused uploads stored nothing; the old version's keys are still readable.
    assert_eq!(alice.get(&version_path(&v1)).await.ok()["count"], 1);
    assert_eq!(
        alice.get(&room_path(&room, &v1)).await.ok(),
        json!({"sessions": {"old": key(false, 0, 0, "old")}})
    );
    assert_eq!(alice.get(&version_path(&v2)).await.ok()["count"], 0);
    // The current version takes them.
    let up = alice
        .put(&session_path(&room, SESSION, &v2), &key(false, 0, 0, "x"))
        .await
        .ok();
    assert_eq!(up["count"], 1, "{up}");

    // After the current version is deleted, the previous one is current again.
    alice.delete(&version_path(&v2)).await.ok();
    assert_eq!(alice.get(&latest_path()).await.ok()["version"], "1");
    alice
        .put(&session_path(&room, SESSION, &v1), &key(false, 0, 0, "x"))
        .await
        .ok();
    alice
        .put(&session_path(&room, SESSION, &v2), &key(false, 0, 0, "x"))
        .await
        .expect_err(404, "M_NOT_FOUND");
}

async fn delete_keys_at_all_levels(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let v = create(&alice, "key").await;
    let r1 = format!("!one:{}", server.server_name);
    let r2 = format!("!two:{}", server.server_name);
    let up = alice
        .put(
            &keys_path(&v),
            &json!({"rooms": {
                r1.clone(): {"sessions": {
                    SESSION: key(false, 0, 0, "a"),
                    "s2": key(false, 0, 0, "b"),
                    "s3": key(false, 0, 0, "c"),
                }},
                r2.clone(): {"sessions": {"s4": key(false, 0, 0, "d"), "s5": key(false, 0, 0, "e")}},
            }}),
        )
        .await
        .ok();
    assert_eq!(up["count"], 5, "{up}");
    let mut last = etag(&up);

    // One session.
    let del = alice.delete(&session_path(&r1, SESSION, &v)).await.ok();
    assert_eq!(del["count"], 4, "{del}");
    assert_ne!(etag(&del), last);
    last = etag(&del);
    alice
        .get(&session_path(&r1, SESSION, &v))
        .await
        .expect_err(404, "M_NOT_FOUND");
    assert!(
        alice
            .get(&session_path(&r1, "s2", &v))
            .await
            .ok()
            .is_object()
    );
    // Deleting what is not there changes nothing.
    let del = alice.delete(&session_path(&r1, SESSION, &v)).await.ok();
    assert_eq!((del["count"].clone(), etag(&del)), (json!(4), last.clone()));

    // One room.
    let del = alice.delete(&room_path(&r1, &v)).await.ok();
    assert_eq!(del["count"], 2, "{del}");
    assert_ne!(etag(&del), last);
    last = etag(&del);
    assert_eq!(
        alice.get(&room_path(&r1, &v)).await.ok(),
        json!({"sessions": {}})
    );
    let all = alice.get(&keys_path(&v)).await.ok();
    assert_eq!(all["rooms"].as_object().map(|m| m.len()), Some(1), "{all}");
    assert!(all["rooms"][&r2]["sessions"]["s5"].is_object(), "{all}");

    // Everything.
    let del = alice.delete(&keys_path(&v)).await.ok();
    assert_eq!(del["count"], 0, "{del}");
    assert_ne!(etag(&del), last);
    assert_eq!(alice.get(&keys_path(&v)).await.ok(), json!({"rooms": {}}));
    let info = alice.get(&version_path(&v)).await.ok();
    assert_eq!(info["count"], 0, "{info}");
    assert_eq!(etag(&info), etag(&del));
    // The version itself stays.
    assert_eq!(alice.get(&latest_path()).await.ok()["version"], v);
}

async fn delete_version(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = format!("!room:{}", server.server_name);
    let v1 = create(&alice, "key1").await;
    alice
        .put(&session_path(&room, SESSION, &v1), &key(false, 0, 0, "a"))
        .await
        .ok();
    assert_eq!(alice.delete(&version_path(&v1)).await.ok(), json!({}));

    alice
        .get(&version_path(&v1))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .get(&latest_path())
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .delete(&version_path(&v1))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .get(&keys_path(&v1))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .get(&session_path(&room, SESSION, &v1))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .put(&session_path(&room, SESSION, &v1), &key(false, 0, 0, "a"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    alice
        .put(
            &version_path(&v1),
            &json!({"algorithm": ALGORITHM, "auth_data": auth_data("k")}),
        )
        .await
        .expect_err(404, "M_NOT_FOUND");

    // A new backup gets a fresh number and starts empty.
    let v2 = create(&alice, "key2").await;
    assert_eq!(v2, "2");
    let info = alice.get(&latest_path()).await.ok();
    assert_eq!(
        (info["version"].clone(), info["count"].clone()),
        (json!("2"), json!(0))
    );
    assert_eq!(alice.get(&keys_path(&v2)).await.ok(), json!({"rooms": {}}));
}

async fn other_users_cannot_see_the_backup(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = format!("!room:{}", server.server_name);
    let v = create(&alice, "alice-key").await;
    alice
        .put(
            &session_path(&room, SESSION, &v),
            &key(true, 0, 0, "secret"),
        )
        .await
        .ok();

    bob.get(&latest_path()).await.expect_err(404, "M_NOT_FOUND");
    bob.get(&version_path(&v))
        .await
        .expect_err(404, "M_NOT_FOUND");
    bob.get(&keys_path(&v)).await.expect_err(404, "M_NOT_FOUND");
    bob.get(&session_path(&room, SESSION, &v))
        .await
        .expect_err(404, "M_NOT_FOUND");
    bob.put(&session_path(&room, SESSION, &v), &key(true, 0, 0, "bob"))
        .await
        .expect_err(404, "M_NOT_FOUND");
    bob.delete(&keys_path(&v))
        .await
        .expect_err(404, "M_NOT_FOUND");
    bob.delete(&version_path(&v))
        .await
        .expect_err(404, "M_NOT_FOUND");

    // Bob's own backup is numbered on its own and holds only his keys.
    assert_eq!(create(&bob, "bob-key").await, "1");
    assert_eq!(bob.get(&keys_path("1")).await.ok(), json!({"rooms": {}}));
    bob.put(&session_path(&room, SESSION, "1"), &key(false, 5, 5, "bob"))
        .await
        .ok();

    // Alice's backup is untouched.
    assert_eq!(
        alice.get(&session_path(&room, SESSION, &v)).await.ok(),
        key(true, 0, 0, "secret")
    );
    let info = alice.get(&latest_path()).await.ok();
    assert_eq!(info["auth_data"]["public_key"], "alice-key", "{info}");
    assert_eq!(info["count"], 1, "{info}");
}

async fn update_auth_data(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = format!("!room:{}", server.server_name);
    let v = create(&alice, "before").await;
    let up = alice
        .put(&session_path(&room, SESSION, &v), &key(false, 0, 0, "a"))
        .await
        .ok();

    // Without a version in the body.
    assert_eq!(
        alice
            .put(
                &version_path(&v),
                &json!({"algorithm": ALGORITHM, "auth_data": auth_data("after")}),
            )
            .await
            .ok(),
        json!({})
    );
    let info = alice.get(&version_path(&v)).await.ok();
    assert_eq!(info["auth_data"], auth_data("after"), "{info}");
    // The keys are untouched.
    assert_eq!((info["count"].clone(), etag(&info)), (json!(1), etag(&up)));

    // With the matching version in the body.
    alice
        .put(
            &version_path(&v),
            &json!({"algorithm": ALGORITHM, "auth_data": auth_data("again"), "version": v}),
        )
        .await
        .ok();
    assert_eq!(
        alice.get(&latest_path()).await.ok()["auth_data"]["public_key"],
        "again"
    );

    // A different version in the body, or a different algorithm: 400, nothing changes.
    alice
        .put(
            &version_path(&v),
            &json!({"algorithm": ALGORITHM, "auth_data": auth_data("x"), "version": "2"}),
        )
        .await
        .expect_err(400, "M_INVALID_PARAM");
    alice
        .put(
            &version_path(&v),
            &json!({"algorithm": "org.example.other", "auth_data": auth_data("x")}),
        )
        .await
        .expect_err(400, "M_INVALID_PARAM");
    assert_eq!(
        alice.get(&latest_path()).await.ok()["auth_data"]["public_key"],
        "again"
    );

    // Unknown versions: 404.
    for unknown in ["2", "abc"] {
        alice
            .put(
                &version_path(unknown),
                &json!({"algorithm": ALGORITHM, "auth_data": auth_data("x")}),
            )
            .await
            .expect_err(404, "M_NOT_FOUND");
    }

    // An older (not current) version may still be updated.
    let v2 = create(&alice, "second").await;
    alice
        .put(
            &version_path(&v),
            &json!({"algorithm": ALGORITHM, "auth_data": auth_data("old-updated")}),
        )
        .await
        .ok();
    assert_eq!(
        alice.get(&version_path(&v)).await.ok()["auth_data"]["public_key"],
        "old-updated"
    );
    assert_eq!(
        alice.get(&version_path(&v2)).await.ok()["auth_data"]["public_key"],
        "second"
    );
}

async fn invalid_bodies_are_400(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = format!("!room:{}", server.server_name);
    for body in [
        json!({"auth_data": {}}),
        json!({"algorithm": ALGORITHM}),
        json!({"algorithm": 5, "auth_data": {}}),
        json!({"algorithm": ALGORITHM, "auth_data": "nope"}),
    ] {
        let (status, resp) = alice.post(&latest_path(), &body).await;
        assert_eq!(status, 400, "{body} -> {resp}");
    }
    // Nothing was created.
    alice
        .get(&latest_path())
        .await
        .expect_err(404, "M_NOT_FOUND");

    let v = create(&alice, "key").await;
    let mut good = key(false, 0, 0, "a");
    for (field, bad) in [
        ("first_message_index", json!(-1)),
        ("first_message_index", json!("0")),
        ("forwarded_count", json!(1.5)),
        ("is_verified", json!("true")),
        ("session_data", json!("opaque")),
    ] {
        let mut body = good.clone();
        body[field] = bad;
        let (status, resp) = alice.put(&session_path(&room, SESSION, &v), &body).await;
        assert_eq!(status, 400, "{body} -> {resp}");
        // One bad key refuses the whole upload.
        let (status, resp) = alice
            .put(
                &room_path(&room, &v),
                &json!({"sessions": {"fine": key(false, 0, 0, "f"), SESSION: body}}),
            )
            .await;
        assert_eq!(status, 400, "{resp}");
    }
    if let Some(obj) = good.as_object_mut() {
        obj.remove("session_data");
    }
    let (status, resp) = alice.put(&session_path(&room, SESSION, &v), &good).await;
    assert_eq!(status, 400, "{resp}");
    // Missing version parameter.
    let (status, resp) = alice
        .get(&format!("{V3}/room_keys/keys/{}", enc(&room)))
        .await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(alice.get(&version_path(&v)).await.ok()["count"], 0);
}

async fn deactivation_with_a_backup(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = format!("!room:{}", server.server_name);
    let v = create(&alice, "key").await;
    alice
        .put(&session_path(&room, SESSION, &v), &key(false, 0, 0, "a"))
        .await
        .ok();
    alice
        .uia(Method::POST, &format!("{V3}/account/deactivate"), json!({}))
        .await
        .ok();
    alice
        .get(&latest_path())
        .await
        .expect_err(401, "M_UNKNOWN_TOKEN");
    // Other users' backups are unaffected.
    let bob = server.register("bob").await;
    assert_eq!(create(&bob, "bob").await, "1");
}

async fn concurrent_writes(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let room = format!("!room:{}", server.server_name);

    // Parallel creates get distinct, consecutive versions.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let alice = alice.clone();
        tasks.spawn(async move { create(&alice, &format!("k{i}")).await });
    }
    let mut versions = std::collections::BTreeSet::new();
    while let Some(v) = tasks.join_next().await {
        let v: u32 = v.expect("create task").parse().expect("numeric version");
        assert!(versions.insert(v), "version {v} handed out twice");
    }
    assert_eq!(versions, (1..=8).collect());
    let v = alice.get(&latest_path()).await.ok()["version"]
        .as_str()
        .map(str::to_owned)
        .expect("latest version");
    assert_eq!(v, "8");
    let etag0 = etag(&alice.get(&version_path(&v)).await.ok());

    // Parallel uploads of different sessions all land, and each moves the etag.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..12 {
        let (alice, path) = (alice.clone(), session_path(&room, &format!("s{i}"), &v));
        tasks.spawn(async move { alice.put(&path, &key(false, 0, 0, "k")).await.ok() });
    }
    let mut etags = std::collections::BTreeSet::new();
    while let Some(up) = tasks.join_next().await {
        let up = up.expect("upload task");
        assert!(etags.insert(etag(&up)), "etag repeated: {up}");
    }
    let info = alice.get(&version_path(&v)).await.ok();
    assert_eq!(info["count"], 12, "{info}");
    // The etag is that of the last upload to commit; none repeats the one before.
    assert!(etags.contains(&etag(&info)), "{info}");
    assert!(!etags.contains(&etag0), "{etag0}");
}
