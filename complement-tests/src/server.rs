//! Starting, stopping and cleaning up real `ganglion` processes.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::tls::{TestCa, TlsFiles};

/// Environment variable holding the PostgreSQL base URL (e.g. `postgres://postgres@127.0.0.1:5432`).
pub const POSTGRES_ENV: &str = "GANGLION_TEST_POSTGRES";

/// How long a server gets to answer `/_matrix/client/versions` after being spawned.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval while waiting for the server to come up or go down.
const POLL: Duration = Duration::from_millis(50);
/// How long a graceful stop (SIGTERM) may take before the harness falls back to SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The storage backend a server under test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Whether this backend can be used in this environment.
    pub fn enabled(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => postgres_base().is_some(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The backends every black-box test runs on: SQLite always, PostgreSQL when
/// `GANGLION_TEST_POSTGRES` is set.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    if Backend::Postgres.enabled() {
        v.push(Backend::Postgres);
    }
    v
}

fn postgres_base() -> Option<String> {
    std::env::var(POSTGRES_ENV)
        .ok()
        .map(|s| s.trim().trim_end_matches('/').to_owned())
        .filter(|s| !s.is_empty())
}

/// Per-server settings that end up in the generated TOML config.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// `[registration] enabled`.
    pub registration: bool,
    /// `[registration] shared_secret` (enables `/_synapse/admin/v1/register`).
    pub shared_secret: Option<String>,
    /// `[registration] require_token`.
    pub require_token: bool,
    /// `[registration] tokens`.
    pub tokens: Vec<String>,
    /// `[rooms] default_version`.
    pub default_room_version: Option<String>,
    /// Raw TOML appended verbatim to the end of the config. Start it with a `[table]` header,
    /// otherwise its keys land in whatever table came last.
    pub extra_toml: String,
    /// Federation settings. `None` (the default): no federation, server name `localhost:PORT`,
    /// client API on 127.0.0.1. `Some`: the node runs on its own loopback address, e.g. server
    /// name `127.0.0.11:FEDPORT`, client API on `http://127.0.0.11:CLIENTPORT` and an HTTPS
    /// federation listener on `127.0.0.11:FEDPORT` with a leaf of the test CA.
    pub federation: Option<FederationOptions>,
}

/// Settings for a federating node (`[federation]` in the config). The harness always sets
/// `enabled = true`, `listen`, `tls_cert`/`tls_key` (a leaf of [`TestCa::shared`] for the node's
/// IP), `ca_file` (the test CA) and `allow_private_networks = true`.
#[derive(Clone, Debug, Default)]
pub struct FederationOptions {
    /// The loopback address to run on; `None` takes the next one of the harness's pool
    /// (127.0.0.11, .12, ... see [`next_loopback_ip`]).
    pub ip: Option<Ipv4Addr>,
    /// `[federation] allowed_servers` (empty: everyone).
    pub allowed_servers: Vec<String>,
    /// `[federation] denied_servers`.
    pub denied_servers: Vec<String>,
    /// `[federation] trusted_key_servers` (server names of notaries).
    pub trusted_key_servers: Vec<String>,
    /// Raw TOML lines added inside the `[federation]` table.
    pub extra_toml: String,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            registration: true,
            shared_secret: None,
            require_token: false,
            tokens: Vec::new(),
            default_room_version: None,
            extra_toml: String::new(),
            federation: None,
        }
    }
}

/// A running (or stopped, between `kill9`/`stop` and `start`) `ganglion` process with its own
/// temporary directory and database. Dropping it kills the process, drops the PostgreSQL
/// database (if any) and removes the directory.
pub struct Server {
    bin: PathBuf,
    backend: Backend,
    opts: ServerOptions,
    dir: tempfile::TempDir,
    port: u16,
    /// The address both listeners bind (127.0.0.1 without federation).
    ip: IpAddr,
    /// The federation listener's port (federating nodes only).
    fed_port: Option<u16>,
    /// TLS files of a federating node.
    tls: Option<TlsFiles>,
    /// HTTPS client trusting the test CA (federating nodes only).
    fed_http: Option<reqwest::Client>,
    /// The Matrix server name: `localhost:PORT`, or `IP:FEDPORT` for a federating node.
    pub server_name: String,
    /// The client API base URL, `http://127.0.0.1:PORT` (`http://IP:PORT` when federating).
    pub base_url: String,
    child: Option<Child>,
    /// Name of the PostgreSQL database created for this server.
    pg_database: Option<String>,
    http: reqwest::Client,
    /// Set once a panic message already carried the log tail (avoids printing it twice).
    log_reported: bool,
}

impl Server {
    /// Starts a server with default options.
    pub async fn start_default(bin: impl AsRef<Path>, backend: Backend) -> Server {
        Server::start(bin, backend, ServerOptions::default()).await
    }

    /// Writes a config into a fresh temporary directory, creates a database when the backend
    /// is PostgreSQL, spawns `bin --config FILE` and waits (bounded) until the client API
    /// answers. Panics with the tail of the server log if it does not come up.
    pub async fn start(bin: impl AsRef<Path>, backend: Backend, opts: ServerOptions) -> Server {
        crate::install_crypto_provider();
        let bin = bin.as_ref().to_path_buf();
        assert!(
            bin.exists(),
            "server binary {} does not exist",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("ganglion-test-")
            .tempdir()
            .expect("create temp dir for the server");
        std::fs::create_dir_all(dir.path().join("data")).expect("create data dir");

        let pg_database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let name = format!("ganglion_test_{}", crate::random_string(16));
                create_database(&name);
                Some(name)
            }
        };

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("build HTTP client");

        let mut server = Server {
            bin,
            backend,
            opts,
            dir,
            port: 0,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            fed_port: None,
            tls: None,
            fed_http: None,
            server_name: String::new(),
            base_url: String::new(),
            child: None,
            pg_database,
            http,
            log_reported: false,
        };

        // A port picked by binding to :0 can in rare cases be grabbed by someone else before the
        // server binds it; retry with a fresh port when the process dies before becoming ready.
        if let Some(fed) = server.opts.federation.clone() {
            let ip = fed.ip.unwrap_or_else(next_loopback_ip);
            server.ip = IpAddr::V4(ip);
            let ca = TestCa::shared();
            server.tls = Some(ca.write_node_files(&server.dir.path().join("tls"), server.ip));
            server.fed_http = Some(ca.http_client());
        }

        let mut last_error = String::new();
        for _attempt in 0..3 {
            server.port = free_port_on(server.ip);
            if server.tls.is_some() {
                let fed_port = free_port_on(server.ip);
                server.fed_port = Some(fed_port);
                server.server_name = format!("{}:{fed_port}", server.ip);
                server.base_url = format!("http://{}:{}", server.ip, server.port);
            } else {
                server.server_name = format!("localhost:{}", server.port);
                server.base_url = format!("http://127.0.0.1:{}", server.port);
            }
            server.write_config();
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(StartError::Exited(msg)) => {
                    last_error = msg;
                    let log = server.log_tail(40);
                    if !log.contains("in use") && !log.contains("AddrInUse") {
                        break;
                    }
                }
                Err(StartError::Timeout(msg)) => {
                    last_error = msg;
                    break;
                }
            }
        }
        server.log_reported = true;
        panic!(
            "ganglion did not start ({}): {last_error}\n--- server log tail ({}) ---\n{}",
            backend.name(),
            server.log_path().display(),
            server.log_tail(60)
        );
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The loopback address the node's listeners bind.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Whether this node was started with federation settings.
    pub fn federates(&self) -> bool {
        self.tls.is_some()
    }

    /// The federation listener's port. Panics unless the node federates.
    pub fn fed_port(&self) -> u16 {
        self.fed_port
            .unwrap_or_else(|| panic!("{} was started without federation", self.server_name))
    }

    /// The federation base URL, `https://IP:FEDPORT`. Panics unless the node federates.
    pub fn fed_url(&self) -> String {
        format!("https://{}:{}", self.ip, self.fed_port())
    }

    /// The node's TLS files (CA, leaf, key). Panics unless the node federates.
    pub fn tls_files(&self) -> &TlsFiles {
        self.tls
            .as_ref()
            .unwrap_or_else(|| panic!("{} was started without federation", self.server_name))
    }

    /// An HTTPS client that trusts the test CA, for requests to federation listeners.
    pub fn fed_http(&self) -> reqwest::Client {
        self.fed_http
            .clone()
            .unwrap_or_else(|| TestCa::shared().http_client())
    }

    /// Unauthenticated `GET` on the federation listener (e.g. `/_matrix/key/v2/server`).
    /// Panics on transport errors.
    pub async fn fed_get(&self, path: &str) -> crate::Resp {
        let url = format!("{}{path}", self.fed_url());
        let resp = self
            .fed_http()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: transport error: {e}"));
        crate::client::into_resp(resp).await
    }

    /// Unauthenticated `POST` of JSON on the federation listener (e.g. `/_matrix/key/v2/query`).
    pub async fn fed_post(&self, path: &str, body: &serde_json::Value) -> crate::Resp {
        let url = format!("{}{path}", self.fed_url());
        let resp = self
            .fed_http()
            .post(&url)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: transport error: {e}"));
        crate::client::into_resp(resp).await
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ganglion.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The database URL the server was configured with.
    pub fn database_url(&self) -> String {
        match (&self.backend, &self.pg_database) {
            (Backend::Postgres, Some(db)) => format!(
                "{}/{db}",
                postgres_base().expect("GANGLION_TEST_POSTGRES vanished")
            ),
            _ => format!(
                "sqlite://{}",
                self.dir.path().join("data").join("ganglion.db").display()
            ),
        }
    }

    /// The last `n` lines of the server's log (stderr and stdout).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A client without an access token.
    pub fn client(&self) -> Client {
        Client::new(&self.base_url, &self.server_name)
    }

    /// Registers `name` (with the UIA dummy flow) and returns a logged-in client. The password
    /// is `Client::default_password(name)`.
    pub async fn register(&self, name: &str) -> Client {
        self.client()
            .register(name, &Client::default_password(name))
            .await
    }

    /// The full user id for a localpart on this server.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    fn write_config(&self) {
        let data_dir = self.dir.path().join("data");
        let mut cfg = String::new();
        cfg.push_str(&format!("server_name = {}\n", toml_str(&self.server_name)));
        cfg.push_str(&format!(
            "data_dir = {}\n",
            toml_str(&data_dir.display().to_string())
        ));
        cfg.push_str("\n[client]\n");
        cfg.push_str(&format!(
            "listen = {}\n",
            toml_str(&format!("{}:{}", self.ip, self.port))
        ));
        cfg.push_str("\n[database]\n");
        cfg.push_str(&format!("url = {}\n", toml_str(&self.database_url())));
        cfg.push_str("\n[registration]\n");
        cfg.push_str(&format!("enabled = {}\n", self.opts.registration));
        if let Some(secret) = &self.opts.shared_secret {
            cfg.push_str(&format!("shared_secret = {}\n", toml_str(secret)));
        }
        cfg.push_str(&format!("require_token = {}\n", self.opts.require_token));
        let tokens: Vec<String> = self.opts.tokens.iter().map(|t| toml_str(t)).collect();
        cfg.push_str(&format!("tokens = [{}]\n", tokens.join(", ")));
        if let Some(v) = &self.opts.default_room_version {
            cfg.push_str("\n[rooms]\n");
            cfg.push_str(&format!("default_version = {}\n", toml_str(v)));
        }
        if let (Some(fed), Some(tls), Some(fed_port)) =
            (&self.opts.federation, &self.tls, self.fed_port)
        {
            let list = |v: &[String]| {
                let items: Vec<String> = v.iter().map(|t| toml_str(t)).collect();
                format!("[{}]", items.join(", "))
            };
            let path = |p: &Path| toml_str(&p.display().to_string());
            cfg.push_str("\n[federation]\n");
            cfg.push_str("enabled = true\n");
            cfg.push_str(&format!(
                "listen = {}\n",
                toml_str(&format!("{}:{fed_port}", self.ip))
            ));
            cfg.push_str(&format!("tls_cert = {}\n", path(&tls.cert)));
            cfg.push_str(&format!("tls_key = {}\n", path(&tls.key)));
            cfg.push_str(&format!("ca_file = {}\n", path(&tls.ca)));
            cfg.push_str("allow_private_networks = true\n");
            cfg.push_str(&format!(
                "allowed_servers = {}\n",
                list(&fed.allowed_servers)
            ));
            cfg.push_str(&format!("denied_servers = {}\n", list(&fed.denied_servers)));
            cfg.push_str(&format!(
                "trusted_key_servers = {}\n",
                list(&fed.trusted_key_servers)
            ));
            if !fed.extra_toml.is_empty() {
                cfg.push_str(&fed.extra_toml);
                cfg.push('\n');
            }
        }
        if !self.opts.extra_toml.is_empty() {
            cfg.push('\n');
            cfg.push_str(&self.opts.extra_toml);
            cfg.push('\n');
        }
        std::fs::write(self.config_path(), cfg).expect("write server config");
    }

    fn spawn(&mut self) {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open server log");
        let _ = writeln!(
            log,
            "===== harness: starting {} --config {} =====",
            self.bin.display(),
            self.config_path().display()
        );
        let log_err = log.try_clone().expect("clone log handle");
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        self.child = Some(child);
    }

    async fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        self.spawn();
        let url = format!("{}/_matrix/client/versions", self.base_url);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut client_up = false;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(StartError::Exited(format!(
                    "process exited early with {status}"
                )));
            }
            if let Ok(resp) = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && resp.status().as_u16() == 200
            {
                client_up = true;
                if self.federation_ready().await {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.kill_child();
                let msg = if client_up {
                    format!(
                        "the client API answers but the federation listener https://{}:{} did not \
                         (TLS with the test CA, then HTTP) within {STARTUP_TIMEOUT:?}",
                        self.ip,
                        self.fed_port.unwrap_or(0)
                    )
                } else {
                    format!("no 200 from {url} within {STARTUP_TIMEOUT:?}")
                };
                return Err(StartError::Timeout(msg));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// For a federating node: whether the federation listener completes a TLS handshake with
    /// the test CA and answers HTTP (any status). Always true for other nodes.
    async fn federation_ready(&self) -> bool {
        let (Some(http), Some(port)) = (&self.fed_http, self.fed_port) else {
            return true;
        };
        let url = format!("https://{}:{port}/_matrix/federation/v1/version", self.ip);
        http.get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok()
    }

    /// Starts the process again (same config, same port, same data) after `stop` or `kill9`.
    /// Panics with the log tail if it does not come up.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "server is still running");
        if let Err(e) = self.spawn_and_wait().await {
            let msg = match e {
                StartError::Exited(m) | StartError::Timeout(m) => m,
            };
            self.log_reported = true;
            panic!(
                "ganglion did not restart: {msg}\n--- server log tail ---\n{}",
                self.log_tail(60)
            );
        }
    }

    /// Graceful stop (SIGTERM, bounded wait, then SIGKILL).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// Graceful restart with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Kills the process with SIGKILL (no chance to flush anything) and reaps it.
    pub fn kill9(&mut self) {
        self.kill_child();
    }

    /// Whether the process is currently running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            // std's Child::kill sends SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How much of a failed test's server log to print: `GANGLION_TEST_LOG_LINES` (default 80).
fn log_tail_lines() -> usize {
    std::env::var("GANGLION_TEST_LOG_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_child();
        if std::thread::panicking() && !self.log_reported {
            eprintln!(
                "--- ganglion log tail ({}, {}) ---\n{}\n--- end of log ---",
                self.backend.name(),
                self.server_name,
                self.log_tail(log_tail_lines())
            );
        }
        if let Some(db) = self.pg_database.take() {
            drop_database(&db);
        }
    }
}

enum StartError {
    Exited(String),
    Timeout(String),
}

/// A port on `ip` that was free a moment ago (found by binding port 0).
pub fn free_port_on(ip: IpAddr) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    listener.local_addr().expect("local addr").port()
}

/// The next loopback address for a federating node: 127.0.0.11, .12, ... .250, then around
/// again. Linux routes all of 127.0.0.0/8 to `lo`, so these bind without set-up. Nodes of one
/// test get distinct addresses; ports are still picked by binding port 0, so wrapping around
/// (or another test process) never makes two listeners collide.
pub fn next_loopback_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 240;
    Ipv4Addr::new(127, 0, 0, 11 + n as u8)
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn psql(sql: &str) -> Result<(), String> {
    let base = postgres_base().ok_or_else(|| format!("{POSTGRES_ENV} is not set"))?;
    let out = Command::new("psql")
        .arg("-X")
        .arg("-q")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-d")
        .arg(format!("{base}/postgres"))
        .arg("-c")
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "psql {sql:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn create_database(name: &str) {
    psql(&format!("CREATE DATABASE \"{name}\"")).unwrap_or_else(|e| panic!("{e}"));
}

fn drop_database(name: &str) {
    if let Err(e) = psql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")) {
        eprintln!("warning: could not drop test database {name}: {e}");
    }
}
