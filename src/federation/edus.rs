//! Ephemeral data units (spec: server-server API, "EDUs"): queuing them for other servers, and
//! applying the ones they send.
//!
//! Outbound, [`queue_edu`] inserts one `federation_outbox` row per destination in one
//! transaction and wakes the sender; it does nothing when federation is off. The producers
//! below are called by the local write paths (typing, receipts, presence, device lists and
//! cross-signing keys, send-to-device) after their own write committed; a failure to queue is
//! logged and does not fail the client's request.
//!
//! Typing and presence are ephemeral: a destination whose queue already holds
//! [`EPHEMERAL_QUEUE_LIMIT`] EDUs (a server that has been down for a while) gets no more of
//! them, so they do not pile up; it learns presence again with the next change after it
//! drains. Receipts, device lists, signing keys and to-device messages are always queued.
//!
//! Inbound, [`handle_edu`] checks that the EDU's user (or sender) belongs to the origin and,
//! for room EDUs, is joined to the room here; anything else is ignored, as the spec asks.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{ServerName, UserId};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::{
    error::Result,
    rooms::receipts::parse_thread,
    services::Services,
    storage::{Db, edus::AnnouncedDevice, keys::ToDeviceMessage, now_ms, receipts::Receipt},
};

/// Queued EDUs of a destination beyond which typing and presence EDUs are no longer queued.
pub const EPHEMERAL_QUEUE_LIMIT: i64 = 200;
/// How long a typing notification from another server lasts (the EDU carries no timeout; the
/// sending server repeats it while the user keeps typing).
pub const REMOTE_TYPING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The row of [`AnnouncedDevice`] that stands for the cross-signing keys.
const SIGNING_KEYS_ROW: &str = " signing_keys";

fn is_ephemeral(edu_type: &str) -> bool {
    matches!(edu_type, "m.typing" | "m.presence")
}

/// The other servers among `servers`, deduplicated, in order.
fn remote_only(servers: &[String], ours: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in servers {
        if s != ours && !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

/// Servers of the given user ids (`@a:b` → `b`), deduplicated, without ours.
fn servers_of_users(users: &[String], ours: &str) -> Vec<String> {
    let servers: Vec<String> = users
        .iter()
        .filter_map(|u| u.split_once(':').map(|(_, s)| s.to_owned()))
        .collect();
    remote_only(&servers, ours)
}

/// Queues one EDU for each destination (one transaction) and wakes the sender. Does nothing
/// when federation is off or there is no other server.
pub async fn queue_edu(
    s: &Services,
    destinations: &[String],
    edu_type: &str,
    content: &Value,
) -> Result<()> {
    let Some(fed) = s.federation.as_ref() else {
        return Ok(());
    };
    let mut targets = Vec::new();
    for d in remote_only(destinations, s.server_name()) {
        if is_ephemeral(edu_type) && s.db.outbox_edu_count(&d).await? >= EPHEMERAL_QUEUE_LIMIT {
            tracing::debug!(
                destination = d,
                edu_type,
                "queue full: ephemeral EDU skipped"
            );
            continue;
        }
        targets.push(d);
    }
    if targets.is_empty() {
        return Ok(());
    }
    let json = json!({"edu_type": edu_type, "content": content}).to_string();
    let mut tx = s.db.begin().await?;
    for d in &targets {
        Db::enqueue_outbox(&mut tx, d, "edu", &json).await?;
    }
    tx.commit().await?;
    for d in &targets {
        if let Ok(name) = ServerName::parse(d) {
            fed.sender.notify(&name);
        }
    }
    Ok(())
}

/// Logs (rather than returns) a failure to queue: the local write it follows has committed.
fn logged(what: &str, r: Result<()>) {
    if let Err(e) = r {
        tracing::warn!("queuing {what} for federation failed: {e}");
    }
}

async fn room_servers(s: &Services, room_id: &str) -> Result<Vec<String>> {
    Ok(remote_only(
        &s.db.joined_servers(room_id).await?,
        s.server_name(),
    ))
}

/// Other servers sharing a room with the user.
async fn servers_sharing_with(s: &Services, user_id: &str) -> Result<Vec<String>> {
    Ok(servers_of_users(
        &s.db.users_sharing_rooms(user_id).await?,
        s.server_name(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Outbound
// ---------------------------------------------------------------------------------------------

/// A local user started or stopped typing in a room.
pub async fn typing(s: &Services, room_id: &str, user_id: &str, typing: bool) {
    if s.federation.is_none() || !is_local_str(s, user_id) {
        return;
    }
    let r = async {
        let servers = room_servers(s, room_id).await?;
        let content = json!({"room_id": room_id, "user_id": user_id, "typing": typing});
        queue_edu(s, &servers, "m.typing", &content).await
    }
    .await;
    logged("m.typing", r);
}

/// A local user's public read receipt (private receipts never leave the server).
pub async fn receipt(s: &Services, r: &Receipt) {
    if s.federation.is_none() || r.receipt_type != "m.read" || !is_local_str(s, &r.user_id) {
        return;
    }
    let res = async {
        let servers = room_servers(s, &r.room_id).await?;
        let content = receipt_content(r);
        queue_edu(s, &servers, "m.receipt", &content).await
    }
    .await;
    logged("m.receipt", res);
}

fn receipt_content(r: &Receipt) -> Value {
    let mut data = json!({"ts": if r.ts == 0 { now_ms() } else { r.ts }});
    if !r.thread_id.is_empty() {
        data["thread_id"] = json!(r.thread_id);
    }
    json!({ r.room_id.as_str(): { "m.read": { r.user_id.as_str(): {
        "data": data,
        "event_ids": [r.event_id],
    }}}})
}

/// A local user's presence changed (or was refreshed): tells the servers sharing a room.
pub async fn presence(s: &Services, user_id: &str) {
    if s.federation.is_none() || !is_local_str(s, user_id) {
        return;
    }
    let r = async {
        let Some((state, msg, last_active, active)) = s.db.presence(user_id).await? else {
            return Ok(());
        };
        let servers = servers_sharing_with(s, user_id).await?;
        if servers.is_empty() {
            return Ok(());
        }
        let mut p = json!({
            "user_id": user_id,
            "presence": state,
            "last_active_ago": (now_ms() - last_active).max(0),
            "currently_active": active && state == "online",
        });
        if let Some(m) = msg {
            p["status_msg"] = json!(m);
        }
        queue_edu(s, &servers, "m.presence", &json!({"push": [p]})).await
    }
    .await;
    logged("m.presence", r);
}

/// A stable digest of a JSON value.
fn digest(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// One of a local user's devices as other servers see it.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub device_id: String,
    pub display_name: Option<String>,
    pub keys: Option<Value>,
}

/// A local user's devices (with their signed identity keys) and their master and
/// self-signing keys, as `/user/devices` and `/user/keys/query` show them to other servers.
pub async fn local_devices(
    s: &Services,
    user_id: &UserId,
) -> Result<(Vec<DeviceView>, Option<Value>, Option<Value>)> {
    let uid = user_id.as_str();
    let mut wanted = BTreeMap::new();
    wanted.insert(user_id.to_owned(), Vec::new());
    let q = crate::e2ee::keys::query(s, user_id, &wanted).await?;
    let devices =
        s.db.devices(uid)
            .await?
            .into_iter()
            .map(|d| DeviceView {
                keys: q["device_keys"][uid].get(&d.device_id).cloned(),
                device_id: d.device_id,
                display_name: d.display_name,
            })
            .collect();
    let master = q["master_keys"].get(uid).cloned();
    let self_signing = q["self_signing_keys"].get(uid).cloned();
    Ok((devices, master, self_signing))
}

/// What changed since the last announcement: `m.device_list_update` contents (with their
/// stream ids chained through `prev_id`), the rows to record, and whether the cross-signing
/// keys changed.
fn device_updates(
    user_id: &str,
    devices: &[DeviceView],
    signing_digest: Option<String>,
    announced: &[AnnouncedDevice],
) -> (Vec<Value>, Vec<AnnouncedDevice>, bool) {
    let mut last = announced.iter().map(|a| a.stream_id).max().unwrap_or(0);
    let before: BTreeMap<&str, &str> = announced
        .iter()
        .map(|a| (a.device_id.as_str(), a.digest.as_str()))
        .collect();
    let mut edus = Vec::new();
    let mut rows = Vec::new();
    let mut next = |content: Map<String, Value>, device_id: &str, digest: String| {
        let mut content = content;
        let stream_id = last + 1;
        content.insert("user_id".into(), json!(user_id));
        content.insert("device_id".into(), json!(device_id));
        content.insert("stream_id".into(), json!(stream_id));
        content.insert(
            "prev_id".into(),
            if last > 0 { json!([last]) } else { json!([]) },
        );
        last = stream_id;
        edus.push(Value::Object(content));
        rows.push(AnnouncedDevice {
            device_id: device_id.to_owned(),
            digest,
            stream_id,
        });
    };
    let mut present = BTreeSet::new();
    for d in devices {
        present.insert(d.device_id.as_str());
        let dg = digest(&json!({"name": d.display_name, "keys": d.keys}));
        if before.get(d.device_id.as_str()) == Some(&dg.as_str()) {
            continue;
        }
        let mut c = Map::new();
        if let Some(name) = &d.display_name {
            c.insert("device_display_name".into(), json!(name));
        }
        if let Some(keys) = &d.keys {
            c.insert("keys".into(), keys.clone());
        }
        next(c, &d.device_id, dg);
    }
    for a in announced {
        if a.device_id == SIGNING_KEYS_ROW
            || a.digest.is_empty()
            || present.contains(a.device_id.as_str())
        {
            continue;
        }
        let mut c = Map::new();
        c.insert("deleted".into(), json!(true));
        next(c, &a.device_id, String::new());
    }
    let mut signing_changed = false;
    if let Some(dg) = signing_digest
        && before.get(SIGNING_KEYS_ROW) != Some(&dg.as_str())
    {
        signing_changed = true;
        rows.push(AnnouncedDevice {
            device_id: SIGNING_KEYS_ROW.to_owned(),
            digest: dg,
            stream_id: 0,
        });
    }
    (edus, rows, signing_changed)
}

/// Serialises announcements, so stream ids of one user's updates never collide.
static ANNOUNCE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A local user's device list or cross-signing keys may have changed: announces what changed
/// since the last announcement (`m.device_list_update` per device, `m.signing_key_update`) to
/// every server sharing a room with them.
pub async fn device_list_changed(s: &Services, user_id: &UserId) {
    if s.federation.is_none() || !s.is_local(user_id) {
        return;
    }
    logged("device list updates", announce_devices(s, user_id).await);
}

async fn announce_devices(s: &Services, user_id: &UserId) -> Result<()> {
    let _guard = ANNOUNCE.lock().await;
    let uid = user_id.as_str();
    let (devices, master, self_signing) = local_devices(s, user_id).await?;
    let signing_digest = (master.is_some() || self_signing.is_some())
        .then(|| digest(&json!({"master": master, "self_signing": self_signing})));
    let announced = s.db.announced_devices(uid).await?;
    let (updates, rows, signing_changed) =
        device_updates(uid, &devices, signing_digest, &announced);
    if rows.is_empty() {
        return Ok(());
    }
    let mut tx = s.db.begin().await?;
    for row in &rows {
        Db::set_announced_device(&mut tx, uid, row).await?;
    }
    tx.commit().await?;
    let servers = servers_sharing_with(s, uid).await?;
    for content in &updates {
        queue_edu(s, &servers, "m.device_list_update", content).await?;
    }
    if signing_changed {
        let mut c = json!({"user_id": uid});
        if let Some(m) = master {
            c["master_key"] = m;
        }
        if let Some(k) = self_signing {
            c["self_signing_key"] = k;
        }
        queue_edu(s, &servers, "m.signing_key_update", &c).await?;
    }
    Ok(())
}

/// The `message_id` of a send-to-device request: derived from the sending device and its
/// transaction id, so a retried request is recognised by the receiving server too.
pub fn to_device_message_id(sender: &str, sender_device: &str, txn_id: &str) -> String {
    let h = Sha256::digest(format!("{sender}\u{0}{sender_device}\u{0}{txn_id}").as_bytes());
    hex::encode(&h[..16])
}

/// Send-to-device messages for users of other servers: one `m.direct_to_device` per server.
/// `messages` is user id → device id (or `*`) → content.
pub async fn direct_to_device(
    s: &Services,
    sender: &str,
    event_type: &str,
    message_id: &str,
    messages: &BTreeMap<String, Map<String, Value>>,
) {
    if s.federation.is_none() {
        return;
    }
    let mut per_server: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (user, targets) in messages {
        let Some((_, server)) = user.split_once(':') else {
            continue;
        };
        if server == s.server_name() {
            continue;
        }
        per_server
            .entry(server.to_owned())
            .or_default()
            .insert(user.clone(), Value::Object(targets.clone()));
    }
    for (server, msgs) in per_server {
        let content = json!({
            "sender": sender,
            "type": event_type,
            "message_id": message_id,
            "messages": msgs,
        });
        logged(
            "m.direct_to_device",
            queue_edu(s, &[server], "m.direct_to_device", &content).await,
        );
    }
}

fn is_local_str(s: &Services, user_id: &str) -> bool {
    user_id
        .split_once(':')
        .is_some_and(|(_, server)| server == s.server_name())
}

// ---------------------------------------------------------------------------------------------
// Inbound
// ---------------------------------------------------------------------------------------------

/// Whether `user_id` is a valid user id of `origin`.
fn belongs_to(user_id: &str, origin: &ServerName) -> Option<ruma::OwnedUserId> {
    let uid = UserId::parse(user_id).ok()?;
    (uid.server_name() == origin).then_some(uid)
}

async fn is_joined(s: &Services, room_id: &str, user_id: &str) -> Result<bool> {
    Ok(s.db
        .membership(room_id, user_id)
        .await?
        .is_some_and(|m| m.membership == "join"))
}

/// Applies one EDU of an inbound transaction from `origin`. Unknown or malformed EDUs, and
/// EDUs about users of other servers, are ignored (the spec asks receivers to tolerate them);
/// only storage failures are errors.
pub async fn handle_edu(s: &Services, origin: &ServerName, edu: &serde_json::Value) -> Result<()> {
    // EDUs are not signed and are stored field by field: U+0000, which PostgreSQL's text
    // columns cannot hold, is dropped from them.
    let stripped;
    let content = if crate::json::contains_nul(&edu["content"]) {
        stripped = crate::json::strip_nul(&edu["content"]);
        &stripped
    } else {
        &edu["content"]
    };
    match edu["edu_type"].as_str().unwrap_or("") {
        "m.typing" => inbound_typing(s, origin, content).await,
        "m.receipt" => inbound_receipts(s, origin, content).await,
        "m.presence" => inbound_presence(s, origin, content).await,
        "m.device_list_update" | "m.signing_key_update" => {
            inbound_device_change(s, origin, content).await
        }
        "m.direct_to_device" => inbound_to_device(s, origin, content).await,
        other => {
            tracing::debug!(%origin, edu_type = other, "EDU ignored");
            Ok(())
        }
    }
}

async fn inbound_typing(s: &Services, origin: &ServerName, c: &Value) -> Result<()> {
    let (Some(room_id), Some(user)) = (c["room_id"].as_str(), c["user_id"].as_str()) else {
        return Ok(());
    };
    let Some(user) = belongs_to(user, origin) else {
        tracing::debug!(%origin, user, "typing EDU for a user of another server ignored");
        return Ok(());
    };
    if !is_joined(s, room_id, user.as_str()).await? {
        return Ok(());
    }
    let typing = c["typing"].as_bool().unwrap_or(false);
    if s.typing
        .set(room_id, user.as_str(), typing, REMOTE_TYPING_TIMEOUT)
    {
        s.notifier.notify_typing(room_id);
    }
    Ok(())
}

async fn inbound_receipts(s: &Services, origin: &ServerName, c: &Value) -> Result<()> {
    let Some(rooms) = c.as_object() else {
        return Ok(());
    };
    for (room_id, by_type) in rooms {
        // Only public read receipts travel between servers.
        let Some(users) = by_type.get("m.read").and_then(Value::as_object) else {
            continue;
        };
        for (user, r) in users {
            let Some(user) = belongs_to(user, origin) else {
                continue;
            };
            let Some(event_id) = r["event_ids"]
                .as_array()
                .and_then(|ids| ids.last())
                .and_then(Value::as_str)
                .filter(|id| ruma::EventId::parse(*id).is_ok())
            else {
                continue;
            };
            let Ok(thread_id) = parse_thread(r["data"]["thread_id"].as_str()) else {
                continue;
            };
            if !is_joined(s, room_id, user.as_str()).await? {
                continue;
            }
            let ts = r["data"]["ts"].as_i64().filter(|t| *t > 0).unwrap_or(0);
            let pos =
                s.db.set_receipt(&Receipt {
                    room_id: room_id.clone(),
                    receipt_type: "m.read".into(),
                    user_id: user.to_string(),
                    thread_id,
                    event_id: event_id.to_owned(),
                    ts,
                })
                .await?;
            s.notifier.notify_room(room_id, &[], pos);
        }
    }
    Ok(())
}

/// How far back a remote user's last activity is taken at face value: an older one is stored
/// as this old, so the local offline sweep (which turns users offline after
/// `OFFLINE_AFTER_MS` without news) times remote users out only when their server goes quiet.
const REMOTE_ACTIVITY_CAP_MS: i64 = 60_000;

async fn inbound_presence(s: &Services, origin: &ServerName, c: &Value) -> Result<()> {
    let Some(push) = c["push"].as_array() else {
        return Ok(());
    };
    for p in push {
        let Some(user) = p["user_id"].as_str().and_then(|u| belongs_to(u, origin)) else {
            continue;
        };
        let Some(state) = p["presence"]
            .as_str()
            .filter(|st| crate::users::presence::STATES.contains(st))
        else {
            continue;
        };
        if !s.db.is_joined_anywhere(user.as_str()).await? {
            continue;
        }
        let status_msg = p["status_msg"]
            .as_str()
            .filter(|m| m.len() <= crate::users::presence::MAX_STATUS_MSG_LEN);
        let ago = p["last_active_ago"]
            .as_i64()
            .unwrap_or(0)
            .clamp(0, REMOTE_ACTIVITY_CAP_MS);
        let active = p["currently_active"].as_bool().unwrap_or(false);
        let pos =
            s.db.set_remote_presence(user.as_str(), state, status_msg, now_ms() - ago, active)
                .await?;
        let users = s.db.users_sharing_rooms(user.as_str()).await?;
        s.notifier.notify_users(&users, pos);
    }
    Ok(())
}

/// A remote user's devices or cross-signing keys changed. Nothing about them is cached here
/// (`/keys/query` asks their server each time), so recording the change for `/sync`'s
/// `device_lists.changed` is all there is to do.
async fn inbound_device_change(s: &Services, origin: &ServerName, c: &Value) -> Result<()> {
    let Some(user) = c["user_id"].as_str().and_then(|u| belongs_to(u, origin)) else {
        return Ok(());
    };
    if !s.db.is_joined_anywhere(user.as_str()).await? {
        return Ok(());
    }
    crate::e2ee::device_list_changed(s, &user).await
}

async fn inbound_to_device(s: &Services, origin: &ServerName, c: &Value) -> Result<()> {
    let Some(sender) = c["sender"].as_str().and_then(|u| belongs_to(u, origin)) else {
        return Ok(());
    };
    let (Some(event_type), Some(message_id), Some(messages)) = (
        c["type"].as_str(),
        c["message_id"].as_str(),
        c["messages"].as_object(),
    ) else {
        return Ok(());
    };
    let mut out = Vec::new();
    let mut users = Vec::new();
    for (user, targets) in messages {
        let Ok(uid) = UserId::parse(user) else {
            continue;
        };
        let Some(targets) = targets.as_object() else {
            continue;
        };
        if !s.is_local(&uid) {
            continue;
        }
        let devices: Vec<String> =
            s.db.devices(uid.as_str())
                .await?
                .into_iter()
                .map(|d| d.device_id)
                .collect();
        for (target, content) in targets {
            if !content.is_object() {
                continue;
            }
            let content = content.to_string();
            for device_id in devices.iter().filter(|d| target == "*" || *d == target) {
                out.push(ToDeviceMessage {
                    user_id: uid.to_string(),
                    device_id: device_id.clone(),
                    content: content.clone(),
                });
            }
        }
        users.push(uid.to_string());
    }
    // Deduplicated per origin and message id (the origin may resend a transaction).
    let written =
        s.db.send_to_device(
            sender.as_str(),
            &format!("federation:{origin}"),
            message_id,
            event_type,
            &out,
        )
        .await?;
    if let Some(pos) = written
        && !out.is_empty()
    {
        s.notifier.notify_users(&users, pos);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, name: Option<&str>, key: &str) -> DeviceView {
        DeviceView {
            device_id: id.into(),
            display_name: name.map(str::to_owned),
            keys: Some(json!({"keys": {format!("ed25519:{id}"): key}})),
        }
    }

    #[test]
    fn remote_only_drops_ours_and_duplicates() {
        let v = remote_only(&["a".into(), "ours".into(), "b".into(), "a".into()], "ours");
        assert_eq!(v, vec!["a".to_string(), "b".to_string()]);
        let users = [
            "@x:a".to_string(),
            "@y:ours".into(),
            "@z:a".into(),
            "@w:c:8448".into(),
        ];
        assert_eq!(servers_of_users(&users, "ours"), vec!["a", "c:8448"]);
    }

    #[test]
    fn first_announcement_chains_stream_ids() {
        let devices = [dev("A", Some("phone"), "k1"), dev("B", None, "k2")];
        let (edus, rows, signing) = device_updates("@u:h", &devices, None, &[]);
        assert!(!signing);
        assert_eq!(edus.len(), 2);
        assert_eq!(edus[0]["stream_id"], 1);
        assert_eq!(edus[0]["prev_id"], json!([]));
        assert_eq!(edus[0]["device_display_name"], "phone");
        assert_eq!(edus[1]["stream_id"], 2);
        assert_eq!(edus[1]["prev_id"], json!([1]));
        assert!(edus[1].get("device_display_name").is_none());
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn only_changes_are_announced_and_deletions_marked() {
        let devices = [dev("A", Some("phone"), "k1"), dev("B", None, "k2")];
        let (_, rows, _) = device_updates("@u:h", &devices, None, &[]);
        // Nothing changed: nothing to say.
        let (edus, rows2, _) = device_updates("@u:h", &devices, None, &rows);
        assert!(edus.is_empty() && rows2.is_empty());
        // A renamed, B deleted.
        let now = [dev("A", Some("laptop"), "k1")];
        let (edus, rows3, _) = device_updates("@u:h", &now, None, &rows);
        assert_eq!(edus.len(), 2);
        assert_eq!(edus[0]["device_id"], "A");
        assert_eq!(edus[0]["stream_id"], 3);
        assert_eq!(edus[0]["prev_id"], json!([2]));
        assert_eq!(edus[1]["device_id"], "B");
        assert_eq!(edus[1]["deleted"], true);
        assert_eq!(edus[1]["prev_id"], json!([3]));
        assert!(
            rows3
                .iter()
                .any(|r| r.device_id == "B" && r.digest.is_empty())
        );
        // A deleted device is announced once.
        let mut all = rows.clone();
        for r in rows3 {
            all.retain(|x| x.device_id != r.device_id);
            all.push(r);
        }
        let (edus, _, _) = device_updates("@u:h", &now, None, &all);
        assert!(edus.is_empty());
    }

    #[test]
    fn signing_keys_change_detected() {
        let (edus, rows, signing) = device_updates("@u:h", &[], Some("d1".into()), &[]);
        assert!(edus.is_empty() && signing);
        let (_, _, again) = device_updates("@u:h", &[], Some("d1".into()), &rows);
        assert!(!again);
        let (_, _, changed) = device_updates("@u:h", &[], Some("d2".into()), &rows);
        assert!(changed);
    }

    #[test]
    fn receipt_content_shape() {
        let r = Receipt {
            room_id: "!r:h".into(),
            receipt_type: "m.read".into(),
            user_id: "@u:h".into(),
            thread_id: "main".into(),
            event_id: "$e".into(),
            ts: 5,
        };
        let c = receipt_content(&r);
        assert_eq!(c["!r:h"]["m.read"]["@u:h"]["event_ids"], json!(["$e"]));
        assert_eq!(c["!r:h"]["m.read"]["@u:h"]["data"]["ts"], 5);
        assert_eq!(c["!r:h"]["m.read"]["@u:h"]["data"]["thread_id"], "main");
    }

    #[test]
    fn message_ids_are_stable_per_transaction() {
        let a = to_device_message_id("@u:h", "DEV", "t1");
        assert_eq!(a, to_device_message_id("@u:h", "DEV", "t1"));
        assert_ne!(a, to_device_message_id("@u:h", "DEV", "t2"));
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn sender_must_belong_to_origin() {
        let origin = ServerName::parse("a.example").unwrap();
        assert!(belongs_to("@u:a.example", &origin).is_some());
        assert!(belongs_to("@u:b.example", &origin).is_none());
        assert!(belongs_to("not a user", &origin).is_none());
    }
}
