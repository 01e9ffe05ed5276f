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
    if target_pdu.sender == redaction.sender {
        return Ok(Some(target_pdu));
    }
    let pl = auth
        .get(&("m.room.power_levels".to_owned(), String::new()))
        .map(|p| p.content_value());
    let level = |user: &str| -> i64 {
        let Some(pl) = &pl else { return 0 };
        pl.get("users")
            .and_then(|u| u.get(user))
            .and_then(as_int)
            .unwrap_or_else(|| pl.get("users_default").and_then(as_int).unwrap_or(0))
    };
    let redact_level = pl
        .as_ref()
        .and_then(|p| p.get("redact"))
        .and_then(as_int)
        .unwrap_or(50);
    let creator = auth
        .get(&("m.room.create".to_owned(), String::new()))
        .is_some_and(|c| c.sender == redaction.sender);
    if creator || level(redaction.sender.as_str()) >= redact_level {
        Ok(Some(target_pdu))
    } else {
        Ok(None)
    }
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
    let mut obj = target.json.clone();
    obj.remove("unsigned");
    let because = ruma::canonical_json::RedactedBecause::from_json(redaction.json.clone());
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
    Ok(())
}
