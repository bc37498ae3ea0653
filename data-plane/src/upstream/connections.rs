//! Keep-alive HTTP/1.1 connections to one plain-HTTP upstream node, driven by the task of
//! the request that uses them.
//!
//! hyper-util's pooled client runs every upstream connection as a task of its own, so each
//! request hops from the client connection's task to the upstream connection's task and back
//! (a channel, a oneshot, two wake-ups), and the response body crosses tasks again; its
//! `send_request` alone was about a tenth of a request's instructions (BENCHMARKS.md gives
//! the figures for the change this was part of). Here the client
//! connection's task polls the upstream connection itself, while it waits for the response
//! head and while it relays the body, the way nginx serves both sockets from one event loop.
//! A connection goes back to its node's idle list once its response has been read to the
//! end; a response abandoned half-way closes it. TLS, HTTP/2 and upgrade requests keep using
//! hyper-util's client (`clients.rs`).

use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::idle::{IdleList, Reusable};
use crate::body::ProxyBody;

type Io = TokioIo<TcpStream>;

/// An open connection: the handle requests are sent through, and the connection state
/// machine, which only makes progress when polled.
pub struct Live {
    sender: SendRequest<ProxyBody>,
    connection: Connection<Io, ProxyBody>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Reusable for Live {
    /// Whether an idle connection can take a request: the upstream has not closed it, and
    /// the previous exchange is over. Polled without a waker: the request that takes the
    /// connection polls it again with its own.
    fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.connection.poll_without_shutdown(&mut cx).is_pending() && self.sender.is_ready()
    }
}

/// One node's idle inline connections.
pub type IdleConnections = IdleList<Live>;

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made; nothing was sent, and the request comes back.
    Connect(Box<Request<ProxyBody>>, std::io::Error),
    /// The request was (or may have been) sent, and the exchange failed.
    Failed(String),
}

/// Sends `request` (origin-form URI, `Host` set) to `address` over an idle connection, or a
/// new one. A pooled connection the upstream closed before the request was written is
/// replaced transparently; that costs nothing, since hyper hands the unsent request back.
pub async fn send(
    idle: &Arc<IdleConnections>,
    address: SocketAddr,
    connect_timeout: Duration,
    mut request: Request<ProxyBody>,
) -> Result<Response<InlineBody>, SendError> {
    loop {
        let (live, reused) = match idle.checkout() {
            Some(live) => (live, true),
            None => match connect(address, connect_timeout).await {
                Ok(live) => (live, false),
                Err(error) => return Err(SendError::Connect(Box::new(request), error)),
            },
        };
        match exchange(live, request, idle).await {
            Exchange::Answered(response) => return Ok(response),
            Exchange::Unsent(unsent) if reused => request = unsent,
            Exchange::Unsent(_) => {
                return Err(SendError::Failed(
                    "a new connection closed before taking the request".to_owned(),
                ));
            }
            Exchange::Failed(detail) => return Err(SendError::Failed(detail)),
        }
    }
}

/// How one request fared on one connection.
// The answer is by far the most common outcome: boxing it would cost an allocation per
// request to shrink a value that only lives until `send` returns.
#[allow(clippy::large_enum_variant)]
enum Exchange {
    Answered(Response<InlineBody>),
    /// The connection ended without writing any of the request, which comes back whole.
    Unsent(Request<ProxyBody>),
    /// The request was (or may have been) written, and no response came.
    Failed(String),
}

async fn exchange(
    live: Live,
    request: Request<ProxyBody>,
    home: &Arc<IdleConnections>,
) -> Exchange {
    let Live {
        mut sender,
        connection,
    } = live;
    let mut connection = Some(connection);
    let mut response = pin!(sender.try_send_request(request));
    let outcome = std::future::poll_fn(|cx| {
        // The connection writes the request and reads the answer only when polled.
        if let Some(live) = &mut connection
            && live.poll_without_shutdown(cx).is_ready()
        {
            // Ended. What it read is already in `response`; dropping it hands back a
            // request it never took (an idle connection whose close arrived just after
            // the checkout), so that the request can go out on another connection.
            connection = None;
        }
        response.as_mut().poll(cx)
    })
    .await;
    match outcome {
        Ok(response) => {
            let live = connection.map(|connection| Live { sender, connection });
            Exchange::Answered(response.map(|body| InlineBody {
                body,
                live,
                home: home.clone(),
            }))
        }
        Err(mut refused) => match refused.take_message() {
            Some(unsent) => Exchange::Unsent(unsent),
            None => Exchange::Failed(refused.into_error().to_string()),
        },
    }
}

async fn connect(address: SocketAddr, timeout: Duration) -> std::io::Result<Live> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    Ok(Live { sender, connection })
}

/// A response body read from an inline connection. Reading it drives the connection; once
/// it is read to the end, the connection goes back to its node's idle list.
pub struct InlineBody {
    body: Incoming,
    /// `None` once the connection has ended or been given back.
    live: Option<Live>,
    home: Arc<IdleConnections>,
}

impl std::fmt::Debug for InlineBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InlineBody")
            .field("connection", &self.live.is_some())
            .finish()
    }
}

impl InlineBody {
    /// Gives the connection back if the exchange ended cleanly. One more poll lets it take
    /// in the end of the response and ask for the next request.
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut live) = self.live.take()
            && live.connection.poll_without_shutdown(cx).is_pending()
            && live.sender.is_ready()
        {
            self.home.checkin(live);
        }
    }
}

impl Body for InlineBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(live) = &mut this.live
            && live.connection.poll_without_shutdown(cx).is_ready()
        {
            // Ended: what it read is already in `body`; nothing more will come.
            this.live = None;
        }
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Err(_)) => this.live = None,
            None => this.release(cx),
            Some(Ok(_)) if this.body.is_end_stream() => this.release(cx),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for InlineBody {
    /// A body known to be empty is never polled (hyper checks `is_end_stream` first), so its
    /// connection is given back here.
    fn drop(&mut self) {
        if self.live.is_some() && self.body.is_end_stream() {
            self.release(&mut Context::from_waker(Waker::noop()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Empty};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::oneshot;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    fn get() -> Request<ProxyBody> {
        Request::builder()
            .uri("/")
            .header("host", "upstream")
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .unwrap()
    }

    /// An upstream that answers one request on its first connection and closes that
    /// connection when told; later connections answer every request.
    async fn upstream() -> (SocketAddr, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (close, closed) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0; 4096];
            let _ = first.read(&mut buffer).await.unwrap();
            first.write_all(OK).await.unwrap();
            let _ = closed.await;
            drop(first);
            loop {
                let (mut next, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buffer = vec![0; 4096];
                    while next.read(&mut buffer).await.unwrap_or(0) > 0 {
                        if next.write_all(OK).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (address, close)
    }

    #[tokio::test]
    async fn a_request_an_idle_connection_never_took_comes_back_and_goes_out_again() {
        let (address, close) = upstream().await;
        let idle = Arc::new(IdleConnections::default());
        let response = send(&idle, address, Duration::from_secs(1), get())
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
        assert_eq!(idle.len(), 1, "the connection went back to the idle list");

        // The upstream's close arrives between the checkout's check and the first poll.
        let live = idle.checkout().expect("the idle connection looks reusable");
        close.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Exchange::Unsent(request) = exchange(live, get(), &idle).await else {
            panic!("the request was never written, so it must come back");
        };

        let response = send(&idle, address, Duration::from_secs(1), request)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "ok"
        );
    }
}
