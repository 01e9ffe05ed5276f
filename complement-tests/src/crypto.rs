//! Canonical JSON, ed25519 signing and the Synapse shared-secret registration MAC.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// Matrix canonical JSON: object keys sorted by code point, no insignificant whitespace,
/// UTF-8 strings left unescaped except where JSON requires it.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Unpadded standard base64, as Matrix uses for keys and signatures.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// An ed25519 key pair for device keys and cross-signing keys.
pub struct Ed25519Key {
    key: SigningKey,
}

impl Ed25519Key {
    pub fn generate() -> Ed25519Key {
        let secret: [u8; 32] = rand::random();
        Ed25519Key {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The key with this 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Ed25519Key {
        Ed25519Key {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The public key, unpadded base64.
    pub fn public_b64(&self) -> String {
        b64(&self.key.verifying_key().to_bytes())
    }

    /// Signs the canonical JSON of `object` without its `signatures` and `unsigned` members
    /// and returns the unpadded base64 signature.
    pub fn sign_json(&self, object: &Value) -> String {
        let mut stripped = object.clone();
        if let Some(map) = stripped.as_object_mut() {
            map.remove("signatures");
            map.remove("unsigned");
        }
        let sig = self.key.sign(canonical_json(&stripped).as_bytes());
        b64(&sig.to_bytes())
    }

    /// Adds this key's signature to `object.signatures[user_id]["ed25519:" + key_id]`.
    pub fn add_signature(&self, object: &mut Value, user_id: &str, key_id: &str) {
        let sig = self.sign_json(object);
        if !object["signatures"].is_object() {
            object["signatures"] = json!({});
        }
        if !object["signatures"][user_id].is_object() {
            object["signatures"][user_id] = json!({});
        }
        object["signatures"][user_id][format!("ed25519:{key_id}")] = json!(sig);
    }
}

/// A device's identity keys plus the signed `device_keys` object for `/keys/upload`.
pub struct DeviceKeys {
    pub ed25519: Ed25519Key,
    pub curve25519: String,
    pub device_keys: Value,
}

impl DeviceKeys {
    /// Builds and self-signs device keys for `user_id`/`device_id`.
    pub fn new(user_id: &str, device_id: &str) -> DeviceKeys {
        let ed25519 = Ed25519Key::generate();
        let curve25519 = b64(&rand::random::<[u8; 32]>());
        let mut device_keys = json!({
            "user_id": user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device_id}"): curve25519,
                format!("ed25519:{device_id}"): ed25519.public_b64(),
            },
        });
        ed25519.add_signature(&mut device_keys, user_id, device_id);
        DeviceKeys {
            ed25519,
            curve25519,
            device_keys,
        }
    }

    /// `n` signed curve25519 one-time keys, keyed `signed_curve25519:<id>`, ids prefixed so
    /// that several batches don't collide.
    pub fn one_time_keys(&self, user_id: &str, device_id: &str, prefix: &str, n: usize) -> Value {
        let mut map = serde_json::Map::new();
        for i in 0..n {
            map.insert(
                format!("signed_curve25519:{prefix}{i:04}"),
                self.signed_curve_key(user_id, device_id, false),
            );
        }
        Value::Object(map)
    }

    /// One signed curve25519 key object (optionally marked as a fallback key).
    pub fn signed_curve_key(&self, user_id: &str, device_id: &str, fallback: bool) -> Value {
        let mut key = json!({"key": b64(&rand::random::<[u8; 32]>())});
        if fallback {
            key["fallback"] = json!(true);
        }
        self.ed25519.add_signature(&mut key, user_id, device_id);
        key
    }
}

/// A cross-signing key object (`master`, `self_signing` or `user_signing`) for `user_id`,
/// keyed by its own public key.
pub fn cross_signing_key(user_id: &str, usage: &str, key: &Ed25519Key) -> Value {
    let public = key.public_b64();
    json!({
        "user_id": user_id,
        "usage": [usage],
        "keys": { format!("ed25519:{public}"): public },
    })
}

/// The MAC for Synapse's `/_synapse/admin/v1/register`: hex HMAC-SHA1 keyed with the shared
/// secret over `nonce \0 username \0 password \0 ("admin" | "notadmin")`.
pub fn registration_mac(
    shared_secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(shared_secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(nonce.as_bytes());
    mac.update(b"\x00");
    mac.update(username.as_bytes());
    mac.update(b"\x00");
    mac.update(password.as_bytes());
    mac.update(b"\x00");
    mac.update(if admin { b"admin" } else { b"notadmin" });
    hex::encode(mac.finalize().into_bytes())
}

// --------------------------------------------------------------------------------------------
// Federation: server keys, X-Matrix request signing, PDU hashes and signatures
// --------------------------------------------------------------------------------------------

/// Decodes Matrix base64 (standard alphabet, padding optional). `None` when invalid.
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok()
}

/// Unpadded URL-safe base64, as room versions 4+ use for event ids.
pub fn b64_url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `sig_b64` is a valid ed25519 signature by `public_b64` over the canonical JSON of
/// `object` without its `signatures` and `unsigned` members.
pub fn verify_json(public_b64: &str, object: &Value, sig_b64: &str) -> bool {
    use ed25519_dalek::Verifier as _;
    let (Some(public), Some(sig)) = (unb64(public_b64), unb64(sig_b64)) else {
        return false;
    };
    let Ok(public) = <[u8; 32]>::try_from(public.as_slice()) else {
        return false;
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&public) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig) else {
        return false;
    };
    let mut stripped = object.clone();
    if let Some(map) = stripped.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    key.verify(canonical_json(&stripped).as_bytes(), &sig)
        .is_ok()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// The content hash of a PDU (`hashes.sha256`): SHA-256 over the canonical JSON of the event
/// without `unsigned`, `signatures` and `hashes`, unpadded standard base64.
pub fn content_hash(event: &Value) -> String {
    let mut e = event.clone();
    if let Some(map) = e.as_object_mut() {
        map.remove("unsigned");
        map.remove("signatures");
        map.remove("hashes");
    }
    b64(&sha256(canonical_json(&e).as_bytes()))
}

/// The redaction algorithm of room versions 11 and 12 (the versions the tests create).
pub fn redact(event: &Value) -> Value {
    const TOP: &[&str] = &[
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    ];
    let Some(map) = event.as_object() else {
        return event.clone();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in map {
        if TOP.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    let content = map.get("content").cloned().unwrap_or_else(|| json!({}));
    let keep: &[&str] = match map.get("type").and_then(Value::as_str).unwrap_or("") {
        "m.room.member" => &[
            "membership",
            "join_authorised_via_users_server",
            "third_party_invite",
        ],
        "m.room.create" => return finish_redact(out, content),
        "m.room.join_rules" => &["join_rule", "allow"],
        "m.room.power_levels" => &[
            "ban",
            "events",
            "events_default",
            "invite",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        ],
        "m.room.history_visibility" => &["history_visibility"],
        "m.room.redaction" => &["redacts"],
        _ => &[],
    };
    let mut kept = serde_json::Map::new();
    if let Some(c) = content.as_object() {
        for (k, v) in c {
            if keep.contains(&k.as_str()) {
                let v = if k == "third_party_invite" {
                    json!({"signed": v["signed"].clone()})
                } else {
                    v.clone()
                };
                kept.insert(k.clone(), v);
            }
        }
    }
    finish_redact(out, Value::Object(kept))
}

fn finish_redact(mut out: serde_json::Map<String, Value>, content: Value) -> Value {
    out.insert("content".to_owned(), content);
    Value::Object(out)
}

/// The reference hash of a PDU (room versions 4+): SHA-256 over the canonical JSON of the
/// redacted event without `signatures` and `unsigned`, unpadded URL-safe base64.
pub fn reference_hash(event: &Value) -> String {
    let mut e = redact(event);
    if let Some(map) = e.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
        map.remove("event_id");
    }
    b64_url(&sha256(canonical_json(&e).as_bytes()))
}

/// The event id of a PDU in room versions 4+: `$` + its reference hash.
pub fn event_id(event: &Value) -> String {
    format!("${}", reference_hash(event))
}

/// A homeserver's signing key: signs key responses, X-Matrix request headers and PDUs.
pub struct ServerKey {
    pub server_name: String,
    /// `ed25519:<version>`.
    pub key_id: String,
    pub key: Ed25519Key,
}

impl ServerKey {
    /// A fresh key `ed25519:<version>` for `server_name`.
    pub fn generate(server_name: &str, version: &str) -> ServerKey {
        ServerKey {
            server_name: server_name.to_owned(),
            key_id: format!("ed25519:{version}"),
            key: Ed25519Key::generate(),
        }
    }

    /// Adds this key's signature to `object.signatures[server_name][key_id]`.
    pub fn sign(&self, object: &mut Value) {
        let version = self.key_id.trim_start_matches("ed25519:");
        self.key.add_signature(object, &self.server_name, version);
    }

    /// The signed `GET /_matrix/key/v2/server` response for this key.
    pub fn key_response(&self, valid_until_ts: u64) -> Value {
        let mut body = json!({
            "server_name": self.server_name,
            "valid_until_ts": valid_until_ts,
            "verify_keys": { &self.key_id: {"key": self.key.public_b64()} },
            "old_verify_keys": {},
        });
        self.sign(&mut body);
        body
    }

    /// The `Authorization` header value for a federation request (`uri` is the path and query
    /// exactly as sent).
    pub fn x_matrix(
        &self,
        method: &str,
        uri: &str,
        destination: &str,
        content: Option<&Value>,
    ) -> String {
        let mut request = json!({
            "method": method,
            "uri": uri,
            "origin": self.server_name,
            "destination": destination,
        });
        if let Some(c) = content {
            request["content"] = c.clone();
        }
        let sig = self.key.sign_json(&request);
        format!(
            "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{sig}\"",
            self.server_name, destination, self.key_id
        )
    }

    /// Fills in `hashes.sha256` and adds this key's signature (over the redacted event), as an
    /// origin server does before sending a PDU. Returns the event id (room versions 4+).
    pub fn hash_and_sign_event(&self, event: &mut Value) -> String {
        if let Some(map) = event.as_object_mut() {
            map.remove("event_id");
            map.remove("signatures");
        }
        event["hashes"] = json!({"sha256": content_hash(event)});
        let sig = self.key.sign_json(&redact(event));
        if !event["signatures"].is_object() {
            event["signatures"] = json!({});
        }
        if !event["signatures"][&self.server_name].is_object() {
            event["signatures"][&self.server_name] = json!({});
        }
        event["signatures"][&self.server_name][&self.key_id] = json!(sig);
        event_id(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_strips_whitespace() {
        let v = json!({"b": 1, "a": {"d": [1, 2], "c": "é"}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":"é","d":[1,2]},"b":1}"#);
    }

    #[test]
    fn registration_mac_matches_reference() {
        // Reference values computed with Python's hmac module:
        // hmac.new(b"secret", b"abc\x00bob\x00pw\x00notadmin", hashlib.sha1).hexdigest()
        assert_eq!(
            registration_mac("secret", "abc", "bob", "pw", false),
            "8ea9b87daa4e529ce4a0832f09be19bbe837a0af"
        );
        assert_eq!(
            registration_mac("secret", "abc", "bob", "pw", true),
            "7135c477a04354f80777f35ba4505ef76b59e196"
        );
    }

    #[test]
    fn signatures_verify() {
        use ed25519_dalek::Verifier as _;
        let key = Ed25519Key::generate();
        let mut obj = json!({"b": 2, "a": 1, "unsigned": {"x": 1}});
        key.add_signature(&mut obj, "@u:h", "DEV");
        let sig = obj["signatures"]["@u:h"]["ed25519:DEV"]
            .as_str()
            .expect("sig");
        let sig_bytes = STANDARD_NO_PAD.decode(sig).expect("b64");
        let sig = ed25519_dalek::Signature::from_slice(&sig_bytes).expect("sig");
        key.key
            .verifying_key()
            .verify(br#"{"a":1,"b":2}"#, &sig)
            .expect("valid signature over canonical JSON");
    }

    /// The signing key used in the spec's appendix examples.
    fn spec_key() -> Ed25519Key {
        let seed = unb64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").expect("seed");
        Ed25519Key::from_seed(&seed.try_into().expect("32 bytes"))
    }

    #[test]
    fn spec_signing_examples() {
        let key = spec_key();
        assert_eq!(
            key.sign_json(&json!({})),
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        );
        let obj = json!({"one": 1, "two": "Two"});
        let sig = key.sign_json(&obj);
        assert_eq!(
            sig,
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
        assert!(verify_json(&key.public_b64(), &obj, &sig));
        assert!(!verify_json(&key.public_b64(), &json!({"one": 2}), &sig));
    }

    #[test]
    fn spec_event_content_hash() {
        let event = json!({
            "auth_events": [],
            "content": {},
            "depth": 3,
            "origin": "domain",
            "origin_server_ts": 1000000,
            "prev_events": [],
            "room_id": "!x:domain",
            "sender": "@a:domain",
            "type": "X",
            "unsigned": {"age_ts": 1000000}
        });
        assert_eq!(
            content_hash(&event),
            "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
        );
    }

    #[test]
    fn signed_event_verifies_and_has_stable_id() {
        let key = ServerKey::generate("127.0.0.99:1", "t");
        let mut event = json!({
            "type": "m.room.message",
            "room_id": "!r:127.0.0.99:1",
            "sender": "@u:127.0.0.99:1",
            "content": {"msgtype": "m.text", "body": "hi"},
            "depth": 5,
            "prev_events": ["$p"],
            "auth_events": ["$a"],
            "origin_server_ts": 1,
        });
        let id = key.hash_and_sign_event(&mut event);
        assert!(id.starts_with('$') && !id.contains('+') && !id.contains('/'));
        let sig = event["signatures"]["127.0.0.99:1"]["ed25519:t"]
            .as_str()
            .expect("sig");
        assert!(verify_json(&key.key.public_b64(), &redact(&event), sig));
        // Redaction strips the message body; the id does not depend on it or on signatures.
        let mut other = event.clone();
        other["content"]["body"] = json!("changed");
        other["signatures"] = json!({});
        assert_eq!(event_id(&other), id);
        assert_ne!(content_hash(&other), event["hashes"]["sha256"]);
        let resp = key.key_response(2);
        let ksig = resp["signatures"]["127.0.0.99:1"]["ed25519:t"]
            .as_str()
            .expect("key sig");
        assert!(verify_json(&key.key.public_b64(), &resp, ksig));
    }

    #[test]
    fn event_ids_match_synapse() {
        // Reference ids computed with Synapse 1.163's make_event_from_dict(.., room v12).
        let cases = [
            (
                "m.room.message",
                None,
                json!({"msgtype": "m.text", "body": "hi"}),
                "$Cc6zCyUlqjovqBO2WHifXxQA_iqsayf5cjzIYb1OoCo",
            ),
            (
                "m.room.member",
                Some("@u:h"),
                json!({"membership": "join", "displayname": "x"}),
                "$1Pwde-pfP1m-CepLBPYGi7YV87ET4xup_CCajGByRBY",
            ),
            (
                "m.room.power_levels",
                Some(""),
                json!({"users": {"@u:h": 100}, "ban": 50, "notifications": {"room": 1}}),
                "$lsnQHCDR-yRRhgoC_yVseyQNjNjwcGB9ZVzunOrq3_g",
            ),
        ];
        for (t, state_key, content, expected) in cases {
            let mut e = json!({
                "type": t, "room_id": "!r:h", "sender": "@u:h", "content": content, "depth": 5,
                "prev_events": ["$p"], "auth_events": ["$a"], "origin_server_ts": 1,
                "hashes": {"sha256": "abc"}, "signatures": {}, "unsigned": {"age": 1},
                "origin": "h",
            });
            if let Some(k) = state_key {
                e["state_key"] = json!(k);
            }
            assert_eq!(event_id(&e), expected, "{t}");
        }
    }
}
