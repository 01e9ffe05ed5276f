//! End-to-end encryption keys: upload, query, claim, changes, cross-signing, signatures,
//! send-to-device. Key backups are in `room_keys`.

use axum::{Json, Router, extract::State};
use ruma::api::client::{
    keys::{
        claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys,
    },
    to_device::send_event_to_device,
};
use serde_json::{Value, json};

use super::{JsonResult, account::require_password_uia};
use crate::{
    api::{Ruma, route},
    e2ee::{self, cross_signing::SigningKeys},
    error::{Error, Result},
    services::AppState,
    sync::token::parse_position,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<upload_keys::v3::Request, _, _>(r, upload);
    let r = route::<get_keys::v3::Request, _, _>(r, query);
    let r = route::<claim_keys::v3::Request, _, _>(r, claim);
    let r = route::<get_key_changes::v3::Request, _, _>(r, changes);
    let r = route::<upload_signing_keys::v3::Request, _, _>(r, device_signing_upload);
    let r = route::<upload_signatures::v3::Request, _, _>(r, signatures_upload);
    route::<send_event_to_device::v3::Request, _, _>(r, send_to_device)
}

fn raw_value<T>(raw: &ruma::serde::Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}

async fn upload(State(s): State<AppState>, req: Ruma<upload_keys::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let device_keys = req.body.device_keys.as_ref().map(raw_value).transpose()?;
    let one_time_keys = req
        .body
        .one_time_keys
        .iter()
        .map(|(id, k)| Ok((id.to_string(), raw_value(k)?)))
        .collect::<Result<Vec<_>>>()?;
    let fallback_keys = req
        .body
        .fallback_keys
        .iter()
        .map(|(id, k)| Ok((id.to_string(), raw_value(k)?)))
        .collect::<Result<Vec<_>>>()?;
    let counts = e2ee::keys::upload(
        &s,
        &a.user_id,
        &a.device_id,
        e2ee::keys::KeyUpload {
            device_keys,
            one_time_keys,
            fallback_keys,
        },
    )
    .await?;
    Ok(Json(json!({"one_time_key_counts": counts})))
}

async fn query(State(s): State<AppState>, req: Ruma<get_keys::v3::Request>) -> JsonResult {
    let a = req.user()?;
    Ok(Json(
        e2ee::keys::query(&s, &a.user_id, &req.body.device_keys).await?,
    ))
}

async fn claim(State(s): State<AppState>, req: Ruma<claim_keys::v3::Request>) -> JsonResult {
    req.user()?;
    let wanted = req
        .body
        .one_time_keys
        .iter()
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
    Ok(Json(e2ee::keys::claim(&s, &wanted).await?))
}

/// A sync token (`s…`) or pagination token (`t…`) as the last stream position it covers.
fn stream_of(token: &str) -> Result<i64> {
    Ok(parse_position(token)? - 1)
}

async fn changes(State(s): State<AppState>, req: Ruma<get_key_changes::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let from = stream_of(&req.body.from)?;
    let to = stream_of(&req.body.to)?;
    let (changed, left) = e2ee::keys::changes(&s, &a.user_id, from, to).await?;
    Ok(Json(json!({"changed": changed, "left": left})))
}

async fn device_signing_upload(
    State(s): State<AppState>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let keys = SigningKeys {
        master: req.body.master_key.as_ref().map(raw_value).transpose()?,
        self_signing: req
            .body
            .self_signing_key
            .as_ref()
            .map(raw_value)
            .transpose()?,
        user_signing: req
            .body
            .user_signing_key
            .as_ref()
            .map(raw_value)
            .transpose()?,
    };
    e2ee::cross_signing::validate(&s, &a.user_id, &keys).await?;
    if e2ee::cross_signing::needs_auth(&s, &a.user_id, &keys).await? {
        require_password_uia(
            &s,
            &a.user_id,
            &req.json,
            &format!("device_signing:{}", a.user_id),
        )
        .await?;
    }
    e2ee::cross_signing::store(&s, &a.user_id, &keys).await?;
    Ok(Json(json!({})))
}

async fn signatures_upload(
    State(s): State<AppState>,
    req: Ruma<upload_signatures::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let body = req
        .json
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let failures = e2ee::cross_signing::upload_signatures(&s, &a.user_id, &body).await?;
    Ok(Json(json!({"failures": failures})))
}

async fn send_to_device(
    State(s): State<AppState>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    e2ee::to_device::send(
        &s,
        &a.user_id,
        &a.device_id,
        &req.body.event_type.to_string(),
        req.body.txn_id.as_str(),
        &req.body.messages,
    )
    .await?;
    Ok(Json(json!({})))
}
