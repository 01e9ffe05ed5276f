//! Presence: `GET/PUT /presence/{userId}/status`.

use axum::{Json, Router, extract::State};
use ruma::api::client::presence::{get_presence, set_presence};
use serde_json::json;

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    error::Error,
    services::AppState,
    users::presence,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_presence::v3::Request, _, _>(r, get);
    route::<set_presence::v3::Request, _, _>(r, set)
}

async fn get(State(s): State<AppState>, req: Ruma<get_presence::v3::Request>) -> JsonResult {
    let a = req.user()?;
    Ok(Json(
        presence::get(&s, &a.user_id, &req.body.user_id).await?,
    ))
}

async fn set(State(s): State<AppState>, req: Ruma<set_presence::v3::Request>) -> JsonResult {
    let a = req.user()?;
    if a.user_id != req.body.user_id {
        return Err(Error::forbidden("You may only set your own presence"));
    }
    presence::set(
        &s,
        &a.user_id,
        req.body.presence.as_str(),
        req.body.status_msg.as_deref(),
    )
    .await?;
    Ok(Json(json!({})))
}
