//! OpenID tokens: short-lived proofs of a local user's identity for other services.

use sqlx::Row;

use super::{Db, now_ms};
use crate::error::Result;

impl Db {
    /// Stores a token valid until `expires_ts` and drops expired ones.
    pub async fn insert_openid_token(
        &self,
        token: &str,
        user_id: &str,
        expires_ts: i64,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM openid_tokens WHERE expires_ts <= $1")
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO openid_tokens (token, user_id, expires_ts) VALUES ($1, $2, $3)")
            .bind(token)
            .bind(user_id)
            .bind(expires_ts)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user an unexpired token belongs to.
    pub async fn openid_token_user(&self, token: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT user_id FROM openid_tokens WHERE token = $1 AND expires_ts > $2")
                .bind(token)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}
