//! Account data (global and per room, room_id '' for global), filters and presence rows.

use serde_json::Value;
use sqlx::Row;

use super::Db;
use crate::error::Result;

impl Db {
    /// Sets account data at a new stream position; returns the position.
    pub async fn set_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
        content: &Value,
    ) -> Result<i64> {
        let text = serde_json::to_string(content)?;
        let mut w = self.begin_stream(1, super::StreamKind::AccountData).await?;
        sqlx::query(
                    "INSERT INTO account_data (user_id, room_id, type, content, stream_id) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
                )
                .bind(user_id)
                .bind(room_id.unwrap_or(""))
                .bind(kind)
                .bind(&text)
                .bind(w.first)
                .execute(&mut *w.tx)
                .await?;
        let pos = w.commit().await?;
        Ok(pos)
    }

    /// Reads, changes and writes one account data entry atomically (under the stream write
    /// lock): `f` gets the current content and returns the new one (or `None` to leave it
    /// unchanged) plus a value handed back. Returns the new position when something was written.
    pub async fn update_account_data<T, F>(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
        f: F,
    ) -> Result<(Option<i64>, T)>
    where
        F: FnOnce(Option<Value>) -> Result<(Option<Value>, T)>,
    {
        let mut w = self.begin_stream(1, super::StreamKind::AccountData).await?;
        let row = sqlx::query(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
        )
        .bind(user_id)
        .bind(room_id.unwrap_or(""))
        .bind(kind)
        .fetch_optional(&mut *w.tx)
        .await?;
        let current = match row {
            Some(r) => Some(serde_json::from_str(&r.try_get::<String, _>(0)?)?),
            None => None,
        };
        let (new, out) = f(current)?;
        let Some(new) = new else {
            return Ok((None, out));
        };
        sqlx::query(
            "INSERT INTO account_data (user_id, room_id, type, content, stream_id) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id",
        )
        .bind(user_id)
        .bind(room_id.unwrap_or(""))
        .bind(kind)
        .bind(serde_json::to_string(&new)?)
        .bind(w.first)
        .execute(&mut *w.tx)
        .await?;
        let pos = w.commit().await?;
        Ok((Some(pos), out))
    }

    pub async fn account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
    ) -> Result<Option<Value>> {
        let row = sqlx::query(
            "SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
        )
        .bind(user_id)
        .bind(room_id.unwrap_or(""))
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => Ok(Some(serde_json::from_str(&r.try_get::<String, _>(0)?)?)),
            None => Ok(None),
        }
    }

    /// (room_id or '' for global, type, content) changed after `since`.
    pub async fn account_data_since(
        &self,
        user_id: &str,
        since: i64,
    ) -> Result<Vec<(String, String, Value)>> {
        let rows = sqlx::query(
            "SELECT room_id, type, content FROM account_data WHERE user_id = $1 AND stream_id > $2",
        )
        .bind(user_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    serde_json::from_str(&r.try_get::<String, _>(2)?)?,
                ))
            })
            .collect()
    }

    pub async fn create_filter(&self, user_id: &str, filter: &Value) -> Result<i64> {
        let text = serde_json::to_string(filter)?;
        let mut w = self.begin_stream(1, super::StreamKind::Filters).await?;
        sqlx::query("INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3)")
            .bind(user_id)
            .bind(w.first)
            .bind(&text)
            .execute(&mut *w.tx)
            .await?;
        let pos = w.commit().await?;
        Ok(pos)
    }

    pub async fn filter(&self, user_id: &str, filter_id: i64) -> Result<Option<Value>> {
        let row = sqlx::query("SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2")
            .bind(user_id)
            .bind(filter_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(serde_json::from_str(&r.try_get::<String, _>(0)?)?)),
            None => Ok(None),
        }
    }

    /// Presence rows of these users changed after `since`: (user, state, status_msg, last_active_ts, currently_active).
    pub async fn presence_since(
        &self,
        users: &[String],
        since: i64,
    ) -> Result<Vec<(String, String, Option<String>, i64, bool)>> {
        let mut out = Vec::new();
        for chunk in users.chunks(200) {
            let ph: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "SELECT user_id, state, status_msg, last_active_ts, currently_active FROM presence
                 WHERE stream_id > $1 AND user_id IN ({})",
                ph.join(",")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since);
            for u in chunk {
                q = q.bind(u.as_str());
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get::<i64, _>(4)? != 0,
                ));
            }
        }
        Ok(out)
    }

    pub async fn presence(
        &self,
        user_id: &str,
    ) -> Result<Option<(String, Option<String>, i64, bool)>> {
        let row = sqlx::query("SELECT state, status_msg, last_active_ts, currently_active FROM presence WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get::<i64, _>(3)? != 0,
            ))
        })
        .transpose()
    }

    pub async fn set_presence(
        &self,
        user_id: &str,
        state: &str,
        status_msg: Option<&str>,
        active: bool,
    ) -> Result<i64> {
        let now = super::now_ms();
        let mut w = self.begin_stream(1, super::StreamKind::Presence).await?;
        sqlx::query(
                    "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_id)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
                     last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active,
                     stream_id = excluded.stream_id",
                )
                .bind(user_id)
                .bind(state)
                .bind(status_msg)
                .bind(now)
                .bind(active as i64)
                .bind(w.first)
                .execute(&mut *w.tx)
                .await?;
        let pos = w.commit().await?;
        Ok(pos)
    }
}
