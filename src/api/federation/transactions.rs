//! `PUT /_matrix/federation/v1/send/{txnId}`: a transaction of PDUs and EDUs from another
//! server. Idempotent per origin and transaction id; each PDU gets its own result.

use std::collections::BTreeMap;

use axum::{Router, extract::State};
use ruma::{OwnedEventId, api::federation::transactions::send_transaction_message};

use crate::{
    api::{Ruma, RumaResponse, route},
    error::{Error, Result},
    federation::incoming::{self, Outcome},
    services::{AppState, Services},
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    route::<send_transaction_message::v1::Request, _, _>(r, send)
}

/// The spec's limits for one transaction.
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

async fn send(
    State(s): State<AppState>,
    req: Ruma<send_transaction_message::v1::Request>,
) -> Result<RumaResponse<send_transaction_message::v1::Response>> {
    let origin = req.origin()?.to_owned();
    let body = &req.body;
    if body.origin != origin {
        return Err(Error::forbidden(
            "The transaction's origin is not the signing server",
        ));
    }
    if body.pdus.len() > MAX_PDUS || body.edus.len() > MAX_EDUS {
        return Err(Error::bad_json(format!(
            "A transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs"
        )));
    }
    let txn_id = body.transaction_id.as_str();
    if let Some(stored) =
        s.db.federation_txn_response(origin.as_str(), txn_id)
            .await?
    {
        let pdus: BTreeMap<OwnedEventId, Result<(), String>> = parse_stored(&stored);
        return Ok(RumaResponse(send_transaction_message::v1::Response::new(
            pdus,
        )));
    }

    tracing::debug!(
        %origin,
        txn_id,
        pdus = body.pdus.len(),
        edus = body.edus.len(),
        "transaction received"
    );
    let mut results: BTreeMap<OwnedEventId, Result<(), String>> = BTreeMap::new();
    for raw in &body.pdus {
        let Some((event_id, outcome)) = one_pdu(&s, &origin, raw.get()).await else {
            continue;
        };
        results.insert(event_id, outcome);
    }
    for edu in &body.edus {
        match serde_json::from_str::<serde_json::Value>(edu.json().get()) {
            Ok(v) => {
                if let Err(e) = crate::federation::edus::handle_edu(&s, &origin, &v).await {
                    tracing::info!(%origin, "EDU refused: {e}");
                }
            }
            Err(e) => tracing::info!(%origin, "unreadable EDU: {e}"),
        }
    }

    let stored = serde_json::to_string(&stored_form(&results))?;
    s.db.store_federation_txn(origin.as_str(), txn_id, &stored)
        .await?;
    Ok(RumaResponse(send_transaction_message::v1::Response::new(
        results,
    )))
}

/// Handles one PDU; `None` when it is too malformed to name.
async fn one_pdu(
    s: &Services,
    origin: &ruma::ServerName,
    json: &str,
) -> Option<(OwnedEventId, Result<(), String>)> {
    let Ok(obj) = ganglion_federation::pdu_checks::parse_pdu(json) else {
        tracing::info!(%origin, "unreadable PDU dropped");
        return None;
    };
    let Some(room_id) = ganglion_federation::pdu_checks::claimed_room_id(&obj) else {
        tracing::info!(%origin, "PDU without a room id dropped");
        return None;
    };
    let Ok(Some(version)) = s.db.room_version(room_id.as_str()).await else {
        tracing::info!(%origin, %room_id, "PDU of an unknown room dropped");
        return None;
    };
    let rules = ruma::RoomVersionId::try_from(version.as_str())
        .ok()?
        .rules()?;
    let event_id = ganglion_federation::pdu::event_id_of(&obj, &rules).ok()?;
    if let Err(e) = crate::api::federation::check_server_acl(s, &room_id, origin).await {
        return Some((event_id, Err(e.to_string())));
    }
    if !crate::federation::membership::participating(s, &room_id)
        .await
        .unwrap_or(false)
    {
        return Some((event_id, Err("this server is not in the room".into())));
    }
    let result = match incoming::handle_pdu(s, origin, &room_id, obj).await {
        Ok((_, Outcome::Accepted | Outcome::Duplicate | Outcome::SoftFailed)) => Ok(()),
        Ok((_, Outcome::Rejected(why))) => Err(why),
        Err(e) => Err(e.to_string()),
    };
    match &result {
        Err(why) => tracing::info!(%event_id, %origin, "PDU not accepted: {why}"),
        Ok(()) => tracing::debug!(%event_id, %origin, "PDU handled"),
    }
    Some((event_id, result))
}

fn stored_form(results: &BTreeMap<OwnedEventId, Result<(), String>>) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (id, r) in results {
        let v = match r {
            Ok(()) => serde_json::json!({}),
            Err(e) => serde_json::json!({"error": e}),
        };
        map.insert(id.to_string(), v);
    }
    serde_json::Value::Object(map)
}

fn parse_stored(text: &str) -> BTreeMap<OwnedEventId, Result<(), String>> {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let mut out = BTreeMap::new();
    if let Some(obj) = v.as_object() {
        for (id, r) in obj {
            let Ok(id) = OwnedEventId::try_from(id.as_str()) else {
                continue;
            };
            let res = match r.get("error").and_then(|e| e.as_str()) {
                Some(e) => Err(e.to_owned()),
                None => Ok(()),
            };
            out.insert(id, res);
        }
    }
    out
}
