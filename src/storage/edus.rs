//! Storage for EDUs exchanged with other servers: the size of a destination's queue (to keep
//! ephemeral EDUs from piling up for a dead server), what was last announced about each local
//! device, and presence received from other servers.

use sqlx::Row;

use super::{Db, Tx, now_ms};
use crate::error::Result;

/// The last `m.device_list_update` sent for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncedDevice {
    pub device_id: String,
    /// Digest of what was announced; empty once the device was announced deleted.
    pub digest: String,
    pub stream_id: i64,
}

impl Db {
    /// Queued EDUs for a destination.
    pub async fn outbox_edu_count(&self, destination: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM federation_outbox WHERE destination = $1 AND kind = 'edu'",
        )
        .bind(destination)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// What was announced about a user's devices.
    pub async fn announced_devices(&self, user_id: &str) -> Result<Vec<AnnouncedDevice>> {
        let rows = sqlx::query(
            "SELECT device_id, digest, stream_id FROM device_list_outbound WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AnnouncedDevice {
                    device_id: r.try_get(0)?,
                    digest: r.try_get(1)?,
                    stream_id: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// The stream id of a user's latest device-list update (0 before any).
    pub async fn device_list_stream_id(&self, user_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT MAX(stream_id) FROM device_list_outbound WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
    }

    /// Records an announcement (inside the transaction that queues it).
    pub async fn set_announced_device(
        tx: &mut Tx<'_>,
        user_id: &str,
        device: &AnnouncedDevice,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO device_list_outbound (user_id, device_id, digest, stream_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, device_id) DO UPDATE SET digest = excluded.digest, stream_id = excluded.stream_id",
        )
        .bind(user_id)
        .bind(&device.device_id)
        .bind(&device.digest)
        .bind(device.stream_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Whether the user is joined to at least one room known here.
    pub async fn is_joined_anywhere(&self, user_id: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM memberships WHERE user_id = $1 AND membership = 'join' LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Stores the presence of a user of another server, last active at `last_active_ts`.
    /// Returns the stream position written.
    pub async fn set_remote_presence(
        &self,
        user_id: &str,
        state: &str,
        status_msg: Option<&str>,
        last_active_ts: i64,
        currently_active: bool,
    ) -> Result<i64> {
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
        .bind(last_active_ts.min(now_ms()))
        .bind(currently_active as i64)
        .bind(w.first)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }
}
