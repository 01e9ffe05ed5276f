//! The `rooms.join` section of `/sync`, worked out for all the user's rooms together: the
//! timelines, receipts, read positions, relations and summaries of every room come from one
//! batched query each, and each room is then assembled from what was fetched (its state from
//! the snapshot caches).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::{SyncRequest, token, txn_for};
use crate::{
    error::Result,
    rooms::{Pdu, visibility::filter_visible_as},
    services::Services,
    storage::{StreamKind, receipts::Receipt, sync::TimelineWindow},
};

/// How many rooms are assembled at a time (assembly mostly reads caches).
const ROOM_CONCURRENCY: usize = 8;

/// A joined room the sync looks at.
pub struct JoinedRoom<'a> {
    pub room_id: &'a str,
    /// Everything from the start (initial sync, `full_state`, newly joined), or changes only.
    pub full: bool,
    /// The stream position of the user's join.
    pub joined_at: i64,
}

/// Positions the sync runs between.
#[derive(Clone, Copy)]
pub struct Window {
    pub since: i64,
    pub since_typing: u64,
    pub until: i64,
}

/// One room's answer before relations and the summary are added.
struct Parts {
    timeline: Vec<Pdu>,
    limited: bool,
    state: Vec<Pdu>,
    ephemeral: Vec<Value>,
    account_data: Vec<Value>,
    unread: crate::push::UnreadCounts,
    needs_summary: bool,
}

/// The `rooms.join` entries of the rooms that have something to say, in the order given.
pub async fn joined_rooms(
    s: &Arc<Services>,
    req: &SyncRequest,
    rooms: &[JoinedRoom<'_>],
    w: Window,
    account_data: &[(String, String, Value)],
) -> Result<Vec<(String, Value)>> {
    // Rooms with nothing new are left out before anything is read.
    let active: Vec<&JoinedRoom> = rooms
        .iter()
        .filter(|r| {
            r.full
                || !s.notifier.room_quiet_since(r.room_id, w.since)
                || s.typing.changed_since(r.room_id, w.since_typing)
                || account_data.iter().any(|(room, _, _)| room == r.room_id)
        })
        .collect();
    if active.is_empty() {
        return Ok(Vec::new());
    }
    let f = &req.filter;
    let limit = f.timeline.limit.unwrap_or(10).clamp(1, 500) as i64;
    let windows: Vec<TimelineWindow> = active
        .iter()
        .map(|r| TimelineWindow {
            room_id: r.room_id,
            since: if r.full { 0 } else { w.since },
        })
        .collect();
    let mut timelines = s.db.room_timelines(&windows, w.until, limit).await?;
    let any_full = active.iter().any(|r| r.full);
    let mut receipts = if any_full || s.db.changed_since(StreamKind::Receipts, w.since) {
        s.db.receipts_in_rooms(&windows, &req.user_id).await?
    } else {
        HashMap::new()
    };
    let read_positions = s.db.read_positions_of_user(&req.user_id).await?;
    let no_receipts = HashMap::new();
    let prefetched = prefetch_unread(s, req, &active, &read_positions).await?;
    let mut unread = count_unread(s, req, &active, &read_positions, prefetched).await?;

    let mut pending = Vec::with_capacity(active.len());
    for r in &active {
        let (timeline, limited) = timelines.remove(r.room_id).unwrap_or_default();
        let room_receipts = receipts.remove(r.room_id).unwrap_or_default();
        let reads = read_positions.get(r.room_id).unwrap_or(&no_receipts);
        let room_unread = unread.remove(r.room_id);
        pending.push(room_parts(
            s,
            req,
            r,
            w,
            timeline,
            limited,
            room_receipts,
            reads,
            account_data,
            room_unread,
        ));
    }
    let parts: Vec<Result<Option<Parts>>> = futures::stream::iter(pending)
        .buffered(ROOM_CONCURRENCY)
        .collect()
        .await;
    let mut built: Vec<(&str, Parts)> = Vec::with_capacity(parts.len());
    for (r, p) in active.iter().zip(parts) {
        if let Some(p) = p? {
            built.push((r.room_id, p));
        }
    }

    // Relations for all the timelines at once, then split back per room.
    let mut all_events: Vec<Value> = Vec::new();
    let mut lens = Vec::with_capacity(built.len());
    for (_, p) in &built {
        lens.push(p.timeline.len());
        all_events.extend(p.timeline.iter().map(|e| e.to_client(txn_for(e, req))));
    }
    crate::rooms::relations::bundle_aggregations(&s.db, &req.user_id, &mut all_events).await?;
    let summary_rooms: Vec<&str> = built
        .iter()
        .filter(|(_, p)| p.needs_summary)
        .map(|(r, _)| *r)
        .collect();
    let summaries = if summary_rooms.is_empty() {
        HashMap::new()
    } else {
        s.db.room_summaries(&summary_rooms, &req.user_id).await?
    };

    let mut events = all_events.into_iter();
    let mut out = Vec::with_capacity(built.len());
    for ((room_id, p), n) in built.into_iter().zip(lens) {
        let timeline_json: Vec<Value> = events.by_ref().take(n).collect();
        let prev_batch = p
            .timeline
            .first()
            .map(|e| token::position_token(e.stream_ordering))
            .unwrap_or_else(|| token::position_token(w.until + 1));
        // Built by moving the parts in (`json!` would copy every event once more).
        let events_obj = |events: Vec<Value>| {
            let mut m = Map::new();
            m.insert("events".into(), Value::Array(events));
            Value::Object(m)
        };
        let mut timeline = Map::new();
        timeline.insert("events".into(), Value::Array(timeline_json));
        timeline.insert("limited".into(), Value::Bool(p.limited));
        timeline.insert("prev_batch".into(), Value::String(prev_batch));
        let mut obj = Map::new();
        obj.insert("timeline".into(), Value::Object(timeline));
        obj.insert(
            "state".into(),
            events_obj(p.state.iter().map(|e| e.to_client(None)).collect()),
        );
        obj.insert("ephemeral".into(), events_obj(p.ephemeral));
        obj.insert("account_data".into(), events_obj(p.account_data));
        obj.insert("unread_notifications".into(), p.unread.room_json());
        let mut room = Value::Object(obj);
        if f.unread_thread_notifications && !p.unread.threads.is_empty() {
            room["unread_thread_notifications"] = p.unread.threads_json();
        }
        if p.needs_summary {
            let sm = summaries.get(room_id).cloned().unwrap_or_default();
            room["summary"] = json!({
                "m.heroes": sm.heroes,
                "m.joined_member_count": sm.joined,
                "m.invited_member_count": sm.invited,
            });
        }
        out.push((room_id.to_owned(), room));
    }
    Ok(out)
}

/// The events the unread counts of the rooms still have to look at, read for all the rooms
/// in one round trip (rooms whose cached counts are current read nothing).
async fn prefetch_unread(
    s: &Services,
    req: &SyncRequest,
    rooms: &[&JoinedRoom<'_>],
    read_positions: &HashMap<String, HashMap<String, i64>>,
) -> Result<HashMap<String, crate::push::Prefetched>> {
    let none = HashMap::new();
    let windows: Vec<TimelineWindow> = rooms
        .iter()
        .filter_map(|r| {
            let of = crate::push::UnreadOf {
                room_id: r.room_id,
                user_id: &req.user_id,
                joined_at: r.joined_at,
                receipts: read_positions.get(r.room_id).unwrap_or(&none),
                per_thread: req.filter.unread_thread_notifications,
            };
            crate::push::unread_reads_after(s, &of).map(|after| TimelineWindow {
                room_id: r.room_id,
                since: after,
            })
        })
        .collect();
    if windows.is_empty() {
        return Ok(HashMap::new());
    }
    // Everything committed up to here is seen by the read below.
    let horizon = s.db.stream_position();
    let mut events =
        s.db.notification_candidates_in_rooms(&windows, &req.user_id, crate::push::MAX_EVALUATED)
            .await?;
    Ok(windows
        .iter()
        .map(|w| {
            let prefetched = crate::push::Prefetched {
                after: w.since,
                horizon,
                events: events.remove(w.room_id).unwrap_or_default(),
            };
            (w.room_id.to_owned(), prefetched)
        })
        .collect())
}

/// The unread counts of the rooms whose events were read ahead, worked out on all the
/// runtime's threads at once: evaluating push rules over a room's unread events is the one
/// part of a sync that is mostly computation (each event against each of the user's rules).
async fn count_unread(
    s: &Arc<Services>,
    req: &SyncRequest,
    rooms: &[&JoinedRoom<'_>],
    read_positions: &HashMap<String, HashMap<String, i64>>,
    mut prefetched: HashMap<String, crate::push::Prefetched>,
) -> Result<HashMap<String, crate::push::UnreadCounts>> {
    let none = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for r in rooms {
        let Some(events) = prefetched.remove(r.room_id) else {
            continue;
        };
        let s = s.clone();
        let room_id = r.room_id.to_owned();
        let user_id = req.user_id.clone();
        let joined_at = r.joined_at;
        let receipts = read_positions.get(r.room_id).unwrap_or(&none).clone();
        let per_thread = req.filter.unread_thread_notifications;
        tasks.spawn(async move {
            let of = crate::push::UnreadOf {
                room_id: &room_id,
                user_id: &user_id,
                joined_at,
                receipts: &receipts,
                per_thread,
            };
            let counts = crate::push::unread_counts(&s, &of, Some(events)).await;
            (room_id, counts)
        });
    }
    let mut out = HashMap::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        let (room_id, counts) = done.map_err(crate::error::Error::internal)?;
        out.insert(room_id, counts?);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn room_parts(
    s: &Services,
    req: &SyncRequest,
    r: &JoinedRoom<'_>,
    w: Window,
    timeline: Vec<Pdu>,
    limited: bool,
    receipts: Vec<Receipt>,
    read_positions: &HashMap<String, i64>,
    account_data: &[(String, String, Value)],
    unread: Option<crate::push::UnreadCounts>,
) -> Result<Option<Parts>> {
    let f = &req.filter;
    let room_id = r.room_id;
    let full = r.full;
    let since = w.since;
    let timeline = filter_visible_as(&s.db, &req.user_id, timeline, true).await?;
    let timeline: Vec<Pdu> = timeline
        .into_iter()
        .filter(|p| f.timeline.allows(p))
        .collect();
    let typing_changed = s.typing.changed_since(room_id, w.since_typing);
    let room_ad: Vec<Value> = account_data
        .iter()
        .filter(|(room, _, _)| room == room_id)
        .map(|(_, t, c)| json!({"type": t, "content": c}))
        .filter(|e| f.room_account_data.allows_json(e))
        .collect();
    if !full && timeline.is_empty() && !typing_changed && receipts.is_empty() && room_ad.is_empty()
    {
        return Ok(None);
    }

    // State: at the start of the timeline for a full room; the changes since `since` otherwise.
    // The state before a message is the state it was sent in; before a state event, the state
    // after the event preceding it. When the room's history here starts with the timeline (as
    // after a join over federation), the state after its first event, whose own entry is in
    // the timeline anyway.
    let start_snapshot = match timeline.first() {
        Some(first) if first.state_key.is_none() && first.state_after.is_some() => {
            first.state_after
        }
        first => {
            let first_pos = first.map(|p| p.stream_ordering).unwrap_or(w.until + 1);
            match s.db.snapshot_at_stream(room_id, first_pos - 1).await? {
                Some(snap) => Some(snap),
                None => first.and_then(|p| p.state_after),
            }
        }
    };
    let state_ids: Vec<String> = if full {
        match start_snapshot {
            Some(snap) => s.db.snapshot_event_ids(snap).await?,
            None => Vec::new(),
        }
    } else if limited {
        let before = match s.db.snapshot_at_stream(room_id, since).await? {
            Some(snap) => Some(s.db.load_snapshot(snap).await?),
            None => None,
        };
        match start_snapshot {
            Some(snap) => {
                let at_start = s.db.load_snapshot(snap).await?;
                at_start
                    .map
                    .iter()
                    .filter(|(k, v)| before.as_ref().and_then(|b| b.map.get(*k)) != Some(*v))
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
        let mut wanted: HashSet<&str> = timeline.iter().map(|p| p.sender.as_str()).collect();
        wanted.insert(req.user_id.as_str());
        state.retain(|p| {
            p.kind.to_string() != "m.room.member"
                || p.state_key.as_deref().is_some_and(|k| wanted.contains(k))
        });
        if !full && since > 0 {
            // Members of new timeline senders whose member events are not already in view.
            let have: HashSet<String> = state.iter().filter_map(|p| p.state_key.clone()).collect();
            let missing: std::collections::BTreeSet<String> = timeline
                .iter()
                .filter(|p| !have.contains(p.sender.as_str()))
                .map(|p| p.sender.to_string())
                .collect();
            let mut ids = Vec::new();
            for u in missing {
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
    // A state event in the timeline is not repeated in `state`.
    let in_timeline: HashSet<&str> = timeline.iter().map(|p| p.event_id.as_str()).collect();
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

    let unread = match unread {
        Some(counts) => counts,
        None => {
            let of = crate::push::UnreadOf {
                room_id,
                user_id: &req.user_id,
                joined_at: r.joined_at,
                receipts: read_positions,
                per_thread: f.unread_thread_notifications,
            };
            crate::push::unread_counts(s, &of, None).await?
        }
    };
    let is_member = |p: &Pdu| p.kind.to_string() == "m.room.member";
    let needs_summary = full || state.iter().any(is_member) || timeline.iter().any(is_member);
    Ok(Some(Parts {
        timeline,
        limited,
        state,
        ephemeral,
        account_data: room_ad,
        unread,
        needs_summary,
    }))
}
