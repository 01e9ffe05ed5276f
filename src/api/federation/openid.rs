//! `GET /_matrix/federation/v1/openid/userinfo`: who an OpenID token was issued to. Not signed
//! by a server: the caller is any third party holding the token.

use axum::http::StatusCode;
use axum::{Json, Router, extract::State};
use ruma::api::federation::openid::get_openid_userinfo;
use serde_json::json;

use crate::{
    api::{Ruma, client::JsonResult, route},
    error::Error,
    services::AppState,
    users::openid,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route::<get_openid_userinfo::v1::Request, _, _>(r, userinfo)
}

async fn userinfo(
    State(s): State<AppState>,
    req: Ruma<get_openid_userinfo::v1::Request>,
) -> JsonResult {
    match openid::user_of(&s, &req.body.access_token).await? {
        Some(user) => Ok(Json(json!({"sub": user}))),
        None => Err(Error::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Access token unknown or expired",
        )),
    }
}
