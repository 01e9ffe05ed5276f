//! `POST /search`.

use axum::{Json, Router, extract::State};
use ruma::api::client::search::search_events;
use serde_json::Value;

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    rooms::search,
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route::<search_events::v3::Request, _, _>(r, run)
}

async fn run(State(s): State<AppState>, req: Ruma<search_events::v3::Request>) -> JsonResult {
    let user = req.user()?;
    let body = req.json.clone().unwrap_or(Value::Null);
    let next_batch = req.body.next_batch.as_deref();
    Ok(Json(
        search::search(&s, user.user_id.as_str(), &body, next_batch).await?,
    ))
}
