//! Event filters (the spec's Filter and RoomEventFilter), applied to events in memory.

use serde_json::Value;

use crate::rooms::Pdu;

/// A RoomEventFilter / EventFilter as JSON, with the matching logic.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub limit: Option<usize>,
    types: Option<Vec<String>>,
    not_types: Vec<String>,
    senders: Option<Vec<String>>,
    not_senders: Vec<String>,
    rooms: Option<Vec<String>>,
    not_rooms: Vec<String>,
    contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
}

fn strings(v: &Value, key: &str) -> Option<Vec<String>> {
    v.get(key)?.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect()
    })
}

/// `*` wildcards as the spec allows in type filters.
fn glob(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((pre, rest)) => {
            value.starts_with(pre) && {
                let tail = &value[pre.len()..];
                if rest.is_empty() {
                    true
                } else {
                    (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
                }
            }
        }
    }
}

impl EventFilter {
    pub fn from_json(v: &Value) -> Self {
        if !v.is_object() {
            return Self::default();
        }
        EventFilter {
            limit: v.get("limit").and_then(Value::as_u64).map(|l| l as usize),
            types: strings(v, "types"),
            not_types: strings(v, "not_types").unwrap_or_default(),
            senders: strings(v, "senders"),
            not_senders: strings(v, "not_senders").unwrap_or_default(),
            rooms: strings(v, "rooms"),
            not_rooms: strings(v, "not_rooms").unwrap_or_default(),
            contains_url: v.get("contains_url").and_then(Value::as_bool),
            lazy_load_members: v
                .get("lazy_load_members")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            include_redundant_members: v
                .get("include_redundant_members")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    pub fn allows_room(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|r| r == room_id)
            && self
                .rooms
                .as_ref()
                .is_none_or(|rs| rs.iter().any(|r| r == room_id))
    }

    pub fn allows_type_sender(&self, kind: &str, sender: &str) -> bool {
        if self.not_types.iter().any(|t| glob(t, kind)) {
            return false;
        }
        if let Some(types) = &self.types
            && !types.iter().any(|t| glob(t, kind))
        {
            return false;
        }
        if self.not_senders.iter().any(|s| s == sender) {
            return false;
        }
        self.senders
            .as_ref()
            .is_none_or(|ss| ss.iter().any(|s| s == sender))
    }

    pub fn allows(&self, pdu: &Pdu) -> bool {
        if !self.allows_room(pdu.room_id.as_str())
            || !self.allows_type_sender(&pdu.kind.to_string(), pdu.sender.as_str())
        {
            return false;
        }
        if let Some(want) = self.contains_url {
            let has = pdu.content_value().get("url").is_some();
            if has != want {
                return false;
            }
        }
        true
    }

    /// Filters JSON events (account data, ephemeral) by type and sender.
    pub fn allows_json(&self, ev: &Value) -> bool {
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or("");
        let sender = ev.get("sender").and_then(Value::as_str).unwrap_or("");
        if self.not_types.iter().any(|t| glob(t, kind)) {
            return false;
        }
        if let Some(types) = &self.types
            && !types.iter().any(|t| glob(t, kind))
        {
            return false;
        }
        if !sender.is_empty() {
            if self.not_senders.iter().any(|s| s == sender) {
                return false;
            }
            if let Some(ss) = &self.senders
                && !ss.iter().any(|s| s == sender)
            {
                return false;
            }
        }
        true
    }
}

/// A full sync Filter.
#[derive(Debug, Clone, Default)]
pub struct SyncFilter {
    pub presence: EventFilter,
    pub account_data: EventFilter,
    pub rooms: EventFilter,
    pub include_leave: bool,
    pub timeline: EventFilter,
    pub state: EventFilter,
    pub ephemeral: EventFilter,
    pub room_account_data: EventFilter,
    /// `room.timeline.unread_thread_notifications`: count thread notifications per thread.
    pub unread_thread_notifications: bool,
}

impl SyncFilter {
    pub fn from_json(v: &Value) -> Self {
        let room = v.get("room").cloned().unwrap_or(Value::Null);
        let sub = |k: &str| EventFilter::from_json(room.get(k).unwrap_or(&Value::Null));
        SyncFilter {
            presence: EventFilter::from_json(v.get("presence").unwrap_or(&Value::Null)),
            account_data: EventFilter::from_json(v.get("account_data").unwrap_or(&Value::Null)),
            rooms: EventFilter::from_json(&room),
            include_leave: room
                .get("include_leave")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            timeline: sub("timeline"),
            state: sub("state"),
            ephemeral: sub("ephemeral"),
            room_account_data: sub("account_data"),
            unread_thread_notifications: room
                .get("timeline")
                .and_then(|t| t.get("unread_thread_notifications"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("m.*", "m.room.message"));
        assert!(glob("m.room.*", "m.room.member"));
        assert!(!glob("m.room.*", "org.x"));
        assert!(glob("*", "anything"));
        assert!(glob("m.room.message", "m.room.message"));
    }

    #[test]
    fn type_and_sender_filters() {
        let f = EventFilter::from_json(
            &serde_json::json!({"types": ["m.room.*"], "not_senders": ["@b:x"]}),
        );
        assert!(f.allows_type_sender("m.room.message", "@a:x"));
        assert!(!f.allows_type_sender("m.room.message", "@b:x"));
        assert!(!f.allows_type_sender("org.custom", "@a:x"));
    }
}
