//! E2EE key storage read by /sync: to-device inbox, one-time key counts, device-list changes.

use serde_json::Value;
use sqlx::Row;

use super::Db;
use crate::error::Result;

impl Db {
    /// Pending to-device messages for a device after `since`, oldest first.
    pub async fn to_device_since(
        &self,
        user_id: &str,
        device_id: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Value)>> {
        let rows = sqlx::query(
            "SELECT stream_id, sender, type, content FROM to_device WHERE user_id = $1 AND device_id = $2
             AND stream_id > $3 ORDER BY stream_id LIMIT $4",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let content: Value = serde_json::from_str(&r.try_get::<String, _>(3)?)?;
                Ok((
                    r.try_get(0)?,
                    serde_json::json!({"sender": r.try_get::<String, _>(1)?, "type": r.try_get::<String, _>(2)?, "content": content}),
                ))
            })
            .collect()
    }

    /// Deletes to-device messages the device has acknowledged (by syncing past them).
    pub async fn ack_to_device(&self, user_id: &str, device_id: &str, upto: i64) -> Result<()> {
        sqlx::query(
            "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(upto)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Unclaimed one-time key counts per algorithm.
    pub async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND fallback = 0
             AND used = 0 GROUP BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Algorithms with an unused fallback key.
    pub async fn unused_fallback_key_types(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT algorithm FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND fallback = 1 AND used = 0",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Users among `users` whose device lists changed after `since`.
    pub async fn device_lists_changed_since(
        &self,
        users: &[String],
        since: i64,
    ) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > $1")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        let changed: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        Ok(changed.into_iter().filter(|u| users.contains(u)).collect())
    }
}
