//! Read receipts (public, private, threaded) and the fully-read marker.

use serde_json::json;

use crate::{
    error::{Error, Result},
    services::Services,
    storage::receipts::Receipt,
};

/// What a receipt marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptKind {
    /// `m.read`: shown to everyone in the room.
    Read,
    /// `m.read.private`: shown only to its owner.
    ReadPrivate,
    /// `m.fully_read`: the read marker, kept as room account data.
    FullyRead,
}

impl ReceiptKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "m.read" => Ok(Self::Read),
            "m.read.private" => Ok(Self::ReadPrivate),
            "m.fully_read" => Ok(Self::FullyRead),
            other => Err(Error::invalid_param(format!(
                "Unknown receipt type {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "m.read",
            Self::ReadPrivate => "m.read.private",
            Self::FullyRead => "m.fully_read",
        }
    }
}

/// The thread a receipt applies to, as stored: `""` unthreaded, `"main"`, or a thread root id.
pub fn parse_thread(thread: Option<&str>) -> Result<String> {
    match thread {
        None => Ok(String::new()),
        Some("main") => Ok("main".into()),
        Some(id) if id.starts_with('$') && ruma::EventId::parse(id).is_ok() => Ok(id.to_owned()),
        Some(other) => Err(Error::invalid_param(format!("Invalid thread_id {other:?}"))),
    }
}

/// Records `user_id`'s receipt (or read marker) at `event_id` in a room they are joined to, and
/// wakes the syncs that show it.
pub async fn set_receipt(
    s: &Services,
    room_id: &str,
    user_id: &str,
    kind: ReceiptKind,
    event_id: &str,
    thread_id: &str,
) -> Result<()> {
    match s.db.membership(room_id, user_id).await? {
        Some(m) if m.membership == "join" => {}
        _ => return Err(Error::forbidden("You are not joined to this room")),
    }
    let known =
        s.db.get_pdu(event_id)
            .await?
            .is_some_and(|p| p.room_id.as_str() == room_id && !p.rejected);
    if !known {
        return Err(Error::not_found("Event not found in this room"));
    }
    match kind {
        ReceiptKind::FullyRead => {
            if !thread_id.is_empty() {
                return Err(Error::invalid_param(
                    "m.fully_read does not support thread_id",
                ));
            }
            let pos =
                s.db.set_account_data(
                    user_id,
                    Some(room_id),
                    "m.fully_read",
                    &json!({"event_id": event_id}),
                )
                .await?;
            s.notifier.notify_users(&[user_id.to_owned()], pos);
        }
        ReceiptKind::Read | ReceiptKind::ReadPrivate => {
            let receipt = Receipt {
                room_id: room_id.to_owned(),
                receipt_type: kind.as_str().to_owned(),
                user_id: user_id.to_owned(),
                thread_id: thread_id.to_owned(),
                event_id: event_id.to_owned(),
                ts: crate::storage::now_ms(),
            };
            let pos = s.db.set_receipt(&receipt).await?;
            s.notifier.notify_room(room_id, &[user_id.to_owned()], pos);
            crate::federation::edus::receipt(s, &receipt).await;
        }
    }
    Ok(())
}
