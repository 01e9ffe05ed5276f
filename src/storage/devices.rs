//! Devices.

use sqlx::Row;

use super::{Db, now_ms};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Device {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ts: Option<i64>,
    pub last_seen_ip: Option<String>,
}

impl Db {
    pub async fn upsert_device(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
    ) -> Result<bool> {
        let res = sqlx::query(
            "INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(display_name)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn devices(&self, user_id: &str) -> Result<Vec<Device>> {
        let rows = sqlx::query(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Device {
                    device_id: r.try_get(0)?,
                    display_name: r.try_get(1)?,
                    last_seen_ts: r.try_get(2)?,
                    last_seen_ip: r.try_get(3)?,
                })
            })
            .collect()
    }

    pub async fn device(&self, user_id: &str, device_id: &str) -> Result<Option<Device>> {
        let row = sqlx::query(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Device {
                device_id: r.try_get(0)?,
                display_name: r.try_get(1)?,
                last_seen_ts: r.try_get(2)?,
                last_seen_ip: r.try_get(3)?,
            })
        })
        .transpose()
    }

    pub async fn rename_device(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3",
        )
        .bind(name)
        .bind(user_id)
        .bind(device_id)
        .execute(&self.writer)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Records when (`ts`, ms) and from where a device was last used. Callers throttle this (see
    /// `users::devices::DeviceActivity`): it is not meant to run on every request.
    pub async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        ts: i64,
        ip: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE devices SET last_seen_ts = $1, last_seen_ip = COALESCE($2, last_seen_ip) WHERE user_id = $3 AND device_id = $4")
            .bind(ts)
            .bind(ip)
            .bind(user_id)
            .bind(device_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Removes a device, its tokens and its keys.
    pub async fn delete_device(&self, user_id: &str, device_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        for sql in [
            "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM to_device WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM pushers WHERE user_id = $1 AND device_id = $2",
        ] {
            sqlx::query(sql)
                .bind(user_id)
                .bind(device_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.token_cache().invalidate();
        Ok(())
    }
}

impl Db {
    pub async fn delete_device_tokens(&self, user_id: &str, device_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&self.writer)
            .await?;
        self.token_cache().invalidate();
        Ok(())
    }
}
