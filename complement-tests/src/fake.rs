//! A minimal fake homeserver for sending hand-made federation traffic.
//!
//! [`FakeServer`] listens with TLS (a leaf of [`TestCa::shared`]) on its own loopback address as
//! server `127.0.0.x:PORT`, serves its signing key at `/_matrix/key/v2/server` (so a real server
//! can authenticate its X-Matrix requests), answers `/_matrix/federation/v1/version`, accepts
//! and records incoming transactions, and signs outgoing requests and PDUs. Everything else gets
//! 404 `M_UNRECOGNIZED`. Dropping it stops the listener.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Resp;
use crate::crypto::ServerKey;
use crate::tls::TestCa;

/// Largest request the fake server reads (headers plus body).
const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// One request the fake server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// See the module documentation.
pub struct FakeServer {
    pub ip: IpAddr,
    pub port: u16,
    /// `IP:PORT`.
    pub server_name: String,
    /// The key the fake server publishes and signs with.
    pub key: Arc<ServerKey>,
    /// Every request received so far (key requests included), oldest first.
    pub received: Arc<Mutex<Vec<Received>>>,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl FakeServer {
    /// Starts a fake server on the next loopback address of the harness's pool.
    pub async fn start() -> FakeServer {
        crate::install_crypto_provider();
        let ip = IpAddr::V4(crate::next_loopback_ip());
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
        let port = listener.local_addr().expect("local addr").port();
        let server_name = format!("{ip}:{port}");
        let key = Arc::new(ServerKey::generate(
            &server_name,
            &format!("fake{}", crate::random_string(4)),
        ));
        let ca = TestCa::shared();
        let leaf = ca.leaf(ip);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.rustls_server_config(&leaf)));
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let key = key.clone();
            let received = received.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _peer)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let key = key.clone();
                    let received = received.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(30),
                            serve_one(acceptor, tcp, key, received),
                        )
                        .await;
                    });
                }
            })
        };
        FakeServer {
            ip,
            port,
            server_name,
            key,
            received,
            http: ca.http_client(),
            task,
        }
    }

    /// `@localpart:IP:PORT`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// A federation request signed with this server's key (X-Matrix), to `dest_name` whose
    /// federation listener is at `dest_url` (`https://IP:PORT`). `path` includes any query.
    pub async fn request(
        &self,
        dest_name: &str,
        dest_url: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Resp {
        self.request_signed_by(&self.key, dest_name, dest_url, method, path, body)
            .await
    }

    /// Like [`FakeServer::request`] but signed with `key` (e.g. a key nobody published).
    pub async fn request_signed_by(
        &self,
        key: &ServerKey,
        dest_name: &str,
        dest_url: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Resp {
        let auth = key.x_matrix(method.as_str(), path, dest_name, body);
        let url = format!("{}{path}", dest_url.trim_end_matches('/'));
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("Authorization", auth);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: transport error: {e}"));
        crate::client::into_resp(resp).await
    }

    /// `PUT /_matrix/federation/v1/send/{txnId}` with these PDUs and EDUs.
    pub async fn send_transaction(
        &self,
        dest_name: &str,
        dest_url: &str,
        pdus: Vec<Value>,
        edus: Vec<Value>,
    ) -> Resp {
        let txn = format!("fake{}", crate::random_string(12));
        let body = json!({
            "origin": self.server_name,
            "origin_server_ts": now_ms(),
            "pdus": pdus,
            "edus": edus,
        });
        self.request(
            dest_name,
            dest_url,
            Method::PUT,
            &format!("/_matrix/federation/v1/send/{txn}"),
            Some(&body),
        )
        .await
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    key: Arc<ServerKey>,
    received: Arc<Mutex<Vec<Received>>>,
) {
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_REQUEST {
            return;
        }
        match tls.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let content_length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < content_length {
        match tls.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let route = path.split('?').next().unwrap_or("");
    let (status, reply) = if method == "GET" && route.starts_with("/_matrix/key/v2/server") {
        (200, key.key_response(now_ms() + 24 * 3600 * 1000))
    } else if method == "GET" && route == "/_matrix/federation/v1/version" {
        (
            200,
            json!({"server": {"name": "complement-fake", "version": "0"}}),
        )
    } else if method == "PUT" && route.starts_with("/_matrix/federation/v1/send/") {
        (200, json!({"pdus": {}}))
    } else {
        (
            404,
            json!({"errcode": "M_UNRECOGNIZED", "error": "not served by the fake server"}),
        )
    };
    if let Ok(mut r) = received.lock() {
        r.push(Received {
            method,
            path,
            headers,
            body,
        });
    }
    let text = reply.to_string();
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = tls.write_all(response.as_bytes()).await;
    let _ = tls.shutdown().await;
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl FakeServer {
    /// The socket address the fake server listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// `https://IP:PORT`.
    pub fn fed_url(&self) -> String {
        format!("https://{}", self.addr())
    }
}
