//! Queueing events for other servers outside the event writer: a membership event a server
//! sent us directly (`send_join`, `send_leave`, `send_knock`) goes on to the room's other
//! servers, as the spec asks of the resident server.

use crate::{error::Result, rooms::Pdu, services::Services, storage::Db};

/// Queues `pdu` for every server joined to its room except ours and `except`, and wakes the
/// sender for them.
pub async fn forward_pdu(s: &Services, pdu: &Pdu, except: &ruma::ServerName) -> Result<()> {
    let Some(fed) = s.federation.as_ref() else {
        return Ok(());
    };
    let mut targets = s.db.joined_servers(pdu.room_id.as_str()).await?;
    targets.retain(|t| t != s.server_name() && t != except.as_str());
    if targets.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(&pdu.json)?;
    let mut tx = s.db.begin().await?;
    for t in &targets {
        Db::enqueue_outbox(&mut tx, t, "pdu", &json).await?;
    }
    tx.commit().await?;
    for t in &targets {
        if let Ok(name) = ruma::ServerName::parse(t) {
            fed.sender.notify(&name);
        }
    }
    Ok(())
}
