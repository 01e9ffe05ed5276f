//! Presence queries beyond the basic row access (`presence`, `set_presence`, `presence_since`
//! live in storage::account_data).

use sqlx::Row;

use super::Db;
use crate::error::Result;

impl Db {
    /// Whether two users are both joined to at least one common room.
    pub async fn share_a_room(&self, a: &str, b: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM memberships x JOIN memberships y ON x.room_id = y.room_id
             WHERE x.user_id = $1 AND y.user_id = $2 AND x.membership = 'join' AND y.membership = 'join'
             LIMIT 1",
        )
        .bind(a)
        .bind(b)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Users shown as online or unavailable whose last activity is older than `before` (ms).
    pub async fn stale_presence(&self, before: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT user_id FROM presence WHERE state <> 'offline' AND last_active_ts < $1",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Marks these users offline (keeping status message and last activity), each at a new
    /// stream position, unless they became active again since `before`. Returns the users
    /// changed and the last position.
    pub async fn mark_presence_offline(
        &self,
        users: &[String],
        before: i64,
    ) -> Result<(Vec<String>, i64)> {
        if users.is_empty() {
            return Ok((Vec::new(), self.stream_position()));
        }
        let mut w = self
            .begin_stream(users.len() as i64, super::StreamKind::Presence)
            .await?;
        let mut changed = Vec::new();
        for (i, user) in users.iter().enumerate() {
            let res = sqlx::query(
                "UPDATE presence SET state = 'offline', currently_active = 0, stream_id = $1
                 WHERE user_id = $2 AND state <> 'offline' AND last_active_ts < $3",
            )
            .bind(w.first + i as i64)
            .bind(user.as_str())
            .bind(before)
            .execute(&mut *w.tx)
            .await?;
            if res.rows_affected() > 0 {
                changed.push(user.clone());
            }
        }
        let pos = w.commit().await?;
        Ok((changed, pos))
    }
}
