//! `memory`: a data-plane node's RSS idle, holding many cached sessions, then also holding
//! many idle WebSockets, then with some of those WebSockets busy moving large messages.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use clap::Args;
use futures_util::{SinkExt as _, StreamExt as _};
use gatehouse_proto::v1::session_service_client::SessionServiceClient;
use gatehouse_testkit::http_client::{Connection, REQUEST_TIMEOUT, WebSocket, websocket};
use gatehouse_testkit::{ControlPlaneProcess, DataPlaneProcess, RedisServer, wait_for};
use http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

use crate::grpc;
use crate::processes::{self, Store, UpstreamProcess};
use crate::stats::{Table, mib};

/// The node's own default `cache.max_sessions`.
const DEFAULT_CACHE_MAX_SESSIONS: u64 = 100_000;
/// The node's own default `limits.max_connections`.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Descriptors a node needs besides its client and upstream connections: listeners, the
/// control-plane channel, epoll, log output, and some slack.
const SPARE_DESCRIPTORS: u64 = 300;
/// Time for a node to settle (close connections, free buffers) before its RSS is read.
const SETTLE: Duration = Duration::from_secs(2);
/// What each busy WebSocket sends, again and again, waiting for the echo each time: one
/// frame twice the node's relay buffer (64 KiB per direction), so that the buffers fill.
const BUSY_MESSAGE_BYTES: usize = 128 << 10;
/// How long the busy WebSockets move messages while the node's RSS is sampled (smoke: 1 s).
const BUSY_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Sessions created and cached on the node [default: 100000; smoke 1000]
    #[arg(long)]
    sessions: Option<u64>,
    /// Idle WebSockets opened through the node [default: 10000, fewer if the open-file limit
    /// cannot hold two descriptors each in the node; smoke 100]
    #[arg(long)]
    websockets: Option<u64>,
    /// Of the idle WebSockets, how many then echo 128 KiB messages back to back while RSS
    /// is sampled [default: 1000; smoke 10]
    #[arg(long)]
    busy_websockets: Option<u64>,
    /// Requests in flight while creating and caching sessions and opening WebSockets
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// The node's `cache.max_sessions` [default: --sessions, at least the node's default
    /// 100000: the cache holds exactly as many as it is sized for]
    #[arg(long)]
    cache_max_sessions: Option<u64>,
    /// The control plane's store
    #[arg(long, value_enum, default_value_t = StoreKind::Redis)]
    store: StoreKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    Redis,
    Memory,
}

pub async fn run(bin_dir: &Path, smoke: bool, args: &MemoryArgs) -> Result<Table> {
    let sessions = args.sessions.unwrap_or(if smoke { 1_000 } else { 100_000 });
    let requested_websockets = args.websockets.unwrap_or(if smoke { 100 } else { 10_000 });
    let concurrency = args.concurrency.max(1);
    let cache_max_sessions = args
        .cache_max_sessions
        .unwrap_or(sessions.max(DEFAULT_CACHE_MAX_SESSIONS));

    // A WebSocket through the node holds two descriptors there (client side, upstream side).
    let (open_files, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let budget = open_files.saturating_sub(SPARE_DESCRIPTORS + 2 * concurrency as u64) / 2;
    let websockets = requested_websockets.min(budget);
    if websockets < requested_websockets {
        eprintln!(
            "memory: the open-file limit ({open_files}) holds {websockets} WebSockets through \
             one node, not {requested_websockets}: measuring {websockets}"
        );
    }
    let max_connections =
        DEFAULT_MAX_CONNECTIONS.max(usize::try_from(websockets)? + 2 * concurrency + 100);

    let secret = processes::node_secret()?;
    let redis = match args.store {
        StoreKind::Redis => Some(RedisServer::start().await?),
        StoreKind::Memory => None,
    };
    let store = redis
        .as_ref()
        .map_or(Store::Memory, |redis| Store::Redis(redis.url()));
    // A process of its own: its sockets would otherwise count against the driver's limit.
    let upstream = UpstreamProcess::start().await?;
    let control_plane =
        processes::control_plane(bin_dir, &store, upstream.address, &secret).await?;
    let node = processes::data_plane(
        bin_dir,
        &control_plane,
        &secret,
        "bench-node",
        &[
            format!("cache.max_sessions={cache_max_sessions}"),
            format!("limits.max_connections={max_connections}"),
            format!("limits.max_websockets={max_connections}"),
        ],
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let rss_idle = node.process.rss()?;

    eprintln!("memory: creating {sessions} sessions");
    let tokens = create_sessions(&control_plane, sessions, concurrency).await?;
    eprintln!("memory: caching them on the node");
    cache_sessions(&node, &tokens, concurrency).await?;
    tokio::time::sleep(SETTLE).await;
    let cached = node.metric("gatehouse_cached_sessions").await?;
    if cached < sessions as f64 {
        eprintln!("memory: the node's cache holds {cached} of {sessions} sessions");
    }
    ensure!(cached > 0.0, "the node's cache holds no session");
    let rss_sessions = node.process.rss()?;

    eprintln!("memory: opening {websockets} idle WebSockets");
    let sockets = open_websockets(&node, &tokens, websockets, concurrency).await?;
    let open = wait_for(
        "the node to count every WebSocket",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let open = node.metric("gatehouse_open_websockets").await?;
            Ok((open >= websockets as f64).then_some(open))
        },
    )
    .await?;
    tokio::time::sleep(SETTLE).await;
    let rss_websockets = node.process.rss()?;
    // Still open while RSS was read.
    ensure!(sockets.len() as u64 == websockets, "WebSockets were lost");

    let busy = args
        .busy_websockets
        .unwrap_or(if smoke { 10 } else { 1_000 })
        .min(websockets);
    let busy_for = if smoke {
        Duration::from_secs(1)
    } else {
        BUSY_FOR
    };
    eprintln!("memory: {busy} of the WebSockets echo {BUSY_MESSAGE_BYTES}-byte messages");
    let (sockets, rss_busy, busy_messages) =
        keep_busy(&node, sockets, usize::try_from(busy)?, busy_for).await?;
    drop(sockets);

    let per_session = rss_sessions.saturating_sub(rss_idle) as f64 / cached;
    let per_websocket =
        rss_websockets.saturating_sub(rss_sessions) as f64 / websockets.max(1) as f64;
    let mut table = Table::new(&["memory (one data-plane node)", "value"]);
    let mut row = |name: &str, value: String| table.row(vec![name.to_owned(), value]);
    row("RSS idle (ready, empty cache)", mib(rss_idle));
    row(
        "sessions created; cached (gatehouse_cached_sessions)",
        format!("{sessions}; {cached:.0} (cache.max_sessions = {cache_max_sessions})"),
    );
    row(
        &format!("**RSS with {cached:.0} cached sessions** (target ≤ 64 MiB at 100k)"),
        format!("**{}**", mib(rss_sessions)),
    );
    row("RSS per cached session", format!("{per_session:.0} bytes"));
    row(
        "idle WebSockets open (gatehouse_open_websockets)",
        format!("{open:.0} (limits.max_connections = {max_connections})"),
    );
    row(
        "RSS with the sessions and the WebSockets",
        mib(rss_websockets),
    );
    row(
        "**RSS per idle WebSocket** (target ≤ 20 KiB)",
        format!("**{:.1} KiB**", per_websocket / 1024.0),
    );
    row(
        &format!(
            "busy WebSockets, each echoing {} KiB messages back to back for {} s",
            BUSY_MESSAGE_BYTES >> 10,
            busy_for.as_secs()
        ),
        format!("{busy} ({busy_messages} messages echoed)"),
    );
    row("RSS with them busy (highest sample)", mib(rss_busy));
    row(
        "**RSS per busy WebSocket, beyond idle** (bound: 2 × 64 KiB relay buffers)",
        format!(
            "**{:.1} KiB**",
            rss_busy.saturating_sub(rss_websockets) as f64 / busy.max(1) as f64 / 1024.0
        ),
    );
    Ok(table)
}

/// Has the first `busy` of `sockets` echo [`BUSY_MESSAGE_BYTES`] messages back to back for
/// `busy_for`; answers the sockets, the node's highest RSS meanwhile, and the messages
/// echoed.
async fn keep_busy(
    node: &DataPlaneProcess,
    mut sockets: Vec<WebSocket>,
    busy: usize,
    busy_for: Duration,
) -> Result<(Vec<WebSocket>, u64, u64)> {
    let idle = sockets.split_off(busy.min(sockets.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let message: tokio_tungstenite::tungstenite::Bytes = vec![0x42; BUSY_MESSAGE_BYTES].into();
    let mut tasks = Vec::with_capacity(sockets.len());
    for mut socket in sockets {
        let (stop, echoed, message) = (stop.clone(), echoed.clone(), message.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                socket.send(Message::Binary(message.clone())).await?;
                match tokio::time::timeout(REQUEST_TIMEOUT, socket.next()).await {
                    Ok(Some(Ok(Message::Binary(echo)))) if echo.len() == message.len() => {}
                    other => bail!("a busy WebSocket did not echo: {other:?}"),
                }
                echoed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(socket)
        }));
    }
    let started = tokio::time::Instant::now();
    let mut highest = node.process.rss()?;
    while started.elapsed() < busy_for {
        tokio::time::sleep(Duration::from_millis(200)).await;
        highest = highest.max(node.process.rss()?);
    }
    stop.store(true, Ordering::Relaxed);
    let mut sockets = idle;
    for task in tasks {
        sockets.push(task.await.context("busy WebSocket panicked")??);
    }
    Ok((sockets, highest, echoed.load(Ordering::Relaxed)))
}

/// Creates `count` sessions, `concurrency` calls in flight over a few HTTP/2 connections;
/// answers their tokens.
async fn create_sessions(
    control_plane: &ControlPlaneProcess,
    count: u64,
    concurrency: usize,
) -> Result<Vec<String>> {
    let channels = concurrency.div_ceil(8);
    let mut clients = Vec::with_capacity(channels);
    for _ in 0..channels {
        clients.push(SessionServiceClient::new(
            grpc::channel(&control_plane.endpoint()).await?,
        ));
    }
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let mut client = clients[worker % channels].clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return anyhow::Ok(tokens);
                }
                tokens.push(grpc::create_session(&mut client, n).await?.0);
            }
        }));
    }
    let mut tokens = Vec::with_capacity(usize::try_from(count)?);
    for task in tasks {
        tokens.extend(task.await.context("session creator panicked")??);
    }
    Ok(tokens)
}

/// One GET per session through the node, so that it validates and caches each one.
async fn cache_sessions(
    node: &DataPlaneProcess,
    tokens: &[String],
    concurrency: usize,
) -> Result<()> {
    let tokens: Arc<[String]> = tokens.into();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (tokens, next, address) = (tokens.clone(), next.clone(), node.address);
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(address).await?;
            loop {
                let Some(token) = tokens.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return anyhow::Ok(());
                };
                let (status, _) = connection.get("/", Some(&grpc::cookie(token))).await?;
                if status != StatusCode::OK {
                    bail!("a new session's request answered {status}");
                }
            }
        }));
    }
    for task in tasks {
        task.await.context("cache filler panicked")??;
    }
    Ok(())
}

/// Opens `count` WebSockets through the node (sessions taken in turn), each checked with one
/// echoed message, and leaves them idle.
async fn open_websockets(
    node: &DataPlaneProcess,
    tokens: &[String],
    count: u64,
    concurrency: usize,
) -> Result<Vec<WebSocket>> {
    ensure!(!tokens.is_empty(), "no session to open WebSockets with");
    let tokens: Arc<[String]> = tokens.into();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (tokens, next, address) = (tokens.clone(), next.clone(), node.address);
        tasks.push(tokio::spawn(async move {
            let mut sockets = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return anyhow::Ok(sockets);
                }
                let token = &tokens[usize::try_from(n)? % tokens.len()];
                let mut socket = websocket(address, "/ws", &grpc::cookie(token)).await?;
                socket.send(Message::text("hello")).await?;
                match tokio::time::timeout(REQUEST_TIMEOUT, socket.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "hello" => {}
                    other => bail!("WebSocket {n} did not echo: {other:?}"),
                }
                sockets.push(socket);
            }
        }));
    }
    let mut sockets = Vec::with_capacity(usize::try_from(count)?);
    for task in tasks {
        sockets.extend(task.await.context("WebSocket opener panicked")??);
    }
    Ok(sockets)
}
