//! Questions this server asks other servers on behalf of its clients: a remote user's profile,
//! another server's public room directory, and remote users' device keys
//! and one-time keys. Nothing is cached: every answer comes from the user's own server.

use std::{collections::BTreeMap, time::Duration};

use axum::http::StatusCode;
use ganglion_federation::error::FederationError;
use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UInt, UserId,
    api::federation::{
        directory::get_public_rooms_filtered,
        keys::{claim_keys, get_keys},
        query::get_profile_information,
    },
    directory::{Filter, RoomNetwork, RoomTypeFilter},
};
use serde_json::{Map, Value, json};

use crate::{
    error::{Error, Result},
    services::Services,
};

/// How long a key query or claim waits for one server.
pub const KEYS_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed request to another server as the error the client sees: the remote answer's
/// status and common errcodes are passed through; an unreachable server is 502.
pub fn remote_error(server: &ServerName, e: &FederationError) -> Error {
    if let FederationError::Remote {
        status,
        errcode,
        error,
        ..
    } = e
    {
        let msg = error
            .clone()
            .unwrap_or_else(|| format!("{server} answered {status}"));
        let code: &'static str = match errcode.as_deref() {
            Some("M_NOT_FOUND") => "M_NOT_FOUND",
            Some("M_FORBIDDEN") => "M_FORBIDDEN",
            Some("M_INVALID_PARAM") => "M_INVALID_PARAM",
            Some("M_LIMIT_EXCEEDED") => "M_LIMIT_EXCEEDED",
            Some("M_UNRECOGNIZED") => "M_UNRECOGNIZED",
            _ => "M_UNKNOWN",
        };
        if code != "M_UNKNOWN" && status.is_client_error() {
            return Error::new(*status, code, msg);
        }
    }
    Error::new(
        StatusCode::BAD_GATEWAY,
        "M_UNKNOWN",
        format!("request to {server} failed: {e}"),
    )
}

/// `GET /_matrix/federation/v1/query/profile` for a user of another server: the whole profile,
/// or only `field`.
pub async fn profile(
    s: &Services,
    user_id: &UserId,
    field: Option<&str>,
) -> Result<Map<String, Value>> {
    let server = user_id.server_name();
    let mut req = get_profile_information::v1::Request::new(user_id.to_owned());
    req.field = field.map(Into::into);
    let resp = s
        .federation()?
        .client
        .send(server, req)
        .await
        .map_err(|e| remote_error(server, &e))?;
    Ok(resp.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Another server's public room directory (`POST /_matrix/federation/v1/publicRooms`).
pub async fn public_rooms(
    s: &Services,
    server: &ServerName,
    limit: Option<UInt>,
    since: Option<String>,
    search_term: Option<String>,
    room_types: Vec<RoomTypeFilter>,
    room_network: RoomNetwork,
) -> Result<Value> {
    let mut req = get_public_rooms_filtered::v1::Request::new();
    req.limit = limit;
    req.since = since;
    let mut filter = Filter::new();
    filter.generic_search_term = search_term;
    filter.room_types = room_types;
    req.filter = filter;
    req.room_network = room_network;
    let resp = s
        .federation()?
        .client
        .send(server, req)
        .await
        .map_err(|e| remote_error(server, &e))?;
    let mut body = Map::new();
    body.insert("chunk".into(), serde_json::to_value(&resp.chunk)?);
    if let Some(n) = resp.next_batch {
        body.insert("next_batch".into(), json!(n));
    }
    if let Some(p) = resp.prev_batch {
        body.insert("prev_batch".into(), json!(p));
    }
    if let Some(t) = resp.total_room_count_estimate {
        body.insert("total_room_count_estimate".into(), json!(t));
    }
    Ok(Value::Object(body))
}

fn raw_json<T>(raw: &ruma::serde::Raw<T>) -> Option<Value> {
    serde_json::from_str(raw.json().get()).ok()
}

fn failure(e: impl std::fmt::Display) -> Value {
    json!({"status": 503, "message": e.to_string()})
}

/// Remote users grouped by their server.
pub fn by_server<V: Clone>(
    users: &BTreeMap<OwnedUserId, V>,
) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>> {
    let mut out: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>> = BTreeMap::new();
    for (u, v) in users {
        out.entry(u.server_name().to_owned())
            .or_default()
            .insert(u.clone(), v.clone());
    }
    out
}

/// The parts of a `/keys/query` answer, filled in from several servers.
#[derive(Default)]
pub struct KeysAnswer {
    pub device_keys: Map<String, Value>,
    pub master_keys: Map<String, Value>,
    pub self_signing_keys: Map<String, Value>,
    pub failures: Map<String, Value>,
}

/// Asks each remote user's server for their device and cross-signing keys
/// (`POST /_matrix/federation/v1/user/keys/query`), all servers at once; a server that fails
/// or does not answer within [`KEYS_TIMEOUT`] is listed in `failures`.
pub async fn query_keys(
    s: &Services,
    remote: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    out: &mut KeysAnswer,
) {
    if remote.is_empty() {
        return;
    }
    let Some(fed) = s.federation.as_ref() else {
        for u in remote.keys() {
            out.failures.insert(
                u.server_name().to_string(),
                failure("Federation is not available"),
            );
        }
        return;
    };
    let asks = by_server(remote)
        .into_iter()
        .map(|(server, users)| async move {
            let r = tokio::time::timeout(
                KEYS_TIMEOUT,
                fed.client.send(&server, get_keys::v1::Request::new(users)),
            )
            .await;
            (server, r)
        });
    for (server, r) in futures::future::join_all(asks).await {
        let resp = match r {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                tracing::info!(%server, "remote key query failed: {e}");
                out.failures.insert(server.to_string(), failure(e));
                continue;
            }
            Err(_) => {
                out.failures
                    .insert(server.to_string(), failure("Timed out"));
                continue;
            }
        };
        // Only keys of users of that server are taken from its answer.
        let ours = |u: &OwnedUserId| u.server_name() == server && remote.contains_key(u);
        for (user, devices) in resp.device_keys.iter().filter(|(u, _)| ours(u)) {
            let mut per_device = Map::new();
            for (device_id, keys) in devices {
                if let Some(v) = raw_json(keys) {
                    per_device.insert(device_id.to_string(), v);
                }
            }
            out.device_keys
                .insert(user.to_string(), Value::Object(per_device));
        }
        for (user, key) in resp.master_keys.iter().filter(|(u, _)| ours(u)) {
            if let Some(v) = raw_json(key) {
                out.master_keys.insert(user.to_string(), v);
            }
        }
        for (user, key) in resp.self_signing_keys.iter().filter(|(u, _)| ours(u)) {
            if let Some(v) = raw_json(key) {
                out.self_signing_keys.insert(user.to_string(), v);
            }
        }
    }
}

/// Claims one-time keys of remote users from their servers
/// (`POST /_matrix/federation/v1/user/keys/claim`) into `one_time_keys`; failing servers go to
/// `failures`.
pub async fn claim_keys(
    s: &Services,
    remote: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    one_time_keys: &mut Map<String, Value>,
    failures: &mut Map<String, Value>,
) {
    if remote.is_empty() {
        return;
    }
    let Some(fed) = s.federation.as_ref() else {
        for u in remote.keys() {
            failures.insert(
                u.server_name().to_string(),
                failure("Federation is not available"),
            );
        }
        return;
    };
    let asks = by_server(remote)
        .into_iter()
        .map(|(server, users)| async move {
            let claims = users
                .into_iter()
                .map(|(u, devices)| {
                    (
                        u,
                        devices
                            .into_iter()
                            .map(|(d, alg)| (d, OneTimeKeyAlgorithm::from(alg.as_str())))
                            .collect(),
                    )
                })
                .collect();
            let r = tokio::time::timeout(
                KEYS_TIMEOUT,
                fed.client
                    .send(&server, claim_keys::v1::Request::new(claims)),
            )
            .await;
            (server, r)
        });
    for (server, r) in futures::future::join_all(asks).await {
        let resp = match r {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                tracing::info!(%server, "remote key claim failed: {e}");
                failures.insert(server.to_string(), failure(e));
                continue;
            }
            Err(_) => {
                failures.insert(server.to_string(), failure("Timed out"));
                continue;
            }
        };
        for (user, devices) in &resp.one_time_keys {
            if user.server_name() != server || !remote.contains_key(user) {
                continue;
            }
            let mut per_device = Map::new();
            for (device_id, keys) in devices {
                let mut k = Map::new();
                for (key_id, key) in keys {
                    if let Some(v) = raw_json(key) {
                        k.insert(key_id.to_string(), v);
                    }
                }
                per_device.insert(device_id.to_string(), Value::Object(k));
            }
            one_time_keys.insert(user.to_string(), Value::Object(per_device));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_grouped_by_server() {
        let mut m = BTreeMap::new();
        for u in ["@a:one", "@b:two", "@c:one"] {
            m.insert(OwnedUserId::try_from(u).unwrap(), 1);
        }
        let g = by_server(&m);
        assert_eq!(g.len(), 2);
        assert_eq!(g[&OwnedServerName::try_from("one").unwrap()].len(), 2);
    }

    #[test]
    fn remote_errors_map_to_client_errors() {
        let server = ServerName::parse("x.example").unwrap();
        let e = FederationError::Remote {
            server: "x.example".into(),
            status: StatusCode::NOT_FOUND,
            errcode: Some("M_NOT_FOUND".into()),
            error: Some("no such user".into()),
            retry_after_ms: None,
            body: None,
        };
        assert_eq!(remote_error(&server, &e).errcode(), "M_NOT_FOUND");
        let e = FederationError::Request("boom".into());
        assert_eq!(remote_error(&server, &e).errcode(), "M_UNKNOWN");
    }
}
