//! `revocation`: how long after `DeleteSession` returns every node refuses the session's
//! cookie, and its open WebSocket receives a close frame. One control plane on Redis, three
//! node processes, an echo upstream in this process.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::Args;
use futures_util::future::try_join_all;
use futures_util::{SinkExt as _, StreamExt as _};
use gatehouse_proto::v1::session_selector::By;
use gatehouse_proto::v1::session_service_client::SessionServiceClient;
use gatehouse_proto::v1::{DeleteSessionRequest, SessionSelector};
use gatehouse_testkit::http_client::{Connection, WebSocket, websocket};
use gatehouse_testkit::{DataPlaneProcess, EchoUpstream, RedisServer};
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

use crate::grpc;
use crate::processes::{self, Store};
use crate::stats::{Summary, Table, millis};

/// Longer than this is a revocation that did not arrive: the run fails.
const GIVE_UP: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct RevocationArgs {
    /// Sessions created, cached on every node and revoked [default: 200; smoke 10]
    #[arg(long)]
    revocations: Option<usize>,
    /// Data-plane node processes
    #[arg(long, default_value_t = 3)]
    nodes: usize,
}

/// The delays of one revocation, from `DeleteSession` returning.
#[derive(Debug)]
struct Measured {
    every_node: Duration,
    websocket: Duration,
    delete_call: Duration,
    poll_round_trips: Vec<Duration>,
    refused_at_first_poll: usize,
}

pub async fn run(bin_dir: &Path, smoke: bool, args: &RevocationArgs) -> Result<Table> {
    let revocations = args.revocations.unwrap_or(if smoke { 10 } else { 200 });
    ensure!(args.nodes > 0, "--nodes must be at least 1");
    let redis = RedisServer::start().await?;
    let upstream = EchoUpstream::plain("127.0.0.1:0".parse()?).await?;
    let secret = processes::node_secret()?;
    let control_plane = processes::control_plane(
        bin_dir,
        &Store::Redis(redis.url()),
        upstream.address(),
        &secret,
    )
    .await?;
    let mut nodes = Vec::with_capacity(args.nodes);
    for index in 0..args.nodes {
        let name = format!("bench-node-{index}");
        nodes.push(processes::data_plane(bin_dir, &control_plane, &secret, &name, &[]).await?);
    }
    let mut sessions = SessionServiceClient::new(grpc::channel(&control_plane.endpoint()).await?);
    // One kept-alive connection per node, opened once: a poll is then one round trip.
    let mut pollers = Vec::with_capacity(nodes.len());
    for node in &nodes {
        pollers.push(Connection::open(node.address).await?);
    }

    eprintln!(
        "revocation: {revocations} sessions over {} nodes",
        nodes.len()
    );
    let mut measured = Vec::with_capacity(revocations);
    for n in 0..revocations {
        let node = &nodes[n % nodes.len()];
        let one = revoke_one(&mut sessions, &mut pollers, node, n as u64)
            .await
            .with_context(|| format!("revocation {n}"))?;
        measured.push(one);
    }

    let summary = |pick: fn(&Measured) -> Duration| {
        Summary::of(&measured.iter().map(pick).collect::<Vec<_>>())
            .context("no revocation measured")
    };
    let round_trips: Vec<Duration> = measured
        .iter()
        .flat_map(|one| one.poll_round_trips.iter().copied())
        .collect();
    let round_trip = Summary::of(&round_trips).context("no poll measured")?;
    let first_poll: usize = measured.iter().map(|one| one.refused_at_first_poll).sum();
    eprintln!(
        "revocation: t0 is when DeleteSession returned. From t0 each node is polled back to \
         back on a kept-alive connection; (a) takes, per node, when the first refused poll was \
         sent, so it is late by at most the gap between two polls (a cache-hit round trip, \
         p50 {}). {first_poll} of {} node checks were refused at the first poll: revoked \
         before DeleteSession's answer reached the driver.",
        millis(round_trip.p50),
        measured.len() * nodes.len()
    );

    let mut table = Table::new(&[
        &format!(
            "revocation ({} sessions, {} nodes)",
            measured.len(),
            nodes.len()
        ),
        "p50",
        "p99",
        "max",
    ]);
    let mut row = |name: &str, summary: Summary| {
        table.row(vec![
            name.to_owned(),
            millis(summary.p50),
            millis(summary.p99),
            millis(summary.max),
        ]);
    };
    row(
        "(a) every node refuses the cookie (401), from DeleteSession's return",
        summary(|one| one.every_node)?,
    );
    row(
        "(b) the WebSocket's close frame arrives, from DeleteSession's return",
        summary(|one| one.websocket)?,
    );
    row("DeleteSession call itself", summary(|one| one.delete_call)?);
    row(
        "resolution of (a): gap between two polls (cache-hit round trip)",
        round_trip,
    );
    Ok(table)
}

async fn revoke_one(
    sessions: &mut SessionServiceClient<tonic::transport::Channel>,
    pollers: &mut [Connection],
    websocket_node: &DataPlaneProcess,
    n: u64,
) -> Result<Measured> {
    let (token, handle) = grpc::create_session(sessions, n).await?;
    let cookie = grpc::cookie(&token);
    // Cached on every node: the first request validates it, the second is a cache hit and
    // gives a round trip of the kind the pollers repeat.
    let mut poll_round_trips = Vec::new();
    for poller in pollers.iter_mut() {
        accepted(poller, &cookie).await?;
        poll_round_trips.push(accepted(poller, &cookie).await?);
    }
    let mut socket = websocket(websocket_node.address, "/ws", &cookie).await?;
    socket.send(Message::text("ping")).await?;
    match next_frame(&mut socket).await? {
        Some(Message::Text(text)) if text.as_str() == "ping" => {}
        other => bail!("the WebSocket did not echo: {other:?}"),
    }
    // The close frame's arrival is timed by a task of its own that waits on the socket,
    // so it costs nothing until the frame comes.
    let close = tokio::spawn(async move {
        let frame = next_frame(&mut socket).await;
        (Instant::now(), frame)
    });

    let sent = Instant::now();
    sessions
        .delete_session(DeleteSessionRequest {
            session: Some(SessionSelector {
                by: Some(By::Handle(handle)),
            }),
        })
        .await
        .context("DeleteSession")?;
    let t0 = Instant::now();
    let delete_call = t0 - sent;

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

    let (closed, frame) = tokio::time::timeout(GIVE_UP, close)
        .await
        .context("no WebSocket close frame within 5 s of the revocation")?
        .context("WebSocket reader panicked")?;
    match frame? {
        Some(Message::Close(_)) => {}
        other => bail!("the WebSocket ended without a close frame: {other:?}"),
    }
    Ok(Measured {
        every_node,
        websocket: closed.saturating_duration_since(t0),
        delete_call,
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
