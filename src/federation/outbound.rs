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
    let json = serde_json::to_string(&*pdu.json)?;
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

/// Tells every server this one shares a room with that it is (back) up, with an empty
/// transaction: peers reset their backoff for us on any authenticated request and send what they
/// queued while we were away, instead of waiting for their next retry.
pub async fn announce_up(s: &Services) -> Result<()> {
    let Some(fed) = s.federation.as_ref() else {
        return Ok(());
    };
    let servers = s.db.servers_sharing_rooms_with(s.server_name()).await?;
    let txn = format!("up-{}", crate::storage::now_ms());
    for server in servers {
        let Ok(name) = ruma::OwnedServerName::try_from(server.as_str()) else {
            continue;
        };
        let req = ruma::api::federation::transactions::send_transaction_message::v1::Request::new(
            ruma::OwnedTransactionId::from(txn.as_str()),
            s.config.server_name.clone(),
            ruma::MilliSecondsSinceUnixEpoch::now(),
        );
        match tokio::time::timeout(
            std::time::Duration::from_secs(15),
            fed.client.send(&name, req),
        )
        .await
        {
            Ok(Ok(_)) => tracing::debug!(%name, "told a peer we are up"),
            Ok(Err(e)) => tracing::debug!(%name, "peer not reachable yet: {e}"),
            Err(_) => tracing::debug!(%name, "peer did not answer in time"),
        }
    }
    Ok(())
}
