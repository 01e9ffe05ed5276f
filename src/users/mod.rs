//! Accounts: registration, login, passwords, tokens, deactivation, profiles.

pub mod devices;
pub mod login_guard;
pub mod openid;
pub mod password;
pub mod presence;
pub mod register;
pub mod uia;

use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    rooms::{NewEvent, send_event},
    services::Services,
    storage::users::ProfileField,
};

pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Validates a localpart for a new user and builds the user id.
pub fn new_user_id(s: &Services, localpart: &str) -> Result<OwnedUserId> {
    let valid = !localpart.is_empty()
        && localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        );
    if !valid {
        return Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_INVALID_USERNAME",
            "User ID may only contain a-z, 0-9, . _ = - / +",
        ));
    }
    let id = format!("@{localpart}:{}", s.config.server_name);
    if id.len() > 255 {
        return Err(Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_INVALID_USERNAME",
            "User ID is too long",
        ));
    }
    OwnedUserId::try_from(id).map_err(|_| {
        Error::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_INVALID_USERNAME",
            "Invalid user ID",
        )
    })
}

/// Resolves a login identifier (localpart or full id) to a local user id.
pub fn parse_login_user(s: &Services, user: &str) -> Result<OwnedUserId> {
    let id = if user.starts_with('@') {
        user.to_owned()
    } else {
        format!("@{}:{}", user.to_lowercase(), s.config.server_name)
    };
    let uid =
        OwnedUserId::try_from(id).map_err(|_| Error::forbidden("Invalid username or password"))?;
    if uid.server_name() != s.config.server_name {
        return Err(Error::forbidden("Invalid username or password"));
    }
    Ok(uid)
}

pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub access_token: String,
}

/// Creates a device (if new) and an access token for it.
pub async fn open_session(
    s: &Services,
    user_id: &UserId,
    device_id: Option<String>,
    display_name: Option<&str>,
) -> Result<Session> {
    let device_id = device_id
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| random_token(10).to_uppercase());
    let created =
        s.db.upsert_device(user_id.as_str(), &device_id, display_name)
            .await?;
    if !created {
        // Logging in again on an existing device id replaces its tokens.
        s.db.delete_device_tokens(user_id.as_str(), &device_id)
            .await?;
    } else {
        crate::e2ee::device_list_changed(s, user_id).await?;
    }
    let token = format!("gl_{}", random_token(40));
    s.db.insert_access_token(&token, user_id.as_str(), &device_id)
        .await?;
    Ok(Session {
        user_id: user_id.to_owned(),
        device_id,
        access_token: token,
    })
}

/// Checks a user's password. Failures count against the account and the client's address
/// (see [`login_guard`]); while either waits, the answer is `M_LIMIT_EXCEEDED`.
pub async fn check_password(
    s: &Services,
    user_id: &UserId,
    password: &str,
    address: Option<&str>,
) -> Result<bool> {
    let keys = login_guard::LoginGuard::keys(user_id.as_str(), address);
    s.login_guard.check(&keys)?;
    let ok = password_matches(s, user_id, password).await?;
    if !ok {
        s.login_guard.failed(&keys);
    }
    Ok(ok)
}

async fn password_matches(s: &Services, user_id: &UserId, password: &str) -> Result<bool> {
    let Some(acc) = s.db.account(user_id.as_str()).await? else {
        return Ok(false);
    };
    if acc.deactivated {
        return Ok(false);
    }
    let Some(hash) = acc.password_hash else {
        return Ok(false);
    };
    password::verify(password, &hash).await
}

/// Longest display name accepted (as Synapse).
pub const MAX_DISPLAYNAME_LEN: usize = 256;
/// Longest avatar URL accepted.
pub const MAX_AVATAR_URL_LEN: usize = 1000;
/// Longest custom profile key (spec: 255 bytes).
pub const MAX_PROFILE_KEY_LEN: usize = 255;
/// Largest whole profile, JSON-encoded (spec: 64 KiB).
pub const MAX_PROFILE_BYTES: usize = 65536;

/// Updates a profile field and the member event in every joined room.
pub async fn set_profile(
    s: &Services,
    user_id: &UserId,
    field: ProfileField,
    value: Option<&str>,
) -> Result<()> {
    s.db.set_profile_field(user_id.as_str(), field, value)
        .await?;
    let key = match field {
        ProfileField::Displayname => "displayname",
        ProfileField::AvatarUrl => "avatar_url",
    };
    for (room, _, event_id) in s.db.rooms_with_membership(user_id.as_str(), "join").await? {
        let Some(pdu) = s.db.get_pdu(&event_id).await? else {
            continue;
        };
        let old = pdu.content_value();
        let mut content = old.clone();
        if let Some(obj) = content.as_object_mut() {
            match value {
                Some(v) => obj.insert(key.into(), json!(v)),
                None => obj.remove(key),
            };
            obj.insert("membership".into(), Value::from("join"));
            // Only meaningful on the join that used it (restricted rooms).
            obj.remove("join_authorised_via_users_server");
            obj.remove("reason");
        }
        if old.get(key) == content.get(key) {
            continue;
        }
        let room_id = ruma::OwnedRoomId::try_from(room).map_err(Error::internal)?;
        if let Err(e) = send_event(
            s,
            &room_id,
            user_id,
            NewEvent::state("m.room.member", user_id.as_str(), content),
            None,
        )
        .await
        {
            tracing::warn!("profile update in {room_id} failed: {e}");
        }
    }
    Ok(())
}

/// A user's whole profile: `displayname`, `avatar_url` and custom fields. `M_NOT_FOUND` for
/// users this server does not know; users of other servers are asked for over federation.
pub async fn profile(s: &Services, user_id: &UserId) -> Result<serde_json::Map<String, Value>> {
    if !s.is_local(user_id) && s.federation.is_some() {
        return crate::federation::query::profile(s, user_id, None).await;
    }
    let account = match s.db.account(user_id.as_str()).await? {
        Some(a) if s.is_local(user_id) => a,
        _ => return Err(Error::not_found("Profile not found")),
    };
    let mut out = serde_json::Map::new();
    for (field, value) in s.db.profile_fields(user_id.as_str()).await? {
        out.insert(field, value);
    }
    if let Some(d) = account.displayname {
        out.insert("displayname".into(), json!(d));
    }
    if let Some(a) = account.avatar_url.filter(|a| !a.is_empty()) {
        out.insert("avatar_url".into(), json!(a));
    }
    Ok(out)
}

/// One profile field; `M_NOT_FOUND` for unknown users and unset fields.
pub async fn profile_field(s: &Services, user_id: &UserId, field: &str) -> Result<Value> {
    let mut all = profile(s, user_id).await?;
    all.remove(field)
        .ok_or_else(|| Error::not_found("Profile field not set"))
}

/// Sets (`Some`) or removes (`None`) one of the caller's own profile fields. `displayname` and
/// `avatar_url` are also updated in the member event of every joined room.
pub async fn set_profile_value(
    s: &Services,
    caller: &UserId,
    target: &UserId,
    field: &str,
    value: Option<Value>,
) -> Result<()> {
    if caller != target {
        return Err(Error::forbidden("You may only change your own profile"));
    }
    if !s.db.user_exists(target.as_str()).await? {
        return Err(Error::not_found("Profile not found"));
    }
    match field {
        "displayname" => {
            let name = match &value {
                None | Some(Value::Null) => None,
                Some(Value::String(n)) => Some(n.as_str()),
                Some(_) => return Err(Error::bad_json("displayname must be a string")),
            };
            if name.is_some_and(|n| n.chars().count() > MAX_DISPLAYNAME_LEN) {
                return Err(Error::invalid_param(format!(
                    "Display name is too long (max {MAX_DISPLAYNAME_LEN})"
                )));
            }
            set_profile(s, target, ProfileField::Displayname, name).await
        }
        "avatar_url" => {
            let url = match &value {
                None | Some(Value::Null) => None,
                // Element clears an avatar by setting "".
                Some(Value::String(u)) if u.is_empty() => None,
                Some(Value::String(u)) => Some(u.as_str()),
                Some(_) => return Err(Error::bad_json("avatar_url must be a string")),
            };
            if let Some(u) = url
                && (u.len() > MAX_AVATAR_URL_LEN || !<&ruma::MxcUri>::from(u).is_valid())
            {
                return Err(Error::invalid_param("avatar_url must be an mxc:// URI"));
            }
            set_profile(s, target, ProfileField::AvatarUrl, url).await
        }
        _ => {
            if field.is_empty() || field.len() > MAX_PROFILE_KEY_LEN {
                return Err(Error::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "M_KEY_TOO_LARGE",
                    format!("Profile keys must be 1 to {MAX_PROFILE_KEY_LEN} bytes"),
                ));
            }
            let Some(value) = value else {
                return s
                    .db
                    .delete_profile_custom_field(target.as_str(), field)
                    .await;
            };
            if field == "m.tz" && !value.is_string() {
                return Err(Error::bad_json("m.tz must be a string"));
            }
            let mut all = profile(s, target).await?;
            all.insert(field.to_owned(), value.clone());
            if serde_json::to_vec(&all)?.len() > MAX_PROFILE_BYTES {
                return Err(Error::new(
                    axum::http::StatusCode::BAD_REQUEST,
                    "M_PROFILE_TOO_LARGE",
                    "The profile would exceed 64 KiB",
                ));
            }
            s.db.set_profile_custom_field(target.as_str(), field, &value)
                .await
        }
    }
}

/// Deactivates an account: leaves every room, removes tokens, devices, keys and key backups.
pub async fn deactivate(s: &Services, user_id: &UserId) -> Result<()> {
    for membership in ["join", "invite", "knock"] {
        for (room, _, _) in
            s.db.rooms_with_membership(user_id.as_str(), membership)
                .await?
        {
            let room_id = ruma::OwnedRoomId::try_from(room).map_err(Error::internal)?;
            if let Err(e) = crate::rooms::membership::set_membership(
                s, &room_id, user_id, user_id, "leave", None,
            )
            .await
            {
                tracing::warn!("leaving {room_id} on deactivation failed: {e}");
            }
        }
    }
    for d in s.db.devices(user_id.as_str()).await? {
        s.db.delete_device(user_id.as_str(), &d.device_id).await?;
    }
    s.db.set_profile_field(user_id.as_str(), ProfileField::Displayname, None)
        .await?;
    s.db.set_profile_field(user_id.as_str(), ProfileField::AvatarUrl, None)
        .await?;
    s.db.delete_profile_custom_fields(user_id.as_str()).await?;
    s.db.delete_user_backups(user_id.as_str()).await?;
    s.db.set_deactivated(user_id.as_str()).await?;
    Ok(())
}
