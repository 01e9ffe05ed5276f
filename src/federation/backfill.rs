//! History older than what this server has, fetched from another server in the room when a
//! client paginates past it (`/backfill`), checked like any incoming event and stored below the
//! rest of the timeline, oldest lowest.

use ruma::{CanonicalJsonValue, OwnedEventId, RoomId};
use tokio::sync::Mutex;

use super::{incoming, remote};
use crate::{error::Result, services::Services};

/// One backfill at a time (they share the space of negative stream orderings).
static BACKFILL: Mutex<()> = Mutex::const_new(());

/// Fetches up to `limit` events of history before the room's oldest events here. Returns how
/// many were stored (0 when there is nothing older, or no server could help).
pub async fn backfill(s: &Services, room_id: &RoomId, limit: u64) -> Result<usize> {
    if s.federation.is_none() {
        return Ok(0);
    }
    let _one = BACKFILL.lock().await;
    let missing = s.db.backward_extremities(room_id.as_str(), 20).await?;
    if missing.is_empty() {
        return Ok(0);
    }
    let from: Vec<OwnedEventId> = missing
        .iter()
        .filter_map(|m| OwnedEventId::try_from(m.as_str()).ok())
        .collect();
    let mut servers = s.db.joined_servers(room_id.as_str()).await?;
    servers.retain(|srv| srv != s.server_name());
    for server in servers {
        let Ok(name) = ruma::OwnedServerName::try_from(server.as_str()) else {
            continue;
        };
        let events = match remote::backfill(s, &name, room_id, from.clone(), limit.min(100)).await {
            Ok(evs) if !evs.is_empty() => evs,
            Ok(_) => continue,
            Err(e) => {
                tracing::info!(%room_id, %server, "backfill failed: {e}");
                continue;
            }
        };
        // Oldest first, so each event's prev events are stored before it; positions count
        // down from below everything, the oldest lowest.
        let mut events: Vec<(i64, i64, ruma::CanonicalJsonObject)> = events
            .into_iter()
            .map(|e| {
                let int = |k: &str| match e.get(k) {
                    Some(CanonicalJsonValue::Integer(i)) => i64::from(*i),
                    _ => 0,
                };
                (int("depth"), int("origin_server_ts"), e)
            })
            .collect();
        events.sort_by_key(|(d, ts, _)| (*d, *ts));
        let lowest = s.db.lowest_position().await?;
        let n = events.len() as i64;
        let mut stored = 0;
        for (i, (_, _, ev)) in events.into_iter().enumerate() {
            let position = lowest - n + i as i64;
            match incoming::handle_backfilled_pdu(s, &name, room_id, ev, position).await {
                Ok((_, incoming::Outcome::Accepted)) => stored += 1,
                Ok(_) => {}
                Err(e) => tracing::info!(%room_id, %server, "backfilled event refused: {e}"),
            }
        }
        tracing::debug!(%room_id, %server, stored, "backfilled");
        return Ok(stored);
    }
    Ok(0)
}
