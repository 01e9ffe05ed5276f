//! Reads that `/sync` makes for many rooms at once: one round trip per kind of data for the
//! whole response instead of one per room.

use std::collections::HashMap;

use sqlx::Row;

use super::{
    Db, Dialect,
    events::{AnyQuery, bind_padded, padded_len},
    receipts::{Receipt, receipt_from_row},
};
use crate::{error::Result, rooms::Pdu};

/// Rooms per statement. Statements are padded to a power of two of rooms (see
/// [`padded_len`]), so a handful of shapes serve every sync from the statement cache.
const CHUNK: usize = 32;

/// A room id that matches nothing, for padding.
const NO_ROOM: &str = "";

/// What one room's timeline window is: events after `since` up to the sync's upper bound.
pub struct TimelineWindow<'a> {
    pub room_id: &'a str,
    pub since: i64,
}

impl Db {
    /// The newest `limit` timeline events of each room after its `since` (exclusive) up to
    /// `until` (inclusive), oldest first, and whether more were left out (`limited`).
    pub async fn room_timelines(
        &self,
        windows: &[TimelineWindow<'_>],
        until: i64,
        limit: i64,
    ) -> Result<HashMap<String, (Vec<Pdu>, bool)>> {
        let mut out: HashMap<String, (Vec<Pdu>, bool)> = HashMap::with_capacity(windows.len());
        let ids = self
            .event_ids_per_window(
                windows,
                "stream_ordering <= $2 AND outlier = 0 AND rejected = 0",
                |q| q.bind(until).bind(limit + 1),
            )
            .await?;
        // The events themselves mostly come from the event cache.
        for p in self.get_pdus(&ids).await? {
            out.entry(p.room_id.to_string())
                .or_insert_with(|| (Vec::new(), false))
                .0
                .push(p);
        }
        for (events, limited) in out.values_mut() {
            events.sort_by_key(|p| std::cmp::Reverse(p.stream_ordering));
            if events.len() as i64 > limit {
                events.truncate(limit as usize);
                *limited = true;
            }
            events.reverse();
        }
        Ok(out)
    }

    /// The ids of the newest events of each window's room after its `since` that meet
    /// `conditions`, at most `$3` per room, in one statement for all the windows: the windows
    /// are bound as one JSON array (`$1`); `bind` binds `$2` and `$3`, which `conditions` and
    /// the limit use. Each room's part is an index range scan on (room_id, stream_ordering).
    pub(super) async fn event_ids_per_window<'q>(
        &self,
        windows: &[TimelineWindow<'_>],
        conditions: &str,
        bind: impl FnOnce(AnyQuery<'q>) -> AnyQuery<'q>,
    ) -> Result<Vec<String>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<(&str, i64)> = windows.iter().map(|w| (w.room_id, w.since)).collect();
        let sql = match self.dialect {
            // A correlated list subquery per window row, looked up by primary key.
            Dialect::Sqlite => format!(
                "SELECT e.event_id FROM json_each($1) w, events e WHERE e.stream_ordering IN (
                     SELECT stream_ordering FROM events WHERE room_id = w.value->>0
                     AND stream_ordering > w.value->>1 AND {conditions}
                     ORDER BY stream_ordering DESC LIMIT $3)"
            ),
            Dialect::Postgres => format!(
                "SELECT e.event_id FROM json_array_elements($1::json) AS w(v) CROSS JOIN LATERAL (
                     SELECT event_id FROM events WHERE room_id = w.v->>0
                     AND stream_ordering > (w.v->>1)::bigint AND {conditions}
                     ORDER BY stream_ordering DESC LIMIT $3) e"
            ),
        };
        let q = bind(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(serde_json::to_string(&pairs)?));
        let mut ids = Vec::new();
        for row in q.fetch_all(&self.pool).await? {
            ids.push(row.try_get(0)?);
        }
        Ok(ids)
    }

    /// Receipts after each room's `since` that `viewer` may see (private ones only their own).
    pub async fn receipts_in_rooms(
        &self,
        windows: &[TimelineWindow<'_>],
        viewer: &str,
    ) -> Result<HashMap<String, Vec<Receipt>>> {
        let mut out: HashMap<String, Vec<Receipt>> = HashMap::new();
        for chunk in windows.chunks(CHUNK) {
            let n = padded_len(chunk.len());
            let conds: Vec<String> = (0..n)
                .map(|i| format!("(room_id = ${} AND stream_id > ${})", 2 + i * 2, 3 + i * 2))
                .collect();
            let sql = format!(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts
                 WHERE ({}) AND (receipt_type <> 'm.read.private' OR user_id = $1)
                 ORDER BY stream_id",
                conds.join(" OR ")
            );
            let q = bind_windows(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(viewer), chunk);
            for r in q.fetch_all(&self.pool).await? {
                let receipt = receipt_from_row(&r)?;
                out.entry(receipt.room_id.clone())
                    .or_default()
                    .push(receipt);
            }
        }
        Ok(out)
    }

    /// The user's read positions in every room, per thread (`""` for unthreaded receipts).
    pub async fn read_positions_of_user(
        &self,
        user_id: &str,
    ) -> Result<HashMap<String, HashMap<String, i64>>> {
        let rows = sqlx::query(
            "SELECT r.room_id, r.thread_id, MAX(e.stream_ordering) FROM receipts r
             JOIN events e ON e.event_id = r.event_id
             WHERE r.user_id = $1 AND r.receipt_type IN ('m.read', 'm.read.private')
             GROUP BY r.room_id, r.thread_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<String, HashMap<String, i64>> = HashMap::new();
        for r in rows {
            if let Some(pos) = r.try_get::<Option<i64>, _>(2)? {
                out.entry(r.try_get(0)?)
                    .or_default()
                    .insert(r.try_get(1)?, pos);
            }
        }
        Ok(out)
    }

    /// Room summaries: joined and invited member counts and up to five other members (heroes,
    /// joined or invited, by user id).
    pub async fn room_summaries(
        &self,
        rooms: &[&str],
        user_id: &str,
    ) -> Result<HashMap<String, RoomSummary>> {
        let mut out: HashMap<String, RoomSummary> = HashMap::with_capacity(rooms.len());
        for chunk in rooms.chunks(CHUNK) {
            let n = padded_len(chunk.len());
            let list: Vec<String> = (0..n).map(|i| format!("${}", i + 1)).collect();
            let sql = format!(
                "SELECT room_id, membership, COUNT(*) FROM memberships
                 WHERE room_id IN ({}) AND membership IN ('join', 'invite')
                 GROUP BY room_id, membership",
                list.join(",")
            );
            let q = bind_padded(sqlx::query(sqlx::AssertSqlSafe(sql)), chunk, NO_ROOM);
            for row in q.fetch_all(&self.pool).await? {
                let room: String = row.try_get(0)?;
                let membership: String = row.try_get(1)?;
                let n: i64 = row.try_get(2)?;
                let e = out.entry(room).or_default();
                if membership == "join" {
                    e.joined = n;
                } else {
                    e.invited = n;
                }
            }
            let sql = union_of(n, |i| {
                format!(
                    "SELECT room_id, user_id FROM memberships WHERE room_id = ${}
                     AND membership IN ('join', 'invite') AND user_id <> $1
                     ORDER BY user_id LIMIT 5",
                    i + 2
                )
            });
            let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id);
            let q = bind_padded(q, chunk, NO_ROOM);
            for row in q.fetch_all(&self.pool).await? {
                let room: String = row.try_get(0)?;
                out.entry(room).or_default().heroes.push(row.try_get(1)?);
            }
        }
        for s in out.values_mut() {
            s.heroes.sort();
        }
        Ok(out)
    }
}

#[derive(Debug, Default, Clone)]
pub struct RoomSummary {
    pub joined: i64,
    pub invited: i64,
    pub heroes: Vec<String>,
}

/// `n` subqueries glued with `UNION ALL` (each wrapped, so it may keep its own ORDER BY and
/// LIMIT).
fn union_of(n: usize, part: impl Fn(usize) -> String) -> String {
    (0..n)
        .map(|i| format!("SELECT * FROM ({}) u{i}", part(i)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// Binds each window's room and position, padded to [`padded_len`] windows.
fn bind_windows<'q>(mut q: AnyQuery<'q>, windows: &[TimelineWindow<'q>]) -> AnyQuery<'q> {
    for w in windows {
        q = q.bind(w.room_id).bind(w.since);
    }
    for _ in windows.len()..padded_len(windows.len()) {
        q = q.bind(NO_ROOM).bind(0i64);
    }
    q
}
