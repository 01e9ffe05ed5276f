//! The commented example printed by `ganglion generate-config`.

pub fn example_config(server_name: &str) -> String {
    format!(
        r#"# Ganglion configuration. Every key is optional; the values shown are the defaults
# unless marked otherwise. Unknown keys are refused at start-up.

# The Matrix server name: user ids look like @alice:{server_name}. Cannot change later.
server_name = "{server_name}"

# Where the signing key, the embedded SQLite database and media are kept.
data_dir = "./ganglion-data"

# The URL clients use to reach this server (advertised in /.well-known/matrix/client).
# public_baseurl = "https://matrix.{server_name}"

[client]
# Client-server API listener (plain HTTP: terminate TLS in the reverse proxy).
listen = "127.0.0.1:8008"

[database]
# Empty: SQLite at <data_dir>/ganglion.db. For PostgreSQL:
# url = "postgres://ganglion@127.0.0.1:5432/ganglion"
# url = "sqlite://./ganglion-data/ganglion.db"
max_connections = 8

[registration]
# Open self-registration. Default: on when the client listener is on loopback, off otherwise.
# enabled = false
# Shared secret for Synapse-compatible /_synapse/admin/v1/register (e.g. register_new_matrix_user).
# shared_secret = "change-me"
# Require a registration token (m.login.registration_token).
require_token = false
# Tokens accepted when require_token is set.
tokens = []

[rooms]
# Room version for new rooms (6 to 12).
default_version = "12"

[federation]
# Server-server API. Off by default.
enabled = false
# listen = "0.0.0.0:8448"
# tls_cert = "/etc/ganglion/tls/fullchain.pem"
# tls_key = "/etc/ganglion/tls/privkey.pem"
# Extra CA bundle trusted for outbound federation (a company's private CA).
# ca_file = "/etc/ganglion/tls/company-ca.pem"
# Only federate with these servers (empty: any).
allowed_servers = []
denied_servers = []
# Allow outbound federation to private, loopback and link-local addresses (on-prem networks).
allow_private_networks = false
# Notaries asked for other servers' keys when those cannot be reached directly (none by default).
trusted_key_servers = []
# Inbound requests per second each other server may make, and the burst above that; past it
# they get 429 M_LIMIT_EXCEEDED with retry_after_ms.
inbound_requests_per_second = 50
inbound_burst = 500

[limits]
# Largest client request body in bytes (media uploads excepted).
max_request_bytes = 1048576
# Longest /sync long-poll in milliseconds.
max_sync_timeout_ms = 60000
# Wrong passwords allowed per account and per client address in a minute (that many at once,
# then one every 60/n seconds); past it logins get 429 M_LIMIT_EXCEEDED. 0 switches it off.
failed_logins_per_minute = 10

[media]
# Uploaded files are kept under <data_dir>/media/. Largest upload in bytes (50 MiB); this limit,
# not limits.max_request_bytes, applies to uploads. Put the same or a larger body limit in the
# reverse proxy (nginx: client_max_body_size 50M).
max_upload_bytes = 52428800
# Thumbnails of exactly the requested size; off: the nearest of a few standard sizes.
dynamic_thumbnails = false
# Media ids a user may hold reserved (POST /_matrix/media/v1/create) awaiting content.
max_pending_uploads = 10

[logging]
# tracing filter; RUST_LOG overrides it.
level = "info"
"#
    )
}
