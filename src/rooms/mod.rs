//! The room model: building local events, authorising them through ruma's auth rules, and
//! persisting them into the event DAG with their state.

pub mod create;
pub mod directory;
pub mod hierarchy;
pub mod membership;
pub mod pdu;
pub mod receipts;
pub mod redaction;
pub mod relations;
pub mod search;
pub mod timestamp;
pub mod upgrade;
pub mod visibility;
pub mod writer;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId,
    UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
};
use serde_json::{Map, Value, json};

use crate::{
    error::{Error, Result},
    services::Services,
    storage::{Db, now_ms, state::Snapshot},
};
pub use pdu::Pdu;

/// What this process knows of a room's latest position: version, forward extremities and the
/// current state snapshot. Events are built on it under the room lock and it moves on as soon as
/// an event is queued for the writer, so several events of one room can commit in one batch.
pub struct RoomHead {
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    pub extremities: Vec<(OwnedEventId, i64)>,
    pub snapshot_id: i64,
    pub snapshot: Arc<Snapshot>,
    pub generation: u64,
    /// Client transactions queued but not yet committed: (user, device, txn) → event.
    pub pending_txns: HashMap<(String, String, String), Pdu>,
    /// Client transactions committed since this head was loaded (the newest
    /// [`RECENT_TXNS`]): a retry that looked in the database before the commit finds its
    /// event here.
    pub recent_txns: RecentTxns,
}

/// Committed client transactions a room head remembers.
pub const RECENT_TXNS: usize = 4096;

type TxnKey = (String, String, String);

/// A bounded, oldest-first-forgotten map of committed transactions to their event ids.
#[derive(Default)]
pub struct RecentTxns {
    ids: HashMap<TxnKey, OwnedEventId>,
    order: std::collections::VecDeque<TxnKey>,
}

impl RecentTxns {
    pub fn get(&self, key: &TxnKey) -> Option<&OwnedEventId> {
        self.ids.get(key)
    }

    pub fn insert(&mut self, key: TxnKey, event_id: OwnedEventId) {
        if self.ids.insert(key.clone(), event_id).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > RECENT_TXNS {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// Per-room locks holding the room head.
#[derive(Default)]
pub struct RoomLocks {
    inner: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<Option<RoomHead>>>>>,
    generations: std::sync::atomic::AtomicU64,
}

impl RoomLocks {
    pub fn get(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<Option<RoomHead>>> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(room_id.to_owned()).or_default().clone()
    }

    fn next_generation(&self) -> u64 {
        self.generations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }
}

/// Loads the head from the database (on first use, or after a failed write).
async fn load_head(s: &Services, room_id: &RoomId) -> Result<RoomHead> {
    let (version, rules) = room_rules(&s.db, room_id).await?;
    // The resolved current state when the room has one recorded, else the latest event's.
    let snapshot_id = match s.db.current_snapshot(room_id.as_str()).await? {
        Some(id) => id,
        None => {
            s.db.latest_snapshot_id(room_id.as_str())
                .await?
                .ok_or_else(|| Error::not_found("Room has no state"))?
        }
    };
    let snapshot = s.db.load_snapshot(snapshot_id).await?;
    let extremities = s.db.forward_extremities(room_id).await?;
    Ok(RoomHead {
        version,
        rules,
        extremities,
        snapshot_id,
        snapshot,
        generation: s.room_locks.next_generation(),
        pending_txns: HashMap::new(),
        recent_txns: RecentTxns::default(),
    })
}

/// The room head under its lock: loaded from the database on first use, or again after a failed
/// write invalidated it. It includes events queued for the writer but not yet committed.
pub async fn head_of<'a>(
    s: &Services,
    room_id: &RoomId,
    guard: &'a mut tokio::sync::MutexGuard<'_, Option<RoomHead>>,
) -> Result<&'a mut RoomHead> {
    if let Some(g) = s.writer.failed_generation(room_id.as_str())
        && guard.as_ref().is_some_and(|h| h.generation <= g)
    {
        **guard = None;
    }
    if guard.is_none() {
        **guard = Some(load_head(s, room_id).await?);
    }
    guard
        .as_mut()
        .ok_or_else(|| Error::internal("room head missing"))
}

/// What a local user asks to send.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Value,
    pub redacts: Option<OwnedEventId>,
}

impl NewEvent {
    pub fn state(kind: impl Into<String>, state_key: impl Into<String>, content: Value) -> Self {
        Self {
            kind: kind.into(),
            state_key: Some(state_key.into()),
            content,
            redacts: None,
        }
    }
    pub fn message(kind: impl Into<String>, content: Value) -> Self {
        Self {
            kind: kind.into(),
            state_key: None,
            content,
            redacts: None,
        }
    }
}

/// A client transaction id to remember with the event.
#[derive(Debug, Clone)]
pub struct ClientTxn {
    pub device_id: String,
    pub txn_id: String,
}

pub fn parse_version(v: &str) -> Result<(RoomVersionId, RoomVersionRules)> {
    let version = RoomVersionId::try_from(v).map_err(Error::internal)?;
    let rules = version.rules().ok_or_else(|| {
        Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNSUPPORTED_ROOM_VERSION",
            format!("room version {v} is not supported"),
        )
    })?;
    Ok((version, rules))
}

pub async fn room_rules(db: &Db, room_id: &RoomId) -> Result<(RoomVersionId, RoomVersionRules)> {
    let v = db
        .room_version(room_id.as_str())
        .await?
        .ok_or_else(|| Error::not_found("Unknown room"))?;
    parse_version(&v)
}

/// Loads the events of a state map for the given keys.
async fn load_state_events(
    db: &Db,
    state: &crate::storage::state::StateMap,
    keys: &[(StateEventType, String)],
) -> Result<HashMap<(String, String), Pdu>> {
    let mut ids = Vec::new();
    let mut by_id = HashMap::new();
    for (t, k) in keys {
        if let Some(id) = state.get(&(t.to_string(), k.clone())) {
            ids.push(id.clone());
            by_id.insert(id.clone(), (t.to_string(), k.clone()));
        }
    }
    let mut out = HashMap::new();
    for pdu in db.get_pdus(&ids).await? {
        if let Some(key) = by_id.get(pdu.event_id.as_str()) {
            out.insert(key.clone(), pdu);
        }
    }
    Ok(out)
}

/// The unsigned event a sender would send now: prev events from the head's extremities, auth
/// events from its state, depth, and the version's fields. Also returns the auth-relevant
/// state events it was built from (create included) and the depth. Used for local events and
/// for the templates other servers ask for (`make_join`, `make_leave`).
pub async fn skeleton(
    s: &Services,
    head: &RoomHead,
    room_id: &RoomId,
    sender: &UserId,
    ev: &NewEvent,
    origin: &str,
) -> Result<(CanonicalJsonObject, HashMap<(String, String), Pdu>, i64)> {
    let rules = &head.rules;
    let snapshot = &head.snapshot;

    let content_raw = serde_json::value::to_raw_value(&ev.content)?;
    let kind = TimelineEventType::from(ev.kind.as_str());
    let auth_keys = ruma::state_res::auth_types_for_event(
        &kind,
        sender,
        ev.state_key.as_deref(),
        &content_raw,
        &rules.authorization,
    )
    .map_err(|e| Error::bad_json(format!("invalid event: {e}")))?;
    // The create event is always needed by the checks, even where (v12) it is not an auth event.
    let mut load_keys = auth_keys.clone();
    load_keys.push((StateEventType::RoomCreate, String::new()));
    let auth_pdus = load_state_events(&s.db, &snapshot.map, &load_keys).await?;
    let mut auth_events: Vec<OwnedEventId> = auth_pdus
        .iter()
        .filter(|((t, k), _)| {
            auth_keys
                .iter()
                .any(|(at, ak)| at.to_string() == *t && ak == k)
        })
        .map(|(_, p)| p.event_id.clone())
        .collect();
    auth_events.sort();

    let depth = head.extremities.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
    let mut prev_events: Vec<OwnedEventId> = head
        .extremities
        .iter()
        .map(|(id, _)| id.clone())
        .take(20)
        .collect();
    prev_events.sort();

    let mut obj = CanonicalJsonObject::new();
    obj.insert(
        "room_id".into(),
        CanonicalJsonValue::String(room_id.to_string()),
    );
    obj.insert(
        "sender".into(),
        CanonicalJsonValue::String(sender.to_string()),
    );
    obj.insert("type".into(), CanonicalJsonValue::String(ev.kind.clone()));
    if let Some(sk) = &ev.state_key {
        obj.insert("state_key".into(), CanonicalJsonValue::String(sk.clone()));
    }
    obj.insert("content".into(), to_canonical(&ev.content)?);
    obj.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ruma::Int::new_saturating(now_ms())),
    );
    obj.insert(
        "depth".into(),
        CanonicalJsonValue::Integer(ruma::Int::new_saturating(depth)),
    );
    obj.insert("prev_events".into(), id_list(&prev_events));
    obj.insert("auth_events".into(), id_list(&auth_events));
    if let Some(r) = &ev.redacts
        && !rules.redaction.content_field_redacts
    {
        obj.insert("redacts".into(), CanonicalJsonValue::String(r.to_string()));
    }
    if matches!(
        head.version,
        RoomVersionId::V6
            | RoomVersionId::V7
            | RoomVersionId::V8
            | RoomVersionId::V9
            | RoomVersionId::V10
    ) {
        obj.insert(
            "origin".into(),
            CanonicalJsonValue::String(origin.to_owned()),
        );
    }
    Ok((obj, auth_pdus, depth))
}

/// Builds, signs, authorises and stores a local event in an existing room, then wakes syncs.
pub async fn send_event(
    s: &Services,
    room_id: &RoomId,
    sender: &UserId,
    ev: NewEvent,
    txn: Option<ClientTxn>,
) -> Result<Pdu> {
    // A retried transaction is looked up before the room lock is taken, so that the lookup
    // does not hold up everyone sending to the room; one that commits meanwhile is found in
    // the head's recent transactions below.
    if let Some(t) = &txn
        && let Some(existing) =
            s.db.txn_event_id(sender.as_str(), &t.device_id, &t.txn_id)
                .await?
        && let Some(pdu) = s.db.get_pdu(existing.as_str()).await?
    {
        return Ok(pdu);
    }
    let lock = s.room_locks.get(room_id);
    let mut guard = lock.lock().await;
    let had_generation = guard.as_ref().map(|h| h.generation);
    let head = match head_of(s, room_id, &mut guard).await {
        Ok(head) => head,
        Err(e) => {
            if s.db.room_version(room_id.as_str()).await?.is_none() {
                return Err(Error::forbidden("Unknown room or not a member"));
            }
            return Err(e);
        }
    };

    if let Some(t) = &txn {
        let key = (sender.to_string(), t.device_id.clone(), t.txn_id.clone());
        if let Some(p) = head.pending_txns.get(&key) {
            return Ok(p.clone());
        }
        let committed = match head.recent_txns.get(&key) {
            Some(id) => Some(id.clone()),
            // A head loaded just now remembers nothing: ask the database again.
            None if had_generation != Some(head.generation) => {
                s.db.txn_event_id(sender.as_str(), &t.device_id, &t.txn_id)
                    .await?
            }
            None => None,
        };
        if let Some(existing) = committed
            && let Some(pdu) = s.db.get_pdu(existing.as_str()).await?
        {
            return Ok(pdu);
        }
    }
    let rules = head.rules.clone();
    let snapshot = head.snapshot.clone();
    let kind = TimelineEventType::from(ev.kind.as_str());
    let (mut obj, auth_pdus, depth) =
        skeleton(s, head, room_id, sender, &ev, s.config.server_name.as_str()).await?;
    // Only members send anything but membership events (the auth rules say so too; this
    // gives the clearer error).
    if kind != TimelineEventType::RoomMember {
        let joined = auth_pdus
            .get(&("m.room.member".to_owned(), sender.to_string()))
            .is_some_and(|m| {
                m.content_value().get("membership").and_then(Value::as_str) == Some("join")
            });
        if !joined {
            return Err(Error::forbidden("You are not joined to this room"));
        }
    }
    check_size(&obj)?;
    let event_id = ganglion_federation::pdu::hash_sign_and_id(
        &s.key,
        s.config.server_name.as_str(),
        &mut obj,
        &rules,
    )
    .map_err(Error::internal)?;
    let mut pdu = Pdu::from_canonical(event_id, Some(room_id), obj)?;

    // Authorisation against the auth events and the current state (they are the same here).
    let by_id: HashMap<OwnedEventId, &Pdu> = auth_pdus
        .values()
        .map(|p| (p.event_id.clone(), p))
        .collect();
    ruma::state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id| {
        by_id.get(id).copied()
    })
    .map_err(|e| Error::forbidden(format!("event not authorised: {e}")))?;
    ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, |t, k| {
        auth_pdus.get(&(t.to_string(), k.to_owned()))
    })
    .map_err(|e| Error::forbidden(format!("event not authorised: {e}")))?;

    // Inviting a user of another server: that server countersigns the invite first.
    if let Some(invitee) = remote_invitee(s, &pdu) {
        let stripped = invite_room_state(s, &snapshot).await?;
        let signed = crate::federation::membership::send_remote_invite(
            s,
            room_id,
            &head.version,
            &pdu.event_id,
            &pdu.json,
            invitee.server_name(),
            stripped,
        )
        .await?;
        pdu = Pdu::from_canonical(pdu.event_id.clone(), Some(room_id), signed)?;
    }

    if let Some(sk) = &ev.state_key
        && let Some(prev_id) = snapshot.map.get(&(ev.kind.clone(), sk.clone()))
    {
        let mut unsigned = Map::new();
        unsigned.insert("replaces_state".into(), json!(prev_id));
        if let Some(prev) = s.db.get_pdu(prev_id).await? {
            unsigned.insert("prev_content".into(), prev.content_value());
            unsigned.insert("prev_sender".into(), json!(prev.sender));
        }
        pdu.unsigned = Some(unsigned.into());
    }

    let redaction_target = match (&kind, &pdu.redacts) {
        (TimelineEventType::RoomRedaction, Some(target)) => {
            redaction::authorised_target(s, &pdu, target, &auth_pdus, &rules).await?
        }
        _ => None,
    };

    // Move the head on and queue the event; the lock is released while it commits.
    let (state_after, new_snapshot) = match &pdu.state_key {
        Some(sk) => {
            let change = ((pdu.kind.to_string(), sk.clone()), pdu.event_id.to_string());
            let (snap, blocks) =
                crate::storage::state::compute_snapshot(Some(&snapshot), &[change]);
            let id = s.db.next_snapshot_id();
            let snap = Arc::new(snap);
            head.snapshot = snap.clone();
            head.snapshot_id = id;
            (Some(id), Some((snap, blocks)))
        }
        None => (Some(head.snapshot_id), None),
    };
    head.extremities = vec![(pdu.event_id.clone(), depth)];
    pdu.state_after = state_after;
    pdu.local_txn = txn
        .as_ref()
        .map(|t| (t.device_id.clone(), t.txn_id.clone()));
    let txn_key = txn
        .as_ref()
        .map(|t| (sender.to_string(), t.device_id.clone(), t.txn_id.clone()));
    if let Some(k) = &txn_key {
        head.pending_txns.insert(k.clone(), pdu.clone());
    }
    let generation = head.generation;
    let job_pdu = pdu.clone();
    let rx = s
        .writer
        .persist(|reply| writer::PersistJob {
            pdu: job_pdu,
            remote: None,
            state_after,
            new_snapshot,
            txn,
            generation,
            reply,
        })
        .await?;
    drop(guard);

    let result = rx
        .await
        .map_err(|_| Error::internal("event writer stopped"));
    if let Some(k) = &txn_key {
        let mut guard = lock.lock().await;
        if let Some(h) = guard.as_mut() {
            h.pending_txns.remove(k);
            if matches!(result, Ok(Ok(_))) {
                h.recent_txns.insert(k.clone(), pdu.event_id.clone());
            }
        }
    }
    pdu.stream_ordering = result??;
    s.db.pdu_cache().put(&pdu);
    if let Some(target) = redaction_target {
        redaction::apply(s, &target, &pdu, &rules).await?;
    }
    Ok(pdu)
}

/// The invited user of a membership invite, when they are on another server (and federation is
/// on: without it such an invite is refused by the remote call).
fn remote_invitee(s: &Services, pdu: &Pdu) -> Option<ruma::OwnedUserId> {
    if pdu.kind != TimelineEventType::RoomMember {
        return None;
    }
    let invite = pdu
        .content_value()
        .get("membership")
        .and_then(Value::as_str)
        == Some("invite");
    let user = ruma::OwnedUserId::try_from(pdu.state_key.as_deref()?).ok()?;
    (invite && user.server_name() != s.config.server_name).then_some(user)
}

/// The room state an invited user's server is shown (full PDUs, as the spec has it since 1.16).
async fn invite_room_state(
    s: &Services,
    snapshot: &Snapshot,
) -> Result<Vec<Box<serde_json::value::RawValue>>> {
    let mut ids = Vec::new();
    for kind in [
        "m.room.create",
        "m.room.name",
        "m.room.avatar",
        "m.room.topic",
        "m.room.join_rules",
        "m.room.canonical_alias",
        "m.room.encryption",
    ] {
        if let Some(id) = snapshot.map.get(&(kind.to_owned(), String::new())) {
            ids.push(id.clone());
        }
    }
    let mut out = Vec::new();
    for p in s.db.get_pdus(&ids).await? {
        out.push(serde_json::value::to_raw_value(&*p.json)?);
    }
    Ok(out)
}

/// Stores the create event of a new room (there is no head yet).
pub async fn persist_create(s: &Services, mut pdu: Pdu) -> Result<Pdu> {
    let sk = pdu.state_key.clone().unwrap_or_default();
    let change = ((pdu.kind.to_string(), sk), pdu.event_id.to_string());
    let (snap, blocks) = crate::storage::state::compute_snapshot(None, &[change]);
    let id = s.db.next_snapshot_id();
    pdu.state_after = Some(id);
    let job_pdu = pdu.clone();
    let rx = s
        .writer
        .persist(|reply| writer::PersistJob {
            pdu: job_pdu,
            remote: None,
            state_after: Some(id),
            new_snapshot: Some((Arc::new(snap), blocks)),
            txn: None,
            generation: u64::MAX,
            reply,
        })
        .await?;
    pdu.stream_ordering = rx
        .await
        .map_err(|_| Error::internal("event writer stopped"))??;
    Ok(pdu)
}

fn id_list(ids: &[OwnedEventId]) -> CanonicalJsonValue {
    CanonicalJsonValue::Array(
        ids.iter()
            .map(|i| CanonicalJsonValue::String(i.to_string()))
            .collect(),
    )
}

pub fn to_canonical(v: &Value) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(v.clone())
        .map_err(|e| Error::bad_json(format!("content is not canonical JSON: {e}")))
}

/// Events over 65,536 bytes (as sent over federation) are refused.
fn check_size(obj: &CanonicalJsonObject) -> Result<()> {
    let len = serde_json::to_string(obj)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    // Leave room for hashes and signatures (~200 bytes).
    if len + 256 > 65_536 {
        return Err(Error::too_large("Event is larger than 65536 bytes"));
    }
    Ok(())
}

/// Reads the current state event of a type/key in a room.
pub async fn current_state_event(
    db: &Db,
    room_id: &str,
    kind: &str,
    state_key: &str,
) -> Result<Option<Pdu>> {
    match db.current_state_event_id(room_id, kind, state_key).await? {
        Some(id) => db.get_pdu(&id).await,
        None => Ok(None),
    }
}

/// Content of a current state event, if any.
pub async fn current_state_content(
    db: &Db,
    room_id: &str,
    kind: &str,
    state_key: &str,
) -> Result<Option<Value>> {
    Ok(current_state_event(db, room_id, kind, state_key)
        .await?
        .map(|p| p.content_value()))
}
