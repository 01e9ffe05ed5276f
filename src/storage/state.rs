//! Room state, deduplicated.
//!
//! A state snapshot is a list of content-addressed blocks. Entries `(type, state_key, event_id)`
//! fall into one of [`BUCKETS`] buckets by a hash of `(type, state_key)`; each bucket's sorted
//! entries form a block stored once under the SHA-256 of its text. A state change rewrites one
//! block, so a room with 10,000 members does not write 10,000 rows per state change.
//! `current_state` and `memberships` are the fast-read tables kept beside it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Db, Tx};
use crate::error::{Error, Result};

pub const BUCKETS: usize = 64;

/// (event type, state key) → event id.
pub type StateMap = BTreeMap<(String, String), String>;

#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub blocks: Vec<Option<String>>,
    pub map: StateMap,
}

#[derive(Default)]
pub struct SnapshotCache {
    inner: Mutex<HashMap<i64, Arc<Snapshot>>>,
}

impl SnapshotCache {
    fn get(&self, id: i64) -> Option<Arc<Snapshot>> {
        self.inner.lock().ok()?.get(&id).cloned()
    }
    fn put(&self, id: i64, snap: Arc<Snapshot>) {
        if let Ok(mut m) = self.inner.lock() {
            if m.len() > 2048 {
                m.clear();
            }
            m.insert(id, snap);
        }
    }
}

fn bucket(kind: &str, state_key: &str) -> usize {
    // FNV-1a: stable across processes and versions.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in kind
        .bytes()
        .chain(std::iter::once(0))
        .chain(state_key.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % BUCKETS as u64) as usize
}

/// `base` with `changes` applied; only the buckets the changes touch are re-serialised.
/// Returns the snapshot and the (hash, text) of the blocks it introduces.
pub fn compute_snapshot(
    base: Option<&Snapshot>,
    changes: &[((String, String), String)],
) -> (Snapshot, Vec<(String, String)>) {
    let mut map = base.map(|b| b.map.clone()).unwrap_or_default();
    let mut blocks = base
        .map(|b| b.blocks.clone())
        .unwrap_or_else(|| vec![None; BUCKETS]);
    let mut touched = [false; BUCKETS];
    for (key, event_id) in changes {
        touched[bucket(&key.0, &key.1)] = true;
        map.insert(key.clone(), event_id.clone());
    }
    let mut new_blocks = Vec::new();
    for (b, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
        let entries: Vec<_> = map
            .iter()
            .filter(|(k, _)| bucket(&k.0, &k.1) == b)
            .collect();
        if entries.is_empty() {
            blocks[b] = None;
            continue;
        }
        let text = block_text(&entries);
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        blocks[b] = Some(hash.clone());
        new_blocks.push((hash, text));
    }
    (Snapshot { blocks, map }, new_blocks)
}

fn block_text(entries: &[(&(String, String), &String)]) -> String {
    let arr: Vec<[&str; 3]> = entries
        .iter()
        .map(|((t, k), e)| [t.as_str(), k.as_str(), e.as_str()])
        .collect();
    serde_json::to_string(&arr).unwrap_or_else(|_| "[]".into())
}

impl Db {
    /// Loads a snapshot (cached).
    /// The event ids of a snapshot's state.
    pub async fn snapshot_event_ids(&self, snapshot_id: i64) -> Result<Vec<String>> {
        Ok(self
            .load_snapshot(snapshot_id)
            .await?
            .map
            .values()
            .cloned()
            .collect())
    }

    pub async fn load_snapshot(&self, snapshot_id: i64) -> Result<Arc<Snapshot>> {
        if let Some(s) = self.snapshots().get(snapshot_id) {
            return Ok(s);
        }
        let row = sqlx::query("SELECT blocks FROM state_snapshots WHERE snapshot_id = $1")
            .bind(snapshot_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::internal(format!("state snapshot {snapshot_id} missing")))?;
        let blocks_text: String = row.try_get(0)?;
        let mut blocks: Vec<Option<String>> = vec![None; BUCKETS];
        let mut map = StateMap::new();
        for (i, h) in blocks_text.split(',').enumerate() {
            if h.is_empty() || i >= BUCKETS {
                continue;
            }
            let row = sqlx::query("SELECT entries FROM state_blocks WHERE hash = $1")
                .bind(h)
                .fetch_one(&self.pool)
                .await?;
            let text: String = row.try_get(0)?;
            let entries: Vec<[String; 3]> = serde_json::from_str(&text)?;
            for [t, k, e] in entries {
                map.insert((t, k), e);
            }
            blocks[i] = Some(h.to_owned());
        }
        let snap = Arc::new(Snapshot { blocks, map });
        self.snapshots().put(snapshot_id, snap.clone());
        Ok(snap)
    }

    /// Writes a snapshot computed by [`compute_snapshot`] and its new blocks.
    pub async fn write_snapshot(
        &self,
        tx: &mut Tx<'_>,
        room_id: &str,
        new_id: i64,
        snap: &Arc<Snapshot>,
        new_blocks: &[(String, String)],
    ) -> Result<()> {
        for (hash, text) in new_blocks {
            sqlx::query(
                "INSERT INTO state_blocks (hash, entries) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(hash)
            .bind(text)
            .execute(&mut **tx)
            .await?;
        }
        let blocks_text: Vec<&str> = snap
            .blocks
            .iter()
            .map(|b| b.as_deref().unwrap_or(""))
            .collect();
        sqlx::query(
            "INSERT INTO state_snapshots (snapshot_id, room_id, blocks) VALUES ($1, $2, $3)",
        )
        .bind(new_id)
        .bind(room_id)
        .bind(blocks_text.join(","))
        .execute(&mut **tx)
        .await?;
        self.snapshots().put(new_id, snap.clone());
        Ok(())
    }

    /// A fresh snapshot id (snapshot ids are their own sequence).
    pub fn next_snapshot_id(&self) -> i64 {
        self.inner
            .snapshot_ids
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// Sets one entry of a room's current state.
    pub async fn set_current_state(
        tx: &mut Tx<'_>,
        room_id: &str,
        kind: &str,
        state_key: &str,
        event_id: &str,
        stream_ordering: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO current_state (room_id, type, state_key, event_id, stream_ordering) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id,
             stream_ordering = excluded.stream_ordering",
        )
        .bind(room_id)
        .bind(kind)
        .bind(state_key)
        .bind(event_id)
        .bind(stream_ordering)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn set_membership(
        tx: &mut Tx<'_>,
        room_id: &str,
        user_id: &str,
        membership: &str,
        event_id: &str,
        sender: &str,
        stream_ordering: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO memberships (room_id, user_id, membership, event_id, sender, stream_ordering, forgotten)
             VALUES ($1, $2, $3, $4, $5, $6, 0)
             ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership,
             event_id = excluded.event_id, sender = excluded.sender,
             stream_ordering = excluded.stream_ordering, forgotten = 0",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(membership)
        .bind(event_id)
        .bind(sender)
        .bind(stream_ordering)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn current_state_event_id(
        &self,
        room_id: &str,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query("SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3")
            .bind(room_id)
            .bind(kind)
            .bind(state_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// The room's current state as a map.
    pub async fn current_state_map(&self, room_id: &str) -> Result<StateMap> {
        let rows =
            sqlx::query("SELECT type, state_key, event_id FROM current_state WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(&self.pool)
                .await?;
        let mut map = StateMap::new();
        for r in rows {
            map.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
        }
        Ok(map)
    }

    /// The snapshot id of the state after the latest event in the room.
    pub async fn latest_snapshot_id(&self, room_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT state_after FROM events WHERE room_id = $1 AND state_after IS NOT NULL AND outlier = 0
             AND rejected = 0 ORDER BY stream_ordering DESC LIMIT 1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// The state snapshot after a given event.
    pub async fn snapshot_after_event(&self, event_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT state_after FROM events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| r.try_get::<Option<i64>, _>(0).ok().flatten()))
    }

    /// The state at a stream position in a room: the snapshot after the last event at or before it.
    pub async fn snapshot_at_stream(&self, room_id: &str, stream: i64) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT state_after FROM events WHERE room_id = $1 AND stream_ordering <= $2 AND state_after IS NOT NULL
             AND outlier = 0 AND rejected = 0 ORDER BY stream_ordering DESC LIMIT 1",
        )
        .bind(room_id)
        .bind(stream)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, k: &str) -> (String, String) {
        (t.to_owned(), k.to_owned())
    }

    #[test]
    fn one_change_rewrites_one_block() {
        let changes: Vec<_> = (0..500)
            .map(|i| (key("m.room.member", &format!("@u{i}:x")), format!("$e{i}")))
            .collect();
        let (base, blocks) = compute_snapshot(None, &changes);
        assert_eq!(base.map.len(), 500);
        assert!(blocks.len() > 32, "members spread over many blocks");
        let (next, new_blocks) = compute_snapshot(
            Some(&base),
            &[(key("m.room.member", "@u7:x"), "$new".into())],
        );
        assert_eq!(new_blocks.len(), 1);
        assert_eq!(
            next.map
                .get(&key("m.room.member", "@u7:x"))
                .map(String::as_str),
            Some("$new")
        );
        let differing = base
            .blocks
            .iter()
            .zip(&next.blocks)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 1);
    }

    #[test]
    fn identical_state_gives_identical_blocks() {
        let c = vec![
            (key("m.room.create", ""), "$c".to_owned()),
            (key("m.room.name", ""), "$n".to_owned()),
        ];
        let (a, _) = compute_snapshot(None, &c);
        let mut rev = c.clone();
        rev.reverse();
        let (b, _) = compute_snapshot(None, &rev);
        assert_eq!(a.blocks, b.blocks);
    }
}
