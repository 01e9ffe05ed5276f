//! Reporting content: `POST /rooms/{roomId}/report/{eventId}`, `POST /rooms/{roomId}/report`
//! and `POST /users/{userId}/report`.

use axum::{Json, Router, extract::State};
use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};
use serde_json::{Value, json};

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    error::Error,
    reports,
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<report_content::v3::Request, _, _>(r, report_event);
    let r = route::<report_room::v3::Request, _, _>(r, report_room);
    route::<report_user::v3::Request, _, _>(r, report_user)
}

async fn report_event(
    State(s): State<AppState>,
    req: Ruma<report_content::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    // `score` left the spec's request body, but clients still send it.
    let score = match req.json.as_ref().and_then(|j| j.get("score")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| Error::bad_json("score must be an integer"))?,
        ),
    };
    reports::report_event(
        &s,
        &a.user_id,
        &req.body.room_id,
        &req.body.event_id,
        req.body.reason.as_deref(),
        score,
    )
    .await?;
    Ok(Json(json!({})))
}

async fn report_room(State(s): State<AppState>, req: Ruma<report_room::v3::Request>) -> JsonResult {
    let a = req.user()?;
    reports::report_room(&s, &a.user_id, &req.body.room_id, Some(&req.body.reason)).await?;
    Ok(Json(json!({})))
}

async fn report_user(State(s): State<AppState>, req: Ruma<report_user::v3::Request>) -> JsonResult {
    let a = req.user()?;
    reports::report_user(&s, &a.user_id, &req.body.user_id, Some(&req.body.reason)).await?;
    Ok(Json(json!({})))
}
