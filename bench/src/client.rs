//! A minimal Matrix client-server API client: enough to register users, create and join rooms,
//! send messages and sync. Every request has a timeout and 429s are retried a bounded number of
//! times, honouring `retry_after_ms` (or `Retry-After`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};

/// How many times one logical request is retried after a 429 before giving up.
const MAX_429_RETRIES: u32 = 100;
/// Longest single back-off honoured after a 429.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Hs {
    http: reqwest::Client,
    base: String,
    /// Default per-request timeout.
    pub timeout: Duration,
    /// Number of 429 responses seen (each retried).
    pub rate_limited: AtomicU64,
    /// Milliseconds spent sleeping because of 429s.
    pub rate_limited_wait_ms: AtomicU64,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub bytes: usize,
}

#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub token: String,
}

/// Percent-encodes one path segment (room ids contain `!` and `:`).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Hs {
    pub fn new(base: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .context("building HTTP client")?;
        Ok(Hs {
            http,
            base: base.trim_end_matches('/').to_string(),
            timeout,
            rate_limited: AtomicU64::new(0),
            rate_limited_wait_ms: AtomicU64::new(0),
        })
    }

    /// One logical request; retries 429s (bounded), returns any other status to the caller.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let url = format!("{}{}", self.base, path);
        for _ in 0..=MAX_429_RETRIES {
            let mut rb = self
                .http
                .request(method.clone(), &url)
                .timeout(timeout.unwrap_or(self.timeout));
            if let Some(t) = token {
                rb = rb.bearer_auth(t);
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let resp = rb
                .send()
                .await
                .with_context(|| format!("{method} {path}"))?;
            let status = resp.status().as_u16();
            let retry_after_hdr = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| s.saturating_mul(1000));
            let bytes = resp
                .bytes()
                .await
                .with_context(|| format!("reading body of {method} {path}"))?;
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if status == 429 {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                let ms = body
                    .get("retry_after_ms")
                    .and_then(Value::as_u64)
                    .or(retry_after_hdr)
                    .unwrap_or(500);
                let wait = Duration::from_millis(ms.max(1)).min(MAX_BACKOFF);
                self.rate_limited_wait_ms
                    .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(Resp {
                status,
                body,
                bytes: bytes.len(),
            });
        }
        bail!("{method} {path}: still rate-limited after {MAX_429_RETRIES} retries")
    }

    /// Like `call` but any non-2xx status is an error.
    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let r = self
            .call(method.clone(), path, token, body, timeout)
            .await?;
        if !(200..300).contains(&r.status) {
            bail!("{method} {path}: HTTP {} {}", r.status, r.body);
        }
        Ok(r)
    }

    /// Registers `username`: via the Synapse-compatible shared-secret admin API when a secret is
    /// given, otherwise via user-interactive auth with `m.login.dummy`.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        shared_secret: Option<&str>,
    ) -> Result<User> {
        let body = match shared_secret {
            Some(secret) => {
                let path = "/_synapse/admin/v1/register";
                let nonce_resp = self.ok(Method::GET, path, None, None, None).await?;
                let nonce = nonce_resp.body["nonce"]
                    .as_str()
                    .ok_or_else(|| anyhow!("no nonce in {}", nonce_resp.body))?
                    .to_string();
                let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
                    .map_err(|e| anyhow!("hmac key: {e}"))?;
                mac.update(nonce.as_bytes());
                mac.update(b"\x00");
                mac.update(username.as_bytes());
                mac.update(b"\x00");
                mac.update(password.as_bytes());
                mac.update(b"\x00");
                mac.update(b"notadmin");
                let mac = hex::encode(mac.finalize().into_bytes());
                let req = json!({
                    "nonce": nonce, "username": username, "password": password,
                    "admin": false, "mac": mac,
                });
                self.ok(Method::POST, path, None, Some(&req), None)
                    .await?
                    .body
            }
            None => {
                let path = "/_matrix/client/v3/register";
                let mut req = json!({"username": username, "password": password});
                let first = self
                    .call(Method::POST, path, None, Some(&req), None)
                    .await?;
                match first.status {
                    200 => first.body,
                    401 => {
                        let mut auth = json!({"type": "m.login.dummy"});
                        if let Some(s) = first.body.get("session") {
                            auth["session"] = s.clone();
                        }
                        req["auth"] = auth;
                        self.ok(Method::POST, path, None, Some(&req), None)
                            .await?
                            .body
                    }
                    s => bail!("register {username}: HTTP {s} {}", first.body),
                }
            }
        };
        let user_id = body["user_id"]
            .as_str()
            .ok_or_else(|| anyhow!("register {username}: no user_id in {body}"))?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("register {username}: no access_token in {body}"))?;
        Ok(User {
            user_id: user_id.to_string(),
            token: token.to_string(),
        })
    }

    pub async fn create_room(&self, u: &User, name: &str) -> Result<String> {
        let req = json!({"preset": "public_chat", "name": name, "visibility": "private"});
        let r = self
            .ok(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&u.token),
                Some(&req),
                None,
            )
            .await?;
        r.body["room_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("createRoom: no room_id in {}", r.body))
    }

    pub async fn join(&self, u: &User, room_id: &str) -> Result<()> {
        let path = format!("/_matrix/client/v3/join/{}", enc(room_id));
        self.ok(Method::POST, &path, Some(&u.token), Some(&json!({})), None)
            .await?;
        Ok(())
    }

    /// Sends one `m.room.message`; returns the event id.
    pub async fn send_text(
        &self,
        u: &User,
        room_id: &str,
        txn: &str,
        text: &str,
    ) -> Result<String> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            enc(room_id),
            enc(txn)
        );
        let req = json!({"msgtype": "m.text", "body": text});
        let r = self
            .ok(Method::PUT, &path, Some(&u.token), Some(&req), None)
            .await?;
        r.body["event_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("send: no event_id in {}", r.body))
    }

    /// GET /sync. `since` None means an initial sync; `timeout_ms` is the long-poll timeout.
    pub async fn sync(&self, u: &User, since: Option<&str>, timeout_ms: u64) -> Result<Resp> {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(s) = since {
            path.push_str("&since=");
            path.push_str(&enc(s));
        }
        // The HTTP timeout must exceed the long-poll timeout.
        let t = self.timeout + Duration::from_millis(timeout_ms);
        self.ok(Method::GET, &path, Some(&u.token), None, Some(t))
            .await
    }
}
