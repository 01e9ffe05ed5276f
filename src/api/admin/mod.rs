//! The Synapse-compatible admin API (`/_synapse/admin/…`) that operators' tools expect.

pub mod register;

use axum::Router;

use crate::services::AppState;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    register::routes(r)
}
