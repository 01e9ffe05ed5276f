//! Creating accounts: shared by client registration and the shared-secret admin API.

use axum::http::StatusCode;
use ruma::UserId;

use crate::{
    error::{Error, Result},
    services::Services,
    storage::users::ProfileField,
};

pub fn user_in_use() -> Error {
    Error::new(
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
        "User ID already taken",
    )
}

/// Creates an account with an optional password; the display name starts as the localpart.
/// Errors with `M_USER_IN_USE` when the id is taken.
pub async fn create_account(
    s: &Services,
    user_id: &UserId,
    password: Option<&str>,
    admin: bool,
) -> Result<()> {
    let hash = match password {
        Some(p) if !p.is_empty() => Some(super::password::hash(p).await?),
        _ => None,
    };
    if !s
        .db
        .create_account(
            user_id.as_str(),
            user_id.localpart(),
            hash.as_deref(),
            admin,
        )
        .await?
    {
        return Err(user_in_use());
    }
    s.db.set_profile_field(
        user_id.as_str(),
        ProfileField::Displayname,
        Some(user_id.localpart()),
    )
    .await?;
    tracing::info!(%user_id, admin, "registered");
    Ok(())
}

/// Single-use nonces for shared-secret registration, valid for a minute (as Synapse does).
#[derive(Default)]
pub struct Nonces {
    issued: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

const NONCE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl Nonces {
    pub fn issue(&self) -> String {
        let nonce = super::random_token(32);
        if let Ok(mut m) = self.issued.lock() {
            m.retain(|_, at| at.elapsed() < NONCE_TTL);
            m.insert(nonce.clone(), std::time::Instant::now());
        }
        nonce
    }

    /// Consumes a nonce: true when it was issued, unused and fresh.
    pub fn take(&self, nonce: &str) -> bool {
        self.issued
            .lock()
            .ok()
            .and_then(|mut m| m.remove(nonce))
            .is_some_and(|at| at.elapsed() < NONCE_TTL)
    }
}

/// The Synapse-compatible registration MAC: HMAC-SHA1 over
/// `nonce NUL username NUL password NUL ("admin" | "notadmin") [NUL user_type]`.
fn registration_mac(
    secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
) -> Option<hmac::Hmac<sha1::Sha1>> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(username.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    mac.update(b"\0");
    mac.update(if admin {
        b"admin" as &[u8]
    } else {
        b"notadmin"
    });
    if let Some(t) = user_type {
        mac.update(b"\0");
        mac.update(t.as_bytes());
    }
    Some(mac)
}

/// Checks a registration MAC (hex-encoded), in constant time.
pub fn registration_mac_ok(
    secret: &str,
    nonce: &str,
    username: &str,
    password: &str,
    admin: bool,
    user_type: Option<&str>,
    mac_hex: &str,
) -> bool {
    use hmac::Mac;
    let Ok(given) = hex::decode(mac_hex.trim()) else {
        return false;
    };
    registration_mac(secret, nonce, username, password, admin, user_type)
        .is_some_and(|m| m.verify_slice(&given).is_ok())
}

/// `ganglion register-user`: creates an account on the running server through its
/// shared-secret registration endpoint (as Synapse's `register_new_matrix_user` does), reaching
/// the client listener of `config`. Returns the new user id.
pub async fn register_with_shared_secret(
    config: &crate::config::Config,
    username: &str,
    password: &str,
    admin: bool,
) -> std::result::Result<String, String> {
    use hmac::Mac;
    let secret = config
        .registration
        .shared_secret
        .as_deref()
        .ok_or("[registration] shared_secret is not set in the configuration")?;
    let mut addr = config.client.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/_synapse/admin/v1/register");
    let http = reqwest::Client::new();
    let answer = |e: reqwest::Error| format!("cannot reach the server at {url}: {e}");
    let nonce: serde_json::Value = http
        .get(&url)
        .send()
        .await
        .map_err(answer)?
        .json()
        .await
        .map_err(answer)?;
    let nonce = nonce
        .get("nonce")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| format!("the server at {url} gave no nonce: {nonce}"))?;
    let mac = registration_mac(secret, nonce, username, password, admin, None)
        .ok_or("the shared secret cannot key an HMAC")?
        .finalize()
        .into_bytes();
    let body = serde_json::json!({
        "nonce": nonce,
        "username": username,
        "password": password,
        "admin": admin,
        "mac": hex::encode(mac),
    });
    let resp = http.post(&url).json(&body).send().await.map_err(answer)?;
    let status = resp.status();
    let v: serde_json::Value = resp.json().await.map_err(answer)?;
    if !status.is_success() {
        return Err(format!(
            "registration refused ({status}): {} {}",
            v["errcode"].as_str().unwrap_or(""),
            v["error"].as_str().unwrap_or("")
        ));
    }
    v.get("user_id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("unexpected answer: {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_matches_synapse_format() {
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
        m.update(b"n\0bob\0pw\0notadmin");
        let hex = hex::encode(m.finalize().into_bytes());
        assert!(registration_mac_ok(
            "s3cret", "n", "bob", "pw", false, None, &hex
        ));
        assert!(!registration_mac_ok(
            "s3cret", "n", "bob", "pw", true, None, &hex
        ));
        assert!(!registration_mac_ok(
            "other", "n", "bob", "pw", false, None, &hex
        ));
        assert!(!registration_mac_ok(
            "s3cret", "n", "bob", "pw", false, None, "zz"
        ));
    }

    #[test]
    fn nonces_are_single_use() {
        let n = Nonces::default();
        let a = n.issue();
        assert!(n.take(&a));
        assert!(!n.take(&a));
        assert!(!n.take("never-issued"));
    }
}
