//! NanoDB's integration suite: one test binary, one module per protocol. Every test starts its own
//! server in-process on `127.0.0.1:0` ports and talks to it with a real client over loopback.

mod auth;
mod cluster;
mod crash;
mod cross;
mod grpc;
mod harness;
mod http;
mod log_failure;
mod loops;
mod memory;
mod persist;
mod resp;
mod resp_pubsub;
mod scripts;
mod scripts_rpc;
mod tcp;
mod tls;
mod tokens;
mod txn;
mod watch_cross;
mod watch_grpc;
mod watch_http;
mod watch_tcp;
mod wrong_port;
