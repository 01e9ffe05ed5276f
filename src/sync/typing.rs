//! Typing notifications: ephemeral, in memory, with their own serial in the sync token.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    error::{Error, Result},
    services::Services,
};

/// How long a typing notification lasts at most.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts (`Some(timeout)`) or stops (`None`) `user_id` typing in a room they are joined to, and
/// wakes the syncs of the room when that changes what they show.
pub async fn set_typing(
    s: &Services,
    room_id: &str,
    user_id: &str,
    timeout: Option<Duration>,
) -> Result<()> {
    match s.db.membership(room_id, user_id).await? {
        Some(m) if m.membership == "join" => {}
        _ => return Err(Error::forbidden("You are not joined to this room")),
    }
    let changed = match timeout {
        Some(t) => s.typing.set(room_id, user_id, true, t),
        None => s.typing.set(room_id, user_id, false, Duration::ZERO),
    };
    if changed {
        s.notifier.notify_typing(room_id);
    }
    if changed || timeout.is_some() {
        crate::federation::edus::typing(s, room_id, user_id, timeout.is_some()).await;
    }
    Ok(())
}

pub struct Typing {
    inner: Mutex<TypingInner>,
}

struct TypingInner {
    /// room → user → expiry
    rooms: HashMap<String, HashMap<String, Instant>>,
    /// room → serial of its last change
    changed: HashMap<String, u64>,
    serial: u64,
}

impl Default for Typing {
    fn default() -> Self {
        // Start from the wall clock so serials keep growing across restarts.
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Self {
            inner: Mutex::new(TypingInner {
                rooms: HashMap::new(),
                changed: HashMap::new(),
                serial,
            }),
        }
    }
}

impl Typing {
    fn lock(&self) -> std::sync::MutexGuard<'_, TypingInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn serial(&self) -> u64 {
        self.lock().serial
    }

    /// Sets or clears a user's typing state; returns whether anything changed.
    pub fn set(&self, room_id: &str, user_id: &str, typing: bool, timeout: Duration) -> bool {
        let mut g = self.lock();
        let room = g.rooms.entry(room_id.to_owned()).or_default();
        let changed = if typing {
            room.insert(
                user_id.to_owned(),
                Instant::now() + timeout.min(MAX_TIMEOUT),
            )
            .is_none()
        } else {
            room.remove(user_id).is_some()
        };
        if changed {
            g.serial += 1;
            let s = g.serial;
            g.changed.insert(room_id.to_owned(), s);
        }
        changed
    }

    /// Drops expired entries; returns the rooms that changed.
    pub fn expire(&self) -> Vec<String> {
        let mut g = self.lock();
        let now = Instant::now();
        let mut changed_rooms = Vec::new();
        for (room, users) in g.rooms.iter_mut() {
            let before = users.len();
            users.retain(|_, exp| *exp > now);
            if users.len() != before {
                changed_rooms.push(room.clone());
            }
        }
        for room in &changed_rooms {
            g.serial += 1;
            let s = g.serial;
            g.changed.insert(room.clone(), s);
        }
        changed_rooms
    }

    /// Users typing in a room now.
    pub fn typing_users(&self, room_id: &str) -> Vec<String> {
        let g = self.lock();
        let now = Instant::now();
        let mut users: Vec<String> = g
            .rooms
            .get(room_id)
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| **e > now)
                    .map(|(u, _)| u.clone())
                    .collect()
            })
            .unwrap_or_default();
        users.sort();
        users
    }

    /// Whether the room's typing set changed after `since`.
    pub fn changed_since(&self, room_id: &str, since: u64) -> bool {
        self.lock().changed.get(room_id).is_some_and(|s| *s > since)
    }
}
