//! Events from other servers, checked as the spec orders it ("Checks performed on receipt of a
//! PDU"): format, signatures and content hash (in `remote::verify_pdu`), then authorisation
//! against the event's own auth events, against the state before it (resolved over its prev
//! events, fetching what is missing), and against the room's current state (soft failure).
//!
//! Accepted events join the timeline and move the room's current state on (resolving it with
//! the new event's state when the event does not extend the room's only head). Rejected and
//! soft-failed events are kept, out of the timeline.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    CanonicalJsonObject, OwnedEventId, RoomId, ServerName, events::StateEventType,
    room_version_rules::RoomVersionRules,
};

use super::{remote, state_res};
use crate::{
    error::{Error, Result},
    rooms::{
        Pdu,
        writer::{ExtraSnapshot, NewSnapshot, PersistJob, RemoteWrite},
    },
    services::Services,
    storage::state::{Snapshot, StateMap, compute_snapshot},
};

/// What became of an incoming event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored in the timeline.
    Accepted,
    /// Already stored before.
    Duplicate,
    /// Authorised by its own state but not by the room's current state: kept, not shown.
    SoftFailed,
    /// Not authorised: kept as rejected.
    Rejected(String),
}

/// How far the fetching of missing events may recurse for one incoming event.
const MAX_FETCH_DEPTH: usize = 3;
/// How many missing prev events one `get_missing_events` call asks for.
const MISSING_EVENTS_LIMIT: u64 = 20;

/// Handles one PDU of a room this server takes part in.
pub async fn handle_pdu(
    s: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    raw: CanonicalJsonObject,
) -> Result<(OwnedEventId, Outcome)> {
    handle_pdu_at_depth(s, origin, room_id, raw, 0, None).await
}

/// Like [`handle_pdu`], for an event of the room's history (backfill): stored at `position`,
/// below everything else in the timeline, without moving the room's current state or waking
/// syncs.
pub async fn handle_backfilled_pdu(
    s: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    raw: CanonicalJsonObject,
    position: i64,
) -> Result<(OwnedEventId, Outcome)> {
    handle_pdu_at_depth(s, origin, room_id, raw, MAX_FETCH_DEPTH, Some(position)).await
}

async fn handle_pdu_at_depth(
    s: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    raw: CanonicalJsonObject,
    depth: usize,
    backfill: Option<i64>,
) -> Result<(OwnedEventId, Outcome)> {
    let (_, rules) = crate::rooms::room_rules(&s.db, room_id).await?;
    let (event_id, obj) = remote::verify_pdu(s, room_id, raw).await?;
    if let Some((outlier, _)) = s.db.event_flags(event_id.as_str()).await?
        && !outlier
    {
        return Ok((event_id, Outcome::Duplicate));
    }
    let mut pdu = Pdu::from_canonical(event_id.clone(), Some(room_id), obj)?;
    if pdu.room_id != room_id {
        return Err(Error::bad_json("event belongs to another room"));
    }

    // 1. Authorised by its own auth events (fetched when missing)?
    ensure_auth_events(s, origin, room_id, &rules, &pdu, 0).await?;
    let auth = auth_events_of(s, &rules, &pdu).await?;
    if let Err(why) = check_against_auth_events(&rules, &pdu, &auth) {
        tracing::info!(%event_id, %why, "rejected: not authorised by its auth events");
        pdu.rejected = true;
        store_outlier(s, pdu).await?;
        return Ok((event_id, Outcome::Rejected(why)));
    }

    // 2. Authorised by the state before it?
    let before = state_before(s, origin, room_id, &rules, &pdu, depth).await?;
    if let Err(why) = check_against_state(s, &rules, &pdu, &before.map).await? {
        tracing::info!(%event_id, %why, "rejected: not authorised by the state before it");
        pdu.rejected = true;
        store_outlier(s, pdu).await?;
        return Ok((event_id, Outcome::Rejected(why)));
    }

    if let Some(position) = backfill {
        persist_backfilled(s, pdu, before, position).await?;
        return Ok((event_id, Outcome::Accepted));
    }
    let redaction =
        (pdu.kind == ruma::events::TimelineEventType::RoomRedaction).then(|| pdu.clone());
    let state = before.map.clone();
    let result = persist_timeline_event(s, &rules, pdu, before).await?;
    if let (Some(redaction), Outcome::Accepted) = (redaction, &result.1) {
        apply_redaction(s, &rules, &redaction, &state).await?;
    }
    Ok(result)
}

/// Applies an accepted redaction from another server to its target, when the target is stored
/// and the redaction may take effect (same server, or the redact power level).
async fn apply_redaction(
    s: &Services,
    rules: &RoomVersionRules,
    redaction: &Pdu,
    state: &StateMap,
) -> Result<()> {
    let Some(target) = &redaction.redacts else {
        return Ok(());
    };
    let mut auth: HashMap<(String, String), Pdu> = HashMap::new();
    for key in [("m.room.power_levels", ""), ("m.room.create", "")] {
        let k = (key.0.to_owned(), key.1.to_owned());
        if let Some(id) = state.get(&k)
            && let Some(p) = s.db.get_pdu(id).await?
        {
            auth.insert(k, p);
        }
    }
    if let Some(t) =
        crate::rooms::redaction::authorised_target(s, redaction, target, &auth, rules).await?
    {
        crate::rooms::redaction::apply(s, &t, redaction, rules).await?;
    }
    Ok(())
}

/// The event's auth events, and (room version 12, where the create event is not listed but its
/// id is the room id's) the create event.
async fn auth_events_of(s: &Services, rules: &RoomVersionRules, pdu: &Pdu) -> Result<Vec<Pdu>> {
    let mut ids = ids_of(&pdu.auth_events);
    if rules.authorization.room_create_event_id_as_room_id
        && pdu.kind != ruma::events::TimelineEventType::RoomCreate
    {
        ids.push(format!("${}", pdu.room_id.as_str().trim_start_matches('!')));
    }
    s.db.get_pdus(&ids).await
}

fn ids_of(ids: &[OwnedEventId]) -> Vec<String> {
    ids.iter().map(|i| i.to_string()).collect()
}

/// Fetches the event's auth events that are not stored yet (from `origin`), checks each against
/// its own auth events and stores it as an outlier.
async fn ensure_auth_events(
    s: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    depth: usize,
) -> Result<()> {
    let wanted = ids_of(&pdu.auth_events);
    let known = s.db.known_event_ids(&wanted).await?;
    let missing: Vec<&String> = wanted.iter().filter(|id| !known.contains(*id)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if depth > 50 {
        return Err(Error::bad_json("auth chain too deep to fetch"));
    }
    // One /event_auth request brings the whole chain; fall back to single events.
    let chain = remote::event_auth(s, origin, room_id, &pdu.event_id).await;
    let mut fetched: Vec<CanonicalJsonObject> = match chain {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("event_auth from {origin} failed: {e}; fetching events one by one");
            let mut out = Vec::new();
            for id in &missing {
                out.push(remote::fetch_event(s, origin, id).await?);
            }
            out
        }
    };
    store_auth_chain(s, rules, room_id, std::mem::take(&mut fetched)).await
}

/// Verifies and stores a set of auth events as outliers, oldest first, each checked against its
/// own auth events (those failing are stored as rejected).
pub async fn store_auth_chain(
    s: &Services,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    events: Vec<CanonicalJsonObject>,
) -> Result<()> {
    let mut pdus: HashMap<OwnedEventId, Pdu> = HashMap::new();
    // A refusal may be passing (a key fetch that timed out): the refused get a second try.
    let mut refused: Vec<CanonicalJsonObject> = Vec::new();
    let mut batch = events;
    for attempt in 0..2 {
        for raw in std::mem::take(&mut batch) {
            match remote::verify_pdu(s, room_id, raw.clone()).await {
                Ok((id, obj)) => {
                    if let Ok(p) = Pdu::from_canonical(id.clone(), Some(room_id), obj)
                        && p.room_id == room_id
                    {
                        pdus.insert(id, p);
                    }
                }
                Err(e) => {
                    tracing::info!(attempt, "auth event refused: {e}");
                    refused.push(raw);
                }
            }
        }
        if refused.is_empty() {
            break;
        }
        batch = std::mem::take(&mut refused);
    }
    let ids: Vec<String> = pdus.keys().map(|i| i.to_string()).collect();
    let known = s.db.known_event_ids(&ids).await?;
    pdus.retain(|id, _| !known.contains(id.as_str()));
    // Topological order over auth edges: an event after its auth events.
    let mut done: HashSet<OwnedEventId> = HashSet::new();
    let mut order: Vec<OwnedEventId> = Vec::new();
    let mut remaining: Vec<OwnedEventId> = pdus.keys().cloned().collect();
    remaining.sort_by_key(|id| pdus.get(id).map(|p| p.depth).unwrap_or(0));
    while !remaining.is_empty() {
        let before = remaining.len();
        remaining.retain(|id| {
            let ready = pdus.get(id).is_some_and(|p| {
                p.auth_events
                    .iter()
                    .all(|a| done.contains(a) || !pdus.contains_key(a))
            });
            if ready {
                done.insert(id.clone());
                order.push(id.clone());
            }
            !ready
        });
        if remaining.len() == before {
            // A cycle: auth chains cannot have one; refuse the rest.
            tracing::warn!(count = remaining.len(), "auth chain with a cycle refused");
            break;
        }
    }
    for id in order {
        let Some(mut pdu) = pdus.remove(&id) else {
            continue;
        };
        let auth = auth_events_of(s, rules, &pdu).await?;
        if auth.len() < pdu.auth_events.len() {
            // An auth event could not be had (refused above, or never sent): the event can be
            // judged later, when it is there, so it is not stored as rejected now.
            tracing::info!(event_id = %pdu.event_id, "auth event missing; not stored");
            continue;
        }
        if let Err(why) = check_against_auth_events(rules, &pdu, &auth) {
            tracing::info!(event_id = %pdu.event_id, %why, "auth event rejected");
            pdu.rejected = true;
        }
        store_outlier(s, pdu).await?;
    }
    Ok(())
}

/// The state-independent and state-dependent auth rules, with the event's own auth events as
/// the state.
pub fn check_against_auth_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    auth: &[Pdu],
) -> std::result::Result<(), String> {
    if auth.iter().any(|a| a.rejected) {
        return Err("an auth event was rejected".into());
    }
    let by_id: HashMap<&OwnedEventId, &Pdu> = auth.iter().map(|p| (&p.event_id, p)).collect();
    let by_key: HashMap<(String, String), &Pdu> = auth
        .iter()
        .filter_map(|p| Some(((p.kind.to_string(), p.state_key.clone()?), p)))
        .collect();
    ruma::state_res::check_state_independent_auth_rules(&rules.authorization, pdu, |id| {
        by_id.get(&id.to_owned()).copied()
    })
    .map_err(|e| e.to_string())?;
    ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |t, k| {
        by_key.get(&(t.to_string(), k.to_owned())).copied()
    })
    .map_err(|e| e.to_string())
}

/// The state-dependent auth rules against a state map (the state before the event, or the
/// room's current state for soft failure).
pub async fn check_against_state(
    s: &Services,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    state: &StateMap,
) -> Result<std::result::Result<(), String>> {
    let keys = ruma::state_res::auth_types_for_event(
        &pdu.kind,
        &pdu.sender,
        pdu.state_key.as_deref(),
        &pdu.content,
        &rules.authorization,
    )
    .map_err(|e| Error::bad_json(format!("invalid event: {e}")))?;
    let mut want: Vec<(String, String)> = keys
        .iter()
        .map(|(t, k)| (t.to_string(), k.clone()))
        .collect();
    want.push((StateEventType::RoomCreate.to_string(), String::new()));
    let ids: Vec<String> = want.iter().filter_map(|k| state.get(k).cloned()).collect();
    let events = s.db.get_pdus(&ids).await?;
    let by_key: HashMap<(String, String), &Pdu> = events
        .iter()
        .filter_map(|p| Some(((p.kind.to_string(), p.state_key.clone()?), p)))
        .collect();
    Ok(
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |t, k| {
            by_key.get(&(t.to_string(), k.to_owned())).copied()
        })
        .map_err(|e| e.to_string()),
    )
}

/// The state before an event: the state after its only prev event, or the resolution of the
/// states after each of them. Missing prev events are fetched (`get_missing_events`), and where
/// that fails, the state at them is asked for (`state_ids`).
pub struct StateBefore {
    pub map: StateMap,
    /// The stored snapshot equal to this state, when there is one (single known prev event).
    pub snapshot: Option<(i64, Arc<Snapshot>)>,
}

async fn state_before(
    s: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    depth: usize,
) -> Result<StateBefore> {
    let prev_ids = ids_of(&pdu.prev_events);
    let mut missing = missing_prev_events(s, &prev_ids).await?;
    if !missing.is_empty() && depth < MAX_FETCH_DEPTH {
        fetch_missing_prev_events(s, origin, room_id, pdu, depth).await;
        missing = missing_prev_events(s, &prev_ids).await?;
    }
    let mut states: Vec<StateMap> = Vec::new();
    let mut single: Option<(i64, Arc<Snapshot>)> = None;
    for prev in &prev_ids {
        if missing.contains(prev) {
            states.push(remote_state_after(s, origin, room_id, rules, prev).await?);
            continue;
        }
        let Some(snap_id) = s.db.snapshot_after_event(prev).await? else {
            // A prev event known only as an outlier without state: ask for its state.
            states.push(remote_state_after(s, origin, room_id, rules, prev).await?);
            continue;
        };
        let snap = s.db.load_snapshot(snap_id).await?;
        if prev_ids.len() == 1 {
            single = Some((snap_id, snap.clone()));
        }
        states.push(snap.map.clone());
    }
    if states.len() == 1 {
        let map = states.pop().unwrap_or_default();
        return Ok(StateBefore {
            map,
            snapshot: single,
        });
    }
    let map = state_res::resolve(&s.db, rules, states, &[]).await?;
    Ok(StateBefore {
        map,
        snapshot: None,
    })
}

async fn missing_prev_events(s: &Services, prev_ids: &[String]) -> Result<HashSet<String>> {
    let known = s.db.known_event_ids(prev_ids).await?;
    Ok(prev_ids
        .iter()
        .filter(|p| !known.contains(*p))
        .cloned()
        .collect())
}

/// Asks `origin` for the events between what we have and this event, and handles them oldest
/// first. Failures are logged: the caller then asks for the state instead.
async fn fetch_missing_prev_events(
    s: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    pdu: &Pdu,
    depth: usize,
) {
    let earliest: Vec<OwnedEventId> = match s.db.forward_extremities(room_id).await {
        Ok(ext) => ext.into_iter().map(|(id, _)| id).collect(),
        Err(_) => return,
    };
    let events = match remote::get_missing_events(
        s,
        origin,
        room_id,
        &earliest,
        std::slice::from_ref(&pdu.event_id),
        MISSING_EVENTS_LIMIT,
    )
    .await
    {
        Ok(evs) => evs,
        Err(e) => {
            tracing::info!("get_missing_events from {origin} failed: {e}");
            return;
        }
    };
    let mut events: Vec<(i64, CanonicalJsonObject)> = events
        .into_iter()
        .map(|e| {
            let d = e
                .get("depth")
                .and_then(|d| match d {
                    ruma::CanonicalJsonValue::Integer(i) => Some(i64::from(*i)),
                    _ => None,
                })
                .unwrap_or(0);
            (d, e)
        })
        .collect();
    events.sort_by_key(|(d, _)| *d);
    for (_, ev) in events {
        if let Err(e) = Box::pin(handle_pdu_at_depth(s, origin, room_id, ev, depth + 1, None)).await
        {
            tracing::info!("missing event from {origin} refused: {e}");
        }
    }
}

/// The state after an event we do not have in the timeline: the state before it (`state_ids`)
/// plus the event itself when it is a state event. Missing state events and their auth chains
/// are fetched and stored as outliers.
async fn remote_state_after(
    s: &Services,
    origin: &ServerName,
    room_id: &RoomId,
    rules: &RoomVersionRules,
    event_id: &str,
) -> Result<StateMap> {
    let eid = OwnedEventId::try_from(event_id).map_err(|_| Error::bad_json("bad event id"))?;
    let (state_ids, auth_ids) = remote::state_ids(s, origin, room_id, &eid).await?;
    let mut wanted: Vec<String> = state_ids.iter().map(|i| i.to_string()).collect();
    wanted.extend(auth_ids.iter().map(|i| i.to_string()));
    wanted.push(event_id.to_owned());
    wanted.sort();
    wanted.dedup();
    let known = s.db.known_event_ids(&wanted).await?;
    let missing: Vec<String> = wanted.into_iter().filter(|i| !known.contains(i)).collect();
    let fetched = remote::fetch_events(s, origin, &missing).await;
    store_auth_chain(s, rules, room_id, fetched).await?;

    let ids: Vec<String> = state_ids.iter().map(|i| i.to_string()).collect();
    let mut map = StateMap::new();
    for p in s.db.get_pdus(&ids).await? {
        if let Some(sk) = &p.state_key
            && !p.rejected
        {
            map.insert((p.kind.to_string(), sk.clone()), p.event_id.to_string());
        }
    }
    if let Some(ev) = s.db.get_pdu(event_id).await?
        && let Some(sk) = &ev.state_key
        && !ev.rejected
    {
        map.insert((ev.kind.to_string(), sk.clone()), ev.event_id.to_string());
    }
    Ok(map)
}

/// Stores an event outside the timeline (auth events, rejected and soft-failed events).
pub async fn store_outlier(s: &Services, pdu: Pdu) -> Result<()> {
    if s.db.event_flags(pdu.event_id.as_str()).await?.is_some() {
        return Ok(());
    }
    let rx = s
        .writer
        .persist(|reply| PersistJob {
            pdu,
            remote: Some(RemoteWrite {
                outlier: true,
                ..Default::default()
            }),
            state_after: None,
            new_snapshot: None,
            txn: None,
            generation: u64::MAX,
            reply,
        })
        .await?;
    rx.await
        .map_err(|_| Error::internal("event writer stopped"))??;
    Ok(())
}

/// The snapshot after an event: `before` plus the event's own entry when it is a state event.
/// Returns the id, and the snapshot with its new blocks when it has to be written.
fn snapshot_after(
    s: &Services,
    pdu: &Pdu,
    before: &StateBefore,
) -> (i64, Arc<Snapshot>, Option<NewSnapshot>, Vec<ExtraSnapshot>) {
    let mut extra = Vec::new();
    // The base: the stored snapshot of the state before, or a new one for a resolved state.
    let (base_id, base) = match &before.snapshot {
        Some((id, snap)) => (*id, snap.clone()),
        None => {
            let entries: Vec<((String, String), String)> = before
                .map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let (snap, blocks) = compute_snapshot(None, &entries);
            let id = s.db.next_snapshot_id();
            let snap = Arc::new(snap);
            extra.push((id, snap.clone(), blocks));
            (id, snap)
        }
    };
    match &pdu.state_key {
        Some(sk) => {
            let change = ((pdu.kind.to_string(), sk.clone()), pdu.event_id.to_string());
            let (snap, blocks) = compute_snapshot(Some(&base), &[change]);
            let snap = Arc::new(snap);
            (
                s.db.next_snapshot_id(),
                snap.clone(),
                Some((snap, blocks)),
                extra,
            )
        }
        None => (base_id, base, None, extra),
    }
}

async fn persist_backfilled(
    s: &Services,
    pdu: Pdu,
    before: StateBefore,
    position: i64,
) -> Result<()> {
    let (after_id, _, new_snapshot, extra) = snapshot_after(s, &pdu, &before);
    let rx = s
        .writer
        .persist(|reply| PersistJob {
            pdu,
            remote: Some(RemoteWrite {
                backfill: true,
                position: Some(position),
                extra_snapshots: extra,
                ..Default::default()
            }),
            state_after: Some(after_id),
            new_snapshot,
            txn: None,
            generation: u64::MAX,
            reply,
        })
        .await?;
    rx.await
        .map_err(|_| Error::internal("event writer stopped"))??;
    Ok(())
}

/// Stores an authorised event in the timeline: soft-fail check against the current state, then
/// the room's new current state and forward extremities, under the room lock.
async fn persist_timeline_event(
    s: &Services,
    rules: &RoomVersionRules,
    mut pdu: Pdu,
    before: StateBefore,
) -> Result<(OwnedEventId, Outcome)> {
    let event_id = pdu.event_id.clone();
    let room_id = pdu.room_id.clone();
    let lock = s.room_locks.get(&room_id);
    let mut guard = lock.lock().await;

    // The head includes local events still queued for the writer: it is the current state.
    let head = crate::rooms::head_of(s, &room_id, &mut guard).await?;
    let current: StateMap = head.snapshot.map.clone();
    let extremities: HashSet<String> = head
        .extremities
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    let soft_failed = check_against_state(s, rules, &pdu, &current).await?.err();
    let (after_id, after, new_snapshot, mut extra) = snapshot_after(s, &pdu, &before);
    pdu.state_after = Some(after_id);

    let remote = if let Some(why) = &soft_failed {
        tracing::info!(%event_id, %why, "soft-failed against the current state");
        RemoteWrite {
            outlier: true,
            extra_snapshots: extra,
            ..Default::default()
        }
    } else {
        // Does the event extend every current head? Then its state is the room's state;
        // otherwise the room's state is resolved with it.
        let prevs: HashSet<String> = pdu.prev_events.iter().map(|p| p.to_string()).collect();
        let (new_current, current_snapshot) = if extremities.is_subset(&prevs) {
            (after.map.clone(), after_id)
        } else {
            let resolved = state_res::resolve(
                &s.db,
                rules,
                vec![current.clone(), after.map.clone()],
                std::slice::from_ref(&pdu),
            )
            .await?;
            if resolved == after.map {
                (resolved, after_id)
            } else {
                let entries: Vec<((String, String), String)> = resolved
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let (snap, blocks) = compute_snapshot(None, &entries);
                let id = s.db.next_snapshot_id();
                extra.push((id, Arc::new(snap), blocks));
                (resolved, id)
            }
        };
        let mut changes: Vec<((String, String), Option<String>)> = Vec::new();
        for (k, v) in &new_current {
            if current.get(k) != Some(v) {
                changes.push((k.clone(), Some(v.clone())));
            }
        }
        for k in current.keys() {
            if !new_current.contains_key(k) {
                changes.push((k.clone(), None));
            }
        }
        RemoteWrite {
            outlier: false,
            backfill: false,
            position: None,
            extremity: true,
            current_state: changes,
            current_snapshot: Some(current_snapshot),
            extra_snapshots: extra,
        }
    };
    let rx = s
        .writer
        .persist(|reply| PersistJob {
            pdu,
            remote: Some(remote),
            state_after: Some(after_id),
            new_snapshot,
            txn: None,
            generation: u64::MAX,
            reply,
        })
        .await?;
    let result = rx
        .await
        .map_err(|_| Error::internal("event writer stopped"))?;
    // The head is read again from the database on the next local event.
    *guard = None;
    drop(guard);
    result?;
    s.db.pdu_cache().remove(event_id.as_str());
    Ok(match soft_failed {
        Some(_) => (event_id, Outcome::SoftFailed),
        None => (event_id, Outcome::Accepted),
    })
}
