//! Jumping to a date (`timestamp_to_event`): the room's event closest to a time in one
//! direction, among those the asker may see.

use ruma::RoomId;

use super::{Pdu, visibility::filter_visible};
use crate::{error::Result, services::Services};

/// Candidates read per step while looking for one the user may see.
const STEP: i64 = 50;
/// Candidates looked at in all before giving up.
const MAX_LOOKED_AT: usize = 1000;

/// The event nearest `ts` in the direction asked (at or after it forwards, at or before it
/// backwards) that `user_id` may see; `None` when there is none. A server's request (no user)
/// sees every event.
pub async fn closest_event(
    s: &Services,
    room_id: &RoomId,
    ts: i64,
    forwards: bool,
    user_id: Option<&str>,
) -> Result<Option<Pdu>> {
    let mut from = ts;
    let mut looked_at = 0usize;
    let mut seen = std::collections::HashSet::new();
    while looked_at < MAX_LOOKED_AT {
        let batch =
            s.db.room_events_near_time(room_id.as_str(), from, forwards, STEP)
                .await?;
        let exhausted = (batch.len() as i64) < STEP;
        // Events at the boundary timestamp come again in the next batch: skip the ones seen.
        let fresh: Vec<Pdu> = batch
            .into_iter()
            .filter(|p| seen.insert(p.event_id.clone()))
            .collect();
        if fresh.is_empty() {
            return Ok(None);
        }
        looked_at += fresh.len();
        let last_ts = fresh
            .last()
            .map(|p| i64::from(p.origin_server_ts.get()))
            .unwrap_or(from);
        let visible = match user_id {
            Some(u) => filter_visible(&s.db, u, fresh).await?,
            None => fresh,
        };
        if let Some(p) = visible.into_iter().next() {
            return Ok(Some(p));
        }
        if exhausted {
            return Ok(None);
        }
        from = last_ts;
    }
    Ok(None)
}
