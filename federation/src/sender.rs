//! The durable outbound federation sender: one queue per destination server, kept in the
//! server's database, drained by one tokio task per destination that has something to send.
//!
//! How the pieces fit:
//! - The server inserts queue rows (one per PDU or EDU and destination) in the same database
//!   transaction that stores the event, so a crash cannot lose them, then calls
//!   [`SenderHandle::notify`] for each destination after the commit.
//! - [`start`] spawns a scan of [`QueueStore::destinations_with_pending`], so everything not
//!   acknowledged before a restart is sent again.
//! - A destination's task reads the oldest rows ([`QueueStore::pending`], at most
//!   [`SenderConfig::max_pdus`] PDUs and [`SenderConfig::max_edus`] EDUs, ordered by id), sends
//!   them as one transaction through [`Transport::send_transaction`], then deletes them with
//!   [`QueueStore::ack`]. One transaction is in flight per destination and batches go out in id
//!   order, so order is preserved per destination. A task exits when its queue is empty; memory is
//!   one batch per destination with pending rows.
//! - Failures back off exponentially with jitter ([`SenderConfig`]: 2 s doubling to a 10 min cap
//!   by default) and retry the *same* batch with the *same* transaction id, which the receiver
//!   deduplicates by origin and transaction id. Peers that are down keep their backlog: nothing is
//!   dropped because a peer was unreachable, and once it answers again the backlog drains batch
//!   by batch (catch-up). [`SenderHandle::peer_is_up`] (call it when a server contacts us) resets
//!   the backoff and retries at once (no sooner than `initial_backoff` after the last attempt).
//! - A 4xx answer other than 429 for a whole transaction ([`SendError::Rejected`]) is retried
//!   with the same backoff, because many such answers are transient on the peer (401 while it
//!   fetches our keys, 403 during an ACL or allow-list change, 404 while it is being deployed);
//!   after [`SenderConfig::max_rejected_attempts`] attempts the batch is logged and dropped
//!   (acknowledged) so one poisoned batch cannot block the queue forever. Per-PDU errors in a
//!   200 response are the receiver's verdict on those events: they are logged, not retried.
//! - [`SenderHandle::shutdown`] stops every task, abandoning any transaction in flight (it stays
//!   in the queue and is resent after the restart).
//!
//! Transaction ids are derived from the ids of the rows in the batch, so a batch rebuilt after a
//! restart from the same rows gets the same id. This needs row ids that are never reused
//! (SQLite `INTEGER PRIMARY KEY AUTOINCREMENT`, PostgreSQL `BIGSERIAL`/identity).

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use rand::Rng;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedServerName, OwnedTransactionId, ServerName,
    TransactionId, api::federation::transactions::send_transaction_message::v1 as send_txn,
    serde::Raw,
};
use serde_json::value::RawValue;
use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinSet,
    time::Instant,
};

/// Errors from the store, boxed (`sqlx::Error` converts with `?`).
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Pdu,
    Edu,
}

/// One queued row: a PDU (federation format, signed) or an EDU (`{"edu_type", "content"}`).
#[derive(Debug, Clone)]
pub struct QueueItem {
    /// Unique, increasing and never reused (the queue order and the transaction id rely on it).
    pub id: i64,
    pub kind: ItemKind,
    pub json: Box<RawValue>,
}

/// The outbound queue in the server's database.
pub trait QueueStore: Send + Sync + 'static {
    /// The oldest rows for `destination`: up to `max_pdus` PDUs and up to `max_edus` EDUs, in id
    /// order (the sender sorts again, so two queries concatenated are fine).
    fn pending(
        &self,
        destination: &ServerName,
        max_pdus: usize,
        max_edus: usize,
    ) -> impl Future<Output = Result<Vec<QueueItem>, StoreError>> + Send;

    /// Deletes these rows: delivered, or given up on (see the module docs).
    fn ack(
        &self,
        destination: &ServerName,
        ids: &[i64],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every destination with at least one row (used at start-up).
    fn destinations_with_pending(
        &self,
    ) -> impl Future<Output = Result<Vec<OwnedServerName>, StoreError>> + Send;
}

/// Why a transaction was not delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// Connection or TLS failure, timeout, 5xx, unreadable answer: retried with backoff, forever.
    #[error("destination unreachable: {0}")]
    Unreachable(String),
    /// 429: retried after `retry_after` (capped at `max_backoff`) or the backoff.
    #[error("rate limited")]
    RateLimited { retry_after: Option<Duration> },
    /// Another 4xx for the whole transaction (or `status` 0: refused locally, e.g. by the
    /// deny list): retried up to `max_rejected_attempts` times, then dropped.
    #[error("transaction rejected with {status}: {message}")]
    Rejected { status: u16, message: String },
}

impl SendError {
    /// Classifies an HTTP error status (for the real transport).
    pub fn from_status(status: u16, retry_after: Option<Duration>, message: String) -> Self {
        match status {
            429 => Self::RateLimited { retry_after },
            400..=499 => Self::Rejected { status, message },
            _ => Self::Unreachable(format!("HTTP {status}: {message}")),
        }
    }
}

/// The receiver's verdict on each PDU of a delivered transaction (`Err` holds its error text).
pub type PduResults = BTreeMap<OwnedEventId, Result<(), String>>;

/// Sends one transaction (`PUT /_matrix/federation/v1/send/{txn_id}`).
pub trait Transport: Send + Sync + 'static {
    fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &TransactionId,
        pdus: &[Box<RawValue>],
        edus: &[Box<RawValue>],
    ) -> impl Future<Output = Result<PduResults, SendError>> + Send;
}

/// Builds the ruma request for a transaction (for the real [`Transport`]).
pub fn transaction_request(
    origin: OwnedServerName,
    txn_id: &TransactionId,
    pdus: &[Box<RawValue>],
    edus: &[Box<RawValue>],
) -> send_txn::Request {
    let mut request =
        send_txn::Request::new(txn_id.to_owned(), origin, MilliSecondsSinceUnixEpoch::now());
    request.pdus = pdus.to_vec();
    request.edus = edus.iter().cloned().map(Raw::from_json).collect();
    request
}

/// The real transport: `PUT /_matrix/federation/v1/send/{txn_id}` through the federation client.
impl Transport for crate::client::FederationClient {
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &TransactionId,
        pdus: &[Box<RawValue>],
        edus: &[Box<RawValue>],
    ) -> Result<PduResults, SendError> {
        let request = transaction_request(self.origin().to_owned(), txn_id, pdus, edus);
        match self.send(destination, request).await {
            Ok(response) => Ok(response.pdus),
            Err(e) => Err(classify_federation_error(&e)),
        }
    }
}

/// Maps a client error to the sender's retry classes: answers by status; refusals by our own
/// configuration (deny list, private address) and unbuildable requests count as rejections (so
/// they are dropped after `max_rejected_attempts`); everything else is "unreachable".
pub fn classify_federation_error(e: &crate::error::FederationError) -> SendError {
    use crate::error::FederationError as E;
    match e {
        E::Remote {
            status,
            retry_after_ms,
            ..
        } => SendError::from_status(
            status.as_u16(),
            retry_after_ms.map(Duration::from_millis),
            e.to_string(),
        ),
        E::DestinationDenied(_) | E::PrivateAddress { .. } | E::Request(_) => SendError::Rejected {
            status: 0,
            message: e.to_string(),
        },
        _ => SendError::Unreachable(e.to_string()),
    }
}

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// PDUs per transaction (the spec's limit is 50).
    pub max_pdus: usize,
    /// EDUs per transaction (the spec's limit is 100).
    pub max_edus: usize,
    /// Delay after the first failure.
    pub initial_backoff: Duration,
    /// Longest delay between attempts for a failing peer.
    pub max_backoff: Duration,
    /// Growth of the delay per consecutive failure (≥ 1).
    pub backoff_factor: f64,
    /// Fraction in 0..=1: each delay is shortened by a random part of up to this fraction of it.
    pub jitter: f64,
    /// Attempts for a transaction answered with a 4xx other than 429 before it is dropped.
    pub max_rejected_attempts: u32,
    /// Transactions in flight at once, over all destinations.
    pub max_concurrent_transactions: usize,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            max_pdus: 50,
            max_edus: 100,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
            backoff_factor: 2.0,
            jitter: 0.25,
            max_rejected_attempts: 5,
            max_concurrent_transactions: 64,
        }
    }
}

impl SenderConfig {
    /// The delay after `failures` consecutive failures (≥ 1), before jitter:
    /// `initial_backoff * backoff_factor^(failures-1)`, at most `max_backoff`.
    pub fn nominal_backoff(&self, failures: u32) -> Duration {
        let max = self.max_backoff.as_secs_f64();
        let exp = failures.saturating_sub(1).min(1024) as i32;
        let secs = self.initial_backoff.as_secs_f64() * self.backoff_factor.max(1.0).powi(exp);
        Duration::try_from_secs_f64(secs.min(max)).unwrap_or(self.max_backoff)
    }

    /// The nominal delay shortened by `jitter * unit` of itself (`unit` in 0..=1).
    pub fn backoff_with_jitter(&self, failures: u32, unit: f64) -> Duration {
        let nominal = self.nominal_backoff(failures);
        let cut = self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
        nominal.mul_f64(1.0 - cut)
    }
}

/// The stable transaction id of a batch, derived from its row ids.
pub fn transaction_id_for(ids: &[i64]) -> OwnedTransactionId {
    // FNV-1a over the ids: deterministic across processes and versions.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for byte in id.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let first = ids.first().copied().unwrap_or_default();
    format!("g{first}-{}-{hash:016x}", ids.len()).into()
}

/// Per destination with a running task.
struct DestState {
    /// New rows may have been queued since the task last read the store.
    dirty: bool,
    /// The task sleeps in backoff (only then does `peer_is_up` wake it).
    backing_off: bool,
    /// `peer_is_up` asked the task to retry now.
    woken: bool,
    wake: Arc<Notify>,
}

struct Registry {
    destinations: HashMap<OwnedServerName, DestState>,
    tasks: JoinSet<()>,
    stopping: bool,
}

struct Shared<S, T> {
    store: Arc<S>,
    transport: Arc<T>,
    config: SenderConfig,
    permits: Semaphore,
    shutdown: watch::Receiver<bool>,
    registry: Mutex<Registry>,
}

/// Control side of the sender, cheap to clone; what the server keeps in its services.
#[derive(Clone)]
pub struct SenderHandle {
    inner: Arc<dyn Control>,
}

impl std::fmt::Debug for SenderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderHandle").finish_non_exhaustive()
    }
}

/// Object-safe face of `Shared<S, T>`, so the handle has no type parameters.
trait Control: Send + Sync {
    fn notify(&self, destination: &ServerName);
    fn peer_is_up(&self, destination: &ServerName);
    fn active_destinations(&self) -> usize;
    fn begin_shutdown(&self) -> JoinSet<()>;
}

/// Starts the sender: spawns the start-up scan (resend of everything pending) and returns the
/// handle. Must be called inside a tokio runtime.
pub fn start<S: QueueStore, T: Transport>(
    store: Arc<S>,
    transport: Arc<T>,
    mut config: SenderConfig,
) -> SenderHandle {
    config.max_pdus = config.max_pdus.max(1);
    config.max_edus = config.max_edus.max(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Semaphore::new(config.max_concurrent_transactions.max(1));
    let shared = Arc::new(Shared {
        store,
        transport,
        config,
        permits,
        shutdown: stop_rx,
        registry: Mutex::new(Registry {
            destinations: HashMap::new(),
            tasks: JoinSet::new(),
            stopping: false,
        }),
    });
    let scan = Arc::clone(&shared);
    shared
        .lock()
        .tasks
        .spawn(async move { scan.initial_scan().await });
    SenderHandle {
        inner: Arc::new(Running {
            shared,
            stop: stop_tx,
        }),
    }
}

struct Running<S, T> {
    shared: Arc<Shared<S, T>>,
    stop: watch::Sender<bool>,
}

impl<S: QueueStore, T: Transport> Control for Running<S, T> {
    fn notify(&self, destination: &ServerName) {
        Shared::notify(&self.shared, destination);
    }

    fn peer_is_up(&self, destination: &ServerName) {
        let mut reg = self.shared.lock();
        if let Some(state) = reg.destinations.get_mut(destination)
            && state.backing_off
        {
            state.backing_off = false;
            state.woken = true;
            state.wake.notify_one();
        }
    }

    fn active_destinations(&self) -> usize {
        self.shared.lock().destinations.len()
    }

    fn begin_shutdown(&self) -> JoinSet<()> {
        let _ = self.stop.send(true);
        let mut reg = self.shared.lock();
        reg.stopping = true;
        std::mem::take(&mut reg.tasks)
    }
}

impl SenderHandle {
    /// New rows for `destination` were committed: make sure a task sends them.
    pub fn notify(&self, destination: &ServerName) {
        self.inner.notify(destination);
    }

    /// `destination` just contacted us: if its task is backing off, reset the backoff and retry
    /// now. Cheap (a map lookup); call it on every authenticated inbound federation request.
    pub fn peer_is_up(&self, destination: &ServerName) {
        self.inner.peer_is_up(destination);
    }

    /// Destinations with a running task (they have, or just had, pending rows).
    pub fn active_destinations(&self) -> usize {
        self.inner.active_destinations()
    }

    /// Stops all tasks and waits for them (dropping every handle stops them too, without
    /// waiting); transactions in flight are abandoned (resent after the
    /// next start). Later calls to `notify` do nothing.
    pub async fn shutdown(&self) {
        let mut tasks = self.inner.begin_shutdown();
        while tasks.join_next().await.is_some() {}
    }
}

enum SleepEnd {
    Elapsed,
    Woken,
    Shutdown,
}

impl<S: QueueStore, T: Transport> Shared<S, T> {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn notify(this: &Arc<Self>, destination: &ServerName) {
        let mut reg = this.lock();
        if reg.stopping {
            return;
        }
        if let Some(state) = reg.destinations.get_mut(destination) {
            state.dirty = true;
            return;
        }
        let wake = Arc::new(Notify::new());
        reg.destinations.insert(
            destination.to_owned(),
            DestState {
                dirty: false,
                backing_off: false,
                woken: false,
                wake: Arc::clone(&wake),
            },
        );
        // Reap finished tasks so the set stays as small as the number of live ones.
        while reg.tasks.try_join_next().is_some() {}
        let worker = Arc::clone(this);
        let destination = destination.to_owned();
        reg.tasks
            .spawn(async move { worker.run_destination(destination, wake).await });
    }

    async fn initial_scan(self: Arc<Self>) {
        let mut failures = 0;
        loop {
            match self.store.destinations_with_pending().await {
                Ok(destinations) => {
                    tracing::debug!(count = destinations.len(), "federation sender: resuming");
                    for destination in destinations {
                        Shared::notify(&self, &destination);
                    }
                    return;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "federation sender: cannot list pending destinations");
                    let delay = self.jittered(failures);
                    let mut stop = self.shutdown.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        }
    }

    fn jittered(&self, failures: u32) -> Duration {
        let unit = rand::rng().random_range(0.0..=1.0);
        self.config.backoff_with_jitter(failures, unit)
    }

    /// Clears `dirty` before a read of the store.
    fn clear_dirty(&self, destination: &ServerName) {
        if let Some(state) = self.lock().destinations.get_mut(destination) {
            state.dirty = false;
        }
    }

    /// The queue looked empty: exit unless rows were notified since the read.
    fn try_retire(&self, destination: &ServerName) -> bool {
        let mut reg = self.lock();
        match reg.destinations.get_mut(destination) {
            Some(state) if state.dirty => {
                state.dirty = false;
                false
            }
            _ => {
                reg.destinations.remove(destination);
                true
            }
        }
    }

    fn retire(&self, destination: &ServerName) {
        self.lock().destinations.remove(destination);
    }

    /// Sleeps until `deadline`, a `peer_is_up` wake, or shutdown.
    async fn backoff_sleep(
        &self,
        destination: &ServerName,
        wake: &Notify,
        deadline: Instant,
    ) -> SleepEnd {
        if let Some(state) = self.lock().destinations.get_mut(destination) {
            state.backing_off = true;
            state.woken = false;
        }
        let mut stop = self.shutdown.clone();
        let end = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break SleepEnd::Elapsed,
                _ = stop.wait_for(|s| *s) => break SleepEnd::Shutdown,
                _ = wake.notified() => {
                    let woken = self
                        .lock()
                        .destinations
                        .get(destination)
                        .is_some_and(|s| s.woken);
                    if woken {
                        break SleepEnd::Woken;
                    }
                    // A stale permit from an earlier wake: keep sleeping.
                }
            }
        };
        if let Some(state) = self.lock().destinations.get_mut(destination) {
            state.backing_off = false;
            state.woken = false;
        }
        end
    }

    async fn run_destination(self: Arc<Self>, destination: OwnedServerName, wake: Arc<Notify>) {
        let cfg = &self.config;
        let mut failures: u32 = 0;
        let mut batch: Option<Batch> = None;
        let mut last_attempt: Option<Instant> = None;
        loop {
            if self.stopping() {
                self.retire(&destination);
                return;
            }
            let current = match &mut batch {
                Some(b) => b,
                None => {
                    self.clear_dirty(&destination);
                    match self
                        .store
                        .pending(&destination, cfg.max_pdus, cfg.max_edus)
                        .await
                    {
                        Ok(items) if items.is_empty() => {
                            if self.try_retire(&destination) {
                                return;
                            }
                            continue;
                        }
                        Ok(items) => batch.insert(Batch::new(items, cfg)),
                        Err(e) => {
                            tracing::warn!(%destination, error = %e, "federation sender: cannot read queue");
                            failures += 1;
                            let delay = self.jittered(failures);
                            if let SleepEnd::Shutdown = self
                                .backoff_sleep(&destination, &wake, Instant::now() + delay)
                                .await
                            {
                                self.retire(&destination);
                                return;
                            }
                            continue;
                        }
                    }
                }
            };

            let mut retry_after = None;
            if !current.done {
                let mut stop = self.shutdown.clone();
                let sent = tokio::select! {
                    _ = stop.wait_for(|s| *s) => None,
                    r = async {
                        let _permit = self.permits.acquire().await;
                        last_attempt = Some(Instant::now());
                        self.transport
                            .send_transaction(&destination, &current.txn_id, &current.pdus, &current.edus)
                            .await
                    } => Some(r),
                };
                let Some(result) = sent else {
                    self.retire(&destination);
                    return;
                };
                match result {
                    Ok(results) => {
                        for (event_id, r) in results {
                            if let Err(e) = r {
                                tracing::debug!(%destination, %event_id, error = %e, "PDU refused by destination");
                            }
                        }
                        current.done = true;
                    }
                    Err(SendError::Rejected { status, message }) => {
                        current.rejected += 1;
                        if current.rejected >= cfg.max_rejected_attempts.max(1) {
                            tracing::warn!(
                                %destination, txn_id = %current.txn_id, status, %message,
                                pdus = current.pdus.len(), edus = current.edus.len(),
                                "federation transaction rejected repeatedly; dropping it"
                            );
                            current.done = true;
                        } else {
                            tracing::info!(%destination, txn_id = %current.txn_id, status, %message, "federation transaction rejected");
                        }
                    }
                    Err(SendError::RateLimited { retry_after: after }) => {
                        retry_after = Some(after);
                    }
                    Err(SendError::Unreachable(e)) => {
                        tracing::debug!(%destination, error = %e, failures, "federation destination unreachable");
                    }
                }
            }

            if current.done {
                match self.store.ack(&destination, &current.ids).await {
                    Ok(()) => {
                        batch = None;
                        failures = 0;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(%destination, error = %e, "federation sender: cannot acknowledge");
                    }
                }
            }

            // Failure: back off, then retry the same batch (same transaction id).
            failures = failures.saturating_add(1);
            let delay = match retry_after {
                Some(Some(after)) => after.min(cfg.max_backoff),
                _ => self.jittered(failures),
            };
            match self
                .backoff_sleep(&destination, &wake, Instant::now() + delay)
                .await
            {
                SleepEnd::Elapsed => {}
                SleepEnd::Shutdown => {
                    self.retire(&destination);
                    return;
                }
                SleepEnd::Woken => {
                    failures = 0;
                    // Never retry faster than `initial_backoff` after the previous attempt.
                    if let Some(at) = last_attempt {
                        let earliest = at + cfg.initial_backoff;
                        let mut stop = self.shutdown.clone();
                        tokio::select! {
                            _ = tokio::time::sleep_until(earliest) => {}
                            _ = stop.wait_for(|s| *s) => {
                                self.retire(&destination);
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The batch being delivered; kept across retries so its transaction id stays the same.
struct Batch {
    ids: Vec<i64>,
    txn_id: OwnedTransactionId,
    pdus: Vec<Box<RawValue>>,
    edus: Vec<Box<RawValue>>,
    /// Answers with a 4xx (not 429) so far.
    rejected: u32,
    /// Delivered or given up: only the ack is left.
    done: bool,
}

impl Batch {
    fn new(mut items: Vec<QueueItem>, cfg: &SenderConfig) -> Self {
        items.sort_by_key(|i| i.id);
        items.dedup_by_key(|i| i.id);
        let (mut pdus, mut edus, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for item in items {
            match item.kind {
                ItemKind::Pdu if pdus.len() < cfg.max_pdus => pdus.push(item.json),
                ItemKind::Edu if edus.len() < cfg.max_edus => edus.push(item.json),
                _ => continue,
            }
            ids.push(item.id);
        }
        Self {
            txn_id: transaction_id_for(&ids),
            ids,
            pdus,
            edus,
            rejected: 0,
            done: false,
        }
    }
}

#[cfg(test)]
mod tests;
