//! Registration, login, logout, whoami, password change and deactivation.

use axum::{Json, Router, extract::State, http::StatusCode};
use ruma::api::client::{
    account::{
        change_password, check_registration_token_validity, deactivate, get_3pids,
        get_username_availability, register, whoami,
    },
    session::{get_login_types, login, logout, logout_all},
};
use serde_json::{Value, json};

use super::JsonResult;
use crate::{
    api::{Ruma, route},
    error::{Error, Result},
    services::{AppState, Services},
    users::{self, uia::flow_complete},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<register::v3::Request, _, _>(r, register);
    let r = route::<get_username_availability::v3::Request, _, _>(r, availability);
    let r = route::<check_registration_token_validity::v1::Request, _, _>(r, token_validity);
    let r = route::<get_login_types::v3::Request, _, _>(r, login_types);
    let r = route::<login::v3::Request, _, _>(r, login);
    let r = route::<logout::v3::Request, _, _>(r, logout);
    let r = route::<logout_all::v3::Request, _, _>(r, logout_all);
    let r = route::<whoami::v3::Request, _, _>(r, whoami);
    let r = route::<change_password::v3::Request, _, _>(r, change_password);
    let r = route::<get_3pids::v3::Request, _, _>(r, threepids);
    route::<deactivate::v3::Request, _, _>(r, deactivate)
}

/// This server binds no third-party identifiers (email, phone): the list is always empty, and
/// `m.3pid_changes` is off in the capabilities.
async fn threepids(req: Ruma<get_3pids::v3::Request>) -> JsonResult {
    req.user()?;
    Ok(Json(json!({"threepids": []})))
}

fn auth_field<'a>(json: &'a Option<Value>, key: &str) -> Option<&'a str> {
    json.as_ref()?.get("auth")?.get(key)?.as_str()
}

async fn registration_token_valid(s: &Services, token: &str) -> Result<bool> {
    if s.config.registration.tokens.iter().any(|t| t == token) {
        return Ok(true);
    }
    s.db.registration_token_usable(token).await
}

async fn register(State(s): State<AppState>, req: Ruma<register::v3::Request>) -> JsonResult {
    if req.body.kind == register::RegistrationKind::Guest {
        return Err(Error::new(
            StatusCode::FORBIDDEN,
            "M_GUEST_ACCESS_FORBIDDEN",
            "Guest access is disabled",
        ));
    }
    if !s.config.registration_enabled() {
        return Err(Error::forbidden("Registration is disabled"));
    }
    let user_id = match &req.body.username {
        Some(name) => {
            let uid = users::new_user_id(&s, &name.to_lowercase())?;
            if s.db.user_exists(uid.as_str()).await? {
                return Err(users::register::user_in_use());
            }
            uid
        }
        None => loop {
            let uid = users::new_user_id(&s, &users::random_token(12).to_lowercase())?;
            if !s.db.user_exists(uid.as_str()).await? {
                break uid;
            }
        },
    };

    let flows: Vec<Vec<&'static str>> = if s.config.registration.require_token {
        vec![vec!["m.login.registration_token"]]
    } else {
        vec![vec!["m.login.dummy"]]
    };
    let session = match auth_field(&req.json, "session") {
        Some(sess) => sess.to_owned(),
        None => {
            let sess = s.uia.new_session("register");
            if auth_field(&req.json, "type").is_none() {
                return Err(s.uia.challenge(&flows, &sess, json!({}), None));
            }
            sess
        }
    };
    match auth_field(&req.json, "type") {
        Some("m.login.dummy") if !s.config.registration.require_token => {
            s.uia
                .complete_stage(&session, "register", "m.login.dummy")?;
        }
        Some("m.login.registration_token") => {
            let token = auth_field(&req.json, "token").unwrap_or_default();
            if !registration_token_valid(&s, token).await? {
                return Err(s.uia.challenge(
                    &flows,
                    &session,
                    json!({}),
                    Some(("M_FORBIDDEN", "Invalid registration token")),
                ));
            }
            s.uia
                .complete_stage(&session, "register", "m.login.registration_token")?;
        }
        Some(_) | None => {}
    }
    if !flow_complete(&flows, &s.uia.completed(&session)) {
        return Err(s.uia.challenge(&flows, &session, json!({}), None));
    }

    users::register::create_account(&s, &user_id, req.body.password.as_deref(), false).await?;
    s.uia.finish(&session);
    if let Some(token) = auth_field(&req.json, "token")
        && s.config.registration.require_token
    {
        s.db.registration_token_used(token).await?;
    }
    if req.body.inhibit_login {
        return Ok(Json(json!({"user_id": user_id})));
    }
    let sess = users::open_session(
        &s,
        &user_id,
        req.body.device_id.as_ref().map(|d| d.to_string()),
        req.body.initial_device_display_name.as_deref(),
    )
    .await?;
    Ok(Json(json!({
        "user_id": sess.user_id,
        "access_token": sess.access_token,
        "device_id": sess.device_id,
        "home_server": s.server_name(),
    })))
}

async fn availability(
    State(s): State<AppState>,
    req: Ruma<get_username_availability::v3::Request>,
) -> JsonResult {
    let uid = users::new_user_id(&s, &req.body.username.to_lowercase())?;
    if s.db.user_exists(uid.as_str()).await? {
        return Err(users::register::user_in_use());
    }
    Ok(Json(json!({"available": true})))
}

async fn token_validity(
    State(s): State<AppState>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> JsonResult {
    Ok(Json(
        json!({"valid": registration_token_valid(&s, &req.body.token).await?}),
    ))
}

async fn login_types(_req: Ruma<get_login_types::v3::Request>) -> JsonResult {
    Ok(Json(json!({"flows": [{"type": "m.login.password"}]})))
}

async fn login(
    State(s): State<AppState>,
    parts: axum::http::request::Parts,
    req: Ruma<login::v3::Request>,
) -> JsonResult {
    let json = req.json.clone().unwrap_or(Value::Null);
    let kind = json.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "m.login.password" {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            format!("Unsupported login type {kind:?}"),
        ));
    }
    let user = json
        .get("identifier")
        .and_then(|i| {
            if i.get("type").and_then(Value::as_str) == Some("m.id.user") {
                i.get("user")
            } else {
                None
            }
        })
        .or_else(|| json.get("user"))
        .and_then(Value::as_str)
        .ok_or_else(|| Error::forbidden("Only m.id.user identifiers are supported"))?;
    let password = json
        .get("password")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::missing_param("password"))?;
    let user_id = users::parse_login_user(&s, user)?;
    let address = crate::api::client::devices::client_ip(&parts);
    if !users::check_password(&s, &user_id, password, address.as_deref()).await? {
        return Err(Error::forbidden("Invalid username or password"));
    }
    let sess = users::open_session(
        &s,
        &user_id,
        req.body.device_id.as_ref().map(|d| d.to_string()),
        req.body.initial_device_display_name.as_deref(),
    )
    .await?;
    Ok(Json(json!({
        "user_id": sess.user_id,
        "access_token": sess.access_token,
        "device_id": sess.device_id,
        "home_server": s.server_name(),
        "well_known": {"m.homeserver": {"base_url": s.config.public_baseurl()}},
    })))
}

async fn logout(State(s): State<AppState>, req: Ruma<logout::v3::Request>) -> JsonResult {
    let a = req.user()?;
    s.db.delete_device(a.user_id.as_str(), a.device_id.as_str())
        .await?;
    crate::e2ee::device_list_changed(&s, &a.user_id).await?;
    Ok(Json(json!({})))
}

async fn logout_all(State(s): State<AppState>, req: Ruma<logout_all::v3::Request>) -> JsonResult {
    let a = req.user()?;
    for d in s.db.devices(a.user_id.as_str()).await? {
        s.db.delete_device(a.user_id.as_str(), &d.device_id).await?;
    }
    s.db.delete_all_access_tokens(a.user_id.as_str()).await?;
    crate::e2ee::device_list_changed(&s, &a.user_id).await?;
    Ok(Json(json!({})))
}

async fn whoami(req: Ruma<whoami::v3::Request>) -> JsonResult {
    let a = req.user()?;
    Ok(Json(
        json!({"user_id": a.user_id, "device_id": a.device_id, "is_guest": false}),
    ))
}

/// Runs password UIA for a sensitive operation on the caller's own account.
pub async fn require_password_uia(
    s: &Services,
    user_id: &ruma::UserId,
    json: &Option<Value>,
    purpose: &str,
) -> Result<()> {
    let flows = vec![vec!["m.login.password"]];
    let session = match auth_field(json, "session") {
        Some(x) => x.to_owned(),
        None => s.uia.new_session(purpose),
    };
    if auth_field(json, "type") == Some("m.login.password") {
        let auth = json
            .as_ref()
            .and_then(|j| j.get("auth"))
            .cloned()
            .unwrap_or(Value::Null);
        let user = auth
            .get("identifier")
            .and_then(|i| i.get("user"))
            .or_else(|| auth.get("user"))
            .and_then(Value::as_str)
            .unwrap_or(user_id.as_str());
        let given = users::parse_login_user(s, user)?;
        let password = auth
            .get("password")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if given != user_id || !users::check_password(s, user_id, password, None).await? {
            return Err(s.uia.challenge(
                &flows,
                &session,
                json!({}),
                Some(("M_FORBIDDEN", "Invalid password")),
            ));
        }
        s.uia
            .complete_stage(&session, purpose, "m.login.password")?;
    }
    if !flow_complete(&flows, &s.uia.completed(&session)) {
        return Err(s.uia.challenge(&flows, &session, json!({}), None));
    }
    s.uia.finish(&session);
    Ok(())
}

async fn change_password(
    State(s): State<AppState>,
    req: Ruma<change_password::v3::Request>,
) -> JsonResult {
    let a = req.user()?;
    require_password_uia(
        &s,
        &a.user_id,
        &req.json,
        &format!("password:{}", a.user_id),
    )
    .await?;
    let hash = users::password::hash(&req.body.new_password).await?;
    s.db.set_password_hash(a.user_id.as_str(), &hash).await?;
    if req.body.logout_devices {
        for d in s.db.devices(a.user_id.as_str()).await? {
            if d.device_id != a.device_id.as_str() {
                s.db.delete_device(a.user_id.as_str(), &d.device_id).await?;
            }
        }
        s.db.delete_other_tokens(a.user_id.as_str(), &a.token)
            .await?;
    }
    Ok(Json(json!({})))
}

async fn deactivate(State(s): State<AppState>, req: Ruma<deactivate::v3::Request>) -> JsonResult {
    let a = req.user()?;
    require_password_uia(
        &s,
        &a.user_id,
        &req.json,
        &format!("deactivate:{}", a.user_id),
    )
    .await?;
    users::deactivate(&s, &a.user_id).await?;
    Ok(Json(json!({"id_server_unbind_result": "success"})))
}
