//! The user directory: which local users a searcher may find.

use sqlx::Row;

use super::Db;
use crate::error::Result;

/// One user directory hit.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_escape(term: &str) -> String {
    let mut out = String::with_capacity(term.len());
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Db {
    /// Active local users whose user id or display name contains `term` (case-insensitively)
    /// and who are visible to `searcher`: they share a joined room with the searcher, or are
    /// joined to a public room (published in the directory, publicly joinable or world-readable,
    /// as Synapse counts them). Prefix matches come first; at most `limit` rows.
    pub async fn search_user_directory(
        &self,
        searcher: &str,
        term: &str,
        limit: i64,
    ) -> Result<Vec<DirectoryUser>> {
        let escaped = like_escape(&term.to_lowercase());
        let contains = format!("%{escaped}%");
        let prefix = format!("{escaped}%");
        let id_prefix = format!("@{escaped}%");
        let rows = sqlx::query(
            "SELECT u.user_id, u.displayname, u.avatar_url FROM users u
             WHERE u.deactivated = 0
               AND (LOWER(u.user_id) LIKE $1 ESCAPE '\\'
                    OR LOWER(COALESCE(u.displayname, '')) LIKE $1 ESCAPE '\\')
               AND (EXISTS (
                       SELECT 1 FROM memberships a JOIN memberships b ON a.room_id = b.room_id
                       WHERE a.user_id = $2 AND a.membership = 'join'
                         AND b.user_id = u.user_id AND b.membership = 'join')
                    OR EXISTS (
                       SELECT 1 FROM memberships m JOIN rooms r ON r.room_id = m.room_id
                       WHERE m.user_id = u.user_id AND m.membership = 'join' AND r.published = 1)
                    OR EXISTS (
                       SELECT 1 FROM memberships m
                       JOIN current_state cs ON cs.room_id = m.room_id AND cs.state_key = ''
                       JOIN events e ON e.event_id = cs.event_id
                       WHERE m.user_id = u.user_id AND m.membership = 'join'
                         AND ((cs.type = 'm.room.join_rules'
                               AND e.json LIKE '%\"join_rule\":\"public\"%')
                           OR (cs.type = 'm.room.history_visibility'
                               AND e.json LIKE '%\"history_visibility\":\"world_readable\"%'))))
             ORDER BY CASE WHEN LOWER(u.user_id) LIKE $3 ESCAPE '\\'
                             OR LOWER(COALESCE(u.displayname, '')) LIKE $4 ESCAPE '\\'
                      THEN 0 ELSE 1 END,
                      u.user_id
             LIMIT $5",
        )
        .bind(contains)
        .bind(searcher)
        .bind(id_prefix)
        .bind(prefix)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DirectoryUser {
                    user_id: r.try_get(0)?,
                    displayname: r.try_get(1)?,
                    avatar_url: r.try_get(2)?,
                })
            })
            .collect()
    }
}
