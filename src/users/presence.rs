//! Presence: a user's own state (online, unavailable, offline) and status message, who may see
//! it, and the sweep that turns users offline once they stop syncing.
//!
//! Every change gets a stream position; `/sync` of users sharing a room picks it up through
//! `Db::presence_since`.

use std::time::Duration;

use ruma::UserId;
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    services::{AppState, Services},
    storage::now_ms,
};

/// The states a client may set.
pub const STATES: [&str; 3] = ["online", "unavailable", "offline"];
/// A user shown online or unavailable without activity (a sync or a presence update) for this
/// long is turned offline. `/sync` refreshes the activity at least every minute.
pub const OFFLINE_AFTER_MS: i64 = 5 * 60 * 1000;
/// Longest status message accepted.
pub const MAX_STATUS_MSG_LEN: usize = 1024;

/// Sets the caller's own presence (`PUT /presence/{userId}/status`). A missing status message
/// clears it, as Synapse does.
pub async fn set(
    s: &Services,
    user_id: &UserId,
    state: &str,
    status_msg: Option<&str>,
) -> Result<()> {
    if !STATES.contains(&state) {
        return Err(Error::invalid_param(format!(
            "Invalid presence state {state:?}: must be one of online, unavailable, offline"
        )));
    }
    if status_msg.is_some_and(|m| m.len() > MAX_STATUS_MSG_LEN) {
        return Err(Error::invalid_param("Status message is too long"));
    }
    let pos =
        s.db.set_presence(user_id.as_str(), state, status_msg, state == "online")
            .await?;
    announce(s, user_id.as_str(), pos).await
}

/// Wakes the syncs of the user and of everyone sharing a room with them (nobody else sees
/// their presence), and tells the other servers in those rooms.
pub async fn announce(s: &Services, user_id: &str, pos: i64) -> Result<()> {
    let mut users = s.db.users_sharing_rooms(user_id).await?;
    if !users.iter().any(|u| u == user_id) {
        users.push(user_id.to_owned());
    }
    s.notifier.notify_users(&users, pos);
    crate::federation::edus::presence(s, user_id).await;
    Ok(())
}

/// The presence of `target` as seen by `viewer` (`GET /presence/{userId}/status`): users see
/// their own and that of users they share a joined room with.
pub async fn get(s: &Services, viewer: &UserId, target: &UserId) -> Result<Value> {
    if viewer != target {
        if s.is_local(target) && !s.db.user_exists(target.as_str()).await? {
            return Err(Error::not_found("Unknown user"));
        }
        if !s.db.share_a_room(viewer.as_str(), target.as_str()).await? {
            return Err(Error::forbidden(
                "You are not allowed to see this user's presence",
            ));
        }
    }
    Ok(match s.db.presence(target.as_str()).await? {
        Some((state, status_msg, last_active, currently_active)) => {
            let mut body = json!({
                "presence": state,
                "last_active_ago": (now_ms() - last_active).max(0),
                "currently_active": currently_active && state == "online",
            });
            if let Some(msg) = status_msg {
                body["status_msg"] = json!(msg);
            }
            body
        }
        None => json!({"presence": "offline"}),
    })
}

/// Turns users offline who stopped syncing; returns how many changed.
pub async fn sweep(s: &Services) -> Result<usize> {
    let before = now_ms() - OFFLINE_AFTER_MS;
    let stale = s.db.stale_presence(before).await?;
    if stale.is_empty() {
        return Ok(0);
    }
    let (changed, pos) = s.db.mark_presence_offline(&stale, before).await?;
    for user in &changed {
        announce(s, user, pos).await?;
    }
    Ok(changed.len())
}

/// Runs [`sweep`] every 30 seconds for the life of the process.
pub fn spawn_sweeper(s: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            if let Err(e) = sweep(&s).await {
                tracing::warn!("presence sweep failed: {e}");
            }
        }
    });
}
