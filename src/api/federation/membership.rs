//! Other servers' users joining, leaving, knocking on and being invited to rooms here:
//! `make_*` hands out a template, `send_*` accepts the signed event, `invite` countersigns.

use axum::{Router, extract::State};
use ruma::api::federation::membership::{
    RawStrippedState, create_invite, create_join_event, create_knock_event, create_leave_event,
    prepare_join_event, prepare_knock_event, prepare_leave_event,
};
use serde_json::value::RawValue;

use crate::{
    api::{Ruma, RumaResponse, route},
    error::Result,
    federation::membership as fm,
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<prepare_join_event::v1::Request, _, _>(r, make_join);
    let r = route::<create_join_event::v2::Request, _, _>(r, send_join);
    let r = route::<prepare_leave_event::v1::Request, _, _>(r, make_leave);
    let r = route::<create_leave_event::v2::Request, _, _>(r, send_leave);
    let r = route::<prepare_knock_event::v1::Request, _, _>(r, make_knock);
    let r = route::<create_knock_event::v1::Request, _, _>(r, send_knock);
    route::<create_invite::v2::Request, _, _>(r, invite)
}

fn raw_obj(obj: &ruma::CanonicalJsonObject) -> Result<Box<RawValue>> {
    Ok(serde_json::value::to_raw_value(obj)?)
}

async fn make_join(
    State(s): State<AppState>,
    req: Ruma<prepare_join_event::v1::Request>,
) -> Result<RumaResponse<prepare_join_event::v1::Response>> {
    let origin = req.origin()?;
    super::check_server_acl(&s, &req.body.room_id, origin).await?;
    let (version, template) = fm::make_membership_template(
        &s,
        origin,
        &req.body.room_id,
        &req.body.user_id,
        "join",
        Some(&req.body.ver),
    )
    .await?;
    let mut resp = prepare_join_event::v1::Response::new(raw_obj(&template)?);
    resp.room_version = Some(version);
    Ok(RumaResponse(resp))
}

async fn send_join(
    State(s): State<AppState>,
    req: Ruma<create_join_event::v2::Request>,
) -> Result<RumaResponse<create_join_event::v2::Response>> {
    let origin = req.origin()?;
    let room_id = &req.body.room_id;
    super::check_server_acl(&s, room_id, origin).await?;
    let event_id = fm::accept_membership(
        &s,
        origin,
        room_id,
        &req.body.event_id,
        &req.body.pdu,
        "join",
    )
    .await?;
    let joined = fm::joined_state(&s, &event_id, req.body.omit_members).await?;
    let mut state = create_join_event::v2::RoomState::new();
    state.auth_chain = joined.auth_chain;
    state.state = joined.state;
    state.event = joined.event;
    state.members_omitted = joined.members_omitted;
    state.servers_in_room = Some(joined.servers_in_room);
    Ok(RumaResponse(create_join_event::v2::Response::new(state)))
}

async fn make_leave(
    State(s): State<AppState>,
    req: Ruma<prepare_leave_event::v1::Request>,
) -> Result<RumaResponse<prepare_leave_event::v1::Response>> {
    let origin = req.origin()?;
    super::check_server_acl(&s, &req.body.room_id, origin).await?;
    let (version, template) = fm::make_membership_template(
        &s,
        origin,
        &req.body.room_id,
        &req.body.user_id,
        "leave",
        None,
    )
    .await?;
    Ok(RumaResponse(prepare_leave_event::v1::Response::new(
        Some(version),
        raw_obj(&template)?,
    )))
}

async fn send_leave(
    State(s): State<AppState>,
    req: Ruma<create_leave_event::v2::Request>,
) -> Result<RumaResponse<create_leave_event::v2::Response>> {
    let origin = req.origin()?;
    super::check_server_acl(&s, &req.body.room_id, origin).await?;
    fm::accept_membership(
        &s,
        origin,
        &req.body.room_id,
        &req.body.event_id,
        &req.body.pdu,
        "leave",
    )
    .await?;
    Ok(RumaResponse(create_leave_event::v2::Response::new()))
}

async fn make_knock(
    State(s): State<AppState>,
    req: Ruma<prepare_knock_event::v1::Request>,
) -> Result<RumaResponse<prepare_knock_event::v1::Response>> {
    let origin = req.origin()?;
    super::check_server_acl(&s, &req.body.room_id, origin).await?;
    let (version, template) = fm::make_membership_template(
        &s,
        origin,
        &req.body.room_id,
        &req.body.user_id,
        "knock",
        Some(&req.body.ver),
    )
    .await?;
    Ok(RumaResponse(prepare_knock_event::v1::Response::new(
        version,
        raw_obj(&template)?,
    )))
}

async fn send_knock(
    State(s): State<AppState>,
    req: Ruma<create_knock_event::v1::Request>,
) -> Result<RumaResponse<create_knock_event::v1::Response>> {
    let origin = req.origin()?;
    let room_id = &req.body.room_id;
    super::check_server_acl(&s, room_id, origin).await?;
    fm::accept_membership(
        &s,
        origin,
        room_id,
        &req.body.event_id,
        &req.body.pdu,
        "knock",
    )
    .await?;
    // The knocking user sees the room's public state (as full PDUs since v1.16).
    let mut stripped = Vec::new();
    for kind in [
        "m.room.create",
        "m.room.name",
        "m.room.avatar",
        "m.room.topic",
        "m.room.join_rules",
        "m.room.canonical_alias",
        "m.room.encryption",
    ] {
        if let Some(p) =
            crate::rooms::current_state_event(&s.db, room_id.as_str(), kind, "").await?
            && let Ok(raw) = serde_json::value::to_raw_value(&*p.json)
        {
            stripped.push(RawStrippedState::Pdu(raw));
        }
    }
    Ok(RumaResponse(create_knock_event::v1::Response::new(
        stripped,
    )))
}

async fn invite(
    State(s): State<AppState>,
    req: Ruma<create_invite::v2::Request>,
) -> Result<RumaResponse<create_invite::v2::Response>> {
    let origin = req.origin()?;
    let b = &req.body;
    if s.db.room_version(b.room_id.as_str()).await?.is_some() {
        super::check_server_acl(&s, &b.room_id, origin).await?;
    }
    let signed = fm::accept_invite(
        &s,
        origin,
        &b.room_id,
        &b.event_id,
        &b.room_version,
        &b.event,
        &b.invite_room_state,
    )
    .await?;
    Ok(RumaResponse(create_invite::v2::Response::new(raw_obj(
        &signed,
    )?)))
}
