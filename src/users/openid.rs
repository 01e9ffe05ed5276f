//! OpenID tokens (`/user/{userId}/openid/request_token`): a local user hands one to a third
//! party (an integration manager, a widget), which checks it with
//! `/_matrix/federation/v1/openid/userinfo` and learns only the user id.

use std::time::Duration;

use ruma::UserId;

use crate::{error::Result, services::Services, storage::now_ms};

/// How long a token stays valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Issues a token for `user_id`; returns it and its lifetime.
pub async fn issue(s: &Services, user_id: &UserId) -> Result<(String, Duration)> {
    let token = super::random_token(32);
    let expires = now_ms() + TOKEN_LIFETIME.as_millis() as i64;
    s.db.insert_openid_token(&token, user_id.as_str(), expires)
        .await?;
    Ok((token, TOKEN_LIFETIME))
}

/// The user an unexpired token was issued to.
pub async fn user_of(s: &Services, token: &str) -> Result<Option<String>> {
    s.db.openid_token_user(token).await
}
