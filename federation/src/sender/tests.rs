//! Sender tests on tokio's paused clock, with an in-memory store and a scripted transport.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use ruma::{OwnedServerName, ServerName, TransactionId, server_name};
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::*;

#[derive(Default)]
struct MemStore {
    rows: Mutex<BTreeMap<i64, (OwnedServerName, ItemKind, String)>>,
    next: Mutex<i64>,
    /// Store calls to fail (once each) before working.
    fail_pending: AtomicUsize,
    fail_ack: AtomicUsize,
}

fn take_failure(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl MemStore {
    fn push(&self, dest: &ServerName, kind: ItemKind, tag: &str) -> i64 {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let json = match kind {
            ItemKind::Pdu => format!(r#"{{"tag":"{tag}"}}"#),
            ItemKind::Edu => format!(r#"{{"edu_type":"m.test","content":{{"tag":"{tag}"}}}}"#),
        };
        self.rows
            .lock()
            .unwrap()
            .insert(*next, (dest.to_owned(), kind, json));
        *next
    }

    fn remaining(&self, dest: &ServerName) -> usize {
        self.rows
            .lock()
            .unwrap()
            .values()
            .filter(|(d, _, _)| d == dest)
            .count()
    }
}

impl QueueStore for MemStore {
    async fn pending(
        &self,
        destination: &ServerName,
        max_pdus: usize,
        max_edus: usize,
    ) -> Result<Vec<QueueItem>, StoreError> {
        if take_failure(&self.fail_pending) {
            return Err("database is locked".into());
        }
        let rows = self.rows.lock().unwrap();
        let mut out = Vec::new();
        let (mut p, mut e) = (0, 0);
        for (id, (d, kind, json)) in rows.iter() {
            if d != destination {
                continue;
            }
            let take = match kind {
                ItemKind::Pdu => {
                    p += 1;
                    p <= max_pdus
                }
                ItemKind::Edu => {
                    e += 1;
                    e <= max_edus
                }
            };
            if take {
                out.push(QueueItem {
                    id: *id,
                    kind: *kind,
                    json: RawValue::from_string(json.clone())?,
                });
            }
        }
        Ok(out)
    }

    async fn ack(&self, _destination: &ServerName, ids: &[i64]) -> Result<(), StoreError> {
        if take_failure(&self.fail_ack) {
            return Err("database is locked".into());
        }
        let mut rows = self.rows.lock().unwrap();
        for id in ids {
            rows.remove(id);
        }
        Ok(())
    }

    async fn destinations_with_pending(&self) -> Result<Vec<OwnedServerName>, StoreError> {
        let rows = self.rows.lock().unwrap();
        let set: HashSet<_> = rows.values().map(|(d, _, _)| d.clone()).collect();
        Ok(set.into_iter().collect())
    }
}

#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    dest: OwnedServerName,
    txn_id: String,
    pdus: Vec<String>,
    edus: Vec<String>,
    ok: bool,
}

#[derive(Default)]
struct FakeTransport {
    calls: Mutex<Vec<Call>>,
    /// Destinations that answer with `Unreachable`.
    down: Mutex<HashSet<OwnedServerName>>,
    /// Errors returned (in order) before answering normally.
    script: Mutex<VecDeque<SendError>>,
    /// How long each send takes.
    latency: Mutex<Duration>,
    in_flight: Mutex<HashMap<OwnedServerName, usize>>,
    max_in_flight: AtomicUsize,
}

fn tag(raw: &RawValue) -> String {
    let v: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
    v.get("tag")
        .or_else(|| v.get("content").and_then(|c| c.get("tag")))
        .and_then(|t| t.as_str())
        .unwrap()
        .to_owned()
}

impl FakeTransport {
    fn set_down(&self, dest: &ServerName, down: bool) {
        let mut set = self.down.lock().unwrap();
        if down {
            set.insert(dest.to_owned());
        } else {
            set.remove(dest);
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn calls_to(&self, dest: &ServerName) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.dest == dest)
            .collect()
    }

    fn delivered_pdus(&self, dest: &ServerName) -> Vec<String> {
        self.calls_to(dest)
            .into_iter()
            .filter(|c| c.ok)
            .flat_map(|c| c.pdus)
            .collect()
    }
}

impl Transport for FakeTransport {
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &TransactionId,
        pdus: &[Box<RawValue>],
        edus: &[Box<RawValue>],
    ) -> Result<PduResults, SendError> {
        {
            let mut f = self.in_flight.lock().unwrap();
            let n = f.entry(destination.to_owned()).or_default();
            *n += 1;
            self.max_in_flight.fetch_max(*n, Ordering::SeqCst);
        }
        let latency = *self.latency.lock().unwrap();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        *self.in_flight.lock().unwrap().get_mut(destination).unwrap() -= 1;
        let result = if self.down.lock().unwrap().contains(destination) {
            Err(SendError::Unreachable("connection refused".into()))
        } else if let Some(e) = self.script.lock().unwrap().pop_front() {
            Err(e)
        } else {
            Ok(PduResults::new())
        };
        self.calls.lock().unwrap().push(Call {
            at: Instant::now(),
            dest: destination.to_owned(),
            txn_id: txn_id.to_string(),
            pdus: pdus.iter().map(|p| tag(p)).collect(),
            edus: edus.iter().map(|e| tag(e)).collect(),
            ok: result.is_ok(),
        });
        result
    }
}

fn no_jitter() -> SenderConfig {
    SenderConfig {
        jitter: 0.0,
        ..SenderConfig::default()
    }
}

/// Advances (virtual) time until `cond` holds; panics after `limit`.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "condition not reached in {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn setup() -> (Arc<MemStore>, Arc<FakeTransport>) {
    (
        Arc::new(MemStore::default()),
        Arc::new(FakeTransport::default()),
    )
}

#[tokio::test(start_paused = true)]
async fn batches_respect_limits_and_order() {
    let (store, transport) = setup();
    let dest = server_name!("b.test");
    for i in 0..120 {
        store.push(dest, ItemKind::Pdu, &format!("p{i}"));
        if i < 65 {
            store.push(dest, ItemKind::Edu, &format!("e{i}"));
            store.push(dest, ItemKind::Edu, &format!("e{i}b"));
        }
    }
    let sender = start(store.clone(), transport.clone(), no_jitter());
    wait_until(Duration::from_secs(5), || store.remaining(dest) == 0).await;
    let calls = transport.calls_to(dest);
    let shape: Vec<(usize, usize)> = calls.iter().map(|c| (c.pdus.len(), c.edus.len())).collect();
    assert_eq!(shape, vec![(50, 100), (50, 30), (20, 0)]);
    let expected: Vec<String> = (0..120).map(|i| format!("p{i}")).collect();
    assert_eq!(transport.delivered_pdus(dest), expected);
    // Distinct batches get distinct transaction ids.
    let ids: HashSet<_> = calls.iter().map(|c| c.txn_id.clone()).collect();
    assert_eq!(ids.len(), 3);
    wait_until(Duration::from_secs(1), || sender.active_destinations() == 0).await;
    sender.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_to_cap_with_stable_txn_id() {
    let (store, transport) = setup();
    let dest = server_name!("down.test");
    transport.set_down(dest, true);
    store.push(dest, ItemKind::Pdu, "p0");
    let config = SenderConfig {
        max_backoff: Duration::from_secs(20),
        ..no_jitter()
    };
    let sender = start(store.clone(), transport.clone(), config);
    wait_until(Duration::from_secs(200), || transport.calls().len() >= 8).await;
    let calls = transport.calls();
    let gaps: Vec<u64> = calls
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_secs())
        .collect();
    assert_eq!(gaps[..7], [2, 4, 8, 16, 20, 20, 20]);
    assert!(calls.iter().all(|c| c.txn_id == calls[0].txn_id));
    assert_eq!(
        store.remaining(dest),
        1,
        "nothing dropped while the peer is down"
    );

    // It comes back: the next retry delivers.
    transport.set_down(dest, false);
    wait_until(Duration::from_secs(30), || store.remaining(dest) == 0).await;
    assert_eq!(transport.calls().last().unwrap().txn_id, calls[0].txn_id);
    sender.shutdown().await;
}

#[test]
fn backoff_formula_and_jitter_bounds() {
    let cfg = SenderConfig::default();
    assert_eq!(cfg.nominal_backoff(1), Duration::from_secs(2));
    assert_eq!(cfg.nominal_backoff(2), Duration::from_secs(4));
    assert_eq!(cfg.nominal_backoff(9), Duration::from_secs(512));
    assert_eq!(cfg.nominal_backoff(10), Duration::from_secs(600));
    assert_eq!(cfg.nominal_backoff(u32::MAX), Duration::from_secs(600));
    for failures in [1, 3, 12] {
        let nominal = cfg.nominal_backoff(failures);
        assert_eq!(cfg.backoff_with_jitter(failures, 0.0), nominal);
        assert_eq!(
            cfg.backoff_with_jitter(failures, 1.0),
            nominal.mul_f64(0.75)
        );
        for i in 0..=100 {
            let d = cfg.backoff_with_jitter(failures, f64::from(i) / 100.0);
            assert!(d <= nominal && d >= nominal.mul_f64(0.75), "{d:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn jittered_retries_stay_in_bounds() {
    let (store, transport) = setup();
    let dest = server_name!("down.test");
    transport.set_down(dest, true);
    store.push(dest, ItemKind::Pdu, "p0");
    let config = SenderConfig {
        jitter: 0.5,
        max_backoff: Duration::from_secs(64),
        ..SenderConfig::default()
    };
    let sender = start(store.clone(), transport.clone(), config.clone());
    wait_until(Duration::from_secs(2000), || transport.calls().len() >= 20).await;
    let calls = transport.calls();
    for (i, w) in calls.windows(2).enumerate() {
        let gap = w[1].at - w[0].at;
        let nominal = config.nominal_backoff(i as u32 + 1);
        assert!(
            gap <= nominal + Duration::from_millis(20) && gap >= nominal.mul_f64(0.5),
            "retry {i}: {gap:?} vs {nominal:?}"
        );
    }
    sender.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn peer_contact_wakes_and_resets_backoff() {
    let (store, transport) = setup();
    let dest = server_name!("flaky.test");
    transport.set_down(dest, true);
    store.push(dest, ItemKind::Pdu, "p0");
    let sender = start(store.clone(), transport.clone(), no_jitter());
    // Ten failures 2+4+...+512 s apart: the wait after the tenth is the 600 s cap.
    wait_until(Duration::from_secs(1100), || transport.calls().len() >= 10).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(transport.calls().len(), 10, "in the 600 s wait");

    // Contact while our sends still fail: an immediate retry, and the backoff starts over.
    let woke_at = Instant::now();
    sender.peer_is_up(dest);
    wait_until(Duration::from_secs(10), || transport.calls().len() >= 13).await;
    let calls = transport.calls();
    assert!(calls[10].at - woke_at < Duration::from_millis(50));
    assert_eq!((calls[11].at - calls[10].at).as_secs(), 2);
    assert_eq!((calls[12].at - calls[11].at).as_secs(), 4);

    // It is really up now: delivered right after the contact.
    tokio::time::sleep(Duration::from_secs(3)).await;
    transport.set_down(dest, false);
    let before = Instant::now();
    sender.peer_is_up(dest);
    wait_until(Duration::from_secs(3), || store.remaining(dest) == 0).await;
    assert!(Instant::now() - before < Duration::from_secs(1));

    // Contact from a server with nothing queued is a no-op.
    wait_until(Duration::from_secs(1), || sender.active_destinations() == 0).await;
    sender.peer_is_up(server_name!("idle.test"));
    assert_eq!(sender.active_destinations(), 0);
    sender.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn wake_does_not_retry_faster_than_initial_backoff() {
    let (store, transport) = setup();
    let dest = server_name!("flaky.test");
    transport.set_down(dest, true);
    store.push(dest, ItemKind::Pdu, "p0");
    let sender = start(store.clone(), transport.clone(), no_jitter());
    wait_until(Duration::from_secs(100), || transport.calls().len() >= 5).await;
    // The peer talks to us constantly while our sends still fail.
    for _ in 0..50 {
        sender.peer_is_up(dest);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = transport.calls();
    for w in calls.windows(2) {
        assert!(w[1].at - w[0].at >= Duration::from_secs(2));
    }
    sender.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restart_resends_unacknowledged() {
    let (store, transport) = setup();
    let dest = server_name!("b.test");
    transport.set_down(dest, true);
    for i in 0..3 {
        store.push(dest, ItemKind::Pdu, &format!("p{i}"));
    }
    store.push(dest, ItemKind::Edu, "e0");
    let first = start(store.clone(), transport.clone(), no_jitter());
    wait_until(Duration::from_secs(60), || transport.calls().len() >= 3).await;
    first.shutdown().await;
    let first_txn = transport.calls()[0].txn_id.clone();
    assert_eq!(store.remaining(dest), 4);

    // "Restart": a new sender over the same store, the peer is back.
    transport.set_down(dest, false);
    let attempts = transport.calls().len();
    let second = start(store.clone(), transport.clone(), no_jitter());
    wait_until(Duration::from_secs(5), || store.remaining(dest) == 0).await;
    let calls = transport.calls();
    assert_eq!(calls.len(), attempts + 1);
    let last = calls.last().unwrap();
    assert_eq!(last.txn_id, first_txn, "same batch, same transaction id");
    assert_eq!(last.pdus, vec!["p0", "p1", "p2"]);
    assert_eq!(last.edus, vec!["e0"]);
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_transaction_in_flight_and_order_kept_while_enqueuing() {
    let (store, transport) = setup();
    *transport.latency.lock().unwrap() = Duration::from_millis(300);
    let dest = server_name!("b.test");
    let other = server_name!("c.test");
    let sender = start(store.clone(), transport.clone(), no_jitter());
    for i in 0..200 {
        store.push(dest, ItemKind::Pdu, &format!("p{i}"));
        sender.notify(dest);
        if i % 3 == 0 {
            store.push(other, ItemKind::Pdu, &format!("o{i}"));
            sender.notify(other);
        }
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    wait_until(Duration::from_secs(60), || {
        store.remaining(dest) == 0 && store.remaining(other) == 0
    })
    .await;
    assert_eq!(transport.max_in_flight.load(Ordering::SeqCst), 1);
    let expected: Vec<String> = (0..200).map(|i| format!("p{i}")).collect();
    assert_eq!(transport.delivered_pdus(dest), expected);
    let expected: Vec<String> = (0..200).step_by(3).map(|i| format!("o{i}")).collect();
    assert_eq!(transport.delivered_pdus(other), expected);
    assert!(transport.calls_to(dest).len() < 200, "items were batched");
    wait_until(Duration::from_secs(1), || sender.active_destinations() == 0).await;
    sender.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rejected_batch_is_dropped_after_max_attempts() {
    let (store, transport) = setup();
    let dest = server_name!("b.test");
    let rejected = || SendError::Rejected {
        status: 400,
        message: "M_BAD_JSON".into(),
    };
    transport
        .script
        .lock()
        .unwrap()
        .extend([rejected(), rejected(), rejected()]);
    store.push(dest, ItemKind::Pdu, "poison");
    let config = SenderConfig {
        max_rejected_attempts: 3,
        ..no_jitter()
    };
    let sender = start(store.clone(), transport.clone(), config);
    wait_until(Duration::from_secs(30), || store.remaining(dest) == 0).await;
    assert_eq!(transport.calls().len(), 3);
    // The queue moves on.
    store.push(dest, ItemKind::Pdu, "next");
    sender.notify(dest);
    wait_until(Duration::from_secs(5), || store.remaining(dest) == 0).await;
    assert_eq!(transport.delivered_pdus(dest), vec!["next"]);
    sender.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rate_limit_honours_retry_after() {
    let (store, transport) = setup();
    let dest = server_name!("b.test");
    transport
        .script
        .lock()
        .unwrap()
        .push_back(SendError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        });
    store.push(dest, ItemKind::Pdu, "p0");
    let sender = start(store.clone(), transport.clone(), no_jitter());
    wait_until(Duration::from_secs(30), || store.remaining(dest) == 0).await;
    let calls = transport.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[1].at - calls[0].at).as_secs(), 7);
    sender.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_in_flight_transaction() {
    let (store, transport) = setup();
    *transport.latency.lock().unwrap() = Duration::from_secs(3600);
    let dest = server_name!("slow.test");
    store.push(dest, ItemKind::Pdu, "p0");
    let sender = start(store.clone(), transport.clone(), no_jitter());
    wait_until(Duration::from_secs(1), || sender.active_destinations() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    sender.shutdown().await;
    assert!(Instant::now() - t0 < Duration::from_secs(1));
    assert_eq!(store.remaining(dest), 1);
    assert_eq!(sender.active_destinations(), 0);
    sender.notify(dest); // ignored after shutdown
    assert_eq!(sender.active_destinations(), 0);
}

#[tokio::test(start_paused = true)]
async fn store_errors_are_retried_without_resending() {
    let (store, transport) = setup();
    let dest = server_name!("b.test");
    store.push(dest, ItemKind::Pdu, "p0");
    store.fail_pending.store(1, Ordering::SeqCst);
    store.fail_ack.store(2, Ordering::SeqCst);
    let sender = start(store.clone(), transport.clone(), no_jitter());
    sender.notify(dest);
    wait_until(Duration::from_secs(30), || store.remaining(dest) == 0).await;
    assert_eq!(
        transport.calls().len(),
        1,
        "delivered once; only the ack was retried"
    );
    sender.shutdown().await;
}

#[test]
fn transaction_ids_are_deterministic() {
    assert_eq!(
        transaction_id_for(&[1, 2, 3]),
        transaction_id_for(&[1, 2, 3])
    );
    assert_ne!(
        transaction_id_for(&[1, 2, 5]),
        transaction_id_for(&[1, 4, 5])
    );
    assert_ne!(transaction_id_for(&[1, 2]), transaction_id_for(&[1, 2, 3]));
}

#[test]
fn status_classification_and_request() {
    assert!(matches!(
        SendError::from_status(429, None, String::new()),
        SendError::RateLimited { .. }
    ));
    assert!(matches!(
        SendError::from_status(403, None, String::new()),
        SendError::Rejected { status: 403, .. }
    ));
    assert!(matches!(
        SendError::from_status(502, None, String::new()),
        SendError::Unreachable(_)
    ));
    let pdu = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
    let edu = RawValue::from_string(r#"{"edu_type":"m.typing","content":{}}"#.into()).unwrap();
    let txn = transaction_id_for(&[1]);
    let req = transaction_request(server_name!("a.test").to_owned(), &txn, &[pdu], &[edu]);
    assert_eq!(req.transaction_id, txn);
    assert_eq!(req.pdus.len(), 1);
    assert_eq!(req.edus.len(), 1);
}
