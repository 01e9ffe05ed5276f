//! The migration runner: one ordered set per dialect, embedded in the binary.

use sqlx::Row;

use super::{Db, Dialect, now_ms};
use crate::error::Result;

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sqlite: include_str!(concat!("../../migrations/sqlite/", $name, ".sql")),
            postgres: include_str!(concat!("../../migrations/postgres/", $name, ".sql")),
        }
    };
}

const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_core"),
    migration!(2, "0002_federation"),
    migration!(3, "0003_media"),
    migration!(4, "0004_sync_indexes"),
    migration!(5, "0005_room_keys"),
    migration!(6, "0006_pushers"),
    migration!(7, "0007_event_tables"),
    migration!(8, "0008_server_state"),
    migration!(9, "0009_reports"),
    migration!(10, "0010_edges_by_position"),
];

pub async fn run(db: &Db) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    if db.dialect == Dialect::Postgres {
        // Several processes may start at once: one migrates, the others wait.
        sqlx::query("SELECT pg_advisory_xact_lock(7263519)")
            .execute(&mut *tx)
            .await?;
    }
    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    for m in MIGRATIONS {
        if applied.contains(&m.version) {
            continue;
        }
        tracing::info!(version = m.version, name = m.name, "applying migration");
        let sql = match db.dialect {
            Dialect::Sqlite => m.sqlite,
            Dialect::Postgres => m.postgres,
        };
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
