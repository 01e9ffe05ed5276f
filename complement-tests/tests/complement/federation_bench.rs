//! Federation numbers for the operator's notes, not a pass/fail test: how long a Ganglion node
//! and a second Synapse take to join a room on Synapse with 500 members and about 1,000 events,
//! and how long a message takes to reach the other node's `/sync` (p50/p99, both directions).
//!
//! Ignored by default (it takes minutes and needs Synapse). Run it with:
//!
//! ```sh
//! GANGLION_TEST_SYNAPSE=1 cargo test --release --test complement \
//!     federation_bench -- --ignored --nocapture
//! ```
//!
//! Timings are printed, never asserted.

use complement_tests::{FederationOptions, synapse::Synapse};
use futures::StreamExt;

use crate::prelude::*;

const MEMBERS: usize = 500;
const MESSAGES: usize = 500;
const LATENCY_SAMPLES: usize = 100;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sends `n` messages from `from`, one at a time, and measures each until `to`'s long-poll
/// /sync returns it.
async fn latency(from: &Client, to: &Client, room: &str, n: usize) -> Vec<Duration> {
    let mut since = to.sync_token().await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!("latency {i} {}", random_string(6));
        let started = Instant::now();
        from.send_text(room, &body).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        'wait: loop {
            assert!(Instant::now() < deadline, "message {i} never arrived");
            let sync = to.sync(Some(&since), 30_000).await;
            since = next_batch(&sync);
            if bodies(&timeline(&sync, room)).contains(&body) {
                out.push(started.elapsed());
                break 'wait;
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: minutes long, needs Synapse; run with --ignored"]
async fn federation_bench() {
    if !complement_tests::synapse::enabled_or_skip() {
        return;
    }
    let (resident, other, g) = tokio::join!(
        Synapse::start(),
        Synapse::start(),
        start_with(
            Backend::Sqlite,
            ServerOptions {
                federation: Some(FederationOptions::default()),
                ..Default::default()
            }
        )
    );
    let owner = resident.register("owner").await;
    let room = owner
        .create_room(json!({"preset": "public_chat", "room_alias_name": "big"}))
        .await;
    let set_up = Instant::now();
    let joined = futures::stream::iter(1..MEMBERS)
        .map(|i| {
            let resident = &resident;
            let room = room.clone();
            async move {
                let c = resident.register(&format!("member{i}")).await;
                c.join(&room).await;
            }
        })
        .buffer_unordered(16)
        .count()
        .await;
    for i in 0..MESSAGES {
        owner.send_text(&room, &format!("history {i}")).await;
    }
    println!(
        "set-up: {} members, {} messages on Synapse in {:?}",
        joined + 1,
        MESSAGES,
        set_up.elapsed()
    );
    let alias = format!("#big:{}", resident.server_name);

    let sam = other.register("sam").await;
    let started = Instant::now();
    sam.join(&alias).await;
    let synapse_join = started.elapsed();

    let gina = g.register("gina").await;
    let started = Instant::now();
    gina.join(&alias).await;
    let ganglion_join = started.elapsed();
    let members = gina
        .get(&format!("{V3}/rooms/{}/joined_members", enc(&room)))
        .await
        .ok();
    println!(
        "join of a {}-member room: Synapse -> Synapse {:?} (partial state), Synapse -> Ganglion {:?} \
         (full state: {} members known)",
        MEMBERS,
        synapse_join,
        ganglion_join,
        members["joined"].as_object().map(|m| m.len()).unwrap_or(0)
    );

    // The same between two Ganglion nodes.
    let h = start_with(
        Backend::Sqlite,
        ServerOptions {
            federation: Some(FederationOptions::default()),
            ..Default::default()
        },
    )
    .await;
    let hal = h.register("hal").await;
    let g_room = gina
        .create_room(json!({"preset": "public_chat", "room_alias_name": "pair"}))
        .await;
    hal.join(&format!("#pair:{}", g.server_name)).await;
    let g_to_h = latency(&gina, &hal, &g_room, LATENCY_SAMPLES).await;
    let h_to_g = latency(&hal, &gina, &g_room, LATENCY_SAMPLES).await;
    println!(
        "message -> other node's /sync over {LATENCY_SAMPLES} messages, Ganglion <-> Ganglion: \
         p50 {:?} p99 {:?} one way, p50 {:?} p99 {:?} the other",
        pct(&g_to_h, 0.5),
        pct(&g_to_h, 0.99),
        pct(&h_to_g, 0.5),
        pct(&h_to_g, 0.99)
    );

    let to_g = latency(&owner, &gina, &room, LATENCY_SAMPLES).await;
    let to_s = latency(&gina, &owner, &room, LATENCY_SAMPLES).await;
    println!(
        "message -> other node's /sync over {LATENCY_SAMPLES} messages: Synapse -> Ganglion p50 {:?} \
         p99 {:?}; Ganglion -> Synapse p50 {:?} p99 {:?}",
        pct(&to_g, 0.5),
        pct(&to_g, 0.99),
        pct(&to_s, 0.5),
        pct(&to_s, 0.99)
    );
}
