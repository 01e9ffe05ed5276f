//! Rooms: create, send, state, event by id, redaction, /messages and /context.

use axum::{Json, Router, extract::State};
use ruma::{
    OwnedRoomId,
    api::client::{
        context::get_context,
        message::{get_message_events, send_message_event},
        redact::redact_event,
        room::{create_room, get_event_by_timestamp, get_room_event, upgrade_room},
        state::{get_state_event_for_key, get_state_events, send_state_event},
    },
};
use serde_json::{Map, Value, json};

use super::JsonResult;
use crate::{
    api::{Ruma, route, route_optional_last},
    error::{Error, Result},
    rooms::{
        self, ClientTxn, NewEvent, Pdu,
        create::{CreateRoom, Preset},
        relations::bundle_aggregations,
        visibility::{can_read_room, filter_visible},
    },
    services::{AppState, Services},
    sync::{filter::EventFilter, token},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<create_room::v3::Request, _, _>(r, create_room);
    let r = route::<send_message_event::v3::Request, _, _>(r, send_message);
    let r = route_optional_last::<send_state_event::v3::Request, _, _>(r, send_state);
    let r = route::<get_state_events::v3::Request, _, _>(r, get_state);
    let r = route_optional_last::<get_state_event_for_key::v3::Request, _, _>(r, get_state_for_key);
    let r = route::<get_room_event::v3::Request, _, _>(r, get_event);
    let r = route::<redact_event::v3::Request, _, _>(r, redact);
    let r = route::<get_message_events::v3::Request, _, _>(r, messages);
    let r = route::<upgrade_room::v3::Request, _, _>(r, upgrade);
    let r = route::<get_event_by_timestamp::v1::Request, _, _>(r, timestamp_to_event);
    route::<get_context::v3::Request, _, _>(r, context)
}

async fn timestamp_to_event(
    State(s): State<AppState>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> JsonResult {
    let a = req.user()?;
    let b = &req.body;
    if !can_read_room(&s.db, b.room_id.as_str(), a.user_id.as_str()).await? {
        return Err(Error::forbidden("You may not read this room"));
    }
    let forwards = b.dir == ruma::api::Direction::Forward;
    let ts = i64::from(b.ts.get());
    let pdu =
        rooms::timestamp::closest_event(&s, &b.room_id, ts, forwards, Some(a.user_id.as_str()))
            .await?
            .ok_or_else(|| Error::not_found("No event found in that direction"))?;
    Ok(Json(
        json!({"event_id": pdu.event_id, "origin_server_ts": pdu.origin_server_ts}),
    ))
}

async fn upgrade(State(s): State<AppState>, req: Ruma<upgrade_room::v3::Request>) -> JsonResult {
    let a = req.user()?.clone();
    let body = req.body;
    let replacement = rooms::upgrade::upgrade_room(
        &s,
        &a.user_id,
        rooms::upgrade::Upgrade {
            room_id: body.room_id,
            new_version: body.new_version.to_string(),
            additional_creators: body.additional_creators,
        },
    )
    .await?;
    Ok(Json(json!({"replacement_room": replacement})))
}

/// The caller must be joined to send or change state.
pub async fn require_joined(s: &Services, room_id: &str, user_id: &str) -> Result<()> {
    match s.db.membership(room_id, user_id).await? {
        Some(m) if m.membership == "join" => Ok(()),
        _ => {
            if s.db.room_version(room_id).await?.is_none() {
                Err(Error::forbidden("Unknown room or not a member"))
            } else {
                Err(Error::forbidden("You are not joined to this room"))
            }
        }
    }
}

async fn create_room(State(s): State<AppState>, req: Ruma<create_room::v3::Request>) -> JsonResult {
    let a = req.user()?.clone();
    let json = req.json.clone().unwrap_or(Value::Null);
    let preset = match json.get("preset").and_then(Value::as_str) {
        Some("private_chat") => Some(Preset::PrivateChat),
        Some("public_chat") => Some(Preset::PublicChat),
        Some("trusted_private_chat") => Some(Preset::TrustedPrivateChat),
        Some(other) => return Err(Error::bad_json(format!("unknown preset {other}"))),
        None => None,
    };
    let mut initial_state = Vec::new();
    for ev in json
        .get("initial_state")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let kind = ev
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad_json("initial_state event without type"))?;
        let sk = ev.get("state_key").and_then(Value::as_str).unwrap_or("");
        let content = ev
            .get("content")
            .cloned()
            .filter(Value::is_object)
            .ok_or_else(|| Error::bad_json("initial_state event without content"))?;
        initial_state.push(NewEvent::state(kind, sk, content));
    }
    let obj = |k: &str| json.get(k).and_then(Value::as_object).cloned();
    let room_id = rooms::create::create_room(
        &s,
        &a.user_id,
        CreateRoom {
            version: req.body.room_version.as_ref().map(|v| v.to_string()),
            preset,
            public: json.get("visibility").and_then(Value::as_str) == Some("public"),
            name: req.body.name.clone(),
            topic: req.body.topic.clone(),
            alias_localpart: req.body.room_alias_name.clone(),
            invite: req.body.invite.clone(),
            is_direct: req.body.is_direct,
            creation_content: obj("creation_content"),
            initial_state,
            power_level_override: obj("power_level_content_override"),
        },
    )
    .await?;
    Ok(Json(json!({"room_id": room_id})))
}

fn content_of(json: &Option<Value>) -> Result<Value> {
    match json {
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        None => Ok(Value::Object(Map::new())),
        Some(_) => Err(Error::not_json("Content must be a JSON object")),
    }
}

async fn send_message(
    State(s): State<AppState>,
    req: Ruma<send_message_event::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let room_id = &req.body.room_id;
    // Membership is checked by `send_event` against the room's current state.
    let content = content_of(&req.json)?;
    let txn = ClientTxn {
        device_id: a.device_id.to_string(),
        txn_id: req.body.txn_id.to_string(),
    };
    let ev = NewEvent::message(req.body.event_type.to_string(), content);
    let pdu = rooms::send_event(&s, room_id, &a.user_id, ev, Some(txn)).await?;
    Ok(Json(json!({"event_id": pdu.event_id})))
}

async fn send_state(
    State(s): State<AppState>,
    req: Ruma<send_state_event::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let room_id = &req.body.room_id;
    let kind = req.body.event_type.to_string();
    if kind != "m.room.member" {
        require_joined(&s, room_id.as_str(), a.user_id.as_str()).await?;
    }
    let content = content_of(&req.json)?;
    if kind == "m.room.canonical_alias" {
        check_canonical_alias(&s, room_id, &content).await?;
    }
    // Re-sending identical state is a no-op that returns the existing event.
    if let Some(existing) =
        rooms::current_state_event(&s.db, room_id.as_str(), &kind, &req.body.state_key).await?
        && existing.content_value() == content
        && existing.sender == a.user_id
    {
        return Ok(Json(json!({"event_id": existing.event_id})));
    }
    let pdu = rooms::send_event(
        &s,
        room_id,
        &a.user_id,
        NewEvent::state(kind, req.body.state_key.clone(), content),
        None,
    )
    .await?;
    Ok(Json(json!({"event_id": pdu.event_id})))
}

/// Aliases in m.room.canonical_alias must exist and point to the room.
async fn check_canonical_alias(s: &Services, room_id: &OwnedRoomId, content: &Value) -> Result<()> {
    let mut aliases: Vec<&str> = Vec::new();
    if let Some(a) = content.get("alias").and_then(Value::as_str) {
        aliases.push(a);
    }
    if let Some(alts) = content.get("alt_aliases").and_then(Value::as_array) {
        aliases.extend(alts.iter().filter_map(Value::as_str));
    }
    for alias in aliases {
        let parsed = ruma::OwnedRoomAliasId::try_from(alias).map_err(|_| {
            Error::new(
                axum::http::StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                format!("Invalid alias {alias}"),
            )
        })?;
        if parsed.server_name() == s.config.server_name {
            match s.db.resolve_alias(alias).await? {
                Some((rid, _)) if rid == room_id.as_str() => {}
                _ => {
                    return Err(Error::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        "M_BAD_ALIAS",
                        format!("Alias {alias} does not point to this room"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The state a user may see: current state if joined, else the state when they left.
async fn visible_state(s: &Services, room_id: &str, user_id: &str) -> Result<Vec<Pdu>> {
    let member = s.db.membership(room_id, user_id).await?;
    let ids: Vec<String> = match member {
        Some(m) if m.membership == "join" => {
            s.db.current_state_map(room_id)
                .await?
                .into_values()
                .collect()
        }
        Some(m) if m.membership == "leave" || m.membership == "ban" => {
            match s.db.snapshot_after_event(&m.event_id).await? {
                Some(snap) => s.db.snapshot_event_ids(snap).await?,
                None => return Err(Error::forbidden("You are not in this room")),
            }
        }
        _ if can_read_room(&s.db, room_id, user_id).await? => {
            s.db.current_state_map(room_id)
                .await?
                .into_values()
                .collect()
        }
        _ => return Err(Error::forbidden("You are not in this room")),
    };
    s.db.get_pdus(&ids).await
}

async fn get_state(
    State(s): State<AppState>,
    req: Ruma<get_state_events::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let pdus = visible_state(&s, req.body.room_id.as_str(), a.user_id.as_str()).await?;
    Ok(Json(Value::Array(
        pdus.iter().map(|p| p.to_client(None)).collect(),
    )))
}

async fn get_state_for_key(
    State(s): State<AppState>,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let kind = req.body.event_type.to_string();
    let pdus = visible_state(&s, req.body.room_id.as_str(), a.user_id.as_str()).await?;
    let pdu = pdus
        .into_iter()
        .find(|p| {
            p.kind.to_string() == kind
                && p.state_key.as_deref() == Some(req.body.state_key.as_str())
        })
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let want_event = req.json.is_none()
        && matches!(
            req.body.format,
            ruma::api::client::state::get_state_event_for_key::v3::StateEventFormat::Event
        );
    if want_event {
        Ok(Json(pdu.to_client(None)))
    } else {
        Ok(Json(pdu.content_value()))
    }
}

async fn get_event(
    State(s): State<AppState>,
    req: Ruma<get_room_event::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let pdu =
        s.db.get_pdu(req.body.event_id.as_str())
            .await?
            .filter(|p| p.room_id == req.body.room_id && !p.rejected)
            .ok_or_else(|| Error::not_found("Event not found"))?;
    let visible = filter_visible(&s.db, a.user_id.as_str(), vec![pdu]).await?;
    let pdu = visible
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let mut ev = [pdu.to_client(None)];
    bundle_aggregations(&s.db, a.user_id.as_str(), &mut ev).await?;
    let [ev] = ev;
    Ok(Json(ev))
}

async fn redact(State(s): State<AppState>, req: Ruma<redact_event::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let room_id = &req.body.room_id;
    require_joined(&s, room_id.as_str(), a.user_id.as_str()).await?;
    let (_, rules) = rooms::room_rules(&s.db, room_id).await?;
    rooms::redaction::check_may_redact(
        &s,
        room_id.as_str(),
        a.user_id.as_str(),
        req.body.event_id.as_str(),
        &rules,
    )
    .await?;
    let mut content = Map::new();
    if let Some(r) = &req.body.reason {
        content.insert("reason".into(), json!(r));
    }
    if rules.redaction.content_field_redacts {
        content.insert("redacts".into(), json!(req.body.event_id));
    }
    let ev = NewEvent {
        kind: "m.room.redaction".into(),
        state_key: None,
        content: Value::Object(content),
        redacts: Some(req.body.event_id.clone()),
    };
    let txn = ClientTxn {
        device_id: a.device_id.to_string(),
        txn_id: req.body.txn_id.to_string(),
    };
    let pdu = rooms::send_event(&s, room_id, &a.user_id, ev, Some(txn)).await?;
    Ok(Json(json!({"event_id": pdu.event_id})))
}

/// Member events for the senders of `events` (lazy-loading members), current state.
pub async fn members_for(s: &Services, room_id: &str, events: &[Pdu]) -> Result<Vec<Value>> {
    let mut senders: Vec<&str> = events.iter().map(|p| p.sender.as_str()).collect();
    senders.sort();
    senders.dedup();
    let mut ids = Vec::new();
    for u in senders {
        if let Some(id) =
            s.db.current_state_event_id(room_id, "m.room.member", u)
                .await?
        {
            ids.push(id);
        }
    }
    Ok(s.db
        .get_pdus(&ids)
        .await?
        .iter()
        .map(|p| p.to_client(None))
        .collect())
}

async fn messages(
    State(s): State<AppState>,
    req: Ruma<get_message_events::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let room_id = req.body.room_id.as_str();
    if !can_read_room(&s.db, room_id, a.user_id.as_str()).await? {
        return Err(Error::forbidden("You are not in this room"));
    }
    let backwards = matches!(req.body.dir, ruma::api::Direction::Backward);
    let from = match &req.body.from {
        Some(t) => token::parse_position(t)?,
        None if backwards => s.db.stream_position() + 1,
        None => 0,
    };
    let to = req
        .body
        .to
        .as_deref()
        .map(token::parse_position)
        .transpose()?;
    let filter = EventFilter::from_json(&serde_json::to_value(&req.body.filter)?);
    let limit = u64::from(req.body.limit).clamp(1, 1000) as i64;

    let mut chunk = Vec::new();
    let mut cursor = from;
    let mut end = None;
    // Read in pages until `limit` events pass the filter and visibility, or history runs out.
    // History older than what this server has is asked from another server in the room, once.
    let mut backfilled = false;
    for _ in 0..20 {
        let mut page =
            s.db.room_messages(room_id, cursor, backwards, limit * 2)
                .await?;
        if backwards && (page.len() as i64) < limit * 2 && !backfilled {
            backfilled = true;
            if crate::federation::backfill::backfill(&s, &req.body.room_id, (limit * 2) as u64)
                .await?
                > 0
            {
                page =
                    s.db.room_messages(room_id, cursor, backwards, limit * 2)
                        .await?;
            }
        }
        let exhausted = (page.len() as i64) < limit * 2;
        let Some(last) = page.last() else { break };
        cursor = if backwards {
            last.stream_ordering
        } else {
            last.stream_ordering + 1
        };
        let mut page: Vec<Pdu> = page;
        if let Some(to) = to {
            page.retain(|p| {
                if backwards {
                    p.stream_ordering > to
                } else {
                    p.stream_ordering < to
                }
            });
        }
        let page: Vec<Pdu> = page.into_iter().filter(|p| filter.allows(p)).collect();
        for p in filter_visible(&s.db, a.user_id.as_str(), page).await? {
            if chunk.len() as i64 >= limit {
                break;
            }
            end = Some(if backwards {
                p.stream_ordering
            } else {
                p.stream_ordering + 1
            });
            chunk.push(p);
        }
        if chunk.len() as i64 >= limit || exhausted {
            if exhausted && (chunk.len() as i64) < limit {
                end = None;
            }
            break;
        }
        end = Some(cursor);
    }
    let state = if filter.lazy_load_members {
        members_for(&s, room_id, &chunk).await?
    } else {
        Vec::new()
    };
    let mut chunk_json: Vec<Value> = chunk.iter().map(|p| p.to_client(None)).collect();
    bundle_aggregations(&s.db, a.user_id.as_str(), &mut chunk_json).await?;
    let mut resp = json!({
        "start": req.body.from.clone().unwrap_or_else(|| token::position_token(from)),
        "chunk": chunk_json,
    });
    if let Some(end) = end {
        resp["end"] = json!(token::position_token(end));
    }
    if !state.is_empty() {
        resp["state"] = Value::Array(state);
    }
    Ok(Json(resp))
}

async fn context(State(s): State<AppState>, req: Ruma<get_context::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let room_id = req.body.room_id.as_str();
    let event =
        s.db.get_pdu(req.body.event_id.as_str())
            .await?
            .filter(|p| p.room_id.as_str() == room_id && !p.rejected)
            .ok_or_else(|| Error::not_found("Event not found"))?;
    let event = filter_visible(&s.db, a.user_id.as_str(), vec![event])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let filter = EventFilter::from_json(&serde_json::to_value(&req.body.filter)?);
    let limit = u64::from(req.body.limit).min(100) as i64;
    let half_before = limit / 2 + limit % 2;
    let half_after = limit / 2;
    let before: Vec<Pdu> =
        s.db.room_messages(room_id, event.stream_ordering, true, half_before)
            .await?;
    let after: Vec<Pdu> =
        s.db.room_messages(room_id, event.stream_ordering + 1, false, half_after)
            .await?;
    let before = filter_visible(
        &s.db,
        a.user_id.as_str(),
        before.into_iter().filter(|p| filter.allows(p)).collect(),
    )
    .await?;
    let after = filter_visible(
        &s.db,
        a.user_id.as_str(),
        after.into_iter().filter(|p| filter.allows(p)).collect(),
    )
    .await?;
    let start = before
        .last()
        .map(|p| p.stream_ordering)
        .unwrap_or(event.stream_ordering);
    let end = after
        .last()
        .map(|p| p.stream_ordering + 1)
        .unwrap_or(event.stream_ordering + 1);
    let state_ids: Vec<String> = match event.state_after {
        Some(snap) => s.db.snapshot_event_ids(snap).await?,
        None => Vec::new(),
    };
    let mut state = s.db.get_pdus(&state_ids).await?;
    if filter.lazy_load_members {
        let mut all = before.clone();
        all.extend(after.iter().cloned());
        all.push(event.clone());
        let senders: std::collections::HashSet<String> =
            all.iter().map(|p| p.sender.to_string()).collect();
        state.retain(|p| {
            p.kind.to_string() != "m.room.member"
                || p.state_key.as_ref().is_some_and(|k| senders.contains(k))
        });
    }
    // One batched bundling pass over the event and both sides.
    let mut evs: Vec<Value> = std::iter::once(&event)
        .chain(&before)
        .chain(&after)
        .map(|p| p.to_client(None))
        .collect();
    bundle_aggregations(&s.db, a.user_id.as_str(), &mut evs).await?;
    let events_after = evs.split_off(1 + before.len());
    let events_before = evs.split_off(1);
    Ok(Json(json!({
        "start": token::position_token(start),
        "end": token::position_token(end),
        "event": evs.pop().unwrap_or(Value::Null),
        "events_before": events_before,
        "events_after": events_after,
        "state": state.iter().map(|p| p.to_client(None)).collect::<Vec<_>>(),
    })))
}
