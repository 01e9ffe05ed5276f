//! `/sync`: initial and incremental sync over the one stream, with long-polling.

pub mod filter;
pub mod notifier;
pub mod token;
pub mod typing;

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt;
use serde_json::{Map, Value, json};

use crate::{
    error::Result,
    rooms::{Pdu, visibility::filter_visible},
    services::Services,
};
use filter::SyncFilter;
use token::SyncToken;

/// How many rooms one sync computes at a time.
const ROOM_CONCURRENCY: usize = 8;

pub struct SyncRequest {
    pub user_id: String,
    pub device_id: String,
    pub since: Option<SyncToken>,
    pub full_state: bool,
    pub filter: SyncFilter,
    pub timeout: Duration,
}

/// Runs a sync, long-polling up to `timeout` when an incremental sync has nothing to say.
pub async fn sync(s: &Services, req: SyncRequest) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + req.timeout;
    let mut rx = s.notifier.subscribe();
    loop {
        rx.borrow_and_update();
        let (resp, empty) = compute(s, &req).await?;
        if !empty
            || req.since.is_none()
            || req.full_state
            || tokio::time::Instant::now() >= deadline
        {
            return Ok(resp);
        }
        // Wait until something that may concern this user happens, or the timeout.
        let since = req.since.unwrap_or_default();
        let rooms: Vec<String> =
            s.db.rooms_with_membership(&req.user_id, "join")
                .await?
                .into_iter()
                .map(|(r, _, _)| r)
                .collect();
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

/// One pass: the response and whether it carries nothing new.
async fn compute(s: &Services, req: &SyncRequest) -> Result<(Value, bool)> {
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
    let joined = s.db.rooms_with_membership(&req.user_id, "join").await?;
    let account_data =
        s.db.account_data_since(&req.user_id, if initial { 0 } else { since_stream })
            .await?;
    // Rooms are independent: several are computed at once (each on its own reader connection),
    // and the answers are put back in order.
    let wanted: Vec<(&String, bool)> = joined
        .iter()
        .filter(|(room_id, _, _)| f.rooms.allows_room(room_id))
        .map(|(room_id, joined_at, _)| {
            let newly_joined = !initial && *joined_at > since_stream;
            (room_id, initial || req.full_state || newly_joined)
        })
        .collect();
    let account_data_ref = &account_data;
    let mut pending = Vec::with_capacity(wanted.len());
    for (room_id, full) in &wanted {
        pending.push(joined_room(
            s,
            req,
            room_id,
            *full,
            since_stream,
            since_typing,
            until,
            account_data_ref,
        ));
    }
    let rooms: Vec<Result<Option<Value>>> = futures::stream::iter(pending)
        .buffered(ROOM_CONCURRENCY)
        .collect()
        .await;
    for ((room_id, _), room) in wanted.iter().zip(rooms) {
        if let Some(room) = room? {
            empty = false;
            join.insert((*room_id).clone(), room);
        }
    }
    let invites = s.db.rooms_with_membership(&req.user_id, "invite").await?;
    for (room_id, at, event_id) in invites {
        if (!initial && at <= since_stream) || at > until || !f.rooms.allows_room(&room_id) {
            continue;
        }
        empty = false;
        invite.insert(
            room_id.clone(),
            json!({"invite_state": {"events": invite_state(s, &room_id, &event_id).await?}}),
        );
    }
    if !initial || f.include_leave {
        for membership in ["leave", "ban"] {
            for (room_id, at, event_id) in
                s.db.rooms_with_membership(&req.user_id, membership).await?
            {
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
    let to_device =
        s.db.to_device_since(
            &req.user_id,
            &req.device_id,
            if initial { 0 } else { since_stream },
            100,
        )
        .await?;
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
    let sharing = s.db.users_sharing_rooms(&req.user_id).await?;
    let mut changed = if initial {
        Vec::new()
    } else {
        s.db.device_lists_changed_since(&sharing, since_stream)
            .await?
    };
    // Users who newly share a room with us need their keys refetched.
    if !initial {
        for (room_id, m) in
            s.db.memberships_changed_since_in_my_rooms(&req.user_id, since_stream)
                .await?
        {
            let _ = room_id;
            if m.membership == "join" && !changed.contains(&m.user_id) && m.user_id != req.user_id {
                changed.push(m.user_id);
            }
        }
    }
    if !changed.is_empty() {
        empty = false;
    }
    let presence: Vec<Value> = s
        .db
        .presence_since(&sharing, if initial { 0 } else { since_stream })
        .await?
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

    let resp = json!({
        "next_batch": next.to_string(),
        "rooms": {"join": join, "invite": invite, "leave": leave, "knock": {}},
        "account_data": {"events": global},
        "presence": {"events": presence},
        "to_device": {"events": to_device.into_iter().map(|(_, v)| v).collect::<Vec<_>>()},
        "device_lists": {"changed": changed, "left": []},
        "device_one_time_keys_count": otk,
        "device_unused_fallback_key_types": fallback,
    });
    Ok((resp, empty))
}

#[allow(clippy::too_many_arguments)]
async fn joined_room(
    s: &Services,
    req: &SyncRequest,
    room_id: &str,
    full: bool,
    since: i64,
    since_typing: u64,
    until: i64,
    account_data: &[(String, String, Value)],
) -> Result<Option<Value>> {
    let f = &req.filter;
    if !full
        && s.notifier.room_quiet_since(room_id, since)
        && !s.typing.changed_since(room_id, since_typing)
        && !account_data.iter().any(|(r, _, _)| r == room_id)
    {
        return Ok(None);
    }
    let limit = f.timeline.limit.unwrap_or(10).clamp(1, 500) as i64;
    let from = if full { 0 } else { since };
    let (timeline, limited) = s.db.room_timeline(room_id, from, until, limit).await?;
    let timeline = filter_visible(&s.db, &req.user_id, timeline).await?;
    let timeline: Vec<Pdu> = timeline
        .into_iter()
        .filter(|p| f.timeline.allows(p))
        .collect();

    let typing_changed = s.typing.changed_since(room_id, since_typing);
    let receipts =
        s.db.receipts_since(room_id, if full { 0 } else { since }, &req.user_id)
            .await?;
    let room_ad: Vec<Value> = account_data
        .iter()
        .filter(|(r, _, _)| r == room_id)
        .map(|(_, t, c)| json!({"type": t, "content": c}))
        .filter(|e| f.room_account_data.allows_json(e))
        .collect();
    if !full && timeline.is_empty() && !typing_changed && receipts.is_empty() && room_ad.is_empty()
    {
        return Ok(None);
    }

    // State: at the start of the timeline for a full room; the changes since `since` otherwise.
    let first_pos = timeline
        .first()
        .map(|p| p.stream_ordering)
        .unwrap_or(until + 1);
    // The state before the timeline: after the last event before it, or (when the room's
    // history here starts with the timeline, as after a join over federation) the state after
    // its first event, whose own entry is in the timeline anyway.
    let start_snapshot = match s.db.snapshot_at_stream(room_id, first_pos - 1).await? {
        Some(snap) => Some(snap),
        None => timeline.first().and_then(|p| p.state_after),
    };
    let state_ids: Vec<String> = if full {
        match start_snapshot {
            Some(snap) => {
                s.db.load_snapshot(snap)
                    .await?
                    .map
                    .values()
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        }
    } else if limited {
        let before = match s.db.snapshot_at_stream(room_id, since).await? {
            Some(snap) => s.db.load_snapshot(snap).await?.map.clone(),
            None => Default::default(),
        };
        match start_snapshot {
            Some(snap) => {
                let at_start = s.db.load_snapshot(snap).await?;
                at_start
                    .map
                    .iter()
                    .filter(|(k, v)| before.get(*k) != Some(*v))
                    .map(|(_, v)| v.clone())
                    .collect()
            }
            None => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let mut state = s.db.get_pdus(&state_ids).await?;
    state.retain(|p| f.state.allows(p));
    if f.state.lazy_load_members {
        let mut wanted: std::collections::HashSet<&str> =
            timeline.iter().map(|p| p.sender.as_str()).collect();
        wanted.insert(req.user_id.as_str());
        state.retain(|p| {
            p.kind.to_string() != "m.room.member"
                || p.state_key.as_deref().is_some_and(|k| wanted.contains(k))
        });
        if !full {
            // Members of new timeline senders whose member events are not already in view.
            let have: std::collections::HashSet<String> =
                state.iter().filter_map(|p| p.state_key.clone()).collect();
            let missing: Vec<Pdu> = timeline
                .iter()
                .filter(|p| !have.contains(p.sender.as_str()))
                .cloned()
                .collect();
            if !missing.is_empty() && since > 0 {
                let mut ids = Vec::new();
                for u in missing
                    .iter()
                    .map(|p| p.sender.to_string())
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    if let Some(id) =
                        s.db.current_state_event_id(room_id, "m.room.member", &u)
                            .await?
                    {
                        ids.push(id);
                    }
                }
                state.extend(s.db.get_pdus(&ids).await?);
            }
        }
    }
    // A state event in the timeline is not repeated in `state`.
    let in_timeline: std::collections::HashSet<&str> =
        timeline.iter().map(|p| p.event_id.as_str()).collect();
    state.retain(|p| !in_timeline.contains(p.event_id.as_str()));

    let mut ephemeral = Vec::new();
    if typing_changed || (full && !s.typing.typing_users(room_id).is_empty()) {
        ephemeral.push(
            json!({"type": "m.typing", "content": {"user_ids": s.typing.typing_users(room_id)}}),
        );
    }
    if !receipts.is_empty() {
        let mut content: Map<String, Value> = Map::new();
        for r in receipts {
            if r.receipt_type == "m.read.private" && r.user_id != req.user_id {
                continue;
            }
            let mut data = json!({"ts": r.ts});
            if !r.thread_id.is_empty() {
                data["thread_id"] = json!(r.thread_id);
            }
            let ev = content
                .entry(r.event_id.clone())
                .or_insert_with(|| json!({}));
            ev[r.receipt_type.as_str()][r.user_id.as_str()] = data;
        }
        if !content.is_empty() {
            ephemeral.push(json!({"type": "m.receipt", "content": content}));
        }
    }
    ephemeral.retain(|e| f.ephemeral.allows_json(e));

    let prev_batch = timeline
        .first()
        .map(|p| token::position_token(p.stream_ordering))
        .unwrap_or_else(|| token::position_token(until + 1));
    let joined_at =
        s.db.membership(room_id, &req.user_id)
            .await?
            .map(|m| m.stream_ordering)
            .unwrap_or(0);
    let unread = crate::push::unread_counts(
        &s.db,
        room_id,
        &req.user_id,
        joined_at,
        f.unread_thread_notifications,
    )
    .await?;

    let mut timeline_json: Vec<Value> = timeline
        .iter()
        .map(|p| p.to_client(txn_for(p, req)))
        .collect();
    crate::rooms::relations::bundle_aggregations(&s.db, &req.user_id, &mut timeline_json).await?;
    let mut room = json!({
        "timeline": {
            "events": timeline_json,
            "limited": limited,
            "prev_batch": prev_batch,
        },
        "state": {"events": state.iter().map(|p| p.to_client(None)).collect::<Vec<_>>()},
        "ephemeral": {"events": ephemeral},
        "account_data": {"events": room_ad},
        "unread_notifications": unread.room_json(),
    });
    if f.unread_thread_notifications && !unread.threads.is_empty() {
        room["unread_thread_notifications"] = unread.threads_json();
    }
    if full
        || state.iter().any(|p| p.kind.to_string() == "m.room.member")
        || timeline
            .iter()
            .any(|p| p.kind.to_string() == "m.room.member")
    {
        room["summary"] = summary(s, room_id, &req.user_id).await?;
    }
    Ok(Some(room))
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

async fn summary(s: &Services, room_id: &str, user_id: &str) -> Result<Value> {
    let members = s.db.room_members(room_id).await?;
    let joined = members.iter().filter(|m| m.membership == "join").count();
    let invited = members.iter().filter(|m| m.membership == "invite").count();
    let heroes: Vec<&str> = members
        .iter()
        .filter(|m| (m.membership == "join" || m.membership == "invite") && m.user_id != user_id)
        .take(5)
        .map(|m| m.user_id.as_str())
        .collect();
    Ok(
        json!({"m.heroes": heroes, "m.joined_member_count": joined, "m.invited_member_count": invited}),
    )
}

async fn invite_state(s: &Services, room_id: &str, invite_event_id: &str) -> Result<Vec<Value>> {
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
        Some(snap) if initial || limited => {
            s.db.load_snapshot(snap)
                .await?
                .map
                .values()
                .cloned()
                .collect()
        }
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
