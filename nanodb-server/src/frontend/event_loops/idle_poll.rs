//! Adaptive busy polling for a frontend's event loop (see [`super`]). After its connections have
//! run a batch, the loop keeps checking for ready sockets (a non-blocking `epoll_wait`) for a
//! short window before it goes to sleep in a blocking one. KVM does the same before it halts a vCPU (`halt_poll_ns`),
//! and Seastar before its reactor sleeps (`--idle-poll-time-us`).
//!
//! Why: when each connection has one request in flight (redis-benchmark `-P 1`, and most
//! application clients), a loop that sleeps whenever it runs out of work sleeps every few
//! requests. Then the client's next `send` has to wake it: over loopback the kernel delivers the
//! segment inside the sender's system call, so the client pays for a scheduler wake-up, often
//! with a cross-CPU interrupt. A loop that keeps polling across those gaps of a few microseconds
//! never needs waking. Measured around `redis-benchmark -t set -c 50 -n 200000 -P 1 -r 100000
//! -d 64`: the loop thread's `voluntary_ctxt_switches` (`/proc/PID/task/TID/status`) fall from
//! about 6,500 to about 200; `scripts/ab-pairs.sh OLD NEW` (15 alternated pairs) gave SET and GET
//! `-P 1` 1.05x and 1.06x, the new build ahead in every pair. To see it on one build:
//! `B_ENV=NANODB_RESP_IDLE_POLL_US=0 scripts/ab-pairs.sh BIN BIN`.
//!
//! The window adapts the way KVM's does, so that sparse traffic costs nothing:
//! - The loop slept, and work came back within its maximum (`--resp-idle-poll-us`,
//!   `--tcp-idle-poll-us`, ...): polling longer would have caught it, so the window doubles
//!   (starting at 10 µs, never above that maximum).
//! - The loop slept longer than the maximum: polling was wasted, so the window halves, and drops
//!   to 0 below 10 µs.
//!
//! An idle server does not poll at all. A loaded one keeps its core busy between requests, which
//! is the price of the lower latency. `--resp-idle-poll-us 0` (and its equivalents for the
//! other frontends) turns polling off.
//!
//! Connections report work through [`note_work`], which touches a counter in the loop thread's
//! own storage. Every connection of a loop runs on that loop's single thread, and so does its
//! poller, so no atomics are needed.

use std::cell::{Cell, RefCell};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

thread_local! {
    /// Batches run by connections on this thread.
    static WORK: Cell<u64> = const { Cell::new(0) };
    /// This thread's poller while it sleeps, woken by the next batch.
    static PARKED: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

/// Where a growing window starts, and under which a shrinking one drops to 0.
const START: Duration = Duration::from_micros(10);

/// Records that a connection on this thread ran a batch of commands (or, for hyper's
/// connections, read some bytes). It bumps a thread-local counter, and wakes the poller only if
/// the poller is asleep. On a thread without a poller (a frontend on the shared runtime) the call
/// does nothing anyone reads.
pub fn note_work() {
    WORK.with(|w| w.set(w.get().wrapping_add(1)));
    if let Some(waker) = PARKED.with(|p| p.borrow_mut().take()) {
        waker.wake();
    }
}

fn work() -> u64 {
    WORK.with(Cell::get)
}

/// Sleeps until a connection on this thread runs a batch after the `seen`th.
async fn work_after(seen: u64) {
    std::future::poll_fn(|cx| {
        if work() != seen {
            return Poll::Ready(());
        }
        PARKED.with(|p| *p.borrow_mut() = Some(cx.waker().clone()));
        Poll::Pending
    })
    .await;
}

/// How long the loop polls after its latest batch before it sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    current: Duration,
    max: Duration,
}

impl Window {
    /// A window that starts closed and never opens beyond `max`.
    pub fn new(max: Duration) -> Self {
        Self { current: Duration::ZERO, max }
    }

    /// The current window.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Adapts the window after the loop slept, `idle` being the time from its latest batch
    /// until the batch that woke it.
    pub fn slept(&mut self, idle: Duration) {
        self.current = if idle <= self.max {
            (self.current * 2).max(START).min(self.max)
        } else if self.current / 2 < START {
            Duration::ZERO
        } else {
            self.current / 2
        };
    }
}

/// Polls the loop this runs on for as long as it lives: for the window after each batch, then it
/// sleeps until the next batch. Spawned once per event loop.
pub async fn run(max: Duration) {
    let mut window = Window::new(max);
    let mut seen = work();
    let mut latest = Instant::now();
    loop {
        // Each yield lets the loop check its sockets without blocking, run what became ready,
        // and then come back here.
        while !window.current().is_zero() {
            tokio::task::yield_now().await;
            let now = Instant::now();
            if work() != seen {
                seen = work();
                latest = now;
            } else if now.duration_since(latest) >= window.current() {
                break;
            }
        }
        work_after(seen).await;
        let now = Instant::now();
        window.slept(now.duration_since(latest));
        seen = work();
        latest = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);

    #[test]
    fn the_window_opens_while_work_comes_back_within_the_maximum() {
        let mut w = Window::new(MAX);
        assert_eq!(w.current(), Duration::ZERO, "a new loop does not poll");
        let mut seen = Vec::new();
        for _ in 0..5 {
            w.slept(Duration::from_micros(30));
            seen.push(w.current().as_micros());
        }
        assert_eq!(seen, [10, 20, 40, 50, 50], "doubles from 10 µs, capped at the maximum");
        w.slept(MAX);
        assert_eq!(w.current(), MAX, "a gap of exactly the maximum still counts as short");
    }

    #[test]
    fn the_window_closes_when_the_loop_sleeps_longer_than_the_maximum() {
        let mut w = Window::new(MAX);
        for _ in 0..4 {
            w.slept(Duration::from_micros(1));
        }
        assert_eq!(w.current(), MAX);
        let mut seen = Vec::new();
        for _ in 0..4 {
            w.slept(Duration::from_millis(5));
            seen.push(w.current().as_micros());
        }
        assert_eq!(seen, [25, 12, 0, 0], "halves, and closes under 10 µs");
    }

    #[test]
    fn a_zero_maximum_never_opens_the_window() {
        let mut w = Window::new(Duration::ZERO);
        for idle in [0, 1, 100, 10_000] {
            w.slept(Duration::from_micros(idle));
            assert_eq!(w.current(), Duration::ZERO);
        }
    }

    /// The property that makes polling safe to leave on: once work stops, the poller goes to
    /// sleep (a sleeping poller costs nothing), and after new work wakes it, it sleeps again.
    #[test]
    fn the_poller_sleeps_once_work_stops_and_again_after_new_work() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            // Everything touching the loop's thread-local state runs as a task, on its thread.
            tokio::spawn(run(MAX));
            let asleep = || async {
                let parked = || async {
                    tokio::spawn(async { PARKED.with(|p| p.borrow().is_some()) }).await.expect("probe")
                };
                let wait = async {
                    while !parked().await {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                };
                tokio::time::timeout(Duration::from_secs(10), wait).await.is_ok()
            };
            for round in 0..3 {
                // A burst of short gaps opens the window.
                for _ in 0..100 {
                    tokio::spawn(async { note_work() }).await.expect("work");
                    tokio::task::yield_now().await;
                }
                assert!(asleep().await, "round {round}: the poller went to sleep after the work stopped");
            }
        });
    }
}
