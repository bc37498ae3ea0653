//! What a process holds, read from outside: resident memory and threads from
//! `/proc/<pid>/status`, CPU time from `/proc/<pid>/stat`, open files and TCP connections
//! from `/proc/<pid>/fd`, and a node's own gauges from its `/metrics`. Leak checks compare
//! these before and after a load; the benchmarks report them.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::http_client::get_once;

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

/// The resources of process `pid` now; an error if it is gone.
pub fn of(pid: u32) -> Result<ProcStats> {
    let status = read_status(pid)?;
    let field = |name: &str| {
        status_field(&status, name).with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("list /proc/{pid}/fd"))?
        .count();
    Ok(ProcStats {
        rss_bytes: field("VmRSS")? * 1024,
        fds,
        threads: usize::try_from(field("Threads")?)?,
    })
}

/// Resident set size of process `pid` now (`VmRSS`), in bytes.
pub fn rss_of(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// Peak resident set size of process `pid` since it started (`VmHWM`), in bytes.
pub fn peak_rss_of(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmHWM")
}

/// CPU time (user + system) process `pid` used so far, in seconds.
pub fn cpu_seconds_of(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    parse_cpu_seconds(&stat).with_context(|| format!("no CPU times for process {pid}"))
}

/// Time process `pid`'s threads have spent on a CPU so far, to the nanosecond: the first field
/// of each `/proc/<pid>/task/<tid>/schedstat`. `/proc/<pid>/stat` counts in clock ticks
/// (10 ms), too coarse for what one event costs a process. Threads that ended are not
/// counted, so compare readings of processes whose threads live on (tokio workers do).
pub fn cpu_time_of(pid: u32) -> Result<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("list /proc/{pid}/task"))?;
    let mut nanos: u64 = 0;
    for task in tasks {
        let path = task?.path().join("schedstat");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        nanos +=
            parse_schedstat(&text).with_context(|| format!("no run time in {}", path.display()))?;
    }
    Ok(Duration::from_nanos(nanos))
}

/// Nanoseconds on a CPU, the first of `schedstat`'s three fields.
fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second of `/proc/PID/stat` times: 100 on every Linux build that matters
/// here (reading `sysconf(_SC_CLK_TCK)` would need unsafe code).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// `utime + stime` from `/proc/PID/stat`, in seconds. The fields are counted after the
/// command name's closing parenthesis, since the name itself may hold spaces.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3 of the line; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / CLOCK_TICKS_PER_SECOND)
}

fn read_status(pid: u32) -> Result<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))
}

/// A `kB` field of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    parse_status_field(&read_status(pid)?, field)
        .with_context(|| format!("no {field} for process {pid}"))
}

/// A `kB` field of `/proc/PID/status` text, in bytes.
fn parse_status_field(status: &str, field: &str) -> Option<u64> {
    Some(status_field(status, field)? * 1024)
}

/// The first number after `field:` in `/proc/PID/status` text.
fn status_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Inodes of the sockets among process `pid`'s open files.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
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
        .unwrap_or_default()
}

/// The rows of `/proc/<pid>/net/<table>` (`tcp` or `tcp6`) for process `pid`'s own
/// sockets, split in fields (1: local address, 2: remote address, 3: state).
fn own_sockets(pid: u32, table: &str) -> Vec<Vec<String>> {
    let inodes = socket_inodes(pid);
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|fields| {
            fields
                .get(9)
                .and_then(|inode| inode.parse().ok())
                .is_some_and(|inode: u64| inodes.contains(&inode))
        })
        .collect()
}

/// Kernel state of a listening socket in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// The TCP ports process `pid` listens on, over IPv4 or IPv6 (a server listening on `[::]`,
/// as Caddy does, serves 127.0.0.1 too).
pub fn listening_ports(pid: u32) -> HashSet<u16> {
    ["tcp", "tcp6"]
        .iter()
        .flat_map(|table| own_sockets(pid, table))
        .filter(|fields| fields.get(3).is_some_and(|state| state == LISTEN))
        .filter_map(|fields| {
            let (_, port) = fields.get(1)?.rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

/// The TCP connections (local, remote) among process `pid`'s open files, IPv4 only (every
/// test socket is on 127.0.0.1): a count of files says something leaks, this says what.
pub fn tcp_connections(pid: u32) -> Vec<(SocketAddr, SocketAddr)> {
    own_sockets(pid, "tcp")
        .iter()
        // Listening sockets have no peer; only connections are of interest.
        .filter(|fields| fields.get(3).is_some_and(|state| state != LISTEN))
        .filter_map(|fields| Some((hex_address(fields.get(1)?)?, hex_address(fields.get(2)?)?)))
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

/// Series `name` (summed over its labels) from the `/metrics` of the admin port at `admin`.
pub async fn metric(admin: SocketAddr, name: &str) -> Result<f64> {
    let (status, body) = get_once(admin, "/metrics").await?;
    if !status.is_success() {
        bail!("{admin}/metrics answered {status}");
    }
    let text = String::from_utf8_lossy(&body);
    parse_metric(&text, name).with_context(|| format!("no metric {name} at {admin}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn status_fields_in_bytes() {
        let status = "Name:\tdata-plane\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_field(status, "VmRSS"), Some(10 * 1024 * 1024));
        assert_eq!(parse_status_field(status, "VmHWM"), Some(20 * 1024 * 1024));
        assert_eq!(parse_status_field(status, "VmSwap"), None);
    }

    #[test]
    fn cpu_times_after_the_command_name() {
        let stat = "42 (data plane) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

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
        assert_eq!(parse_metric(text, "gatehouse_open_websockets"), None);
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
    fn the_ports_a_process_listens_on_are_its_own() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening_ports(std::process::id()).contains(&port));
        drop(listener);
        assert!(!listening_ports(std::process::id()).contains(&port));
        // A listener on every IPv6 address (Caddy's) is found in the other table.
        if let Ok(listener) = std::net::TcpListener::bind("[::]:0") {
            let port = listener.local_addr().unwrap().port();
            assert!(listening_ports(std::process::id()).contains(&port));
        }
    }

    #[test]
    fn schedstat_run_time_is_its_first_field() {
        assert_eq!(parse_schedstat("123456789 4321 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
    }

    #[test]
    fn a_busy_process_cpu_time_grows() {
        // A child of its own: the test binary's threads come and go, and an ended thread's
        // time leaves the sum.
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let before = cpu_time_of(busy.id()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let after = cpu_time_of(busy.id()).unwrap();
        busy.kill().unwrap();
        busy.wait().unwrap();
        assert!(after > before, "{before:?} then {after:?}");
    }

    #[test]
    fn this_process_has_memory_files_and_threads() {
        let stats = of(std::process::id()).unwrap();
        assert!(stats.rss_bytes > 0 && stats.fds > 0 && stats.threads > 0);
    }
}
