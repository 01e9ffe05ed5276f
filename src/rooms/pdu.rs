//! The PDU as the server holds it: parsed fields plus the stored canonical JSON.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UInt, UserId, events::TimelineEventType,
};
use serde::Deserialize;
use serde_json::{Map, Value, json, value::RawValue};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// The room the event belongs to (for a v12 create event: derived from its id).
    pub room_id: OwnedRoomId,
    /// Whether the PDU itself carries `room_id` (a v12 create event does not).
    pub has_room_id: bool,
    pub sender: OwnedUserId,
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    /// Shared, like `json`: clones out of the event cache copy no event content.
    pub content: std::sync::Arc<RawValue>,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub prev_events: std::sync::Arc<[OwnedEventId]>,
    pub auth_events: std::sync::Arc<[OwnedEventId]>,
    pub depth: i64,
    /// Top-level `redacts` (room versions before 11) or `content.redacts`.
    pub redacts: Option<OwnedEventId>,
    pub rejected: bool,
    /// Local position in the stream (0 when not yet stored).
    pub stream_ordering: i64,
    /// The state snapshot after this event (when stored and not an outlier).
    pub state_after: Option<i64>,
    /// (device id, transaction id) of the local client request that sent it.
    pub local_txn: Option<(String, String)>,
    /// Server-side unsigned data (prev_content, replaces_state, transaction id handled apart).
    pub unsigned: Option<std::sync::Arc<Map<String, Value>>>,
    /// The full PDU as canonical JSON (what federation sends and signatures cover); shared, as
    /// events are cloned out of caches often and changed never.
    pub json: std::sync::Arc<CanonicalJsonObject>,
}

#[derive(Deserialize)]
struct PduFields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    state_key: Option<String>,
    content: Box<RawValue>,
    origin_server_ts: UInt,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    #[serde(default)]
    depth: Option<UInt>,
    redacts: Option<OwnedEventId>,
}

#[derive(Deserialize)]
struct RedactsContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses a PDU. `room_id` is used when the PDU carries none (v12 create events).
    pub fn from_canonical(
        event_id: OwnedEventId,
        fallback_room_id: Option<&RoomId>,
        json: CanonicalJsonObject,
    ) -> Result<Self> {
        let text = serde_json::to_string(&json)?;
        let f: PduFields = serde_json::from_str(&text)
            .map_err(|e| Error::bad_json(format!("invalid PDU: {e}")))?;
        Self::from_fields(event_id, fallback_room_id, json, f)
    }

    fn from_fields(
        event_id: OwnedEventId,
        fallback_room_id: Option<&RoomId>,
        json: CanonicalJsonObject,
        f: PduFields,
    ) -> Result<Self> {
        let has_room_id = f.room_id.is_some();
        let room_id = match (f.room_id, fallback_room_id) {
            (Some(r), _) => r,
            (None, Some(r)) => r.to_owned(),
            (None, None) => return Err(Error::bad_json("PDU has no room_id")),
        };
        let redacts = match f.redacts {
            Some(r) => Some(r),
            None if f.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsContent>(f.content.get())
                    .ok()
                    .and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Pdu {
            event_id,
            room_id,
            has_room_id,
            sender: f.sender,
            kind: f.kind,
            state_key: f.state_key,
            content: f.content.into(),
            origin_server_ts: MilliSecondsSinceUnixEpoch(f.origin_server_ts),
            prev_events: f.prev_events.into(),
            auth_events: f.auth_events.into(),
            depth: f.depth.map(|d| u64::from(d) as i64).unwrap_or(0),
            redacts,
            rejected: false,
            stream_ordering: 0,
            state_after: None,
            local_txn: None,
            unsigned: None,
            json: std::sync::Arc::new(json),
        })
    }

    pub fn from_stored(event_id: &str, room_id: &str, json: &str) -> Result<Self> {
        let obj: CanonicalJsonObject = serde_json::from_str(json)
            .map_err(|e| Error::internal(format!("stored event {event_id} unreadable: {e}")))?;
        let f: PduFields = serde_json::from_str(json)
            .map_err(|e| Error::internal(format!("stored event {event_id} unreadable: {e}")))?;
        let event_id = OwnedEventId::try_from(event_id).map_err(Error::internal)?;
        let room_id = OwnedRoomId::try_from(room_id).map_err(Error::internal)?;
        Self::from_fields(event_id, Some(&room_id), obj, f)
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    pub fn content_value(&self) -> Value {
        serde_json::from_str(self.content.get()).unwrap_or(Value::Object(Map::new()))
    }

    /// The event in the client-server format.
    pub fn to_client(&self, transaction_id: Option<&str>) -> Value {
        let mut ev = Map::new();
        ev.insert("content".into(), self.content_value());
        ev.insert("event_id".into(), json!(self.event_id));
        ev.insert("origin_server_ts".into(), json!(self.origin_server_ts));
        ev.insert("room_id".into(), json!(self.room_id));
        ev.insert("sender".into(), json!(self.sender));
        ev.insert("type".into(), json!(self.kind.to_string()));
        if let Some(sk) = &self.state_key {
            ev.insert("state_key".into(), json!(sk));
        }
        if let Some(r) = &self.redacts {
            ev.insert("redacts".into(), json!(r));
        }
        let mut unsigned = self.unsigned.as_deref().cloned().unwrap_or_default();
        if let Some(CanonicalJsonValue::Object(u)) = self.json.get("unsigned")
            && let Some(v) = u.get("redacted_because")
        {
            unsigned.insert(
                "redacted_because".into(),
                serde_json::to_value(v).unwrap_or(Value::Null),
            );
        }
        let age = crate::storage::now_ms() - i64::from(self.origin_server_ts.get());
        unsigned.insert("age".into(), json!(age.max(0)));
        if let Some(txn) = transaction_id {
            unsigned.insert("transaction_id".into(), json!(txn));
        }
        ev.insert("unsigned".into(), Value::Object(unsigned));
        Value::Object(ev)
    }

    /// The event as push rules look at it: the client-format fields but `unsigned`, as JSON
    /// text written around the stored content (which is neither parsed nor re-serialised).
    pub fn push_json(&self) -> Result<Box<RawValue>> {
        fn field(out: &mut String, name: &str, value: &str) -> Result<()> {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            out.push_str(&serde_json::to_string(value)?);
            Ok(())
        }
        let mut out = String::with_capacity(self.content.get().len() + 256);
        out.push_str("{\"content\":");
        out.push_str(self.content.get());
        field(&mut out, "event_id", self.event_id.as_str())?;
        out.push_str(",\"origin_server_ts\":");
        out.push_str(&self.origin_server_ts.get().to_string());
        field(&mut out, "room_id", self.room_id.as_str())?;
        field(&mut out, "sender", self.sender.as_str())?;
        field(&mut out, "type", &self.kind.to_string())?;
        if let Some(sk) = &self.state_key {
            field(&mut out, "state_key", sk)?;
        }
        if let Some(r) = &self.redacts {
            field(&mut out, "redacts", r.as_str())?;
        }
        out.push('}');
        Ok(RawValue::from_string(out)?)
    }

    /// The stripped form used in invite/knock room state.
    pub fn to_stripped(&self) -> Value {
        json!({
            "content": self.content_value(),
            "sender": self.sender,
            "state_key": self.state_key.clone().unwrap_or_default(),
            "type": self.kind.to_string(),
        })
    }

    /// The PDU as sent over federation.
    pub fn to_federation(&self) -> Value {
        serde_json::to_value(&*self.json).unwrap_or(Value::Null)
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.has_room_id.then_some(&*self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}
