//! Events: the DAG (prev/auth edges), forward extremities, timelines, relations, txn ids.

use ruma::{OwnedEventId, RoomId};
use serde_json::{Map, Value};
use sqlx::{Row, any::AnyRow};

use super::{Db, Tx};
use crate::{error::Result, rooms::pdu::Pdu};

/// A bounded cache of stored events by id.
#[derive(Default)]
pub struct PduCache {
    inner: std::sync::Mutex<std::collections::HashMap<String, Pdu>>,
}

/// The ids of every event some stored event relates to (`m.relates_to.event_id`: edits,
/// thread replies, annotations, references). Events outside it have no bundled aggregations,
/// which spares the relation queries for most of a timeline. Entries are added before the
/// relating event commits, so the set is never missing one that a reader could see.
#[derive(Default)]
pub struct RelationTargets {
    inner: std::sync::RwLock<std::collections::HashSet<String>>,
}

impl RelationTargets {
    pub fn contains(&self, event_id: &str) -> bool {
        // A poisoned lock says "maybe": the caller then queries as if it were there.
        self.inner.read().map_or(true, |s| s.contains(event_id))
    }

    pub fn add(&self, event_id: &str) {
        if let Ok(mut s) = self.inner.write()
            && !s.contains(event_id)
        {
            s.insert(event_id.to_owned());
        }
    }
}

impl PduCache {
    pub fn get(&self, id: &str) -> Option<Pdu> {
        self.inner.lock().ok()?.get(id).cloned()
    }
    pub fn put(&self, pdu: &Pdu) {
        if let Ok(mut m) = self.inner.lock() {
            if m.len() >= 8_192 {
                m.clear();
            }
            m.insert(pdu.event_id.to_string(), pdu.clone());
        }
    }
    pub fn remove(&self, id: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(id);
        }
    }
}

pub const EVENT_COLUMNS: &str =
    "event_id, room_id, json, stream_ordering, rejected, unsigned, state_after, txn_id, txn_device";

pub fn pdu_from_row(row: &AnyRow) -> Result<Pdu> {
    let event_id: String = row.try_get("event_id")?;
    let room_id: String = row.try_get("room_id")?;
    let json: String = row.try_get("json")?;
    let mut pdu = Pdu::from_stored(&event_id, &room_id, &json)?;
    pdu.stream_ordering = row.try_get("stream_ordering")?;
    pdu.rejected = row.try_get::<i64, _>("rejected")? != 0;
    pdu.state_after = row.try_get("state_after")?;
    let txn_id: Option<String> = row.try_get("txn_id")?;
    let txn_device: Option<String> = row.try_get("txn_device")?;
    pdu.local_txn = txn_device.zip(txn_id);
    if let Some(u) = row.try_get::<Option<String>, _>("unsigned")? {
        pdu.unsigned = serde_json::from_str::<Map<String, Value>>(&u)
            .ok()
            .map(Into::into);
    }
    Ok(pdu)
}

/// Relation fields of an event's content (`m.relates_to`).
pub struct Relation {
    pub rel_type: Option<String>,
    pub relates_to: Option<String>,
    pub thread_id: Option<String>,
}

/// The event's relation (`content.m.relates_to`). A relation whose fields contain U+0000
/// (which no text column of PostgreSQL can hold, and no event id contains) counts as none.
pub fn relation_of(pdu: &Pdu) -> Relation {
    let content = pdu.content_value();
    let rel = content.get("m.relates_to");
    let field = |name: &str| {
        rel.and_then(|r| r.get(name))
            .and_then(Value::as_str)
            .filter(|s| !s.contains('\0'))
            .map(str::to_owned)
    };
    let rel_type = field("rel_type");
    let relates_to = field("event_id");
    let thread_id = if rel_type.as_deref() == Some("m.thread") {
        relates_to.clone()
    } else {
        None
    };
    Relation {
        rel_type,
        relates_to,
        thread_id,
    }
}

pub struct TxnRef<'a> {
    pub device_id: &'a str,
    pub txn_id: &'a str,
}

impl Db {
    /// An event as the row to store, with its edges. `state_after` is the snapshot after the
    /// event. Notes the event it relates to, if any, in the relation-target set (before the
    /// row commits, so the set never misses what a reader can see).
    pub fn event_row(
        &self,
        pdu: &Pdu,
        stream_ordering: i64,
        state_after: Option<i64>,
        outlier: bool,
        txn: Option<TxnRef<'_>>,
    ) -> Result<EventRow> {
        let rel = relation_of(pdu);
        if let Some(target) = &rel.relates_to {
            self.relation_targets().add(target);
        }
        Ok(EventRow {
            stream_ordering,
            event_id: pdu.event_id.to_string(),
            room_id: pdu.room_id.to_string(),
            kind: pdu.kind.to_string(),
            state_key: pdu.state_key.clone(),
            sender: pdu.sender.to_string(),
            depth: pdu.depth,
            origin_server_ts: i64::from(pdu.origin_server_ts.get()),
            json: serde_json::to_string(&*pdu.json)?,
            state_after,
            rejected: pdu.rejected as i64,
            outlier: outlier as i64,
            rel_type: rel.rel_type,
            relates_to: rel.relates_to,
            thread_id: rel.thread_id,
            txn_id: txn.as_ref().map(|t| t.txn_id.to_owned()),
            txn_device: txn.as_ref().map(|t| t.device_id.to_owned()),
            unsigned: pdu
                .unsigned
                .as_deref()
                .map(serde_json::to_string)
                .transpose()?,
            prev_events: pdu.prev_events.iter().map(|e| e.to_string()).collect(),
            auth_events: pdu.auth_events.iter().map(|e| e.to_string()).collect(),
        })
    }

    /// Inserts events with their prev and auth edges, several rows per statement. An event
    /// already stored (the same event from two servers at once) is left as it is.
    pub async fn insert_events(
        tx: &mut Tx<'_>,
        dialect: super::Dialect,
        rows: &[EventRow],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        // Each table's rows go in as one JSON array in one statement, whatever the batch size:
        // one hand-over to the connection per table instead of one per chunk of rows.
        let events: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!([
                    r.stream_ordering,
                    r.event_id,
                    r.room_id,
                    r.kind,
                    r.state_key,
                    r.sender,
                    r.depth,
                    r.origin_server_ts,
                    r.json,
                    r.state_after,
                    r.rejected,
                    r.outlier,
                    r.rel_type,
                    r.relates_to,
                    r.thread_id,
                    r.txn_id,
                    r.txn_device,
                    r.unsigned,
                ])
            })
            .collect();
        let columns = "stream_ordering, event_id, room_id, type, state_key, sender, depth,
            origin_server_ts, json, state_after, rejected, outlier, rel_type, relates_to,
            thread_id, txn_id, txn_device, unsigned";
        let select = match dialect {
            super::Dialect::Sqlite => {
                "SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5,
                    value->>6, value->>7, value->>8, value->>9, value->>10, value->>11,
                    value->>12, value->>13, value->>14, value->>15, value->>16, value->>17
                 FROM json_each($1) WHERE true"
            }
            super::Dialect::Postgres => {
                "SELECT (v->>0)::bigint, v->>1, v->>2, v->>3, v->>4, v->>5, (v->>6)::bigint,
                    (v->>7)::bigint, v->>8, (v->>9)::bigint, (v->>10)::bigint,
                    (v->>11)::bigint, v->>12, v->>13, v->>14, v->>15, v->>16, v->>17
                 FROM json_array_elements($1::json) AS e(v)"
            }
        };
        let sql =
            format!("INSERT INTO events ({columns}) {select} ON CONFLICT (event_id) DO NOTHING");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(serde_json::Value::Array(events).to_string())
            .execute(&mut **tx)
            .await?;
        let edges: Vec<(&str, &str)> = rows.iter().flat_map(|r| r.refs(&r.prev_events)).collect();
        insert_edges(
            tx,
            dialect,
            "event_edges (stream_ordering, prev_event_id)",
            &edges,
        )
        .await?;
        let auth: Vec<(&str, &str)> = rows.iter().flat_map(|r| r.refs(&r.auth_events)).collect();
        insert_edges(
            tx,
            dialect,
            "event_auth (stream_ordering, auth_event_id)",
            &auth,
        )
        .await
    }

    /// Applies the net change of forward extremities a batch of events made.
    pub async fn apply_extremities(
        tx: &mut Tx<'_>,
        dialect: super::Dialect,
        changes: &ExtremityChanges,
    ) -> Result<()> {
        for (room_id, (removed, added)) in &changes.rooms {
            let mut removed: Vec<&String> = removed.iter().collect();
            let mut added: Vec<&String> = added.iter().collect();
            // The usual case, one event on the room's one head: move the head in one statement.
            if added.len() == 1 && !removed.is_empty() {
                let moved = sqlx::query(
                    "UPDATE forward_extremities SET event_id = $3 WHERE room_id = $1 AND event_id = $2
                     AND NOT EXISTS (SELECT 1 FROM forward_extremities WHERE room_id = $1 AND event_id = $3)",
                )
                .bind(room_id.as_str())
                .bind(removed[0].as_str())
                .bind(added[0].as_str())
                .execute(&mut **tx)
                .await?;
                if moved.rows_affected() > 0 {
                    removed.remove(0);
                    added.clear();
                }
            }
            for chunk in removed.chunks(256) {
                let n = padded_len(chunk.len());
                let sql = format!(
                    "DELETE FROM forward_extremities WHERE room_id = $1 AND event_id IN ({})",
                    placeholders(2, n)
                );
                let ids: Vec<&str> = chunk.iter().map(|id| id.as_str()).collect();
                let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id.as_str());
                bind_padded(q, &ids, "").execute(&mut **tx).await?;
            }
            let pairs: Vec<(&str, &str)> = added
                .iter()
                .map(|e| (room_id.as_str(), e.as_str()))
                .collect();
            insert_json_pairs(
                tx,
                dialect,
                "INSERT INTO forward_extremities (room_id, event_id)",
                &pairs,
            )
            .await?;
        }
        Ok(())
    }

    pub async fn txn_event_id(
        &self,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
    ) -> Result<Option<OwnedEventId>> {
        let row = sqlx::query(
            "SELECT event_id FROM events WHERE sender = $1 AND txn_device = $2 AND txn_id = $3",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(txn_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => OwnedEventId::try_from(r.try_get::<String, _>(0)?).ok(),
            None => None,
        })
    }

    /// The (event id, depth) of a room's forward extremities.
    pub async fn forward_extremities(&self, room_id: &RoomId) -> Result<Vec<(OwnedEventId, i64)>> {
        let rows = sqlx::query(
            "SELECT f.event_id, e.depth FROM forward_extremities f JOIN events e ON e.event_id = f.event_id
             WHERE f.room_id = $1",
        )
        .bind(room_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                Ok((
                    OwnedEventId::try_from(id).map_err(crate::error::Error::internal)?,
                    r.try_get(1)?,
                ))
            })
            .collect()
    }

    /// Fills the relation-target set from the stored events (at start-up).
    pub async fn load_relation_targets(&self) -> Result<()> {
        let rows =
            sqlx::query("SELECT DISTINCT relates_to FROM events WHERE relates_to IS NOT NULL")
                .fetch_all(&self.pool)
                .await?;
        for r in rows {
            let id: String = r.try_get(0)?;
            self.relation_targets().add(&id);
        }
        Ok(())
    }

    pub async fn get_pdu(&self, event_id: &str) -> Result<Option<Pdu>> {
        if let Some(p) = self.pdu_cache().get(event_id) {
            return Ok(Some(p));
        }
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE event_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        let pdu = row.as_ref().map(pdu_from_row).transpose()?;
        if let Some(p) = &pdu {
            self.pdu_cache().put(p);
        }
        Ok(pdu)
    }

    pub async fn get_pdus(&self, event_ids: &[String]) -> Result<Vec<Pdu>> {
        let mut out = Vec::with_capacity(event_ids.len());
        let mut missing = Vec::new();
        for id in event_ids {
            match self.pdu_cache().get(id) {
                Some(p) => out.push(p),
                None => missing.push(id.clone()),
            }
        }
        for chunk in missing.chunks(1024) {
            let n = padded_len(chunk.len());
            let placeholders: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({})",
                placeholders.join(",")
            );
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let q = bind_padded(sqlx::query(sqlx::AssertSqlSafe(sql)), &ids, "");
            for row in q.fetch_all(&self.pool).await? {
                let p = pdu_from_row(&row)?;
                self.pdu_cache().put(&p);
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Timeline events of a room after `since` (exclusive) up to `until` (inclusive), newest
    /// `limit` of them, returned oldest first; plus whether more were skipped.
    pub async fn room_timeline(
        &self,
        room_id: &str,
        since: i64,
        until: i64,
        limit: i64,
    ) -> Result<(Vec<Pdu>, bool)> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering > $2
             AND stream_ordering <= $3 AND outlier = 0 AND rejected = 0
             ORDER BY stream_ordering DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(since)
            .bind(until)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?;
        let limited = rows.len() as i64 > limit;
        let mut pdus = rows
            .iter()
            .take(limit as usize)
            .map(pdu_from_row)
            .collect::<Result<Vec<_>>>()?;
        pdus.reverse();
        Ok((pdus, limited))
    }

    /// Paginates a room's timeline from `from`, a point just before stream position `from`:
    /// backwards returns events with stream_ordering < from (newest first); forwards events
    /// >= from (oldest first).
    pub async fn room_messages(
        &self,
        room_id: &str,
        from: i64,
        backwards: bool,
        limit: i64,
    ) -> Result<Vec<Pdu>> {
        let sql = if backwards {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering < $2
                 AND outlier = 0 AND rejected = 0 ORDER BY stream_ordering DESC LIMIT $3"
            )
        } else {
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND stream_ordering >= $2
                 AND outlier = 0 AND rejected = 0 ORDER BY stream_ordering ASC LIMIT $3"
            )
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(from)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pdu_from_row).collect()
    }

    /// Timeline events of a room nearest a time: forwards, those at or after `ts` (oldest
    /// first); backwards, those at or before it (newest first); at most `limit`.
    pub async fn room_events_near_time(
        &self,
        room_id: &str,
        ts: i64,
        forwards: bool,
        limit: i64,
    ) -> Result<Vec<Pdu>> {
        let (cmp, order) = if forwards {
            (">=", "ASC")
        } else {
            ("<=", "DESC")
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE room_id = $1 AND origin_server_ts {cmp} $2
             AND outlier = 0 AND rejected = 0
             ORDER BY origin_server_ts {order}, stream_ordering {order} LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(ts)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pdu_from_row).collect()
    }

    /// Rooms (among `room_ids`) with timeline events after `since`.
    pub async fn latest_stream_per_room(&self, since: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT room_id, MAX(stream_ordering) FROM events WHERE stream_ordering > $1 AND outlier = 0 GROUP BY room_id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Replaces an event's stored JSON with its redacted form.
    pub async fn store_redaction(
        tx: &mut Tx<'_>,
        event_id: &str,
        redacted_json: &str,
        redacted_by: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3")
            .bind(redacted_json)
            .bind(redacted_by)
            .bind(event_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Events relating to `event_id` (directly, or up to `max_depth` relations deep), optionally
    /// by rel_type and event type. Positions follow the timeline tokens: backwards returns events
    /// with stream_ordering < `from` (newest first) down to `to` (inclusive); forwards events
    /// >= `from` (oldest first) up to `to` (exclusive).
    #[allow(clippy::too_many_arguments)]
    pub async fn relations(
        &self,
        room_id: &str,
        event_id: &str,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        from: Option<i64>,
        to: Option<i64>,
        backwards: bool,
        limit: i64,
        max_depth: i64,
    ) -> Result<Vec<Pdu>> {
        let (cmp, to_cmp, order) = if backwards {
            ("<", ">=", "DESC")
        } else {
            (">=", "<", "ASC")
        };
        let from = from.unwrap_or(if backwards { i64::MAX } else { i64::MIN });
        let to = to.unwrap_or(if backwards { i64::MIN } else { i64::MAX });
        let sql = format!(
            "WITH RECURSIVE rel (event_id, depth) AS (
                SELECT event_id, 1 FROM events WHERE room_id = $1 AND relates_to = $2
                UNION
                SELECT e.event_id, r.depth + 1 FROM events e JOIN rel r ON e.relates_to = r.event_id
                WHERE e.room_id = $1 AND r.depth < $8
             )
             SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN (SELECT event_id FROM rel)
             AND ($3 IS NULL OR rel_type = $3) AND ($4 IS NULL OR type = $4)
             AND stream_ordering {cmp} $5 AND stream_ordering {to_cmp} $6
             AND rejected = 0 AND outlier = 0
             ORDER BY stream_ordering {order} LIMIT $7"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room_id)
            .bind(event_id)
            .bind(rel_type)
            .bind(event_type)
            .bind(from)
            .bind(to)
            .bind(limit)
            .bind(max_depth)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pdu_from_row).collect()
    }

    /// Thread roots in a room (events with m.thread replies) as (root id, position of the latest
    /// reply), newest activity first, with latest reply before `from`. With `participant`, only
    /// threads that user started or replied in.
    pub async fn thread_roots(
        &self,
        room_id: &str,
        from: Option<i64>,
        limit: i64,
        participant: Option<&str>,
    ) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT e.thread_id, MAX(e.stream_ordering) AS latest FROM events e
             JOIN events r ON r.event_id = e.thread_id AND r.room_id = e.room_id
             WHERE e.room_id = $1 AND e.thread_id IS NOT NULL AND e.rejected = 0 AND e.outlier = 0
             AND r.rejected = 0
             AND ($4 IS NULL OR r.sender = $4 OR EXISTS (
                 SELECT 1 FROM events p WHERE p.thread_id = e.thread_id AND p.room_id = e.room_id
                 AND p.sender = $4 AND p.rejected = 0))
             GROUP BY e.thread_id HAVING MAX(e.stream_ordering) < $2 ORDER BY latest DESC LIMIT $3",
        )
        .bind(room_id)
        .bind(from.unwrap_or(i64::MAX))
        .bind(limit)
        .bind(participant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Thread summaries of these thread roots, given as (room, root event): (root, number of
    /// replies, latest reply's id). Replies are counted only in the root's own room.
    pub async fn thread_summaries(
        &self,
        roots: &[(&str, &str)],
    ) -> Result<Vec<(String, i64, String)>> {
        let mut out = Vec::new();
        for chunk in roots.chunks(1024) {
            let n = padded_len(chunk.len());
            let list = placeholders(1, n);
            let sql = format!(
                "SELECT s.room_id, s.thread_id, s.n, e.event_id FROM (
                    SELECT room_id, thread_id, COUNT(*) AS n, MAX(stream_ordering) AS latest
                    FROM events WHERE thread_id IN ({list}) AND rejected = 0 AND outlier = 0
                    GROUP BY room_id, thread_id
                 ) s JOIN events e ON e.stream_ordering = s.latest"
            );
            let ids: Vec<&str> = chunk.iter().map(|(_, id)| *id).collect();
            let q = bind_padded(sqlx::query(sqlx::AssertSqlSafe(sql)), &ids, "");
            for r in q.fetch_all(&self.pool).await? {
                let room: String = r.try_get(0)?;
                let root: String = r.try_get(1)?;
                if chunk.iter().any(|(rm, rt)| *rm == room && *rt == root) {
                    out.push((root, r.try_get(2)?, r.try_get(3)?));
                }
            }
        }
        Ok(out)
    }

    /// Which of these thread roots, given as (room, root event), `user_id` replied in.
    pub async fn threads_participated(
        &self,
        roots: &[(&str, &str)],
        user_id: &str,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for chunk in roots.chunks(1024) {
            let n = padded_len(chunk.len());
            let list = placeholders(2, n);
            let sql = format!(
                "SELECT DISTINCT room_id, thread_id FROM events WHERE sender = $1
                 AND thread_id IN ({list}) AND rejected = 0 AND outlier = 0"
            );
            let ids: Vec<&str> = chunk.iter().map(|(_, id)| *id).collect();
            let q = bind_padded(
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user_id),
                &ids,
                "",
            );
            for r in q.fetch_all(&self.pool).await? {
                let room: String = r.try_get(0)?;
                let root: String = r.try_get(1)?;
                if chunk.iter().any(|(rm, rt)| *rm == room && *rt == root) {
                    out.push(root);
                }
            }
        }
        Ok(out)
    }

    /// Unredacted m.replace events for these events, given as (room, event), in the same room:
    /// (replaced id, edit id, edit sender, edit type, edit origin_server_ts).
    pub async fn replacements(
        &self,
        events: &[(&str, &str)],
    ) -> Result<Vec<(String, String, String, String, i64)>> {
        let mut out = Vec::new();
        for chunk in events.chunks(1024) {
            let n = padded_len(chunk.len());
            let list = placeholders(1, n);
            let sql = format!(
                "SELECT room_id, relates_to, event_id, sender, type, origin_server_ts FROM events
                 WHERE relates_to IN ({list}) AND rel_type = 'm.replace'
                 AND rejected = 0 AND outlier = 0 AND redacted_by IS NULL"
            );
            let ids: Vec<&str> = chunk.iter().map(|(_, id)| *id).collect();
            let q = bind_padded(sqlx::query(sqlx::AssertSqlSafe(sql)), &ids, "");
            for r in q.fetch_all(&self.pool).await? {
                let room: String = r.try_get(0)?;
                let target: String = r.try_get(1)?;
                if chunk.iter().any(|(rm, ev)| *rm == room && *ev == target) {
                    out.push((
                        target,
                        r.try_get(2)?,
                        r.try_get(3)?,
                        r.try_get(4)?,
                        r.try_get(5)?,
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// A stored event's row, built by [`Db::event_row`].
pub struct EventRow {
    stream_ordering: i64,
    event_id: String,
    room_id: String,
    kind: String,
    state_key: Option<String>,
    sender: String,
    depth: i64,
    origin_server_ts: i64,
    json: String,
    state_after: Option<i64>,
    rejected: i64,
    outlier: i64,
    rel_type: Option<String>,
    relates_to: Option<String>,
    thread_id: Option<String>,
    txn_id: Option<String>,
    txn_device: Option<String>,
    unsigned: Option<String>,
    prev_events: Vec<String>,
    auth_events: Vec<String>,
}

impl EventRow {
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// (this event, referenced event) for each of `ids` (its prev or auth events).
    fn refs<'a>(&'a self, ids: &'a [String]) -> impl Iterator<Item = (&'a str, &'a str)> {
        ids.iter()
            .map(move |id| (self.event_id.as_str(), id.as_str()))
    }
}

/// The net change a batch of events makes to forward extremities, per room: the extremities
/// to remove and the events that become extremities.
#[derive(Default)]
pub struct ExtremityChanges {
    rooms: std::collections::HashMap<String, (std::collections::HashSet<String>, Vec<String>)>,
}

impl ExtremityChanges {
    /// `pdu` becomes a forward extremity and the events it references stop being ones.
    pub fn add(&mut self, pdu: &Pdu) {
        let (removed, added) = self.rooms.entry(pdu.room_id.to_string()).or_default();
        for prev in pdu.prev_events.iter() {
            match added.iter().position(|e| e == prev.as_str()) {
                Some(i) => {
                    added.remove(i);
                }
                None => {
                    removed.insert(prev.to_string());
                }
            }
        }
        if !added.iter().any(|e| e == pdu.event_id.as_str()) {
            added.push(pdu.event_id.to_string());
        }
    }
}

/// Inserts (a, b) text pairs as one JSON array in one statement (duplicates are skipped).
async fn insert_json_pairs(
    tx: &mut Tx<'_>,
    dialect: super::Dialect,
    insert: &str,
    pairs: &[(&str, &str)],
) -> Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    let select = match dialect {
        super::Dialect::Sqlite => "SELECT value->>0, value->>1 FROM json_each($1) WHERE true",
        super::Dialect::Postgres => {
            "SELECT v->>0, v->>1 FROM json_array_elements($1::json) AS e(v)"
        }
    };
    let array: Vec<[&str; 2]> = pairs.iter().map(|(a, b)| [*a, *b]).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "{insert} {select} ON CONFLICT DO NOTHING"
    )))
    .bind(serde_json::to_string(&array)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts (event id, other event id) edges into `table (stream_ordering, other)`, keyed by the
/// stored event's stream position (events already stored keep their position and edges).
async fn insert_edges(
    tx: &mut Tx<'_>,
    dialect: super::Dialect,
    table: &str,
    pairs: &[(&str, &str)],
) -> Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    let select = match dialect {
        super::Dialect::Sqlite => {
            "SELECT e.stream_ordering, j.value->>1 FROM json_each($1) j
             JOIN events e ON e.event_id = j.value->>0 WHERE true"
        }
        super::Dialect::Postgres => {
            "SELECT e.stream_ordering, j.v->>1 FROM json_array_elements($1::json) AS j(v)
             JOIN events e ON e.event_id = j.v->>0"
        }
    };
    let array: Vec<[&str; 2]> = pairs.iter().map(|(a, b)| [*a, *b]).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} {select} ON CONFLICT DO NOTHING"
    )))
    .bind(serde_json::to_string(&array)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The number of parameters a list of `n` takes: the next power of two, so that statements come
/// in a few shapes that stay in each connection's prepared-statement cache (the rest is padded
/// with values that match nothing).
pub fn padded_len(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

/// A query over the `Any` driver.
pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds `values`, then `pad` until [`padded_len`] of them are bound.
pub fn bind_padded<'q, T>(mut q: AnyQuery<'q>, values: &[T], pad: T) -> AnyQuery<'q>
where
    T: 'q + Copy + sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    for v in values {
        q = q.bind(*v);
    }
    for _ in values.len()..padded_len(values.len()) {
        q = q.bind(pad);
    }
    q
}

fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}
