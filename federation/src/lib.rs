//! The server-server side of Ganglion: signing keys, canonical-JSON signing and PDU hashing.
//!
//! This crate knows nothing of the `ganglion` package; where it needs storage or room logic it
//! defines a small trait that the server implements.
//!
//! Modules:
//! - [`keys`]: the server's own ed25519 signing key (Synapse key-file format).
//! - [`pdu`]: room-version dependent PDU hashing, signing and event ids.
//! - [`tls`]: rustls (ring) configs: the federation listener's `ServerConfig` from PEM files,
//!   the outbound `ClientConfig` with webpki roots plus an optional private CA bundle.
//! - [`discovery`]: server-name resolution (IP literal, explicit port, cached
//!   `/.well-known/matrix/server`, SRV `_matrix-fed._tcp` / `_matrix._tcp`, port 8448), with DNS
//!   and well-known fetching behind traits.
//! - [`request_auth`]: `X-Matrix` signing of outbound requests and verification of inbound ones
//!   against a [`request_auth::KeySource`].
//! - [`client`]: [`FederationClient`]: sends ruma `OutgoingRequest`s to other servers over
//!   reqwest, enforcing the allow/deny lists and refusing private addresses unless configured.
//! - [`keyring`]: remote server keys (direct fetch and notaries, verified, cached through a
//!   [`keyring::KeyStore`] the server implements) and our own `/_matrix/key/v2/*` answers.
//! - [`error`]: the error types of the modules above.

pub mod client;
pub mod discovery;
pub mod error;
pub mod keyring;
pub mod keys;
pub mod pdu;
pub mod pdu_checks;
pub mod request_auth;
pub mod sender;
pub mod tls;

pub use client::{FederationClient, FederationConfig};
pub use error::{FederationError, KeyringError, RequestAuthError};
pub use keyring::{KeyStore, Keyring, KeyringConfig, StoredKey};
pub use keys::{KeyError, ServerSigningKey};
