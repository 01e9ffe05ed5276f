//! Storage: one interface in front of SQLite (embedded, the default) and PostgreSQL.
//!
//! Both databases are reached through sqlx's `Any` driver with the same SQL text (numbered
//! `$N` parameters, `ON CONFLICT`, `RETURNING` are common to both); where the dialects differ the
//! code asks [`Dialect`]. Each dialect has its own migration set under `migrations/`.
//!
//! Writes that create stream positions (events, receipts, account data, to-device, device lists,
//! presence) go through [`Db::write`], which hands out the next position and commits before the
//! position becomes visible, so readers never see a gap filled in later.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use sqlx::{
    Any, AnyPool, Row, Transaction,
    any::{AnyPoolOptions, install_default_drivers},
};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

pub mod account_data;
pub mod devices;
pub mod directory;
pub mod edus;
pub mod events;
pub mod federation;
pub mod keys;
pub mod media;
pub mod migrations;
pub mod openid;
pub mod presence;
pub mod profile;
pub mod push_rules;
pub mod pushers;
pub mod receipts;
pub mod reports;
pub mod room_keys;
pub mod rooms;
pub mod search;
pub mod server_state;
pub mod state;
pub mod sync;
pub mod users;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

pub type Tx<'a> = Transaction<'a, Any>;

/// The database handle shared by the whole server.
#[derive(Clone)]
pub struct Db {
    /// Readers (and, on PostgreSQL, writers too).
    pub pool: AnyPool,
    /// The single writer connection for SQLite; the same pool on PostgreSQL. Use it for writes.
    pub writer: AnyPool,
    pub dialect: Dialect,
    inner: Arc<DbInner>,
}

struct DbInner {
    /// Highest committed stream position.
    stream: AtomicI64,
    /// Serialises stream-allocating writes so positions commit in order.
    write_lock: Arc<Mutex<()>>,
    snapshots: state::SnapshotCache,
    /// Last allocated state snapshot id.
    snapshot_ids: AtomicI64,
    /// Recently used events (PDUs are immutable but for redaction, which invalidates).
    pdus: events::PduCache,
    /// Ids of events that other events relate to (edits, thread replies, annotations…).
    relation_targets: events::RelationTargets,
    tokens: users::TokenCache,
    /// Per [`StreamKind`]: the highest position written (or about to be), from the highest
    /// stored at start-up on.
    marks: [AtomicI64; STREAM_KINDS],
}

/// What stream positions are written for, so that a reader can tell that nothing of a kind
/// happened after a position without asking the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Events = 0,
    Receipts,
    AccountData,
    Presence,
    ToDevice,
    DeviceLists,
    /// Membership rows (also changed by event writes that carry member events).
    Memberships,
    Filters,
}

const STREAM_KINDS: usize = 8;

/// How often the SQLite WAL is checkpointed in the background (when anything was written).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

impl Db {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            Dialect::Postgres
        };
        let (pool, writer) = match dialect {
            Dialect::Sqlite => {
                let url = sqlite_url(url)?;
                let opts = || {
                    AnyPoolOptions::new()
                        .acquire_timeout(Duration::from_secs(30))
                        // A local file: nothing to test a connection for before each use,
                        // and the ping is a hand-over to the connection's thread and back.
                        .test_before_acquire(false)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                sqlx::raw_sql(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = OFF; \
                                     PRAGMA cache_size = -4000;",
                                )
                                .execute(conn)
                                .await?;
                                Ok(())
                            })
                        })
                };
                // The writer never checkpoints on commit: a background task does it (see
                // `spawn_checkpointer`), so a commit never waits for the WAL to be copied back.
                // After a burst the WAL file is cut back to 64 MiB when it starts over.
                let writer = opts()
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::raw_sql(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                 PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = OFF; \
                                 PRAGMA cache_size = -4000; PRAGMA wal_autocheckpoint = 0; \
                                 PRAGMA journal_size_limit = 67108864;",
                            )
                            .execute(conn)
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?;
                let pool = opts()
                    .max_connections(max_connections.max(2))
                    .connect(&url)
                    .await?;
                (pool, writer)
            }
            Dialect::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?;
                (pool.clone(), pool)
            }
        };
        let db = Db {
            pool,
            writer,
            dialect,
            inner: Arc::new(DbInner {
                stream: AtomicI64::new(0),
                write_lock: Arc::new(Mutex::new(())),
                snapshots: state::SnapshotCache::default(),
                snapshot_ids: AtomicI64::new(0),
                pdus: events::PduCache::default(),
                relation_targets: events::RelationTargets::default(),
                tokens: users::TokenCache::default(),
                marks: Default::default(),
            }),
        };
        migrations::run(&db).await?;
        db.load_relation_targets().await?;
        let max = db.max_stream_position().await?;
        db.inner.stream.store(max, Ordering::SeqCst);
        for m in &db.inner.marks {
            m.store(max, Ordering::SeqCst);
        }
        let max_snap = sqlx::query("SELECT MAX(snapshot_id) FROM state_snapshots")
            .fetch_one(&db.pool)
            .await?;
        db.inner.snapshot_ids.store(
            max_snap.try_get::<Option<i64>, _>(0)?.unwrap_or(0),
            Ordering::SeqCst,
        );
        Ok(db)
    }

    pub(crate) fn snapshots(&self) -> &state::SnapshotCache {
        &self.inner.snapshots
    }

    pub(crate) fn pdu_cache(&self) -> &events::PduCache {
        &self.inner.pdus
    }

    pub(crate) fn token_cache(&self) -> &users::TokenCache {
        &self.inner.tokens
    }

    pub(crate) fn relation_targets(&self) -> &events::RelationTargets {
        &self.inner.relation_targets
    }

    /// Whether anything of `kind` may have been written after position `since`.
    pub fn changed_since(&self, kind: StreamKind, since: i64) -> bool {
        self.inner.marks[kind as usize].load(Ordering::SeqCst) > since
    }

    /// The highest committed stream position.
    pub fn stream_position(&self) -> i64 {
        self.inner.stream.load(Ordering::SeqCst)
    }

    /// A plain write transaction (no stream position).
    pub async fn begin(&self) -> Result<Tx<'static>> {
        Ok(self.writer.begin().await?)
    }

    /// Starts a write that allocates `count` stream positions. Positions are handed out in
    /// order and published only by [`StreamWrite::commit`], after the transaction commits; other
    /// stream writes wait meanwhile, so readers never see a gap that is filled in later.
    /// `kind` says what the positions are for (see [`Db::changed_since`]).
    pub async fn begin_stream(&self, count: i64, kind: StreamKind) -> Result<StreamWrite> {
        let guard = self.inner.write_lock.clone().lock_owned().await;
        let first = self.inner.stream.load(Ordering::SeqCst) + 1;
        let tx = self.writer.begin().await?;
        Ok(StreamWrite {
            tx,
            kinds: vec![kind],
            first,
            last: first + count - 1,
            inner: self.inner.clone(),
            _guard: guard,
        })
    }

    /// SQLite: copies the WAL back into the database file in the background (the writer
    /// connection does not checkpoint on commit). A passive checkpoint waits for nobody; the
    /// WAL starts over once one has copied everything.
    pub fn spawn_checkpointer(&self) {
        if self.dialect != Dialect::Sqlite {
            return;
        }
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_optional(&pool)
                    .await
                {
                    tracing::warn!("WAL checkpoint failed: {e}");
                }
            }
        });
    }

    async fn max_stream_position(&self) -> Result<i64> {
        let row = sqlx::query(
            "SELECT MAX(m) FROM (
                SELECT MAX(stream_ordering) AS m FROM events
                UNION ALL SELECT MAX(stream_id) FROM account_data
                UNION ALL SELECT MAX(stream_id) FROM receipts
                UNION ALL SELECT MAX(stream_id) FROM presence
                UNION ALL SELECT MAX(stream_id) FROM to_device
                UNION ALL SELECT MAX(stream_id) FROM device_list_changes
                UNION ALL SELECT MAX(filter_id) FROM filters
            ) AS t",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.unwrap_or(0))
    }
}

/// A transaction holding freshly allocated stream positions `first..=last`.
pub struct StreamWrite {
    pub tx: Tx<'static>,
    kinds: Vec<StreamKind>,
    pub first: i64,
    pub last: i64,
    inner: Arc<DbInner>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl StreamWrite {
    /// The write also changes data of this kind.
    pub fn also(&mut self, kind: StreamKind) {
        if !self.kinds.contains(&kind) {
            self.kinds.push(kind);
        }
    }

    /// Commits, then publishes the positions. Returns the last position. The per-kind marks
    /// move on before the commit, so a reader that sees the data also sees the mark.
    pub async fn commit(self) -> Result<i64> {
        for k in &self.kinds {
            self.inner.marks[*k as usize].fetch_max(self.last, Ordering::SeqCst);
        }
        self.tx.commit().await?;
        self.inner.stream.store(self.last, Ordering::SeqCst);
        Ok(self.last)
    }
}

/// `sqlite://PATH` → a URL sqlx accepts, creating the file and its directory when missing.
fn sqlite_url(url: &str) -> Result<String> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if path.is_empty() || path == ":memory:" {
        return Err(Error::internal("database.url: SQLite needs a file path"));
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", parent.display())))?;
    }
    let mut out = format!("sqlite://{path}?mode=rwc");
    if !query.is_empty() {
        out.push('&');
        out.push_str(query);
    }
    Ok(out)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
