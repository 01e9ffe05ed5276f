//! `GET /notifications`: the events the user's push rules made notify, newest first, across
//! the rooms they are joined to, worked out from the rules when asked (nothing is stored per
//! notification).

use std::collections::HashMap;

use ruma::{RoomId, UserId, push::Action};
use serde_json::{Value, json};

use super::Evaluator;
use crate::{
    error::{Error, Result},
    services::Services,
    storage::events::relation_of,
};

/// The most notifications one page returns.
pub const MAX_LIMIT: usize = 100;
const DEFAULT_LIMIT: usize = 20;
/// Events looked at per room per page.
const CANDIDATES_PER_ROOM: i64 = 100;

pub struct Query<'a> {
    /// A `next_token` from an earlier page: only events older than it.
    pub from: Option<&'a str>,
    pub limit: Option<u64>,
    /// `Some("highlight")`: only highlighted notifications.
    pub only: Option<&'a str>,
}

/// One page of notifications and the token for the next.
pub async fn page(s: &Services, user_id: &UserId, q: Query<'_>) -> Result<Value> {
    let before = match q.from {
        None => i64::MAX,
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::invalid_param("'from' is not a token this server gave"))?,
    };
    let limit = q
        .limit
        .map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT));
    let only_highlight = q.only == Some("highlight");
    let user = user_id.as_str();
    let memberships = s.db.memberships_of_user(user).await?;
    let reads = s.db.read_positions_of_user(user).await?;
    let none = HashMap::new();
    let mut found: Vec<(i64, Value)> = Vec::new();
    // Results are complete only above the oldest event looked at in any room that had more
    // candidates than were read: that is where this page has to stop.
    let mut cutoff = 0i64;
    for (room_id, membership, joined_at, _) in &memberships {
        if membership != "join" {
            continue;
        }
        let room = <&RoomId>::try_from(room_id.as_str()).map_err(Error::internal)?;
        let events = s
            .db
            .notification_candidates_between(room_id, user, *joined_at, before, CANDIDATES_PER_ROOM)
            .await?;
        if events.is_empty() {
            continue;
        }
        if events.len() as i64 == CANDIDATES_PER_ROOM
            && let Some(oldest) = events.last()
        {
            cutoff = cutoff.max(oldest.stream_ordering - 1);
        }
        let evaluator = Evaluator::for_room(&s.db, room, user_id).await?;
        let receipts = reads.get(room_id).unwrap_or(&none);
        let unthreaded = receipts.get("").copied().unwrap_or(0);
        for pdu in &events {
            let actions = evaluator.actions(pdu).await?;
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            let highlight = actions.iter().any(Action::is_highlight);
            if only_highlight && !highlight {
                continue;
            }
            let thread = relation_of(pdu).thread_id;
            let thread_read = receipts
                .get(thread.as_deref().unwrap_or("main"))
                .copied()
                .unwrap_or(0);
            let read = pdu.stream_ordering <= unthreaded.max(thread_read);
            found.push((
                pdu.stream_ordering,
                json!({
                    "actions": actions,
                    "event": pdu.to_client(None),
                    "read": read,
                    "room_id": room_id,
                    "ts": pdu.origin_server_ts,
                }),
            ));
        }
    }
    found.retain(|(pos, _)| *pos > cutoff);
    found.sort_by_key(|(pos, _)| std::cmp::Reverse(*pos));
    let more = found.len() > limit || cutoff > 0;
    found.truncate(limit);
    let next_token = match found.last() {
        Some((pos, _)) if more => Some(*pos),
        None if cutoff > 0 => Some(cutoff + 1),
        _ => None,
    };
    let mut out = json!({
        "notifications": found.into_iter().map(|(_, n)| n).collect::<Vec<_>>(),
    });
    if let Some(t) = next_token {
        out["next_token"] = json!(t.to_string());
    }
    Ok(out)
}
