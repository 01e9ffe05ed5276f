//! Server-side key backups: backup versions (`room_key_versions`) and the keys stored in them
//! (`room_keys`).
//!
//! Every write runs in one transaction that first touches the version's row (`UPDATE … SET etag =
//! etag`): on PostgreSQL that row lock serialises concurrent writers to one backup across
//! processes; on SQLite the single writer connection already does. The etag is bumped in the
//! same transaction as the key change it stands for. The rules (which key wins, which version may
//! be written) come from `e2ee::backup`, handed in as closures.

use serde_json::Value;
use sqlx::Row;

use super::{Db, Tx};
use crate::error::Result;

/// One backup version as clients see it.
#[derive(Debug, Clone)]
pub struct BackupVersion {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: Value,
    pub etag: i64,
    /// Number of keys stored in this version.
    pub count: i64,
}

/// The metadata that decides whether an uploaded key replaces the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyMeta {
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
}

/// One backed-up session key.
#[derive(Debug, Clone)]
pub struct RoomKey {
    pub room_id: String,
    pub session_id: String,
    pub meta: KeyMeta,
    /// The algorithm-dependent (encrypted) session data, a JSON object.
    pub session_data: Value,
}

/// What a key upload found in the transaction that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionState {
    /// The named version exists and is not deleted.
    pub exists: bool,
    /// The user's current (highest, not deleted) version, if any.
    pub current: Option<i64>,
}

/// The key count and etag of a version after a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounts {
    pub count: i64,
    pub etag: i64,
}

/// Which keys of a version a read or delete is about.
#[derive(Debug, Clone, Copy)]
pub enum KeyScope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

fn bind_scope<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    scope: KeyScope<'q>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    match scope {
        KeyScope::All => q,
        KeyScope::Room(room) => q.bind(room),
        KeyScope::Session(room, session) => q.bind(room).bind(session),
    }
}

/// Locks the version row for the rest of the transaction; its etag when it exists and is not
/// deleted.
async fn lock_version(tx: &mut Tx<'_>, user_id: &str, version: i64) -> Result<Option<i64>> {
    let row = sqlx::query(
        "UPDATE room_key_versions SET etag = etag
         WHERE user_id = $1 AND version = $2 AND deleted = 0 RETURNING etag",
    )
    .bind(user_id)
    .bind(version)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
}

async fn current_version(tx: &mut Tx<'_>, user_id: &str) -> Result<Option<i64>> {
    let row = sqlx::query(
        "SELECT MAX(version) FROM room_key_versions WHERE user_id = $1 AND deleted = 0",
    )
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get::<Option<i64>, _>(0)?)
}

/// Bumps the etag when `changed`, and reads the count and etag.
async fn finish_key_write(
    tx: &mut Tx<'_>,
    user_id: &str,
    version: i64,
    etag: i64,
    changed: bool,
) -> Result<KeyCounts> {
    let etag = if changed {
        let row = sqlx::query(
            "UPDATE room_key_versions SET etag = etag + 1
             WHERE user_id = $1 AND version = $2 RETURNING etag",
        )
        .bind(user_id)
        .bind(version)
        .fetch_one(&mut **tx)
        .await?;
        row.try_get::<i64, _>(0)?
    } else {
        etag
    };
    let row = sqlx::query("SELECT COUNT(*) FROM room_keys WHERE user_id = $1 AND version = $2")
        .bind(user_id)
        .bind(version)
        .fetch_one(&mut **tx)
        .await?;
    Ok(KeyCounts {
        count: row.try_get::<i64, _>(0)?,
        etag,
    })
}

/// A row of the key read (`None` for the NULL row of a version without keys in scope).
fn room_key_of(r: &sqlx::any::AnyRow) -> Result<Option<RoomKey>> {
    let Some(room_id) = r.try_get::<Option<String>, _>(0)? else {
        return Ok(None);
    };
    let (Some(session_id), Some(first_message_index), Some(forwarded_count), Some(verified)) = (
        r.try_get::<Option<String>, _>(1)?,
        r.try_get::<Option<i64>, _>(2)?,
        r.try_get::<Option<i64>, _>(3)?,
        r.try_get::<Option<i64>, _>(4)?,
    ) else {
        return Err(crate::error::Error::internal(
            "room_keys row with NULL columns",
        ));
    };
    let Some(session_data) = r.try_get::<Option<String>, _>(5)? else {
        return Err(crate::error::Error::internal(
            "room_keys row with NULL session_data",
        ));
    };
    Ok(Some(RoomKey {
        room_id,
        session_id,
        meta: KeyMeta {
            first_message_index,
            forwarded_count,
            is_verified: verified != 0,
        },
        session_data: serde_json::from_str(&session_data)?,
    }))
}

impl Db {
    /// Creates the user's next backup version (one above any version ever created, deleted
    /// ones included) and returns its number.
    pub async fn create_backup_version(
        &self,
        user_id: &str,
        algorithm: &str,
        auth_data: &Value,
    ) -> Result<i64> {
        let auth_data = serde_json::to_string(auth_data)?;
        let mut tx = self.begin().await?;
        // Two processes creating at once on PostgreSQL pick the same number; the loser's insert
        // does nothing and it takes the next one.
        for _ in 0..8 {
            let row = sqlx::query(
                "INSERT INTO room_key_versions (user_id, version, algorithm, auth_data, etag, deleted)
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, 0, 0
                 FROM room_key_versions WHERE user_id = $4
                 ON CONFLICT (user_id, version) DO NOTHING RETURNING version",
            )
            .bind(user_id)
            .bind(algorithm)
            .bind(&auth_data)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                let version = row.try_get::<i64, _>(0)?;
                tx.commit().await?;
                return Ok(version);
            }
        }
        Err(crate::error::Error::internal(
            "could not allocate a backup version",
        ))
    }

    /// The named backup version, or the current one for `None`; `None` when it does not exist
    /// or was deleted.
    pub async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<BackupVersion>> {
        let row = match version {
            Some(version) => {
                sqlx::query(
                    "SELECT v.version, v.algorithm, v.auth_data, v.etag,
                         (SELECT COUNT(*) FROM room_keys k
                          WHERE k.user_id = v.user_id AND k.version = v.version)
                     FROM room_key_versions v
                     WHERE v.user_id = $1 AND v.deleted = 0 AND v.version = $2",
                )
                .bind(user_id)
                .bind(version)
                .fetch_optional(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT v.version, v.algorithm, v.auth_data, v.etag,
                         (SELECT COUNT(*) FROM room_keys k
                          WHERE k.user_id = v.user_id AND k.version = v.version)
                     FROM room_key_versions v
                     WHERE v.user_id = $1 AND v.deleted = 0
                     ORDER BY v.version DESC LIMIT 1",
                )
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        row.map(|r| {
            Ok(BackupVersion {
                version: r.try_get(0)?,
                algorithm: r.try_get(1)?,
                auth_data: serde_json::from_str(&r.try_get::<String, _>(2)?)?,
                etag: r.try_get(3)?,
                count: r.try_get(4)?,
            })
        })
        .transpose()
    }

    /// Replaces the `auth_data` of an existing version after `check` accepted the stored
    /// algorithm. Returns false when the version does not exist or was deleted.
    pub async fn update_backup_version<F>(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &Value,
        check: F,
    ) -> Result<bool>
    where
        F: FnOnce(&str) -> Result<()>,
    {
        let auth_data = serde_json::to_string(auth_data)?;
        let mut tx = self.begin().await?;
        if lock_version(&mut tx, user_id, version).await?.is_none() {
            return Ok(false);
        }
        let row = sqlx::query(
            "SELECT algorithm FROM room_key_versions WHERE user_id = $1 AND version = $2",
        )
        .bind(user_id)
        .bind(version)
        .fetch_one(&mut *tx)
        .await?;
        check(&row.try_get::<String, _>(0)?)?;
        sqlx::query(
            "UPDATE room_key_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3",
        )
        .bind(&auth_data)
        .bind(user_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes a version and all its keys. Returns false when it did not exist or was already
    /// deleted. The row stays (marked deleted) so its number is not handed out again.
    pub async fn delete_backup_version(&self, user_id: &str, version: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let res = sqlx::query(
            "UPDATE room_key_versions SET deleted = 1, etag = etag + 1
             WHERE user_id = $1 AND version = $2 AND deleted = 0",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM room_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores uploaded keys in one transaction. `check` sees whether the version exists and
    /// which one is current, and may refuse the whole upload; `replace(stored, new)` says
    /// whether a new key replaces a stored one for the same session.
    pub async fn put_room_keys<C, R>(
        &self,
        user_id: &str,
        version: i64,
        keys: &[RoomKey],
        check: C,
        replace: R,
    ) -> Result<KeyCounts>
    where
        C: FnOnce(VersionState) -> Result<()>,
        R: Fn(&KeyMeta, &KeyMeta) -> bool,
    {
        let mut tx = self.begin().await?;
        let etag = lock_version(&mut tx, user_id, version).await?;
        let current = current_version(&mut tx, user_id).await?;
        check(VersionState {
            exists: etag.is_some(),
            current,
        })?;
        let Some(etag) = etag else {
            return Err(crate::error::Error::not_found("Unknown backup version"));
        };
        let mut changed = false;
        for key in keys {
            let row = sqlx::query(
                "SELECT first_message_index, forwarded_count, is_verified FROM room_keys
                 WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = row {
                let stored = KeyMeta {
                    first_message_index: r.try_get(0)?,
                    forwarded_count: r.try_get(1)?,
                    is_verified: r.try_get::<i64, _>(2)? != 0,
                };
                if !replace(&stored, &key.meta) {
                    continue;
                }
            }
            sqlx::query(
                "INSERT INTO room_keys (user_id, version, room_id, session_id, first_message_index,
                     forwarded_count, is_verified, session_data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
                     first_message_index = excluded.first_message_index,
                     forwarded_count = excluded.forwarded_count,
                     is_verified = excluded.is_verified,
                     session_data = excluded.session_data",
            )
            .bind(user_id)
            .bind(version)
            .bind(&key.room_id)
            .bind(&key.session_id)
            .bind(key.meta.first_message_index)
            .bind(key.meta.forwarded_count)
            .bind(key.meta.is_verified as i64)
            .bind(serde_json::to_string(&key.session_data)?)
            .execute(&mut *tx)
            .await?;
            changed = true;
        }
        let counts = finish_key_write(&mut tx, user_id, version, etag, changed).await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// The keys of a version in `scope`, ordered by room and session; `None` when the version
    /// does not exist or was deleted.
    pub async fn room_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: KeyScope<'_>,
    ) -> Result<Option<Vec<RoomKey>>> {
        // One statement (so one snapshot): no row when the version does not exist, one row of
        // NULLs when it holds no keys in scope.
        let sql = match scope {
            KeyScope::All => {
                "SELECT k.room_id, k.session_id, k.first_message_index, k.forwarded_count,
                     k.is_verified, k.session_data
                 FROM room_key_versions v LEFT JOIN room_keys k
                     ON k.user_id = v.user_id AND k.version = v.version
                 WHERE v.user_id = $1 AND v.version = $2 AND v.deleted = 0
                 ORDER BY k.room_id, k.session_id"
            }
            KeyScope::Room(_) => {
                "SELECT k.room_id, k.session_id, k.first_message_index, k.forwarded_count,
                     k.is_verified, k.session_data
                 FROM room_key_versions v LEFT JOIN room_keys k
                     ON k.user_id = v.user_id AND k.version = v.version AND k.room_id = $3
                 WHERE v.user_id = $1 AND v.version = $2 AND v.deleted = 0
                 ORDER BY k.session_id"
            }
            KeyScope::Session(..) => {
                "SELECT k.room_id, k.session_id, k.first_message_index, k.forwarded_count,
                     k.is_verified, k.session_data
                 FROM room_key_versions v LEFT JOIN room_keys k
                     ON k.user_id = v.user_id AND k.version = v.version AND k.room_id = $3
                     AND k.session_id = $4
                 WHERE v.user_id = $1 AND v.version = $2 AND v.deleted = 0"
            }
        };
        let rows = bind_scope(sqlx::query(sql).bind(user_id).bind(version), scope)
            .fetch_all(&self.pool)
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut keys = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(key) = room_key_of(r)? {
                keys.push(key);
            }
        }
        Ok(Some(keys))
    }

    /// Deletes the keys of a version in `scope`; `None` when the version does not exist or was
    /// deleted.
    pub async fn delete_room_keys(
        &self,
        user_id: &str,
        version: i64,
        scope: KeyScope<'_>,
    ) -> Result<Option<KeyCounts>> {
        let mut tx = self.begin().await?;
        let Some(etag) = lock_version(&mut tx, user_id, version).await? else {
            return Ok(None);
        };
        let sql = match scope {
            KeyScope::All => "DELETE FROM room_keys WHERE user_id = $1 AND version = $2",
            KeyScope::Room(_) => {
                "DELETE FROM room_keys WHERE user_id = $1 AND version = $2 AND room_id = $3"
            }
            KeyScope::Session(..) => {
                "DELETE FROM room_keys WHERE user_id = $1 AND version = $2 AND room_id = $3
                 AND session_id = $4"
            }
        };
        let res = bind_scope(sqlx::query(sql).bind(user_id).bind(version), scope)
            .execute(&mut *tx)
            .await?;
        let counts =
            finish_key_write(&mut tx, user_id, version, etag, res.rows_affected() > 0).await?;
        tx.commit().await?;
        Ok(Some(counts))
    }

    /// Removes every backup version and key of a user (account deactivation).
    pub async fn delete_user_backups(&self, user_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM room_keys WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM room_key_versions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
