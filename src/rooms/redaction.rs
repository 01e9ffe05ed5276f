//! Redactions: who may redact what, and rewriting the stored event to its redacted form.

use std::collections::HashMap;

use ruma::{OwnedEventId, room_version_rules::RoomVersionRules};
use serde_json::Value;

use super::Pdu;
use crate::{error::Result, services::Services, storage::Db};

/// Returns the target if the redaction may take effect now: the sender redacts its own event
/// (same sender, or same server), or has the power level `redact`.
pub async fn authorised_target(
    s: &Services,
    redaction: &Pdu,
    target: &OwnedEventId,
    auth: &HashMap<(String, String), Pdu>,
    _rules: &RoomVersionRules,
) -> Result<Option<Pdu>> {
    let Some(target_pdu) = s.db.get_pdu(target.as_str()).await? else {
        return Ok(None);
    };
    if target_pdu.room_id != redaction.room_id {
        return Ok(None);
    }
    // One's own events, and (as the auth rules have it) events of users of the same server:
    // that server vouches for the redaction.
    if target_pdu.sender == redaction.sender
        || target_pdu.sender.server_name() == redaction.sender.server_name()
    {
        return Ok(Some(target_pdu));
    }
    let pl = auth
        .get(&("m.room.power_levels".to_owned(), String::new()))
        .map(|p| p.content_value());
    let creator = auth
        .get(&("m.room.create".to_owned(), String::new()))
        .is_some_and(|c| c.sender == redaction.sender);
    if creator || may_redact_others(pl.as_ref(), redaction.sender.as_str()) {
        Ok(Some(target_pdu))
    } else {
        Ok(None)
    }
}

/// The client-side check before a redaction is sent: one's own events may always be redacted;
/// another's needs the `redact` power level (room creators of v12 rooms have unlimited power).
/// Unknown targets are allowed through (the spec lets a redaction arrive before its target).
pub async fn check_may_redact(
    s: &Services,
    room_id: &str,
    sender: &str,
    target: &str,
    rules: &RoomVersionRules,
) -> Result<()> {
    let Some(target_pdu) = s.db.get_pdu(target).await? else {
        return Ok(());
    };
    if target_pdu.room_id != room_id {
        return Err(crate::error::Error::bad_json(
            "Cannot redact an event from another room",
        ));
    }
    if target_pdu.sender == sender {
        return Ok(());
    }
    if rules.authorization.explicitly_privilege_room_creators {
        let create = super::current_state_event(&s.db, room_id, "m.room.create", "").await?;
        if let Some(create) = create {
            let extra = create.content_value();
            let additional = extra
                .get("additional_creators")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|u| u.as_str() == Some(sender)));
            if create.sender == sender || additional {
                return Ok(());
            }
        }
    }
    let pl = super::current_state_content(&s.db, room_id, "m.room.power_levels", "").await?;
    if may_redact_others(pl.as_ref(), sender) {
        Ok(())
    } else {
        Err(crate::error::Error::forbidden(
            "You don't have permission to redact this event",
        ))
    }
}

/// Whether `user`'s power level reaches the `redact` level of these power levels.
fn may_redact_others(pl: Option<&Value>, user: &str) -> bool {
    let Some(pl) = pl else { return false };
    let level = pl
        .get("users")
        .and_then(|u| u.get(user))
        .and_then(as_int)
        .unwrap_or_else(|| pl.get("users_default").and_then(as_int).unwrap_or(0));
    level >= pl.get("redact").and_then(as_int).unwrap_or(50)
}

fn as_int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Rewrites the stored target to its redacted form, with `unsigned.redacted_because`.
pub async fn apply(
    s: &Services,
    target: &Pdu,
    redaction: &Pdu,
    rules: &RoomVersionRules,
) -> Result<()> {
    let mut obj = (*target.json).clone();
    obj.remove("unsigned");
    let because = ruma::canonical_json::RedactedBecause::from_json((*redaction.json).clone());
    let redacted = ruma::canonical_json::redact(obj, &rules.redaction, Some(because))
        .map_err(crate::error::Error::internal)?;
    let text = serde_json::to_string(&redacted)?;
    let mut tx = s.db.begin().await?;
    Db::store_redaction(
        &mut tx,
        target.event_id.as_str(),
        &text,
        redaction.event_id.as_str(),
    )
    .await?;
    tx.commit().await?;
    s.db.pdu_cache().remove(target.event_id.as_str());
    s.unread.invalidate_room(target.room_id.as_str());
    Ok(())
}
