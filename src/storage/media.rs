//! The media table: one row per mxc URI (origin + media id). The bytes are on disk (see
//! `crate::media::store`); a row names them by SHA-256 once the upload is complete.

use sqlx::{Row, any::AnyRow};

use super::Db;
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct MediaRow {
    pub origin: String,
    pub media_id: String,
    pub user_id: Option<String>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub created_ts: i64,
    /// `None` while an asynchronous upload (`/create`) is pending.
    pub uploaded_ts: Option<i64>,
    pub unused_expires_ts: Option<i64>,
}

/// The content of a completed upload.
#[derive(Debug, Clone)]
pub struct MediaContent<'a> {
    pub content_type: Option<&'a str>,
    pub filename: Option<&'a str>,
    pub size: i64,
    pub sha256: &'a str,
}

fn media_row(r: &AnyRow) -> Result<MediaRow> {
    Ok(MediaRow {
        origin: r.try_get(0)?,
        media_id: r.try_get(1)?,
        user_id: r.try_get(2)?,
        content_type: r.try_get(3)?,
        filename: r.try_get(4)?,
        size: r.try_get(5)?,
        sha256: r.try_get(6)?,
        created_ts: r.try_get(7)?,
        uploaded_ts: r.try_get(8)?,
        unused_expires_ts: r.try_get(9)?,
    })
}

impl Db {
    pub async fn media(&self, origin: &str, media_id: &str) -> Result<Option<MediaRow>> {
        let row = sqlx::query(
            "SELECT origin, media_id, user_id, content_type, filename, size, sha256,
                    created_ts, uploaded_ts, unused_expires_ts
             FROM media WHERE origin = $1 AND media_id = $2",
        )
        .bind(origin)
        .bind(media_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(media_row).transpose()
    }

    /// Records a completed upload (the file is already durable on disk).
    pub async fn insert_media(
        &self,
        origin: &str,
        media_id: &str,
        user_id: &str,
        content: &MediaContent<'_>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO media (origin, media_id, user_id, content_type, filename, size, sha256,
                                created_ts, uploaded_ts, unused_expires_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, NULL)",
        )
        .bind(origin)
        .bind(media_id)
        .bind(user_id)
        .bind(content.content_type)
        .bind(content.filename)
        .bind(content.size)
        .bind(content.sha256)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Reserves a media id for an asynchronous upload.
    pub async fn create_pending_media(
        &self,
        origin: &str,
        media_id: &str,
        user_id: &str,
        now: i64,
        expires_ts: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO media (origin, media_id, user_id, created_ts, unused_expires_ts)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(origin)
        .bind(media_id)
        .bind(user_id)
        .bind(now)
        .bind(expires_ts)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// How many of a user's reserved media ids are still waiting for their content, and the
    /// earliest time one of them expires.
    pub async fn pending_media_of_user(&self, user_id: &str, now: i64) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(unused_expires_ts) FROM media
             WHERE user_id = $1 AND uploaded_ts IS NULL AND unused_expires_ts > $2",
        )
        .bind(user_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok((
            row.try_get(0)?,
            row.try_get::<Option<i64>, _>(1)?.unwrap_or(now),
        ))
    }

    /// Fills in the content of a reserved media id. False when it was already filled (or is
    /// not pending), so a second upload cannot overwrite the first.
    pub async fn complete_pending_media(
        &self,
        origin: &str,
        media_id: &str,
        content: &MediaContent<'_>,
        now: i64,
    ) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE media SET content_type = $3, filename = $4, size = $5, sha256 = $6,
                              uploaded_ts = $7, unused_expires_ts = NULL
             WHERE origin = $1 AND media_id = $2 AND uploaded_ts IS NULL",
        )
        .bind(origin)
        .bind(media_id)
        .bind(content.content_type)
        .bind(content.filename)
        .bind(content.size)
        .bind(content.sha256)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Records a cached copy of another server's media (`user_id` NULL). A copy stored
    /// meanwhile by a concurrent fetch is kept.
    pub async fn insert_remote_media(
        &self,
        origin: &str,
        media_id: &str,
        content: &MediaContent<'_>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO media (origin, media_id, user_id, content_type, filename, size, sha256,
                                created_ts, uploaded_ts, unused_expires_ts)
             VALUES ($1, $2, NULL, $3, $4, $5, $6, $7, $7, NULL)
             ON CONFLICT (origin, media_id) DO NOTHING",
        )
        .bind(origin)
        .bind(media_id)
        .bind(content.content_type)
        .bind(content.filename)
        .bind(content.size)
        .bind(content.sha256)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
