//! Room aliases, the public room directory and the user directory.

use axum::{Json, Router, extract::State};
use ruma::{
    ServerName,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{
            get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
        },
        room::{Visibility, aliases},
        user_directory::search_users,
    },
    directory::{Filter, RoomNetwork},
};
use serde_json::{Map, Value, json};

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    error::{Error, Result},
    rooms::directory::{self, PublicRoomsQuery},
    services::{AppState, Services},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<create_alias::v3::Request, _, _>(r, put_alias);
    let r = route::<get_alias::v3::Request, _, _>(r, get_alias);
    let r = route::<delete_alias::v3::Request, _, _>(r, delete_alias);
    let r = route::<aliases::v3::Request, _, _>(r, room_aliases);
    let r = route::<get_room_visibility::v3::Request, _, _>(r, get_visibility);
    let r = route::<set_room_visibility::v3::Request, _, _>(r, set_visibility);
    let r = route::<get_public_rooms::v3::Request, _, _>(r, public_rooms_get);
    let r = route::<get_public_rooms_filtered::v3::Request, _, _>(r, public_rooms_post);
    route::<search_users::v3::Request, _, _>(r, user_search)
}

async fn put_alias(State(s): State<AppState>, req: Ruma<create_alias::v3::Request>) -> JsonResult {
    let a = req.user()?;
    directory::create_alias(&s, &a.user_id, &req.body.room_alias, &req.body.room_id).await?;
    Ok(Json(json!({})))
}

async fn get_alias(State(s): State<AppState>, req: Ruma<get_alias::v3::Request>) -> JsonResult {
    let (room_id, servers) = directory::resolve_alias(&s, &req.body.room_alias).await?;
    Ok(Json(json!({"room_id": room_id, "servers": servers})))
}

async fn delete_alias(
    State(s): State<AppState>,
    req: Ruma<delete_alias::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    directory::delete_alias(&s, &a.user_id, &req.body.room_alias).await?;
    Ok(Json(json!({})))
}

async fn room_aliases(State(s): State<AppState>, req: Ruma<aliases::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let list = directory::room_aliases(&s, &a.user_id, &req.body.room_id).await?;
    Ok(Json(json!({"aliases": list})))
}

async fn get_visibility(
    State(s): State<AppState>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> JsonResult {
    let public = directory::is_published(&s, &req.body.room_id).await?;
    Ok(Json(
        json!({"visibility": if public { "public" } else { "private" }}),
    ))
}

async fn set_visibility(
    State(s): State<AppState>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let public = match &req.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        other => {
            return Err(Error::invalid_param(format!(
                "Unknown visibility {}",
                other.as_str()
            )));
        }
    };
    directory::set_published(&s, &a.user_id, &req.body.room_id, public).await?;
    Ok(Json(json!({})))
}

/// Another server's directory is asked for over federation: returns that server, or `None`
/// for ours.
fn check_server<'a>(
    s: &Services,
    server: Option<&'a ServerName>,
) -> Result<Option<&'a ServerName>> {
    match server {
        Some(name) if name != s.config.server_name => {
            if s.federation.is_none() {
                return Err(Error::invalid_param(
                    "Only this server's room directory is available",
                ));
            }
            Ok(Some(name))
        }
        _ => Ok(None),
    }
}

fn limit_of(limit: Option<ruma::UInt>) -> Option<usize> {
    limit.map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
}

/// Third-party networks have no rooms here.
fn empty_directory() -> Value {
    json!({"chunk": [], "total_room_count_estimate": 0})
}

async fn public_rooms_get(
    State(s): State<AppState>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> JsonResult {
    if let Some(server) = check_server(&s, req.body.server.as_deref())? {
        let b = &req.body;
        return Ok(Json(
            crate::federation::query::public_rooms(
                &s,
                server,
                b.limit,
                b.since.clone(),
                None,
                Vec::new(),
                RoomNetwork::Matrix,
            )
            .await?,
        ));
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
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> JsonResult {
    if let Some(server) = check_server(&s, req.body.server.as_deref())? {
        let b = &req.body;
        return Ok(Json(
            crate::federation::query::public_rooms(
                &s,
                server,
                b.limit,
                b.since.clone(),
                b.filter.generic_search_term.clone(),
                b.filter.room_types.clone(),
                b.room_network.clone(),
            )
            .await?,
        ));
    }
    if let RoomNetwork::ThirdParty(_) = req.body.room_network {
        return Ok(Json(empty_directory()));
    }
    let Filter {
        generic_search_term,
        room_types,
        ..
    } = req.body.filter.clone();
    let q = PublicRoomsQuery {
        limit: limit_of(req.body.limit),
        since: req.body.since.clone(),
        search_term: generic_search_term,
        room_types: room_types
            .iter()
            .map(|t| t.as_str().map(str::to_owned))
            .collect(),
    };
    Ok(Json(directory::public_rooms(&s, q).await?))
}

async fn user_search(
    State(s): State<AppState>,
    req: Ruma<search_users::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let limit = usize::try_from(u64::from(req.body.limit)).unwrap_or(usize::MAX);
    let (hits, limited) =
        directory::search_users(&s, &a.user_id, &req.body.search_term, limit).await?;
    let results: Vec<Value> = hits
        .into_iter()
        .map(|u| {
            let mut m = Map::new();
            m.insert("user_id".into(), json!(u.user_id));
            if let Some(d) = u.displayname {
                m.insert("display_name".into(), json!(d));
            }
            if let Some(url) = u.avatar_url {
                m.insert("avatar_url".into(), json!(url));
            }
            Value::Object(m)
        })
        .collect();
    Ok(Json(json!({"results": results, "limited": limited})))
}
