//! `logins`: ticket logins per second through the control plane on Redis, against what the
//! same Redis serves to `redis-benchmark`, and the control plane's RSS under that load.
//!
//! A login here is what a browser's ticket login costs the control plane: `RequestTicket`
//! from the authentication module, then `RedeemTicket` from the node the browser comes back
//! to. N clients loop over that for a fixed time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use gatehouse_proto::v1::authentication_service_client::AuthenticationServiceClient;
use gatehouse_proto::v1::{RedeemTicketRequest, RequestTicketRequest};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::grpc::{self, NodeClient};
use gatehouse_testkit::proc_stats;
use gatehouse_testkit::{Process, RedisServer};

use crate::processes::{self, Store};
use crate::stats::{Table, mib};

#[derive(Debug, Args)]
pub struct LoginsArgs {
    /// Concurrent clients, each looping RequestTicket then RedeemTicket [default: 32; smoke 4]
    #[arg(long)]
    clients: Option<usize>,
    /// Seconds of load [default: 45; smoke 2]
    #[arg(long)]
    seconds: Option<u64>,
    /// Logins replayed one by one under MONITOR to see which commands a login sends
    /// [default: 200; smoke 10]
    #[arg(long)]
    calibration_logins: Option<u64>,
    /// Requests per redis-benchmark run [default: 300000; smoke 5000]
    #[arg(long)]
    benchmark_requests: Option<u64>,
}

/// Every login gets a user of its own.
static NEXT_USER: AtomicU64 = AtomicU64::new(0);

pub async fn run(bin_dir: &Path, smoke: bool, args: &LoginsArgs) -> Result<Table> {
    let clients = args.clients.unwrap_or(if smoke { 4 } else { 32 });
    let seconds = args.seconds.unwrap_or(if smoke { 2 } else { 45 });
    let calibration = args
        .calibration_logins
        .unwrap_or(if smoke { 10 } else { 200 });
    let benchmark_requests = args
        .benchmark_requests
        .unwrap_or(if smoke { 5_000 } else { 300_000 });

    let redis = RedisServer::start().await?;
    let redis_process = redis.process().context("redis-server is running")?;
    let secret = processes::node_secret()?;
    // No request is proxied here: the virtual proxy's upstream is never contacted.
    let upstream = "127.0.0.1:9".parse()?;
    let control_plane =
        processes::control_plane(bin_dir, &Store::Redis(redis.url()), upstream, &secret).await?;
    let endpoint = control_plane.endpoint();
    let mut pairs = Vec::with_capacity(clients);
    for _ in 0..clients {
        // One connection as the authentication module, one as a node: the two callers of a
        // real login are different processes.
        let auth = AuthenticationServiceClient::new(grpc::channel(&endpoint).await?);
        let node = grpc::node_client(grpc::channel(&endpoint).await?, &secret)?;
        pairs.push((auth, node));
    }
    // Warm-up: connections, script loading, the first allocation of everything.
    for (auth, node) in &mut pairs {
        login(auth, node).await?;
    }

    let mut redis_connection = redis.connection().await?;
    let rss_idle = control_plane.process.rss()?;
    let before = command_stats(&mut redis_connection).await?;
    let driver = std::process::id();
    let cpu_before = (
        control_plane.process.cpu_seconds()?,
        redis_process.cpu_seconds()?,
        proc_stats::cpu_seconds_of(driver)?,
    );
    eprintln!("logins: {clients} clients for {seconds} s");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let sampler = RssSampler::start(&control_plane.process);
    let mut tasks = Vec::with_capacity(clients);
    for (mut auth, mut node) in pairs {
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                login(&mut auth, &mut node).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut logins = 0;
    for task in tasks {
        logins += task.await.context("login client panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_peak = sampler.stop().await?;
    let rss_high_water = control_plane.process.peak_rss()?;
    let after = command_stats(&mut redis_connection).await?;
    let cpu = (
        (control_plane.process.cpu_seconds()? - cpu_before.0) / elapsed,
        (redis_process.cpu_seconds()? - cpu_before.1) / elapsed,
        (proc_stats::cpu_seconds_of(driver)? - cpu_before.2) / elapsed,
    );
    if logins == 0 {
        bail!("no login completed");
    }
    let per_second = logins as f64 / elapsed;
    let commands_total: u64 = after
        .iter()
        .map(|(name, calls)| calls.saturating_sub(before.get(name).copied().unwrap_or(0)))
        .sum();
    let commands_per_login = commands_total as f64 / logins as f64;
    eprintln!("logins: {logins} in {elapsed:.1} s; calibrating under MONITOR");

    let mut auth = AuthenticationServiceClient::new(grpc::channel(&endpoint).await?);
    let mut node = grpc::node_client(grpc::channel(&endpoint).await?, &secret)?;
    let monitored = monitor_logins(redis.port(), calibration, &mut auth, &mut node).await?;
    let requests_per_login = monitored.requests() as f64 / calibration as f64;
    let scripted_per_login = monitored.scripted as f64 / calibration as f64;

    eprintln!("logins: redis-benchmark, {clients} clients, no pipelining");
    let script_sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 1")
        .query_async(&mut redis_connection)
        .await?;
    let evalsha_ops = redis_benchmark(
        redis.port(),
        clients,
        benchmark_requests,
        &["EVALSHA", &script_sha, "0"],
    )
    .await?;
    // A value the size of a session handle, as the token pointer holds.
    let set_ops = redis_benchmark(
        redis.port(),
        clients,
        benchmark_requests,
        &["SET", "bench:__rand_int__", &"h".repeat(48)],
    )
    .await?;

    // Redis serves one command at a time, so a login's share of its capacity is the sum of
    // its requests' costs. A script call is priced as a trivial EVALSHA and every plain
    // command (SET, GET, DEL, HSET, ...) as a SET: on loopback a plain single-key command
    // costs its read, parse and reply, which SET measures; what scripts do inside comes on
    // top. So the limit below is optimistic (an upper bound) and the ratio conservative.
    let seconds_per_login: f64 = monitored
        .requests_by_command
        .iter()
        .map(|(command, &count)| {
            let ops = if is_script_call(command) {
                evalsha_ops
            } else {
                set_ops
            };
            count as f64 / calibration as f64 / ops
        })
        .sum();
    if seconds_per_login <= 0.0 {
        bail!("MONITOR saw no Redis request during {calibration} logins");
    }
    let limit = 1.0 / seconds_per_login;
    let ratio = per_second / limit;

    let breakdown = |counts: &BTreeMap<String, u64>| {
        counts
            .iter()
            .map(|(command, count)| format!("{command} {:.2}", *count as f64 / calibration as f64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut table = Table::new(&["logins (Redis store)", "value"]);
    let mut row = |name: &str, value: String| table.row(vec![name.to_owned(), value]);
    row("clients, duration", format!("{clients}, {elapsed:.1} s"));
    row("logins (RequestTicket + RedeemTicket)", format!("{logins}"));
    row("**logins/s**", format!("**{per_second:.0}**"));
    row(
        "Redis requests per login (MONITOR)",
        format!(
            "{requests_per_login:.2} ({})",
            breakdown(&monitored.requests_by_command)
        ),
    );
    row(
        "Redis commands run inside scripts per login",
        format!("{scripted_per_login:.2}"),
    );
    row(
        "Redis commands per login (commandstats delta / logins)",
        format!("{commands_per_login:.2}"),
    );
    row(
        "redis-benchmark ops/s (same clients, no pipelining)",
        format!("EVALSHA `return 1`: {evalsha_ops:.0}; SET: {set_ops:.0}"),
    );
    row(
        "limit, logins/s (1 / Σ requests per login / ops/s)",
        format!("{limit:.0}"),
    );
    row(
        "**logins/s ÷ limit** (target ≥ 0.5)",
        format!("**{ratio:.2}**"),
    );
    row(
        "CPU during load (of one core): control plane; redis-server; this driver",
        format!(
            "{:.0} %; {:.0} %; {:.0} %",
            cpu.0 * 100.0,
            cpu.1 * 100.0,
            cpu.2 * 100.0
        ),
    );
    row(
        "control-plane RSS: idle; peak under load (VmRSS every 50 ms); VmHWM",
        format!(
            "{}; {}; {}",
            mib(rss_idle),
            mib(rss_peak),
            mib(rss_high_water)
        ),
    );
    Ok(table)
}

/// One browser login, as the control plane sees it.
async fn login(
    auth: &mut AuthenticationServiceClient<Channel>,
    node: &mut NodeClient,
) -> Result<()> {
    let user = grpc::user(NEXT_USER.fetch_add(1, Ordering::Relaxed));
    let ticket = auth
        .request_ticket(RequestTicketRequest {
            virtual_proxy: String::new(),
            user: Some(user),
            target_id: None,
        })
        .await
        .context("RequestTicket")?
        .into_inner()
        .ticket;
    let redeemed = node
        .redeem_ticket(RedeemTicketRequest {
            virtual_proxy: String::new(),
            ticket,
            client: None,
        })
        .await
        .context("RedeemTicket")?
        .into_inner();
    if redeemed.session_token.is_empty() {
        bail!("RedeemTicket answered no session token");
    }
    Ok(())
}

/// Calls per command from `INFO commandstats`, without the INFO calls this driver makes.
async fn command_stats(
    connection: &mut redis::aio::MultiplexedConnection,
) -> Result<BTreeMap<String, u64>> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await?;
    Ok(parse_command_stats(&info))
}

fn parse_command_stats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?
                .parse()
                .ok()?;
            (name != "info").then(|| (name.to_owned(), calls))
        })
        .collect()
}

/// What Redis received during the calibration logins.
#[derive(Debug, Default)]
struct Monitored {
    /// Commands clients sent, by name: each is a request Redis reads, runs and answers.
    requests_by_command: BTreeMap<String, u64>,
    /// Commands scripts ran inside those requests.
    scripted: u64,
}

impl Monitored {
    fn requests(&self) -> u64 {
        self.requests_by_command.values().sum()
    }

    /// One MONITOR line: `+1700000000.123456 [0 127.0.0.1:5000] "SET" "k" "v"`; commands
    /// a script runs show `[0 lua]`.
    fn record(&mut self, line: &str) {
        let Some((source, command)) = line
            .split_once(" [")
            .and_then(|(_, rest)| rest.split_once("] "))
        else {
            return;
        };
        let Some(name) = command.split('"').nth(1) else {
            return;
        };
        if source.ends_with(" lua") {
            self.scripted += 1;
        } else {
            *self
                .requests_by_command
                .entry(name.to_ascii_uppercase())
                .or_default() += 1;
        }
    }
}

fn is_script_call(command: &str) -> bool {
    matches!(
        command,
        "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "FCALL" | "FCALL_RO"
    )
}

/// Runs `count` logins one after the other while a MONITOR connection records what Redis
/// receives. Done apart from the timed load, since MONITOR slows Redis down.
async fn monitor_logins(
    port: u16,
    count: u64,
    auth: &mut AuthenticationServiceClient<Channel>,
    node: &mut NodeClient,
) -> Result<Monitored> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"MONITOR\r\n").await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if line.trim_end() != "+OK" {
        bail!("MONITOR refused: {}", line.trim_end());
    }
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(async move {
        let mut monitored = Monitored::default();
        let mut line = String::new();
        loop {
            line.clear();
            tokio::select! {
                _ = &mut stopped => return monitored,
                read = reader.read_line(&mut line) => match read {
                    Ok(0) | Err(_) => return monitored,
                    Ok(_) => monitored.record(&line),
                },
            }
        }
    });
    let logins = async {
        for _ in 0..count {
            login(auth, node).await?;
        }
        anyhow::Ok(())
    }
    .await;
    // Redis shows a command to MONITOR before it answers it, so the last login's lines are
    // on their way already; a moment more lets them through the socket.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(());
    let monitored = collector.await.context("MONITOR collector panicked")?;
    logins?;
    Ok(monitored)
}

/// Operations per second `redis-benchmark` reaches on one command.
async fn redis_benchmark(
    port: u16,
    clients: usize,
    requests: u64,
    command: &[&str],
) -> Result<f64> {
    let output = tokio::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
        .args(["-P", "1", "-r", "1000000", "--csv"])
        .args(command)
        .kill_on_drop(true)
        .output()
        .await
        .context("run redis-benchmark (apt-get install redis-tools)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "redis-benchmark failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_benchmark_csv(&stdout)
        .with_context(|| format!("no result in redis-benchmark's output: {stdout}"))
}

/// The `rps` column of the last row of `redis-benchmark --csv`.
fn parse_benchmark_csv(csv: &str) -> Option<f64> {
    let row = csv.lines().rev().find(|line| !line.trim().is_empty())?;
    row.split(',').nth(1)?.trim_matches('"').parse().ok()
}

/// Samples a process's RSS until stopped, and answers the largest sample.
#[derive(Debug)]
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<u64>>,
}

impl RssSampler {
    fn start(process: &Process) -> Self {
        let pid = process.pid();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                peak = peak.max(proc_stats::rss_of(pid)?);
                tokio::select! {
                    _ = &mut stopped => return Ok(peak),
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> Result<u64> {
        let _ = self.stop.send(());
        self.task.await.context("RSS sampler panicked")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_stats_without_info() {
        let info = "# Commandstats\r\n\
            cmdstat_evalsha:calls=20,usec=100,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_set:calls=7,usec=9,usec_per_call=1.29\r\n\
            cmdstat_info:calls=3,usec=25\r\n";
        let stats = parse_command_stats(info);
        assert_eq!(stats.get("evalsha"), Some(&20));
        assert_eq!(stats.get("set"), Some(&7));
        assert_eq!(stats.get("info"), None);
    }

    #[test]
    fn monitor_lines_split_requests_from_scripted_commands() {
        let mut monitored = Monitored::default();
        monitored.record("+1700000000.1 [0 127.0.0.1:5000] \"evalsha\" \"abc\" \"1\" \"k\"\r\n");
        monitored.record("+1700000000.2 [0 lua] \"HGET\" \"k\" \"vp\"\r\n");
        monitored.record("+1700000000.3 [0 127.0.0.1:5000] \"SET\" \"a] b\" \"v\"\r\n");
        monitored.record("garbage\r\n");
        assert_eq!(monitored.requests(), 2);
        assert_eq!(monitored.requests_by_command.get("EVALSHA"), Some(&1));
        assert_eq!(monitored.scripted, 1);
    }

    #[test]
    fn benchmark_csv_rps() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"SET bench:__rand_int__ hh\",\"81234.57\",\"0.3\"\n";
        assert_eq!(parse_benchmark_csv(csv), Some(81234.57));
        assert_eq!(parse_benchmark_csv(""), None);
    }
}
