//! `/sync` and filters.

use std::time::Duration;

use axum::{Json, Router, extract::State};
use ruma::api::client::{
    filter::{create_filter, get_filter},
    sync::sync_events,
};
use serde_json::{Value, json};

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    error::Error,
    services::AppState,
    sync::{self, SyncRequest, filter::SyncFilter, token::SyncToken},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<sync_events::v3::Request, _, _>(r, sync_handler);
    let r = route::<create_filter::v3::Request, _, _>(r, create_filter);
    route::<get_filter::v3::Request, _, _>(r, get_filter)
}

async fn sync_handler(
    State(s): State<AppState>,
    req: Ruma<sync_events::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let filter_json = match &req.body.filter {
        None => Value::Null,
        Some(sync_events::v3::Filter::FilterDefinition(def)) => serde_json::to_value(def)?,
        Some(sync_events::v3::Filter::FilterId(id)) => {
            let id: i64 = id
                .parse()
                .map_err(|_| Error::invalid_param("Unknown filter id"))?;
            s.db.filter(a.user_id.as_str(), id)
                .await?
                .ok_or_else(|| Error::not_found("Unknown filter id"))?
        }
        Some(_) => Value::Null,
    };
    let since = req
        .body
        .since
        .as_deref()
        .map(SyncToken::parse)
        .transpose()?;
    let max = Duration::from_millis(s.config.limits.max_sync_timeout_ms);
    let timeout = req.body.timeout.unwrap_or_default().min(max);
    let set_presence = req.body.set_presence.to_string();
    if set_presence != "offline" {
        let current = s.db.presence(a.user_id.as_str()).await?;
        let stale = current.as_ref().is_none_or(|(state, _, last, _)| {
            state != &set_presence || crate::storage::now_ms() - last > 60_000
        });
        if stale {
            let msg = current.and_then(|c| c.1);
            let pos =
                s.db.set_presence(a.user_id.as_str(), &set_presence, msg.as_deref(), true)
                    .await?;
            crate::users::presence::announce(&s, a.user_id.as_str(), pos).await?;
        }
    }
    let resp = sync::sync(
        &s,
        SyncRequest {
            user_id: a.user_id.to_string(),
            device_id: a.device_id.to_string(),
            since,
            full_state: req.body.full_state,
            filter: SyncFilter::from_json(&filter_json),
            timeout,
        },
    )
    .await?;
    Ok(Json(resp))
}

async fn create_filter(
    State(s): State<AppState>,
    req: Ruma<create_filter::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    if req.body.user_id != a.user_id {
        return Err(Error::forbidden("Cannot create filters for other users"));
    }
    let filter = req.json.clone().unwrap_or(json!({}));
    let id = s.db.create_filter(a.user_id.as_str(), &filter).await?;
    Ok(Json(json!({"filter_id": id.to_string()})))
}

async fn get_filter(State(s): State<AppState>, req: Ruma<get_filter::v3::Request>) -> JsonResult {
    let a = req.user()?;
    if req.body.user_id != a.user_id {
        return Err(Error::forbidden("Cannot read filters of other users"));
    }
    let id: i64 = req
        .body
        .filter_id
        .parse()
        .map_err(|_| Error::not_found("Unknown filter"))?;
    let f =
        s.db.filter(a.user_id.as_str(), id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown filter"))?;
    Ok(Json(f))
}
