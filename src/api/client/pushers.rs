//! Pushers: `GET /pushers` and `POST /pushers/set`.

use axum::{Json, Router, extract::State};
use ruma::api::client::push::{get_pushers, set_pusher};
use serde_json::{Value, json};

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    push::pushers,
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_pushers::v3::Request, _, _>(r, list);
    route::<set_pusher::v3::Request, _, _>(r, set)
}

async fn list(State(s): State<AppState>, req: Ruma<get_pushers::v3::Request>) -> JsonResult {
    let user = req.user()?;
    Ok(Json(pushers::list(&s.db, &user.user_id).await?))
}

async fn set(State(s): State<AppState>, req: Ruma<set_pusher::v3::Request>) -> JsonResult {
    let user = req.user()?;
    let body = req.json.clone().unwrap_or(Value::Null);
    let change = pushers::parse_change(&body, user.user_id.as_str(), user.device_id.as_str())?;
    pushers::apply(&s, change, user.user_id.as_str()).await?;
    Ok(Json(json!({})))
}
