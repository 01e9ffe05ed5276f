//! Client-server API handlers, one file per spec area. Handlers are thin: they parse (through
//! ruma), check the caller, call domain functions and shape the JSON response.

pub mod account;
pub mod discovery;
pub mod membership;
pub mod rooms;
pub mod sync;

use axum::{Json, Router};
use serde_json::Value;

use crate::services::AppState;

pub type JsonResult = crate::error::Result<Json<Value>>;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = discovery::routes(r);
    let r = account::routes(r);
    let r = rooms::routes(r);
    let r = membership::routes(r);
    sync::routes(r)
}
