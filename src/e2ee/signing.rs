//! Signature checks on signed JSON objects (device keys, cross-signing keys).

use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use ruma::{
    CanonicalJsonObject, SigningKeyAlgorithm,
    signatures::{to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde_json::Value;

/// Unpadded (or padded) standard base64.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// `object` without `signatures` and `unsigned`: the part a signature covers.
pub fn signed_part(object: &Value) -> Value {
    let mut v = object.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    v
}

/// The signature `object.signatures[signer][key_id]`, if present.
pub fn signature<'a>(object: &'a Value, signer: &str, key_id: &str) -> Option<&'a str> {
    object.get("signatures")?.get(signer)?.get(key_id)?.as_str()
}

/// Checks the ed25519 signature `object.signatures[signer][key_id]` against `public_b64`.
pub fn verify(object: &Value, signer: &str, key_id: &str, public_b64: &str) -> Result<(), String> {
    let sig = signature(object, signer, key_id)
        .ok_or_else(|| format!("Missing signature {key_id} of {signer}"))?;
    let sig = decode_b64(sig).ok_or("Signature is not base64")?;
    let public = decode_b64(public_b64).ok_or("Public key is not base64")?;
    let canon: CanonicalJsonObject = serde_json::from_value(object.clone())
        .map_err(|e| format!("Signed object is not canonical JSON: {e}"))?;
    let text = to_canonical_json_string_for_signing(&canon)
        .map_err(|e| format!("Signed object is not canonical JSON: {e}"))?;
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        &public,
        &sig,
        text.as_bytes(),
    )
    .map_err(|_| "Invalid signature".to_owned())
}

/// The single ed25519 public key of a cross-signing key object (`keys: {"ed25519:X": "X"}`).
pub fn cross_signing_public_key(object: &Value) -> Option<String> {
    let keys = object.get("keys")?.as_object()?;
    if keys.len() != 1 {
        return None;
    }
    let (id, value) = keys.iter().next()?;
    let name = id.strip_prefix("ed25519:")?;
    let value = value.as_str()?;
    (name == value && decode_b64(value).is_some_and(|b| b.len() == 32)).then(|| value.to_owned())
}

/// The ed25519 key of a device keys object (`keys["ed25519:<device_id>"]`).
pub fn device_ed25519_key(object: &Value, device_id: &str) -> Option<String> {
    object
        .get("keys")?
        .get(format!("ed25519:{device_id}"))?
        .as_str()
        .map(str::to_owned)
}
