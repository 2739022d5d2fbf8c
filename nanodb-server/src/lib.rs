//! NanoDB server library: the engine, the frontends and the server that wires them together.
//! `main.rs` only parses configuration and calls [`server::run`].

#[allow(unsafe_code)]
pub mod allocator;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod feed;
pub mod frontend;
pub mod glob;
pub mod persist;
pub mod restore;
#[cfg(feature = "rocksdb")]
pub mod rocks;
pub mod scripting;
pub mod server;
pub mod stats;
pub mod tls;
