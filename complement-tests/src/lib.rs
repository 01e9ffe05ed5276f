//! Black-box test harness for Ganglion.
//!
//! The harness spawns real `ganglion` processes (one per test, each with its own temporary
//! directory, loopback port and database) and talks to them over plain HTTP with a small Matrix
//! client. Nothing here links against the server: everything goes through the client-server API
//! as described by the Matrix specification (v1.19).
//!
//! * [`Server`] starts, restarts, SIGKILLs and cleans up a server process.
//! * [`Client`] is a thin Matrix client (registration with user-interactive auth, login, rooms,
//!   messages, `/sync` with bounded wait-for-condition helpers).
//! * [`crypto`] holds the canonical-JSON and ed25519 helpers used by the end-to-end key tests,
//!   and federation signing (server keys, X-Matrix headers, PDU hashes, event ids).
//! * [`tls`] makes a throwaway CA and per-node leaf certificates for federation tests;
//!   [`ServerOptions::federation`] starts a node as `127.0.0.x:FEDPORT` with TLS federation.
//! * [`synapse`] runs Synapse (from PyPI, in `target/synapse-venv`) as a federation peer.
//! * [`fake`] is a minimal in-test homeserver (serves its keys, signs requests and PDUs) for
//!   sending forged or hand-made federation traffic.
//! * [`RespExt`] turns `(status, json)` pairs into assertions with useful failure messages.

pub mod client;
pub mod crypto;
pub mod fake;
pub mod push_gateway;
pub mod server;
pub mod synapse;
pub mod tls;

pub use client::{Client, Resp, RespExt, V1, V3, next_batch};
pub use fake::FakeServer;
pub use push_gateway::FakePushGateway;
pub use server::{
    Backend, FederationOptions, Server, ServerOptions, backends, free_port_on, next_loopback_ip,
};
pub use synapse::Synapse;
pub use tls::TestCa;

use serde_json::Value;

/// Percent-encodes one path segment (or query value): everything except RFC 3986 unreserved
/// characters is encoded, so room ids, event ids, aliases and user ids are safe in a URL.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Returns `v` as an array (cloned), or an empty vector when it is missing or not an array.
pub fn arr(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// The events of a `/sync` response's joined room timeline.
pub fn timeline(sync: &Value, room_id: &str) -> Vec<Value> {
    arr(&sync["rooms"]["join"][room_id]["timeline"]["events"])
}

/// The state events of a `/sync` response's joined room.
pub fn sync_state(sync: &Value, room_id: &str) -> Vec<Value> {
    arr(&sync["rooms"]["join"][room_id]["state"]["events"])
}

/// The ephemeral events of a `/sync` response's joined room.
pub fn ephemeral(sync: &Value, room_id: &str) -> Vec<Value> {
    arr(&sync["rooms"]["join"][room_id]["ephemeral"]["events"])
}

/// Whether a list of events contains one with this `event_id`.
pub fn has_event(events: &[Value], event_id: &str) -> bool {
    events.iter().any(|e| e["event_id"] == event_id)
}

/// The `content.body` strings of the given events, in order (events without a body skipped).
pub fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// A random lowercase alphanumeric string, for transaction ids and unique names.
pub fn random_string(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Installs the process-wide rustls crypto provider (ring) once. reqwest is built with
/// `rustls-no-provider`, so a provider must exist before the first client is built.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another crate in the process may already have installed one; that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
