//! Accounts: registration, login, passwords, tokens, deactivation, profiles.

pub mod password;
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

/// Checks a user's password.
pub async fn check_password(s: &Services, user_id: &UserId, password: &str) -> Result<bool> {
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
        let mut content = pdu.content_value();
        if let Some(obj) = content.as_object_mut() {
            match value {
                Some(v) => obj.insert(key.into(), json!(v)),
                None => obj.remove(key),
            };
            obj.insert("membership".into(), Value::from("join"));
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

/// Deactivates an account: leaves every room, removes tokens, devices and keys.
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
    s.db.set_deactivated(user_id.as_str()).await?;
    Ok(())
}
