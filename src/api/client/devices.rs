//! Device management: list, get, rename, delete (with password UIA), bulk delete.

use std::net::{IpAddr, SocketAddr};

use axum::{Json, Router, extract::State, http::request::Parts};
use ruma::api::client::device::{
    delete_device, delete_devices, get_device, get_devices, update_device,
};
use serde_json::{Value, json};

use super::{JsonResult, account::require_password_uia};
use crate::{
    api::{Ruma, route},
    services::AppState,
    storage::devices::Device,
    users::devices,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_devices::v3::Request, _, _>(r, list);
    let r = route::<get_device::v3::Request, _, _>(r, get);
    let r = route::<update_device::v3::Request, _, _>(r, update);
    let r = route::<delete_device::v3::Request, _, _>(r, delete);
    route::<delete_devices::v3::Request, _, _>(r, delete_many)
}

fn device_json(d: &Device) -> Value {
    let mut v = json!({"device_id": d.device_id});
    if let Some(n) = &d.display_name {
        v["display_name"] = json!(n);
    }
    if let Some(ts) = d.last_seen_ts {
        v["last_seen_ts"] = json!(ts);
    }
    if let Some(ip) = &d.last_seen_ip {
        v["last_seen_ip"] = json!(ip);
    }
    v
}

async fn list(State(s): State<AppState>, req: Ruma<get_devices::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let list = devices::list(&s, &a.user_id).await?;
    Ok(Json(
        json!({"devices": list.iter().map(device_json).collect::<Vec<_>>()}),
    ))
}

async fn get(State(s): State<AppState>, req: Ruma<get_device::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let d = devices::get(&s, &a.user_id, req.body.device_id.as_str()).await?;
    Ok(Json(device_json(&d)))
}

async fn update(State(s): State<AppState>, req: Ruma<update_device::v3::Request>) -> JsonResult {
    let a = req.user()?;
    devices::rename(
        &s,
        &a.user_id,
        req.body.device_id.as_str(),
        req.body.display_name.as_deref(),
    )
    .await?;
    Ok(Json(json!({})))
}

async fn delete(State(s): State<AppState>, req: Ruma<delete_device::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let device_id = req.body.device_id.to_string();
    // Unknown devices (including other users' devices) are 404 before any UIA.
    if !devices::exists(&s, &a.user_id, &device_id).await? {
        return Err(crate::error::Error::not_found("Unknown device"));
    }
    require_password_uia(
        &s,
        &a.user_id,
        &req.json,
        &format!("delete_device:{}:{device_id}", a.user_id),
    )
    .await?;
    devices::delete(&s, &a.user_id, &[device_id]).await?;
    Ok(Json(json!({})))
}

async fn delete_many(
    State(s): State<AppState>,
    req: Ruma<delete_devices::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let mut ids: Vec<String> = req.body.devices.iter().map(|d| d.to_string()).collect();
    ids.sort();
    ids.dedup();
    require_password_uia(
        &s,
        &a.user_id,
        &req.json,
        &format!("delete_devices:{}:{}", a.user_id, ids.join(",")),
    )
    .await?;
    devices::delete(&s, &a.user_id, &ids).await?;
    Ok(Json(json!({})))
}

/// The client's address for `last_seen_ip`: the peer address, or, when the peer is a proxy on
/// a loopback or private address, the address that proxy appended to `X-Forwarded-For`.
pub fn client_ip(parts: &Parts) -> Option<String> {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let behind_proxy = peer.is_none_or(|ip| match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local(),
    });
    if behind_proxy
        && let Some(fwd) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|h| h.to_str().ok())
        && let Some(last) = fwd.rsplit(',').next()
        && let Ok(ip) = last.trim().parse::<IpAddr>()
    {
        return Some(ip.to_string());
    }
    peer.map(|ip| ip.to_string())
}
