//! Device lists and keys of our users for other servers: `GET /user/devices/{userId}`,
//! `POST /user/keys/query`, `POST /user/keys/claim` (all under `/_matrix/federation/v1`).

use std::collections::BTreeMap;

use axum::{Json, Router, extract::State};
use ruma::api::federation::{
    device::get_devices,
    keys::{claim_keys, get_keys},
};
use serde_json::{Map, Value, json};

use crate::{
    api::{Ruma, client::JsonResult, route},
    e2ee,
    error::Error,
    federation::edus,
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_devices::v1::Request, _, _>(r, devices);
    let r = route::<get_keys::v1::Request, _, _>(r, keys_query);
    route::<claim_keys::v1::Request, _, _>(r, keys_claim)
}

/// A local user's devices with their keys and display names, the stream id of the latest
/// `m.device_list_update` sent for them, and their master and self-signing keys.
async fn devices(State(s): State<AppState>, req: Ruma<get_devices::v1::Request>) -> JsonResult {
    req.origin()?;
    let user = &req.body.user_id;
    if !s.is_local(user) {
        return Err(Error::not_found("User is not on this server"));
    }
    let (devices, master, self_signing) = edus::local_devices(&s, user).await?;
    let devices: Vec<Value> = devices
        .into_iter()
        .map(|d| {
            let mut m = Map::new();
            m.insert("device_id".into(), json!(d.device_id));
            if let Some(name) = d.display_name {
                m.insert("device_display_name".into(), json!(name));
            }
            m.insert("keys".into(), d.keys.unwrap_or_else(|| json!({})));
            Value::Object(m)
        })
        .collect();
    let mut body = json!({
        "user_id": user,
        "stream_id": s.db.device_list_stream_id(user.as_str()).await?,
        "devices": devices,
    });
    if let Some(k) = master {
        body["master_key"] = k;
    }
    if let Some(k) = self_signing {
        body["self_signing_key"] = k;
    }
    Ok(Json(body))
}

/// Device and cross-signing keys of local users (others are left out). The user-signing key
/// never leaves the server.
async fn keys_query(State(s): State<AppState>, req: Ruma<get_keys::v1::Request>) -> JsonResult {
    req.origin()?;
    let mut device_keys = Map::new();
    let mut master = Map::new();
    let mut self_signing = Map::new();
    for (user, devices) in &req.body.device_keys {
        if !s.is_local(user) {
            continue;
        }
        // Asked as the user themself: signatures by other users stay with their signers.
        let wanted = BTreeMap::from([(user.clone(), devices.clone())]);
        let mut q = e2ee::keys::query(&s, user, &wanted).await?;
        let uid = user.as_str();
        if let Some(v) = q["device_keys"].get_mut(uid).map(Value::take) {
            device_keys.insert(uid.to_owned(), v);
        }
        if let Some(v) = q["master_keys"].get_mut(uid).map(Value::take) {
            master.insert(uid.to_owned(), v);
        }
        if let Some(v) = q["self_signing_keys"].get_mut(uid).map(Value::take) {
            self_signing.insert(uid.to_owned(), v);
        }
    }
    Ok(Json(json!({
        "device_keys": device_keys,
        "master_keys": master,
        "self_signing_keys": self_signing,
    })))
}

/// Claims one-time keys (or fallback keys) of local users' devices.
async fn keys_claim(State(s): State<AppState>, req: Ruma<claim_keys::v1::Request>) -> JsonResult {
    req.origin()?;
    let wanted = req
        .body
        .one_time_keys
        .iter()
        .filter(|(u, _)| s.is_local(u))
        .map(|(u, devices)| {
            (
                u.clone(),
                devices
                    .iter()
                    .map(|(d, alg)| (d.clone(), alg.to_string()))
                    .collect(),
            )
        })
        .collect();
    let mut answer = e2ee::keys::claim(&s, &wanted).await?;
    Ok(Json(
        json!({"one_time_keys": answer["one_time_keys"].take()}),
    ))
}
