//! A push gateway on a loopback port: records every `POST /_matrix/push/v1/notify` body and
//! answers `{"rejected": […]}` with the pushkeys it was told to reject.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Notify,
};

const MAX_REQUEST: usize = 1 << 20;

pub struct FakePushGateway {
    port: u16,
    received: Arc<Mutex<Vec<Value>>>,
    arrived: Arc<Notify>,
    reject: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePushGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakePushGateway {
    pub async fn start() -> FakePushGateway {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind push gateway");
        let port = listener.local_addr().expect("local addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let reject = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (received, arrived, reject) = (received.clone(), arrived.clone(), reject.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (received, arrived, reject) =
                        (received.clone(), arrived.clone(), reject.clone());
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(30),
                            serve(tcp, received, arrived, reject),
                        )
                        .await;
                    });
                }
            })
        };
        FakePushGateway {
            port,
            received,
            arrived,
            reject,
            task,
        }
    }

    /// The notify URL to give a pusher.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/_matrix/push/v1/notify", self.port)
    }

    /// Pushkeys to answer as rejected from now on.
    pub fn reject(&self, pushkey: &str) {
        self.reject.lock().expect("lock").push(pushkey.to_owned());
    }

    pub fn received(&self) -> Vec<Value> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits (up to `within`) until a notification matching `pred` has arrived.
    pub async fn wait_for<F: Fn(&Value) -> bool>(&self, within: Duration, pred: F) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.arrived.notified();
            if let Some(n) = self.received().into_iter().find(|n| pred(n)) {
                return n;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no matching push notification within {within:?}; got {:?}",
                    self.received()
                );
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

async fn serve(
    mut tcp: tokio::net::TcpStream,
    received: Arc<Mutex<Vec<Value>>>,
    arrived: Arc<Notify>,
    reject: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_REQUEST {
            return;
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let request_line = head.lines().next().unwrap_or("").to_owned();
    let content_length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < content_length {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let (status, reply) = if request_line.starts_with("POST /_matrix/push/v1/notify ") {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let keys: Vec<String> = body["notification"]["devices"]
            .as_array()
            .map(|d| {
                d.iter()
                    .filter_map(|d| d["pushkey"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let rejected: Vec<String> = {
            let r = reject.lock().expect("lock");
            keys.into_iter().filter(|k| r.contains(k)).collect()
        };
        received.lock().expect("lock").push(body);
        arrived.notify_waiters();
        ("200 OK", json!({ "rejected": rejected }))
    } else {
        ("404 Not Found", json!({"errcode": "M_UNRECOGNIZED"}))
    };
    let text = reply.to_string();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = tcp.write_all(response.as_bytes()).await;
    let _ = tcp.shutdown().await;
}
