//! Media of other servers through this server's client API: a user on node B downloads and
//! thumbnails media uploaded on node A (authenticated v1 and legacy v3 paths); B fetches it
//! over federation (`/_matrix/federation/v1/media/download`), caches it and serves it with the
//! usual media headers, also once A is gone. Unknown, unreachable and over-size remote media
//! get Matrix errors; without federation remote media is 404.

use complement_tests::FederationOptions;

use crate::prelude::*;

backend_tests!(
    download_remote_media,
    remote_media_cached_after_origin_stops,
    thumbnail_remote_png,
    concurrent_remote_downloads,
    unknown_remote_media_is_404,
    unreachable_origin_is_gateway_error,
    remote_media_over_limit_refused,
    no_federation_remote_media_404,
);

const MEDIA_V1: &str = "/_matrix/client/v1/media";
const MEDIA_V3: &str = "/_matrix/media/v3";

async fn node(b: Backend) -> Server {
    node_with(b, "").await
}

async fn node_with(b: Backend, extra_toml: &str) -> Server {
    start_with(
        b,
        ServerOptions {
            federation: Some(FederationOptions::default()),
            extra_toml: extra_toml.into(),
            ..Default::default()
        },
    )
    .await
}

fn http() -> reqwest::Client {
    complement_tests::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("http client")
}

async fn upload(c: &Client, bytes: &[u8], content_type: &str, filename: &str) -> String {
    let resp = http()
        .post(format!(
            "{}{MEDIA_V3}/upload?filename={}",
            c.base,
            enc(filename)
        ))
        .bearer_auth(c.token.as_deref().expect("token"))
        .header("content-type", content_type)
        .body(bytes.to_vec())
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status().as_u16(), 200, "upload");
    let body: Value = resp.json().await.expect("upload json");
    body["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned()
}

/// `mxc://server/id` → `server/id` for use in a path.
fn mxc_path(uri: &str) -> String {
    let rest = uri.strip_prefix("mxc://").expect("mxc uri");
    let (server, id) = rest.split_once('/').expect("mxc parts");
    format!("{}/{}", enc(server), enc(id))
}

async fn get(c: &Client, path: &str, auth: bool) -> reqwest::Response {
    let req = http().get(format!("{}{path}", c.base));
    let req = match (&c.token, auth) {
        (Some(t), true) => req.bearer_auth(t),
        _ => req,
    };
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
    assert_eq!(header(resp, "cross-origin-resource-policy"), "cross-origin");
    assert_eq!(header(resp, "x-content-type-options"), "nosniff");
}

async fn download_v1(c: &Client, uri: &str) -> reqwest::Response {
    get(c, &format!("{MEDIA_V1}/download/{}", mxc_path(uri)), true).await
}

async fn assert_served(resp: reqwest::Response, bytes: &[u8], content_type: &str) {
    assert_eq!(resp.status().as_u16(), 200, "download");
    assert_eq!(header(&resp, "content-type"), content_type);
    assert_security_headers(&resp);
    let got = resp.bytes().await.expect("body");
    assert_eq!(&got[..], bytes);
}

// A tiny PNG encoder (stored deflate blocks), so the tests need no image library.

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

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0);
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

// ---------------------------------------------------------------------------------------------

async fn download_remote_media(b: Backend) {
    let (a, bn) = tokio::join!(node(b), node(b));
    let alice = a.register("alice").await;
    let bob = bn.register("bob").await;
    let bytes = b"hello from the other server".to_vec();
    let uri = upload(&alice, &bytes, "text/plain", "greeting.txt").await;
    assert!(
        uri.starts_with(&format!("mxc://{}/", a.server_name)),
        "{uri}"
    );

    // Authenticated client path on B.
    let resp = download_v1(&bob, &uri).await;
    let disposition = header(&resp, "content-disposition");
    assert!(disposition.contains("greeting.txt"), "{disposition:?}");
    assert_served(resp, &bytes, "text/plain").await;

    // With a filename, and through the legacy v3 paths (no token needed there).
    let resp = get(
        &bob,
        &format!("{MEDIA_V1}/download/{}/other.txt", mxc_path(&uri)),
        true,
    )
    .await;
    assert!(header(&resp, "content-disposition").contains("other.txt"));
    assert_served(resp, &bytes, "text/plain").await;
    let resp = get(
        &bob,
        &format!("{MEDIA_V3}/download/{}", mxc_path(&uri)),
        false,
    )
    .await;
    assert_served(resp, &bytes, "text/plain").await;
    let resp = get(
        &bob,
        &format!("{MEDIA_V3}/download/{}?allow_remote=false", mxc_path(&uri)),
        false,
    )
    .await;
    let (status, body) = err_of(resp).await;
    assert_eq!(status, 404, "{body}");

    // The v1 client path still needs a token for remote media.
    let resp = get(
        &bob,
        &format!("{MEDIA_V1}/download/{}", mxc_path(&uri)),
        false,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 401);

    // Binary content survives byte for byte.
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let uri = upload(&alice, &binary, "application/octet-stream", "blob.bin").await;
    let resp = download_v1(&bob, &uri).await;
    assert_eq!(
        header(&resp, "content-disposition").split(';').next(),
        Some("attachment")
    );
    assert_served(resp, &binary, "application/octet-stream").await;
}

async fn remote_media_cached_after_origin_stops(b: Backend) {
    let (mut a, bn) = tokio::join!(node(b), node(b));
    let alice = a.register("alice").await;
    let bob = bn.register("bob").await;
    let image = png(64, 32);
    let uri = upload(&alice, &image, "image/png", "pic.png").await;
    let resp = download_v1(&bob, &uri).await;
    assert_served(resp, &image, "image/png").await;

    a.stop().await;
    // Served from B's cache, on both paths, and thumbnailed from the cached copy.
    let resp = download_v1(&bob, &uri).await;
    assert_served(resp, &image, "image/png").await;
    let resp = get(
        &bob,
        &format!("{MEDIA_V3}/download/{}", mxc_path(&uri)),
        false,
    )
    .await;
    assert_served(resp, &image, "image/png").await;
    let resp = get(
        &bob,
        &format!(
            "{MEDIA_V1}/thumbnail/{}?width=16&height=16&method=crop",
            mxc_path(&uri)
        ),
        true,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let thumb = resp.bytes().await.expect("thumbnail");
    assert_eq!(png_size(&thumb), (32, 32));

    // Media of A never fetched before is now unreachable: a gateway error, not a 200.
    let other = uri
        .rsplit_once('/')
        .map(|(s, _)| format!("{s}/neverfetched"))
        .expect("uri");
    let (status, body) = err_of(download_v1(&bob, &other).await).await;
    assert!(
        status == 502 || status == 504 || status == 404,
        "{status} {body}"
    );
    assert!(body["errcode"].is_string(), "{body}");
}

async fn thumbnail_remote_png(b: Backend) {
    let (a, bn) = tokio::join!(node(b), node(b));
    let alice = a.register("alice").await;
    let bob = bn.register("bob").await;
    let uri = upload(&alice, &png(200, 100), "image/png", "wide.png").await;

    let resp = get(
        &bob,
        &format!(
            "{MEDIA_V1}/thumbnail/{}?width=50&height=50&method=scale",
            mxc_path(&uri)
        ),
        true,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "content-type"), "image/png");
    assert_security_headers(&resp);
    // Scale keeps the aspect ratio and never upscales (the size snaps to a standard one).
    let (w, h) = png_size(&resp.bytes().await.expect("thumb"));
    assert!((50..=200).contains(&w) && w == 2 * h, "scale gave {w}x{h}");

    let resp = get(
        &bob,
        &format!(
            "{MEDIA_V3}/thumbnail/{}?width=32&height=32&method=crop",
            mxc_path(&uri)
        ),
        false,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let (w, h) = png_size(&resp.bytes().await.expect("thumb"));
    assert_eq!((w, h), (32, 32));
}

async fn concurrent_remote_downloads(b: Backend) {
    let (a, bn) = tokio::join!(node(b), node(b));
    let alice = a.register("alice").await;
    let bob = bn.register("bob").await;
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let uri = upload(&alice, &bytes, "application/octet-stream", "many.bin").await;
    let (r1, r2, r3, r4, r5, r6) = tokio::join!(
        download_v1(&bob, &uri),
        download_v1(&bob, &uri),
        download_v1(&bob, &uri),
        download_v1(&bob, &uri),
        download_v1(&bob, &uri),
        download_v1(&bob, &uri),
    );
    for resp in [r1, r2, r3, r4, r5, r6] {
        assert_served(resp, &bytes, "application/octet-stream").await;
    }
}

async fn unknown_remote_media_is_404(b: Backend) {
    let (a, bn) = tokio::join!(node(b), node(b));
    let bob = bn.register("bob").await;
    let uri = format!("mxc://{}/doesnotexist", a.server_name);
    let (status, body) = err_of(download_v1(&bob, &uri).await).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");
    let (status, body) = err_of(
        get(
            &bob,
            &format!("{MEDIA_V1}/thumbnail/{}?width=8&height=8", mxc_path(&uri)),
            true,
        )
        .await,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // Ill-formed media ids are not forwarded.
    let (status, _) = err_of(
        get(
            &bob,
            &format!("{MEDIA_V1}/download/{}/bad%20id", enc(&a.server_name)),
            true,
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
}

async fn unreachable_origin_is_gateway_error(b: Backend) {
    let bn = node(b).await;
    let bob = bn.register("bob").await;
    // Nothing listens on port 1 of this loopback address.
    let (status, body) = err_of(download_v1(&bob, "mxc://127.0.0.1:1/abcdef").await).await;
    assert!(status == 502 || status == 504, "{status} {body}");
    assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
}

async fn remote_media_over_limit_refused(b: Backend) {
    let (a, bn) = tokio::join!(node(b), node_with(b, "[media]\nmax_upload_bytes = 10000\n"));
    let alice = a.register("alice").await;
    let bob = bn.register("bob").await;
    let small = upload(&alice, b"small enough", "text/plain", "s.txt").await;
    assert_served(
        download_v1(&bob, &small).await,
        b"small enough",
        "text/plain",
    )
    .await;
    let big: Vec<u8> = vec![7u8; 50_000];
    let uri = upload(&alice, &big, "application/octet-stream", "big.bin").await;
    let (status, body) = err_of(download_v1(&bob, &uri).await).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["errcode"], "M_TOO_LARGE", "{body}");
}

async fn no_federation_remote_media_404(b: Backend) {
    let server = start(b).await;
    let alice = server.register("alice").await;
    let (status, body) = err_of(download_v1(&alice, "mxc://elsewhere.example/abcdef").await).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errcode"], "M_NOT_FOUND");
}
