//! Wakes long-polling `/sync` requests. Each waiter registers the rooms and the user it cares
//! about; a notification names rooms and users, and only waiters whose interest intersects
//! wake up (every waiter also re-checks on its own timeout).

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::watch;

pub struct Notifier {
    /// Latest stream position per room and per user (for to-device, account data, invites…).
    rooms: Mutex<HashMap<String, i64>>,
    users: Mutex<HashMap<String, i64>>,
    /// Bumped on every notification; long polls watch it.
    tick: watch::Sender<u64>,
    counter: AtomicU64,
    /// The stream position when this process started: nothing older is tracked here.
    start: i64,
}

impl Notifier {
    pub fn new(start: i64) -> Self {
        let (tick, _) = watch::channel(0);
        Self {
            rooms: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            tick,
            counter: AtomicU64::new(0),
            start,
        }
    }

    fn bump(&self) {
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        self.tick.send_replace(n);
    }

    /// Something happened in a room at `pos` (and concerns these users directly, e.g. members).
    pub fn notify_room(&self, room_id: &str, users: &[String], pos: i64) {
        if let Ok(mut m) = self.rooms.lock() {
            m.insert(room_id.to_owned(), pos);
        }
        if !users.is_empty()
            && let Ok(mut m) = self.users.lock()
        {
            for u in users {
                m.insert(u.clone(), pos);
            }
        }
        self.bump();
    }

    /// Something for these users only (to-device, account data, their own receipts…).
    pub fn notify_users(&self, users: &[String], pos: i64) {
        if let Ok(mut m) = self.users.lock() {
            for u in users {
                m.insert(u.clone(), pos);
            }
        }
        self.bump();
    }

    /// A typing change in a room (typing has its own serial).
    pub fn notify_typing(&self, room_id: &str) {
        let _ = room_id;
        self.bump();
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    /// Whether the room certainly has nothing after `since` (only known for positions after start).
    pub fn room_quiet_since(&self, room_id: &str, since: i64) -> bool {
        since >= self.start
            && self
                .rooms
                .lock()
                .map(|m| m.get(room_id).is_none_or(|p| *p <= since))
                .unwrap_or(false)
    }

    /// Whether anything after `since` concerns this user or these rooms.
    pub fn has_news(&self, user: &str, rooms: &[String], since: i64) -> bool {
        if self
            .users
            .lock()
            .map(|m| m.get(user).is_some_and(|p| *p > since))
            .unwrap_or(true)
        {
            return true;
        }
        let Ok(m) = self.rooms.lock() else {
            return true;
        };
        rooms.iter().any(|r| m.get(r).is_some_and(|p| *p > since))
    }
}
