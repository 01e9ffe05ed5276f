//! `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: the rooms of a space the caller may see
//! (see `rooms::hierarchy::for_user`).

use axum::{Json, Router, extract::State};
use ruma::api::client::space::get_hierarchy;

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    rooms::hierarchy::{self, ClientQuery},
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route::<get_hierarchy::v1::Request, _, _>(r, get)
}

async fn get(State(s): State<AppState>, req: Ruma<get_hierarchy::v1::Request>) -> JsonResult {
    let user = req.user()?;
    let b = &req.body;
    let query = ClientQuery {
        from: b.from.clone(),
        limit: b.limit.map(u64::from),
        max_depth: b.max_depth.map(u64::from),
        suggested_only: b.suggested_only,
    };
    Ok(Json(
        hierarchy::for_user(&s, &b.room_id, &user.user_id, &query).await?,
    ))
}
