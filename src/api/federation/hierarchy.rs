//! `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space and its children, for another
//! server (see `rooms::hierarchy` for what it may see).

use axum::{Json, Router, extract::State};
use ruma::api::federation::space::get_hierarchy;

use crate::{
    api::{Ruma, client::JsonResult, route},
    rooms::hierarchy,
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route::<get_hierarchy::v1::Request, _, _>(r, get)
}

async fn get(State(s): State<AppState>, req: Ruma<get_hierarchy::v1::Request>) -> JsonResult {
    let origin = req.origin()?;
    super::check_server_acl(&s, &req.body.room_id, origin).await?;
    Ok(Json(
        hierarchy::for_server(&s, &req.body.room_id, origin, req.body.suggested_only).await?,
    ))
}
