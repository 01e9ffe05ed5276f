//! `/sync`: initial and incremental sync over the one stream, with long-polling.

pub mod filter;
pub mod joined;
pub mod notifier;
pub mod token;
pub mod typing;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde_json::{Map, Value, json};

use crate::{
    error::Result,
    rooms::{Pdu, visibility::filter_visible},
    services::Services,
    storage::StreamKind,
};
use filter::SyncFilter;
use token::SyncToken;

pub struct SyncRequest {
    pub user_id: String,
    pub device_id: String,
    pub since: Option<SyncToken>,
    pub full_state: bool,
    pub filter: SyncFilter,
    pub timeout: Duration,
}

/// Runs a sync, long-polling up to `timeout` when an incremental sync has nothing to say.
pub async fn sync(s: &Arc<Services>, req: SyncRequest) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + req.timeout;
    let mut rx = s.notifier.subscribe();
    loop {
        rx.borrow_and_update();
        let (resp, empty, rooms) = compute(s, &req).await?;
        if !empty
            || req.since.is_none()
            || req.full_state
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(resp);
        }
        // Wait until something that may concern this user happens, or the timeout.
        let since = req.since.unwrap_or_default();
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {
                    if s.notifier.has_news(&req.user_id, &rooms, since.stream)
                        || rooms
                            .iter()
                            .any(|r| s.typing.changed_since(r, since.typing))
                    {
                        break;
                    }
                }
                Ok(Err(_)) | Err(_) => {
                    // Timed out (or shutting down): answer with an empty, advanced token.
                    return Ok(compute(s, &req).await?.0);
                }
            }
        }
    }
}

/// One pass: the response, whether it carries nothing new, and the rooms the user is in.
async fn compute(s: &Arc<Services>, req: &SyncRequest) -> Result<(Value, bool, Vec<String>)> {
    let until = s.db.stream_position();
    let typing_now = s.typing.serial();
    let next = SyncToken {
        stream: until,
        typing: typing_now,
    };
    let since = req.since;
    let since_stream = since.map(|t| t.stream).unwrap_or(0);
    let since_typing = since.map(|t| t.typing).unwrap_or(0);
    let initial = since.is_none();
    let f = &req.filter;
    let mut empty = true;

    // Rooms
    let mut join = Map::new();
    let mut invite = Map::new();
    let mut leave = Map::new();
    // All the user's memberships in one read, split by kind.
    let memberships = s.db.memberships_of_user(&req.user_id).await?;
    let with = |kind: &str| -> Vec<(String, i64, String)> {
        memberships
            .iter()
            .filter(|(_, m, _, _)| m == kind)
            .map(|(r, _, at, e)| (r.clone(), *at, e.clone()))
            .collect()
    };
    let joined = with("join");
    // Streams the database says nothing happened in since `since` are not read at all.
    let changed = |kind: StreamKind| initial || s.db.changed_since(kind, since_stream);
    let account_data = if changed(StreamKind::AccountData) {
        s.db.account_data_since(&req.user_id, if initial { 0 } else { since_stream })
            .await?
    } else {
        Vec::new()
    };
    let wanted: Vec<joined::JoinedRoom> = joined
        .iter()
        .filter(|(room_id, _, _)| f.rooms.allows_room(room_id))
        .map(|(room_id, joined_at, _)| {
            let newly_joined = !initial && *joined_at > since_stream;
            joined::JoinedRoom {
                room_id,
                full: initial || req.full_state || newly_joined,
                joined_at: *joined_at,
            }
        })
        .collect();
    let window = joined::Window {
        since: since_stream,
        since_typing,
        until,
    };
    for (room_id, room) in joined::joined_rooms(s, req, &wanted, window, &account_data).await? {
        empty = false;
        join.insert(room_id, room);
    }
    let invites = with("invite");
    for (room_id, at, event_id) in invites {
        if (!initial && at <= since_stream) || at > until || !f.rooms.allows_room(&room_id) {
            continue;
        }
        empty = false;
        invite.insert(
            room_id.clone(),
            json!({"invite_state": {"events": invite_state(s, &room_id, &req.user_id, &event_id).await?}}),
        );
    }
    let mut knock = Map::new();
    for (room_id, at, event_id) in with("knock") {
        if (!initial && at <= since_stream) || at > until || !f.rooms.allows_room(&room_id) {
            continue;
        }
        empty = false;
        knock.insert(
            room_id.clone(),
            json!({"knock_state": {"events": invite_state(s, &room_id, &req.user_id, &event_id).await?}}),
        );
    }
    if !initial || f.include_leave {
        for membership in ["leave", "ban"] {
            for (room_id, at, event_id) in with(membership) {
                if (!initial && at <= since_stream) || at > until || !f.rooms.allows_room(&room_id)
                {
                    continue;
                }
                empty = false;
                leave.insert(
                    room_id.clone(),
                    left_room(s, req, &room_id, &event_id, since_stream, initial).await?,
                );
            }
        }
    }

    // Global account data
    let mut global: Vec<Value> = account_data
        .iter()
        .filter(|(r, _, _)| r.is_empty())
        .map(|(_, t, c)| json!({"type": t, "content": c}))
        .collect();
    if initial {
        crate::push::add_default_rules_if_unset(&req.user_id, &mut global)?;
    }
    global.retain(|e| f.account_data.allows_json(e));
    if !global.is_empty() {
        empty = false;
    }

    // To-device: syncing past a position acknowledges what it delivered.
    if !initial {
        s.db.ack_to_device(&req.user_id, &req.device_id, since_stream)
            .await?;
    }
    let to_device = if changed(StreamKind::ToDevice) {
        s.db.to_device_since(
            &req.user_id,
            &req.device_id,
            if initial { 0 } else { since_stream },
            100,
        )
        .await?
    } else {
        Vec::new()
    };
    let mut next = next;
    if to_device.len() == 100
        && let Some((last, _)) = to_device.last()
    {
        // More are waiting: make sure the next sync continues from here.
        next.stream = next.stream.min(*last);
    }
    if !to_device.is_empty() {
        empty = false;
    }

    // Device lists and presence of users we share rooms with.
    let want_devices = !initial && changed(StreamKind::DeviceLists);
    let want_presence = changed(StreamKind::Presence);
    // The user's own devices count too, even when they share no room with anyone (clients
    // refresh their own keys from this after cross-signing changes).
    let sharing = if want_devices || want_presence {
        let mut users = s.db.users_sharing_rooms(&req.user_id).await?;
        if !users.iter().any(|u| u == &req.user_id) {
            users.push(req.user_id.clone());
        }
        users
    } else {
        Vec::new()
    };
    let mut changed_devices = if want_devices {
        s.db.device_lists_changed_since(&sharing, since_stream)
            .await?
    } else {
        Vec::new()
    };
    // Users who newly share a room with us need their keys refetched.
    if !initial && changed(StreamKind::Memberships) {
        for (_, m) in
            s.db.memberships_changed_since_in_my_rooms(&req.user_id, since_stream)
                .await?
        {
            if m.membership == "join"
                && !changed_devices.contains(&m.user_id)
                && m.user_id != req.user_id
            {
                changed_devices.push(m.user_id);
            }
        }
    }
    if !changed_devices.is_empty() {
        empty = false;
    }
    let presence_rows = if want_presence {
        s.db.presence_since(&sharing, if initial { 0 } else { since_stream })
            .await?
    } else {
        Vec::new()
    };
    let presence: Vec<Value> = presence_rows
        .into_iter()
        .map(|(user, state, msg, last, active)| {
            let mut c = json!({"presence": state, "last_active_ago": (crate::storage::now_ms() - last).max(0), "currently_active": active});
            if let Some(m) = msg {
                c["status_msg"] = json!(m);
            }
            json!({"type": "m.presence", "sender": user, "content": c})
        })
        .filter(|e| f.presence.allows_json(e))
        .collect();
    if !presence.is_empty() {
        empty = false;
    }

    let otk: BTreeMap<String, i64> =
        s.db.one_time_key_counts(&req.user_id, &req.device_id)
            .await?
            .into_iter()
            .collect();
    let fallback =
        s.db.unused_fallback_key_types(&req.user_id, &req.device_id)
            .await?;

    // Built by moving the parts in (`json!` would copy every room's events once more).
    let mut rooms = Map::new();
    rooms.insert("join".into(), Value::Object(join));
    rooms.insert("invite".into(), Value::Object(invite));
    rooms.insert("leave".into(), Value::Object(leave));
    rooms.insert("knock".into(), Value::Object(knock));
    let mut resp = json!({
        "next_batch": next.to_string(),
        "account_data": {"events": global},
        "presence": {"events": presence},
        "to_device": {"events": to_device.into_iter().map(|(_, v)| v).collect::<Vec<_>>()},
        "device_lists": {"changed": changed_devices, "left": []},
        "device_one_time_keys_count": otk,
        "device_unused_fallback_key_types": fallback,
    });
    resp["rooms"] = Value::Object(rooms);
    let joined_rooms = joined.into_iter().map(|(r, _, _)| r).collect();
    Ok((resp, empty, joined_rooms))
}

/// The transaction id is shown only to the device that sent the event.
fn txn_for<'a>(p: &'a Pdu, req: &SyncRequest) -> Option<&'a str> {
    match &p.local_txn {
        Some((device, txn)) if p.sender.as_str() == req.user_id && *device == req.device_id => {
            Some(txn)
        }
        _ => None,
    }
}

/// The stripped state shown with an invite or a knock: the room's current state where this
/// server is in the room, else what the other server sent with the invite (or the knock).
async fn invite_state(
    s: &Services,
    room_id: &str,
    user_id: &str,
    invite_event_id: &str,
) -> Result<Vec<Value>> {
    if s.db
        .current_state_event_id(room_id, "m.room.create", "")
        .await?
        .is_none()
        && let Some(text) = s.db.invite_state(room_id, user_id).await?
        && let Ok(events) = serde_json::from_str::<Vec<Value>>(&text)
    {
        return Ok(events);
    }
    let mut out = Vec::new();
    for kind in [
        "m.room.create",
        "m.room.join_rules",
        "m.room.name",
        "m.room.avatar",
        "m.room.canonical_alias",
        "m.room.encryption",
        "m.room.topic",
    ] {
        if let Some(p) = crate::rooms::current_state_event(&s.db, room_id, kind, "").await? {
            out.push(p.to_stripped());
        }
    }
    if let Some(p) = s.db.get_pdu(invite_event_id).await? {
        let mut v = p.to_client(None);
        if let Some(obj) = v.as_object_mut() {
            obj.remove("unsigned");
        }
        // The inviter's member event helps clients show who invited.
        if let Some(inviter) =
            crate::rooms::current_state_event(&s.db, room_id, "m.room.member", p.sender.as_str())
                .await?
        {
            out.push(inviter.to_stripped());
        }
        out.push(v);
    }
    Ok(out)
}

async fn left_room(
    s: &Services,
    req: &SyncRequest,
    room_id: &str,
    leave_event_id: &str,
    since: i64,
    initial: bool,
) -> Result<Value> {
    let leave_pos =
        s.db.get_pdu(leave_event_id)
            .await?
            .map(|p| p.stream_ordering)
            .unwrap_or(0);
    let limit = req.filter.timeline.limit.unwrap_or(10).clamp(1, 500) as i64;
    let from = if initial { 0 } else { since };
    let (timeline, limited) = s.db.room_timeline(room_id, from, leave_pos, limit).await?;
    let timeline = filter_visible(&s.db, &req.user_id, timeline).await?;
    let first_pos = timeline
        .first()
        .map(|p| p.stream_ordering)
        .unwrap_or(leave_pos);
    let state_ids: Vec<String> = match s.db.snapshot_at_stream(room_id, first_pos - 1).await? {
        Some(snap) if initial || limited => s.db.snapshot_event_ids(snap).await?,
        _ => Vec::new(),
    };
    let in_timeline: std::collections::HashSet<&str> =
        timeline.iter().map(|p| p.event_id.as_str()).collect();
    let state: Vec<Value> =
        s.db.get_pdus(&state_ids)
            .await?
            .iter()
            .filter(|p| !in_timeline.contains(p.event_id.as_str()))
            .map(|p| p.to_client(None))
            .collect();
    Ok(json!({
        "timeline": {
            "events": timeline.iter().map(|p| p.to_client(None)).collect::<Vec<_>>(),
            "limited": limited,
            "prev_batch": token::position_token(first_pos),
        },
        "state": {"events": state},
        "account_data": {"events": []},
    }))
}
