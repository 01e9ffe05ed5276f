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
    storage::{Db, events::TxnRef, state::Snapshot},
    sync::notifier::Notifier,
};

/// The most events one transaction takes.
const MAX_BATCH: usize = 512;

pub struct PersistJob {
    pub pdu: Pdu,
    /// Snapshot after the event: the base snapshot for a message, a new one for a state event.
    pub state_after: Option<i64>,
    /// For a state event: the new snapshot and the blocks it introduces.
    pub new_snapshot: Option<(Arc<Snapshot>, Vec<(String, String)>)>,
    pub txn: Option<ClientTxn>,
    /// The room head generation this event was built on.
    pub generation: u64,
    pub reply: oneshot::Sender<Result<i64>>,
}

#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<PersistJob>,
    /// Rooms whose queued events must be refused: room → last failed generation.
    failed: Arc<Mutex<HashMap<String, u64>>>,
}

impl EventWriter {
    pub fn start(db: Db, notifier: Arc<Notifier>) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let failed = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(run(db, notifier, rx, failed.clone()));
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
        match write_batch(&db, &jobs).await {
            Ok(first_pos) => {
                let mut rooms: HashMap<&str, (i64, Vec<String>)> = HashMap::new();
                for (i, job) in jobs.iter().enumerate() {
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
                    let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
                    for j in &jobs {
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

/// Writes the batch in one transaction; returns the first stream position.
async fn write_batch(db: &Db, jobs: &[PersistJob]) -> Result<i64> {
    let mut w = db.begin_stream(jobs.len() as i64).await?;
    let first = w.first;
    for (i, job) in jobs.iter().enumerate() {
        let pos = first + i as i64;
        let p = &job.pdu;
        if let (Some((snap, blocks)), Some(id)) = (&job.new_snapshot, job.state_after) {
            db.write_snapshot(&mut w.tx, p.room_id.as_str(), id, snap, blocks)
                .await?;
        }
        let txn_ref = job.txn.as_ref().map(|t| TxnRef {
            device_id: &t.device_id,
            txn_id: &t.txn_id,
        });
        Db::insert_event(&mut w.tx, p, pos, job.state_after, false, txn_ref).await?;
        Db::update_forward_extremities(&mut w.tx, p).await?;
        if let Some(t) = &job.txn {
            Db::store_txn_id(
                &mut w.tx,
                p.sender.as_str(),
                &t.device_id,
                &t.txn_id,
                p.event_id.as_str(),
            )
            .await?;
        }
        if let Some(sk) = &p.state_key {
            let kind = p.kind.to_string();
            Db::set_current_state(
                &mut w.tx,
                p.room_id.as_str(),
                &kind,
                sk,
                p.event_id.as_str(),
                pos,
            )
            .await?;
            if p.kind == TimelineEventType::RoomMember {
                let membership = p
                    .content_value()
                    .get("membership")
                    .and_then(Value::as_str)
                    .unwrap_or("leave")
                    .to_owned();
                Db::set_membership(
                    &mut w.tx,
                    p.room_id.as_str(),
                    sk,
                    &membership,
                    p.event_id.as_str(),
                    p.sender.as_str(),
                    pos,
                )
                .await?;
            }
        }
    }
    w.commit().await?;
    Ok(first)
}
