//! Shared-secret registration, `GET`/`POST /_synapse/admin/v1/register`, as Synapse serves it:
//! works whether or not self-registration is open, and only when a secret is configured.

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    api::client::JsonResult,
    error::Error,
    services::AppState,
    users::{self, register::registration_mac_ok},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    r.route("/_synapse/admin/v1/register", get(nonce).post(register))
}

async fn nonce(State(s): State<AppState>) -> JsonResult {
    Ok(Json(json!({"nonce": s.admin_nonces.issue()})))
}

#[derive(Deserialize)]
struct Body {
    nonce: String,
    username: String,
    password: String,
    mac: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    user_type: Option<String>,
}

async fn register(State(s): State<AppState>, body: axum::body::Bytes) -> JsonResult {
    let Some(secret) = s.config.registration.shared_secret.as_deref() else {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "Shared secret registration is not enabled",
        ));
    };
    let v: Value = serde_json::from_slice(&body)
        .map_err(|_| Error::not_json("Request body is not valid JSON"))?;
    let b: Body = serde_json::from_value(v).map_err(|e| Error::bad_json(e.to_string()))?;
    if !s.admin_nonces.take(&b.nonce) {
        return Err(Error::unknown("Unrecognised nonce"));
    }
    if !registration_mac_ok(
        secret,
        &b.nonce,
        &b.username,
        &b.password,
        b.admin,
        b.user_type.as_deref(),
        &b.mac,
    ) {
        return Err(Error::forbidden("HMAC incorrect"));
    }
    let user_id = users::new_user_id(&s, &b.username.to_lowercase())?;
    users::register::create_account(&s, &user_id, Some(&b.password), b.admin).await?;
    if let Some(name) = b.displayname.as_deref().filter(|n| !n.is_empty()) {
        s.db.set_profile_field(
            user_id.as_str(),
            crate::storage::users::ProfileField::Displayname,
            Some(name),
        )
        .await?;
    }
    let sess = users::open_session(&s, &user_id, None, None).await?;
    Ok(Json(json!({
        "user_id": sess.user_id,
        "access_token": sess.access_token,
        "device_id": sess.device_id,
        "home_server": s.server_name(),
    })))
}
