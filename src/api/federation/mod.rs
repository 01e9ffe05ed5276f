//! The server-server API (`/_matrix/federation/…`, `/_matrix/key/…`), served on the federation
//! listener. Every federation request is authenticated by its `X-Matrix` signature in the one
//! extractor ([`authenticate_server`]), checked against the allow/deny lists and rate-limited
//! per origin; handlers are thin and call `crate::federation`.

pub mod devices;
pub mod directory;
pub mod hierarchy;
pub mod keys;
pub mod media;
pub mod membership;
pub mod openid;
pub mod query;
pub mod rooms;
pub mod transactions;

use axum::{Router, http::StatusCode, response::IntoResponse};
use bytes::Bytes;
use ruma::OwnedServerName;

use crate::{error::Error, services::AppState};

/// The federation listener's routes.
pub fn router(state: AppState) -> Router {
    let r = Router::new();
    let r = keys::routes(r);
    let r = transactions::routes(r);
    let r = rooms::routes(r);
    let r = membership::routes(r);
    let r = query::routes(r);
    let r = directory::routes(r);
    let r = devices::routes(r);
    let r = hierarchy::routes(r);
    let r = media::routes(r);
    let r = openid::routes(r);
    let max_body = state.config.limits.max_request_bytes.max(16 * 1024 * 1024);
    r.fallback(|| async { Error::unrecognized(StatusCode::NOT_FOUND, "Unrecognized request") })
        .method_not_allowed_fallback(|| async {
            Error::unrecognized(
                StatusCode::METHOD_NOT_ALLOWED,
                "Unrecognized request method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            Error::internal("handler panicked").into_response()
        }))
        .with_state(state)
}

/// Verifies an inbound request's `X-Matrix` signature and returns the origin; refuses servers
/// the allow/deny lists exclude and origins over their rate limit. A request from a server also
/// tells the outbound sender that it is up.
pub async fn authenticate_server(
    parts: &axum::http::request::Parts,
    body: &Bytes,
    s: &AppState,
) -> Result<OwnedServerName, Error> {
    let fed = s.federation()?;
    // Servers the lists exclude are refused before anything is fetched from them.
    let claimed = ganglion_federation::request_auth::parse_authorization(&parts.headers)
        .map_err(|e| Error::new(e.status(), e.errcode(), e.to_string()))?;
    if let Some(x) = claimed.first()
        && !fed.client.is_server_allowed(&x.origin)
    {
        return Err(Error::forbidden(format!(
            "Federation with {} is not allowed here",
            x.origin
        )));
    }
    let mut builder = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone());
    if let Some(h) = builder.headers_mut() {
        *h = parts.headers.clone();
    }
    let request = builder
        .body(body.as_ref())
        .map_err(|e| Error::internal(format!("request copy: {e}")))?;
    let origin = ganglion_federation::request_auth::verify_request(
        &request,
        &s.config.server_name,
        fed.keyring.as_ref(),
    )
    .await
    .map_err(|e| Error::new(e.status(), e.errcode(), e.to_string()))?;
    if !fed.client.is_server_allowed(&origin) {
        return Err(Error::forbidden(format!(
            "Federation with {origin} is not allowed here"
        )));
    }
    if let Err(not_until) = fed.limiter.check_key(&origin.to_string()) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        return Err(Error::limit_exceeded(wait.as_millis().max(1) as u64));
    }
    fed.sender.peer_is_up(&origin);
    Ok(origin)
}

/// The event's room must let `origin` in per its server ACL (`m.room.server_acl`).
pub async fn check_server_acl(
    s: &crate::services::Services,
    room_id: &ruma::RoomId,
    origin: &ruma::ServerName,
) -> Result<(), Error> {
    let Some(acl) =
        crate::rooms::current_state_content(&s.db, room_id.as_str(), "m.room.server_acl", "")
            .await?
    else {
        return Ok(());
    };
    if crate::federation::acl::allows(&acl, origin.as_str()) {
        Ok(())
    } else {
        Err(Error::forbidden(format!(
            "{origin} is denied by the room's server ACL"
        )))
    }
}
