//! Reads behind push-rule evaluation and notification counts (the rules themselves live in the
//! user's `m.push_rules` global account data).

use std::collections::HashMap;

use super::{
    Db,
    events::{EVENT_COLUMNS, pdu_from_row},
    sync::TimelineWindow,
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
        let window = TimelineWindow {
            room_id,
            since: after,
        };
        let mut by_room = self
            .notification_candidates_in_rooms(&[window], user_id, limit)
            .await?;
        Ok(by_room.remove(room_id).unwrap_or_default())
    }

    /// For each room, the newest `limit` events after its `since` (exclusive) that could
    /// notify `user_id` (timeline events by others, not redacted), newest first:
    /// [`Db::notification_candidates`] for many rooms in one round trip.
    pub async fn notification_candidates_in_rooms(
        &self,
        windows: &[TimelineWindow<'_>],
        user_id: &str,
        limit: i64,
    ) -> Result<HashMap<String, Vec<Pdu>>> {
        let mut out: HashMap<String, Vec<Pdu>> = HashMap::with_capacity(windows.len());
        let ids = self
            .event_ids_per_window(
                windows,
                "sender <> $2 AND outlier = 0 AND rejected = 0 AND redacted_by IS NULL",
                |q| q.bind(user_id).bind(limit),
            )
            .await?;
        for p in self.get_pdus(&ids).await? {
            out.entry(p.room_id.to_string()).or_default().push(p);
        }
        for events in out.values_mut() {
            events.sort_by_key(|p| std::cmp::Reverse(p.stream_ordering));
        }
        Ok(out)
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
