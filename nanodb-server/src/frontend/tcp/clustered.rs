//! The binary TCP frontend's batches in cluster mode: a connection's consecutive pipelined writes
//! go to the cluster together ([`Context::submit`], then [`Context::settle`] before the first
//! request that is not a plain write, and before the replies are written), so that N writes in
//! flight cost about one Raft round rather than N; its reads share a read barrier. The order,
//! retry and read rules are `cluster::pipeline`'s.
//!
//! The requests already received (the whole frames in the connection's read buffer) are
//! collected before any runs, so that a barrier taken for one read holds for the reads collected
//! with it (they had all arrived). Collecting stops after a
//! request that is not a command: an AUTH raises the frame limit for the frames after it, which
//! must be decoded under the new limit.

use std::net::SocketAddr;

use nanodb_protocol::{Error, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};

use super::watch::Feed;
use super::{Conn, MAX_BATCH, RoundEnd, respond};
use crate::auth::Caller;
use crate::cluster::pipeline::ReadBarrier;
use crate::frontend::Context;
use crate::frontend::pipeline::{Submitted, Writes};

/// Replies in request order, some still placeholders for held writes, before they are encoded.
type Batch = Vec<(u32, Response, u64)>;

/// Runs every request already received (up to [`MAX_BATCH`] replies), then encodes their replies
/// into the connection's output in order; every write is settled when it returns.
pub(super) async fn run_batch<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<'_, S>,
    caller: &mut Caller,
    peer: SocketAddr,
    feed: &mut Feed,
) -> RoundEnd {
    let ctx = conn.ctx;
    let mut out: Batch = Vec::new();
    let mut writes = Writes::default();
    // Where the held writes' replies go in `out`.
    let mut places: Vec<usize> = Vec::new();
    loop {
        let mut arrived = Vec::new();
        let mut end = None;
        loop {
            if conn.out.frames() + out.len() + arrived.len() >= MAX_BATCH {
                end = Some(RoundEnd::Full);
                break;
            }
            match conn.frames.next() {
                Ok(Some((id, request))) => {
                    let command = matches!(request, Ok(Request::Command(_)));
                    arrived.push((id, request));
                    if !command {
                        break;
                    }
                }
                Ok(None) => {
                    end = Some(RoundEnd::Ran);
                    break;
                }
                Err(e) => {
                    end = Some(RoundEnd::Broken(e));
                    break;
                }
            }
        }
        // Every request collected had arrived before any barrier taken below.
        let mut barrier = ReadBarrier::default();
        for (id, request) in arrived {
            let request = match request {
                Ok(Request::Command(cmd)) => match ctx.submit(&mut writes, caller, cmd) {
                    Submitted::Held => {
                        places.push(out.len());
                        out.push((id, Response::Error(Error::Internal), 0));
                        continue;
                    }
                    Submitted::Given(cmd) => {
                        settle(ctx, &mut writes, &mut places, &mut out, &mut barrier).await;
                        let (result, _) = ctx.run_after_writes(caller, cmd, &mut barrier).await;
                        out.push((id, Response::from(result), 0));
                        continue;
                    }
                },
                other => other,
            };
            settle(ctx, &mut writes, &mut places, &mut out, &mut barrier).await;
            barrier.spent();
            let was = caller.is_authenticated();
            respond(ctx, caller, peer, feed, id, request, &mut out).await;
            if !was && caller.is_authenticated() {
                conn.set_max_frame_len(ctx.config.max_frame_len);
            }
        }
        settle(ctx, &mut writes, &mut places, &mut out, &mut barrier).await;
        if let Some(end) = end {
            for (id, response, position) in out {
                conn.out.response(id, &response, position);
            }
            return end;
        }
    }
}

/// Settles the held writes and puts their replies in their places; the barrier no longer holds
/// once one applied.
async fn settle(
    ctx: &Context,
    writes: &mut Writes,
    places: &mut Vec<usize>,
    out: &mut Batch,
    barrier: &mut ReadBarrier,
) {
    if writes.is_empty() {
        return;
    }
    barrier.spent();
    for (place, outcome) in places.drain(..).zip(ctx.settle(writes).await) {
        if let Some((_, response, _)) = out.get_mut(place) {
            *response = Response::from(outcome.map(|(reply, _, _)| reply));
        }
    }
}
