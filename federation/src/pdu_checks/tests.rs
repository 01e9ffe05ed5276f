//! Unit tests for the receipt checks, with events built and signed here.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, RoomVersionId, server_name, signatures::PublicKeyMap,
};
use serde_json::json;

use super::*;
use crate::ServerSigningKey;

fn key(version: &str, seed: u8) -> ServerSigningKey {
    let text = format!("ed25519 {version} {}", STANDARD_NO_PAD.encode([seed; 32]));
    ServerSigningKey::parse(&text).expect("test key")
}

fn obj(v: serde_json::Value) -> CanonicalJsonObject {
    serde_json::from_value(v).expect("canonical object")
}

fn keymap(entries: &[(&str, &ServerSigningKey)]) -> PublicKeyMap {
    let mut map = PublicKeyMap::new();
    for (server, k) in entries {
        add_public_key(&mut map, server, &k.key_id, &k.public_key_base64()).expect("key");
    }
    map
}

fn message_v10() -> CanonicalJsonObject {
    obj(json!({
        "type": "m.room.message",
        "room_id": "!room:a.test",
        "sender": "@alice:a.test",
        "origin": "a.test",
        "content": { "msgtype": "m.text", "body": "hello" },
        "depth": 7,
        "prev_events": ["$prevprevprev"],
        "auth_events": ["$createcreate", "$powerpower", "$membermember"],
        "origin_server_ts": 1_700_000_000_000_u64,
    }))
}

fn sign(
    mut pdu: CanonicalJsonObject,
    k: &ServerSigningKey,
    server: &str,
    v: &RoomVersionId,
) -> CanonicalJsonObject {
    let rules = v.rules().expect("rules");
    ruma::signatures::hash_and_sign_event(server, k.key_pair(), &mut pdu, &rules.redaction)
        .expect("sign");
    pdu
}

fn to_json(pdu: &CanonicalJsonObject) -> String {
    serde_json::to_string(pdu).expect("json")
}

fn set(pdu: &mut CanonicalJsonObject, field: &str, v: serde_json::Value) {
    pdu.insert(field.to_owned(), serde_json::from_value(v).expect("value"));
}

#[test]
fn good_event_passes() {
    let k = key("k1", 1);
    let v = RoomVersionId::V10;
    let pdu = sign(message_v10(), &k, "a.test", &v);
    let expected_id = crate::pdu::event_id_of(&pdu, &v.rules().expect("rules")).expect("id");
    let checked = check_pdu(&to_json(&pdu), &v, &keymap(&[("a.test", &k)])).expect("valid");
    assert_eq!(checked.event_id, expected_id);
    assert_eq!(checked.room_id.as_str(), "!room:a.test");
    assert_eq!(checked.sender.as_str(), "@alice:a.test");
    assert!(!checked.redacted);
    assert_eq!(checked.object, pdu);
}

#[test]
fn required_keys_list_sender_server_and_key_ids() {
    let k = key("k1", 1);
    let v = RoomVersionId::V10;
    let pdu = sign(message_v10(), &k, "a.test", &v);
    let prepared = prepare_pdu(pdu, &v).expect("format");
    assert_eq!(prepared.required_keys.len(), 1);
    let ids = &prepared.required_keys[server_name!("a.test")];
    assert_eq!(ids.iter().collect::<Vec<_>>(), vec!["ed25519:k1"]);
    assert!(prepared.enforce_key_validity);
    assert_eq!(u64::from(prepared.origin_server_ts.0), 1_700_000_000_000);
}

#[test]
fn restricted_join_needs_authorising_server() {
    let ka = key("k1", 1);
    let kb = key("kb", 2);
    let v = RoomVersionId::V10;
    let mut pdu = message_v10();
    set(&mut pdu, "type", json!("m.room.member"));
    set(&mut pdu, "state_key", json!("@alice:a.test"));
    set(
        &mut pdu,
        "content",
        json!({ "membership": "join", "join_authorised_via_users_server": "@bob:b.test" }),
    );
    let pdu = sign(pdu, &ka, "a.test", &v);
    // Only the joining server signed: the resident server's signature is missing.
    let err = prepare_pdu(pdu.clone(), &v).expect_err("needs b.test");
    assert!(
        matches!(&err, PduCheckError::MissingSignature(s) if s == "b.test"),
        "{err}"
    );

    let pdu = sign(pdu, &kb, "b.test", &v);
    let prepared = prepare_pdu(pdu, &v).expect("format");
    let servers: Vec<_> = prepared.required_servers().map(|s| s.as_str()).collect();
    assert_eq!(servers, vec!["a.test", "b.test"]);
    let checked = prepared
        .verify(&keymap(&[("a.test", &ka), ("b.test", &kb)]))
        .expect("valid");
    assert!(!checked.redacted);
}

#[test]
fn third_party_invite_does_not_need_sender_server() {
    let k = key("k1", 1);
    let v = RoomVersionId::V10;
    let mut pdu = message_v10();
    set(&mut pdu, "type", json!("m.room.member"));
    set(&mut pdu, "state_key", json!("@carol:c.test"));
    set(
        &mut pdu,
        "content",
        json!({ "membership": "invite", "third_party_invite": {
            "display_name": "carol", "signed": { "mxid": "@carol:c.test", "token": "t", "signatures": {} }
        }}),
    );
    let pdu = sign(pdu, &k, "c.test", &v);
    let prepared = prepare_pdu(pdu, &v).expect("format");
    assert!(prepared.required_keys.is_empty());
    prepared
        .verify(&PublicKeyMap::new())
        .expect("no signatures required");
}

#[test]
fn bad_signature_is_rejected() {
    let k = key("k1", 1);
    let impostor = key("k1", 9); // same key id, other key
    let v = RoomVersionId::V10;
    let pdu = sign(message_v10(), &k, "a.test", &v);
    let err = check_pdu(&to_json(&pdu), &v, &keymap(&[("a.test", &impostor)])).expect_err("bad");
    assert!(matches!(err, PduCheckError::BadSignature(_)), "{err}");

    // Changing a field covered by the signature (not content) breaks it too.
    let mut tampered = pdu.clone();
    set(&mut tampered, "depth", json!(8));
    let err = check_pdu(&to_json(&tampered), &v, &keymap(&[("a.test", &k)])).expect_err("bad");
    assert!(matches!(err, PduCheckError::BadSignature(_)), "{err}");
}

#[test]
fn missing_sender_server_signature() {
    let k = key("k1", 1);
    let v = RoomVersionId::V10;
    let mut pdu = message_v10();
    set(&mut pdu, "sender", json!("@mallory:b.test"));
    let pdu = sign(pdu, &k, "a.test", &v);
    let err = prepare_pdu(pdu.clone(), &v).expect_err("unsigned by b.test");
    assert!(
        matches!(&err, PduCheckError::MissingSignature(s) if s == "b.test"),
        "{err}"
    );
}

#[test]
fn missing_or_unknown_keys() {
    let k = key("k1", 1);
    let other = key("k2", 1);
    let v = RoomVersionId::V10;
    let json = to_json(&sign(message_v10(), &k, "a.test", &v));
    let err = check_pdu(&json, &v, &PublicKeyMap::new()).expect_err("no keys");
    assert!(
        matches!(&err, PduCheckError::MissingKeys(s) if s == "a.test"),
        "{err}"
    );
    let err = check_pdu(&json, &v, &keymap(&[("a.test", &other)])).expect_err("unknown key id");
    assert!(
        matches!(&err, PduCheckError::NoKnownKey(s) if s == "a.test"),
        "{err}"
    );
}

#[test]
fn tampered_content_is_redacted() {
    let k = key("k1", 1);
    let v = RoomVersionId::V10;
    let pdu = sign(message_v10(), &k, "a.test", &v);
    let original_id = crate::pdu::event_id_of(&pdu, &v.rules().expect("rules")).expect("id");
    let mut tampered = pdu.clone();
    set(
        &mut tampered,
        "content",
        json!({ "msgtype": "m.text", "body": "evil" }),
    );
    let checked = check_pdu(&to_json(&tampered), &v, &keymap(&[("a.test", &k)])).expect("ok");
    assert!(checked.redacted);
    assert_eq!(checked.event_id, original_id);
    assert_eq!(
        checked.object.get("content"),
        Some(&CanonicalJsonValue::Object(CanonicalJsonObject::new()))
    );
    // An already-redacted copy verifies the same way.
    let redacted = ruma::canonical_json::redact(pdu, &v.rules().expect("rules").redaction, None)
        .expect("redact");
    let checked = check_pdu(&to_json(&redacted), &v, &keymap(&[("a.test", &k)])).expect("ok");
    assert!(checked.redacted);
    assert_eq!(checked.event_id, original_id);
}

#[test]
fn oversized_pdu_is_rejected() {
    let v = RoomVersionId::V10;
    let mut pdu = message_v10();
    set(&mut pdu, "content", json!({ "body": "x".repeat(70_000) }));
    set(&mut pdu, "hashes", json!({ "sha256": "abc" }));
    set(&mut pdu, "signatures", json!({}));
    let err = prepare_pdu(pdu, &v).expect_err("too large");
    assert!(
        matches!(err, PduCheckError::TooLarge { size } if size > MAX_PDU_BYTES),
        "{err}"
    );

    // Just under the limit passes the format check.
    let k = key("k1", 1);
    let mut pdu = message_v10();
    set(&mut pdu, "content", json!({ "body": "x".repeat(60_000) }));
    let pdu = sign(pdu, &k, "a.test", &v);
    check_pdu(&to_json(&pdu), &v, &keymap(&[("a.test", &k)])).expect("fits");
}

#[test]
fn non_canonical_json_is_rejected() {
    for bad in [
        r#"{"depth": 1.5}"#,
        r#"{"depth": 9007199254740993}"#,
        r#"[1, 2]"#,
        r#"{"depth": "#,
    ] {
        let err = parse_pdu(bad).expect_err(bad);
        assert!(
            matches!(err, PduCheckError::NotCanonicalJson(_)),
            "{bad}: {err}"
        );
    }
}

#[test]
fn malformed_fields_are_rejected() {
    let k = key("k1", 1);
    let v = RoomVersionId::V10;
    let good = sign(message_v10(), &k, "a.test", &v);
    type Edit = fn(&mut CanonicalJsonObject);
    let cases: Vec<(&str, Edit)> = vec![
        ("depth", |p| {
            p.remove("depth");
        }),
        ("depth", |p| set(p, "depth", json!(-1))),
        ("depth", |p| set(p, "depth", json!("7"))),
        ("type", |p| {
            p.remove("type");
        }),
        ("type", |p| set(p, "type", json!("t".repeat(300)))),
        ("type", |p| set(p, "type", json!("m.room.\u{0}name"))),
        ("sender", |p| {
            p.remove("sender");
        }),
        ("sender", |p| set(p, "sender", json!("alice"))),
        ("room_id", |p| {
            p.remove("room_id");
        }),
        ("room_id", |p| set(p, "room_id", json!(5))),
        ("content", |p| {
            p.remove("content");
        }),
        ("content", |p| set(p, "content", json!("hi"))),
        ("origin_server_ts", |p| {
            p.remove("origin_server_ts");
        }),
        ("origin_server_ts", |p| {
            set(p, "origin_server_ts", json!("now"))
        }),
        ("prev_events", |p| {
            p.remove("prev_events");
        }),
        ("prev_events", |p| set(p, "prev_events", json!("$a"))),
        ("prev_events", |p| set(p, "prev_events", json!([1]))),
        ("prev_events", |p| set(p, "prev_events", json!(["nosigil"]))),
        ("prev_events", |p| {
            let many: Vec<String> = (0..21).map(|i| format!("$e{i}")).collect();
            set(p, "prev_events", json!(many))
        }),
        ("auth_events", |p| {
            let many: Vec<String> = (0..11).map(|i| format!("$e{i}")).collect();
            set(p, "auth_events", json!(many))
        }),
        ("auth_events", |p| {
            p.remove("auth_events");
        }),
        ("state_key", |p| set(p, "state_key", json!(3))),
        ("state_key", |p| set(p, "state_key", json!("a\u{0}b"))),
        ("hashes", |p| {
            p.remove("hashes");
        }),
        ("hashes", |p| set(p, "hashes", json!({ "md5": "x" }))),
        ("signatures", |p| {
            p.remove("signatures");
        }),
        ("unsigned", |p| set(p, "unsigned", json!([]))),
        ("event_id", |p| set(p, "event_id", json!("$notthehash"))),
    ];
    for (field, edit) in cases {
        let mut pdu = good.clone();
        edit(&mut pdu);
        let err = prepare_pdu(pdu, &v).expect_err(field);
        let got = match &err {
            PduCheckError::MissingField(f) | PduCheckError::InvalidField { field: f, .. } => *f,
            other => panic!("{field}: unexpected {other}"),
        };
        assert_eq!(got, field, "{err}");
    }
}

#[test]
fn unsupported_room_version() {
    let v = RoomVersionId::try_from("org.example.custom").expect("custom id");
    let err = prepare_pdu(message_v10(), &v).expect_err("unknown version");
    assert!(matches!(err, PduCheckError::UnsupportedVersion(_)));
}

fn message_v1() -> CanonicalJsonObject {
    obj(json!({
        "type": "m.room.message",
        "room_id": "!room:a.test",
        "sender": "@alice:a.test",
        "event_id": "$abc123:a.test",
        "content": { "body": "old" },
        "depth": 2,
        "prev_events": [["$prev:a.test", { "sha256": "aGFzaA" }]],
        "auth_events": [["$create:a.test", { "sha256": "aGFzaA" }]],
        "origin_server_ts": 1000,
    }))
}

#[test]
fn room_v1_shapes() {
    let k = key("k1", 1);
    let v = RoomVersionId::V1;
    let pdu = sign(message_v1(), &k, "a.test", &v);
    let checked = check_pdu(&to_json(&pdu), &v, &keymap(&[("a.test", &k)])).expect("valid v1");
    assert_eq!(checked.event_id.as_str(), "$abc123:a.test");
    let prepared = prepare_pdu(pdu.clone(), &v).expect("format");
    assert!(!prepared.enforce_key_validity);

    // v1 needs an event_id...
    let mut no_id = pdu.clone();
    no_id.remove("event_id");
    assert!(matches!(
        prepare_pdu(no_id, &v),
        Err(PduCheckError::MissingField("event_id"))
    ));
    // ...with a server name, signed by that server too.
    let mut foreign = message_v1();
    set(&mut foreign, "event_id", json!("$abc123:b.test"));
    let foreign = sign(foreign, &k, "a.test", &v);
    let err = prepare_pdu(foreign, &v).expect_err("b.test must sign");
    assert!(
        matches!(&err, PduCheckError::MissingSignature(s) if s == "b.test"),
        "{err}"
    );

    // v3-style string references are wrong in v1.
    let mut strings = pdu.clone();
    set(&mut strings, "prev_events", json!(["$prev:a.test"]));
    let err = prepare_pdu(strings, &v).expect_err("pairs needed");
    assert!(
        matches!(
            err,
            PduCheckError::InvalidField {
                field: "prev_events",
                ..
            }
        ),
        "{err}"
    );

    // And v1-style pairs are wrong in v10; so are ids with a server name.
    let mut pairs = message_v10();
    set(
        &mut pairs,
        "auth_events",
        json!([["$a:a.test", { "sha256": "aGFzaA" }]]),
    );
    let v10 = RoomVersionId::V10;
    let err = prepare_pdu(sign(pairs, &k, "a.test", &v10), &v10).expect_err("strings needed");
    assert!(
        matches!(
            err,
            PduCheckError::InvalidField {
                field: "auth_events",
                ..
            }
        ),
        "{err}"
    );
    let mut old_ids = message_v10();
    set(&mut old_ids, "prev_events", json!(["$a:a.test"]));
    let err = prepare_pdu(sign(old_ids, &k, "a.test", &v10), &v10).expect_err("hash ids needed");
    assert!(
        matches!(
            err,
            PduCheckError::InvalidField {
                field: "prev_events",
                ..
            }
        ),
        "{err}"
    );
}

fn create_v12() -> CanonicalJsonObject {
    obj(json!({
        "type": "m.room.create",
        "state_key": "",
        "sender": "@alice:a.test",
        "content": { "room_version": "12" },
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
        "origin_server_ts": 1000,
    }))
}

#[test]
fn room_v12_shapes() {
    let k = key("k1", 1);
    let v = RoomVersionId::V12;
    let create = sign(create_v12(), &k, "a.test", &v);
    let checked = check_pdu(&to_json(&create), &v, &keymap(&[("a.test", &k)])).expect("create");
    assert_eq!(
        checked.room_id.as_str(),
        format!("!{}", checked.event_id.as_str().trim_start_matches('$'))
    );
    assert_eq!(claimed_room_id(&create), None);

    // A v12 create event must not carry a room id.
    let mut with_room = create_v12();
    set(&mut with_room, "room_id", json!("!x:a.test"));
    let err = prepare_pdu(sign(with_room, &k, "a.test", &v), &v).expect_err("no room_id");
    assert!(
        matches!(
            err,
            PduCheckError::InvalidField {
                field: "room_id",
                ..
            }
        ),
        "{err}"
    );

    // Before v12 a create event needs one.
    let err = prepare_pdu(
        sign(create_v12(), &k, "a.test", &RoomVersionId::V11),
        &RoomVersionId::V11,
    )
    .expect_err("room_id needed");
    assert!(
        matches!(err, PduCheckError::MissingField("room_id")),
        "{err}"
    );

    // Other v12 events must not list the create event in auth_events.
    let create_id = checked.event_id.clone();
    let mut msg = message_v10();
    set(&mut msg, "room_id", json!(checked.room_id.as_str()));
    set(&mut msg, "auth_events", json!([create_id.as_str()]));
    let err = prepare_pdu(sign(msg.clone(), &k, "a.test", &v), &v).expect_err("create listed");
    assert!(
        matches!(
            err,
            PduCheckError::InvalidField {
                field: "auth_events",
                ..
            }
        ),
        "{err}"
    );
    set(&mut msg, "auth_events", json!(["$powerpower"]));
    let msg = sign(msg, &k, "a.test", &v);
    assert_eq!(claimed_room_id(&msg), Some(checked.room_id.clone()));
    let ok = check_pdu(&to_json(&msg), &v, &keymap(&[("a.test", &k)])).expect("v12 message");
    assert_eq!(ok.room_id, checked.room_id);
}
