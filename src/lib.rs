//! Ganglion: a Matrix homeserver for organisations that run their own nodes.

pub mod api;
pub mod config;
pub mod e2ee;
pub mod error;
pub mod federation;
pub mod json;
pub mod media;
pub mod push;
pub mod reports;
pub mod rooms;
pub mod server;
pub mod services;
pub mod storage;
pub mod sync;
pub mod users;
