//! Cross-signing keys (master, self-signing, user-signing) and signature uploads.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use ruma::UserId;
use serde_json::{Map, Value, json};

use super::signing::{
    cross_signing_public_key, device_ed25519_key, signature, signed_part, verify,
};
use crate::{
    error::{Error, Result},
    services::Services,
    storage::keys::KeySignature,
};

fn invalid_signature(msg: impl Into<String>) -> Error {
    Error::new(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE", msg)
}

/// Cross-signing keys as uploaded to `/keys/device_signing/upload`.
#[derive(Default)]
pub struct SigningKeys {
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

impl SigningKeys {
    fn iter(&self) -> impl Iterator<Item = (&'static str, &Value)> {
        [
            ("master", self.master.as_ref()),
            ("self_signing", self.self_signing.as_ref()),
            ("user_signing", self.user_signing.as_ref()),
        ]
        .into_iter()
        .filter_map(|(t, v)| v.map(|v| (t, v)))
    }
}

/// Checks a cross-signing key's shape and returns its public key.
fn check_key(user_id: &UserId, usage: &str, key: &Value) -> Result<String> {
    if key.get("user_id").and_then(Value::as_str) != Some(user_id.as_str()) {
        return Err(Error::invalid_param(format!(
            "The {usage} key's user_id does not match the authenticated user"
        )));
    }
    let usages = key.get("usage").and_then(Value::as_array);
    if !usages.is_some_and(|u| u.iter().any(|x| x.as_str() == Some(usage))) {
        return Err(Error::invalid_param(format!(
            "The {usage} key must have usage {usage:?}"
        )));
    }
    cross_signing_public_key(key).ok_or_else(|| {
        Error::invalid_param(format!(
            "The {usage} key must have exactly one ed25519 key named by itself"
        ))
    })
}

/// Validates an upload: shapes, ownership, and that the self-signing and user-signing keys are
/// signed by the (new or current) master key.
pub async fn validate(s: &Services, user_id: &UserId, keys: &SigningKeys) -> Result<()> {
    let uid = user_id.as_str();
    let master = match &keys.master {
        Some(m) => Some(check_key(user_id, "master", m)?),
        None => match s.db.cross_signing_key(uid, "master").await? {
            Some(text) => cross_signing_public_key(&serde_json::from_str(&text)?),
            None => None,
        },
    };
    for (usage, key) in [
        ("self_signing", &keys.self_signing),
        ("user_signing", &keys.user_signing),
    ] {
        let Some(key) = key else { continue };
        check_key(user_id, usage, key)?;
        let master = master.as_deref().ok_or_else(|| {
            Error::invalid_param(format!("No master key to sign the {usage} key"))
        })?;
        verify(key, uid, &format!("ed25519:{master}"), master).map_err(|e| {
            invalid_signature(format!(
                "The {usage} key is not signed by the master key: {e}"
            ))
        })?;
    }
    Ok(())
}

/// Whether storing `keys` needs user-interactive auth: not for a user's first master key
/// (clients bootstrap cross-signing right after registration), nor to re-upload the same keys.
pub async fn needs_auth(s: &Services, user_id: &UserId, keys: &SigningKeys) -> Result<bool> {
    let uid = user_id.as_str();
    if s.db.cross_signing_key(uid, "master").await?.is_none() {
        return Ok(false);
    }
    for (key_type, key) in keys.iter() {
        let same = match s.db.cross_signing_key(uid, key_type).await? {
            Some(text) => serde_json::from_str::<Value>(&text)? == *key,
            None => false,
        };
        if !same {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Stores validated cross-signing keys and announces the change.
pub async fn store(s: &Services, user_id: &UserId, keys: &SigningKeys) -> Result<()> {
    let rows: Vec<(&str, String)> = keys.iter().map(|(t, v)| (t, v.to_string())).collect();
    if rows.is_empty() {
        return Ok(());
    }
    s.db.set_cross_signing_keys(user_id.as_str(), &rows).await?;
    super::device_list_changed(s, user_id).await
}

fn failure(errcode: &str, error: impl Into<String>) -> Value {
    json!({"errcode": errcode, "error": error.into()})
}

async fn master_public(
    s: &Services,
    user: &str,
    key_type: &str,
) -> Result<Option<(Value, String)>> {
    let Some(text) = s.db.cross_signing_key(user, key_type).await? else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(&text)?;
    Ok(cross_signing_public_key(&v).map(|p| (v, p)))
}

/// Checks one signed object from `/keys/signatures/upload`; returns the new signatures to store.
async fn check_signed(
    s: &Services,
    signer: &UserId,
    target: &UserId,
    key_id: &str,
    signed: &Value,
) -> Result<std::result::Result<Vec<KeySignature>, Value>> {
    let me = signer.as_str();
    let tuid = target.as_str();
    if !s.is_local(target) {
        return Ok(Err(failure(
            "M_NOT_FOUND",
            "Signing keys of remote users is not supported",
        )));
    }
    if !signed.is_object() {
        return Ok(Err(failure("M_BAD_JSON", "Signed key must be an object")));
    }
    // Which stored object is being signed, and which keys may sign it.
    let mut stored: Option<Value> = None;
    // signer key id -> public key
    let mut signers: BTreeMap<String, String> = BTreeMap::new();
    if me == tuid {
        if let Some(dk) =
            s.db.device_keys(tuid)
                .await?
                .into_iter()
                .find(|d| d.device_id == key_id)
        {
            stored = Some(serde_json::from_str(&dk.json)?);
            if let Some((_, ssk)) = master_public(s, me, "self_signing").await? {
                signers.insert(format!("ed25519:{ssk}"), ssk);
            }
        } else if let Some((master, public)) = master_public(s, me, "master").await?
            && public == key_id
        {
            stored = Some(master);
            for dk in s.db.device_keys(me).await? {
                if let Ok(v) = serde_json::from_str::<Value>(&dk.json)
                    && let Some(k) = device_ed25519_key(&v, &dk.device_id)
                {
                    signers.insert(format!("ed25519:{}", dk.device_id), k);
                }
            }
        }
    } else if let Some((master, public)) = master_public(s, tuid, "master").await?
        && public == key_id
    {
        stored = Some(master);
        if let Some((_, usk)) = master_public(s, me, "user_signing").await? {
            signers.insert(format!("ed25519:{usk}"), usk);
        }
    }
    let Some(stored) = stored else {
        return Ok(Err(failure("M_NOT_FOUND", format!("Unknown key {key_id}"))));
    };
    if signed_part(&stored) != signed_part(signed) {
        return Ok(Err(failure(
            "M_INVALID_PARAM",
            "The signed object does not match the stored key",
        )));
    }
    let existing = s.db.key_signatures(tuid).await?;
    let mut new = Vec::new();
    let Some(sigs) = signed
        .get("signatures")
        .and_then(|v| v.get(me))
        .and_then(Value::as_object)
    else {
        return Ok(Err(failure(
            "M_INVALID_SIGNATURE",
            "No signature by the uploader",
        )));
    };
    for (sk_id, sig) in sigs {
        let Some(sig) = sig.as_str() else {
            return Ok(Err(failure(
                "M_INVALID_SIGNATURE",
                "Signature is not a string",
            )));
        };
        let already = signature(&stored, me, sk_id) == Some(sig)
            || existing.iter().any(|e| {
                e.target_key_id == key_id
                    && e.signer_user_id == me
                    && e.signer_key_id == *sk_id
                    && e.signature == sig
            });
        if already {
            continue;
        }
        let Some(public) = signers.get(sk_id) else {
            return Ok(Err(failure(
                "M_INVALID_SIGNATURE",
                format!("{sk_id} may not sign this key"),
            )));
        };
        if let Err(e) = verify(signed, me, sk_id, public) {
            return Ok(Err(failure("M_INVALID_SIGNATURE", e)));
        }
        new.push(KeySignature {
            target_user_id: tuid.to_owned(),
            target_key_id: key_id.to_owned(),
            signer_user_id: me.to_owned(),
            signer_key_id: sk_id.clone(),
            signature: sig.to_owned(),
        });
    }
    Ok(Ok(new))
}

/// Handles `/keys/signatures/upload`: stores valid signatures, answers the failures.
pub async fn upload_signatures(
    s: &Services,
    signer: &UserId,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>> {
    let mut failures = Map::new();
    let mut to_store = Vec::new();
    for (target, keys) in body {
        let Ok(target_id) = UserId::parse(target) else {
            continue;
        };
        let Some(keys) = keys.as_object() else {
            continue;
        };
        for (key_id, signed) in keys {
            match check_signed(s, signer, &target_id, key_id, signed).await? {
                Ok(sigs) => to_store.extend(sigs),
                Err(f) => {
                    let entry = failures
                        .entry(target.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    entry[key_id.as_str()] = f;
                }
            }
        }
    }
    if !to_store.is_empty() {
        s.db.add_key_signatures(&to_store).await?;
        super::device_list_changed(s, signer).await?;
    }
    Ok(failures)
}
