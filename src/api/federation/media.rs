//! Authenticated media for other servers (spec v1.11): `GET /_matrix/federation/v1/media/
//! download/{mediaId}` and `/thumbnail/{mediaId}` serve this server's own media as
//! `multipart/mixed`: a JSON part (`{}`, no metadata yet) then the file part, streamed.

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::StreamExt;
use ruma::{
    api::federation::authenticated_media::{get_content, get_content_thumbnail},
    http_headers::{ContentDisposition, ContentDispositionType},
};

use crate::{
    api::{Ruma, route},
    error::{Error, Result},
    media::{self, store, thumbnail},
    services::AppState,
};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route::<get_content::v1::Request, _, _>(r, download);
    route::<get_content_thumbnail::v1::Request, _, _>(r, thumb)
}

/// The parts around the file's bytes: everything up to the file part's body, and the closing
/// delimiter.
fn multipart_frame(
    boundary: &str,
    content_type: &str,
    disposition: &str,
    size: u64,
) -> (String, String) {
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n\
         --{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\
         Content-Length: {size}\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    (head, tail)
}

/// Streams `path` as the second part of a `multipart/mixed` answer.
async fn serve_multipart(
    path: &std::path::Path,
    size: u64,
    content_type: &str,
    inline: bool,
    filename: Option<String>,
) -> Result<Response> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "media file missing on disk");
            return Err(Error::not_found("Media not found"));
        }
        Err(e) => return Err(Error::internal(format!("open {}: {e}", path.display()))),
    };
    let disposition = ContentDisposition::new(if inline {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    })
    .with_filename(filename)
    .to_string();
    // Nothing in a header value may break the framing.
    let clean = |v: &str| v.replace(['\r', '\n'], "");
    let boundary = crate::users::random_token(32);
    let (head, tail) = multipart_frame(&boundary, &clean(content_type), &clean(&disposition), size);
    let total = head.len() as u64 + size + tail.len() as u64;
    let body = futures::stream::once(async move { Ok(Bytes::from(head)) })
        .chain(store::read_stream(file))
        .chain(futures::stream::once(async move { Ok(Bytes::from(tail)) }));
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}"))
            .map_err(Error::internal)?,
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    Ok(resp)
}

async fn download(
    State(s): State<AppState>,
    req: Ruma<get_content::v1::Request>,
) -> Result<Response> {
    req.origin()?;
    let b = &req.body;
    let m = media::load(&s, &s.config.server_name, &b.media_id, b.timeout_ms).await?;
    let ty = m.served_type().to_owned();
    serve_multipart(
        &m.path,
        m.size,
        &ty,
        media::is_inline_safe(&ty),
        m.filename.clone(),
    )
    .await
}

fn dimension(v: ruma::UInt, name: &str) -> Result<u32> {
    u32::try_from(u64::from(v))
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::invalid_param(format!("{name} must be a positive integer")))
}

async fn thumb(
    State(s): State<AppState>,
    req: Ruma<get_content_thumbnail::v1::Request>,
) -> Result<Response> {
    req.origin()?;
    let b = &req.body;
    let (w, h) = (dimension(b.width, "width")?, dimension(b.height, "height")?);
    let method = match b.method.as_ref().map(|m| m.as_str()) {
        None | Some("scale") => thumbnail::Method::Scale,
        Some("crop") => thumbnail::Method::Crop,
        Some(other) => {
            return Err(Error::invalid_param(format!(
                "Unknown thumbnail method {other:?} (crop or scale)"
            )));
        }
    };
    let m = media::load(&s, &s.config.server_name, &b.media_id, b.timeout_ms).await?;
    let t = thumbnail::thumbnail(&s, &m, w, h, method, b.animated == Some(true)).await?;
    let ext = t.path.extension().and_then(|e| e.to_str()).unwrap_or("png");
    serve_multipart(
        &t.path,
        t.size,
        t.content_type,
        true,
        Some(format!("thumbnail.{ext}")),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::multipart_frame;

    #[test]
    fn multipart_framing() {
        let (head, tail) = multipart_frame("B", "image/png", "inline", 3);
        let whole = format!("{head}abc{tail}");
        assert_eq!(
            whole,
            "--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B\r\nContent-Type: image/png\r\n\
             Content-Disposition: inline\r\nContent-Length: 3\r\n\r\nabc\r\n--B--\r\n"
        );
    }
}
