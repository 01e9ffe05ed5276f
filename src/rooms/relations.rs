//! Relations: events relating to an event (`/relations`), thread listing (`/threads`) and the
//! bundled aggregations (`unsigned.m.relations`) added to events served to clients.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::{
    Pdu,
    visibility::{can_read_room, filter_visible},
};
use crate::{
    error::{Error, Result},
    services::Services,
    storage::Db,
    sync::token,
};

/// How deep `recurse=true` follows relations of relations.
pub const MAX_RECURSION_DEPTH: i64 = 3;
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 1000;

pub struct RelationsQuery {
    pub rel_type: Option<String>,
    pub event_type: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<u64>,
    pub backwards: bool,
    pub recurse: bool,
}

/// `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`.
pub async fn relating_events(
    s: &Services,
    user_id: &str,
    room_id: &str,
    event_id: &str,
    q: RelationsQuery,
) -> Result<Value> {
    if !can_read_room(&s.db, room_id, user_id).await? {
        return Err(Error::forbidden("You are not in this room"));
    }
    let parent =
        s.db.get_pdu(event_id)
            .await?
            .filter(|p| p.room_id.as_str() == room_id && !p.rejected);
    let visible = match parent {
        Some(p) => !filter_visible(&s.db, user_id, vec![p]).await?.is_empty(),
        None => false,
    };
    if !visible {
        return Err(Error::not_found("Event not found"));
    }
    let from = q.from.as_deref().map(token::parse_position).transpose()?;
    let to = q.to.as_deref().map(token::parse_position).transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as i64;
    let depth = if q.recurse { MAX_RECURSION_DEPTH } else { 1 };
    let mut pdus =
        s.db.relations(
            room_id,
            event_id,
            q.rel_type.as_deref(),
            q.event_type.as_deref(),
            from,
            to,
            q.backwards,
            limit + 1,
            depth,
        )
        .await?;
    let more = pdus.len() as i64 > limit;
    pdus.truncate(limit as usize);
    let next_batch = match pdus.last() {
        Some(last) if more => Some(token::position_token(if q.backwards {
            last.stream_ordering
        } else {
            last.stream_ordering + 1
        })),
        _ => None,
    };
    let pdus = filter_visible(&s.db, user_id, pdus).await?;
    let mut chunk: Vec<Value> = pdus.iter().map(|p| p.to_client(None)).collect();
    bundle_aggregations(&s.db, user_id, &mut chunk).await?;
    let mut resp = json!({ "chunk": chunk });
    if let Some(n) = next_batch {
        resp["next_batch"] = json!(n);
    }
    if let Some(f) = q.from {
        resp["prev_batch"] = json!(f);
    }
    if q.recurse {
        resp["recursion_depth"] = json!(depth);
    }
    Ok(resp)
}

/// `GET /rooms/{roomId}/threads`: thread roots, most recent activity first.
pub async fn threads(
    s: &Services,
    user_id: &str,
    room_id: &str,
    participated_only: bool,
    from: Option<&str>,
    limit: Option<u64>,
) -> Result<Value> {
    if !can_read_room(&s.db, room_id, user_id).await? {
        return Err(Error::forbidden("You are not in this room"));
    }
    let from = from.map(token::parse_position).transpose()?;
    let limit = limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as i64;
    let mut roots =
        s.db.thread_roots(
            room_id,
            from,
            limit + 1,
            participated_only.then_some(user_id),
        )
        .await?;
    let more = roots.len() as i64 > limit;
    roots.truncate(limit as usize);
    let next_batch = match roots.last() {
        Some((_, latest)) if more => Some(token::position_token(*latest)),
        _ => None,
    };
    let ids: Vec<String> = roots.iter().map(|(id, _)| id.clone()).collect();
    let mut by_id: HashMap<String, Pdu> =
        s.db.get_pdus(&ids)
            .await?
            .into_iter()
            .map(|p| (p.event_id.to_string(), p))
            .collect();
    let ordered: Vec<Pdu> = ids.iter().filter_map(|id| by_id.remove(id)).collect();
    let visible = filter_visible(&s.db, user_id, ordered).await?;
    let mut chunk: Vec<Value> = visible.iter().map(|p| p.to_client(None)).collect();
    bundle_aggregations(&s.db, user_id, &mut chunk).await?;
    let mut resp = json!({ "chunk": chunk });
    if let Some(n) = next_batch {
        resp["next_batch"] = json!(n);
    }
    Ok(resp)
}

/// What bundling needs to know about an event served to a client.
struct Served {
    room_id: String,
    event_id: String,
    sender: String,
    kind: String,
    /// Eligible as the original of an edit (not a state event, not itself an edit).
    editable: bool,
}

fn served(ev: &Value) -> Option<Served> {
    let s = |k: &str| ev.get(k).and_then(Value::as_str).map(str::to_owned);
    if ev
        .get("unsigned")
        .and_then(|u| u.get("redacted_because"))
        .is_some()
    {
        return None;
    }
    let rel_type = ev
        .get("content")
        .and_then(|c| c.get("m.relates_to"))
        .and_then(|r| r.get("rel_type"))
        .and_then(Value::as_str);
    Some(Served {
        room_id: s("room_id")?,
        event_id: s("event_id")?,
        sender: s("sender")?,
        kind: s("type")?,
        editable: ev.get("state_key").is_none() && rel_type != Some("m.replace"),
    })
}

/// Adds `unsigned.m.relations` (`m.thread` summaries and the latest `m.replace` edit) to events
/// in the client format, with a few batched queries for all the events (of any rooms) at once.
pub async fn bundle_aggregations(db: &Db, user_id: &str, events: &mut [Value]) -> Result<()> {
    let infos: Vec<Option<Served>> = events.iter().map(served).collect();
    let served_events: Vec<&Served> = infos.iter().flatten().collect();
    if served_events.is_empty() {
        return Ok(());
    }
    // Only events something relates to can have aggregations.
    let targets = db.relation_targets();
    let keys: Vec<(&str, &str)> = served_events
        .iter()
        .filter(|i| targets.contains(&i.event_id))
        .map(|i| (i.room_id.as_str(), i.event_id.as_str()))
        .collect();
    if keys.is_empty() {
        return Ok(());
    }

    // Threads.
    let summaries = db.thread_summaries(&keys).await?;
    let latest_ids: Vec<String> = summaries.iter().map(|(_, _, l)| l.clone()).collect();
    let roots: Vec<(&str, &str)> = summaries
        .iter()
        .filter_map(|(r, _, _)| keys.iter().find(|(_, e)| *e == r.as_str()).copied())
        .collect();
    let participated: HashSet<String> = if roots.is_empty() {
        HashSet::new()
    } else {
        db.threads_participated(&roots, user_id)
            .await?
            .into_iter()
            .collect()
    };
    let mut latest: HashMap<String, Value> = db
        .get_pdus(&latest_ids)
        .await?
        .iter()
        .map(|p| (p.event_id.to_string(), p.to_client(None)))
        .collect();

    // Edits, of the events themselves and of the latest thread replies.
    let mut originals: HashMap<String, (String, String, String)> = served_events
        .iter()
        .filter(|i| i.editable && targets.contains(&i.event_id))
        .map(|i| {
            (
                i.event_id.clone(),
                (i.room_id.clone(), i.sender.clone(), i.kind.clone()),
            )
        })
        .collect();
    for v in latest.values() {
        if let Some(i) = served(v).filter(|i| i.editable && targets.contains(&i.event_id)) {
            originals.insert(i.event_id, (i.room_id, i.sender, i.kind));
        }
    }
    let edit_targets: Vec<(&str, &str)> = originals
        .iter()
        .map(|(id, (room, _, _))| (room.as_str(), id.as_str()))
        .collect();
    let mut best: HashMap<String, (i64, String)> = HashMap::new();
    for (target, edit_id, sender, kind, ts) in db.replacements(&edit_targets).await? {
        let Some((_, orig_sender, orig_kind)) = originals.get(&target) else {
            continue;
        };
        if *orig_sender != sender || *orig_kind != kind {
            continue;
        }
        let better = best
            .get(&target)
            .is_none_or(|(bts, bid)| (ts, &edit_id) > (*bts, bid));
        if better {
            best.insert(target, (ts, edit_id));
        }
    }
    let edit_ids: Vec<String> = best.values().map(|(_, id)| id.clone()).collect();
    let edits: HashMap<String, Value> = db
        .get_pdus(&edit_ids)
        .await?
        .iter()
        .map(|p| (p.event_id.to_string(), p.to_client(None)))
        .collect();
    let edit_for = |id: &str| best.get(id).and_then(|(_, eid)| edits.get(eid)).cloned();
    for (id, v) in latest.iter_mut() {
        if let Some(e) = edit_for(id) {
            insert_relation(v, "m.replace", e);
        }
    }

    let mut bundles: HashMap<String, Map<String, Value>> = HashMap::new();
    for i in &served_events {
        let mut rel = Map::new();
        if let Some((_, count, latest_id)) = summaries.iter().find(|(r, _, _)| *r == i.event_id)
            && let Some(latest_ev) = latest.get(latest_id)
        {
            rel.insert(
                "m.thread".into(),
                json!({
                    "latest_event": latest_ev,
                    "count": count,
                    "current_user_participated":
                        i.sender == user_id || participated.contains(&i.event_id),
                }),
            );
        }
        if let Some(e) = edit_for(&i.event_id) {
            rel.insert("m.replace".into(), e);
        }
        if !rel.is_empty() {
            bundles.insert(i.event_id.clone(), rel);
        }
    }
    if bundles.is_empty() {
        return Ok(());
    }
    for (ev, info) in events.iter_mut().zip(infos) {
        if let Some(info) = info
            && let Some(rel) = bundles.remove(&info.event_id)
        {
            for (k, v) in rel {
                insert_relation(ev, &k, v);
            }
        }
    }
    Ok(())
}

fn insert_relation(ev: &mut Value, key: &str, value: Value) {
    let Some(obj) = ev.as_object_mut() else {
        return;
    };
    let unsigned = obj
        .entry("unsigned")
        .or_insert_with(|| Value::Object(Map::new()));
    if !unsigned.is_object() {
        *unsigned = Value::Object(Map::new());
    }
    let rels = &mut unsigned["m.relations"];
    if !rels.is_object() {
        *rels = Value::Object(Map::new());
    }
    rels[key] = value;
}
