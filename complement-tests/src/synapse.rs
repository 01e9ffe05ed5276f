//! Synapse (from PyPI) as a federation peer.
//!
//! Enabled with `GANGLION_TEST_SYNAPSE=1` (see [`enabled`]). Synapse runs from the venv at
//! `target/synapse-venv` (override with `GANGLION_SYNAPSE_VENV`); the first use creates it and
//! installs `matrix-synapse==1.163.*` under a file lock, because tests run in parallel.
//!
//! Each [`Synapse`] gets its own temporary directory, its own loopback address (from the same
//! pool as federating Ganglion nodes), a plain-HTTP client listener and a TLS federation
//! listener with a leaf of [`TestCa::shared`]. The server name is `IP:FEDPORT`. The generated
//! `homeserver.yaml` (written as JSON, which YAML reads) follows `TESTING.md`: the test CA as
//! `federation_custom_ca_list`, `ip_range_blacklist` covering everything but 127.0.0.0/8,
//! no trusted key servers, open registration plus `registration_shared_secret`,
//! `bcrypt_rounds: 4`, every `rc_*` very high, no stats/metrics/URL previews, SQLite.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::Client;
use crate::tls::{TestCa, TlsFiles};

/// Environment variable that enables the Synapse tests.
pub const SYNAPSE_ENV: &str = "GANGLION_TEST_SYNAPSE";
/// Environment variable overriding the venv location.
pub const VENV_ENV: &str = "GANGLION_SYNAPSE_VENV";
/// The Synapse release series the harness installs.
pub const SYNAPSE_VERSION: &str = "1.163.*";
/// How long Synapse gets to answer `/_matrix/client/versions` (it is slow on a loaded box).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

/// Whether `GANGLION_TEST_SYNAPSE=1`. Tests print `SKIPPED` and return when it is not.
pub fn enabled() -> bool {
    std::env::var(SYNAPSE_ENV).as_deref() == Ok("1")
}

/// [`enabled`], printing a SKIPPED line when it is not.
pub fn enabled_or_skip() -> bool {
    if enabled() {
        return true;
    }
    eprintln!("SKIPPED: Synapse interop needs {SYNAPSE_ENV}=1");
    false
}

/// The venv directory (`target/synapse-venv` of the workspace, or `$GANGLION_SYNAPSE_VENV`).
pub fn venv_dir() -> PathBuf {
    if let Ok(v) = std::env::var(VENV_ENV)
        && !v.trim().is_empty()
    {
        return PathBuf::from(v);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("target")
        .join("synapse-venv")
}

fn python_has_synapse(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import synapse"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Makes sure the venv exists with Synapse installed (creating it under an exclusive file
/// lock, so parallel tests install once) and returns its Python interpreter. Blocking.
pub fn ensure_installed() -> PathBuf {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    if python_has_synapse(&python) {
        return python;
    }
    let parent = venv.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(parent).expect("create venv parent dir");
    let lock_path = parent.join("synapse-venv.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", lock_path.display()));
    // Someone else may have installed it while we waited for the lock.
    if !python_has_synapse(&python) {
        eprintln!(
            "installing matrix-synapse=={SYNAPSE_VERSION} into {} (takes about a minute)",
            venv.display()
        );
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .stdin(Stdio::null())
            .status()
            .expect("run python3 -m venv");
        assert!(
            status.success(),
            "python3 -m venv {} failed",
            venv.display()
        );
        let status = Command::new(venv.join("bin").join("pip"))
            .args([
                "install",
                "-q",
                &format!("matrix-synapse=={SYNAPSE_VERSION}"),
            ])
            .stdin(Stdio::null())
            .status()
            .expect("run pip install matrix-synapse");
        assert!(status.success(), "pip install matrix-synapse failed");
        assert!(
            python_has_synapse(&python),
            "synapse is not importable after installing it into {}",
            venv.display()
        );
    }
    let _ = lock.unlock();
    python
}

/// Settings for one Synapse.
#[derive(Clone, Debug, Default)]
pub struct SynapseOptions {
    /// The loopback address; `None` takes the next one of the harness's pool.
    pub ip: Option<Ipv4Addr>,
    /// Top-level `homeserver.yaml` keys that replace the harness's values (or add new ones).
    pub extra_config: serde_json::Map<String, Value>,
}

/// A running Synapse. Dropping it stops the process (SIGTERM, then SIGKILL) and removes its
/// directory; if the test is panicking, the log tail is printed first.
pub struct Synapse {
    dir: tempfile::TempDir,
    python: PathBuf,
    ip: IpAddr,
    client_port: u16,
    fed_port: u16,
    tls: TlsFiles,
    /// `IP:FEDPORT`.
    pub server_name: String,
    /// `http://IP:CLIENTPORT`.
    pub base_url: String,
    /// The `registration_shared_secret`.
    pub shared_secret: String,
    /// How long the last start took (spawn until the client and federation listeners answer).
    pub startup: Duration,
    child: Option<Child>,
    http: reqwest::Client,
    fed_http: reqwest::Client,
}

impl Synapse {
    /// Starts a Synapse with default options. Call only when [`enabled`].
    pub async fn start() -> Synapse {
        Synapse::start_with(SynapseOptions::default()).await
    }

    /// Installs Synapse if needed, writes its config and keys into a fresh temporary directory,
    /// spawns it and waits (bounded) until both listeners answer.
    pub async fn start_with(opts: SynapseOptions) -> Synapse {
        crate::install_crypto_provider();
        let python = tokio::task::spawn_blocking(ensure_installed)
            .await
            .expect("install task");
        let dir = tempfile::Builder::new()
            .prefix("synapse-test-")
            .tempdir()
            .expect("create temp dir for synapse");
        let ip = IpAddr::V4(opts.ip.unwrap_or_else(crate::next_loopback_ip));
        let ca = TestCa::shared();
        let tls = ca.write_node_files(&dir.path().join("tls"), ip);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("build HTTP client");
        let mut syn = Synapse {
            dir,
            python,
            ip,
            client_port: 0,
            fed_port: 0,
            tls,
            server_name: String::new(),
            base_url: String::new(),
            shared_secret: format!("synapse-secret-{}", crate::random_string(16)),
            startup: Duration::ZERO,
            child: None,
            http,
            fed_http: ca.http_client(),
        };
        syn.write_signing_key();
        let mut last_error = String::new();
        for _attempt in 0..3 {
            syn.client_port = crate::free_port_on(ip);
            syn.fed_port = crate::free_port_on(ip);
            syn.server_name = format!("{ip}:{}", syn.fed_port);
            syn.base_url = format!("http://{ip}:{}", syn.client_port);
            syn.write_config(&opts);
            // A fresh database per attempt: the server name is baked into it.
            let _ = std::fs::remove_file(syn.dir.path().join("homeserver.db"));
            match syn.spawn_and_wait().await {
                Ok(()) => {
                    eprintln!(
                        "synapse {} started in {:.1?} (client {}, federation {})",
                        syn.server_name,
                        syn.startup,
                        syn.base_url,
                        syn.fed_url()
                    );
                    return syn;
                }
                Err(e) => {
                    last_error = e;
                    let log = syn.log_tail(60);
                    if !log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        let tail = syn.log_tail(80);
        syn.kill();
        panic!(
            "synapse did not start: {last_error}\n--- synapse log tail ({}) ---\n{tail}",
            syn.log_path().display()
        );
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn fed_port(&self) -> u16 {
        self.fed_port
    }

    /// `https://IP:FEDPORT`.
    pub fn fed_url(&self) -> String {
        format!("https://{}:{}", self.ip, self.fed_port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("homeserver.yaml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("synapse.log")
    }

    pub fn tls_files(&self) -> &TlsFiles {
        &self.tls
    }

    /// An HTTPS client that trusts the test CA.
    pub fn fed_http(&self) -> reqwest::Client {
        self.fed_http.clone()
    }

    /// The last `n` lines of Synapse's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A client without an access token.
    pub fn client(&self) -> Client {
        Client::new(&self.base_url, &self.server_name)
    }

    /// The full user id for a localpart on this server.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// Registers `name` through the shared-secret admin API (`/_synapse/admin/v1/register`)
    /// and returns a logged-in client. The password is `Client::default_password(name)`.
    pub async fn register(&self, name: &str) -> Client {
        self.register_with(name, &Client::default_password(name), false)
            .await
    }

    /// [`Synapse::register`] with a chosen password and admin flag.
    pub async fn register_with(&self, name: &str, password: &str, admin: bool) -> Client {
        let anon = self.client();
        let path = "/_synapse/admin/v1/register";
        let nonce = anon.get(path).await;
        assert_eq!(
            nonce.0, 200,
            "GET {path} on synapse: {} {}",
            nonce.0, nonce.1
        );
        let nonce = nonce.1["nonce"]
            .as_str()
            .unwrap_or_else(|| panic!("no nonce in {}", nonce.1))
            .to_owned();
        let mac =
            crate::crypto::registration_mac(&self.shared_secret, &nonce, name, password, admin);
        let resp = anon
            .post(
                path,
                &json!({
                    "nonce": nonce,
                    "username": name,
                    "password": password,
                    "admin": admin,
                    "mac": mac,
                }),
            )
            .await;
        assert_eq!(
            resp.0, 200,
            "registering {name} on synapse failed: {} {}",
            resp.0, resp.1
        );
        anon.from_login_response(&resp.1, password)
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

    /// Starts Synapse again with the same config and data after [`Synapse::stop`].
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "synapse is still running");
        if let Err(e) = self.spawn_and_wait().await {
            panic!(
                "synapse did not restart: {e}\n--- synapse log tail ---\n{}",
                self.log_tail(80)
            );
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn write_signing_key(&self) {
        let seed: [u8; 32] = rand::random();
        let line = format!(
            "ed25519 a_{} {}\n",
            crate::random_string(4),
            crate::crypto::b64(&seed)
        );
        std::fs::write(self.dir.path().join("signing.key"), line).expect("write signing.key");
    }

    fn write_config(&self, opts: &SynapseOptions) {
        let d = self.dir.path();
        let p = |name: &str| d.join(name).display().to_string();
        let ip = self.ip.to_string();
        let hi = json!({"per_second": 100000, "burst_count": 100000});
        let mut c = json!({
            "server_name": self.server_name,
            "pid_file": p("homeserver.pid"),
            "listeners": [
                {
                    "port": self.client_port,
                    "type": "http",
                    "tls": false,
                    "bind_addresses": [ip],
                    "x_forwarded": false,
                    "resources": [{"names": ["client"], "compress": false}],
                },
                {
                    "port": self.fed_port,
                    "type": "http",
                    "tls": true,
                    "bind_addresses": [ip],
                    "x_forwarded": false,
                    "resources": [{"names": ["federation", "keys"], "compress": false}],
                },
            ],
            "database": {"name": "sqlite3", "args": {"database": p("homeserver.db")}},
            "media_store_path": p("media_store"),
            "signing_key_path": p("signing.key"),
            "macaroon_secret_key": crate::random_string(32),
            "form_secret": crate::random_string(32),
            "tls_certificate_path": self.tls.cert.display().to_string(),
            "tls_private_key_path": self.tls.key.display().to_string(),
            "federation_custom_ca_list": [self.tls.ca.display().to_string()],
            "federation_verify_certificates": true,
            "ip_range_blacklist": ip_range_blacklist(),
            "ip_range_whitelist": ["127.0.0.0/8"],
            "trusted_key_servers": [],
            "suppress_key_server_warning": true,
            "allow_public_rooms_over_federation": true,
            "room_list_publication_rules": [{"action": "allow"}],
            "enable_registration": true,
            "enable_registration_without_verification": true,
            "registration_shared_secret": self.shared_secret,
            "bcrypt_rounds": 4,
            "report_stats": false,
            "enable_metrics": false,
            "url_preview_enabled": false,
            "presence": {"enabled": true},
            "rc_login": {"address": hi, "account": hi, "failed_attempts": hi},
            "rc_joins": {"local": hi, "remote": hi},
            "rc_invites": {"per_room": hi, "per_user": hi, "per_issuer": hi},
            "rc_presence": {"per_user": hi},
            "rc_federation": {
                "window_size": 1000,
                "sleep_limit": 100000,
                "sleep_delay": 1,
                "reject_limit": 100000,
                "concurrent": 100000,
            },
        });
        for k in [
            "rc_message",
            "rc_registration",
            "rc_registration_token_validity",
            "rc_admin_redaction",
            "rc_joins_per_room",
            "rc_key_requests",
            "rc_3pid_validation",
            "rc_third_party_invite",
            "rc_media_create",
            "rc_delayed_event_mgmt",
            "rc_room_creation",
            "rc_reports",
            "rc_user_directory",
            "rc_profile",
        ] {
            c[k] = hi.clone();
        }
        for (k, v) in &opts.extra_config {
            c[k] = v.clone();
        }
        let text = serde_json::to_string_pretty(&c).expect("serialize synapse config");
        std::fs::write(self.config_path(), text).expect("write homeserver.yaml");
    }

    fn spawn(&mut self) {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open synapse log");
        let _ = writeln!(
            log,
            "===== harness: starting synapse --config-path {} =====",
            self.config_path().display()
        );
        let log_err = log.try_clone().expect("clone log handle");
        let child = Command::new(&self.python)
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.python.display()));
        self.child = Some(child);
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let started = Instant::now();
        self.spawn();
        let url = format!("{}/_matrix/client/versions", self.base_url);
        let fed = format!("{}/_matrix/federation/v1/version", self.fed_url());
        let deadline = started + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("synapse exited early with {status}"));
            }
            let client_ok = matches!(
                self.http.get(&url).timeout(Duration::from_secs(2)).send().await,
                Ok(r) if r.status().as_u16() == 200
            );
            if client_ok {
                let fed_ok = matches!(
                    self.fed_http.get(&fed).timeout(Duration::from_secs(2)).send().await,
                    Ok(r) if r.status().as_u16() == 200
                );
                if fed_ok {
                    self.startup = started.elapsed();
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "no 200 from {url} and {fed} within {STARTUP_TIMEOUT:?}"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- synapse log tail ({}) ---\n{}\n--- end of synapse log ---",
                self.server_name,
                self.log_tail(80)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

/// Every IPv4 range except 127.0.0.0/8, plus all of IPv6: for IP-literal destinations Synapse
/// consults only this list, so loopback must not be on it while everything else is.
pub fn ip_range_blacklist() -> Vec<&'static str> {
    vec![
        "0.0.0.0/2",
        "64.0.0.0/3",
        "96.0.0.0/4",
        "112.0.0.0/5",
        "120.0.0.0/6",
        "124.0.0.0/7",
        "126.0.0.0/8",
        "128.0.0.0/1",
        "::/0",
    ]
}
