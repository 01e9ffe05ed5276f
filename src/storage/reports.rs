//! Content reports (the `reports` table): what users reported, for the administrators.

use sqlx::Row;

use super::Db;
use crate::error::Result;

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Event,
    Room,
    User,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::Event => "event",
            ReportKind::Room => "room",
            ReportKind::User => "user",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub id: i64,
    pub reporter: String,
    pub room_id: Option<String>,
    pub event_id: Option<String>,
    pub target_user: Option<String>,
    pub reason: Option<String>,
    pub score: Option<i64>,
    pub received_ts: i64,
}

/// A new report; `id` and `received_ts` are given by the store.
pub struct NewReport<'a> {
    pub kind: ReportKind,
    pub reporter: &'a str,
    pub room_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub target_user: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub score: Option<i64>,
}

/// Which reports to list: one kind, optionally one room and one reporter, a page of them.
pub struct ReportQuery<'a> {
    pub kind: ReportKind,
    pub room_id: Option<&'a str>,
    pub reporter: Option<&'a str>,
    pub offset: i64,
    pub limit: i64,
    pub newest_first: bool,
}

const COLUMNS: &str = "id, reporter, room_id, event_id, target_user, reason, score, received_ts";

fn report_from_row(r: &sqlx::any::AnyRow) -> Result<Report> {
    Ok(Report {
        id: r.try_get(0)?,
        reporter: r.try_get(1)?,
        room_id: r.try_get(2)?,
        event_id: r.try_get(3)?,
        target_user: r.try_get(4)?,
        reason: r.try_get(5)?,
        score: r.try_get(6)?,
        received_ts: r.try_get(7)?,
    })
}

impl Db {
    pub async fn insert_report(&self, r: NewReport<'_>) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO reports (kind, reporter, room_id, event_id, target_user, reason, score, received_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(r.kind.as_str())
        .bind(r.reporter)
        .bind(r.room_id)
        .bind(r.event_id)
        .bind(r.target_user)
        .bind(r.reason)
        .bind(r.score)
        .bind(super::now_ms())
        .fetch_one(&self.writer)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// A page of reports and how many match in all.
    pub async fn reports(&self, q: &ReportQuery<'_>) -> Result<(Vec<Report>, i64)> {
        let filter = "kind = $1 AND ($2 IS NULL OR room_id = $2) AND ($3 IS NULL OR reporter = $3)";
        let order = if q.newest_first { "DESC" } else { "ASC" };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM reports WHERE {filter} ORDER BY id {order} LIMIT $4 OFFSET $5"
        )))
        .bind(q.kind.as_str())
        .bind(q.room_id)
        .bind(q.reporter)
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&self.pool)
        .await?;
        let count = format!("SELECT COUNT(*) FROM reports WHERE {filter}");
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(count))
            .bind(q.kind.as_str())
            .bind(q.room_id)
            .bind(q.reporter)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let reports = rows.iter().map(report_from_row).collect::<Result<_>>()?;
        Ok((reports, total))
    }

    pub async fn report(&self, kind: ReportKind, id: i64) -> Result<Option<Report>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM reports WHERE kind = $1 AND id = $2"
        )))
        .bind(kind.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(report_from_row).transpose()
    }

    /// Whether the user is local or has been seen in a room this server knows.
    pub async fn user_known(&self, user_id: &str) -> Result<bool> {
        if self.user_exists(user_id).await? {
            return Ok(true);
        }
        let row = sqlx::query("SELECT 1 FROM memberships WHERE user_id = $1 LIMIT 1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Removes a report; false when there was none.
    pub async fn delete_report(&self, kind: ReportKind, id: i64) -> Result<bool> {
        let done = sqlx::query("DELETE FROM reports WHERE kind = $1 AND id = $2")
            .bind(kind.as_str())
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
