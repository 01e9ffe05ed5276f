//! Black-box tests for Ganglion, written against the Matrix client-server specification
//! (v1.19). Every test starts its own `ganglion` process (fresh temp dir, loopback port and
//! database) through the `complement-tests` harness and talks to it over HTTP.
//!
//! Each test function takes a [`Backend`] and is instantiated once per backend by
//! `backend_tests!`: `AREA::sqlite::NAME` always runs, `AREA::postgres::NAME` runs when
//! `GANGLION_TEST_POSTGRES` is set (and otherwise returns after printing that it was skipped).
//!
//! Run e.g. `cargo test --test complement`, or one area/backend with
//! `cargo test --test complement sync::sqlite::`.

use complement_tests::{Backend, Client, Server, ServerOptions};
use serde_json::json;

/// The server binary built by Cargo for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_ganglion");

/// Generates `sqlite::NAME` and `postgres::NAME` tokio tests for each `async fn NAME(Backend)`
/// in the invoking module.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(complement_tests::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    if !complement_tests::Backend::Postgres.enabled() {
                        eprintln!(
                            "SKIPPED on PostgreSQL: set GANGLION_TEST_POSTGRES (e.g. postgres://postgres@127.0.0.1:5432)"
                        );
                        return;
                    }
                    super::$name(complement_tests::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Starts a server with default options (open registration).
pub async fn start(backend: Backend) -> Server {
    Server::start(BIN, backend, ServerOptions::default()).await
}

/// Starts a server with the given options.
pub async fn start_with(backend: Backend, opts: ServerOptions) -> Server {
    Server::start(BIN, backend, opts).await
}

/// Registers alice and bob, has alice create a public room (`preset: public_chat`) and bob join
/// it. Returns `(alice, bob, room_id)`.
pub async fn public_room_with_two(server: &Server) -> (Client, Client, String) {
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "Shared"}))
        .await;
    bob.join(&room).await;
    (alice, bob, room)
}

/// A room alias on this server.
pub fn alias(server: &Server, local: &str) -> String {
    format!("#{local}:{}", server.server_name)
}

/// Everything the test modules use.
pub mod prelude {
    pub use super::{BIN, alias, public_room_with_two, start, start_with};
    pub use complement_tests::client::SYNC_DEADLINE;
    pub use complement_tests::crypto;
    pub use complement_tests::{
        Backend, Client, Resp, RespExt, Server, ServerOptions, V1, V3, arr, bodies, enc, ephemeral,
        has_event, next_batch, random_string, sync_state, timeline,
    };
    pub use reqwest::Method;
    pub use serde_json::{Value, json};
    pub use std::time::{Duration, Instant};
}

#[path = "complement/account.rs"]
mod account;
#[path = "complement/account_data.rs"]
mod account_data;
#[path = "complement/aliases.rs"]
mod aliases;
#[path = "complement/basics.rs"]
mod basics;
#[path = "complement/crash.rs"]
mod crash;
#[path = "complement/create_room.rs"]
mod create_room;
#[path = "complement/devices.rs"]
mod devices;
#[path = "complement/directory.rs"]
mod directory;
#[path = "complement/federation.rs"]
mod federation;
#[path = "complement/federation_bench.rs"]
mod federation_bench;
#[path = "complement/federation_limits.rs"]
mod federation_limits;
#[path = "complement/federation_queries.rs"]
mod federation_queries;
#[path = "complement/filters.rs"]
mod filters;
#[path = "complement/hierarchy.rs"]
mod hierarchy;
#[path = "complement/keys.rs"]
mod keys;
#[path = "complement/login.rs"]
mod login;
#[path = "complement/media.rs"]
mod media;
#[path = "complement/membership.rs"]
mod membership;
#[path = "complement/messages.rs"]
mod messages;
#[path = "complement/misc.rs"]
mod misc;
#[path = "complement/presence.rs"]
mod presence;
#[path = "complement/profile.rs"]
mod profile;
#[path = "complement/push_rules.rs"]
mod push_rules;
#[path = "complement/pushers.rs"]
mod pushers;
#[path = "complement/receipts.rs"]
mod receipts;
#[path = "complement/registration.rs"]
mod registration;
#[path = "complement/relations.rs"]
mod relations;
#[path = "complement/remote_media.rs"]
mod remote_media;
#[path = "complement/reports.rs"]
mod reports;
#[path = "complement/room_keys.rs"]
mod room_keys;
#[path = "complement/sdk.rs"]
mod sdk;
#[path = "complement/search.rs"]
mod search;
#[path = "complement/send.rs"]
mod send;
#[path = "complement/state.rs"]
mod state;
#[path = "complement/sync.rs"]
mod sync;
#[path = "complement/typing.rs"]
mod typing;
#[path = "complement/upgrades.rs"]
mod upgrades;
