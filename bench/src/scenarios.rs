//! The benchmark scenarios. Set-up (registration, room creation, joins, filler events) is never
//! timed; only the measured phase is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::client::{Hs, User};
use crate::stats::{Summary, r3, summarize};

pub struct Ctx {
    pub hs: Arc<Hs>,
    pub prefix: String,
    pub shared_secret: Option<String>,
    pub setup_concurrency: usize,
}

const PASSWORD: &str = "bench-password-1";

impl Ctx {
    /// Registers `n` users `{prefix}_{tag}_{i}` with bounded concurrency; order preserved.
    pub async fn register_many(&self, tag: &str, n: usize) -> Result<Vec<User>> {
        let sem = Arc::new(Semaphore::new(self.setup_concurrency.max(1)));
        let mut set = JoinSet::new();
        for i in 0..n {
            let hs = self.hs.clone();
            let sem = sem.clone();
            let name = format!("{}_{tag}_{i}", self.prefix);
            let secret = self.shared_secret.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await?;
                let u = hs.register(&name, PASSWORD, secret.as_deref()).await?;
                Ok::<_, anyhow::Error>((i, u))
            });
        }
        let mut users: Vec<Option<User>> = vec![None; n];
        while let Some(r) = set.join_next().await {
            let (i, u) = r.context("register task panicked")??;
            users[i] = Some(u);
        }
        users
            .into_iter()
            .map(|u| u.ok_or_else(|| anyhow!("missing user")))
            .collect()
    }

    async fn join_all(&self, users: &[User], room_id: &str) -> Result<()> {
        let sem = Arc::new(Semaphore::new(self.setup_concurrency.max(1)));
        let mut set = JoinSet::new();
        for u in users {
            let u = u.clone();
            let hs = self.hs.clone();
            let sem = sem.clone();
            let room = room_id.to_string();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await?;
                hs.join(&u, &room).await
            });
        }
        while let Some(r) = set.join_next().await {
            r.context("join task panicked")??;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// 1. send: many users, one room, concurrent sends.

pub struct SendResult {
    pub users: usize,
    pub per_user: usize,
    pub sent: usize,
    pub errors: usize,
    pub wall: Duration,
    pub lat: Summary,
}

impl SendResult {
    pub fn events_per_s(&self) -> f64 {
        self.sent as f64 / self.wall.as_secs_f64()
    }
    pub fn to_json(&self) -> Value {
        json!({
            "users": self.users, "messages_per_user": self.per_user,
            "sent": self.sent, "errors": self.errors,
            "wall_s": r3(self.wall.as_secs_f64()),
            "events_per_s": r3(self.events_per_s()),
            "latency": self.lat.to_json(),
        })
    }
}

pub async fn send(ctx: &Ctx, n_users: usize, per_user: usize) -> Result<SendResult> {
    let users = ctx.register_many("send", n_users.max(1)).await?;
    let room = ctx.hs.create_room(&users[0], "bench send").await?;
    ctx.join_all(&users[1..], &room).await?;
    eprintln!(
        "[send] {} users joined {room}; sending {per_user} each",
        users.len()
    );

    let start = Instant::now();
    let mut set = JoinSet::new();
    for (ui, u) in users.iter().cloned().enumerate() {
        let hs = ctx.hs.clone();
        let room = room.clone();
        let prefix = ctx.prefix.clone();
        set.spawn(async move {
            let mut lats = Vec::with_capacity(per_user);
            let mut errors = 0usize;
            for i in 0..per_user {
                let txn = format!("{prefix}-s-{ui}-{i}");
                let t0 = Instant::now();
                match hs
                    .send_text(&u, &room, &txn, &format!("msg {i} from {ui}"))
                    .await
                {
                    Ok(_) => lats.push(t0.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("[send] user {ui}: {e:#}");
                        }
                    }
                }
            }
            (lats, errors)
        });
    }
    let mut lats = Vec::with_capacity(n_users * per_user);
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        let (l, e) = r.context("send task panicked")?;
        lats.extend(l);
        errors += e;
    }
    let wall = start.elapsed();
    Ok(SendResult {
        users: users.len(),
        per_user,
        sent: lats.len(),
        errors,
        wall,
        lat: summarize(&lats),
    })
}

// ---------------------------------------------------------------------------------------------
// 2. send→sync: one sender, one receiver long-polling /sync.

pub struct SendSyncResult {
    pub messages: usize,
    pub missed: usize,
    pub errors: usize,
    pub sync_requests: u64,
    pub lat: Summary,
}

impl SendSyncResult {
    pub fn to_json(&self) -> Value {
        json!({
            "messages": self.messages, "missed": self.missed, "errors": self.errors,
            "sync_requests": self.sync_requests,
            "latency": self.lat.to_json(),
        })
    }
}

/// Collects every timeline event id the receiver sees, with the instant its /sync returned.
fn record_events(body: &Value, at: Instant, seen: &Mutex<HashMap<String, Instant>>) -> usize {
    let mut n = 0;
    let Some(rooms) = body
        .get("rooms")
        .and_then(|r| r.get("join"))
        .and_then(Value::as_object)
    else {
        return 0;
    };
    let mut seen = seen.lock().expect("poisoned");
    for room in rooms.values() {
        let events = room
            .get("timeline")
            .and_then(|t| t.get("events"))
            .and_then(Value::as_array);
        for ev in events.into_iter().flatten() {
            if let Some(id) = ev.get("event_id").and_then(Value::as_str) {
                seen.entry(id.to_string()).or_insert(at);
                n += 1;
            }
        }
    }
    n
}

pub async fn send_sync(
    ctx: &Ctx,
    messages: usize,
    wait_timeout: Duration,
) -> Result<SendSyncResult> {
    let users = ctx.register_many("sendsync", 2).await?;
    let (sender, receiver) = (users[0].clone(), users[1].clone());
    let room = ctx.hs.create_room(&sender, "bench send-sync").await?;
    ctx.hs.join(&receiver, &room).await?;
    eprintln!(
        "[send-sync] {} -> {} in {room}; {messages} messages",
        sender.user_id, receiver.user_id
    );

    // Initial sync for the receiver, then long-poll from its next_batch.
    let first = ctx.hs.sync(&receiver, None, 0).await?;
    let mut since = first.body["next_batch"]
        .as_str()
        .ok_or_else(|| anyhow!("initial sync: no next_batch"))?
        .to_string();

    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (tx, mut rx) = watch::channel(0u64);
    let hs = ctx.hs.clone();
    let seen2 = seen.clone();
    let recv_user = receiver.clone();
    // Bounded: at most this many /sync calls (each bounded by its HTTP timeout); aborted at the end.
    let max_polls = (messages as u64 + 100) * 20;
    let poller = tokio::spawn(async move {
        let mut polls = 0u64;
        let mut failures = 0u32;
        while polls < max_polls {
            polls += 1;
            match hs.sync(&recv_user, Some(&since), 30_000).await {
                Ok(r) => {
                    let at = Instant::now();
                    record_events(&r.body, at, &seen2);
                    tx.send_modify(|v| *v += 1);
                    if let Some(nb) = r.body["next_batch"].as_str() {
                        since = nb.to_string();
                    }
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("[send-sync] receiver /sync failed: {e:#}");
                    if failures > 20 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        polls
    });
    // Let the first long-poll get to the server before the first send.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut lats = Vec::with_capacity(messages);
    let (mut missed, mut errors) = (0usize, 0usize);
    for i in 0..messages {
        let txn = format!("{}-ss-{i}", ctx.prefix);
        let t0 = Instant::now();
        let event_id = match ctx
            .hs
            .send_text(&sender, &room, &txn, &format!("ping {i}"))
            .await
        {
            Ok(id) => id,
            Err(e) => {
                errors += 1;
                eprintln!("[send-sync] send {i}: {e:#}");
                continue;
            }
        };
        let deadline = tokio::time::Instant::now() + wait_timeout;
        let got = loop {
            rx.borrow_and_update();
            if let Some(at) = seen.lock().expect("poisoned").get(&event_id) {
                break Some(*at);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => break None, // poller ended, or timed out
            }
        };
        match got {
            Some(at) => lats.push(at.saturating_duration_since(t0)),
            None => {
                missed += 1;
                eprintln!(
                    "[send-sync] {event_id} not seen by the receiver within {wait_timeout:?}"
                );
                if poller.is_finished() {
                    break;
                }
            }
        }
    }
    poller.abort();
    let sync_requests = *rx.borrow();
    Ok(SendSyncResult {
        messages,
        missed,
        errors,
        sync_requests,
        lat: summarize(&lats),
    })
}

// ---------------------------------------------------------------------------------------------
// 3. initial sync: one user in many rooms with many events, full /sync without since/filter.

pub struct InitialSyncResult {
    pub rooms: usize,
    pub events_per_room: usize,
    pub setup: Duration,
    pub first_ms: f64,
    pub bytes: usize,
    pub lat: Summary,
}

impl InitialSyncResult {
    pub fn to_json(&self) -> Value {
        json!({
            "rooms": self.rooms, "events_per_room": self.events_per_room,
            "setup_s": r3(self.setup.as_secs_f64()),
            "first_ms": r3(self.first_ms),
            "response_bytes": self.bytes,
            "latency": self.lat.to_json(),
        })
    }
}

pub async fn initial_sync(
    ctx: &Ctx,
    rooms: usize,
    events_per_room: usize,
    repeats: usize,
    other_sender: bool,
) -> Result<InitialSyncResult> {
    let setup_start = Instant::now();
    let mut users = ctx.register_many("isync", 2).await?;
    let user = users.remove(0);
    let other = users.remove(0);
    let sem = Arc::new(Semaphore::new(ctx.setup_concurrency.max(1)));
    let mut set = JoinSet::new();
    for r in 0..rooms {
        let hs = ctx.hs.clone();
        let sem = sem.clone();
        let user = user.clone();
        let sender = if other_sender {
            other.clone()
        } else {
            user.clone()
        };
        let prefix = ctx.prefix.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let room = hs.create_room(&user, &format!("bench isync {r}")).await?;
            if other_sender {
                hs.join(&sender, &room).await?;
            }
            for i in 0..events_per_room {
                let txn = format!("{prefix}-is-{r}-{i}");
                hs.send_text(&sender, &room, &txn, &format!("filler {i} in room {r}"))
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("set-up task panicked")??;
    }
    let setup = setup_start.elapsed();
    eprintln!(
        "[initial-sync] set up {rooms} rooms x {events_per_room} events in {:.1}s",
        setup.as_secs_f64()
    );

    let mut lats = Vec::with_capacity(repeats);
    let mut sizes = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        let r = ctx.hs.sync(&user, None, 0).await?;
        lats.push(t0.elapsed());
        sizes.push(r.bytes);
        let joined = r.body["rooms"]["join"].as_object().map_or(0, |m| m.len());
        if joined != rooms {
            eprintln!("[initial-sync] warning: sync shows {joined} joined rooms, expected {rooms}");
        }
    }
    sizes.sort_unstable();
    Ok(InitialSyncResult {
        rooms,
        events_per_room,
        setup,
        first_ms: lats[0].as_secs_f64() * 1000.0,
        bytes: sizes[sizes.len() / 2],
        lat: summarize(&lats),
    })
}
