//! `nanodb-protocol`: everything a NanoDB server and its clients must agree on, and nothing else.
//!
//! - [`pb`]: the gRPC types generated from `proto/nanodb/v1` (the schema is the source of truth),
//!   plus the encoded descriptor set served through gRPC reflection.
//! - [`command`]: the protocol-neutral [`Command`]/[`Reply`] model every frontend decodes into, and
//!   the [`Limits`] that validate it.
//! - [`convert`]: `TryFrom` conversions from the [`pb`] request messages into [`Command`].
//! - [`error`]: the one [`Error`] enum with stable [`ErrorCode`]s, mapped once per protocol.
//! - [`frame`] and [`wire`]: the binary TCP protocol (`PROTOCOL.md`): frames, the tokio-util codecs
//!   for both ends, and the body layouts; [`watch`]: its change-feed frames (subscriptions and
//!   pushes).
//! - [`txn`] and [`script`]: the parts of transactions and Lua scripts.
//! - `tls_client` (feature `tls-client`): rustls for clients, a plain-or-TLS stream.
//!
//! No server policy, and without `tls-client` no sockets: a Rust client depends on this crate
//! alone.

pub mod command;
pub mod commands;
pub mod convert;
pub mod error;
pub mod frame;
pub mod script;
pub mod txn;
pub mod watch;
pub mod wire;

#[cfg(feature = "tls-client")]
pub mod tls_client;

/// The commands, declared once ([`commands`]), under a short name for call sites:
/// `Command::Get(cmd::Get { key })`.
pub use commands as cmd;

pub use command::{
    Class, Command, CommandName, Entry, Expiry, FromReply, KeyType, Keys, Limits, ListEnd, Pong,
    PutCondition, PutOutcome, Reply, ScanEntry, ScanPage, TypedCommand,
};
pub use error::{Denied, Error, ErrorCode};
pub use frame::{ClientCodec, Frame, FrameCodec, FrameError, ServerCodec};
pub use script::{ScriptSource, ScriptValue};
pub use txn::{Compare, CompareOp, CompareTarget, TxnOutcome};
pub use watch::{EventType, Push, Subscription};
pub use wire::{Request, Response};

/// Types generated from `proto/nanodb/v1/*.proto` by prost and tonic.
#[allow(missing_docs, clippy::all, clippy::pedantic, missing_debug_implementations, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("nanodb.v1");

    /// The encoded `FileDescriptorSet` of the whole API, with source comments, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nanodb_descriptor.bin"));
}
