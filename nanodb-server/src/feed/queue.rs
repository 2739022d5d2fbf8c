//! A subscriber's bounded queue. Writers push into it with the key's shard lock held, so a push
//! never waits: when the queue is full (by count or by bytes) the delivery is dropped, the queue
//! is marked lagged, and every later delivery is dropped and counted until the subscriber reads
//! the [`Delivery::Lagged`] signal that follows what it already had.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::Gate;
use super::event::Delivery;

/// How large a queue may grow.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub len: usize,
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<(Delivery, usize)>,
    bytes: usize,
    /// Set on the first overflow; cleared only by [`Queue::reset`].
    lagged: bool,
    /// Deliveries dropped since the overflow.
    dropped: u64,
    /// The lagged signal was handed out; nothing more will be.
    signalled: bool,
}

/// One subscriber's queue; shared by the registry's entries (writers) and the subscriber (reader).
#[derive(Debug)]
pub(super) struct Queue {
    state: Mutex<State>,
    ready: Notify,
    bounds: Bounds,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Queued.
    Queued,
    /// Dropped, and this push is the overflow that made the queue lagged.
    Overflowed,
    /// Dropped; the queue was already lagged.
    Dropped,
    /// Ignored: the lagged signal was already handed out, so the subscriber is leaving and this
    /// delivery is in no count it was told (stats count only drops a subscriber can learn of).
    Closed,
}

impl Queue {
    pub(super) fn new(bounds: Bounds) -> Self {
        Self { state: Mutex::new(State::default()), ready: Notify::new(), bounds }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `d` unless that would exceed the bounds; never blocks beyond the queue's own lock.
    pub(super) fn push(&self, d: Delivery) -> Pushed {
        let size = d.footprint();
        let mut s = self.lock();
        if s.signalled {
            return Pushed::Closed;
        }
        if s.lagged {
            s.dropped += 1;
            return Pushed::Dropped;
        }
        let pushed = if s.items.len() >= self.bounds.len || s.bytes + size > self.bounds.bytes {
            s.lagged = true;
            s.dropped = 1;
            Pushed::Overflowed
        } else {
            s.items.push_back((d, size));
            s.bytes += size;
            Pushed::Queued
        };
        drop(s);
        // One stored permit at most: a reader that was not waiting finds it on its next wait.
        self.ready.notify_one();
        pushed
    }

    /// The next delivery if `gate` says its write is durable (or it has no log position), or the
    /// lagged signal once the queue has drained after an overflow.
    pub(super) fn try_pop(&self, gate: Option<&Gate>) -> Option<Delivery> {
        self.pop_or_block(gate).ok().flatten()
    }

    /// Like [`Queue::try_pop`], but says which log position blocks the head when one does.
    fn pop_or_block(&self, gate: Option<&Gate>) -> Result<Option<Delivery>, u64> {
        let mut s = self.lock();
        if let Some((d, _)) = s.items.front() {
            let position = d.position();
            if position > 0 && gate.is_some_and(|g| !g.is_durable(position)) {
                return Err(position);
            }
        }
        if let Some((d, size)) = s.items.pop_front() {
            s.bytes -= size;
            return Ok(Some(d));
        }
        if s.lagged && !s.signalled {
            s.signalled = true;
            return Ok(Some(Delivery::Lagged { dropped: s.dropped }));
        }
        Ok(None)
    }

    /// Waits for the next delivery. After the lagged signal nothing more comes: this waits forever,
    /// so readers stop at [`Delivery::Lagged`].
    /// A delivery whose write is not durable yet waits for it first.
    pub(super) async fn pop(&self, gate: Option<&Gate>) -> Delivery {
        loop {
            match self.pop_or_block(gate) {
                Ok(Some(d)) => return d,
                Ok(None) => self.ready.notified().await,
                Err(position) => {
                    if let Some(gate) = gate
                        && gate.wait_durable(position).await.is_err()
                    {
                        // The log failed: the write stays in memory and readable until a restart
                        // (reads return it too), so the event is shown rather than held forever.
                        let mut s = self.lock();
                        if let Some((d, size)) = s.items.pop_front() {
                            s.bytes -= size;
                            return d;
                        }
                    }
                }
            }
        }
    }

    /// Empties the queue and clears the lagged state (after the subscriber resynced).
    /// Deliveries waiting.
    pub(super) fn len(&self) -> usize {
        self.lock().items.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    fn msg(n: u8) -> Delivery {
        Delivery::Message { channel: Bytes::from_static(b"c"), payload: Bytes::from(vec![n]), pattern: None }
    }

    #[test]
    fn overflow_keeps_what_was_queued_then_signals_the_drop_count_once() {
        let q = Queue::new(Bounds { len: 2, bytes: usize::MAX });
        assert_eq!(q.push(msg(1)), Pushed::Queued);
        assert_eq!(q.push(msg(2)), Pushed::Queued);
        assert_eq!(q.push(msg(3)), Pushed::Overflowed);
        assert_eq!(q.push(msg(4)), Pushed::Dropped);
        // Space freed by reading does not resume delivery: the gap must be signalled first.
        assert_eq!(q.try_pop(None), Some(msg(1)));
        assert_eq!(q.push(msg(5)), Pushed::Dropped);
        assert_eq!(q.try_pop(None), Some(msg(2)));
        assert_eq!(q.try_pop(None), Some(Delivery::Lagged { dropped: 3 }));
        assert_eq!(q.try_pop(None), None);
        // After the signal the count is final: a writer racing the subscriber's removal adds
        // nothing the subscriber (or the feed's stats) would disagree on.
        assert_eq!(q.push(msg(6)), Pushed::Closed);
        assert_eq!(q.try_pop(None), None);
    }

    #[test]
    fn the_byte_budget_bounds_large_deliveries() {
        let q = Queue::new(Bounds { len: 1000, bytes: 200 });
        assert_eq!(q.push(msg(1)), Pushed::Queued);
        let big = Delivery::Message {
            channel: Bytes::from_static(b"c"),
            payload: Bytes::from(vec![0; 500]),
            pattern: None,
        };
        assert_eq!(q.push(big), Pushed::Overflowed);
        assert_eq!(q.len(), 1);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_push() {
        let q = Arc::new(Queue::new(Bounds { len: 8, bytes: usize::MAX }));
        let reader = tokio::spawn({
            let q = q.clone();
            async move { q.pop(None).await }
        });
        tokio::task::yield_now().await;
        q.push(msg(7));
        assert_eq!(reader.await.expect("succeeds"), msg(7));
    }
}
