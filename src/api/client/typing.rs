//! Typing notifications: `PUT /rooms/{roomId}/typing/{userId}`.

use axum::{Json, Router, extract::State};
use ruma::api::client::typing::create_typing_event::{self, v3::Typing};
use serde_json::json;

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    error::Error,
    services::AppState,
    sync::typing::set_typing,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route::<create_typing_event::v3::Request, _, _>(r, typing)
}

async fn typing(
    State(s): State<AppState>,
    req: Ruma<create_typing_event::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    if a.user_id != req.body.user_id {
        return Err(Error::forbidden("You may only set your own typing state"));
    }
    let timeout = match req.body.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    set_typing(&s, req.body.room_id.as_str(), a.user_id.as_str(), timeout).await?;
    Ok(Json(json!({})))
}
