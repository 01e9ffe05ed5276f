//! Read receipts (public, private, threaded).

use sqlx::Row;

use super::{Db, now_ms};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Receipt {
    pub room_id: String,
    pub receipt_type: String,
    pub user_id: String,
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
}

impl Db {
    pub async fn set_receipt(&self, r: &Receipt) -> Result<i64> {
        let mut w = self.begin_stream(1, super::StreamKind::Receipts).await?;
        sqlx::query(
                    "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET event_id = excluded.event_id,
                     ts = excluded.ts, stream_id = excluded.stream_id",
                )
                .bind(&r.room_id)
                .bind(&r.receipt_type)
                .bind(&r.user_id)
                .bind(&r.thread_id)
                .bind(&r.event_id)
                .bind(if r.ts == 0 { now_ms() } else { r.ts })
                .bind(w.first)
                .execute(&mut *w.tx)
                .await?;
        w.commit().await
    }
}

/// A receipt from a row of (room_id, receipt_type, user_id, thread_id, event_id, ts).
pub fn receipt_from_row(r: &sqlx::any::AnyRow) -> Result<Receipt> {
    Ok(Receipt {
        room_id: r.try_get(0)?,
        receipt_type: r.try_get(1)?,
        user_id: r.try_get(2)?,
        thread_id: r.try_get(3)?,
        event_id: r.try_get(4)?,
        ts: r.try_get(5)?,
    })
}
