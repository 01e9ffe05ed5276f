//! Small named numbers the server keeps across restarts (the `server_state` table).

use sqlx::Row;

use super::Db;
use crate::error::Result;

impl Db {
    /// A named number kept across restarts.
    pub async fn server_value(&self, name: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT value FROM server_state WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn set_server_value(&self, name: &str, value: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO server_state (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
