//! Rooms, memberships (read side), aliases and the public directory.

use sqlx::Row;

use super::{Db, Tx, now_ms};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream_ordering: i64,
}

impl Db {
    pub async fn insert_room(
        tx: &mut Tx<'_>,
        room_id: &str,
        version: &str,
        creator: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(room_id)
            .bind(version)
            .bind(creator)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn room_version(&self, room_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT room_version FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<Member>> {
        let row = sqlx::query(
            "SELECT user_id, membership, event_id, stream_ordering FROM memberships WHERE room_id = $1 AND user_id = $2",
        )
        .bind(room_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| member_from_row(&r)).transpose()
    }

    /// Rooms where the user's membership is `membership`, with the membership's stream position.
    pub async fn rooms_with_membership(
        &self,
        user_id: &str,
        membership: &str,
    ) -> Result<Vec<(String, i64, String)>> {
        let rows = sqlx::query(
            "SELECT room_id, stream_ordering, event_id FROM memberships WHERE user_id = $1 AND membership = $2 AND forgotten = 0",
        )
        .bind(user_id)
        .bind(membership)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// Every room the user has a membership in (forgotten ones left out): (room, membership,
    /// stream position, membership event).
    pub async fn memberships_of_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, String, i64, String)>> {
        let rows = sqlx::query(
            "SELECT room_id, membership, stream_ordering, event_id FROM memberships WHERE user_id = $1 AND forgotten = 0",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect()
    }

    /// All membership rows of a user changed after `since` (for sync's joins, leaves and invites).
    pub async fn memberships_changed_since(
        &self,
        user_id: &str,
        since: i64,
    ) -> Result<Vec<(String, Member)>> {
        let rows = sqlx::query(
            "SELECT room_id, user_id, membership, event_id, stream_ordering FROM memberships
             WHERE user_id = $1 AND stream_ordering > $2 AND forgotten = 0",
        )
        .bind(user_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    Member {
                        user_id: r.try_get(1)?,
                        membership: r.try_get(2)?,
                        event_id: r.try_get(3)?,
                        stream_ordering: r.try_get(4)?,
                    },
                ))
            })
            .collect()
    }

    pub async fn room_members(&self, room_id: &str) -> Result<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT user_id, membership, event_id, stream_ordering FROM memberships WHERE room_id = $1 ORDER BY user_id",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(member_from_row).collect()
    }

    pub async fn joined_member_count(&self, room_id: &str, membership: &str) -> Result<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) FROM memberships WHERE room_id = $1 AND membership = $2")
                .bind(room_id)
                .bind(membership)
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get(0)?)
    }

    /// Users who share a joined room with `user_id` (including themselves).
    pub async fn users_sharing_rooms(&self, user_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT b.user_id FROM memberships a JOIN memberships b ON a.room_id = b.room_id
             WHERE a.user_id = $1 AND a.membership = 'join' AND b.membership = 'join'",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    pub async fn forget_room(&self, room_id: &str, user_id: &str) -> Result<()> {
        sqlx::query("UPDATE memberships SET forgotten = 1 WHERE room_id = $1 AND user_id = $2")
            .bind(room_id)
            .bind(user_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Whether the user has forgotten the room (since their last membership change).
    pub async fn has_forgotten(&self, room_id: &str, user_id: &str) -> Result<bool> {
        let row =
            sqlx::query("SELECT forgotten FROM memberships WHERE room_id = $1 AND user_id = $2")
                .bind(room_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .unwrap_or(0)
            != 0)
    }

    // Aliases

    pub async fn create_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<bool> {
        let res = sqlx::query("INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(alias)
            .bind(room_id)
            .bind(creator)
            .execute(&self.writer)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn resolve_alias(&self, alias: &str) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT room_id, creator FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    pub async fn delete_alias(&self, alias: &str) -> Result<bool> {
        let res = sqlx::query("DELETE FROM room_aliases WHERE alias = $1")
            .bind(alias)
            .execute(&self.writer)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn room_aliases(&self, room_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias")
            .bind(room_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    // Directory

    pub async fn set_published(&self, room_id: &str, published: bool) -> Result<()> {
        sqlx::query("UPDATE rooms SET published = $1 WHERE room_id = $2")
            .bind(published as i64)
            .bind(room_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn is_published(&self, room_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT published FROM rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .unwrap_or(0)
            != 0)
    }

    /// Users joined to the room (to name the servers that can resolve its aliases).
    pub async fn joined_member_ids(&self, room_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT user_id FROM memberships WHERE room_id = $1 AND membership = 'join' ORDER BY user_id",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// (type, event id) of the room's current state events with an empty state key among
    /// `types` (the fields of a directory entry: name, topic, join rules...).
    pub async fn current_state_ids_of_types(
        &self,
        room_id: &str,
        types: &[&str],
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT type, event_id FROM current_state WHERE room_id = $1 AND state_key = ''",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let kind: String = r.try_get(0)?;
            if types.contains(&kind.as_str()) {
                out.push((kind, r.try_get(1)?));
            }
        }
        Ok(out)
    }

    /// Published rooms with their joined member counts, largest first.
    pub async fn published_rooms(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT r.room_id, (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join') AS n
             FROM rooms r WHERE r.published = 1 ORDER BY n DESC, r.room_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}

fn member_from_row(r: &sqlx::any::AnyRow) -> Result<Member> {
    Ok(Member {
        user_id: r.try_get(0)?,
        membership: r.try_get(1)?,
        event_id: r.try_get(2)?,
        stream_ordering: r.try_get(3)?,
    })
}

impl Db {
    /// Membership changes after `since` in rooms the user is joined to (to spot new room-mates).
    pub async fn memberships_changed_since_in_my_rooms(
        &self,
        user_id: &str,
        since: i64,
    ) -> Result<Vec<(String, Member)>> {
        let rows = sqlx::query(
            "SELECT m.room_id, m.user_id, m.membership, m.event_id, m.stream_ordering FROM memberships m
             JOIN memberships mine ON mine.room_id = m.room_id AND mine.user_id = $1 AND mine.membership = 'join'
             WHERE m.stream_ordering > $2",
        )
        .bind(user_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    Member {
                        user_id: r.try_get(1)?,
                        membership: r.try_get(2)?,
                        event_id: r.try_get(3)?,
                        stream_ordering: r.try_get(4)?,
                    },
                ))
            })
            .collect()
    }
}
