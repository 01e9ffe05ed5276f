//! Federation storage: auth chains, outliers, the room's resolved current state, remote keys,
//! the durable outbound queue, inbound transaction ids and invites from other servers.

use std::collections::HashSet;

use sqlx::Row;

use super::{Db, Tx, now_ms};
use crate::error::Result;

/// One queued outbound item.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub kind: String,
    pub json: String,
}

/// A cached remote server key, and the signed response that listed it.
#[derive(Debug, Clone)]
pub struct StoredServerKey {
    pub key_id: String,
    pub public_key: String,
    pub valid_until_ts: i64,
    pub expired_ts: Option<i64>,
    pub key_json: String,
}

const JOINED_USERS: &str =
    "SELECT user_id FROM memberships WHERE room_id = $1 AND membership = 'join'";

fn servers_of(rows: &[sqlx::any::AnyRow]) -> Result<Vec<String>> {
    let mut servers: Vec<String> = Vec::new();
    for r in rows {
        let user: String = r.try_get(0)?;
        if let Some((_, server)) = user.split_once(':')
            && !servers.iter().any(|s| s == server)
        {
            servers.push(server.to_owned());
        }
    }
    Ok(servers)
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Db {
    /// Every event in the auth chains of `event_ids` (not including the events themselves),
    /// following the stored `event_auth` edges.
    pub async fn auth_chain_ids(&self, event_ids: &[String]) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        let mut frontier: Vec<String> = event_ids.to_vec();
        // Breadth-first over the auth DAG in batches; bounded by the chain's size.
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for chunk in frontier.chunks(500) {
                let sql = format!(
                    "SELECT DISTINCT a.auth_event_id FROM event_auth a
                     JOIN events e ON a.stream_ordering = e.stream_ordering
                     WHERE e.event_id IN ({})",
                    placeholders(1, chunk.len())
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(id.as_str());
                }
                for row in q.fetch_all(&self.pool).await? {
                    let id: String = row.try_get(0)?;
                    if out.insert(id.clone()) {
                        next.push(id);
                    }
                }
            }
            frontier = next;
        }
        Ok(out)
    }

    /// Which of `event_ids` are stored (as anything: timeline, outlier or rejected).
    pub async fn known_event_ids(&self, event_ids: &[String]) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        for chunk in event_ids.chunks(500) {
            let sql = format!(
                "SELECT event_id FROM events WHERE event_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id.as_str());
            }
            for row in q.fetch_all(&self.pool).await? {
                out.insert(row.try_get(0)?);
            }
        }
        Ok(out)
    }

    /// `(outlier, rejected)` of a stored event.
    pub async fn event_flags(&self, event_id: &str) -> Result<Option<(bool, bool)>> {
        let row = sqlx::query("SELECT outlier, rejected FROM events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get::<i64, _>(0)? != 0, r.try_get::<i64, _>(1)? != 0)),
            None => None,
        })
    }

    /// The lowest stream ordering in use (backfilled events count down from it).
    pub async fn lowest_stream_ordering(tx: &mut Tx<'_>) -> Result<i64> {
        let row = sqlx::query("SELECT MIN(stream_ordering) FROM events")
            .fetch_one(&mut **tx)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0).min(0))
    }

    /// Turns a stored outlier into a timeline event (it was fetched before it was reached).
    pub async fn delete_outlier(tx: &mut Tx<'_>, event_id: &str) -> Result<()> {
        // Its edges are keyed by the position it had; they come again with the event.
        for table in ["event_edges", "event_auth"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE stream_ordering IN
                 (SELECT stream_ordering FROM events WHERE event_id = $1 AND outlier = 1)"
            )))
            .bind(event_id)
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query("DELETE FROM events WHERE event_id = $1 AND outlier = 1")
            .bind(event_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Prev events of the room's timeline events that are not in the timeline here: where the
    /// history this server has begins (at most `limit` of them).
    pub async fn backward_extremities(&self, room_id: &str, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT ed.prev_event_id FROM events e
             JOIN event_edges ed ON ed.stream_ordering = e.stream_ordering
             LEFT JOIN events p ON p.event_id = ed.prev_event_id
             WHERE e.room_id = $1 AND e.outlier = 0 AND e.rejected = 0
             AND (p.event_id IS NULL OR p.outlier = 1)
             LIMIT $2",
        )
        .bind(room_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// The lowest stream ordering in use, outside a transaction.
    pub async fn lowest_position(&self) -> Result<i64> {
        let row = sqlx::query("SELECT MIN(stream_ordering) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0).min(0))
    }

    /// Every other server with a joined member in a room where `our_server` has one.
    pub async fn servers_sharing_rooms_with(&self, our_server: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT m.user_id FROM memberships m WHERE m.membership = 'join' AND m.room_id IN
             (SELECT room_id FROM memberships WHERE membership = 'join' AND user_id LIKE $1)",
        )
        .bind(format!("%:{our_server}"))
        .fetch_all(&self.pool)
        .await?;
        let mut servers = servers_of(&rows)?;
        servers.retain(|s| s != our_server);
        Ok(servers)
    }

    /// Servers with at least one joined member in the room.
    pub async fn joined_servers(&self, room_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(JOINED_USERS)
            .bind(room_id)
            .fetch_all(&self.pool)
            .await?;
        servers_of(&rows)
    }

    /// [`Db::joined_servers`] inside a write transaction (sees its uncommitted changes).
    pub async fn joined_servers_tx(&self, tx: &mut Tx<'_>, room_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(JOINED_USERS)
            .bind(room_id)
            .fetch_all(&mut **tx)
            .await?;
        servers_of(&rows)
    }

    // The room's resolved current state

    pub async fn set_current_snapshot(tx: &mut Tx<'_>, room_id: &str, snapshot: i64) -> Result<()> {
        sqlx::query("UPDATE rooms SET current_snapshot = $1 WHERE room_id = $2")
            .bind(snapshot)
            .bind(room_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn current_snapshot(&self, room_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT current_snapshot FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<i64>, _>(0)?,
            None => None,
        })
    }

    /// Removes a current-state entry (state resolution can drop a key only in odd cases).
    pub async fn delete_current_state(
        tx: &mut Tx<'_>,
        room_id: &str,
        kind: &str,
        state_key: &str,
    ) -> Result<()> {
        sqlx::query(
            "DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
        )
        .bind(room_id)
        .bind(kind)
        .bind(state_key)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    // Remote server keys

    pub async fn store_server_key(&self, server: &str, key: &StoredServerKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired_ts, key_json, fetched_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
             valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts,
             key_json = excluded.key_json, fetched_ts = excluded.fetched_ts",
        )
        .bind(server)
        .bind(&key.key_id)
        .bind(&key.public_key)
        .bind(key.valid_until_ts)
        .bind(key.expired_ts)
        .bind(&key.key_json)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn server_keys(&self, server: &str) -> Result<Vec<StoredServerKey>> {
        let rows = sqlx::query(
            "SELECT key_id, public_key, valid_until_ts, expired_ts, key_json FROM server_keys WHERE server_name = $1",
        )
        .bind(server)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredServerKey {
                    key_id: r.try_get(0)?,
                    public_key: r.try_get(1)?,
                    valid_until_ts: r.try_get(2)?,
                    expired_ts: r.try_get(3)?,
                    key_json: r.try_get(4)?,
                })
            })
            .collect()
    }

    // The outbound queue

    pub async fn enqueue_outbox(
        tx: &mut Tx<'_>,
        destination: &str,
        kind: &str,
        json: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO federation_outbox (destination, kind, json, created_ts) VALUES ($1, $2, $3, $4)",
        )
        .bind(destination)
        .bind(kind)
        .bind(json)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The oldest queued items for a destination: up to `max_pdus` PDUs and `max_edus` EDUs.
    pub async fn outbox_pending(
        &self,
        destination: &str,
        max_pdus: i64,
        max_edus: i64,
    ) -> Result<Vec<OutboxItem>> {
        let mut out = Vec::new();
        for (kind, limit) in [("pdu", max_pdus), ("edu", max_edus)] {
            let rows = sqlx::query(
                "SELECT id, kind, json FROM federation_outbox WHERE destination = $1 AND kind = $2
                 ORDER BY id LIMIT $3",
            )
            .bind(destination)
            .bind(kind)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                out.push(OutboxItem {
                    id: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    json: r.try_get(2)?,
                });
            }
        }
        out.sort_by_key(|i| i.id);
        Ok(out)
    }

    pub async fn outbox_ack(&self, destination: &str, ids: &[i64]) -> Result<()> {
        for chunk in ids.chunks(500) {
            let sql = format!(
                "DELETE FROM federation_outbox WHERE destination = $1 AND id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(destination);
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&self.writer).await?;
        }
        Ok(())
    }

    pub async fn outbox_destinations(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT destination FROM federation_outbox")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    // Inbound transactions (idempotent per origin + txn id)

    pub async fn federation_txn_response(
        &self,
        origin: &str,
        txn_id: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT response FROM federation_txns_in WHERE origin = $1 AND txn_id = $2",
        )
        .bind(origin)
        .bind(txn_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn store_federation_txn(
        &self,
        origin: &str,
        txn_id: &str,
        response: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO federation_txns_in (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4)
             ON CONFLICT (origin, txn_id) DO NOTHING",
        )
        .bind(origin)
        .bind(txn_id)
        .bind(response)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    // Invites from other servers

    pub async fn store_invite_state(
        tx: &mut Tx<'_>,
        room_id: &str,
        user_id: &str,
        event_id: &str,
        stripped: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO invite_state (room_id, user_id, event_id, stripped) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_id, user_id) DO UPDATE SET event_id = excluded.event_id, stripped = excluded.stripped",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(event_id)
        .bind(stripped)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn invite_state(&self, room_id: &str, user_id: &str) -> Result<Option<String>> {
        let row =
            sqlx::query("SELECT stripped FROM invite_state WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}
