//! The server-server side of Ganglion: signing keys, canonical-JSON signing and PDU hashing.
//!
//! This crate knows nothing of the `ganglion` package; where it needs storage or room logic it
//! defines a small trait that the server implements.

pub mod keys;
pub mod pdu;

pub use keys::{KeyError, ServerSigningKey};
