//! The one request extractor: turns an HTTP request into a typed ruma request plus the caller's
//! identity, chosen by the endpoint's authentication scheme. The body is read once, with a limit.

use std::any::TypeId;

use axum::{
    body::Body,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use ruma::{
    OwnedDeviceId, OwnedUserId,
    api::{
        IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
        auth_scheme::{AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional},
        error::{DeserializationError, FromHttpRequestError},
    },
};

use crate::{error::Error, services::AppState};

/// The authenticated caller, when the endpoint has one.
#[derive(Debug, Clone)]
pub struct Auth {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub token: String,
}

pub struct Ruma<T> {
    pub body: T,
    pub auth: Option<Auth>,
    /// The requesting server, for federation endpoints (verified `X-Matrix` signature).
    pub origin: Option<ruma::OwnedServerName>,
    /// The raw JSON body (for fields ruma does not model, e.g. UIA `auth`).
    pub json: Option<serde_json::Value>,
}

impl<T> Ruma<T> {
    /// The requesting server; errors when the endpoint is not a federation one.
    pub fn origin(&self) -> Result<&ruma::ServerName, Error> {
        self.origin
            .as_deref()
            .ok_or_else(|| Error::forbidden("Server authentication required"))
    }

    /// The caller; errors when the endpoint allowed anonymous access and none was given.
    pub fn user(&self) -> Result<&Auth, Error> {
        self.auth.as_ref().ok_or_else(Error::missing_token)
    }
}

fn access_token(req: &axum::http::request::Parts) -> Option<String> {
    if let Some(h) = req.headers.get(axum::http::header::AUTHORIZATION)
        && let Ok(v) = h.to_str()
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_owned());
    }
    req.uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.into_owned())
    })
}

impl<T> FromRequest<AppState> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let params = match RawPathParams::from_request_parts(&mut parts, state).await {
            Ok(p) => p.iter().map(|(_, v)| v.to_owned()).collect::<Vec<String>>(),
            Err(_) => return Err(Error::invalid_param("Invalid path parameter")),
        };
        let limit = state.config.limits.max_request_bytes;
        let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
            Ok(b) => b,
            Err(_) => return Err(Error::too_large("Request body too large")),
        };

        let auth = authenticate::<T>(&parts, state).await?;
        let origin = if TypeId::of::<T::Authentication>()
            == TypeId::of::<ruma::api::federation::authentication::ServerSignatures>()
        {
            Some(crate::api::federation::authenticate_server(&parts, &bytes, state).await?)
        } else {
            None
        };

        let json = if bytes.is_empty() {
            None
        } else {
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(v) => Some(v),
                Err(_) if has_json_body(&parts.method) => {
                    return Err(Error::not_json("Request body is not valid JSON"));
                }
                Err(_) => None,
            }
        };
        if has_json_body(&parts.method) && json.as_ref().is_some_and(|v| !v.is_object()) {
            return Err(Error::not_json("Request body must be a JSON object"));
        }

        // U+0000 cannot be stored in PostgreSQL's text columns; requests that carry it are
        // refused on both databases alike: in parameters always, in the body from clients
        // (what servers send is checked item by item, as one bad PDU must not sink the rest).
        let query_nul = parts.uri.query().is_some_and(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        });
        if query_nul || params.iter().any(|p| p.contains('\0')) {
            return Err(Error::invalid_param("Parameters must not contain U+0000"));
        }
        if origin.is_none() && json.as_ref().is_some_and(crate::json::contains_nul) {
            return Err(Error::bad_json("Strings must not contain U+0000"));
        }

        // ruma's login body parser indexes `type` without checking that it is there (and
        // panics); a body without a string `type` is answered here instead.
        if TypeId::of::<T>() == TypeId::of::<ruma::api::client::session::login::v3::Request>()
            && !json
                .as_ref()
                .and_then(|v| v.get("type"))
                .is_some_and(serde_json::Value::is_string)
        {
            return Err(Error::missing_param("missing field `type`"));
        }

        // Clients (matrix-nio among them) send POSTs like /join with no body at all; Synapse
        // reads that as `{}`, and so do we.
        let body_bytes: &[u8] = if bytes.is_empty() && has_json_body(&parts.method) {
            b"{}"
        } else {
            &bytes[..]
        };
        let http_req = axum::http::Request::from_parts(parts, body_bytes);
        let path_args: Vec<&str> = params.iter().map(String::as_str).collect();
        let body = T::try_from_http_request(http_req, &path_args).map_err(map_parse_error)?;
        Ok(Ruma {
            body,
            auth,
            origin,
            json,
        })
    }
}

/// The caller of endpoint `T`, checked by the scheme its metadata names (access token,
/// optional token). Also used by handlers that read their body themselves (media uploads).
pub(crate) async fn authenticate<T: IncomingRequest + 'static>(
    parts: &axum::http::request::Parts,
    state: &AppState,
) -> Result<Option<Auth>, Error> {
    let scheme = TypeId::of::<T::Authentication>();
    let needs_token =
        scheme == TypeId::of::<AccessToken>() || scheme == TypeId::of::<AppserviceToken>();
    let optional_token = scheme == TypeId::of::<AccessTokenOptional>()
        || scheme == TypeId::of::<AppserviceTokenOptional>();
    let mut auth = None;
    if needs_token || optional_token {
        match access_token(parts) {
            Some(token) => {
                let owner = state
                    .db
                    .token_owner(&token)
                    .await?
                    .ok_or_else(|| Error::unknown_token("Unknown access token"))?;
                crate::users::devices::record_use(
                    state,
                    &owner.user_id,
                    &owner.device_id,
                    crate::api::client::devices::client_ip(parts),
                );
                auth = Some(Auth {
                    user_id: OwnedUserId::try_from(owner.user_id).map_err(Error::internal)?,
                    device_id: OwnedDeviceId::from(owner.device_id),
                    token,
                });
            }
            None if needs_token => return Err(Error::missing_token()),
            None => {}
        }
    }
    Ok(auth)
}

fn has_json_body(m: &axum::http::Method) -> bool {
    matches!(*m, axum::http::Method::POST | axum::http::Method::PUT)
}

pub(crate) fn map_parse_error(e: FromHttpRequestError) -> Error {
    match e {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            let msg = e.to_string();
            if msg.starts_with("missing field") {
                Error::missing_param(msg)
            } else if e.is_syntax() || e.is_eof() {
                Error::not_json(msg)
            } else {
                Error::bad_json(msg)
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            let msg = e.to_string();
            if msg.starts_with("missing field") {
                Error::missing_param(msg)
            } else {
                Error::invalid_param(msg)
            }
        }
        FromHttpRequestError::Deserialization(e) => Error::invalid_param(e.to_string()),
        FromHttpRequestError::MethodMismatch { .. } => Error::unrecognized(
            StatusCode::METHOD_NOT_ALLOWED,
            "Unrecognized request method",
        ),
        _ => Error::bad_json("Invalid request"),
    }
}

/// A ruma response turned into an HTTP response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<bytes::BytesMut>() {
            Ok(resp) => resp.map(|b| Body::from(b.freeze())),
            Err(e) => Error::internal(format!("response serialisation: {e}")).into_response(),
        }
    }
}

impl<T> From<T> for RumaResponse<T> {
    fn from(t: T) -> Self {
        RumaResponse(t)
    }
}
