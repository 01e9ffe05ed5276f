//! `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`: the rooms of a space the caller may see
//! (see `rooms::hierarchy::for_user`), and `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`
//! (`rooms::hierarchy::room_summary`).

use axum::{Json, Router, extract::State};
use ruma::api::client::{room::get_summary, space::get_hierarchy};

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    rooms::hierarchy::{self, ClientQuery},
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_summary::v1::Request, _, _>(r, summary);
    route::<get_hierarchy::v1::Request, _, _>(r, get)
}

async fn summary(State(s): State<AppState>, req: Ruma<get_summary::v1::Request>) -> JsonResult {
    let b = &req.body;
    let (room_id, mut via) =
        super::membership::resolve_room_and_servers(&s, &b.room_id_or_alias).await?;
    via.extend(b.via.iter().cloned());
    let via: Vec<String> = via.iter().map(|v| v.to_string()).collect();
    let user = req.auth.as_ref().map(|a| a.user_id.as_str());
    Ok(Json(
        hierarchy::room_summary(&s, &room_id, &via, user).await?,
    ))
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
