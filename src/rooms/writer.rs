//! The event writer: one task that persists local events in batches. Senders build an event
//! against the in-memory room head, queue it here and wait; the writer commits everything queued
//! in one transaction (one fsync for the batch), publishes the stream positions and only then
//! answers each sender. A client is never told "sent" before its event is durable.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use ruma::events::TimelineEventType;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{ClientTxn, Pdu};
use crate::{
    error::{Error, Result},
    storage::{
        Db,
        events::{EventRow, ExtremityChanges, TxnRef},
        state::Snapshot,
    },
    sync::notifier::Notifier,
};

/// The most events one transaction takes.
const MAX_BATCH: usize = 512;

/// A state snapshot to store and the content-addressed blocks it introduces.
pub type NewSnapshot = (Arc<Snapshot>, Vec<(String, String)>);
/// A further snapshot to store with an event: its id, the snapshot and its new blocks.
pub type ExtraSnapshot = (i64, Arc<Snapshot>, Vec<(String, String)>);

pub struct PersistJob {
    pub pdu: Pdu,
    /// For events that came from another server: how to store them. `None` for local events,
    /// which are also queued for the other servers in the room.
    pub remote: Option<RemoteWrite>,
    /// Snapshot after the event: the base snapshot for a message, a new one for a state event.
    pub state_after: Option<i64>,
    /// For a state event: the new snapshot and the blocks it introduces.
    pub new_snapshot: Option<NewSnapshot>,
    pub txn: Option<ClientTxn>,
    /// The room head generation this event was built on.
    pub generation: u64,
    pub reply: oneshot::Sender<Result<i64>>,
}

/// How an event from another server is stored.
#[derive(Debug, Default)]
pub struct RemoteWrite {
    /// Not part of the timeline: fetched auth/state events, soft-failed and rejected events.
    pub outlier: bool,
    /// Backfilled history: part of the timeline but older than anything stored, so it takes a
    /// negative stream ordering and wakes nobody.
    pub backfill: bool,
    /// The (negative) stream ordering a backfilled event takes.
    pub position: Option<i64>,
    /// Whether the event becomes a forward extremity (accepted timeline events only).
    pub extremity: bool,
    /// The room's new current state where it changes other than by this event alone (after state
    /// resolution): entries to set (`Some`) or remove (`None`).
    pub current_state: Vec<((String, String), Option<String>)>,
    /// The snapshot of the room's new current state.
    pub current_snapshot: Option<i64>,
    /// Further snapshots to store with the event (the resolved state before it, the room's
    /// resolved current state): id, snapshot, new blocks.
    pub extra_snapshots: Vec<ExtraSnapshot>,
}

/// Who to tell that the outbound queue has new items for some servers.
pub type OutboxWaker = Arc<dyn Fn(&[String]) + Send + Sync>;

/// Where local events go besides the database: the other servers in their rooms.
#[derive(Clone)]
pub struct Outbound {
    pub server_name: String,
    pub wake: OutboxWaker,
}

#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<PersistJob>,
    /// Rooms whose queued events must be refused: room → last failed generation.
    failed: Arc<Mutex<HashMap<String, u64>>>,
}

impl EventWriter {
    pub fn start(db: Db, notifier: Arc<Notifier>, outbound: Option<Outbound>) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let failed = Arc::new(Mutex::new(HashMap::new()));
        let task = run(db, notifier, rx, failed.clone(), outbound);
        // The writer gets a thread and runtime of its own: each of its statements is a
        // hand-over to the database connection's thread and back, and on the shared runtime
        // every hand-back queued behind request handling.
        let own_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match own_runtime {
            Ok(rt) => {
                let spawned = std::thread::Builder::new()
                    .name("event-writer".into())
                    .spawn(move || rt.block_on(task));
                if let Err(e) = spawned {
                    tracing::error!("cannot start the event writer thread: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("event writer runs on the shared runtime: {e}");
                tokio::spawn(task);
            }
        }
        EventWriter { tx, failed }
    }

    /// Queues an event and waits until it is committed; returns its stream position.
    pub async fn persist(
        &self,
        job_without_reply: impl FnOnce(oneshot::Sender<Result<i64>>) -> PersistJob,
    ) -> Result<oneshot::Receiver<Result<i64>>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(job_without_reply(reply))
            .await
            .map_err(|_| Error::internal("event writer stopped"))?;
        Ok(rx)
    }

    /// Whether a room's head generation was poisoned by a failed batch.
    pub fn failed_generation(&self, room_id: &str) -> Option<u64> {
        self.failed.lock().ok()?.get(room_id).copied()
    }
}

async fn run(
    db: Db,
    notifier: Arc<Notifier>,
    mut rx: mpsc::Receiver<PersistJob>,
    failed: Arc<Mutex<HashMap<String, u64>>>,
    outbound: Option<Outbound>,
) {
    let mut batch: Vec<PersistJob> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Events built on a head that a failed batch invalidated are refused.
        let (jobs, refused): (Vec<_>, Vec<_>) = {
            let failed = failed.lock().unwrap_or_else(|e| e.into_inner());
            batch.drain(..).partition(|j| {
                failed
                    .get(j.pdu.room_id.as_str())
                    .is_none_or(|g| j.generation > *g)
            })
        };
        for j in refused {
            let _ = j.reply.send(Err(Error::internal(
                "an earlier event in this room failed to persist; retry",
            )));
        }
        if jobs.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        match write_batch(&db, &jobs, outbound.as_ref()).await {
            Ok((first_pos, destinations)) => {
                tracing::debug!(
                    events = jobs.len(),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "batch committed"
                );
                if let Some(o) = &outbound
                    && !destinations.is_empty()
                {
                    (o.wake)(&destinations);
                }
                let mut rooms: HashMap<&str, (i64, Vec<String>)> = HashMap::new();
                for (i, job) in jobs.iter().enumerate() {
                    if job.remote.as_ref().is_some_and(|r| r.outlier || r.backfill) {
                        continue;
                    }
                    let pos = first_pos + i as i64;
                    let entry = rooms
                        .entry(job.pdu.room_id.as_str())
                        .or_insert((pos, Vec::new()));
                    entry.0 = pos;
                    if job.pdu.kind == TimelineEventType::RoomMember
                        && let Some(sk) = &job.pdu.state_key
                    {
                        entry.1.push(sk.clone());
                    }
                }
                for (room, (pos, users)) in rooms {
                    notifier.notify_room(room, &users, pos);
                }
                for (i, job) in jobs.into_iter().enumerate() {
                    let _ = job.reply.send(Ok(first_pos + i as i64));
                }
            }
            Err(e) => {
                tracing::error!("persisting {} events failed: {e}", jobs.len());
                let rooms: HashSet<String> =
                    jobs.iter().map(|j| j.pdu.room_id.to_string()).collect();
                {
                    // Local events queued on the heads these built are refused until the head
                    // is reloaded. Events from other servers (generation `u64::MAX`) build on
                    // no head: they fail alone and poison nothing.
                    let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
                    for j in jobs.iter().filter(|j| j.generation != u64::MAX) {
                        let g = f.entry(j.pdu.room_id.to_string()).or_insert(0);
                        *g = (*g).max(j.generation);
                    }
                }
                tracing::warn!(?rooms, "room heads reset after a failed write");
                for job in jobs {
                    let _ = job.reply.send(Err(Error::internal(format!(
                        "could not store the event: {e}"
                    ))));
                }
            }
        }
    }
}

/// Writes the batch in one transaction; returns the first stream position and the servers whose
/// outbound queue got new events.
async fn write_batch(
    db: &Db,
    jobs: &[PersistJob],
    outbound: Option<&Outbound>,
) -> Result<(i64, Vec<String>)> {
    let t0 = std::time::Instant::now();
    let mut w = db
        .begin_stream(jobs.len() as i64, crate::storage::StreamKind::Events)
        .await?;
    let t_begin = t0.elapsed();
    let first = w.first;
    let mut low: Option<i64> = None;
    let mut destinations: Vec<String> = Vec::new();
    let mut room_servers: HashMap<String, Vec<String>> = HashMap::new();
    // Event rows (with their client transaction ids) and extremity changes are written
    // together at the end, several rows per statement.
    let mut rows: Vec<EventRow> = Vec::with_capacity(jobs.len());
    let mut extremities = ExtremityChanges::default();
    for (i, job) in jobs.iter().enumerate() {
        let p = &job.pdu;
        let remote = job.remote.as_ref();
        let outlier = remote.is_some_and(|r| r.outlier);
        let pos = match remote {
            // Backfilled history goes below everything stored: at the position the backfill
            // chose (so a batch keeps its order), or counting down.
            Some(r) if r.backfill => match r.position {
                Some(p) => p,
                None => {
                    let next = match low {
                        Some(l) => l - 1,
                        None => Db::lowest_stream_ordering(&mut w.tx).await? - 1,
                    };
                    low = Some(next);
                    next
                }
            },
            _ => first + i as i64,
        };
        if let (Some((snap, blocks)), Some(id)) = (&job.new_snapshot, job.state_after) {
            db.write_snapshot(&mut w.tx, p.room_id.as_str(), id, snap, blocks)
                .await?;
        }
        for (id, snap, blocks) in remote.map(|r| r.extra_snapshots.as_slice()).unwrap_or(&[]) {
            db.write_snapshot(&mut w.tx, p.room_id.as_str(), *id, snap, blocks)
                .await?;
        }
        let txn_ref = job.txn.as_ref().map(|t| TxnRef {
            device_id: &t.device_id,
            txn_id: &t.txn_id,
        });
        // An event fetched earlier as an outlier is stored again as what it is now (rows
        // still waiting in this batch go in first, in case that outlier is one of them).
        if remote.is_some() && !outlier {
            if rows.iter().any(|r| r.event_id() == p.event_id.as_str()) {
                Db::insert_events(&mut w.tx, db.dialect, &rows).await?;
                rows.clear();
            }
            Db::delete_outlier(&mut w.tx, p.event_id.as_str()).await?;
        }
        rows.push(db.event_row(p, pos, job.state_after, outlier, txn_ref)?);
        match remote {
            None => extremities.add(p),
            Some(r) if r.extremity => extremities.add(p),
            Some(_) => {}
        }
        // The room's current state: this event's own entry (local events and remote events
        // that extend the room's only head), or what state resolution gave.
        let current_changes: Vec<((String, String), Option<String>)> = match remote {
            None => p
                .state_key
                .iter()
                .map(|sk| {
                    (
                        (p.kind.to_string(), sk.clone()),
                        Some(p.event_id.to_string()),
                    )
                })
                .collect(),
            Some(r) if r.outlier || r.backfill => Vec::new(),
            Some(r) => r.current_state.clone(),
        };
        for ((kind, sk), event_id) in &current_changes {
            match event_id {
                Some(event_id) => {
                    Db::set_current_state(&mut w.tx, p.room_id.as_str(), kind, sk, event_id, pos)
                        .await?;
                    if kind == "m.room.member" {
                        w.also(crate::storage::StreamKind::Memberships);
                        set_membership_from_event(db, &mut w.tx, p, event_id, sk, pos).await?;
                    }
                }
                None => {
                    Db::delete_current_state(&mut w.tx, p.room_id.as_str(), kind, sk).await?;
                }
            }
        }
        let current_snapshot = match remote {
            None if p.state_key.is_some() => job.state_after,
            Some(r) if !(r.outlier || r.backfill) => r.current_snapshot,
            _ => None,
        };
        if let Some(snap) = current_snapshot {
            Db::set_current_snapshot(&mut w.tx, p.room_id.as_str(), snap).await?;
        }
        // Local events go to every other server in the room (and to the server of a remote
        // user whose membership this changes), in this same transaction.
        if remote.is_none()
            && let Some(o) = outbound
        {
            let room = p.room_id.to_string();
            if !room_servers.contains_key(&room) {
                let servers = db.joined_servers_tx(&mut w.tx, &room).await?;
                room_servers.insert(room.clone(), servers);
            }
            let mut targets: Vec<String> = room_servers.get(&room).cloned().unwrap_or_default();
            if p.kind == TimelineEventType::RoomMember
                && let Some((_, server)) = p.state_key.as_deref().and_then(|k| k.split_once(':'))
                && !targets.iter().any(|t| t == server)
            {
                targets.push(server.to_owned());
            }
            targets.retain(|t| *t != o.server_name);
            if !targets.is_empty() {
                let json = serde_json::to_string(&*p.json)?;
                for t in &targets {
                    Db::enqueue_outbox(&mut w.tx, t, "pdu", &json).await?;
                    if !destinations.contains(t) {
                        destinations.push(t.clone());
                    }
                }
            }
            if p.kind == TimelineEventType::RoomMember {
                // Membership changed: the room's servers are read again for later events.
                room_servers.remove(&room);
            }
        }
    }
    let t_rows = t0.elapsed();
    Db::insert_events(&mut w.tx, db.dialect, &rows).await?;
    Db::apply_extremities(&mut w.tx, db.dialect, &extremities).await?;
    let t_insert = t0.elapsed();
    w.commit().await?;
    tracing::trace!(
        begin_us = t_begin.as_micros() as u64,
        rows_us = (t_rows - t_begin).as_micros() as u64,
        insert_us = (t_insert - t_rows).as_micros() as u64,
        commit_us = (t0.elapsed() - t_insert).as_micros() as u64,
        "batch phases"
    );
    Ok((first, destinations))
}

/// Updates the membership table from a member event (this one, or one state resolution chose).
async fn set_membership_from_event(
    db: &Db,
    tx: &mut crate::storage::Tx<'_>,
    p: &Pdu,
    event_id: &str,
    user: &str,
    pos: i64,
) -> Result<()> {
    let (content, sender) = if event_id == p.event_id.as_str() {
        (p.content_value(), p.sender.to_string())
    } else {
        match db.get_pdu(event_id).await? {
            Some(ev) => (ev.content_value(), ev.sender.to_string()),
            None => return Ok(()),
        }
    };
    let membership = content
        .get("membership")
        .and_then(Value::as_str)
        .unwrap_or("leave")
        .to_owned();
    Db::set_membership(
        tx,
        p.room_id.as_str(),
        user,
        &membership,
        event_id,
        &sender,
        pos,
    )
    .await
}
