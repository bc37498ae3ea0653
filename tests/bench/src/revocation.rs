//! `revocation`: how long a revocation takes to reach every node. One control plane on
//! Redis, `--nodes` node processes (100; 3 in the smoke), an echo upstream process, and a
//! `Watch` stream of this driver's own. Each round revokes two sessions, so that neither
//! measurement loads the machine during the other: one with a WebSocket open through every
//! node, timed from the `DeleteSession` call to each node's close frame; one cached on every
//! node, timed from `DeleteSession`'s return until every node refuses its cookie.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Args;
use futures_util::future::try_join_all;
use futures_util::{SinkExt as _, StreamExt as _, TryStreamExt as _};
use gatehouse_proto::v1 as pb;
use gatehouse_proto::v1::session_selector::By;
use gatehouse_proto::v1::session_service_client::SessionServiceClient;
use gatehouse_proto::v1::{DeleteSessionRequest, SessionSelector};
use gatehouse_testkit::http_client::{Connection, WebSocket, websocket};
use gatehouse_testkit::proc_stats;
use gatehouse_testkit::{DataPlaneProcess, RedisServer};
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tonic::transport::Channel;

use crate::grpc;
use crate::processes::{self, Store};
use crate::stats::{Summary, Table, millis};

/// Longer than this is a revocation that did not arrive: the run fails.
const GIVE_UP: Duration = Duration::from_secs(5);

/// Nodes started at once: each start is mostly waiting for the process to be ready.
const STARTING_AT_ONCE: usize = 10;

#[derive(Debug, Args)]
pub struct RevocationArgs {
    /// Rounds, each revoking one session with a WebSocket on every node and one cached on
    /// every node [default: 200; smoke 10]
    #[arg(long)]
    revocations: Option<usize>,
    /// Data-plane node processes, each with a WebSocket of every revoked session
    /// [default: 100; smoke 3]
    #[arg(long)]
    nodes: Option<usize>,
}

/// A `Watch` stream of this driver's own, as a node holds one: when each revocation arrives
/// on it says how much of a close's delay is the control plane's.
#[derive(Debug)]
struct Watcher {
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    _task: AbortOnDrop,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Watcher {
    async fn start(endpoint: &str, secret: &str) -> Result<Self> {
        let mut client = grpc::node_client(grpc::channel(endpoint).await?, secret)?;
        let mut stream = client
            .watch(pb::WatchRequest {
                node_id: "bench-driver".to_owned(),
                cursor: None,
            })
            .await
            .context("Watch")?
            .into_inner();
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        let recorded = arrivals.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(event)) = stream.message().await {
                if let Some(pb::watch_event::Event::Revocation(revocation)) = event.event {
                    let now = Instant::now();
                    lock(&recorded).insert(revocation.handle, now);
                }
            }
        });
        Ok(Self {
            arrivals,
            _task: AbortOnDrop(task),
        })
    }

    /// When the revocation of `handle` arrived, waiting for it if need be.
    async fn arrival(&self, handle: &str) -> Result<Instant> {
        let deadline = Instant::now() + GIVE_UP;
        loop {
            if let Some(arrived) = lock(&self.arrivals).remove(handle) {
                return Ok(arrived);
            }
            ensure!(
                Instant::now() < deadline,
                "the revocation never reached this driver's Watch stream"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The processes whose CPU time a revocation is charged with.
#[derive(Debug)]
struct Meter {
    control_plane: u32,
    nodes: Vec<u32>,
    upstream: u32,
}

/// CPU time used by each kind of process.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    control_plane: Duration,
    nodes: Duration,
    upstream: Duration,
}

impl Meter {
    fn read(&self) -> Result<Cpu> {
        let mut nodes = Duration::ZERO;
        for pid in &self.nodes {
            nodes += proc_stats::cpu_time_of(*pid)?;
        }
        Ok(Cpu {
            control_plane: proc_stats::cpu_time_of(self.control_plane)?,
            nodes,
            upstream: proc_stats::cpu_time_of(self.upstream)?,
        })
    }
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            control_plane: self.control_plane.saturating_sub(before.control_plane),
            nodes: self.nodes.saturating_sub(before.nodes),
            upstream: self.upstream.saturating_sub(before.upstream),
        }
    }
}

/// What one round measured.
#[derive(Debug)]
struct Round {
    /// CPU time used from just before the `DeleteSession` call until the last close frame
    /// arrived (read outside that span: reading every node's counters takes milliseconds).
    cpu: Cpu,
    /// For each node, from the `DeleteSession` call to its WebSocket's close frame.
    closes: Vec<Duration>,
    /// From the `DeleteSession` call to the revocation's arrival on this driver's `Watch`.
    watched: Duration,
    /// The `DeleteSession` call of the WebSocket revocation.
    delete_call: Duration,
    /// From `DeleteSession`'s return until the last node refused the cached session.
    every_node: Duration,
    poll_round_trips: Vec<Duration>,
    refused_at_first_poll: usize,
}

pub async fn run(bin_dir: &Path, smoke: bool, args: &RevocationArgs) -> Result<Table> {
    let rounds = args.revocations.unwrap_or(if smoke { 10 } else { 200 });
    let node_count = args.nodes.unwrap_or(if smoke { 3 } else { 100 });
    ensure!(node_count > 0, "--nodes must be at least 1");
    let redis = RedisServer::start().await?;
    // In a process of its own, so that answering the nodes' close frames does not delay this
    // driver's noting when the clients' close frames arrive.
    let upstream = processes::UpstreamProcess::start().await?;
    let secret = processes::node_secret()?;
    let control_plane = processes::control_plane(
        bin_dir,
        &Store::Redis(redis.url()),
        upstream.address,
        &secret,
    )
    .await?;
    let started = Instant::now();
    let nodes: Vec<DataPlaneProcess> = futures_util::stream::iter(0..node_count)
        .map(|index| {
            let name = format!("bench-node-{index}");
            let (control_plane, secret) = (&control_plane, &secret);
            async move { processes::data_plane(bin_dir, control_plane, secret, &name, &[]).await }
        })
        .buffer_unordered(STARTING_AT_ONCE)
        .try_collect()
        .await?;
    eprintln!(
        "revocation: {} nodes ready in {:.1} s",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );
    let mut sessions = SessionServiceClient::new(grpc::channel(&control_plane.endpoint()).await?);
    let watcher = Watcher::start(&control_plane.endpoint(), &secret).await?;
    let meter = Meter {
        control_plane: control_plane.process.pid(),
        nodes: nodes.iter().map(|node| node.process.pid()).collect(),
        upstream: upstream.pid(),
    };
    // One kept-alive connection per node, opened once: a poll is then one round trip.
    let mut pollers = Vec::with_capacity(nodes.len());
    for node in &nodes {
        pollers.push(Connection::open(node.address).await?);
    }

    eprintln!("revocation: {rounds} rounds over {} nodes", nodes.len());
    let mut measured = Vec::with_capacity(rounds);
    for n in 0..rounds {
        let n = n as u64;
        let (closes, watched, delete_call, cpu) =
            close_everywhere(&mut sessions, &watcher, &meter, &nodes, 2 * n)
                .await
                .with_context(|| format!("round {n}: the WebSockets"))?;
        let refused = refuse_everywhere(&mut sessions, &watcher, &mut pollers, 2 * n + 1)
            .await
            .with_context(|| format!("round {n}: the cached sessions"))?;
        measured.push(Round {
            cpu,
            closes,
            watched,
            delete_call,
            ..refused
        });
    }

    let summary = |samples: Vec<Duration>| Summary::of(&samples).context("nothing measured");
    let round_trips: Vec<Duration> = measured
        .iter()
        .flat_map(|one| one.poll_round_trips.iter().copied())
        .collect();
    let round_trip = summary(round_trips)?;
    let first_poll: usize = measured.iter().map(|one| one.refused_at_first_poll).sum();
    eprintln!(
        "revocation: (b) is timed from the DeleteSession call to the close frame's arrival at \
         this driver, per node; (a) from when DeleteSession returned, each node polled back to \
         back on a kept-alive connection, taking when the first refused poll was sent, so it \
         is late by at most the gap between two polls (a cache-hit round trip, p50 {}). \
         {first_poll} of {} node checks were refused at the first poll: revoked before \
         DeleteSession's answer reached the driver.",
        millis(round_trip.p50),
        measured.len() * nodes.len()
    );

    let mut table = Table::new(&[
        &format!(
            "revocation ({} rounds, {} nodes)",
            measured.len(),
            nodes.len()
        ),
        "p50",
        "p99",
        "max",
    ]);
    let mut row = |name: String, summary: Summary| {
        table.row(vec![
            name,
            millis(summary.p50),
            millis(summary.p99),
            millis(summary.max),
        ]);
    };
    row(
        format!(
            "(b) a node's WebSocket close frame arrives, from the DeleteSession call ({} closes)",
            measured.len() * nodes.len()
        ),
        summary(measured.iter().flat_map(|one| one.closes.clone()).collect())?,
    );
    row(
        "(b) the last node's close frame of a revocation, from the DeleteSession call".to_owned(),
        summary(
            measured
                .iter()
                .filter_map(|one| one.closes.iter().max().copied())
                .collect(),
        )?,
    );
    row(
        "the revocation reaches a Watch stream of this driver, from the DeleteSession call"
            .to_owned(),
        summary(measured.iter().map(|one| one.watched).collect())?,
    );
    let cpu =
        |pick: fn(&Cpu) -> Duration| summary(measured.iter().map(|one| pick(&one.cpu)).collect());
    row(
        "CPU used from the call to the last close: the control plane".to_owned(),
        cpu(|cpu| cpu.control_plane)?,
    );
    row(
        format!(
            "CPU used from the call to the last close: all {} nodes",
            nodes.len()
        ),
        cpu(|cpu| cpu.nodes)?,
    );
    row(
        "CPU used from the call to the last close: the upstream process".to_owned(),
        cpu(|cpu| cpu.upstream)?,
    );
    row(
        "DeleteSession call itself".to_owned(),
        summary(measured.iter().map(|one| one.delete_call).collect())?,
    );
    row(
        "(a) every node refuses the cookie (401), from DeleteSession's return".to_owned(),
        summary(measured.iter().map(|one| one.every_node).collect())?,
    );
    row(
        "resolution of (a): gap between two polls (cache-hit round trip)".to_owned(),
        round_trip,
    );
    Ok(table)
}

/// `DeleteSession` of the session `handle`; how long the call took.
async fn delete(sessions: &mut SessionServiceClient<Channel>, handle: String) -> Result<Duration> {
    let sent = Instant::now();
    sessions
        .delete_session(DeleteSessionRequest {
            session: Some(SessionSelector {
                by: Some(By::Handle(handle)),
            }),
        })
        .await
        .context("DeleteSession")?;
    Ok(sent.elapsed())
}

/// Session `n` with a WebSocket open through every node, revoked: for each node, the delay
/// from the `DeleteSession` call to its close frame; the delay to `watcher`'s stream; and
/// the call's own duration.
async fn close_everywhere(
    sessions: &mut SessionServiceClient<Channel>,
    watcher: &Watcher,
    meter: &Meter,
    nodes: &[DataPlaneProcess],
    n: u64,
) -> Result<(Vec<Duration>, Duration, Duration, Cpu)> {
    let (token, handle) = grpc::create_session(sessions, n).await?;
    let cookie = grpc::cookie(&token);
    let sockets = try_join_all(nodes.iter().map(|node| echoing_websocket(node, &cookie))).await?;
    // Each close frame's arrival is timed by a task of its own that waits on its socket, so
    // it costs nothing until the frame comes.
    let closes: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let frame = next_frame(&mut socket).await;
                (Instant::now(), frame)
            })
        })
        .collect();
    let before = meter.read()?;
    let sent = Instant::now();
    let delete_call = delete(sessions, handle.clone()).await?;
    let mut arrived = Vec::with_capacity(closes.len());
    for close in closes {
        arrived.push(
            tokio::time::timeout(GIVE_UP, close)
                .await
                .context("no WebSocket close frame within 5 s of the revocation")?
                .context("WebSocket reader panicked")?,
        );
    }
    let cpu = meter.read()?.since(before);
    let watched = watcher
        .arrival(&handle)
        .await?
        .saturating_duration_since(sent);
    let mut delays = Vec::with_capacity(arrived.len());
    for (closed, frame) in arrived {
        match frame? {
            Some(Message::Close(_)) => delays.push(closed.saturating_duration_since(sent)),
            other => bail!("a WebSocket ended without a close frame: {other:?}"),
        }
    }
    Ok((delays, watched, delete_call, cpu))
}

/// A WebSocket through `node` with `cookie`, which has echoed one message.
async fn echoing_websocket(node: &DataPlaneProcess, cookie: &str) -> Result<WebSocket> {
    let mut socket = websocket(node.address, "/ws", cookie).await?;
    socket.send(Message::text("ping")).await?;
    match next_frame(&mut socket).await? {
        Some(Message::Text(text)) if text.as_str() == "ping" => Ok(socket),
        other => bail!("the WebSocket did not echo: {other:?}"),
    }
}

/// Session `n` cached on every node, revoked: from `DeleteSession`'s return until every
/// node refuses it.
async fn refuse_everywhere(
    sessions: &mut SessionServiceClient<Channel>,
    watcher: &Watcher,
    pollers: &mut [Connection],
    n: u64,
) -> Result<Round> {
    let (token, handle) = grpc::create_session(sessions, n).await?;
    let cookie = grpc::cookie(&token);
    // Cached on every node: the first request validates it, the second is a cache hit and
    // gives a round trip of the kind the pollers repeat.
    let mut poll_round_trips = Vec::new();
    for poller in pollers.iter_mut() {
        accepted(poller, &cookie).await?;
        poll_round_trips.push(accepted(poller, &cookie).await?);
    }
    let delete_call = delete(sessions, handle.clone()).await?;
    let t0 = Instant::now();
    let polled = try_join_all(
        pollers
            .iter_mut()
            .map(|poller| poll_until_refused(poller, &cookie, t0)),
    )
    .await?;
    let every_node = polled
        .iter()
        .map(|polled| polled.refused_sent.saturating_duration_since(t0))
        .max()
        .unwrap_or_default();
    let refused_at_first_poll = polled
        .iter()
        .filter(|polled| polled.accepted.is_empty())
        .count();
    poll_round_trips.extend(polled.into_iter().flat_map(|polled| polled.accepted));
    // Not timed: taken so that the watcher holds only what is yet to be asked for.
    watcher.arrival(&handle).await?;
    Ok(Round {
        cpu: Cpu::default(),
        closes: Vec::new(),
        watched: Duration::ZERO,
        delete_call,
        every_node,
        poll_round_trips,
        refused_at_first_poll,
    })
}

/// A request with the cookie that the node must accept; answers its round trip.
async fn accepted(poller: &mut Connection, cookie: &str) -> Result<Duration> {
    let sent = Instant::now();
    let (status, _) = poller.get("/", Some(cookie)).await?;
    ensure!(
        status == StatusCode::OK,
        "a live session's request answered {status}"
    );
    Ok(sent.elapsed())
}

/// What polling one node after a revocation saw.
#[derive(Debug)]
struct Polled {
    /// When the first poll that the node refused was sent. The node looked the session up
    /// after this instant (the poll had yet to reach it) and found it gone. The poll's own
    /// round trip is not counted: a refused cookie is a cache miss, which costs the node a
    /// `ValidateSession` call before it answers.
    refused_sent: Instant,
    /// Round trips of the polls the node still accepted (cache hits): the gap between two
    /// looks, so the resolution of `refused_sent`.
    accepted: Vec<Duration>,
}

/// Polls back to back until the node answers 401.
async fn poll_until_refused(poller: &mut Connection, cookie: &str, t0: Instant) -> Result<Polled> {
    let mut accepted = Vec::new();
    loop {
        let sent = Instant::now();
        let (status, _) = poller.get("/", Some(cookie)).await?;
        match status {
            StatusCode::UNAUTHORIZED => {
                return Ok(Polled {
                    refused_sent: sent,
                    accepted,
                });
            }
            StatusCode::OK if sent - t0 < GIVE_UP => accepted.push(sent.elapsed()),
            StatusCode::OK => bail!("a node still accepts the session 5 s after its deletion"),
            other => bail!("a node answered {other} while the session was being revoked"),
        }
    }
}

/// The next text, binary or close message, skipping pings and pongs; `None` when the
/// connection ended without one.
async fn next_frame(socket: &mut WebSocket) -> Result<Option<Message>> {
    loop {
        let Some(message) = tokio::time::timeout(GIVE_UP, socket.next())
            .await
            .context("nothing arrived on the WebSocket within 5 s")?
        else {
            return Ok(None);
        };
        match message? {
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            other => return Ok(Some(other)),
        }
    }
}
