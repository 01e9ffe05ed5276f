//! Profiles: the whole profile, and each field (`displayname`, `avatar_url`, `m.tz` and custom
//! keys) through `GET/PUT/DELETE /profile/{userId}/{keyName}`.
//!
//! Only the generic `{keyName}` endpoints are registered: their paths cover
//! `/profile/{userId}/displayname` and `/avatar_url` too, so DELETE works on those as well.

use axum::{Json, Router, extract::State};
use ruma::api::client::profile::{
    delete_profile_field, get_profile, get_profile_field, set_profile_field,
};
use serde_json::{Value, json};

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    services::AppState,
    users,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_profile::v3::Request, _, _>(r, get_all);
    let r = route::<get_profile_field::v3::Request, _, _>(r, get_field);
    let r = route::<set_profile_field::v3::Request, _, _>(r, set_field);
    route::<delete_profile_field::v3::Request, _, _>(r, delete_field)
}

async fn get_all(State(s): State<AppState>, req: Ruma<get_profile::v3::Request>) -> JsonResult {
    Ok(Json(Value::Object(
        users::profile(&s, &req.body.user_id).await?,
    )))
}

async fn get_field(
    State(s): State<AppState>,
    req: Ruma<get_profile_field::v3::Request>,
) -> JsonResult {
    let field = req.body.field.as_str();
    let value = users::profile_field(&s, &req.body.user_id, field).await?;
    Ok(Json(json!({ field: value })))
}

async fn set_field(
    State(s): State<AppState>,
    req: Ruma<set_profile_field::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    let field = req.body.value.field_name();
    let value = req.body.value.value().into_owned();
    users::set_profile_value(
        &s,
        &a.user_id,
        &req.body.user_id,
        field.as_str(),
        Some(value),
    )
    .await?;
    Ok(Json(json!({})))
}

async fn delete_field(
    State(s): State<AppState>,
    req: Ruma<delete_profile_field::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    users::set_profile_value(
        &s,
        &a.user_id,
        &req.body.user_id,
        req.body.field.as_str(),
        None,
    )
    .await?;
    Ok(Json(json!({})))
}
