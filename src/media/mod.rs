//! The media repository: uploads (direct and asynchronous via `/create`), downloads and
//! thumbnails. Bytes live on disk (see [`store`]), one row per mxc URI in the `media` table
//! (storage::media). Nothing here knows HTTP; the handlers are in api::client::media.
//!
//! Media of other servers is fetched over federation and cached ([`remote`]).

pub mod remote;
pub mod store;
pub mod thumbnail;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::Stream;
use ruma::{OwnedMxcUri, ServerName, UserId};

use crate::{
    error::{Error, Result},
    services::Services,
    storage::{
        media::{MediaContent, MediaRow},
        now_ms,
    },
};

/// How long a media id reserved with `/create` waits for its content.
pub const PENDING_UPLOAD_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;
/// The longest a download waits for a pending upload, whatever the client asks.
const MAX_DOWNLOAD_WAIT: Duration = Duration::from_secs(60);
const PENDING_POLL: Duration = Duration::from_millis(250);

/// A stored, complete piece of media.
#[derive(Debug, Clone)]
pub struct Media {
    pub origin: String,
    pub media_id: String,
    /// Sanitised at upload; `None` when the uploader gave none (or an unusable one).
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub created_ts: i64,
    pub path: PathBuf,
}

impl Media {
    /// The type to serve the bytes as.
    pub fn served_type(&self) -> &str {
        self.content_type
            .as_deref()
            .unwrap_or("application/octet-stream")
    }
}

fn media_root(s: &Services) -> PathBuf {
    store::root(&s.config.data_dir)
}

/// A fresh media id: 24 random alphanumerics (143 bits).
pub fn new_media_id() -> String {
    crate::users::random_token(24)
}

/// Media ids this server hands out, and the only ones it looks up: `[A-Za-z0-9_-]`, at most
/// 255 characters.
pub fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn mxc(s: &Services, media_id: &str) -> OwnedMxcUri {
    OwnedMxcUri::from(format!("mxc://{}/{media_id}", s.server_name()))
}

/// A `Content-Type` value reduced to `type/subtype` (lower case) plus a valid `charset`, or
/// `None` when it does not parse. Anything else (boundary, odd parameters) is dropped.
pub fn sanitise_content_type(value: Option<&str>) -> Option<String> {
    let value = value?.trim();
    let mut parts = value.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let (ty, sub) = essence.split_once('/')?;
    if !is_token(ty) || !is_token(sub) {
        return None;
    }
    let charset = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        is_token(v).then(|| v.to_ascii_lowercase())
    });
    Some(match charset {
        Some(c) => format!("{ty}/{sub}; charset={c}"),
        None => format!("{ty}/{sub}"),
    })
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Types a browser may render in place without risk (no scripts: not HTML, not SVG, not XML).
/// Everything else is served as an attachment.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Whether content of this (sanitised) type may be shown inline.
pub fn is_inline_safe(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    INLINE_TYPES.contains(&essence)
}

fn complete(s: &Services, row: MediaRow) -> Result<Media> {
    let sha256 = row
        .sha256
        .ok_or_else(|| Error::internal("media row without content hash"))?;
    let path = store::content_path(&media_root(s), &sha256)?;
    Ok(Media {
        origin: row.origin,
        media_id: row.media_id,
        content_type: row.content_type,
        filename: row.filename,
        size: row.size.unwrap_or(0).max(0) as u64,
        sha256,
        created_ts: row.created_ts,
        path,
    })
}

/// Stores an upload and returns its mxc URI. The file is durable and the row committed
/// before this returns.
pub async fn upload<S, E>(
    s: &Services,
    user_id: &UserId,
    content_type: Option<&str>,
    filename: Option<&str>,
    body: S,
) -> Result<OwnedMxcUri>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let blob = store::write_stream(&media_root(s), body, s.config.media.max_upload_bytes).await?;
    let content_type = sanitise_content_type(content_type);
    let filename = filename.filter(|f| !f.is_empty());
    let media_id = new_media_id();
    s.db.insert_media(
        s.server_name(),
        &media_id,
        user_id.as_str(),
        &MediaContent {
            content_type: content_type.as_deref(),
            filename,
            size: blob.size as i64,
            sha256: &blob.sha256,
        },
        now_ms(),
    )
    .await?;
    Ok(mxc(s, &media_id))
}

/// Reserves a media id for an asynchronous upload. Returns its URI and when it expires unused.
pub async fn create_pending(s: &Services, user_id: &UserId) -> Result<(OwnedMxcUri, i64)> {
    let now = now_ms();
    let (pending, earliest_expiry) = s.db.pending_media_of_user(user_id.as_str(), now).await?;
    if pending >= i64::from(s.config.media.max_pending_uploads) {
        return Err(Error::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too many pending media uploads; upload to those first",
        )
        .with_extra(
            "retry_after_ms",
            serde_json::json!((earliest_expiry - now).max(1000)),
        ));
    }
    let media_id = new_media_id();
    let expires = now + PENDING_UPLOAD_LIFETIME_MS;
    s.db.create_pending_media(s.server_name(), &media_id, user_id.as_str(), now, expires)
        .await?;
    Ok((mxc(s, &media_id), expires))
}

/// Fills in the content of a media id reserved with [`create_pending`]. Only its creator may,
/// once, before it expires.
pub async fn upload_pending<S, E>(
    s: &Services,
    user_id: &UserId,
    server_name: &ServerName,
    media_id: &str,
    content_type: Option<&str>,
    filename: Option<&str>,
    body: S,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if server_name != s.config.server_name || !valid_media_id(media_id) {
        return Err(Error::not_found("Unknown media id"));
    }
    let row =
        s.db.media(server_name.as_str(), media_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown media id"))?;
    if row.user_id.as_deref() != Some(user_id.as_str()) {
        return Err(Error::forbidden("You may not upload to this media id"));
    }
    if row.uploaded_ts.is_some() {
        return Err(cannot_overwrite());
    }
    let now = now_ms();
    if row.unused_expires_ts.is_some_and(|t| t <= now) {
        return Err(Error::not_found("This media id has expired"));
    }
    let blob = store::write_stream(&media_root(s), body, s.config.media.max_upload_bytes).await?;
    let content_type = sanitise_content_type(content_type);
    let filename = filename.filter(|f| !f.is_empty());
    let filled =
        s.db.complete_pending_media(
            server_name.as_str(),
            media_id,
            &MediaContent {
                content_type: content_type.as_deref(),
                filename,
                size: blob.size as i64,
                sha256: &blob.sha256,
            },
            now_ms(),
        )
        .await?;
    if !filled {
        return Err(cannot_overwrite());
    }
    Ok(())
}

fn cannot_overwrite() -> Error {
    Error::new(
        axum::http::StatusCode::CONFLICT,
        "M_CANNOT_OVERWRITE_MEDIA",
        "Media has already been uploaded to this id",
    )
}

/// Finds media by mxc parts. Local media still pending an asynchronous upload is waited for up
/// to `timeout` (504 M_NOT_YET_UPLOADED after that); other servers' media goes through
/// [`fetch_remote_media`].
pub async fn load(
    s: &Services,
    server_name: &ServerName,
    media_id: &str,
    timeout: Duration,
) -> Result<Media> {
    if server_name != s.config.server_name {
        return fetch_remote_media(s, server_name, media_id).await;
    }
    if !valid_media_id(media_id) {
        return Err(Error::not_found("Media not found"));
    }
    let deadline = Instant::now() + timeout.min(MAX_DOWNLOAD_WAIT);
    loop {
        let row =
            s.db.media(server_name.as_str(), media_id)
                .await?
                .ok_or_else(|| Error::not_found("Media not found"))?;
        if row.uploaded_ts.is_some() {
            return complete(s, row);
        }
        if row.unused_expires_ts.is_some_and(|t| t <= now_ms()) {
            return Err(Error::not_found("Media not found"));
        }
        if Instant::now() + PENDING_POLL > deadline {
            return Err(Error::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "M_NOT_YET_UPLOADED",
                "The media has not been uploaded yet",
            ));
        }
        tokio::time::sleep(PENDING_POLL).await;
    }
}

/// Media of another server: the cached copy, or fetched over federation (see [`remote`]).
async fn fetch_remote_media(
    s: &Services,
    server_name: &ServerName,
    media_id: &str,
) -> Result<Media> {
    remote::fetch(s, server_name, media_id).await
}
