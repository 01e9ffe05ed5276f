//! The key server: device key and one-time key upload, key queries, claims and change lists.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{DeviceId, UserId};
use serde_json::{Map, Value, json};

use crate::{
    error::{Error, Result},
    services::Services,
    storage::keys::KeySignature,
};

/// What a device uploads to `/keys/upload`.
pub struct KeyUpload {
    pub device_keys: Option<Value>,
    /// `(key_id, key)` with key ids `algorithm:name`.
    pub one_time_keys: Vec<(String, Value)>,
    pub fallback_keys: Vec<(String, Value)>,
}

fn algorithm_of(key_id: &str) -> Result<&str> {
    match key_id.split_once(':') {
        Some((alg, name)) if !alg.is_empty() && !name.is_empty() => Ok(alg),
        _ => Err(Error::invalid_param(format!("Invalid key id {key_id:?}"))),
    }
}

/// Stores uploaded keys and answers the device's unclaimed one-time key counts.
pub async fn upload(
    s: &Services,
    user_id: &UserId,
    device_id: &DeviceId,
    up: KeyUpload,
) -> Result<BTreeMap<String, i64>> {
    let (uid, did) = (user_id.as_str(), device_id.as_str());
    if let Some(mut dk) = up.device_keys {
        let obj = dk
            .as_object_mut()
            .ok_or_else(|| Error::bad_json("device_keys must be an object"))?;
        if obj.get("user_id").and_then(Value::as_str) != Some(uid) {
            return Err(Error::invalid_param(
                "device_keys.user_id does not match the authenticated user",
            ));
        }
        if obj.get("device_id").and_then(Value::as_str) != Some(did) {
            return Err(Error::invalid_param(
                "device_keys.device_id does not match the authenticated device",
            ));
        }
        if !obj.get("keys").is_some_and(Value::is_object) {
            return Err(Error::bad_json("device_keys.keys must be an object"));
        }
        if !obj.get("algorithms").is_some_and(Value::is_array) {
            return Err(Error::bad_json("device_keys.algorithms must be an array"));
        }
        // The server adds its own `unsigned` (the display name) when answering queries.
        obj.remove("unsigned");
        if s.db.set_device_keys(uid, did, &dk.to_string()).await? {
            super::device_list_changed(s, user_id).await?;
        }
    }
    if !up.one_time_keys.is_empty() {
        let mut rows = Vec::with_capacity(up.one_time_keys.len());
        for (key_id, key) in &up.one_time_keys {
            rows.push((
                key_id.clone(),
                algorithm_of(key_id)?.to_owned(),
                key.to_string(),
            ));
        }
        if let Some(dup) = s.db.add_one_time_keys(uid, did, &rows).await? {
            return Err(Error::invalid_param(format!(
                "One-time key {dup} already exists with different content"
            )));
        }
    }
    for (key_id, key) in &up.fallback_keys {
        let alg = algorithm_of(key_id)?;
        s.db.set_fallback_key(uid, did, key_id, alg, &key.to_string())
            .await?;
    }
    let mut counts: BTreeMap<String, i64> =
        s.db.one_time_key_counts(uid, did)
            .await?
            .into_iter()
            .collect();
    counts.entry("signed_curve25519".to_owned()).or_insert(0);
    Ok(counts)
}

/// Adds stored signatures over `target_key_id` to `object.signatures`. Signatures by the key
/// owner are public; signatures by someone else (their user-signing key) only to that signer.
fn merge_signatures(
    object: &mut Value,
    target_key_id: &str,
    sigs: &[KeySignature],
    owner: &str,
    requester: &str,
) {
    for sig in sigs.iter().filter(|s| s.target_key_id == target_key_id) {
        if sig.signer_user_id != owner && sig.signer_user_id != requester {
            continue;
        }
        if !object["signatures"].is_object() {
            object["signatures"] = json!({});
        }
        if !object["signatures"][sig.signer_user_id.as_str()].is_object() {
            object["signatures"][sig.signer_user_id.as_str()] = json!({});
        }
        object["signatures"][sig.signer_user_id.as_str()][sig.signer_key_id.as_str()] =
            json!(sig.signature);
    }
}

/// A stored cross-signing key with the later-uploaded signatures merged in.
pub async fn cross_signing_key_with_signatures(
    s: &Services,
    user_id: &str,
    key_type: &str,
    sigs: &[KeySignature],
    requester: &str,
) -> Result<Option<Value>> {
    let Some(text) = s.db.cross_signing_key(user_id, key_type).await? else {
        return Ok(None);
    };
    let mut key: Value = serde_json::from_str(&text)?;
    if let Some(public) = super::signing::cross_signing_public_key(&key) {
        merge_signatures(&mut key, &public, sigs, user_id, requester);
    }
    Ok(Some(key))
}

/// Answers `/keys/query`: device keys and cross-signing keys of local users, and of remote
/// users as their servers answer (unreachable servers are listed in `failures`).
pub async fn query(
    s: &Services,
    requester: &UserId,
    wanted: &BTreeMap<ruma::OwnedUserId, Vec<ruma::OwnedDeviceId>>,
) -> Result<Value> {
    let mut device_keys = Map::new();
    let mut master = Map::new();
    let mut self_signing = Map::new();
    let mut user_signing = Map::new();
    let mut failures = Map::new();
    let me = requester.as_str();
    let mut remote = BTreeMap::new();
    for (user_id, devices) in wanted {
        if !s.is_local(user_id) {
            remote.insert(user_id.clone(), devices.clone());
            continue;
        }
        let uid = user_id.as_str();
        let sigs = s.db.key_signatures(uid).await?;
        let mut per_device = Map::new();
        for dk in s.db.device_keys(uid).await? {
            if !devices.is_empty() && !devices.iter().any(|d| d.as_str() == dk.device_id) {
                continue;
            }
            let mut obj: Value = match serde_json::from_str(&dk.json) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(
                        user = uid,
                        device = dk.device_id,
                        "bad stored device keys: {e}"
                    );
                    continue;
                }
            };
            merge_signatures(&mut obj, &dk.device_id, &sigs, uid, me);
            obj["unsigned"] = match &dk.display_name {
                Some(name) => json!({"device_display_name": name}),
                None => json!({}),
            };
            per_device.insert(dk.device_id, obj);
        }
        device_keys.insert(uid.to_owned(), Value::Object(per_device));
        if let Some(k) = cross_signing_key_with_signatures(s, uid, "master", &sigs, me).await? {
            master.insert(uid.to_owned(), k);
        }
        if let Some(k) =
            cross_signing_key_with_signatures(s, uid, "self_signing", &sigs, me).await?
        {
            self_signing.insert(uid.to_owned(), k);
        }
        if uid == me
            && let Some(k) =
                cross_signing_key_with_signatures(s, uid, "user_signing", &sigs, me).await?
        {
            user_signing.insert(uid.to_owned(), k);
        }
    }
    let mut fed = crate::federation::query::KeysAnswer::default();
    crate::federation::query::query_keys(s, &remote, &mut fed).await;
    device_keys.extend(fed.device_keys);
    master.extend(fed.master_keys);
    self_signing.extend(fed.self_signing_keys);
    failures.extend(fed.failures);
    Ok(json!({
        "device_keys": device_keys,
        "master_keys": master,
        "self_signing_keys": self_signing,
        "user_signing_keys": user_signing,
        "failures": failures,
    }))
}

/// Answers `/keys/claim`: one key per requested device and algorithm.
pub async fn claim(
    s: &Services,
    wanted: &BTreeMap<ruma::OwnedUserId, BTreeMap<ruma::OwnedDeviceId, String>>,
) -> Result<Value> {
    let mut out = Map::new();
    let mut failures = Map::new();
    let mut remote = BTreeMap::new();
    for (user_id, devices) in wanted {
        if !s.is_local(user_id) {
            remote.insert(user_id.clone(), devices.clone());
            continue;
        }
        let mut per_device = Map::new();
        for (device_id, algorithm) in devices {
            if let Some((key_id, text)) =
                s.db.claim_one_time_key(user_id.as_str(), device_id.as_str(), algorithm)
                    .await?
            {
                let key: Value = serde_json::from_str(&text)?;
                per_device.insert(device_id.to_string(), json!({ key_id: key }));
            }
        }
        if !per_device.is_empty() {
            out.insert(user_id.to_string(), Value::Object(per_device));
        }
    }
    crate::federation::query::claim_keys(s, &remote, &mut out, &mut failures).await;
    Ok(json!({"one_time_keys": out, "failures": failures}))
}

/// Answers `/keys/changes`: users sharing a room with `user_id` whose device lists changed in
/// the stream range `(from, to]`, and users who stopped sharing any room in that range.
pub async fn changes(
    s: &Services,
    user_id: &UserId,
    from: i64,
    to: i64,
) -> Result<(Vec<String>, Vec<String>)> {
    let me = user_id.as_str();
    let mut sharing: BTreeSet<String> = s.db.users_sharing_rooms(me).await?.into_iter().collect();
    // The user's own devices count even when they share no room.
    sharing.insert(me.to_owned());
    let mut changed: BTreeSet<String> =
        s.db.device_lists_changed_between(from, to)
            .await?
            .into_iter()
            .filter(|u| sharing.contains(u))
            .collect();
    let mut left = BTreeSet::new();
    for (_, m) in s.db.memberships_changed_since_in_my_rooms(me, from).await? {
        if m.stream_ordering > to || m.user_id == me {
            continue;
        }
        if m.membership == "join" {
            changed.insert(m.user_id);
        } else if (m.membership == "leave" || m.membership == "ban")
            && !sharing.contains(&m.user_id)
        {
            left.insert(m.user_id);
        }
    }
    Ok((changed.into_iter().collect(), left.into_iter().collect()))
}
