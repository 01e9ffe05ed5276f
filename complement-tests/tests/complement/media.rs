//! Content repository: uploads (direct and asynchronous), downloads with their headers,
//! thumbnails, config, limits, authentication (v1.11 authenticated media) and the legacy
//! `/_matrix/media/v3` paths.

use crate::prelude::*;

backend_tests!(
    upload_download_round_trip,
    legacy_unauthenticated_download,
    risky_types_are_attachments,
    unicode_filename_is_rfc6266_encoded,
    download_with_filename_path,
    etag_gives_not_modified,
    thumbnail_crop_and_scale,
    dynamic_thumbnails_exact_size,
    thumbnail_of_non_image_is_400,
    thumbnail_bad_params,
    media_config,
    upload_size_limit,
    upload_larger_than_request_limit,
    authenticated_media_requires_token,
    unknown_media_is_404,
    async_create_then_upload,
    async_upload_rules,
    download_waits_for_pending_upload,
    url_preview_is_disabled,
    media_survives_restart,
);

const MEDIA_V1: &str = "/_matrix/client/v1/media";
const MEDIA_V3: &str = "/_matrix/media/v3";

fn http() -> reqwest::Client {
    complement_tests::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

fn authed(c: &Client, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &c.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// Uploads `bytes` and returns `(status, json)`.
async fn upload_raw(
    c: &Client,
    bytes: Vec<u8>,
    content_type: Option<&str>,
    filename: Option<&str>,
) -> Resp {
    let mut url = format!("{}{MEDIA_V3}/upload", c.base);
    if let Some(f) = filename {
        url.push_str(&format!("?filename={}", enc(f)));
    }
    let mut req = authed(c, http().post(url)).body(bytes);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.expect("upload");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Uploads and returns the mxc URI.
async fn upload(c: &Client, bytes: &[u8], content_type: &str, filename: Option<&str>) -> String {
    let body = upload_raw(c, bytes.to_vec(), Some(content_type), filename)
        .await
        .ok();
    let uri = body["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    assert!(
        uri.starts_with(&format!("mxc://{}/", c.server_name)),
        "{uri}"
    );
    uri
}

/// `mxc://server/id` → `server/id` for use in a path.
fn mxc_path(uri: &str) -> String {
    let rest = uri.strip_prefix("mxc://").expect("mxc uri");
    let (server, id) = rest.split_once('/').expect("mxc parts");
    format!("{}/{}", enc(server), enc(id))
}

async fn get(c: &Client, path: &str, auth: bool) -> reqwest::Response {
    let req = http().get(format!("{}{path}", c.base));
    let req = if auth { authed(c, req) } else { req };
    req.send().await.expect("get")
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn err_of(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn assert_security_headers(resp: &reqwest::Response) {
    let csp = header(resp, "content-security-policy");
    assert!(csp.contains("sandbox"), "CSP: {csp:?}");
    assert!(csp.contains("default-src 'none'"), "CSP: {csp:?}");
    assert!(csp.contains("script-src 'none'"), "CSP: {csp:?}");
    assert_eq!(header(resp, "cross-origin-resource-policy"), "cross-origin");
    assert_eq!(header(resp, "x-content-type-options"), "nosniff");
    assert!(
        header(resp, "cache-control").contains("max-age"),
        "cache-control: {:?}",
        header(resp, "cache-control")
    );
}

// ---------------------------------------------------------------------------------------------
// A tiny PNG encoder (stored deflate blocks), so the tests need no image library.
// ---------------------------------------------------------------------------------------------

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut typed = kind.to_vec();
    typed.extend_from_slice(data);
    out.extend_from_slice(&typed);
    out.extend_from_slice(&crc32(&typed).to_be_bytes());
}

/// An RGB PNG of `w`x`h` with a colour gradient.
fn png(w: u32, h: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter: none
        for x in 0..w {
            raw.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Width and height from a PNG's IHDR.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG ({} bytes)",
        bytes.len()
    );
    let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    (w, h)
}

async fn thumbnail(c: &Client, uri: &str, query: &str) -> reqwest::Response {
    get(
        c,
        &format!("{MEDIA_V1}/thumbnail/{}?{query}", mxc_path(uri)),
        true,
    )
    .await
}

// ---------------------------------------------------------------------------------------------

async fn upload_download_round_trip(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bytes = b"hello media repository\n".to_vec();
    let uri = upload(&alice, &bytes, "text/plain", Some("hello.txt")).await;

    let resp = get(
        &alice,
        &format!("{MEDIA_V1}/download/{}", mxc_path(&uri)),
        true,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        header(&resp, "content-type").starts_with("text/plain"),
        "{:?}",
        header(&resp, "content-type")
    );
    let cd = header(&resp, "content-disposition");
    assert!(cd.starts_with("inline"), "content-disposition: {cd:?}");
    assert!(cd.contains("hello.txt"), "content-disposition: {cd:?}");
    assert_security_headers(&resp);
    assert_eq!(resp.bytes().await.expect("body").to_vec(), bytes);

    // Another user downloads it too; a second identical upload gets its own URI.
    let bob = server.register("bob").await;
    let resp = get(
        &bob,
        &format!("{MEDIA_V1}/download/{}", mxc_path(&uri)),
        true,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").to_vec(), bytes);
    let uri2 = upload(&bob, &bytes, "text/plain", None).await;
    assert_ne!(uri, uri2);
    let resp = get(
        &bob,
        &format!("{MEDIA_V1}/download/{}", mxc_path(&uri2)),
        true,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").to_vec(), bytes);

    // Binary bytes come back unchanged.
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let uri3 = upload(&alice, &binary, "application/octet-stream", None).await;
    let resp = get(
        &alice,
        &format!("{MEDIA_V1}/download/{}", mxc_path(&uri3)),
        true,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), "70000");
    assert_eq!(resp.bytes().await.expect("body").to_vec(), binary);
}

async fn legacy_unauthenticated_download(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let image = png(8, 8);
    let uri = upload(&alice, &image, "image/png", Some("dot.png")).await;
    let resp = get(
        &alice,
        &format!("{MEDIA_V3}/download/{}", mxc_path(&uri)),
        false,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "image/png");
    assert_security_headers(&resp);
    assert_eq!(resp.bytes().await.expect("body").to_vec(), image);
    let resp = get(
        &alice,
        &format!(
            "{MEDIA_V3}/thumbnail/{}?width=4&height=4&method=crop",
            mxc_path(&uri)
        ),
        false,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "image/png");
}

async fn risky_types_are_attachments(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    for ct in ["text/html", "image/svg+xml", "application/javascript"] {
        let uri = upload(&alice, b"<script>alert(1)</script>", ct, Some("x")).await;
        let resp = get(
            &alice,
            &format!("{MEDIA_V1}/download/{}", mxc_path(&uri)),
            true,
        )
        .await;
        assert_eq!(resp.status(), 200);
        let cd = header(&resp, "content-disposition");
        assert!(cd.starts_with("attachment"), "{ct}: {cd:?}");
        assert_security_headers(&resp);
    }
    // No content type, or garbage: served as an attachment of application/octet-stream.
    let (status, body) = upload_raw(&alice, b"abc".to_vec(), Some("not a type"), None).await;
    assert_eq!(status, 200, "{body}");
    let uri = body["content_uri"].as_str().expect("uri");
    let resp = get(
        &alice,
        &format!("{MEDIA_V1}/download/{}", mxc_path(uri)),
        true,
    )
    .await;
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    assert!(header(&resp, "content-disposition").starts_with("attachment"));
}

async fn unicode_filename_is_rfc6266_encoded(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let uri = upload(&alice, b"x", "text/plain", Some("résumé 2024.txt")).await;
    let resp = get(
        &alice,
        &format!("{MEDIA_V1}/download/{}", mxc_path(&uri)),
        true,
    )
    .await;
    let cd = header(&resp, "content-disposition");
    assert!(
        cd.contains("filename*=utf-8''r%C3%A9sum%C3%A9%202024.txt"),
        "content-disposition: {cd:?}"
    );
}

async fn download_with_filename_path(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let uri = upload(&alice, b"data", "text/plain", Some("original.txt")).await;
    for prefix in [MEDIA_V1, MEDIA_V3] {
        let resp = get(
            &alice,
            &format!("{prefix}/download/{}/renamed.txt", mxc_path(&uri)),
            prefix == MEDIA_V1,
        )
        .await;
        assert_eq!(resp.status(), 200, "{prefix}");
        let cd = header(&resp, "content-disposition");
        assert!(cd.contains("renamed.txt"), "{prefix}: {cd:?}");
        assert_eq!(resp.bytes().await.expect("body").as_ref(), b"data");
    }
}

async fn etag_gives_not_modified(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let uri = upload(&alice, b"cache me", "text/plain", None).await;
    let path = format!("{}{MEDIA_V1}/download/{}", alice.base, mxc_path(&uri));
    let resp = authed(&alice, http().get(&path)).send().await.expect("get");
    let etag = header(&resp, "etag");
    assert!(!etag.is_empty(), "no etag");
    let resp = authed(&alice, http().get(&path))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 304);
}

async fn thumbnail_crop_and_scale(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let uri = upload(&alice, &png(200, 100), "image/png", Some("wide.png")).await;

    let resp = thumbnail(&alice, &uri, "width=32&height=32&method=crop").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "image/png");
    assert!(header(&resp, "content-disposition").starts_with("inline"));
    assert_security_headers(&resp);
    assert_eq!(png_size(&resp.bytes().await.expect("body")), (32, 32));

    // Served again (now from the cache) with the same bytes.
    let a = thumbnail(&alice, &uri, "width=32&height=32&method=crop")
        .await
        .bytes()
        .await
        .expect("body");
    let c = thumbnail(&alice, &uri, "width=32&height=32&method=crop")
        .await
        .bytes()
        .await
        .expect("body");
    assert_eq!(a, c);

    // Scale keeps the aspect ratio, is at least as large as asked (where the source allows)
    // and never larger than the source.
    let resp = thumbnail(&alice, &uri, "width=50&height=50&method=scale").await;
    assert_eq!(resp.status(), 200);
    let (w, h) = png_size(&resp.bytes().await.expect("body"));
    assert!((50..=200).contains(&w) && w == 2 * h, "scale gave {w}x{h}");

    // No upscaling.
    let resp = thumbnail(&alice, &uri, "width=1000&height=1000&method=scale").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(png_size(&resp.bytes().await.expect("body")), (200, 100));

    // Method defaults to scale; animated is accepted.
    let resp = thumbnail(&alice, &uri, "width=64&height=64&animated=true").await;
    assert_eq!(resp.status(), 200);
    let (w, h) = png_size(&resp.bytes().await.expect("body"));
    assert_eq!(w, 2 * h, "{w}x{h}");
}

async fn dynamic_thumbnails_exact_size(b: Backend) {
    let server = start_with(
        b,
        ServerOptions {
            extra_toml: "[media]\ndynamic_thumbnails = true\n".into(),
            ..Default::default()
        },
    )
    .await;
    let alice = server.register("alice").await;
    let uri = upload(&alice, &png(200, 100), "image/png", None).await;
    let resp = thumbnail(&alice, &uri, "width=50&height=50&method=scale").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(png_size(&resp.bytes().await.expect("body")), (50, 25));
    let resp = thumbnail(&alice, &uri, "width=40&height=30&method=crop").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(png_size(&resp.bytes().await.expect("body")), (40, 30));
}

async fn thumbnail_of_non_image_is_400(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let uri = upload(&alice, b"just text", "text/plain", None).await;
    let resp = thumbnail(&alice, &uri, "width=32&height=32&method=crop").await;
    err_of(resp).await.expect_err(400, "M_UNKNOWN");
    // Claims to be an image but is not one.
    let uri = upload(&alice, b"not really a png", "image/png", None).await;
    let resp = thumbnail(&alice, &uri, "width=32&height=32&method=crop").await;
    err_of(resp).await.expect_err(400, "M_UNKNOWN");
}

async fn thumbnail_bad_params(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let uri = upload(&alice, &png(16, 16), "image/png", None).await;
    let resp = thumbnail(&alice, &uri, "height=32&method=crop").await;
    assert_eq!(resp.status(), 400);
    let resp = thumbnail(&alice, &uri, "width=abc&height=32").await;
    assert_eq!(resp.status(), 400);
    let resp = thumbnail(&alice, &uri, "width=0&height=32").await;
    assert_eq!(resp.status(), 400);
    let resp = thumbnail(&alice, &uri, "width=32&height=32&method=stretch").await;
    assert_eq!(resp.status(), 400);
}

async fn media_config(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let body = alice.get(&format!("{MEDIA_V1}/config")).await.ok();
    assert_eq!(body["m.upload.size"], 50 * 1024 * 1024);
    let body = alice.get(&format!("{MEDIA_V3}/config")).await.ok();
    assert_eq!(body["m.upload.size"], 50 * 1024 * 1024);

    let server = start_with(
        b,
        ServerOptions {
            extra_toml: "[media]\nmax_upload_bytes = 123456\n".into(),
            ..Default::default()
        },
    )
    .await;
    let alice = server.register("alice").await;
    let body = alice.get(&format!("{MEDIA_V1}/config")).await.ok();
    assert_eq!(body["m.upload.size"], 123456);
}

async fn upload_size_limit(b: Backend) {
    let server = start_with(
        b,
        ServerOptions {
            extra_toml: "[media]\nmax_upload_bytes = 100000\n".into(),
            ..Default::default()
        },
    )
    .await;
    let alice = server.register("alice").await;
    upload(
        &alice,
        &vec![7u8; 100_000],
        "application/octet-stream",
        None,
    )
    .await;
    upload_raw(
        &alice,
        vec![7u8; 100_001],
        Some("application/octet-stream"),
        None,
    )
    .await
    .expect_err(413, "M_TOO_LARGE");

    // Without a Content-Length (chunked), the limit still holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..30).map(|_| Ok(vec![1u8; 10_000])).collect();
    let resp = authed(
        &alice,
        http().post(format!("{}{MEDIA_V3}/upload", alice.base)),
    )
    .header("content-type", "application/octet-stream")
    .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
    .send()
    .await;
    // The server may answer 413 and close before the client finished sending.
    if let Ok(resp) = resp {
        err_of(resp).await.expect_err(413, "M_TOO_LARGE");
    }
    // The server is fine afterwards.
    upload(&alice, b"small", "text/plain", None).await;
}

async fn upload_larger_than_request_limit(b: Backend) {
    // Uploads have their own limit: 3 MB passes although limits.max_request_bytes is 1 MiB.
    let server = start(b).await;
    let alice = server.register("alice").await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let uri = upload(&alice, &big, "application/octet-stream", None).await;
    let resp = get(
        &alice,
        &format!("{MEDIA_V1}/download/{}", mxc_path(&uri)),
        true,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").to_vec(), big);
}

async fn authenticated_media_requires_token(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let uri = upload(&alice, b"secret", "text/plain", None).await;
    let anon = alice.anonymous();
    upload_raw(&anon, b"x".to_vec(), Some("text/plain"), None)
        .await
        .expect_err(401, "M_MISSING_TOKEN");
    upload_raw(
        &alice.with_token("bogus"),
        b"x".to_vec(),
        Some("text/plain"),
        None,
    )
    .await
    .expect_err(401, "M_UNKNOWN_TOKEN");
    for path in [
        format!("{MEDIA_V1}/download/{}", mxc_path(&uri)),
        format!("{MEDIA_V1}/download/{}/f.txt", mxc_path(&uri)),
        format!("{MEDIA_V1}/thumbnail/{}?width=32&height=32", mxc_path(&uri)),
        format!("{MEDIA_V1}/config"),
        format!("{MEDIA_V1}/preview_url?url=https%3A%2F%2Fexample.org"),
    ] {
        err_of(get(&alice, &path, false).await)
            .await
            .expect_err(401, "M_MISSING_TOKEN");
    }
    anon.post("/_matrix/media/v1/create", &json!({}))
        .await
        .expect_err(401, "M_MISSING_TOKEN");
}

async fn unknown_media_is_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let local = format!("mxc://{}/doesNotExist123", server.server_name);
    let remote = "mxc://other.example.org/abcdef";
    for uri in [local.as_str(), remote] {
        for path in [
            format!("{MEDIA_V1}/download/{}", mxc_path(uri)),
            format!("{MEDIA_V1}/thumbnail/{}?width=32&height=32", mxc_path(uri)),
        ] {
            err_of(get(&alice, &path, true).await)
                .await
                .expect_err(404, "M_NOT_FOUND");
        }
        err_of(
            get(
                &alice,
                &format!("{MEDIA_V3}/download/{}", mxc_path(uri)),
                false,
            )
            .await,
        )
        .await
        .expect_err(404, "M_NOT_FOUND");
    }
}

async fn async_create_then_upload(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let body = alice
        .post("/_matrix/media/v1/create", &json!({}))
        .await
        .ok();
    let uri = body["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    assert!(uri.starts_with(&format!("mxc://{}/", server.server_name)));
    assert!(body["unused_expires_at"].as_i64().is_some(), "{body}");

    // Not uploaded yet: a short wait ends in 504 M_NOT_YET_UPLOADED.
    err_of(
        get(
            &alice,
            &format!("{MEDIA_V1}/download/{}?timeout_ms=300", mxc_path(&uri)),
            true,
        )
        .await,
    )
    .await
    .expect_err(504, "M_NOT_YET_UPLOADED");

    let resp = authed(
        &alice,
        http().put(format!(
            "{}{MEDIA_V3}/upload/{}?filename=late.txt",
            alice.base,
            mxc_path(&uri)
        )),
    )
    .header("content-type", "text/plain")
    .body("arrived later")
    .send()
    .await
    .expect("put");
    let (status, body) = err_of(resp).await;
    assert_eq!(status, 200, "{body}");

    let resp = get(
        &alice,
        &format!("{MEDIA_V1}/download/{}", mxc_path(&uri)),
        true,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-disposition").contains("late.txt"));
    assert_eq!(resp.bytes().await.expect("body").as_ref(), b"arrived later");
}

async fn put_upload(c: &Client, uri: &str, body: &'static str) -> Resp {
    let resp = authed(
        c,
        http().put(format!("{}{MEDIA_V3}/upload/{}", c.base, mxc_path(uri))),
    )
    .header("content-type", "text/plain")
    .body(body)
    .send()
    .await
    .expect("put");
    err_of(resp).await
}

async fn async_upload_rules(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let uri = alice
        .post("/_matrix/media/v1/create", &json!({}))
        .await
        .ok()["content_uri"]
        .as_str()
        .expect("uri")
        .to_owned();
    // Only the creator may upload.
    put_upload(&bob, &uri, "bob's")
        .await
        .expect_err(403, "M_FORBIDDEN");
    put_upload(&alice, &uri, "first").await.ok();
    // Once.
    put_upload(&alice, &uri, "second")
        .await
        .expect_err(409, "M_CANNOT_OVERWRITE_MEDIA");
    let resp = get(
        &alice,
        &format!("{MEDIA_V1}/download/{}", mxc_path(&uri)),
        true,
    )
    .await;
    assert_eq!(resp.bytes().await.expect("body").as_ref(), b"first");
    // To an id that was never created, or a direct upload's id: refused.
    put_upload(
        &alice,
        &format!("mxc://{}/neverCreated", server.server_name),
        "x",
    )
    .await
    .expect_err(404, "M_NOT_FOUND");
    let direct = upload(&alice, b"direct", "text/plain", None).await;
    put_upload(&alice, &direct, "x")
        .await
        .expect_err(409, "M_CANNOT_OVERWRITE_MEDIA");
    // Too many pending ids: rate limited (default cap 10).
    let mut limited = false;
    for _ in 0..12 {
        // Not through the harness client: it would wait out the 429 and retry.
        let resp = authed(
            &bob,
            http().post(format!("{}/_matrix/media/v1/create", bob.base)),
        )
        .json(&json!({}))
        .send()
        .await
        .expect("create");
        let (status, body) = err_of(resp).await;
        if status == 429 {
            assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
            limited = true;
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    assert!(limited, "pending uploads are capped");
}

async fn download_waits_for_pending_upload(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let uri = alice
        .post("/_matrix/media/v1/create", &json!({}))
        .await
        .ok()["content_uri"]
        .as_str()
        .expect("uri")
        .to_owned();
    let waiter = {
        let alice = alice.clone();
        let uri = uri.clone();
        tokio::spawn(async move {
            let resp = get(
                &alice,
                &format!("{MEDIA_V1}/download/{}?timeout_ms=15000", mxc_path(&uri)),
                true,
            )
            .await;
            (
                resp.status().as_u16(),
                resp.bytes().await.expect("body").to_vec(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    put_upload(&alice, &uri, "worth the wait").await.ok();
    let (status, bytes) = waiter.await.expect("join");
    assert_eq!(status, 200);
    assert_eq!(bytes, b"worth the wait");
}

async fn url_preview_is_disabled(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    for prefix in [MEDIA_V1, MEDIA_V3] {
        alice
            .get(&format!(
                "{prefix}/preview_url?url=https%3A%2F%2Fexample.org"
            ))
            .await
            .expect_err(403, "M_FORBIDDEN");
    }
}

async fn media_survives_restart(b: Backend) {
    let mut server = start(b).await;
    let alice = server.register("alice").await;
    let image = png(20, 10);
    let uri = upload(&alice, &image, "image/png", Some("keep.png")).await;
    server.restart().await;
    let resp = get(
        &alice,
        &format!("{MEDIA_V1}/download/{}", mxc_path(&uri)),
        true,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("body").to_vec(), image);
}
