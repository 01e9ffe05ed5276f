//! Reports for administrators, in the shape of Synapse's admin API:
//! `GET /_synapse/admin/v1/event_reports`, `GET`/`DELETE /_synapse/admin/v1/event_reports/{id}`,
//! and the same for `room_reports` and `user_reports`.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::request::Parts,
    routing::get,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    api::client::JsonResult,
    error::{Error, Result},
    reports,
    services::AppState,
    storage::reports::{ReportKind, ReportQuery},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = r
        .route("/_synapse/admin/v1/event_reports", get(list_events))
        .route("/_synapse/admin/v1/room_reports", get(list_rooms))
        .route("/_synapse/admin/v1/user_reports", get(list_users));
    let r = r.route(
        "/_synapse/admin/v1/event_reports/{id}",
        get(|s, p, id| one(s, p, ReportKind::Event, id))
            .delete(|s, p, id| remove(s, p, ReportKind::Event, id)),
    );
    let r = r.route(
        "/_synapse/admin/v1/room_reports/{id}",
        get(|s, p, id| one(s, p, ReportKind::Room, id))
            .delete(|s, p, id| remove(s, p, ReportKind::Room, id)),
    );
    r.route(
        "/_synapse/admin/v1/user_reports/{id}",
        get(|s, p, id| one(s, p, ReportKind::User, id))
            .delete(|s, p, id| remove(s, p, ReportKind::User, id)),
    )
}

#[derive(Deserialize)]
struct ListParams {
    from: Option<i64>,
    limit: Option<i64>,
    dir: Option<String>,
    room_id: Option<String>,
    user_id: Option<String>,
}

/// The query, or why it could not be read (answered as `M_INVALID_PARAM` once the caller is
/// known to be an admin).
type ListQuery = std::result::Result<Query<ListParams>, axum::extract::rejection::QueryRejection>;

/// The report id from the path, or why it could not be read.
type IdPath = std::result::Result<Path<String>, axum::extract::rejection::PathRejection>;

async fn list_events(s: State<AppState>, p: Parts, q: ListQuery) -> JsonResult {
    list(s, p, ReportKind::Event, q).await
}
async fn list_rooms(s: State<AppState>, p: Parts, q: ListQuery) -> JsonResult {
    list(s, p, ReportKind::Room, q).await
}
async fn list_users(s: State<AppState>, p: Parts, q: ListQuery) -> JsonResult {
    list(s, p, ReportKind::User, q).await
}

async fn list(
    State(s): State<AppState>,
    parts: Parts,
    kind: ReportKind,
    q: ListQuery,
) -> JsonResult {
    super::require_admin(&s, &parts).await?;
    let Query(q) = q.map_err(|e| Error::invalid_param(e.body_text()))?;
    let offset = q.from.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if offset < 0 || limit < 0 {
        return Err(Error::invalid_param("from and limit must not be negative"));
    }
    let newest_first = match q.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(Error::invalid_param("dir must be f or b")),
    };
    let query = ReportQuery {
        kind,
        room_id: q.room_id.as_deref(),
        reporter: q.user_id.as_deref(),
        offset,
        limit: limit.min(1000),
        newest_first,
    };
    Ok(Json(reports::admin_list(&s, &query).await?))
}

async fn one(State(s): State<AppState>, parts: Parts, kind: ReportKind, id: IdPath) -> JsonResult {
    super::require_admin(&s, &parts).await?;
    let Path(id) = id.map_err(|e| Error::invalid_param(e.body_text()))?;
    let r =
        s.db.report(kind, report_id(&id)?)
            .await?
            .ok_or_else(|| Error::not_found("Report not found"))?;
    Ok(Json(reports::admin_view(&s, &r, true).await?))
}

async fn remove(
    State(s): State<AppState>,
    parts: Parts,
    kind: ReportKind,
    id: IdPath,
) -> JsonResult {
    super::require_admin(&s, &parts).await?;
    let Path(id) = id.map_err(|e| Error::invalid_param(e.body_text()))?;
    if !s.db.delete_report(kind, report_id(&id)?).await? {
        return Err(Error::not_found("Report not found"));
    }
    Ok(Json(json!({})))
}

fn report_id(id: &str) -> Result<i64> {
    id.parse()
        .map_err(|_| Error::invalid_param("The report id must be an integer"))
}
