//! Requests this server makes to others for room data (events, auth chains, state, missing
//! events, backfill), and the verification of every PDU that arrives (format, signatures of the
//! required servers with their published keys, content hash).

use ruma::{
    CanonicalJsonObject, OwnedEventId, RoomId, ServerName, UInt,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{get_event, get_missing_events, get_room_state_ids},
    },
    signatures::PublicKeyMap,
};
use serde_json::value::RawValue;

use crate::{
    error::{Error, Result},
    services::Services,
};

fn parse(raw: &RawValue) -> Option<CanonicalJsonObject> {
    ganglion_federation::pdu_checks::parse_pdu(raw.get()).ok()
}

fn parse_all(raws: Vec<Box<RawValue>>) -> Vec<CanonicalJsonObject> {
    raws.iter().filter_map(|r| parse(r)).collect()
}

fn remote_err(server: &ServerName, e: impl std::fmt::Display) -> Error {
    Error::new(
        axum::http::StatusCode::BAD_GATEWAY,
        "M_UNKNOWN",
        format!("request to {server} failed: {e}"),
    )
}

/// Checks a received PDU's format, signatures and content hash for the room's version. Returns
/// its event id and the object to store (redacted when the content hash did not match).
pub async fn verify_pdu(
    s: &Services,
    room_id: &RoomId,
    raw: CanonicalJsonObject,
) -> Result<(OwnedEventId, CanonicalJsonObject)> {
    let version =
        s.db.room_version(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
    let version = ruma::RoomVersionId::try_from(version.as_str()).map_err(Error::internal)?;
    let prepared = ganglion_federation::pdu_checks::prepare_pdu(raw, &version)
        .map_err(|e| Error::bad_json(format!("invalid PDU: {e}")))?;
    if prepared.room_id != room_id {
        return Err(Error::bad_json("PDU belongs to another room"));
    }
    let mut keys = PublicKeyMap::new();
    let ts = i64::from(prepared.origin_server_ts.get());
    for (server, key_ids) in &prepared.required_keys {
        let ids: Vec<String> = key_ids.iter().cloned().collect();
        let set = super::keys::verify_keys_for(
            s,
            server,
            &ids,
            prepared.enforce_key_validity.then_some(ts),
        )
        .await?;
        keys.insert(server.to_string(), set);
    }
    let checked = prepared
        .verify(&keys)
        .map_err(|e| Error::forbidden(format!("PDU refused: {e}")))?;
    if checked.redacted {
        tracing::info!(event_id = %checked.event_id, "content hash mismatch: stored redacted");
    }
    Ok((checked.event_id, checked.object))
}

/// `GET /_matrix/federation/v1/event/{eventId}`.
pub async fn fetch_event(
    s: &Services,
    server: &ServerName,
    event_id: &str,
) -> Result<CanonicalJsonObject> {
    let id = OwnedEventId::try_from(event_id).map_err(|_| Error::bad_json("bad event id"))?;
    let resp = s
        .federation()?
        .client
        .send(server, get_event::v1::Request::new(id))
        .await
        .map_err(|e| remote_err(server, e))?;
    parse(&resp.pdu).ok_or_else(|| Error::bad_json(format!("{server} sent an unreadable event")))
}

/// Fetches several events (those that fail are left out).
pub async fn fetch_events(
    s: &Services,
    server: &ServerName,
    event_ids: &[String],
) -> Vec<CanonicalJsonObject> {
    let mut out = Vec::with_capacity(event_ids.len());
    for id in event_ids {
        match fetch_event(s, server, id).await {
            Ok(ev) => out.push(ev),
            Err(e) => tracing::info!("fetching {id} from {server}: {e}"),
        }
    }
    out
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`: the event's auth chain.
pub async fn event_auth(
    s: &Services,
    server: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
) -> Result<Vec<CanonicalJsonObject>> {
    let resp = s
        .federation()?
        .client
        .send(
            server,
            get_event_authorization::v1::Request::new(room_id.to_owned(), event_id.clone()),
        )
        .await
        .map_err(|e| remote_err(server, e))?;
    Ok(parse_all(resp.auth_chain))
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`.
pub async fn get_missing_events(
    s: &Services,
    server: &ServerName,
    room_id: &RoomId,
    earliest: &[OwnedEventId],
    latest: &[OwnedEventId],
    limit: u64,
) -> Result<Vec<CanonicalJsonObject>> {
    let mut req = get_missing_events::v1::Request::new(
        room_id.to_owned(),
        earliest.to_vec(),
        latest.to_vec(),
    );
    req.limit = UInt::new(limit).unwrap_or(UInt::MIN);
    let resp = s
        .federation()?
        .client
        .send(server, req)
        .await
        .map_err(|e| remote_err(server, e))?;
    Ok(parse_all(resp.events))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`: the state before an event, and
/// its auth chain, as event ids.
pub async fn state_ids(
    s: &Services,
    server: &ServerName,
    room_id: &RoomId,
    event_id: &OwnedEventId,
) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
    let resp = s
        .federation()?
        .client
        .send(
            server,
            get_room_state_ids::v1::Request::new(event_id.clone(), room_id.to_owned()),
        )
        .await
        .map_err(|e| remote_err(server, e))?;
    Ok((resp.pdu_ids, resp.auth_chain_ids))
}

/// `GET /_matrix/federation/v1/query/directory`: a room alias of another server.
pub async fn query_alias(
    s: &Services,
    alias: &ruma::RoomAliasId,
) -> Result<(ruma::OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    let server = alias.server_name();
    let resp = s
        .federation()?
        .client
        .send(
            server,
            ruma::api::federation::query::get_room_information::v1::Request::new(alias.to_owned()),
        )
        .await
        .map_err(|e| match e.errcode() {
            Some("M_NOT_FOUND") => Error::not_found("Room alias not found"),
            _ => remote_err(server, e),
        })?;
    Ok((resp.room_id, resp.servers))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=`.
pub async fn backfill(
    s: &Services,
    server: &ServerName,
    room_id: &RoomId,
    from: Vec<OwnedEventId>,
    limit: u64,
) -> Result<Vec<CanonicalJsonObject>> {
    let req = get_backfill::v1::Request::new(
        room_id.to_owned(),
        from,
        UInt::new(limit).unwrap_or(UInt::MIN),
    );
    let resp = s
        .federation()?
        .client
        .send(server, req)
        .await
        .map_err(|e| remote_err(server, e))?;
    Ok(parse_all(resp.pdus))
}
