//! A TCP relay the test controls, to put a network between two of its processes: it listens
//! on `127.0.0.1:0` and forwards every connection to a target until [`Relay::cut`] drops them
//! all (or silences them), and then refuses or black-holes new ones until [`Relay::heal`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a cut relay does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Closes it at once, as a host with nothing listening (or a crashed process) would.
    Refuse,
    /// Accepts it and never forwards a byte, as a network dropping packets would: the peer
    /// learns nothing until its own timeouts fire.
    BlackHole,
    /// As `BlackHole`, and live connections are not dropped but go silent (nothing forwarded
    /// either way, nothing closed), as when the host at the other end loses power: only the
    /// peers' keep-alives and timeouts can tell. Healing lets them carry on.
    Silent,
}

#[derive(Debug, Default)]
struct State {
    cut: Option<Cut>,
    /// Forwarding tasks; aborting one drops both of its sockets.
    live: Vec<JoinHandle<()>>,
    /// Connections accepted while black-holed, held open (and unread) until healed.
    held: Vec<TcpStream>,
    /// Connections accepted so far.
    accepted: u64,
}

/// A running relay; stops listening and drops every connection when dropped.
#[derive(Debug)]
pub struct Relay {
    address: SocketAddr,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
    /// `true` while live connections are silenced.
    silent: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let address = listener.local_addr().expect("bound address");
        let state = Arc::new(Mutex::new(State::default()));
        let (silent, _) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, target, state.clone(), silent.clone()));
        Self {
            address,
            target,
            state,
            silent,
            accept,
        }
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Drops every live connection, and treats new ones as `how` says until [`heal`](Self::heal).
    pub fn cut(&self, how: Cut) {
        let mut state = lock(&self.state);
        state.cut = Some(how);
        if how == Cut::Silent {
            self.silent.send_replace(true);
        } else {
            for task in state.live.drain(..) {
                task.abort();
            }
        }
    }

    /// Forwards new connections again, and silenced ones carry on; those held by a black
    /// hole are closed (their peers reconnect).
    pub fn heal(&self) {
        let mut state = lock(&self.state);
        state.cut = None;
        state.held.clear();
        self.silent.send_replace(false);
    }

    /// Connections accepted so far, forwarded or not.
    pub fn accepted(&self) -> u64 {
        lock(&self.state).accepted
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut(Cut::Refuse);
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
    silent: watch::Sender<bool>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let mut state = lock(&state);
        state.accepted += 1;
        match state.cut {
            Some(Cut::Refuse) => drop(inbound),
            Some(Cut::BlackHole | Cut::Silent) => state.held.push(inbound),
            None => {
                state.live.retain(|task| !task.is_finished());
                state
                    .live
                    .push(tokio::spawn(forward(inbound, target, silent.subscribe())));
            }
        }
    }
}

async fn forward(inbound: TcpStream, target: SocketAddr, silent: watch::Receiver<bool>) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let (inbound_read, inbound_write) = inbound.into_split();
    let (outbound_read, outbound_write) = outbound.into_split();
    tokio::join!(
        pump(inbound_read, outbound_write, silent.clone()),
        pump(outbound_read, inbound_write, silent),
    );
}

/// Copies one direction until either end closes, holding everything back while silenced.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut silent: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if silent.wait_for(|silent| !*silent).await.is_err() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = silent.wait_for(|silent| *silent) => continue,
        };
        let count = match read {
            Ok(0) | Err(_) => return,
            Ok(count) => count,
        };
        // Bytes read just as the relay went silent are held back until it heals.
        if silent.wait_for(|silent| !*silent).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..count]).await.is_err() {
            return;
        }
    }
}
