//! Federation, the server side of it that lives with the room model: events from other servers
//! (`incoming`), state resolution (`state_res`), requests to other servers (`remote`), their
//! keys (`keys`), and the membership flows that cross servers (`membership`).
//!
//! The protocol mechanics (TLS, discovery, request signing, key fetching, PDU checks, the
//! outbound queue) are in the `ganglion-federation` crate.

pub mod acl;
pub mod backfill;
pub mod edus;
pub mod incoming;
pub mod keys;
pub mod membership;
pub mod outbound;
pub mod query;
pub mod remote;
pub mod service;
pub mod state_res;

pub use service::Federation;
