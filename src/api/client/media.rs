//! Content repository: upload (direct and asynchronous), download, thumbnails, config and URL
//! previews (off). Authenticated media (`/_matrix/client/v1/media/…`, v1.11) is what clients use;
//! the legacy `/_matrix/media/v3/` download and thumbnail paths are served too, without a token.
//!
//! Uploads do not go through the generic [`Ruma`] extractor: it buffers the body under
//! `limits.max_request_bytes` and expects JSON. [`RumaHead`] parses the ruma request (path,
//! query, headers) and checks the token, then the handler streams the body to disk under
//! `media.max_upload_bytes`. Downloads answer with a streamed file body and the security
//! headers built here rather than through ruma's response types (which hold the bytes in memory).

// The legacy /_matrix/media/v3 endpoints are deprecated in ruma, and served on purpose.
#![allow(deprecated)]

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRequestParts, RawPathParams, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use ruma::{
    ServerName,
    api::{
        IncomingRequest, IncomingRequestExt,
        client::{authenticated_media, media as legacy},
    },
    http_headers::{ContentDisposition, ContentDispositionType},
};
use serde_json::json;

use super::JsonResult;
use crate::{
    api::{
        Auth, Ruma,
        extract::{authenticate, map_parse_error},
        route,
    },
    error::{Error, Result},
    media::{
        self, Media,
        store::{self, upload_too_large},
        thumbnail::{self, Thumbnail},
    },
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<legacy::create_content::v3::Request, _, _>(r, upload);
    let r = route::<legacy::create_mxc_uri::v1::Request, _, _>(r, create);
    let r = route::<legacy::create_content_async::v3::Request, _, _>(r, upload_async);
    let r = route::<authenticated_media::get_media_config::v1::Request, _, _>(r, config);
    let r = route::<legacy::get_media_config::v3::Request, _, _>(r, config_legacy);
    let r = route::<authenticated_media::get_content::v1::Request, _, _>(r, download);
    let r =
        route::<authenticated_media::get_content_as_filename::v1::Request, _, _>(r, download_as);
    let r = route::<authenticated_media::get_content_thumbnail::v1::Request, _, _>(r, thumb);
    let r = route::<legacy::get_content::v3::Request, _, _>(r, download_legacy);
    let r = route::<legacy::get_content_as_filename::v3::Request, _, _>(r, download_as_legacy);
    let r = route::<legacy::get_content_thumbnail::v3::Request, _, _>(r, thumb_legacy);
    let r = route::<authenticated_media::get_media_preview::v1::Request, _, _>(r, preview);
    route::<legacy::get_media_preview::v3::Request, _, _>(r, preview_legacy)
}

// ---------------------------------------------------------------------------------------------
// Uploads
// ---------------------------------------------------------------------------------------------

/// A ruma request parsed from the head only (path, query, headers) plus the caller, leaving
/// the body to the handler. For endpoints whose body is raw bytes of their own size limit.
pub struct RumaHead<T> {
    pub body: T,
    pub auth: Auth,
}

impl<T> FromRequestParts<AppState> for RumaHead<T>
where
    T: IncomingRequest + Send + 'static,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let params = match RawPathParams::from_request_parts(parts, state).await {
            Ok(p) => p.iter().map(|(_, v)| v.to_owned()).collect::<Vec<String>>(),
            Err(_) => return Err(Error::invalid_param("Invalid path parameter")),
        };
        let auth = authenticate::<T>(parts, state)
            .await?
            .ok_or_else(Error::missing_token)?;
        // Too large by its own account: refuse before reading a byte.
        let limit = state.config.media.max_upload_bytes;
        if let Some(len) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > limit
        {
            return Err(upload_too_large(limit));
        }
        let mut req = axum::http::Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone());
        if let Some(h) = req.headers_mut() {
            *h = parts.headers.clone();
        }
        let req = req.body(&b""[..]).map_err(Error::internal)?;
        let path_args: Vec<&str> = params.iter().map(String::as_str).collect();
        let body = T::try_from_http_request(req, &path_args).map_err(map_parse_error)?;
        Ok(RumaHead { body, auth })
    }
}

async fn upload(
    State(s): State<AppState>,
    req: RumaHead<legacy::create_content::v3::Request>,
    body: Body,
) -> JsonResult {
    let uri = media::upload(
        &s,
        &req.auth.user_id,
        req.body.content_type.as_deref(),
        req.body.filename.as_deref(),
        body.into_data_stream(),
    )
    .await?;
    Ok(Json(json!({"content_uri": uri})))
}

async fn create(
    State(s): State<AppState>,
    req: Ruma<legacy::create_mxc_uri::v1::Request>,
) -> JsonResult {
    let user = req.user()?;
    let (uri, expires) = media::create_pending(&s, &user.user_id).await?;
    Ok(Json(
        json!({"content_uri": uri, "unused_expires_at": expires}),
    ))
}

async fn upload_async(
    State(s): State<AppState>,
    req: RumaHead<legacy::create_content_async::v3::Request>,
    body: Body,
) -> JsonResult {
    media::upload_pending(
        &s,
        &req.auth.user_id,
        &req.body.server_name,
        &req.body.media_id,
        req.body.content_type.as_deref(),
        req.body.filename.as_deref(),
        body.into_data_stream(),
    )
    .await?;
    Ok(Json(json!({})))
}

// ---------------------------------------------------------------------------------------------
// Config and previews
// ---------------------------------------------------------------------------------------------

fn media_config(s: &AppState) -> JsonResult {
    Ok(Json(
        json!({"m.upload.size": s.config.media.max_upload_bytes}),
    ))
}

async fn config(
    State(s): State<AppState>,
    req: Ruma<authenticated_media::get_media_config::v1::Request>,
) -> JsonResult {
    req.user()?;
    media_config(&s)
}

async fn config_legacy(
    State(s): State<AppState>,
    req: Ruma<legacy::get_media_config::v3::Request>,
) -> JsonResult {
    req.user()?;
    media_config(&s)
}

/// URL previews are off: this server makes no outbound requests to arbitrary URLs (that would
/// let any user probe the internal network). Clients show no preview on this error.
fn previews_disabled() -> Error {
    Error::forbidden("URL previews are disabled on this server")
}

async fn preview(req: Ruma<authenticated_media::get_media_preview::v1::Request>) -> JsonResult {
    req.user()?;
    Err(previews_disabled())
}

async fn preview_legacy(req: Ruma<legacy::get_media_preview::v3::Request>) -> JsonResult {
    req.user()?;
    Err(previews_disabled())
}

// ---------------------------------------------------------------------------------------------
// Downloads and thumbnails
// ---------------------------------------------------------------------------------------------

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; object-src 'self';";

/// Whether the response came from an authenticated endpoint (private caching) or a legacy one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Authenticated,
    Legacy,
}

fn header_value(v: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(v).map_err(Error::internal)
}

/// Streams a stored file with the media security headers. `etag` is the content's identity.
#[allow(clippy::too_many_arguments)]
async fn serve_file(
    request_headers: &HeaderMap,
    path: &std::path::Path,
    size: u64,
    content_type: &str,
    inline: bool,
    filename: Option<String>,
    etag: &str,
    access: Access,
) -> Result<Response> {
    let etag = format!("\"{etag}\"");
    let cache = match access {
        Access::Authenticated => "private, max-age=31536000, immutable",
        Access::Legacy => "public, max-age=86400, s-maxage=86400",
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, header_value(&etag)?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    if request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    let disposition = ContentDisposition::new(if inline {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    })
    .with_filename(filename);
    headers.insert(header::CONTENT_TYPE, header_value(content_type)?);
    headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(&disposition.to_string())?,
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "media file missing on disk");
            return Err(Error::not_found("Media not found"));
        }
        Err(e) => return Err(Error::internal(format!("open {}: {e}", path.display()))),
    };
    Ok((
        StatusCode::OK,
        headers,
        Body::from_stream(store::read_stream(file)),
    )
        .into_response())
}

async fn serve_media(
    headers: &HeaderMap,
    m: &Media,
    filename: Option<String>,
    access: Access,
) -> Result<Response> {
    let ty = m.served_type();
    serve_file(
        headers,
        &m.path,
        m.size,
        ty,
        media::is_inline_safe(ty),
        filename.or_else(|| m.filename.clone()),
        &m.sha256,
        access,
    )
    .await
}

async fn serve_thumbnail(
    headers: &HeaderMap,
    m: &Media,
    t: &Thumbnail,
    access: Access,
) -> Result<Response> {
    let ext = t.path.extension().and_then(|e| e.to_str()).unwrap_or("png");
    let stem = t.path.file_stem().and_then(|e| e.to_str()).unwrap_or("");
    serve_file(
        headers,
        &t.path,
        t.size,
        t.content_type,
        true,
        Some(format!("thumbnail.{ext}")),
        &format!("{}-{stem}", m.sha256),
        access,
    )
    .await
}

async fn download(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Ruma<authenticated_media::get_content::v1::Request>,
) -> Result<Response> {
    req.user()?;
    let b = &req.body;
    let m = media::load(&s, &b.server_name, &b.media_id, b.timeout_ms).await?;
    serve_media(&headers, &m, None, Access::Authenticated).await
}

async fn download_as(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Ruma<authenticated_media::get_content_as_filename::v1::Request>,
) -> Result<Response> {
    req.user()?;
    let b = &req.body;
    let m = media::load(&s, &b.server_name, &b.media_id, b.timeout_ms).await?;
    serve_media(
        &headers,
        &m,
        Some(b.filename.clone()),
        Access::Authenticated,
    )
    .await
}

async fn download_legacy(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Ruma<legacy::get_content::v3::Request>,
) -> Result<Response> {
    let b = &req.body;
    let m = load_legacy(
        &s,
        &b.server_name,
        &b.media_id,
        b.allow_remote,
        b.timeout_ms,
    )
    .await?;
    serve_media(&headers, &m, None, Access::Legacy).await
}

async fn download_as_legacy(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Ruma<legacy::get_content_as_filename::v3::Request>,
) -> Result<Response> {
    let b = &req.body;
    let m = load_legacy(
        &s,
        &b.server_name,
        &b.media_id,
        b.allow_remote,
        b.timeout_ms,
    )
    .await?;
    serve_media(&headers, &m, Some(b.filename.clone()), Access::Legacy).await
}

async fn load_legacy(
    s: &AppState,
    server_name: &ServerName,
    media_id: &str,
    allow_remote: bool,
    timeout: std::time::Duration,
) -> Result<Media> {
    if !allow_remote && server_name != s.config.server_name {
        return Err(Error::not_found(
            "Remote media not requested (allow_remote=false)",
        ));
    }
    media::load(s, server_name, media_id, timeout).await
}

fn method(m: Option<&ruma::media::Method>) -> Result<thumbnail::Method> {
    match m.map(|m| m.as_str()) {
        None | Some("scale") => Ok(thumbnail::Method::Scale),
        Some("crop") => Ok(thumbnail::Method::Crop),
        Some(other) => Err(Error::invalid_param(format!(
            "Unknown thumbnail method {other:?} (crop or scale)"
        ))),
    }
}

fn dimension(v: ruma::UInt, name: &str) -> Result<u32> {
    u32::try_from(u64::from(v))
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::invalid_param(format!("{name} must be a positive integer")))
}

async fn thumb(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Ruma<authenticated_media::get_content_thumbnail::v1::Request>,
) -> Result<Response> {
    req.user()?;
    let b = &req.body;
    let (w, h) = (dimension(b.width, "width")?, dimension(b.height, "height")?);
    let method = method(b.method.as_ref())?;
    let m = media::load(&s, &b.server_name, &b.media_id, b.timeout_ms).await?;
    let t = thumbnail::thumbnail(&s, &m, w, h, method, b.animated == Some(true)).await?;
    serve_thumbnail(&headers, &m, &t, Access::Authenticated).await
}

async fn thumb_legacy(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Ruma<legacy::get_content_thumbnail::v3::Request>,
) -> Result<Response> {
    let b = &req.body;
    let (w, h) = (dimension(b.width, "width")?, dimension(b.height, "height")?);
    let method = method(b.method.as_ref())?;
    let m = load_legacy(
        &s,
        &b.server_name,
        &b.media_id,
        b.allow_remote,
        b.timeout_ms,
    )
    .await?;
    let t = thumbnail::thumbnail(&s, &m, w, h, method, b.animated == Some(true)).await?;
    serve_thumbnail(&headers, &m, &t, Access::Legacy).await
}
