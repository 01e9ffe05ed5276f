//! `GET /_matrix/federation/v1/query/directory` (our room aliases) and
//! `GET|POST /_matrix/federation/v1/publicRooms` (our public room directory).

use axum::{Json, Router, extract::State};
use ruma::{
    api::federation::{
        directory::{get_public_rooms, get_public_rooms_filtered},
        query::get_room_information,
    },
    directory::RoomNetwork,
};
use serde_json::json;

use crate::{
    api::{Ruma, client::JsonResult, route},
    error::Error,
    rooms::directory::{self, PublicRoomsQuery},
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_room_information::v1::Request, _, _>(r, alias);
    let r = route::<get_public_rooms::v1::Request, _, _>(r, public_rooms_get);
    route::<get_public_rooms_filtered::v1::Request, _, _>(r, public_rooms_post)
}

/// A local alias: its room and the servers in it (ours first). Aliases of other servers are
/// not answered for.
async fn alias(
    State(s): State<AppState>,
    req: Ruma<get_room_information::v1::Request>,
) -> JsonResult {
    req.origin()?;
    let alias = &req.body.room_alias;
    if alias.server_name() != s.config.server_name {
        return Err(Error::not_found("Room alias is not on this server"));
    }
    let (room_id, servers) = directory::resolve_alias(&s, alias).await?;
    Ok(Json(json!({"room_id": room_id, "servers": servers})))
}

fn limit_of(limit: Option<ruma::UInt>) -> Option<usize> {
    limit.map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
}

/// Third-party networks have no rooms here.
fn empty_directory() -> serde_json::Value {
    json!({"chunk": [], "total_room_count_estimate": 0})
}

async fn public_rooms_get(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms::v1::Request>,
) -> JsonResult {
    req.origin()?;
    if let RoomNetwork::ThirdParty(_) = req.body.room_network {
        return Ok(Json(empty_directory()));
    }
    let q = PublicRoomsQuery {
        limit: limit_of(req.body.limit),
        since: req.body.since.clone(),
        ..Default::default()
    };
    Ok(Json(directory::public_rooms(&s, q).await?))
}

async fn public_rooms_post(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms_filtered::v1::Request>,
) -> JsonResult {
    req.origin()?;
    let b = &req.body;
    if let RoomNetwork::ThirdParty(_) = b.room_network {
        return Ok(Json(empty_directory()));
    }
    let q = PublicRoomsQuery {
        limit: limit_of(b.limit),
        since: b.since.clone(),
        search_term: b.filter.generic_search_term.clone(),
        room_types: b
            .filter
            .room_types
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect(),
    };
    Ok(Json(directory::public_rooms(&s, q).await?))
}
