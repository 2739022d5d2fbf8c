//! The open-loop schedule: against a server that stalls, an open-loop run keeps issuing at its
//! rate and the stall shows in the tail (latency from the intended send time), while a closed
//! loop hides it (coordinated omission).

use std::time::Duration;

use crate::{args, stubs};

const PAUSE: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_its_schedule_and_the_stall_shows_in_the_tail() {
    let (addr, _) = stubs::resp(Some(stubs::Stall { after: 100, pause: PAUSE })).await;
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "resp",
        "--concurrency",
        "1",
        "--duration",
        "1s",
        "--rate",
        "500",
        "--keyspace",
        "10",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!(s.errors, 0);
    // 500/s for 1 s: the schedule is kept through the stall
    assert!((440..=560).contains(&s.requests), "requests {}", s.requests);
    // ~150 requests were due during the 300 ms stall: 30% of the run waited up to 300 ms
    assert!(s.latency_us.p99 >= 200_000, "p99 {} µs should show the stall", s.latency_us.p99);
    assert!(s.latency_us.p90 >= 30_000, "p90 {} µs", s.latency_us.p90);
    assert!(s.latency_us.max >= 280_000 && s.latency_us.max < 2_000_000, "max {} µs", s.latency_us.max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_records_the_stall_once() {
    let (addr, _) = stubs::resp(Some(stubs::Stall { after: 100, pause: PAUSE })).await;
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "resp",
        "--concurrency",
        "1",
        "--duration",
        "1s",
        "--keyspace",
        "10",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    assert_eq!(s.errors, 0);
    assert!(s.latency_us.max >= 280_000, "the stalled request itself: max {} µs", s.latency_us.max);
    // one slow sample among thousands: the closed loop's p99 hides the stall
    assert!(s.requests > 500, "requests {}", s.requests);
    assert!(s.latency_us.p99 < 100_000, "p99 {} µs", s.latency_us.p99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_with_warmup_counts_only_the_measured_window() {
    let (addr, _) = stubs::resp(None).await;
    let a = args(&[
        "--target",
        &addr.to_string(),
        "--protocol",
        "resp",
        "--concurrency",
        "4",
        "--duration",
        "500ms",
        "--warmup",
        "300ms",
        "--rate",
        "2000",
    ]);
    let s = nano_bench::bench(&a, false).await.expect("bench runs");
    // 2000/s over 0.5 s = 1000, warm-up excluded
    assert!((900..=1100).contains(&s.requests), "requests {}", s.requests);
    assert!((s.ops_per_sec - 2000.0).abs() < 300.0, "ops/s {}", s.ops_per_sec);
}
