//! Pushers: one row per (user, app_id, pushkey), with the device that set it.

use sqlx::Row;

use super::{
    Db,
    events::{EVENT_COLUMNS, pdu_from_row},
    now_ms,
};
use crate::{error::Result, rooms::Pdu};

/// A stored pusher. `data` is the pusher's `data` object as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherRow {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    pub data: String,
    pub device_id: String,
}

const COLUMNS: &str = "user_id, app_id, pushkey, kind, app_display_name, device_display_name, \
                       profile_tag, lang, data, device_id";

fn from_row(r: &sqlx::any::AnyRow) -> Result<PusherRow> {
    Ok(PusherRow {
        user_id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        pushkey: r.try_get(2)?,
        kind: r.try_get(3)?,
        app_display_name: r.try_get(4)?,
        device_display_name: r.try_get(5)?,
        profile_tag: r.try_get(6)?,
        lang: r.try_get(7)?,
        data: r.try_get(8)?,
        device_id: r.try_get(9)?,
    })
}

impl Db {
    /// Creates or replaces the user's pusher with this (app_id, pushkey). Unless `append`, the
    /// same (app_id, pushkey) is removed from every other user, as the spec asks.
    pub async fn set_pusher(&self, p: &PusherRow, append: bool) -> Result<()> {
        let mut tx = self.begin().await?;
        if !append {
            sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
                .bind(&p.app_id)
                .bind(&p.pushkey)
                .bind(&p.user_id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name,
                device_display_name, profile_tag, lang, data, device_id, created_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind,
                app_display_name = excluded.app_display_name,
                device_display_name = excluded.device_display_name,
                profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
                device_id = excluded.device_id",
        )
        .bind(&p.user_id)
        .bind(&p.app_id)
        .bind(&p.pushkey)
        .bind(&p.kind)
        .bind(&p.app_display_name)
        .bind(&p.device_display_name)
        .bind(&p.profile_tag)
        .bind(&p.lang)
        .bind(&p.data)
        .bind(&p.device_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes one pusher of the user; true when there was one.
    pub async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                .bind(user_id)
                .bind(app_id)
                .bind(pushkey)
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes one pusher wherever it is (a gateway said the pushkey is no longer valid).
    pub async fn delete_pusher_everywhere(&self, app_id: &str, pushkey: &str) -> Result<()> {
        sqlx::query("DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2")
            .bind(app_id)
            .bind(pushkey)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn pushers_of(&self, user_id: &str) -> Result<Vec<PusherRow>> {
        let sql = format!("SELECT {COLUMNS} FROM pushers WHERE user_id = $1 ORDER BY created_ts");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Every pusher, for loading the in-memory set of users that have one.
    pub async fn all_pushers(&self) -> Result<Vec<PusherRow>> {
        let sql = format!("SELECT {COLUMNS} FROM pushers ORDER BY created_ts");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Accepted timeline events after stream position `after`, oldest first.
    pub async fn timeline_events_after(&self, after: i64, limit: i64) -> Result<Vec<Pdu>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_ordering > $1
             AND outlier = 0 AND rejected = 0 ORDER BY stream_ordering LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pdu_from_row).collect()
    }
}
