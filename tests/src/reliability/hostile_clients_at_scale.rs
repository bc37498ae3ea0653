//! Hostile clients at scale, against a real data-plane node process.
//!
//! **Slow clients.** Thousands of connections that send a request head a byte at a time, or
//! nothing at all, while a normal user keeps browsing. The node runs with its defaults
//! (`limits.max_connections` 10,000, `limits.header_read_timeout` 10 s): that is what a
//! production node runs with, and a user would expect slow clients neither to lock out
//! legitimate users with 503s nor to hold sockets forever. So the slow clients fit under the
//! cap, each is cut off once its head has taken longer than the header timeout (they
//! reconnect, as an attacker would), and every normal request must succeed meanwhile.
//!
//! **Connection flood.** Here the cap is set low and filled on purpose, by users whose
//! requests the upstream is slow to answer. Past `limits.max_connections`, a new connection is
//! answered 503 with `Retry-After` and closed; one that sends nothing is closed after the
//! header timeout; the node stays up (its admin port too), the users within the cap get their
//! answers, and the node serves normally once the flood is gone.
//!
//! CI runs 1,000 slow clients; `tests/reliability.sh` runs 5,000.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_proto::v1 as pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::browser::fixtures::{AppProxy, COOKIE};
use crate::harness::auth_module::user;
use crate::harness::browser::Browser;
use crate::harness::client;
use crate::harness::proc_stats::{self, percentiles, settle};
use crate::harness::processes::{
    ControlPlaneProcess, DataPlaneProcess, ProcessUnderTest, raise_open_file_limit,
};
use crate::harness::{EchoUpstream, RedisServer, profile};

/// How long the node gets to close what the hostile clients left.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Open files, besides client and upstream connections, that a drained node may hold beyond
/// its baseline (a control-plane connection being replaced, a timer).
const FD_SLACK: usize = 8;

/// Redis, an echo upstream, a control plane and one node process, and a session on it.
struct System {
    _redis: RedisServer,
    upstream: EchoUpstream,
    _control: ControlPlaneProcess,
    node: DataPlaneProcess,
    /// `name=value` of a live session's cookie.
    cookie: String,
}

impl System {
    async fn start(settings: &[&str]) -> Self {
        let redis = RedisServer::start().await;
        let upstream = EchoUpstream::start("engine").await;
        let control =
            ControlPlaneProcess::start(&AppProxy::new([upstream.node()]).on_redis(&redis)).await;
        let node = DataPlaneProcess::start(&control, "hostile", settings).await;
        let created = control
            .sessions()
            .create_session(pb::CreateSessionRequest {
                virtual_proxy: "app".to_owned(),
                user: Some(user("CORP", "alice")),
                session_token: None,
            })
            .await
            .expect("CreateSession succeeds")
            .into_inner();
        Self {
            _redis: redis,
            upstream,
            _control: control,
            node,
            cookie: format!("{COOKIE}={}", created.session_token),
        }
    }

    /// Connections from clients that the node holds now.
    fn client_connections(&self) -> usize {
        proc_stats::tcp_connections(self.node.process.pid())
            .iter()
            .filter(|(local, _)| *local == self.node.address())
            .count()
    }

    /// Connections to the upstream: idle ones stay pooled (at most 256, the pool's bound),
    /// which is reuse, not a leak.
    fn upstream_connections(&self) -> usize {
        proc_stats::tcp_connections(self.node.process.pid())
            .iter()
            .filter(|(_, remote)| *remote == self.upstream.address())
            .count()
    }

    /// Open files other than client and upstream connections: what must come back to its
    /// baseline.
    fn other_fds(&self) -> usize {
        self.node
            .process
            .stats()
            .expect("read the node's /proc")
            .fds
            .saturating_sub(self.client_connections() + self.upstream_connections())
    }
}

/// What the slow clients achieved.
#[derive(Debug, Default)]
struct SlowTally {
    connections: AtomicU64,
    /// Connections the node ended (it closed them, or answered and closed), of clients that
    /// dribbled a head.
    dribblers_cut_off: AtomicU64,
    /// The same, of clients that sent nothing.
    silent_cut_off: AtomicU64,
    /// Connections that could not be made at all.
    refused: AtomicU64,
}

/// A slow client until `end`: connects, then either dribbles a request head that never ends
/// (one byte per `interval`) or sends nothing; when the node cuts it off, connects again.
async fn slow_client(
    node: SocketAddr,
    dribble: bool,
    interval: Duration,
    end: tokio::time::Instant,
    tally: Arc<SlowTally>,
) {
    let head = b"GET /app/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    while tokio::time::Instant::now() < end {
        let Ok(Ok(mut stream)) = tokio::time::timeout_at(end, TcpStream::connect(node)).await
        else {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        tally.connections.fetch_add(1, Ordering::Relaxed);
        let cut_off = if dribble {
            &tally.dribblers_cut_off
        } else {
            &tally.silent_cut_off
        };
        let mut sent = 0usize;
        let mut buffer = [0u8; 1024];
        loop {
            tokio::select! {
                _ = stream.read(&mut buffer) => {
                    // An answer (a 408 or the like) or the end of the connection: cut off.
                    cut_off.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                () = tokio::time::sleep(interval), if dribble => {
                    let byte = head.get(sent).copied().unwrap_or(b'a');
                    sent += 1;
                    if stream.write_all(&[byte]).await.is_err() {
                        cut_off.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                () = tokio::time::sleep_until(end) => return,
            }
        }
    }
}

/// What the normal user saw.
#[derive(Debug, Default)]
struct NormalTally {
    ok: AtomicU64,
    failed: AtomicU64,
    first_failures: Mutex<Vec<String>>,
    latencies: Mutex<Vec<Duration>>,
}

impl NormalTally {
    fn record(&self, outcome: Result<u16, String>, took: Duration) {
        match outcome {
            Ok(200) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.latencies
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(took);
            }
            other => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self
                    .first_failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if first.len() < 10 {
                    first.push(format!("{other:?} after {took:?}"));
                }
            }
        }
    }
}

/// A normal user until `end`: alternately a request on a fresh connection (a new visitor
/// must get in) and one on a kept-alive connection (a visitor already in must keep going).
async fn normal_user(
    node: &DataPlaneProcess,
    cookie: &str,
    worker: usize,
    end: Instant,
    tally: &NormalTally,
) {
    let mut browser = Browser::new();
    browser.cookie = Some(cookie.to_owned());
    let mut index = 0usize;
    while Instant::now() < end {
        let url = node.url(&format!("/app/normal/{worker}/{index}"));
        let started = Instant::now();
        let outcome = if index.is_multiple_of(2) {
            client::try_request(http::Method::GET, &url, &[("cookie", cookie)], "")
                .await
                .map(|response| response.status.as_u16())
        } else {
            browser
                .get(&url)
                .await
                .map(|response| response.status.as_u16())
        };
        tally.record(outcome, started.elapsed());
        index += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_starve_normal_traffic() {
    raise_open_file_limit(12_000);
    let slow_clients = profile::pick(1_000, 5_000);
    let hostile_for = profile::pick(Duration::from_secs(15), Duration::from_secs(60));
    // Connections are opened over this long, so the listen backlog never overflows.
    let ramp = profile::pick(Duration::from_secs(2), Duration::from_secs(5));
    let mut system = System::start(&[]).await;
    let node = system.node.address();
    let baseline_fds = system.other_fds();
    let baseline_tasks = system.node.metric("gatehouse_runtime_tasks").await.unwrap();

    let started = tokio::time::Instant::now();
    let end = started + ramp + hostile_for;
    let slow = Arc::new(SlowTally::default());
    let mut attackers = Vec::with_capacity(slow_clients);
    for index in 0..slow_clients {
        let tally = slow.clone();
        let delay = ramp.mul_f64(index as f64 / slow_clients as f64);
        attackers.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Half dribble a head at a byte a second, half just hold the connection open.
            slow_client(node, index % 2 == 0, Duration::from_secs(1), end, tally).await;
        }));
    }

    // The normal users start once the slow clients are in place.
    tokio::time::sleep(ramp).await;
    let normal = Arc::new(NormalTally::default());
    let end_std = Instant::now() + hostile_for;
    let mut held = Vec::new();
    let normal_traffic = futures_util::future::join_all(
        (0..4).map(|worker| normal_user(&system.node, &system.cookie, worker, end_std, &normal)),
    );
    let sampling = async {
        while Instant::now() < end_std {
            held.push(system.client_connections());
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::join!(normal_traffic, sampling);
    for attacker in attackers {
        attacker.await.unwrap();
    }
    system.node.process.assert_running();

    let (fds, settled) = settle(
        DRAIN_DEADLINE,
        || async { (system.client_connections(), system.other_fds()) },
        |(clients, others)| *clients == 0 && *others <= baseline_fds + FD_SLACK,
    )
    .await;
    let tasks = system.node.metric("gatehouse_runtime_tasks").await.unwrap();

    let mut latencies = normal.latencies.lock().unwrap().clone();
    eprintln!(
        "reliability hostile ({}): {slow_clients} slow clients for {:.0} s: {} connections \
         made, cut off by the node: {} dribbling a head and {} silent; {} could not connect; node held up to {} client \
         connections; normal user: {} requests ok, {} failed ({}); afterwards client \
         connections {}, other fds {baseline_fds} → {}, tasks {baseline_tasks} → {tasks}; \
         upstream saw {} requests",
        if profile::long() { "long" } else { "fast" },
        hostile_for.as_secs_f64(),
        slow.connections.load(Ordering::Relaxed),
        slow.dribblers_cut_off.load(Ordering::Relaxed),
        slow.silent_cut_off.load(Ordering::Relaxed),
        slow.refused.load(Ordering::Relaxed),
        held.iter().max().copied().unwrap_or(0),
        normal.ok.load(Ordering::Relaxed),
        normal.failed.load(Ordering::Relaxed),
        percentiles(&mut latencies),
        fds.0,
        fds.1,
        system.upstream.requests().len(),
    );
    assert_eq!(
        normal.failed.load(Ordering::Relaxed),
        0,
        "normal requests failed: {:#?}",
        normal.first_failures.lock().unwrap()
    );
    assert!(normal.ok.load(Ordering::Relaxed) > 0);
    assert!(
        held.iter().max().copied().unwrap_or(0) >= slow_clients * 9 / 10,
        "the slow clients were connected at once: {held:?}"
    );
    // Every slow client was connected for longer than the header timeout.
    assert!(
        slow.dribblers_cut_off.load(Ordering::Relaxed) >= slow_clients as u64 / 2,
        "the header timeout cut off every client dribbling a head"
    );
    assert!(
        slow.silent_cut_off.load(Ordering::Relaxed) >= slow_clients as u64 / 2,
        "the header timeout cut off every client that sent nothing"
    );
    assert!(
        settled,
        "the node gave back the slow clients' sockets: {fds:?}, baseline {baseline_fds}"
    );
    assert!(
        tasks <= baseline_tasks + 4.0,
        "tasks {baseline_tasks} → {tasks}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_cap_gets_503_and_the_node_recovers() {
    let cap = profile::pick(500, 5_000);
    let flood = profile::pick(1_000, 5_000);
    let silent_flood = profile::pick(1_000, 3_000);
    // Each held request costs a client and an upstream socket on both sides.
    raise_open_file_limit(2 * cap as u64 + silent_flood as u64 + 2_000);
    // The held requests outlast both floods, then are answered.
    let hold = Duration::from_secs(15);
    let header_timeout = Duration::from_secs(2);
    let cap_setting = format!("limits.max_connections={cap}");
    let timeout_setting = format!(
        "limits.header_read_timeout=\"{}s\"",
        header_timeout.as_secs()
    );
    let mut system = System::start(&[&cap_setting, &timeout_setting]).await;
    let node = system.node.address();
    let baseline_fds = system.other_fds();

    // Fill the cap with users whose requests the upstream is slow to answer.
    system.upstream.set_delay(hold);
    let hold_request = format!(
        "GET /app/hold HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {}\r\n\r\n",
        system.cookie
    );
    let mut held = Vec::with_capacity(cap);
    for _ in 0..cap {
        let mut stream = TcpStream::connect(node)
            .await
            .expect("connect under the cap");
        stream
            .write_all(hold_request.as_bytes())
            .await
            .expect("send a request under the cap");
        held.push(stream);
    }
    let held_since = Instant::now();
    crate::harness::eventually(
        "the upstream to hold every request",
        Duration::from_secs(30),
        || async { (system.upstream.connections() >= cap as u64).then_some(()) },
    )
    .await;

    // The flood: every further connection gets a 503 with Retry-After, and is closed.
    let answers = Arc::new(Mutex::new(
        std::collections::BTreeMap::<String, usize>::new(),
    ));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let started = Instant::now();
    let mut flooders = Vec::with_capacity(flood);
    for _ in 0..flood {
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let answers = answers.clone();
        let url = system.node.url("/app/flood");
        let cookie = system.cookie.clone();
        flooders.push(tokio::spawn(async move {
            let _permit = permit;
            let outcome = match client::try_request(
                http::Method::GET,
                &url,
                &[("cookie", &cookie)],
                "",
            )
            .await
            {
                Ok(response) => format!(
                    "{} retry-after={:?}",
                    response.status.as_u16(),
                    response.header("retry-after")
                ),
                Err(error) => format!("error: {}", error.chars().take(80).collect::<String>()),
            };
            *answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(outcome)
                .or_default() += 1;
        }));
    }
    for flooder in flooders {
        flooder.await.unwrap();
    }
    let flood_time = started.elapsed();

    // A flood of connections that send nothing: past the cap they hold no slot, and the
    // header timeout closes them.
    let mut silent = Vec::with_capacity(silent_flood);
    for _ in 0..silent_flood {
        silent.push(TcpStream::connect(node).await.expect("connect"));
    }
    let silent_opened = Instant::now();
    // The admin port is not behind the cap: the node can still be watched and probed.
    let live = client::try_request(
        http::Method::GET,
        &format!("http://{}/live", system.node.admin_address()),
        &[],
        "",
    )
    .await
    .map(|response| response.status.as_u16());
    let closed = futures_util::future::join_all(silent.iter_mut().map(|stream| async {
        let mut buffer = [0u8; 64];
        matches!(
            tokio::time::timeout(header_timeout * 5, stream.read(&mut buffer)).await,
            Ok(Ok(0) | Err(_))
        )
    }))
    .await;
    let silent_closed = closed.iter().filter(|closed| **closed).count();
    let silent_time = silent_opened.elapsed();
    drop(silent);
    system.node.process.assert_running();

    // The users who held the cap get their answers.
    system.upstream.set_delay(Duration::ZERO);
    let held_answers = futures_util::future::join_all(held.iter_mut().map(|stream| async {
        let mut buffer = [0u8; 64];
        match tokio::time::timeout(hold + DRAIN_DEADLINE, stream.read(&mut buffer)).await {
            Ok(Ok(read)) => buffer[..read].starts_with(b"HTTP/1.1 200"),
            _ => false,
        }
    }))
    .await;
    let held_ok = held_answers.iter().filter(|ok| **ok).count();
    let held_for = held_since.elapsed();
    drop(held);

    // The flood is gone: the node serves again.
    let served_again = Arc::new(AtomicUsize::new(0));
    crate::harness::eventually("the node to serve again", Duration::from_secs(10), || {
        let url = system.node.url("/app/after");
        let cookie = system.cookie.clone();
        let served_again = served_again.clone();
        async move {
            let response = client::try_request(http::Method::GET, &url, &[("cookie", &cookie)], "")
                .await
                .ok()?;
            served_again.fetch_add(1, Ordering::Relaxed);
            (response.status == 200).then_some(())
        }
    })
    .await;
    let (fds, settled) = settle(
        DRAIN_DEADLINE,
        || async { (system.client_connections(), system.other_fds()) },
        |(clients, others)| *clients == 0 && *others <= baseline_fds + FD_SLACK,
    )
    .await;

    let upstream_idle = system.upstream_connections();
    let answers = answers.lock().unwrap().clone();
    eprintln!(
        "reliability hostile ({}): cap {cap} held by slow requests, flood of {flood} \
         connections in {:.1} s answered {answers:?}; {silent_closed} of {silent_flood} silent \
         connections past the cap closed within {:.1} s; admin /live {live:?}; {held_ok} of \
         {cap} held requests answered 200 after {:.1} s; served again after {} tries; \
         afterwards client connections {}, idle upstream connections {upstream_idle}, other \
         fds {baseline_fds} → {}",
        if profile::long() { "long" } else { "fast" },
        flood_time.as_secs_f64(),
        silent_time.as_secs_f64(),
        held_for.as_secs_f64(),
        served_again.load(Ordering::Relaxed),
        fds.0,
        fds.1,
    );
    assert_eq!(
        answers.get("503 retry-after=Some(\"1\")").copied(),
        Some(flood),
        "every connection past the cap is answered 503 with Retry-After: {answers:?}"
    );
    assert_eq!(
        silent_closed, silent_flood,
        "silent connections are closed after the header timeout"
    );
    assert_eq!(live, Ok(200), "the admin port answers during the flood");
    assert_eq!(
        held_ok, cap,
        "the users within the cap were served throughout"
    );
    assert!(
        settled,
        "the node gave back the flood's sockets: {fds:?}, baseline {baseline_fds}"
    );
    assert!(
        upstream_idle <= 256,
        "{upstream_idle} idle upstream connections"
    );
}
