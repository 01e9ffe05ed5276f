//! Room data other servers ask for: single events, the state at an event (full or as ids),
//! auth chains, backfill, missing events and the event closest to a time. Only servers with (or that had) members in the room
//! are answered.

use std::collections::{HashSet, VecDeque};

use axum::{Router, extract::State};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, ServerName,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{
            get_event, get_event_by_timestamp, get_missing_events, get_room_state,
            get_room_state_ids,
        },
    },
};
use serde_json::value::RawValue;

use crate::{
    api::{Ruma, RumaResponse, route},
    error::{Error, Result},
    federation::membership::state_and_auth_chain_before,
    rooms::Pdu,
    services::{AppState, Services},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_event::v1::Request, _, _>(r, event);
    let r = route::<get_room_state::v1::Request, _, _>(r, state);
    let r = route::<get_room_state_ids::v1::Request, _, _>(r, state_ids);
    let r = route::<get_event_authorization::v1::Request, _, _>(r, event_auth);
    let r = route::<get_backfill::v1::Request, _, _>(r, backfill);
    let r = route::<get_event_by_timestamp::v1::Request, _, _>(r, timestamp_to_event);
    route::<get_missing_events::v1::Request, _, _>(r, missing_events)
}

fn raw(p: &Pdu) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(&*p.json).ok()
}

/// The origin has (or had) members in the room, and the room's ACL lets it in.
async fn check_origin_in_room(s: &Services, room_id: &RoomId, origin: &ServerName) -> Result<()> {
    super::check_server_acl(s, room_id, origin).await?;
    let suffix = format!(":{origin}");
    let known =
        s.db.room_members(room_id.as_str())
            .await?
            .iter()
            .any(|m| m.user_id.ends_with(&suffix) && m.membership != "invite");
    if known {
        Ok(())
    } else {
        Err(Error::forbidden(format!("{origin} is not in the room")))
    }
}

async fn room_event(s: &Services, room_id: &RoomId, event_id: &OwnedEventId) -> Result<Pdu> {
    s.db.get_pdu(event_id.as_str())
        .await?
        .filter(|p| p.room_id == room_id)
        .ok_or_else(|| Error::not_found("Unknown event"))
}

async fn event(
    State(s): State<AppState>,
    req: Ruma<get_event::v1::Request>,
) -> Result<RumaResponse<get_event::v1::Response>> {
    let origin = req.origin()?;
    let pdu =
        s.db.get_pdu(req.body.event_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Unknown event"))?;
    check_origin_in_room(&s, &pdu.room_id, origin).await?;
    let raw = raw(&pdu).ok_or_else(|| Error::internal("event unserialisable"))?;
    Ok(RumaResponse(get_event::v1::Response::new(
        s.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        raw,
    )))
}

async fn timestamp_to_event(
    State(s): State<AppState>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<RumaResponse<get_event_by_timestamp::v1::Response>> {
    let origin = req.origin()?;
    let b = &req.body;
    check_origin_in_room(&s, &b.room_id, origin).await?;
    let forwards = b.dir == ruma::api::Direction::Forward;
    let pdu = crate::rooms::timestamp::closest_event(
        &s,
        &b.room_id,
        i64::from(b.ts.get()),
        forwards,
        None,
    )
    .await?
    .ok_or_else(|| Error::not_found("No event found in that direction"))?;
    Ok(RumaResponse(get_event_by_timestamp::v1::Response::new(
        pdu.event_id,
        pdu.origin_server_ts,
    )))
}

async fn state(
    State(s): State<AppState>,
    req: Ruma<get_room_state::v1::Request>,
) -> Result<RumaResponse<get_room_state::v1::Response>> {
    let origin = req.origin()?;
    check_origin_in_room(&s, &req.body.room_id, origin).await?;
    let pdu = room_event(&s, &req.body.room_id, &req.body.event_id).await?;
    let (state, chain) = state_and_auth_chain_before(&s, &pdu, false, &[]).await?;
    Ok(RumaResponse(get_room_state::v1::Response::new(
        chain.iter().filter_map(raw).collect(),
        state.iter().filter_map(raw).collect(),
    )))
}

async fn state_ids(
    State(s): State<AppState>,
    req: Ruma<get_room_state_ids::v1::Request>,
) -> Result<RumaResponse<get_room_state_ids::v1::Response>> {
    let origin = req.origin()?;
    check_origin_in_room(&s, &req.body.room_id, origin).await?;
    let pdu = room_event(&s, &req.body.room_id, &req.body.event_id).await?;
    let (state, chain) = state_and_auth_chain_before(&s, &pdu, false, &[]).await?;
    Ok(RumaResponse(get_room_state_ids::v1::Response::new(
        chain.into_iter().map(|p| p.event_id).collect(),
        state.into_iter().map(|p| p.event_id).collect(),
    )))
}

async fn event_auth(
    State(s): State<AppState>,
    req: Ruma<get_event_authorization::v1::Request>,
) -> Result<RumaResponse<get_event_authorization::v1::Response>> {
    let origin = req.origin()?;
    check_origin_in_room(&s, &req.body.room_id, origin).await?;
    let pdu = room_event(&s, &req.body.room_id, &req.body.event_id).await?;
    let ids: Vec<String> =
        s.db.auth_chain_ids(&[pdu.event_id.to_string()])
            .await?
            .into_iter()
            .collect();
    let chain = s.db.get_pdus(&ids).await?;
    Ok(RumaResponse(get_event_authorization::v1::Response::new(
        chain.iter().filter_map(raw).collect(),
    )))
}

/// Walks the DAG backwards over prev events from `from`, breadth first, up to `limit` events,
/// not past `stop` (and not below `min_depth`).
async fn walk_back(
    s: &Services,
    room_id: &RoomId,
    from: &[OwnedEventId],
    stop: &HashSet<OwnedEventId>,
    include_start: bool,
    limit: usize,
    min_depth: i64,
) -> Result<Vec<Pdu>> {
    let mut out = Vec::new();
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
    for id in from {
        if include_start {
            if seen.insert(id.clone()) {
                queue.push_back(id.clone());
            }
        } else {
            seen.insert(id.clone());
            if let Some(p) = s.db.get_pdu(id.as_str()).await? {
                for prev in p.prev_events.iter() {
                    if !stop.contains(prev) && seen.insert(prev.clone()) {
                        queue.push_back(prev.clone());
                    }
                }
            }
        }
    }
    while let Some(id) = queue.pop_front() {
        if out.len() >= limit {
            break;
        }
        if stop.contains(&id) {
            continue;
        }
        let Some(p) = s.db.get_pdu(id.as_str()).await? else {
            continue;
        };
        if p.room_id != room_id || p.depth < min_depth || p.rejected {
            continue;
        }
        for prev in p.prev_events.iter() {
            if !stop.contains(prev) && seen.insert(prev.clone()) {
                queue.push_back(prev.clone());
            }
        }
        out.push(p);
    }
    Ok(out)
}

async fn backfill(
    State(s): State<AppState>,
    req: Ruma<get_backfill::v1::Request>,
) -> Result<RumaResponse<get_backfill::v1::Response>> {
    let origin = req.origin()?;
    let room_id = &req.body.room_id;
    check_origin_in_room(&s, room_id, origin).await?;
    let limit = u64::from(req.body.limit).clamp(1, 500) as usize;
    let events = walk_back(&s, room_id, &req.body.v, &HashSet::new(), true, limit, 0).await?;
    Ok(RumaResponse(get_backfill::v1::Response::new(
        s.config.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
        events.iter().filter_map(raw).collect(),
    )))
}

async fn missing_events(
    State(s): State<AppState>,
    req: Ruma<get_missing_events::v1::Request>,
) -> Result<RumaResponse<get_missing_events::v1::Response>> {
    let origin = req.origin()?;
    let room_id = &req.body.room_id;
    check_origin_in_room(&s, room_id, origin).await?;
    let limit = u64::from(req.body.limit).clamp(1, 100) as usize;
    let stop: HashSet<OwnedEventId> = req.body.earliest_events.iter().cloned().collect();
    let min_depth = i64::try_from(u64::from(req.body.min_depth)).unwrap_or(0);
    let mut events = walk_back(
        &s,
        room_id,
        &req.body.latest_events,
        &stop,
        false,
        limit,
        min_depth,
    )
    .await?;
    // Oldest first, as Synapse answers.
    events.reverse();
    Ok(RumaResponse(get_missing_events::v1::Response::new(
        events.iter().filter_map(raw).collect(),
    )))
}
