//! Linearizable reads share their read index, as etcd's reads do.
//!
//! A linearizable read needs an index that the leader has confirmed, after the read arrived, to
//! be at least everything committed: openraft's `get_read_log_id` on the leader, which costs a
//! heartbeat round to a quorum, or one `READ_INDEX` call to the leader from a follower. Asked once
//! per read, 800 reads in flight meant 800 quorum rounds (and, on a follower, 800 calls), and
//! reads went slower than writes.
//!
//! Here one task per incarnation asks for the read index on behalf of every read waiting: the
//! reads that arrive while a round is in flight wait for the next round, which starts after they
//! arrived (a round that started before a read arrived could miss a write that completed just
//! before the read was sent, so it is never shared with it). Each read then waits, on its own,
//! until this node has applied the index. One round is in flight at a time: under load the
//! batches grow instead of the rounds multiplying.

use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::metrics::Counters;
use super::network::{Peers, kind};
use super::types::{NodeId, TypeConfig};

/// Reads waiting for the next round, at most (then a read waits for room).
pub(super) const MAX_WAITING: usize = 1 << 16;

/// A read waiting for a read index: `None` when the round could not get one (no leader, or the
/// leader did not answer); the read then looks for the leader again.
pub(super) type Waiter = oneshot::Sender<Option<u64>>;

/// The batching task of one incarnation: one read-index round at a time, shared by every read
/// that arrived before it started.
pub(super) async fn read_index_rounds(
    raft: Raft<TypeConfig>,
    peers: Peers,
    me: NodeId,
    mut reads: mpsc::Receiver<Waiter>,
    timeout: Duration,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            w = reads.recv() => match w { Some(w) => w, None => return },
        };
        batch.push(first);
        // Every read already waiting shares this round (they all arrived before it starts).
        while batch.len() < MAX_WAITING {
            let Ok(more) = reads.try_recv() else { break };
            batch.push(more);
        }
        let index = tokio::select! {
            () = stop.cancelled() => return,
            index = round(&raft, &peers, me, timeout) => index,
        };
        counters.read_index_round(batch.len());
        for waiter in batch.drain(..) {
            // The read may have given up (its deadline): nothing to tell.
            let _ = waiter.send(index);
        }
    }
}

/// One read-index round: the leader confirms its leadership with a quorum (openraft's read
/// log id); a follower asks the leader for that index.
async fn round(raft: &Raft<TypeConfig>, peers: &Peers, me: NodeId, timeout: Duration) -> Option<u64> {
    let leader = {
        let m = raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        (id, m.membership_config.membership().get_node(&id).map(|n| n.raft_addr.clone()))
    };
    match leader {
        (id, _) if id == me => {
            let asked = tokio::time::timeout(timeout, raft.get_read_log_id()).await;
            match asked {
                Ok(Ok((read, _applied))) => Some(read.map_or(0, |l| l.index)),
                _ => None,
            }
        }
        (_, Some(addr)) => match peers.get(&addr).call(kind::READ_INDEX, &[], timeout).await {
            Ok(b) => <[u8; 8]>::try_from(&b[..]).ok().map(u64::from_be_bytes),
            Err(_) => None,
        },
        (_, None) => None,
    }
}
