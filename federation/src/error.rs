//! Error types of the networking half of the crate: outbound requests ([`FederationError`]),
//! inbound request authentication ([`RequestAuthError`]) and remote keys ([`KeyringError`]).

use std::{future::Future, net::IpAddr, pin::Pin};

/// A boxed, `Send` future: the return type of the crate's dyn-compatible traits
/// ([`crate::keyring::KeyStore`], [`crate::discovery::DnsLookup`], ...).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an outbound federation request failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The destination is not in `allowed_servers`, or is in `denied_servers`.
    #[error("federation with {0} is not allowed by the server configuration")]
    DestinationDenied(String),
    /// The destination resolved only to private, loopback, link-local, unique-local or CGNAT
    /// addresses and `allow_private_networks` is off.
    #[error("refusing to connect to {server}: {addr} is a private or local address")]
    PrivateAddress { server: String, addr: IpAddr },
    /// Server discovery failed (DNS, no address records...).
    #[error("could not resolve {server}: {reason}")]
    Discovery { server: String, reason: String },
    /// TLS configuration could not be built (bad CA file...).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The request could not be built or signed.
    #[error("could not build the request: {0}")]
    Request(String),
    /// Connecting, TLS handshake, sending or reading failed (includes timeouts).
    #[error("request to {server} failed: {source}")]
    Transport {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    /// The remote server answered with an error status. `errcode`/`error` are filled when the body
    /// is a Matrix error (`{"errcode": "M_...", "error": "..."}`).
    #[error("{server} answered {status}: {}", errcode.as_deref().unwrap_or("(no errcode)"))]
    Remote {
        server: String,
        status: http::StatusCode,
        errcode: Option<String>,
        error: Option<String>,
        /// `retry_after_ms` from the body or the `Retry-After` header (M_LIMIT_EXCEEDED).
        retry_after_ms: Option<u64>,
        /// The whole error body as JSON, when it was JSON.
        body: Option<serde_json::Value>,
    },
    /// The response body was larger than the configured limit.
    #[error("response from {server} is larger than {limit} bytes")]
    ResponseTooLarge { server: String, limit: usize },
    /// The response (status < 400) could not be parsed as the endpoint's response type.
    #[error("invalid response from {server}: {reason}")]
    InvalidResponse { server: String, reason: String },
}

impl FederationError {
    /// The HTTP status of a remote error answer.
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            Self::Remote { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The Matrix errcode of a remote error answer.
    pub fn errcode(&self) -> Option<&str> {
        match self {
            Self::Remote { errcode, .. } => errcode.as_deref(),
            _ => None,
        }
    }

    /// True when the remote server was reached and answered (as opposed to an unreachable
    /// server, which a sender should retry with backoff).
    pub fn is_remote_answer(&self) -> bool {
        matches!(self, Self::Remote { .. } | Self::InvalidResponse { .. })
    }

    /// True when the request was refused locally by the configuration (deny list, private
    /// address): retrying will not help until the configuration changes.
    pub fn is_refused_by_config(&self) -> bool {
        matches!(
            self,
            Self::DestinationDenied(_) | Self::PrivateAddress { .. }
        )
    }
}

/// Why an inbound request's `X-Matrix` authentication was rejected. Every variant is answered
/// with `401 M_UNAUTHORIZED` (see [`RequestAuthError::errcode`]).
#[derive(Debug, thiserror::Error)]
pub enum RequestAuthError {
    #[error("missing X-Matrix Authorization header")]
    MissingAuthorization,
    #[error("invalid X-Matrix Authorization header: {0}")]
    InvalidHeader(String),
    #[error("X-Matrix headers name different origins")]
    OriginMismatch,
    #[error("X-Matrix destination {0} is not this server")]
    DestinationMismatch(String),
    #[error("origin {origin} is not allowed to federate with this server")]
    OriginDenied { origin: String },
    #[error("unknown signing key {key_id} of {origin}")]
    UnknownKey { origin: String, key_id: String },
    #[error("could not fetch the keys of {origin}: {reason}")]
    KeyUnavailable { origin: String, reason: String },
    #[error("invalid X-Matrix signature from {origin}: {reason}")]
    BadSignature { origin: String, reason: String },
    #[error("the request body is not JSON: {0}")]
    BadBody(String),
}

impl RequestAuthError {
    /// `M_UNAUTHORIZED` (or `M_FORBIDDEN` for a denied origin).
    pub fn errcode(&self) -> &'static str {
        match self {
            Self::OriginDenied { .. } => "M_FORBIDDEN",
            _ => "M_UNAUTHORIZED",
        }
    }

    /// 401, or 403 for a denied origin.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::OriginDenied { .. } => http::StatusCode::FORBIDDEN,
            _ => http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// Errors of the remote key cache.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The [`crate::keyring::KeyStore`] failed.
    #[error("key store: {0}")]
    Store(String),
    /// Fetching keys failed (every source was tried).
    #[error("fetching the keys of {server}: {reason}")]
    Fetch { server: String, reason: String },
    /// A key response was malformed or its signatures did not verify.
    #[error("invalid key response for {server}: {reason}")]
    Invalid { server: String, reason: String },
    /// Signing with our own key failed.
    #[error(transparent)]
    Sign(#[from] crate::KeyError),
}
