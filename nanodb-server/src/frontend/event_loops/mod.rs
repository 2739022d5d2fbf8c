//! Event loops of their own for a frontend's connections: single-worker runtimes, each serving
//! its share of the connections (round robin), as Redis serves every client from one event loop.
//! RESP (`--resp-threads`), binary TCP (`--tcp-threads`), gRPC (`--grpc-threads`) and REST
//! (`--http-threads`) each start their own set, named after them (`nanodb-resp-0`,
//! `nanodb-tcp-0`, ...); 0 loops serves that frontend on the server's shared runtime instead.
//!
//! Why not the server's multi-threaded runtime: with one request in flight per connection
//! (redis-benchmark or nano-bench `-P 1`), its workers wake each other to steal every few
//! requests, and replies leave a few at a time, so the client wakes up for every few replies; a
//! worker descheduled for a kernel tick while it holds ready connections shows as a 4-5 ms p99.9.
//! One loop runs every connection that is ready, lets each finish its batch (yielding once before
//! it writes: see [`after_queued_tasks`]), so that log records are written once per round and
//! replies leave together, as Redis does in its `beforeSleep`. Each loop polls for a moment before
//! it sleeps (see [`idle_poll`]).
//!
//! The loops are multi-thread runtimes of one worker, not current-thread runtimes: a command that
//! blocks (a script running past 1 ms, a synchronous caller in a cluster) uses `block_in_place`
//! to hand the loop's other connections to another thread, which only a multi-thread runtime
//! allows.
//!
//! A socket accepted on the server's runtime is registered with that runtime's reactor; it is
//! moved to the loop's reactor ([`EventLoops::spawn_socket`]) so that its readiness wakes the
//! loop directly, not a worker of the shared runtime.

pub mod idle_poll;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

/// A frontend's event loops and the connections running on them.
#[derive(Debug)]
pub struct EventLoops {
    runtimes: Vec<tokio::runtime::Runtime>,
    next: AtomicU64,
    /// Everything spawned on the loops: [`EventLoops::stop`] waits for it before the loops end.
    tasks: TaskTracker,
}

impl EventLoops {
    /// `n` loops for `frontend` (its threads are named `nanodb-{frontend}-{i}`), each polling for
    /// at most `idle_poll` after its latest batch (0: never). With `n` 0 there are no loops: the
    /// frontend serves its connections on the server's runtime ([`EventLoops::active`] is `None`).
    pub fn start(frontend: &str, n: usize, idle_poll: Duration) -> std::io::Result<Self> {
        let runtimes = (0..n)
            .map(|i| {
                // Sockets and timers only: no signal driver, whose orphan-process check would
                // run on every turn of the loop.
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("nanodb-{frontend}-{i}"))
                    .enable_io()
                    .enable_time()
                    .build()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        if !idle_poll.is_zero() {
            for rt in &runtimes {
                rt.spawn(idle_poll::run(idle_poll));
            }
        }
        Ok(Self { runtimes, next: AtomicU64::new(0), tasks: TaskTracker::new() })
    }

    /// The loops, unless there are none (the frontend then runs on the server's runtime).
    pub fn active(&self) -> Option<&Self> {
        (!self.runtimes.is_empty()).then_some(self)
    }

    /// How many loops there are.
    pub fn len(&self) -> usize {
        self.runtimes.len()
    }

    /// Whether there are no loops.
    pub fn is_empty(&self) -> bool {
        self.runtimes.is_empty()
    }

    /// The loop the next connection goes to (round robin), as an index for
    /// [`EventLoops::spawn_on`]. Panics without loops: callers check [`EventLoops::active`] first.
    pub fn next(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) as usize % self.runtimes.len()
    }

    /// Runs `task` on loop `i` (from [`EventLoops::next`]), tracked: [`EventLoops::stop`] waits
    /// for it.
    pub fn spawn_on<F>(&self, i: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn_on(task, self.runtimes[i % self.runtimes.len()].handle());
    }

    /// The tracker of what runs on the loops, for work a connection hands off to a task of its
    /// own (an upgraded WebSocket): a token taken from it keeps the loops up until it is dropped.
    pub fn tracker(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// Runs `serve` on loop `i` for a socket accepted elsewhere, after moving the socket to that
    /// loop's reactor. A socket that cannot be moved (out of memory for the registration) is
    /// closed, with a line at debug level.
    pub fn spawn_socket<F, Fut>(
        &self,
        i: usize,
        name: &'static str,
        stream: TcpStream,
        peer: SocketAddr,
        serve: F,
    ) where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "{name}: cannot move the connection to its event loop; closed");
                return;
            }
        };
        self.spawn_on(i, async move {
            // On the loop's thread: the socket registers with the loop's reactor.
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "{name}: cannot register the connection with its event loop; closed")
                }
            }
        });
    }

    /// Stops taking tasks, waits until every task spawned on the loops has ended (connections
    /// drain after the listener stops, and the loops must outlive them), then ends the loops.
    pub async fn stop(self) {
        self.tasks.close();
        self.tasks.wait().await;
        drop(self);
    }
}

/// Dropping a runtime blocks until its blocking pool is done, which panics when the drop happens
/// inside a runtime: so do not. Besides [`EventLoops::stop`], the loops are dropped here when the
/// server's runtime shuts down while the frontend still runs (no
/// [`crate::server::Server::shutdown`], as in a test that panicked, or one whose grace period ran
/// out): the runtime drops the frontend's future on one of its own threads.
impl Drop for EventLoops {
    fn drop(&mut self) {
        for rt in self.runtimes.drain(..) {
            rt.shutdown_background();
        }
    }
}

/// Lets every task already queued on this loop run before this one goes on, without letting the
/// loop check its sockets in between. The task wakes itself, and tokio puts a task woken while it
/// runs at the back of the run queue. `tokio::task::yield_now` instead holds the task back until
/// after the loop's next check of its sockets: connections that became ready meanwhile would run
/// their batches first, and this connection's replies would wait for them. Measured on RESP with
/// `TESTS="SET:16 GET:16" ROUNDS=9 scripts/ab-pairs.sh redis target/release/nanodb-server`: GET
/// `-P 16` p99 went from 1.335 ms (Redis 1.319) to 0.959 ms (Redis 1.271).
pub async fn after_queued_tasks() {
    let mut queued = false;
    std::future::poll_fn(|cx| {
        if queued {
            return std::task::Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// A connection that has run its batch writes before any connection that became ready in the
    /// meantime runs: the socket made readable here is not served until the yielding task has
    /// gone on. With `tokio::task::yield_now` the socket is served between the two. (Tokio also
    /// checks sockets every 61 task polls however full the queue; this test polls far fewer.)
    #[test]
    fn yielding_in_turn_goes_on_before_newly_ready_sockets_are_served() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let order = rt.block_on(async {
            tokio::spawn(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let mut client =
                    TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
                let (mut server, _) = listener.accept().await.expect("accept");
                let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
                let reader = {
                    let order = order.clone();
                    tokio::spawn(async move {
                        let mut byte = [0u8; 1];
                        server.read_exact(&mut byte).await.expect("read");
                        order.lock().expect("order").push("served the newly ready socket");
                    })
                };
                // Let the reader reach its read and wait for the socket.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                client.write_all(b"x").await.expect("write");
                // Two connections that ran their batches yield, as a round's connections do.
                let other = {
                    let order = order.clone();
                    tokio::spawn(async move {
                        after_queued_tasks().await;
                        order.lock().expect("order").push("went on");
                    })
                };
                after_queued_tasks().await;
                order.lock().expect("order").push("went on");
                other.await.expect("other");
                reader.await.expect("reader");
                order.lock().expect("order").clone()
            })
            .await
            .expect("test task")
        });
        assert_eq!(order, ["went on", "went on", "served the newly ready socket"]);
    }

    /// Connections spawned on the loops run on threads named after the frontend, round robin,
    /// and `stop` waits for them to end before it ends the loops.
    #[test]
    fn connections_run_round_robin_on_named_loops_and_stop_waits_for_them() {
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
        rt.block_on(async {
            let loops = EventLoops::start("test", 2, Duration::from_micros(50)).expect("loops");
            assert!(loops.active().is_some());
            assert_eq!(loops.len(), 2);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for _ in 0..4 {
                let tx = tx.clone();
                loops.spawn_on(loops.next(), async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let name = std::thread::current().name().map(str::to_owned);
                    let _ = tx.send(name);
                });
            }
            drop(tx);
            loops.stop().await;
            let mut names = Vec::new();
            while let Ok(name) = rx.try_recv() {
                names.push(name.expect("named thread"));
            }
            names.sort();
            assert_eq!(names, ["nanodb-test-0", "nanodb-test-0", "nanodb-test-1", "nanodb-test-1"]);
            let none = EventLoops::start("test", 0, Duration::ZERO).expect("no loops");
            assert!(none.active().is_none(), "0 loops: the server's runtime serves");
        });
    }
}
