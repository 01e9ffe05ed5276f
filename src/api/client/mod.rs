//! Client-server API handlers, one file per spec area. Handlers are thin: they parse (through
//! ruma), check the caller, call domain functions and shape the JSON response.

pub mod account;
pub mod account_data;
pub mod devices;
pub mod directory;
pub mod discovery;
pub mod hierarchy;
pub mod keys;
pub mod media;
pub mod membership;
pub mod notifications;
pub mod openid;
pub mod presence;
pub mod profile;
pub mod push_rules;
pub mod pushers;
pub mod receipts;
pub mod relations;
pub mod reports;
pub mod room_keys;
pub mod rooms;
pub mod search;
pub mod sync;
pub mod typing;

use axum::{Json, Router};
use serde_json::Value;

use crate::services::AppState;

pub type JsonResult = crate::error::Result<Json<Value>>;

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = discovery::routes(r);
    let r = account::routes(r);
    let r = account_data::routes(r);
    let r = devices::routes(r);
    let r = directory::routes(r);
    let r = hierarchy::routes(r);
    let r = keys::routes(r);
    let r = media::routes(r);
    let r = presence::routes(r);
    let r = profile::routes(r);
    let r = push_rules::routes(r);
    let r = pushers::routes(r);
    let r = receipts::routes(r);
    let r = relations::routes(r);
    let r = reports::routes(r);
    let r = room_keys::routes(r);
    let r = rooms::routes(r);
    let r = search::routes(r);
    let r = membership::routes(r);
    let r = notifications::routes(r);
    let r = openid::routes(r);
    let r = typing::routes(r);
    sync::routes(r)
}
