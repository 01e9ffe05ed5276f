//! Reads behind push-rule evaluation and notification counts (the rules themselves live in the
//! user's `m.push_rules` global account data).

use sqlx::Row;

use super::{
    Db,
    events::{EVENT_COLUMNS, pdu_from_row},
};
use crate::{error::Result, rooms::Pdu};

impl Db {
    /// The stream position of the user's latest read receipt (public or private) in a room, per
    /// thread id (`""` for unthreaded receipts, `"main"` for the main timeline, else a thread root).
    pub async fn read_positions_by_thread(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT r.thread_id, MAX(e.stream_ordering) FROM receipts r JOIN events e ON e.event_id = r.event_id
             WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private')
             GROUP BY r.thread_id",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if let Some(pos) = r.try_get::<Option<i64>, _>(1)? {
                out.push((r.try_get(0)?, pos));
            }
        }
        Ok(out)
    }

    /// Events of a room after stream position `after` that may notify `user_id`: sent by
    /// others, accepted, in the timeline and not redacted; the newest `limit`, newest first.
    pub async fn notification_candidates(
        &self,
        room_id: &str,
        user_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Pdu>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2
             AND sender <> $3 AND outlier = 0 AND rejected = 0 AND redacted_by IS NULL
             ORDER BY stream_ordering DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(after)
            .bind(user_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pdu_from_row).collect()
    }
}
