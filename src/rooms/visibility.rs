//! History visibility: which events a user may see (m.room.history_visibility).

use std::collections::HashMap;

use serde_json::Value;

use super::Pdu;
use crate::{error::Result, storage::Db};

/// Filters events down to those `user_id` may see, keeping order.
pub async fn filter_visible(db: &Db, user_id: &str, events: Vec<Pdu>) -> Result<Vec<Pdu>> {
    if events.is_empty() {
        return Ok(events);
    }
    let room_id = events[0].room_id.to_string();
    let current = db
        .membership(&room_id, user_id)
        .await?
        .map(|m| m.membership);
    filter_visible_as(db, user_id, events, current.as_deref() == Some("join")).await
}

/// [`filter_visible`] for a caller that already knows whether the user is joined to the room
/// now (all `events` are of one room).
pub async fn filter_visible_as(
    db: &Db,
    user_id: &str,
    events: Vec<Pdu>,
    currently_joined: bool,
) -> Result<Vec<Pdu>> {
    // (membership at event, visibility at event) per snapshot, memoised.
    let mut memo: HashMap<i64, (Option<String>, String)> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        let Some(snap_id) = ev.state_after else {
            continue;
        };
        if let std::collections::hash_map::Entry::Vacant(slot) = memo.entry(snap_id) {
            let snap = db.load_snapshot(snap_id).await?;
            let membership = match snap
                .map
                .get(&("m.room.member".to_owned(), user_id.to_owned()))
            {
                Some(id) => db.get_pdu(id).await?.and_then(|p| {
                    p.content_value()
                        .get("membership")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }),
                None => None,
            };
            let vis = match snap
                .map
                .get(&("m.room.history_visibility".to_owned(), String::new()))
            {
                Some(id) => db
                    .get_pdu(id)
                    .await?
                    .and_then(|p| {
                        p.content_value()
                            .get("history_visibility")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| "shared".into()),
                None => "shared".into(),
            };
            slot.insert((membership, vis));
        }
        let (membership, vis) = &memo[&snap_id];
        // A user's own membership event is always visible to them.
        let own_member =
            ev.state_key.as_deref() == Some(user_id) && ev.kind.to_string() == "m.room.member";
        let visible = own_member
            || match vis.as_str() {
                "world_readable" => true,
                "shared" => membership.as_deref() == Some("join") || currently_joined,
                "invited" => matches!(membership.as_deref(), Some("join" | "invite")),
                _ => membership.as_deref() == Some("join"),
            };
        if visible {
            out.push(ev);
        }
    }
    Ok(out)
}

/// Whether the user may read the room's current state and history at all.
pub async fn can_read_room(db: &Db, room_id: &str, user_id: &str) -> Result<bool> {
    if let Some(m) = db.membership(room_id, user_id).await? {
        if m.membership == "join" {
            return Ok(true);
        }
        // A former member keeps reading what they could see, until they forget the room.
        if (m.membership == "leave" || m.membership == "ban")
            && !db.has_forgotten(room_id, user_id).await?
        {
            return Ok(true);
        }
    }
    world_readable(db, room_id).await
}

async fn world_readable(db: &Db, room_id: &str) -> Result<bool> {
    Ok(
        super::current_state_content(db, room_id, "m.room.history_visibility", "")
            .await?
            .and_then(|c| {
                c.get("history_visibility")
                    .and_then(Value::as_str)
                    .map(|v| v == "world_readable")
            })
            .unwrap_or(false),
    )
}
