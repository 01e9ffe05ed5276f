//! Message search: a scan of the given rooms' events for texts holding every search word
//! (case-insensitive substring match; there is no full-text index yet).

use super::{
    Db, Dialect,
    events::{EVENT_COLUMNS, pdu_from_row},
};
use crate::{error::Result, rooms::Pdu};

/// Which content field a search looks in, and the event type that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKey {
    Body,
    Name,
    Topic,
}

impl SearchKey {
    pub fn parse(key: &str) -> Option<Self> {
        match key {
            "content.body" => Some(SearchKey::Body),
            "content.name" => Some(SearchKey::Name),
            "content.topic" => Some(SearchKey::Topic),
            _ => None,
        }
    }

    fn event_type(self) -> &'static str {
        match self {
            SearchKey::Body => "m.room.message",
            SearchKey::Name => "m.room.name",
            SearchKey::Topic => "m.room.topic",
        }
    }

    /// The content field searched.
    pub fn field(self) -> &'static str {
        match self {
            SearchKey::Body => "body",
            SearchKey::Name => "name",
            SearchKey::Topic => "topic",
        }
    }
}

/// One room's part of a search: events below `before` (a stream position, exclusive).
pub struct SearchRoom<'a> {
    pub room_id: &'a str,
    pub before: i64,
}

/// `%word%` for LIKE, with the pattern characters escaped (by `\`).
fn like_pattern(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('%');
    for c in word.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Db {
    /// The newest `limit` accepted, unredacted events of `rooms` whose `key` field holds every
    /// one of `words`, newest first.
    pub async fn search_events(
        &self,
        rooms: &[SearchRoom<'_>],
        words: &[String],
        key: SearchKey,
        limit: i64,
    ) -> Result<Vec<Pdu>> {
        if rooms.is_empty() || words.is_empty() {
            return Ok(Vec::new());
        }
        let field = match self.dialect {
            Dialect::Sqlite => format!("lower(json_extract(json, '$.content.{}'))", key.field()),
            Dialect::Postgres => format!("lower((json::jsonb) #>> '{{content,{}}}')", key.field()),
        };
        // $1 type, $2 limit, then (room, before) pairs, then the word patterns.
        let room_terms: Vec<String> = (0..rooms.len())
            .map(|i| {
                format!(
                    "(room_id = ${} AND stream_ordering < ${})",
                    3 + 2 * i,
                    4 + 2 * i
                )
            })
            .collect();
        let first_word = 3 + 2 * rooms.len();
        let word_terms: Vec<String> = (0..words.len())
            .map(|i| format!("{field} LIKE ${} ESCAPE '\\'", first_word + i))
            .collect();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE type = $1 AND outlier = 0 AND rejected = 0
             AND redacted_by IS NULL AND ({}) AND {} ORDER BY stream_ordering DESC LIMIT $2",
            room_terms.join(" OR "),
            word_terms.join(" AND ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(key.event_type())
            .bind(limit);
        for r in rooms {
            q = q.bind(r.room_id).bind(r.before);
        }
        for w in words {
            q = q.bind(like_pattern(w));
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(pdu_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("Hello"), "%hello%");
        assert_eq!(like_pattern("50%_x\\"), "%50\\%\\_x\\\\%");
    }
}
