//! `GET /_matrix/federation/v1/query/profile`: the profile of a user of this server.

use axum::{Json, Router, extract::State};
use ruma::api::federation::query::get_profile_information;
use serde_json::{Value, json};

use crate::{
    api::{Ruma, client::JsonResult, route},
    error::Error,
    services::AppState,
    users,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route::<get_profile_information::v1::Request, _, _>(r, profile)
}

/// The whole profile, or only `field` (an empty object when that field is not set); 404 for
/// users that are not ours or do not exist.
async fn profile(
    State(s): State<AppState>,
    req: Ruma<get_profile_information::v1::Request>,
) -> JsonResult {
    req.origin()?;
    let user = &req.body.user_id;
    if !s.is_local(user) {
        return Err(Error::not_found("User is not on this server"));
    }
    let mut all = users::profile(&s, user).await?;
    Ok(Json(match &req.body.field {
        Some(field) => match all.remove(field.as_str()) {
            Some(v) => json!({ field.as_str(): v }),
            None => json!({}),
        },
        None => Value::Object(all),
    }))
}
