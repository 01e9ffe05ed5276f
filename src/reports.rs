//! Content reporting: users report events, rooms and users to the server's administrators.
//! Reports are stored (listed and cleared through the admin API) and logged as warnings, so
//! that an operator watching the logs sees them at once.

use ruma::{EventId, RoomId, UserId};
use serde_json::{Value, json};

use crate::{
    error::{Error, Result},
    rooms::current_state_content,
    services::Services,
    storage::reports::{NewReport, Report, ReportKind, ReportQuery},
};

/// The longest reason kept; longer ones are refused.
const MAX_REASON_CHARS: usize = 1000;

fn check_reason(reason: Option<&str>) -> Result<()> {
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        return Err(Error::bad_json(format!(
            "reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    Ok(())
}

/// Reports an event. The reporter must be joined to the room and the event must be in it;
/// otherwise the answer is the spec's 404, which does not tell the two apart.
pub async fn report_event(
    s: &Services,
    reporter: &UserId,
    room_id: &RoomId,
    event_id: &EventId,
    reason: Option<&str>,
    score: Option<i64>,
) -> Result<()> {
    check_reason(reason)?;
    if score.is_some_and(|n| !(-100..=0).contains(&n)) {
        return Err(Error::invalid_param("score must be between -100 and 0"));
    }
    let not_found =
        || Error::not_found("The event was not found or you are not joined to the room");
    let joined =
        s.db.membership(room_id.as_str(), reporter.as_str())
            .await?
            .is_some_and(|m| m.membership == "join");
    if !joined {
        return Err(not_found());
    }
    let Some(pdu) = s.db.get_pdu(event_id.as_str()).await? else {
        return Err(not_found());
    };
    if pdu.room_id != room_id || pdu.rejected {
        return Err(not_found());
    }
    let id =
        s.db.insert_report(NewReport {
            kind: ReportKind::Event,
            reporter: reporter.as_str(),
            room_id: Some(room_id.as_str()),
            event_id: Some(event_id.as_str()),
            target_user: Some(pdu.sender.as_str()),
            reason,
            score,
        })
        .await?;
    tracing::warn!(report = id, %reporter, room = %room_id, event = %event_id, sender = %pdu.sender,
        reason = reason.unwrap_or(""), "event reported");
    Ok(())
}

/// Reports a room. The reporter need not be in it (the spec forbids requiring that), but the
/// server must know the room.
pub async fn report_room(
    s: &Services,
    reporter: &UserId,
    room_id: &RoomId,
    reason: Option<&str>,
) -> Result<()> {
    check_reason(reason)?;
    if s.db.room_version(room_id.as_str()).await?.is_none() {
        return Err(Error::not_found("The room was not found"));
    }
    let id =
        s.db.insert_report(NewReport {
            kind: ReportKind::Room,
            reporter: reporter.as_str(),
            room_id: Some(room_id.as_str()),
            event_id: None,
            target_user: None,
            reason,
            score: None,
        })
        .await?;
    tracing::warn!(report = id, %reporter, room = %room_id, reason = reason.unwrap_or(""), "room reported");
    Ok(())
}

/// Reports a user this server knows: a local account, or a remote user seen in a room here.
pub async fn report_user(
    s: &Services,
    reporter: &UserId,
    target: &UserId,
    reason: Option<&str>,
) -> Result<()> {
    check_reason(reason)?;
    if !s.db.user_known(target.as_str()).await? {
        return Err(Error::not_found("The user was not found"));
    }
    let id =
        s.db.insert_report(NewReport {
            kind: ReportKind::User,
            reporter: reporter.as_str(),
            room_id: None,
            event_id: None,
            target_user: Some(target.as_str()),
            reason,
            score: None,
        })
        .await?;
    tracing::warn!(report = id, %reporter, user = %target, reason = reason.unwrap_or(""), "user reported");
    Ok(())
}

/// A report as the admin API shows it (Synapse's `event_reports` shape; room and user reports
/// have the fields that apply to them), with the room's name and canonical alias.
pub async fn admin_view(s: &Services, r: &Report, with_event: bool) -> Result<Value> {
    let mut v = json!({
        "id": r.id,
        "received_ts": r.received_ts,
        "user_id": r.reporter,
        "reason": r.reason,
    });
    if let Some(room) = &r.room_id {
        v["room_id"] = json!(room);
        let name = current_state_content(&s.db, room, "m.room.name", "")
            .await?
            .and_then(|c| c.get("name").cloned());
        let alias = current_state_content(&s.db, room, "m.room.canonical_alias", "")
            .await?
            .and_then(|c| c.get("alias").cloned());
        v["name"] = name.unwrap_or(Value::Null);
        v["canonical_alias"] = alias.unwrap_or(Value::Null);
    }
    if let Some(event) = &r.event_id {
        v["event_id"] = json!(event);
        v["score"] = json!(r.score);
        v["sender"] = json!(r.target_user);
        if with_event {
            let pdu = s.db.get_pdu(event).await?;
            v["event_json"] = pdu.map(|p| p.to_federation()).unwrap_or(Value::Null);
        }
    } else if let Some(user) = &r.target_user {
        v["target_user_id"] = json!(user);
    }
    Ok(v)
}

/// A page of reports for the admin API: `{<kind>_reports, total, next_token?}`.
pub async fn admin_list(s: &Services, q: &ReportQuery<'_>) -> Result<Value> {
    let (page, total) = s.db.reports(q).await?;
    let mut items = Vec::with_capacity(page.len());
    for r in &page {
        items.push(admin_view(s, r, false).await?);
    }
    let mut out = json!({ format!("{}_reports", q.kind.as_str()): items, "total": total });
    let next = q.offset + page.len() as i64;
    if next < total {
        out["next_token"] = json!(next);
    }
    Ok(out)
}
