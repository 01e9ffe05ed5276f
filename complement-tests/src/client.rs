//! A small Matrix client for black-box tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::enc;

/// `(HTTP status, JSON body)`. A body that is not JSON is returned as a JSON string holding the
/// raw text (so failure messages still show it).
pub type Resp = (u16, Value);

/// Prefix of the client-server API, v3.
pub const V3: &str = "/_matrix/client/v3";
/// Prefix of the client-server API, v1 (relations, threads, registration token validity, ...).
pub const V1: &str = "/_matrix/client/v1";

/// Upper bound for any wait-for-condition loop built on `/sync`.
pub const SYNC_DEADLINE: Duration = Duration::from_secs(30);
/// Long-poll timeout used by the wait-for-condition helpers.
const SYNC_POLL_MS: u64 = 1500;
/// How often a request rejected with `M_LIMIT_EXCEEDED` is retried.
const RATE_LIMIT_RETRIES: usize = 30;

/// Assertions on `(status, body)` pairs. All of them panic with the status and body on mismatch,
/// and report the caller's line.
pub trait RespExt {
    /// Asserts 200 and returns the body.
    fn ok(self) -> Value;
    /// Asserts the given status and returns the body.
    fn expect_status(self, status: u16) -> Value;
    /// Asserts the given status and `errcode` and returns the body.
    fn expect_err(self, status: u16, errcode: &str) -> Value;
    /// The `errcode` of the body, or `""`.
    fn errcode(&self) -> &str;
}

impl RespExt for Resp {
    #[track_caller]
    fn ok(self) -> Value {
        assert_eq!(self.0, 200, "expected 200, got {}: {}", self.0, self.1);
        self.1
    }

    #[track_caller]
    fn expect_status(self, status: u16) -> Value {
        assert_eq!(
            self.0, status,
            "expected status {status}, got {}: {}",
            self.0, self.1
        );
        self.1
    }

    #[track_caller]
    fn expect_err(self, status: u16, errcode: &str) -> Value {
        assert!(
            self.0 == status && self.1["errcode"] == errcode,
            "expected {status} {errcode}, got {}: {}",
            self.0,
            self.1
        );
        assert!(
            self.1["error"].is_string() || self.1["error"].is_null(),
            "error must be a string: {}",
            self.1
        );
        self.1
    }

    fn errcode(&self) -> &str {
        self.1["errcode"].as_str().unwrap_or("")
    }
}

/// A Matrix client bound to one server and (optionally) one access token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub base: String,
    /// The server name, e.g. `localhost:PORT`.
    pub server_name: String,
    pub token: Option<String>,
    pub user_id: String,
    pub device_id: String,
    /// The account password (used for `m.login.password` UIA stages).
    pub password: String,
    txn_prefix: String,
    txn: Arc<AtomicU64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .finish()
    }
}

impl Client {
    /// An anonymous client (no access token).
    pub fn new(base: &str, server_name: &str) -> Client {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("build HTTP client");
        Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            server_name: server_name.to_owned(),
            token: None,
            user_id: String::new(),
            device_id: String::new(),
            password: String::new(),
            txn_prefix: crate::random_string(8),
            txn: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The password the harness uses for `name` unless a test chooses another one.
    pub fn default_password(name: &str) -> String {
        format!("pw-{name}-Secret1!")
    }

    /// The same client without an access token.
    pub fn anonymous(&self) -> Client {
        let mut c = self.clone();
        c.token = None;
        c.user_id.clear();
        c.device_id.clear();
        c
    }

    /// The same client with another access token.
    pub fn with_token(&self, token: &str) -> Client {
        let mut c = self.clone();
        c.token = Some(token.to_owned());
        c
    }

    /// The localpart of `user_id`.
    pub fn localpart(&self) -> &str {
        self.user_id
            .trim_start_matches('@')
            .split(':')
            .next()
            .unwrap_or("")
    }

    /// A fresh transaction id, unique for this client (and its clones).
    pub fn next_txn(&self) -> String {
        format!(
            "t{}-{}",
            self.txn_prefix,
            self.txn.fetch_add(1, Ordering::SeqCst)
        )
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    // ----------------------------------------------------------------------------------------
    // Raw HTTP
    // ----------------------------------------------------------------------------------------

    /// Sends one request with this client's token. Retries (bounded) when rate-limited with
    /// `M_LIMIT_EXCEEDED`, honouring `retry_after_ms`. Transport errors are returned.
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Resp, reqwest::Error> {
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), self.url(path));
            if let Some(token) = &self.token {
                req = req.bearer_auth(token);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let text = resp.text().await?;
            let value = parse_body(&text);
            if status == 429 && attempt < RATE_LIMIT_RETRIES {
                attempt += 1;
                let wait = value["retry_after_ms"]
                    .as_u64()
                    .unwrap_or(200)
                    .clamp(20, 5000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            return Ok((status, value));
        }
    }

    /// Like [`Client::try_request`] but panics on transport errors.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        match self.try_request(method.clone(), path, body).await {
            Ok(r) => r,
            Err(e) => panic!("{method} {path}: transport error: {e}"),
        }
    }

    /// A fully raw request: the body is sent verbatim, extra headers are added, and the
    /// access token is only sent when `auth` is true. Panics on transport errors.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
        auth: bool,
    ) -> reqwest::Response {
        let mut req = self.http.request(method.clone(), self.url(path));
        if auth && let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body.to_owned());
        }
        match req.send().await {
            Ok(r) => r,
            Err(e) => panic!("{method} {path}: transport error: {e}"),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.request(Method::DELETE, path, None).await
    }

    pub async fn delete_with(&self, path: &str, body: &Value) -> Resp {
        self.request(Method::DELETE, path, Some(body)).await
    }

    // ----------------------------------------------------------------------------------------
    // User-interactive authentication
    // ----------------------------------------------------------------------------------------

    /// Performs a request guarded by user-interactive authentication: first without `auth`
    /// (which must yield 401 with `flows` and usually a `session`), then completes the stages
    /// of the first flow the harness can do (`m.login.dummy`, `m.login.password` with this
    /// client's user id and password, `m.login.registration_token` when `reg_token` is given).
    /// Returns the final response (200 on success, or whatever the server answered).
    pub async fn uia(&self, method: Method, path: &str, body: Value) -> Resp {
        self.uia_with(method, path, body, None).await
    }

    /// [`Client::uia`] with an optional registration token.
    pub async fn uia_with(
        &self,
        method: Method,
        path: &str,
        body: Value,
        reg_token: Option<&str>,
    ) -> Resp {
        let mut resp = self.request(method.clone(), path, Some(&body)).await;
        for _round in 0..6 {
            if resp.0 != 401 || !resp.1["flows"].is_array() {
                return resp;
            }
            let session = resp.1["session"].as_str().map(str::to_owned);
            let completed: Vec<String> = crate::arr(&resp.1["completed"])
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
            let can_do = |stage: &str| match stage {
                "m.login.dummy" => true,
                "m.login.password" => !self.password.is_empty() && !self.user_id.is_empty(),
                "m.login.registration_token" => reg_token.is_some(),
                _ => false,
            };
            let flows = crate::arr(&resp.1["flows"]);
            let flow = flows.iter().find(|f| {
                crate::arr(&f["stages"])
                    .iter()
                    .all(|s| s.as_str().is_some_and(can_do))
            });
            let Some(flow) = flow else {
                return resp;
            };
            let next = crate::arr(&flow["stages"])
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .find(|s| !completed.contains(s));
            let Some(stage) = next else {
                return resp;
            };
            let mut auth = match stage.as_str() {
                "m.login.dummy" => json!({"type": "m.login.dummy"}),
                "m.login.password" => json!({
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": self.user_id},
                    "password": self.password,
                }),
                "m.login.registration_token" => json!({
                    "type": "m.login.registration_token",
                    "token": reg_token.unwrap_or_default(),
                }),
                _ => return resp,
            };
            if let Some(session) = &session {
                auth["session"] = json!(session);
            }
            let mut body = body.clone();
            body["auth"] = auth;
            resp = self.request(method.clone(), path, Some(&body)).await;
        }
        resp
    }

    /// Completes a UIA flow from a 401 response manually with the given auth dict (the
    /// session from `first` is added). Used by tests that need to send specific auth data.
    pub async fn uia_step(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        first: &Resp,
        mut auth: Value,
    ) -> Resp {
        if let Some(session) = first.1["session"].as_str() {
            auth["session"] = json!(session);
        }
        let mut body = body.clone();
        body["auth"] = auth;
        self.request(method, path, Some(&body)).await
    }

    // ----------------------------------------------------------------------------------------
    // Accounts
    // ----------------------------------------------------------------------------------------

    /// Raw registration through UIA (`POST /register`), returning the final response.
    pub async fn register_raw(&self, body: Value, reg_token: Option<&str>) -> Resp {
        self.anonymous()
            .uia_with(Method::POST, &format!("{V3}/register"), body, reg_token)
            .await
    }

    /// Registers `name` with `password` and returns a logged-in client. Panics on failure.
    pub async fn register(&self, name: &str, password: &str) -> Client {
        let resp = self
            .register_raw(json!({"username": name, "password": password}), None)
            .await;
        assert_eq!(
            resp.0, 200,
            "registering {name} failed: {} {}",
            resp.0, resp.1
        );
        self.from_login_response(&resp.1, password)
    }

    /// A client for the account in a `/register` or `/login` 200 response.
    pub fn from_login_response(&self, body: &Value, password: &str) -> Client {
        let mut c = self.anonymous();
        c.token = Some(
            body["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("no access_token in {body}"))
                .to_owned(),
        );
        c.user_id = body["user_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no user_id in {body}"))
            .to_owned();
        c.device_id = body["device_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no device_id in {body}"))
            .to_owned();
        c.password = password.to_owned();
        c.txn_prefix = crate::random_string(8);
        c.txn = Arc::new(AtomicU64::new(0));
        c
    }

    /// Raw `POST /login`.
    pub async fn login_raw(&self, body: &Value) -> Resp {
        self.anonymous().post(&format!("{V3}/login"), body).await
    }

    /// Password login by user id or localpart; returns a client for the new session.
    pub async fn login(&self, user: &str, password: &str) -> Client {
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
        });
        let resp = self.login_raw(&body).await;
        assert_eq!(resp.0, 200, "login as {user} failed: {} {}", resp.0, resp.1);
        self.from_login_response(&resp.1, password)
    }

    /// A second session (new device) for the same account.
    pub async fn login_again(&self) -> Client {
        self.login(&self.user_id, &self.password).await
    }

    pub async fn whoami(&self) -> Resp {
        self.get(&format!("{V3}/account/whoami")).await
    }

    // ----------------------------------------------------------------------------------------
    // Rooms
    // ----------------------------------------------------------------------------------------

    /// `POST /createRoom`; returns the room id. Panics unless 200.
    pub async fn create_room(&self, body: Value) -> String {
        let resp = self.post(&format!("{V3}/createRoom"), &body).await;
        let body = resp.ok();
        body["room_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no room_id in {body}"))
            .to_owned()
    }

    /// Sends a message event with a fresh transaction id; returns the raw response.
    pub async fn try_send_event(
        &self,
        room_id: &str,
        event_type: &str,
        content: &Value,
    ) -> Result<Resp, reqwest::Error> {
        let path = format!(
            "{V3}/rooms/{}/send/{}/{}",
            enc(room_id),
            enc(event_type),
            enc(&self.next_txn())
        );
        self.try_request(Method::PUT, &path, Some(content)).await
    }

    /// Sends a message event; returns its event id. Panics unless 200.
    pub async fn send_event(&self, room_id: &str, event_type: &str, content: &Value) -> String {
        let resp = match self.try_send_event(room_id, event_type, content).await {
            Ok(r) => r,
            Err(e) => panic!("send {event_type} to {room_id}: transport error: {e}"),
        };
        let body = resp.ok();
        body["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no event_id in {body}"))
            .to_owned()
    }

    /// Sends an `m.text` message; returns its event id.
    pub async fn send_text(&self, room_id: &str, text: &str) -> String {
        self.send_event(
            room_id,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": text}),
        )
        .await
    }

    /// `PUT /rooms/{roomId}/state/{type}/{stateKey}`, raw.
    pub async fn put_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> Resp {
        self.put(
            &format!(
                "{V3}/rooms/{}/state/{}/{}",
                enc(room_id),
                enc(event_type),
                enc(state_key)
            ),
            content,
        )
        .await
    }

    /// Sends a state event; returns its event id. Panics unless 200.
    pub async fn send_state(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> String {
        let body = self
            .put_state(room_id, event_type, state_key, content)
            .await
            .ok();
        body["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no event_id in {body}"))
            .to_owned()
    }

    /// `GET /rooms/{roomId}/state/{type}/{stateKey}` (the content), raw.
    pub async fn state(&self, room_id: &str, event_type: &str, state_key: &str) -> Resp {
        self.get(&format!(
            "{V3}/rooms/{}/state/{}/{}",
            enc(room_id),
            enc(event_type),
            enc(state_key)
        ))
        .await
    }

    /// `POST /join/{roomIdOrAlias}`, raw.
    pub async fn join_raw(&self, room_id_or_alias: &str) -> Resp {
        self.post(&format!("{V3}/join/{}", enc(room_id_or_alias)), &json!({}))
            .await
    }

    /// Joins a room by id or alias; returns the room id. Panics unless 200.
    pub async fn join(&self, room_id_or_alias: &str) -> String {
        let body = self.join_raw(room_id_or_alias).await.ok();
        body["room_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no room_id in {body}"))
            .to_owned()
    }

    /// `POST /rooms/{roomId}/invite`, raw.
    pub async fn invite(&self, room_id: &str, user_id: &str) -> Resp {
        self.post(
            &format!("{V3}/rooms/{}/invite", enc(room_id)),
            &json!({"user_id": user_id}),
        )
        .await
    }

    /// `POST /rooms/{roomId}/leave`, raw.
    pub async fn leave(&self, room_id: &str) -> Resp {
        self.post(&format!("{V3}/rooms/{}/leave", enc(room_id)), &json!({}))
            .await
    }

    /// `POST /rooms/{roomId}/{action}` for kick/ban/unban, raw.
    pub async fn moderate(
        &self,
        action: &str,
        room_id: &str,
        user_id: &str,
        reason: Option<&str>,
    ) -> Resp {
        let mut body = json!({"user_id": user_id});
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        self.post(&format!("{V3}/rooms/{}/{action}", enc(room_id)), &body)
            .await
    }

    /// `GET /rooms/{roomId}/event/{eventId}`, raw.
    pub async fn event(&self, room_id: &str, event_id: &str) -> Resp {
        self.get(&format!(
            "{V3}/rooms/{}/event/{}",
            enc(room_id),
            enc(event_id)
        ))
        .await
    }

    /// `GET /rooms/{roomId}/messages?{query}`, raw.
    pub async fn messages(&self, room_id: &str, query: &str) -> Resp {
        self.get(&format!("{V3}/rooms/{}/messages?{query}", enc(room_id)))
            .await
    }

    /// Pages backwards through `/messages` from the newest event until the server reports no
    /// more history (bounded), returning every event in reverse-chronological order.
    pub async fn all_messages_backwards(&self, room_id: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        for _page in 0..500 {
            let mut query = "dir=b&limit=50".to_owned();
            if let Some(f) = &from {
                query.push_str(&format!("&from={}", enc(f)));
            }
            let body = self.messages(room_id, &query).await.ok();
            let chunk = crate::arr(&body["chunk"]);
            let done = chunk.is_empty() || body["end"].as_str().is_none();
            events.extend(chunk);
            if done {
                return events;
            }
            from = body["end"].as_str().map(str::to_owned);
        }
        panic!("/messages pagination did not terminate after 500 pages");
    }

    // ----------------------------------------------------------------------------------------
    // Sync
    // ----------------------------------------------------------------------------------------

    /// `GET /sync` with the given query string, raw.
    pub async fn sync_raw(&self, query: &str) -> Resp {
        self.get(&format!("{V3}/sync?{query}")).await
    }

    /// `GET /sync` with optional `since`, optional filter (id or inline JSON) and a long-poll
    /// timeout. Panics unless 200.
    pub async fn sync_filtered(
        &self,
        since: Option<&str>,
        filter: Option<&str>,
        timeout_ms: u64,
    ) -> Value {
        let mut query = format!("timeout={timeout_ms}");
        if let Some(s) = since {
            query.push_str(&format!("&since={}", enc(s)));
        }
        if let Some(f) = filter {
            query.push_str(&format!("&filter={}", enc(f)));
        }
        let body = self.sync_raw(&query).await.ok();
        assert!(
            body["next_batch"].is_string(),
            "sync response without next_batch: {body}"
        );
        body
    }

    /// `GET /sync` with optional `since` and a long-poll timeout. Panics unless 200.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Value {
        self.sync_filtered(since, None, timeout_ms).await
    }

    /// The `next_batch` of a quick sync: a token for "now".
    pub async fn sync_token(&self) -> String {
        next_batch(&self.sync(None, 0).await)
    }

    /// Long-polls `/sync` (starting at `since`, advancing `since` each round) until `pred`
    /// holds for a response, and returns that response. Bounded by [`SYNC_DEADLINE`].
    pub async fn sync_until<F: Fn(&Value) -> bool>(&self, since: Option<&str>, pred: F) -> Value {
        self.sync_until_filtered(since, None, pred).await
    }

    /// [`Client::sync_until`] with a filter.
    pub async fn sync_until_filtered<F: Fn(&Value) -> bool>(
        &self,
        since: Option<&str>,
        filter: Option<&str>,
        pred: F,
    ) -> Value {
        let mut all = self.sync_collect_until(since, filter, pred).await;
        all.pop().expect("at least one sync response")
    }

    /// Like [`Client::sync_until_filtered`] but returns every response seen, in order (the
    /// last one satisfies `pred`). Useful to assert that something did *not* show up.
    pub async fn sync_collect_until<F: Fn(&Value) -> bool>(
        &self,
        since: Option<&str>,
        filter: Option<&str>,
        pred: F,
    ) -> Vec<Value> {
        self.sync_collect_until_within(since, filter, SYNC_DEADLINE, pred)
            .await
    }

    /// [`Client::sync_until`] with another bound than [`SYNC_DEADLINE`] (federation tests,
    /// where delivery crosses two servers).
    pub async fn sync_until_within<F: Fn(&Value) -> bool>(
        &self,
        since: Option<&str>,
        within: Duration,
        pred: F,
    ) -> Value {
        let mut all = self
            .sync_collect_until_within(since, None, within, pred)
            .await;
        all.pop().expect("at least one sync response")
    }

    /// [`Client::sync_collect_until`] bounded by `within` instead of [`SYNC_DEADLINE`].
    pub async fn sync_collect_until_within<F: Fn(&Value) -> bool>(
        &self,
        since: Option<&str>,
        filter: Option<&str>,
        within: Duration,
        pred: F,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut since = since.map(str::to_owned);
        let mut seen = Vec::new();
        loop {
            let timeout = if since.is_some() { SYNC_POLL_MS } else { 0 };
            let body = self.sync_filtered(since.as_deref(), filter, timeout).await;
            let done = pred(&body);
            since = Some(next_batch(&body));
            seen.push(body);
            if done {
                return seen;
            }
            if Instant::now() >= deadline {
                let last = seen.last().cloned().unwrap_or_default();
                panic!(
                    "condition not met in /sync for {} within {within:?}; last response: {last}",
                    self.user_id
                );
            }
        }
    }
}

/// The `next_batch` of a sync response.
pub fn next_batch(sync: &Value) -> String {
    sync["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("no next_batch in {sync}"))
        .to_owned()
}

/// Reads a reqwest response into `(status, json)` (non-JSON bodies become a JSON string).
/// Panics on transport errors while reading the body.
pub async fn into_resp(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading response body: {e}"));
    (status, parse_body(&text))
}

fn parse_body(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}
