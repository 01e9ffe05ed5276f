//! Relations and threads: `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`
//! and `GET /rooms/{roomId}/threads`.

use axum::{Json, Router, extract::State};
use ruma::api::{
    Direction,
    client::{
        relations::{
            get_relating_events, get_relating_events_with_rel_type,
            get_relating_events_with_rel_type_and_event_type,
        },
        threads::get_threads::{self, v1::IncludeThreads},
    },
};

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    rooms::relations::{RelationsQuery, relating_events, threads},
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_relating_events::v1::Request, _, _>(r, relations);
    let r = route::<get_relating_events_with_rel_type::v1::Request, _, _>(r, relations_by_type);
    let r = route::<get_relating_events_with_rel_type_and_event_type::v1::Request, _, _>(
        r,
        relations_by_type_and_event_type,
    );
    route::<get_threads::v1::Request, _, _>(r, list_threads)
}

#[allow(clippy::too_many_arguments)]
fn query(
    rel_type: Option<String>,
    event_type: Option<String>,
    from: &Option<String>,
    to: &Option<String>,
    limit: Option<ruma::UInt>,
    dir: &Direction,
    recurse: bool,
) -> RelationsQuery {
    RelationsQuery {
        rel_type,
        event_type,
        from: from.clone(),
        to: to.clone(),
        limit: limit.map(u64::from),
        backwards: matches!(dir, Direction::Backward),
        recurse,
    }
}

async fn relations(
    State(s): State<AppState>,
    req: Ruma<get_relating_events::v1::Request>,
) -> JsonResult {
    let a = req.user()?;
    let b = &req.body;
    let q = query(None, None, &b.from, &b.to, b.limit, &b.dir, b.recurse);
    let resp = relating_events(
        &s,
        a.user_id.as_str(),
        b.room_id.as_str(),
        b.event_id.as_str(),
        q,
    )
    .await?;
    Ok(Json(resp))
}

async fn relations_by_type(
    State(s): State<AppState>,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> JsonResult {
    let a = req.user()?;
    let b = &req.body;
    let q = query(
        Some(b.rel_type.to_string()),
        None,
        &b.from,
        &b.to,
        b.limit,
        &b.dir,
        b.recurse,
    );
    let resp = relating_events(
        &s,
        a.user_id.as_str(),
        b.room_id.as_str(),
        b.event_id.as_str(),
        q,
    )
    .await?;
    Ok(Json(resp))
}

async fn relations_by_type_and_event_type(
    State(s): State<AppState>,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> JsonResult {
    let a = req.user()?;
    let b = &req.body;
    let q = query(
        Some(b.rel_type.to_string()),
        Some(b.event_type.to_string()),
        &b.from,
        &b.to,
        b.limit,
        &b.dir,
        b.recurse,
    );
    let resp = relating_events(
        &s,
        a.user_id.as_str(),
        b.room_id.as_str(),
        b.event_id.as_str(),
        q,
    )
    .await?;
    Ok(Json(resp))
}

async fn list_threads(
    State(s): State<AppState>,
    req: Ruma<get_threads::v1::Request>,
) -> JsonResult {
    let a = req.user()?;
    let b = &req.body;
    let participated = matches!(b.include, IncludeThreads::Participated);
    let resp = threads(
        &s,
        a.user_id.as_str(),
        b.room_id.as_str(),
        participated,
        b.from.as_deref(),
        b.limit.map(u64::from),
    )
    .await?;
    Ok(Json(resp))
}
