//! Membership: join (by id or alias), knock, invite, leave, forget, kick, ban, unban, member
//! lists.

use axum::{Json, Router, extract::State};
use ruma::{
    OwnedRoomId, RoomOrAliasId,
    api::client::knock::knock_room,
    api::client::membership::{
        ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
        join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room, unban_user,
    },
};
use serde_json::{Map, Value, json};

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    error::{Error, Result},
    rooms::{membership, visibility::can_read_room},
    services::{AppState, Services},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<join_room_by_id::v3::Request, _, _>(r, join_by_id);
    let r = route::<join_room_by_id_or_alias::v3::Request, _, _>(r, join_by_id_or_alias);
    let r = route::<invite_user::v3::Request, _, _>(r, invite);
    let r = route::<leave_room::v3::Request, _, _>(r, leave);
    let r = route::<forget_room::v3::Request, _, _>(r, forget);
    let r = route::<knock_room::v3::Request, _, _>(r, knock);
    let r = route::<kick_user::v3::Request, _, _>(r, kick);
    let r = route::<ban_user::v3::Request, _, _>(r, ban);
    let r = route::<unban_user::v3::Request, _, _>(r, unban);
    let r = route::<joined_rooms::v3::Request, _, _>(r, joined_rooms);
    let r = route::<get_member_events::v3::Request, _, _>(r, members);
    route::<joined_members::v3::Request, _, _>(r, joined_members)
}

pub async fn resolve_room(s: &Services, id_or_alias: &RoomOrAliasId) -> Result<OwnedRoomId> {
    Ok(resolve_room_and_servers(s, id_or_alias).await?.0)
}

/// A room id, or an alias resolved here or (for another server's alias) by its server, with the
/// servers that alias names as able to help joining.
pub async fn resolve_room_and_servers(
    s: &Services,
    id_or_alias: &RoomOrAliasId,
) -> Result<(OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    if id_or_alias.is_room_id() {
        let id = OwnedRoomId::try_from(id_or_alias.as_str())
            .map_err(|_| Error::invalid_param("Invalid room id"))?;
        return Ok((id, Vec::new()));
    }
    let alias = ruma::OwnedRoomAliasId::try_from(id_or_alias.as_str())
        .map_err(|_| Error::invalid_param("Invalid room alias"))?;
    if alias.server_name() != s.config.server_name && s.federation.is_some() {
        return crate::federation::remote::query_alias(s, &alias).await;
    }
    let (room, _) =
        s.db.resolve_alias(id_or_alias.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Room alias not found"))?;
    Ok((
        OwnedRoomId::try_from(room).map_err(Error::internal)?,
        Vec::new(),
    ))
}

fn reason(json: &Option<Value>) -> Option<String> {
    json.as_ref()?.get("reason")?.as_str().map(str::to_owned)
}

async fn join_by_id(
    State(s): State<AppState>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    membership::join(
        &s,
        &req.body.room_id,
        &a.user_id,
        reason(&req.json).as_deref(),
    )
    .await?;
    Ok(Json(json!({"room_id": req.body.room_id})))
}

async fn join_by_id_or_alias(
    State(s): State<AppState>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let (room_id, mut servers) = resolve_room_and_servers(&s, &req.body.room_id_or_alias).await?;
    servers.extend(req.body.via.iter().cloned());
    membership::join_via(
        &s,
        &room_id,
        &a.user_id,
        reason(&req.json).as_deref(),
        &servers,
    )
    .await?;
    Ok(Json(json!({"room_id": room_id})))
}

async fn knock(State(s): State<AppState>, req: Ruma<knock_room::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let (room_id, mut servers) = resolve_room_and_servers(&s, &req.body.room_id_or_alias).await?;
    servers.extend(req.body.via.iter().cloned());
    membership::knock(
        &s,
        &room_id,
        &a.user_id,
        req.body.reason.as_deref(),
        &servers,
    )
    .await?;
    Ok(Json(json!({"room_id": room_id})))
}

async fn invite(State(s): State<AppState>, req: Ruma<invite_user::v3::Request>) -> JsonResult {
    let a = req.user()?;
    let json = req.json.clone().unwrap_or(Value::Null);
    let target = json
        .get("user_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_json("Third-party invites are not supported"))?;
    let target =
        ruma::OwnedUserId::try_from(target).map_err(|_| Error::invalid_param("Invalid user_id"))?;
    crate::api::client::rooms::require_joined(&s, req.body.room_id.as_str(), a.user_id.as_str())
        .await?;
    let is_direct = json
        .get("is_direct")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    membership::invite(
        &s,
        &req.body.room_id,
        &a.user_id,
        &target,
        reason(&req.json).as_deref(),
        is_direct,
    )
    .await?;
    Ok(Json(json!({})))
}

async fn leave(State(s): State<AppState>, req: Ruma<leave_room::v3::Request>) -> JsonResult {
    let a = req.user()?;
    membership::set_membership(
        &s,
        &req.body.room_id,
        &a.user_id,
        &a.user_id,
        "leave",
        reason(&req.json).as_deref(),
    )
    .await?;
    Ok(Json(json!({})))
}

async fn forget(State(s): State<AppState>, req: Ruma<forget_room::v3::Request>) -> JsonResult {
    let a = req.user()?;
    match s
        .db
        .membership(req.body.room_id.as_str(), a.user_id.as_str())
        .await?
    {
        Some(m) if m.membership == "join" || m.membership == "invite" => Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "Leave the room before forgetting it",
        )),
        Some(_) => {
            s.db.forget_room(req.body.room_id.as_str(), a.user_id.as_str())
                .await?;
            Ok(Json(json!({})))
        }
        None => Err(Error::not_found("You were never in this room")),
    }
}

async fn kick(State(s): State<AppState>, req: Ruma<kick_user::v3::Request>) -> JsonResult {
    let a = req.user()?;
    match s
        .db
        .membership(req.body.room_id.as_str(), req.body.user_id.as_str())
        .await?
    {
        Some(m)
            if m.membership == "join" || m.membership == "invite" || m.membership == "knock" => {}
        _ => return Err(Error::forbidden("The user is not in the room")),
    }
    membership::set_membership(
        &s,
        &req.body.room_id,
        &a.user_id,
        &req.body.user_id,
        "leave",
        req.body.reason.as_deref(),
    )
    .await?;
    Ok(Json(json!({})))
}

async fn ban(State(s): State<AppState>, req: Ruma<ban_user::v3::Request>) -> JsonResult {
    let a = req.user()?;
    membership::set_membership(
        &s,
        &req.body.room_id,
        &a.user_id,
        &req.body.user_id,
        "ban",
        req.body.reason.as_deref(),
    )
    .await?;
    Ok(Json(json!({})))
}

async fn unban(State(s): State<AppState>, req: Ruma<unban_user::v3::Request>) -> JsonResult {
    let a = req.user()?;
    match s
        .db
        .membership(req.body.room_id.as_str(), req.body.user_id.as_str())
        .await?
    {
        Some(m) if m.membership == "ban" => {}
        _ => return Err(Error::forbidden("The user is not banned")),
    }
    membership::set_membership(
        &s,
        &req.body.room_id,
        &a.user_id,
        &req.body.user_id,
        "leave",
        req.body.reason.as_deref(),
    )
    .await?;
    Ok(Json(json!({})))
}

async fn joined_rooms(
    State(s): State<AppState>,
    req: Ruma<joined_rooms::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let rooms: Vec<String> =
        s.db.rooms_with_membership(a.user_id.as_str(), "join")
            .await?
            .into_iter()
            .map(|(r, _, _)| r)
            .collect();
    Ok(Json(json!({"joined_rooms": rooms})))
}

async fn members(
    State(s): State<AppState>,
    req: Ruma<get_member_events::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let room_id = req.body.room_id.as_str();
    if !can_read_room(&s.db, room_id, a.user_id.as_str()).await? {
        return Err(Error::forbidden("You are not in this room"));
    }
    let at = req
        .body
        .at
        .as_deref()
        .map(crate::sync::token::parse_position)
        .transpose()?;
    let query = membership::MembersQuery {
        at,
        membership: req.body.membership.as_ref().map(|m| m.to_string()),
        not_membership: req.body.not_membership.as_ref().map(|m| m.to_string()),
    };
    let events = membership::members(&s, room_id, a.user_id.as_str(), &query).await?;
    Ok(Json(
        json!({"chunk": events.iter().map(|p| p.to_client(None)).collect::<Vec<_>>()}),
    ))
}

async fn joined_members(
    State(s): State<AppState>,
    req: Ruma<joined_members::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let room_id = req.body.room_id.as_str();
    crate::api::client::rooms::require_joined(&s, room_id, a.user_id.as_str()).await?;
    let rows = s.db.room_members(room_id).await?;
    let ids: Vec<String> = rows
        .iter()
        .filter(|m| m.membership == "join")
        .map(|m| m.event_id.clone())
        .collect();
    let mut joined = Map::new();
    for p in s.db.get_pdus(&ids).await? {
        let c = p.content_value();
        if let Some(sk) = &p.state_key {
            joined.insert(
                sk.clone(),
                json!({"display_name": c.get("displayname").cloned().unwrap_or(Value::Null),
                       "avatar_url": c.get("avatar_url").cloned().unwrap_or(Value::Null)}),
            );
        }
    }
    Ok(Json(json!({"joined": joined})))
}
