//! The binary TCP frontend's batches in cluster mode: a connection's consecutive pipelined writes
//! go to the cluster together ([`Context::submit`], then [`Context::settle`] before the first
//! request that is not a plain write, and before the replies are written), so that N writes in
//! flight cost about one Raft round rather than N; its reads share a read barrier. The order,
//! retry and read rules are `cluster::pipeline`'s.
//!
//! The requests already received are collected before any runs, so that a barrier taken for one
//! read holds for the reads collected with it (they had all arrived). Collecting stops after a
//! request that is not a command: an AUTH raises the frame limit for the frames after it, which
//! must be decoded under the new limit.

use std::net::SocketAddr;

use futures::{FutureExt, StreamExt};
use nanodb_protocol::{Error, FrameError, Request, Response, ServerCodec};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use super::watch::{Batch, Feed};
use super::{MAX_BATCH, respond};
use crate::auth::Caller;
use crate::cluster::pipeline::ReadBarrier;
use crate::frontend::Context;
use crate::frontend::pipeline::{Submitted, Writes};

/// How a batch ended.
pub(super) enum BatchEnd {
    /// Write the replies and read on.
    Open,
    /// The client is done sending: write the replies and close.
    Eof,
    /// The stream broke: write the replies, then report the error and close.
    Broken(FrameError),
}

/// A frame as the codec yields it.
pub(super) type Item = Result<(u32, Result<Request, Error>), FrameError>;

/// Runs `first` and every request already received after it (up to [`MAX_BATCH`] replies),
/// appending their replies to `out` in order; every write is settled when it returns.
pub(super) async fn run_batch<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Context,
    framed: &mut Framed<S, ServerCodec>,
    caller: &mut Caller,
    peer: SocketAddr,
    feed: &mut Feed,
    first: Item,
    out: &mut Batch,
) -> BatchEnd {
    let mut writes = Writes::default();
    // Where the held writes' replies go in `out`.
    let mut places: Vec<usize> = Vec::new();
    let mut next = Some(first);
    loop {
        let mut arrived = Vec::new();
        let mut end = None;
        while let Some(item) = next.take() {
            match item {
                Ok((id, request)) => {
                    let command = matches!(request, Ok(Request::Command(_)));
                    arrived.push((id, request));
                    if !command || out.len() + arrived.len() >= MAX_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    end = Some(BatchEnd::Broken(e));
                    break;
                }
            }
            match framed.next().now_or_never() {
                Some(Some(more)) => next = Some(more),
                Some(None) => end = Some(BatchEnd::Eof),
                None => {}
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
                        settle(ctx, &mut writes, &mut places, out, &mut barrier).await;
                        let (result, _) = ctx.run_after_writes(caller, cmd, &mut barrier).await;
                        out.push((id, Response::from(result), 0));
                        continue;
                    }
                },
                other => other,
            };
            settle(ctx, &mut writes, &mut places, out, &mut barrier).await;
            barrier.spent();
            let was = caller.is_authenticated();
            respond(ctx, caller, peer, feed, id, request, out).await;
            if !was && caller.is_authenticated() {
                framed.codec_mut().set_max_frame_len(ctx.config.max_frame_len);
            }
        }
        settle(ctx, &mut writes, &mut places, out, &mut barrier).await;
        if let Some(end) = end {
            return end;
        }
        if out.len() >= MAX_BATCH {
            return BatchEnd::Open;
        }
        match framed.next().now_or_never() {
            Some(Some(more)) => next = Some(more),
            Some(None) => return BatchEnd::Eof,
            None => return BatchEnd::Open,
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
