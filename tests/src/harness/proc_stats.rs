//! Leak checks over what a process holds (the kit's `/proc` and `/metrics` readings): waiting
//! for a load to drain, and printing latency percentiles.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use gatehouse_testkit::proc_stats::{ProcStats, tcp_connections};

/// Series `name` from the `/metrics` of the admin port at `admin`; `None` when the port does
/// not answer or has no such series.
pub async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    gatehouse_testkit::proc_stats::metric(admin, name)
        .await
        .ok()
}

/// Polls `sample` until `settled` holds for it, or `deadline` passes; returns the last
/// sample and whether it settled. Leak checks wait this way for a load to drain (closing
/// sockets, ending tasks) rather than sleeping a fixed time.
pub async fn settle<T, F, Fut>(
    deadline: Duration,
    mut sample: F,
    settled: impl Fn(&T) -> bool,
) -> (T, bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let started = Instant::now();
    loop {
        let value = sample().await;
        if settled(&value) {
            return (value, true);
        }
        if started.elapsed() >= deadline {
            return (value, false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Percentiles of latencies, for printing (never asserted).
pub fn percentiles(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".to_owned();
    }
    samples.sort_unstable();
    let at = |fraction: f64| {
        let index = ((samples.len() - 1) as f64 * fraction).round() as usize;
        samples[index].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}
