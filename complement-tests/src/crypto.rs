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
}
