//! What a process holds, read from outside: resident memory and threads from
//! `/proc/<pid>/status`, open files from `/proc/<pid>/fd`, and a node's own gauges from its
//! `/metrics`. Leak checks compare these before and after a load.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::client;

/// A process's resources at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    /// `VmRSS`, in bytes.
    pub rss_bytes: u64,
    /// Entries of `/proc/<pid>/fd`: sockets, pipes, files, epoll and event fds.
    pub fds: usize,
    pub threads: usize,
}

impl ProcStats {
    pub fn rss_mib(&self) -> f64 {
        self.rss_bytes as f64 / (1024.0 * 1024.0)
    }
}

impl fmt::Display for ProcStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RSS {:.1} MiB, {} fds, {} threads",
            self.rss_mib(),
            self.fds,
            self.threads
        )
    }
}

/// The resources of process `pid` now; panics if it is gone.
pub fn of(pid: u32) -> ProcStats {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("read /proc/{pid}/status: {error}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|error| panic!("list /proc/{pid}/fd: {error}"))
        .count();
    ProcStats {
        rss_bytes: field("VmRSS") * 1024,
        fds,
        threads: usize::try_from(field("Threads")).expect("a thread count fits"),
    }
}

/// The TCP connections (local, remote) among process `pid`'s open files, IPv4 only (every
/// test socket is on 127.0.0.1): a count of files says something leaks, this says what.
pub fn tcp_connections(pid: u32) -> Vec<(SocketAddr, SocketAddr)> {
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_str()?.to_owned();
                    target
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = fields.get(9)?.parse().ok()?;
            // Listening sockets have no peer; only connections are of interest.
            if !inodes.contains(&inode) || *fields.get(3)? == "0A" {
                return None;
            }
            Some((hex_address(fields.get(1)?)?, hex_address(fields.get(2)?)?))
        })
        .collect()
}

/// `0100007F:1F90` (address in host order, as the kernel prints it; port big-endian).
fn hex_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let address = u32::from_str_radix(address, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::from((address.to_le_bytes(), port)))
}

/// Sum of the samples of series `name` (any labels) in Prometheus or OpenMetrics text.
pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    let samples: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// Series `name` from the `/metrics` of the admin port at `admin`.
pub async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let url = format!("http://{admin}/metrics");
    let response = client::try_request(http::Method::GET, &url, &[], "")
        .await
        .ok()?;
    if response.status != 200 {
        return None;
    }
    parse_metric(&response.text(), name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_labels_and_matched_by_whole_name() {
        let text = "# TYPE gatehouse_cached_sessions gauge\n\
                    gatehouse_cached_sessions 200\n\
                    gatehouse_cached_sessions_other 5\n\
                    gatehouse_requests_total{status=\"200\"} 3\n\
                    gatehouse_requests_total{status=\"401\"} 4\n";
        assert_eq!(parse_metric(text, "gatehouse_cached_sessions"), Some(200.0));
        assert_eq!(parse_metric(text, "gatehouse_requests_total"), Some(7.0));
        assert_eq!(parse_metric(text, "gatehouse_runtime_tasks"), None);
    }

    #[test]
    fn kernel_socket_addresses_are_decoded() {
        assert_eq!(
            hex_address("0100007F:1F90"),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert_eq!(hex_address("garbage"), None);
    }

    #[test]
    fn this_process_has_memory_files_and_threads() {
        let stats = of(std::process::id());
        assert!(stats.rss_bytes > 0 && stats.fds > 0 && stats.threads > 0);
    }
}
