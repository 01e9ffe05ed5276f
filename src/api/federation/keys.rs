//! Our signing keys (`/_matrix/key/v2/server`), the notary (`/_matrix/key/v2/query`) and the
//! server version.

use axum::{Router, extract::State};
use ruma::api::federation::discovery::{
    get_remote_server_keys, get_remote_server_keys_batch, get_server_keys, get_server_version,
};

use crate::{
    api::{Ruma, RumaResponse, route},
    error::{Error, Result},
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_server_keys::v2::Request, _, _>(r, server_keys);
    let r = route::<get_remote_server_keys::v2::Request, _, _>(r, notary_get);
    let r = route::<get_remote_server_keys_batch::v2::Request, _, _>(r, notary_post);
    route::<get_server_version::v1::Request, _, _>(r, version)
}

fn keyring_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("keyring: {e}"))
}

async fn server_keys(
    State(s): State<AppState>,
    _req: Ruma<get_server_keys::v2::Request>,
) -> Result<RumaResponse<get_server_keys::v2::Response>> {
    let keys = s
        .federation()?
        .keyring
        .own_keys_response()
        .map_err(keyring_err)?;
    Ok(RumaResponse(get_server_keys::v2::Response::new(keys)))
}

async fn notary_get(
    State(s): State<AppState>,
    req: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<RumaResponse<get_remote_server_keys::v2::Response>> {
    let keys = s
        .federation()?
        .keyring
        .notary_query_server(&req.body.server_name, Some(req.body.minimum_valid_until_ts))
        .await
        .map_err(keyring_err)?;
    Ok(RumaResponse(get_remote_server_keys::v2::Response::new(
        keys,
    )))
}

async fn notary_post(
    State(s): State<AppState>,
    req: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<RumaResponse<get_remote_server_keys_batch::v2::Response>> {
    let keys = s
        .federation()?
        .keyring
        .notary_query(&req.body.server_keys)
        .await
        .map_err(keyring_err)?;
    Ok(RumaResponse(
        get_remote_server_keys_batch::v2::Response::new(keys),
    ))
}

async fn version(
    _req: Ruma<get_server_version::v1::Request>,
) -> Result<RumaResponse<get_server_version::v1::Response>> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Ganglion".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut resp = get_server_version::v1::Response::new();
    resp.server = Some(server);
    Ok(RumaResponse(resp))
}
