//! Reads behind push-rule evaluation and notification counts (the rules themselves live in the
//! user's `m.push_rules` global account data).

use super::{
    Db,
    events::{EVENT_COLUMNS, pdu_from_row},
};
use crate::{error::Result, rooms::Pdu};

impl Db {
    /// Events of a room after stream position `after` that may notify `user_id`: sent by
    /// others, accepted, in the timeline and not redacted; the newest `limit`, newest first.
    pub async fn notification_candidates(
        &self,
        room_id: &str,
        user_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Pdu>> {
        self.notification_candidates_between(room_id, user_id, after, i64::MAX, limit)
            .await
    }
}

impl Db {
    /// Like [`Db::notification_candidates`], below stream position `before` too.
    pub async fn notification_candidates_between(
        &self,
        room_id: &str,
        user_id: &str,
        after: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<Pdu>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2
             AND stream_ordering < $3 AND sender <> $4 AND outlier = 0 AND rejected = 0
             AND redacted_by IS NULL ORDER BY stream_ordering DESC LIMIT $5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(after)
            .bind(before)
            .bind(user_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pdu_from_row).collect()
    }
}
