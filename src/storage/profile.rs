//! Custom profile fields (`m.tz` and any namespaced key). `displayname` and `avatar_url` live in
//! the `users` table (see storage::users), because so much else reads them.

use serde_json::Value;
use sqlx::Row;

use super::Db;
use crate::error::Result;

impl Db {
    /// Every custom field of a user, ordered by key.
    pub async fn profile_fields(&self, user_id: &str) -> Result<Vec<(String, Value)>> {
        let rows = sqlx::query(
            "SELECT field, value FROM profile_fields WHERE user_id = $1 ORDER BY field",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    serde_json::from_str(&r.try_get::<String, _>(1)?)?,
                ))
            })
            .collect()
    }

    pub async fn profile_custom_field(&self, user_id: &str, field: &str) -> Result<Option<Value>> {
        let row = sqlx::query("SELECT value FROM profile_fields WHERE user_id = $1 AND field = $2")
            .bind(user_id)
            .bind(field)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(serde_json::from_str(&r.try_get::<String, _>(0)?)?)),
            None => Ok(None),
        }
    }

    pub async fn set_profile_custom_field(
        &self,
        user_id: &str,
        field: &str,
        value: &Value,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value",
        )
        .bind(user_id)
        .bind(field)
        .bind(serde_json::to_string(value)?)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn delete_profile_custom_field(&self, user_id: &str, field: &str) -> Result<()> {
        sqlx::query("DELETE FROM profile_fields WHERE user_id = $1 AND field = $2")
            .bind(user_id)
            .bind(field)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn delete_profile_custom_fields(&self, user_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM profile_fields WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
