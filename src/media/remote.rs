//! Media of other servers, fetched over federation (spec v1.11 authenticated media) and cached
//! here: `GET /_matrix/federation/v1/media/download/{mediaId}` on the origin answers
//! `multipart/mixed` (a JSON metadata part, then the file or a `Location` to fetch it from).
//! The bytes go to the same content-addressed store as uploads, the row to the `media` table
//! with the origin's server name and no uploader, so the next download is local.
//!
//! One fetch per media id at a time: concurrent requests for the same id wait for the first
//! and then read its cached copy. Answers larger than `media.max_upload_bytes` are refused
//! (502 M_TOO_LARGE), as are unreachable or misbehaving origins (502 / 504 M_UNKNOWN).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use ganglion_federation::error::FederationError;
use ruma::{
    ServerName, api::federation::authenticated_media::get_content, http_headers::ContentDisposition,
};

use super::{Media, complete, media_root, sanitise_content_type, store, valid_media_id};
use crate::{
    error::{Error, Result},
    services::Services,
    storage::{media::MediaContent, now_ms},
};

/// How long the origin may wait for a pending upload of its own before answering.
const REMOTE_WAIT: Duration = Duration::from_secs(20);
/// Room for the multipart framing and the JSON part on top of the file itself.
const FRAMING_ALLOWANCE: u64 = 64 * 1024;

type FetchLocks = Mutex<HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>;

fn fetch_locks() -> &'static FetchLocks {
    static LOCKS: OnceLock<FetchLocks> = OnceLock::new();
    LOCKS.get_or_init(Default::default)
}

/// The lock of one media id; the map entry goes when the last holder drops it.
struct FetchGuard {
    key: (String, String),
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl FetchGuard {
    fn new(origin: &str, media_id: &str) -> Self {
        let key = (origin.to_owned(), media_id.to_owned());
        let lock = match fetch_locks().lock() {
            Ok(mut map) => map.entry(key.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        FetchGuard { key, lock }
    }
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = fetch_locks().lock()
            && map
                .get(&self.key)
                // The map's reference and ours: nobody else waits.
                .is_some_and(|l| Arc::ptr_eq(l, &self.lock) && Arc::strong_count(l) <= 2)
        {
            map.remove(&self.key);
        }
    }
}

async fn cached(s: &Services, origin: &str, media_id: &str) -> Result<Option<Media>> {
    match s.db.media(origin, media_id).await? {
        Some(row) if row.uploaded_ts.is_some() && row.sha256.is_some() => {
            Ok(Some(complete(s, row)?))
        }
        _ => Ok(None),
    }
}

/// Media `mxc://{origin}/{media_id}` of another server: the cached copy, or fetched from the
/// origin over federation (and cached). 404 when federation is off.
pub async fn fetch(s: &Services, origin: &ServerName, media_id: &str) -> Result<Media> {
    if !valid_media_id(media_id) {
        return Err(Error::not_found("Media not found"));
    }
    if let Some(m) = cached(s, origin.as_str(), media_id).await? {
        return Ok(m);
    }
    let Ok(fed) = s.federation() else {
        return Err(Error::not_found(format!(
            "Media from {origin} is not available on this server"
        )));
    };
    let guard = FetchGuard::new(origin.as_str(), media_id);
    let _held = guard.lock.lock().await;
    // Someone else may have fetched it while we waited.
    if let Some(m) = cached(s, origin.as_str(), media_id).await? {
        return Ok(m);
    }
    let limit = s.config.media.max_upload_bytes;
    let cap = usize::try_from(limit.saturating_add(FRAMING_ALLOWANCE)).unwrap_or(usize::MAX);
    let mut request = get_content::v1::Request::new(media_id.to_owned());
    request.timeout_ms = REMOTE_WAIT;
    let (_, headers, body) = fed
        .client
        .send_raw(origin, request, cap)
        .await
        .map_err(|e| fetch_error(origin.as_str(), limit, e))?;
    let file = match parse_answer(&headers, &body) {
        Some(Answer::File(f)) => f,
        Some(Answer::Location(url)) => {
            let cap = usize::try_from(limit).unwrap_or(usize::MAX);
            let (headers, bytes) = fed
                .client
                .get_url(&url, cap)
                .await
                .map_err(|e| fetch_error(origin.as_str(), limit, e))?;
            RemoteFile {
                content_type: header_str(&headers, header::CONTENT_TYPE),
                disposition: headers
                    .get(header::CONTENT_DISPOSITION)
                    .map(|v| v.as_bytes().to_vec()),
                bytes: Bytes::from(bytes),
            }
        }
        None => {
            return Err(Error::new(
                StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                format!("{origin} sent an unreadable media answer"),
            ));
        }
    };
    if file.bytes.len() as u64 > limit {
        return Err(too_large(limit));
    }
    let filename = file
        .disposition
        .as_deref()
        .and_then(|d| ContentDisposition::try_from(d).ok())
        .and_then(|d| d.filename)
        .filter(|f| !f.is_empty() && !f.contains(['\r', '\n']));
    let content_type = sanitise_content_type(file.content_type.as_deref());
    let size = file.bytes.len() as i64;
    let stream = futures::stream::iter([Ok::<Bytes, std::convert::Infallible>(file.bytes)]);
    let blob = store::write_stream(&media_root(s), stream, limit).await?;
    s.db.insert_remote_media(
        origin.as_str(),
        media_id,
        &MediaContent {
            content_type: content_type.as_deref(),
            filename: filename.as_deref(),
            size,
            sha256: &blob.sha256,
        },
        now_ms(),
    )
    .await?;
    cached(s, origin.as_str(), media_id)
        .await?
        .ok_or_else(|| Error::internal("cached remote media row vanished"))
}

fn too_large(limit: u64) -> Error {
    Error::new(
        StatusCode::BAD_GATEWAY,
        "M_TOO_LARGE",
        format!("The remote media is larger than the limit of {limit} bytes"),
    )
}

/// A failed fetch as the client sees it: the origin's 404 stays a 404; too large is 502
/// M_TOO_LARGE; a timeout 504; anything else 502 M_UNKNOWN.
fn fetch_error(origin: &str, limit: u64, e: FederationError) -> Error {
    tracing::info!("fetching media from {origin}: {e}");
    match &e {
        FederationError::ResponseTooLarge { .. } => too_large(limit),
        FederationError::Remote { status, .. } if *status == StatusCode::NOT_FOUND => {
            Error::not_found(format!("Media not found on {origin}"))
        }
        FederationError::DestinationDenied(_) => Error::not_found(format!(
            "Media from {origin} is not available on this server"
        )),
        FederationError::Transport { source, .. } if source.is_timeout() => Error::new(
            StatusCode::GATEWAY_TIMEOUT,
            "M_UNKNOWN",
            format!("Timed out fetching media from {origin}"),
        ),
        _ => Error::new(
            StatusCode::BAD_GATEWAY,
            "M_UNKNOWN",
            format!("Could not fetch media from {origin}"),
        ),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

struct RemoteFile {
    content_type: Option<String>,
    disposition: Option<Vec<u8>>,
    bytes: Bytes,
}

enum Answer {
    File(RemoteFile),
    Location(String),
}

/// The file (or its `Location`) in a federation media answer.
fn parse_answer(headers: &HeaderMap, body: &[u8]) -> Option<Answer> {
    let boundary = multipart_boundary(&header_str(headers, header::CONTENT_TYPE)?)?;
    let parts = parse_multipart(body, &boundary)?;
    let [_metadata, file, ..] = parts.as_slice() else {
        return None;
    };
    if let Some(location) = file.header("location") {
        return Some(Answer::Location(location.trim().to_owned()));
    }
    Some(Answer::File(RemoteFile {
        content_type: file.header("content-type").map(str::to_owned),
        disposition: file
            .header("content-disposition")
            .map(|v| v.as_bytes().to_vec()),
        bytes: Bytes::copy_from_slice(file.body),
    }))
}

/// The `boundary` parameter of a `multipart/mixed` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let essence = params.next()?.trim();
    if !essence.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (!v.is_empty() && v.len() <= 200).then(|| v.to_owned())
    })
}

struct Part<'a> {
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

impl Part<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let off = hay.get(i..)?.iter().position(|&b| b == first)?;
        i += off;
        if hay.get(i..i + needle.len())? == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The next delimiter line (`--boundary` at the start of the body or of a line) at or after
/// `from`.
fn next_delimiter(body: &[u8], delim: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let i = find(body, delim, at)?;
        let line_start = i == 0 || body.get(i - 1) == Some(&b'\n');
        // The delimiter is followed by `--`, padding or the line break, never more boundary.
        let whole = matches!(
            body.get(i + delim.len()),
            None | Some(b'-' | b'\r' | b'\n' | b' ' | b'\t')
        );
        if line_start && whole {
            return Some(i);
        }
        at = i + 1;
    }
}

/// Splits a `multipart/mixed` body (RFC 2046) into its parts. Lenient about bare `\n` line
/// ends; `None` when the framing is broken (no closing delimiter is tolerated at the end).
fn parse_multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<Part<'a>>> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut parts = Vec::new();
    let mut at = next_delimiter(body, delim, 0)?;
    loop {
        let after = at + delim.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Some(parts);
        }
        // The rest of the delimiter line (transport padding) ends with a line break.
        let line_end = after + body.get(after..)?.iter().position(|&b| b == b'\n')? + 1;
        let next = next_delimiter(body, delim, line_end);
        let end = next.unwrap_or(body.len());
        let mut content = body.get(line_end..end)?;
        // The line break before the next delimiter belongs to it.
        if next.is_some() {
            content = content.strip_suffix(b"\n").unwrap_or(content);
            content = content.strip_suffix(b"\r").unwrap_or(content);
        }
        parts.push(parse_part(content)?);
        match next {
            Some(n) => at = n,
            None => return Some(parts),
        }
    }
}

fn parse_part(content: &[u8]) -> Option<Part<'_>> {
    let mut headers = Vec::new();
    let mut pos = 0;
    loop {
        let Some(nl) = content.get(pos..)?.iter().position(|&b| b == b'\n') else {
            // Headers only, no body.
            if !content.get(pos..)?.is_empty() {
                headers.push(header_line(content.get(pos..)?)?);
            }
            return Some(Part { headers, body: &[] });
        };
        let line = content.get(pos..pos + nl)?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if line.is_empty() {
            return Some(Part {
                headers,
                body: content.get(pos..)?,
            });
        }
        headers.push(header_line(line)?);
        if headers.len() > 32 {
            return None;
        }
    }
}

fn header_line(line: &[u8]) -> Option<(String, String)> {
    let line = std::str::from_utf8(line).ok()?;
    let (k, v) = line.split_once(':')?;
    Some((k.trim().to_owned(), v.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_parsing() {
        assert_eq!(
            multipart_boundary("multipart/mixed; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            multipart_boundary("Multipart/Mixed; charset=x; Boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(multipart_boundary("text/plain; boundary=abc"), None);
        assert_eq!(multipart_boundary("multipart/mixed"), None);
    }

    #[test]
    fn multipart_crlf() {
        let body = b"--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B\r\nContent-Type: image/png\r\n\
                     Content-Disposition: inline\r\n\r\nab\r\n--Bc\r\n--B--\r\n";
        let parts = parse_multipart(body, "B").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, b"{}");
        assert_eq!(parts[1].header("content-type"), Some("image/png"));
        assert_eq!(parts[1].body, b"ab\r\n--Bc");
    }

    #[test]
    fn multipart_spec_examples() {
        // The spec's examples: no blank line after a part's headers when it has no body.
        let body = b"--gc0p\nContent-Type: application/json\n\n{}\n--gc0p\n\
                     Location: https://cdn.example.org/ab/c1/2345.txt\n--gc0p--";
        let parts = parse_multipart(body, "gc0p").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[1].header("Location"),
            Some("https://cdn.example.org/ab/c1/2345.txt")
        );
        let preamble =
            b"junk\r\n--x\r\n\r\n{}\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--";
        let parts = parse_multipart(preamble, "x").unwrap();
        assert_eq!(parts[1].body, b"hi");
    }

    #[test]
    fn multipart_broken() {
        assert!(parse_multipart(b"no delimiters", "B").is_none());
        assert!(parse_multipart(b"--B", "B").is_none());
        assert!(parse_multipart(b"--B\r\n--B\r\n--B", "B").is_none());
        let parts = parse_multipart(b"--B\r\n\r\n{}\r\n--B--", "B").unwrap();
        assert_eq!(parts.len(), 1);
    }
}
