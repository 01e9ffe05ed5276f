//! The Synapse-compatible admin API (`/_synapse/admin/…`) that operators' tools expect.

pub mod register;
pub mod reports;

use axum::{Router, http::request::Parts};

use crate::{
    error::{Error, Result},
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    reports::routes(register::routes(r))
}

/// The caller, who must hold an access token of a server admin.
pub async fn require_admin(s: &AppState, parts: &Parts) -> Result<ruma::OwnedUserId> {
    let auth =
        crate::api::extract::authenticate::<ruma::api::client::account::whoami::v3::Request>(
            parts, s,
        )
        .await?
        .ok_or_else(Error::missing_token)?;
    if !s
        .db
        .account(auth.user_id.as_str())
        .await?
        .is_some_and(|a| a.admin)
    {
        return Err(Error::forbidden("You are not a server admin"));
    }
    Ok(auth.user_id)
}
