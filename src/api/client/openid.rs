//! `POST /user/{userId}/openid/request_token`: an OpenID token proving the caller's identity
//! to a third party (checked with `/_matrix/federation/v1/openid/userinfo`).

use axum::{Json, Router, extract::State};
use ruma::api::client::account::request_openid_token;
use serde_json::json;

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    error::Error,
    services::AppState,
    users::openid,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route::<request_openid_token::v3::Request, _, _>(r, request_token)
}

async fn request_token(
    State(s): State<AppState>,
    req: Ruma<request_openid_token::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    if a.user_id != req.body.user_id {
        return Err(Error::forbidden(
            "You may only request OpenID tokens for yourself",
        ));
    }
    let (token, lifetime) = openid::issue(&s, &a.user_id).await?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": s.server_name(),
        "expires_in": lifetime.as_secs(),
    })))
}
