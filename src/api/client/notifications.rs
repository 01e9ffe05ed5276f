//! `GET /notifications`.

use axum::Router;
use axum::{Json, extract::State};
use ruma::api::client::push::get_notifications;

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    push::notifications,
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route::<get_notifications::v3::Request, _, _>(r, list)
}

async fn list(State(s): State<AppState>, req: Ruma<get_notifications::v3::Request>) -> JsonResult {
    let user = req.user()?;
    let query = notifications::Query {
        from: req.body.from.as_deref(),
        limit: req.body.limit.map(u64::from),
        only: req.body.only.as_deref(),
    };
    Ok(Json(notifications::page(&s, &user.user_id, query).await?))
}
