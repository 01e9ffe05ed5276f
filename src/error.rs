//! One error type for the whole server, and the one place that maps it to an HTTP response.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Matrix error: status, errcode (`M_…`), message and optional extra fields.
    #[error("{errcode}: {message}")]
    Matrix {
        status: StatusCode,
        errcode: &'static str,
        message: String,
        extra: Option<Map<String, Value>>,
    },
    /// A user-interactive-authentication challenge (401 with flows/session/completed).
    #[error("user-interactive authentication required")]
    Uiaa(Value),
    /// Anything unexpected: logged, answered with 500 M_UNKNOWN.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Error::Matrix {
            status,
            errcode,
            message: message.into(),
            extra: None,
        }
    }
    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        if let Error::Matrix { extra, .. } = &mut self {
            extra
                .get_or_insert_with(Map::new)
                .insert(key.to_owned(), value);
        }
        self
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", msg)
    }
    pub fn bad_json(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", msg)
    }
    pub fn not_json(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", msg)
    }
    pub fn invalid_param(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", msg)
    }
    pub fn missing_param(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", msg)
    }
    pub fn unknown_token(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN", msg)
    }
    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        )
    }
    pub fn unrecognized(status: StatusCode, msg: impl Into<String>) -> Self {
        Self::new(status, "M_UNRECOGNIZED", msg)
    }
    pub fn too_large(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", msg)
    }
    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too many requests",
        )
        .with_extra("retry_after_ms", json!(retry_after_ms))
    }
    /// A key upload names a backup version that is not the current one (403, with
    /// `current_version`).
    pub fn wrong_room_keys_version(current_version: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "M_WRONG_ROOM_KEYS_VERSION",
            "Wrong backup version",
        )
        .with_extra("current_version", json!(current_version))
    }
    pub fn unknown(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", msg)
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Error::Internal(msg.to_string())
    }
    pub fn errcode(&self) -> &'static str {
        match self {
            Error::Matrix { errcode, .. } => errcode,
            Error::Uiaa(_) => "M_FORBIDDEN",
            Error::Internal(_) => "M_UNKNOWN",
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Internal(format!("database: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("json: {e}"))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, body, retry) = match self {
            Error::Matrix {
                status,
                errcode,
                message,
                extra,
            } => {
                let mut body = Map::new();
                body.insert("errcode".into(), json!(errcode));
                body.insert("error".into(), json!(message));
                let mut retry = None;
                if let Some(extra) = extra {
                    if let Some(ms) = extra.get("retry_after_ms").and_then(Value::as_u64) {
                        retry = Some(ms.div_ceil(1000));
                    }
                    body.extend(extra);
                }
                (status, Value::Object(body), retry)
            }
            Error::Uiaa(body) => (StatusCode::UNAUTHORIZED, body, None),
            Error::Internal(msg) => {
                tracing::error!("internal error: {msg}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"errcode": "M_UNKNOWN", "error": "Internal server error"}),
                    None,
                )
            }
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
