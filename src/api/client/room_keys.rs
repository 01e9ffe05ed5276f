//! Server-side key backups: `/room_keys/version…` (backup versions) and `/room_keys/keys…`
//! (the keys in a version, for all rooms, one room or one session). The rules are in
//! `e2ee::backup`.

use std::collections::BTreeMap;

use axum::{Json, Router, extract::State};
use ruma::api::client::backup::{
    add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
    delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session,
    delete_backup_version, get_backup_info, get_backup_keys, get_backup_keys_for_room,
    get_backup_keys_for_session, get_latest_backup_info, update_backup_version,
};
use serde_json::{Map, Value, json};

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    e2ee::backup,
    error::{Error, Result},
    services::AppState,
    storage::room_keys::{BackupVersion, KeyCounts, KeyScope, RoomKey},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<create_backup_version::v3::Request, _, _>(r, create_version);
    let r = route::<get_latest_backup_info::v3::Request, _, _>(r, latest_version);
    let r = route::<get_backup_info::v3::Request, _, _>(r, get_version);
    let r = route::<update_backup_version::v3::Request, _, _>(r, update_version);
    let r = route::<delete_backup_version::v3::Request, _, _>(r, delete_version);
    let r = route::<add_backup_keys::v3::Request, _, _>(r, put_keys);
    let r = route::<add_backup_keys_for_room::v3::Request, _, _>(r, put_room_keys);
    let r = route::<add_backup_keys_for_session::v3::Request, _, _>(r, put_session_key);
    let r = route::<get_backup_keys::v3::Request, _, _>(r, get_keys);
    let r = route::<get_backup_keys_for_room::v3::Request, _, _>(r, get_room_keys);
    let r = route::<get_backup_keys_for_session::v3::Request, _, _>(r, get_session_key);
    let r = route::<delete_backup_keys::v3::Request, _, _>(r, delete_keys);
    let r = route::<delete_backup_keys_for_room::v3::Request, _, _>(r, delete_room_keys);
    route::<delete_backup_keys_for_session::v3::Request, _, _>(r, delete_session_key)
}

fn raw_value<T>(raw: &ruma::serde::Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}

fn version_json(v: BackupVersion) -> Value {
    json!({
        "algorithm": v.algorithm,
        "auth_data": v.auth_data,
        "count": v.count,
        "etag": v.etag.to_string(),
        "version": v.version.to_string(),
    })
}

fn counts_json(c: KeyCounts) -> Value {
    json!({"count": c.count, "etag": c.etag.to_string()})
}

/// A stored key as `KeyBackupData`.
fn key_json(k: RoomKey) -> Value {
    json!({
        "first_message_index": k.meta.first_message_index,
        "forwarded_count": k.meta.forwarded_count,
        "is_verified": k.meta.is_verified,
        "session_data": k.session_data,
    })
}

fn sessions_json(keys: impl IntoIterator<Item = RoomKey>) -> Map<String, Value> {
    keys.into_iter()
        .map(|k| (k.session_id.clone(), key_json(k)))
        .collect()
}

/// The uploaded sessions of one room, checked.
fn parse_sessions<T>(
    room_id: &str,
    sessions: &BTreeMap<String, ruma::serde::Raw<T>>,
    out: &mut Vec<RoomKey>,
) -> Result<()> {
    for (session_id, data) in sessions {
        out.push(backup::parse_key(room_id, session_id, &raw_value(data)?)?);
    }
    Ok(())
}

async fn create_version(
    State(s): State<AppState>,
    req: Ruma<create_backup_version::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let body = raw_value(&req.body.algorithm)?;
    let version = backup::create_version(&s, &a.user_id, &body).await?;
    Ok(Json(json!({ "version": version })))
}

async fn latest_version(
    State(s): State<AppState>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let v = backup::version_info(&s, &a.user_id, None).await?;
    Ok(Json(version_json(v)))
}

async fn get_version(
    State(s): State<AppState>,
    req: Ruma<get_backup_info::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let v = backup::version_info(&s, &a.user_id, Some(&req.body.version)).await?;
    Ok(Json(version_json(v)))
}

async fn update_version(
    State(s): State<AppState>,
    req: Ruma<update_backup_version::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let body = raw_value(&req.body.algorithm)?;
    backup::update_version(&s, &a.user_id, &req.body.version, &body).await?;
    Ok(Json(json!({})))
}

async fn delete_version(
    State(s): State<AppState>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    backup::delete_version(&s, &a.user_id, &req.body.version).await?;
    Ok(Json(json!({})))
}

async fn put_keys(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let mut keys = Vec::new();
    for (room_id, room) in &req.body.rooms {
        parse_sessions(room_id.as_str(), &room.sessions, &mut keys)?;
    }
    let counts = backup::upload_keys(&s, &a.user_id, &req.body.version, &keys).await?;
    Ok(Json(counts_json(counts)))
}

async fn put_room_keys(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let mut keys = Vec::new();
    parse_sessions(req.body.room_id.as_str(), &req.body.sessions, &mut keys)?;
    let counts = backup::upload_keys(&s, &a.user_id, &req.body.version, &keys).await?;
    Ok(Json(counts_json(counts)))
}

async fn put_session_key(
    State(s): State<AppState>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let key = backup::parse_key(
        req.body.room_id.as_str(),
        &req.body.session_id,
        &raw_value(&req.body.session_data)?,
    )?;
    let counts = backup::upload_keys(&s, &a.user_id, &req.body.version, &[key]).await?;
    Ok(Json(counts_json(counts)))
}

async fn get_keys(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let keys = backup::keys(&s, &a.user_id, &req.body.version, KeyScope::All).await?;
    let mut rooms: BTreeMap<String, Vec<RoomKey>> = BTreeMap::new();
    for k in keys {
        rooms.entry(k.room_id.clone()).or_default().push(k);
    }
    let rooms: Map<String, Value> = rooms
        .into_iter()
        .map(|(room_id, keys)| (room_id, json!({ "sessions": sessions_json(keys) })))
        .collect();
    Ok(Json(json!({ "rooms": rooms })))
}

async fn get_room_keys(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let scope = KeyScope::Room(req.body.room_id.as_str());
    let keys = backup::keys(&s, &a.user_id, &req.body.version, scope).await?;
    Ok(Json(json!({ "sessions": sessions_json(keys) })))
}

async fn get_session_key(
    State(s): State<AppState>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let scope = KeyScope::Session(req.body.room_id.as_str(), &req.body.session_id);
    let keys = backup::keys(&s, &a.user_id, &req.body.version, scope).await?;
    keys.into_iter()
        .next()
        .map(|k| Json(key_json(k)))
        .ok_or_else(|| Error::not_found("No key for this session in the backup"))
}

async fn delete_keys(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let counts = backup::delete_keys(&s, &a.user_id, &req.body.version, KeyScope::All).await?;
    Ok(Json(counts_json(counts)))
}

async fn delete_room_keys(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let scope = KeyScope::Room(req.body.room_id.as_str());
    let counts = backup::delete_keys(&s, &a.user_id, &req.body.version, scope).await?;
    Ok(Json(counts_json(counts)))
}

async fn delete_session_key(
    State(s): State<AppState>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let scope = KeyScope::Session(req.body.room_id.as_str(), &req.body.session_id);
    let counts = backup::delete_keys(&s, &a.user_id, &req.body.version, scope).await?;
    Ok(Json(counts_json(counts)))
}
