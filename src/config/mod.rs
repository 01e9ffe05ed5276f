//! Typed configuration: the single source of truth for defaults, validation and the example file.

use std::{net::SocketAddr, path::PathBuf};

use ruma::{OwnedServerName, RoomVersionId};
use serde::Deserialize;

mod example;
pub use example::example_config;

/// Room versions this server creates and joins (ruma implements their rules fully).
pub const SUPPORTED_ROOM_VERSIONS: &[&str] = &["6", "7", "8", "9", "10", "11", "12"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Matrix server name: the part after the colon in user ids.
    #[serde(default = "default_server_name")]
    pub server_name: OwnedServerName,
    /// Where the signing key, the SQLite database and media live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Base URL clients reach this server at, advertised in `.well-known/matrix/client`.
    #[serde(default)]
    pub public_baseurl: Option<String>,
    #[serde(default)]
    pub client: ClientConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub registration: RegistrationConfig,
    #[serde(default)]
    pub rooms: RoomsConfig,
    #[serde(default)]
    pub federation: FederationConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Address of the client-server API listener (plain HTTP; put TLS in the reverse proxy).
    #[serde(default = "default_client_listen")]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (embedded) or `postgres://user@host:port/db`. Empty: SQLite in data_dir.
    #[serde(default)]
    pub url: Option<String>,
    /// Maximum connections in the pool (PostgreSQL; SQLite readers).
    #[serde(default = "default_pool")]
    pub max_connections: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Open self-registration. Defaults to on only when every client listener is on loopback.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Shared secret for `/_synapse/admin/v1/register` (Synapse-compatible HMAC registration).
    #[serde(default)]
    pub shared_secret: Option<String>,
    /// Require an `m.login.registration_token` stage.
    #[serde(default)]
    pub require_token: bool,
    /// Registration tokens accepted (besides those created through the admin API).
    #[serde(default)]
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsConfig {
    /// Room version for new rooms.
    #[serde(default = "default_room_version")]
    pub default_version: RoomVersionId,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub allowed_servers: Vec<String>,
    #[serde(default)]
    pub denied_servers: Vec<String>,
    #[serde(default)]
    pub allow_private_networks: bool,
    #[serde(default)]
    pub trusted_key_servers: Vec<String>,
    /// Inbound requests each other server may make per second (sustained) ...
    #[serde(default = "default_fed_rate")]
    pub inbound_requests_per_second: u32,
    /// ... and in a burst.
    #[serde(default = "default_fed_burst")]
    pub inbound_burst: u32,
}

fn default_fed_rate() -> u32 {
    50
}
fn default_fed_burst() -> u32 {
    500
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted on the client API, in bytes (media uploads excepted).
    #[serde(default = "default_max_request")]
    pub max_request_bytes: usize,
    /// Longest `/sync` long-poll a client may ask for, in milliseconds.
    #[serde(default = "default_max_sync_timeout")]
    pub max_sync_timeout_ms: u64,
    /// Wrong passwords allowed per account and per client address in a minute (a burst of
    /// that many, then one every 60/n seconds); past it, 429 `M_LIMIT_EXCEEDED`. 0: no limit.
    #[serde(default = "default_failed_logins")]
    pub failed_logins_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest media upload accepted, in bytes (its own limit, not `limits.max_request_bytes`).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Thumbnails of exactly the requested size. Off: sizes snap to a few standard ones, so
    /// the disk cache stays small.
    #[serde(default)]
    pub dynamic_thumbnails: bool,
    /// Media ids one user may hold reserved (`/create`) without content at a time.
    #[serde(default = "default_max_pending_uploads")]
    pub max_pending_uploads: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// `tracing` filter, e.g. `info` or `ganglion=debug,info`. `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_server_name() -> OwnedServerName {
    OwnedServerName::try_from("localhost:8008").expect("valid literal")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./ganglion-data")
}
fn default_client_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8008))
}
fn default_pool() -> u32 {
    8
}
fn default_room_version() -> RoomVersionId {
    RoomVersionId::V12
}
fn default_failed_logins() -> u32 {
    10
}
fn default_max_request() -> usize {
    1024 * 1024
}
fn default_max_sync_timeout() -> u64 {
    60_000
}
fn default_max_upload() -> u64 {
    50 * 1024 * 1024
}
fn default_max_pending_uploads() -> u32 {
    10
}
fn default_log_level() -> String {
    "info".to_owned()
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            listen: default_client_listen(),
        }
    }
}
impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: default_pool(),
        }
    }
}
impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            default_version: default_room_version(),
        }
    }
}
impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: None,
            tls_cert: None,
            tls_key: None,
            ca_file: None,
            allowed_servers: Vec::new(),
            denied_servers: Vec::new(),
            allow_private_networks: false,
            trusted_key_servers: Vec::new(),
            inbound_requests_per_second: default_fed_rate(),
            inbound_burst: default_fed_burst(),
        }
    }
}
impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: default_max_request(),
            max_sync_timeout_ms: default_max_sync_timeout(),
            failed_logins_per_minute: default_failed_logins(),
        }
    }
}
impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: default_max_upload(),
            dynamic_thumbnails: false,
            max_pending_uploads: default_max_pending_uploads(),
        }
    }
}
impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("empty config uses defaults")
    }
}

/// A configuration problem, reported at start-up with the key it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !SUPPORTED_ROOM_VERSIONS.contains(&self.rooms.default_version.as_str()) {
            return Err(ConfigError(format!(
                "rooms.default_version: unsupported room version {:?} (supported: {})",
                self.rooms.default_version.as_str(),
                SUPPORTED_ROOM_VERSIONS.join(", ")
            )));
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(ConfigError(format!(
                "database.url: expected sqlite://PATH or postgres://…, got {url:?}"
            )));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError(
                "database.max_connections: must be at least 1".into(),
            ));
        }
        if self.registration.require_token
            && self.registration.tokens.is_empty()
            && self.registration.enabled == Some(true)
        {
            tracing::warn!(
                "registration.require_token is set but registration.tokens is empty: \
                 only tokens created through the admin API will work"
            );
        }
        if self.federation.enabled {
            if self.federation.listen.is_none() {
                return Err(ConfigError(
                    "federation.listen: required when federation.enabled = true".into(),
                ));
            }
            if self.federation.inbound_requests_per_second == 0
                || self.federation.inbound_burst == 0
            {
                return Err(ConfigError(
                    "federation.inbound_requests_per_second / inbound_burst: must be at least 1"
                        .into(),
                ));
            }
            if self.federation.tls_cert.is_none() || self.federation.tls_key.is_none() {
                return Err(ConfigError(
                    "federation.tls_cert / federation.tls_key: required when federation.enabled = true".into(),
                ));
            }
        }
        if self.media.max_upload_bytes == 0 {
            return Err(ConfigError(
                "media.max_upload_bytes: must be at least 1".into(),
            ));
        }
        if self.limits.max_request_bytes < 65_536 {
            return Err(ConfigError(
                "limits.max_request_bytes: must be at least 65536".into(),
            ));
        }
        Ok(())
    }

    /// Whether self-registration is open: explicit setting, else open only on a loopback listener.
    pub fn registration_enabled(&self) -> bool {
        self.registration
            .enabled
            .unwrap_or_else(|| self.client.listen.ip().is_loopback())
    }

    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("ganglion.db").display()),
        }
    }

    pub fn public_baseurl(&self) -> String {
        match &self.public_baseurl {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.client.listen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert_eq!(c.server_name.as_str(), "localhost:8008");
        assert!(c.registration_enabled());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[client]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        assert!(err.0.contains("bogus"), "{}", err.0);
    }

    #[test]
    fn non_loopback_listener_closes_registration() {
        let c = Config::from_toml("[client]\nlisten = \"0.0.0.0:8008\"\n").expect("valid");
        assert!(!c.registration_enabled());
    }

    #[test]
    fn bad_room_version_is_refused() {
        let err = Config::from_toml("[rooms]\ndefault_version = \"3\"\n").unwrap_err();
        assert!(err.0.contains("rooms.default_version"), "{}", err.0);
    }

    #[test]
    fn example_parses() {
        let text = example_config("example.org");
        Config::from_toml(&text).expect("example config is valid");
    }
}
