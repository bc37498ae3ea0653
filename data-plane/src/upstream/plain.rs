//! Kept-alive plain TCP connections to one upstream node, for the node's own HTTP/1 engine
//! (`crate::http1`), which reads and writes the bytes itself. Each connection carries its
//! read buffer: bytes that arrived past one response (none, from an upstream that frames
//! correctly) make the connection unfit for another.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

/// Idle connections kept per node; one coming back to a full list is closed.
const MAX_IDLE: usize = 256;
/// An idle connection is closed rather than reused after this long: upstreams close theirs
/// too (nginx after 75 s), and reusing one they are closing costs a failed request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// What a connection's read buffer starts with: most response heads fit.
const READ_BUFFER: usize = 8 * 1024;

/// One open connection to an upstream node.
#[derive(Debug)]
pub struct PlainConnection {
    pub stream: TcpStream,
    /// Read from the stream and not yet used.
    pub read: BytesMut,
    /// Taken from the idle list rather than opened for this request: the upstream may have
    /// closed it in the meantime.
    pub reused: bool,
}

impl PlainConnection {
    /// Opens a connection to `address` within `timeout`.
    pub async fn open(address: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            read: BytesMut::with_capacity(READ_BUFFER),
            reused: false,
        })
    }

    /// Whether an idle connection can take a request: nothing arrived on it (an upstream's
    /// close, or bytes no request asked for) since its last response.
    fn is_reusable(&self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(
            self.stream.try_read(&mut probe),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
        )
    }
}

struct Idle {
    connection: PlainConnection,
    since: Instant,
}

/// One node's idle connections, most recently used last.
#[derive(Default)]
pub struct PlainConnections {
    idle: Mutex<VecDeque<Idle>>,
}

impl std::fmt::Debug for PlainConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainConnections")
            .field("idle", &self.len())
            .finish()
    }
}

impl PlainConnections {
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used connection that is still good; stale ones are dropped (which
    /// closes them) on the way.
    pub fn checkout(&self) -> Option<PlainConnection> {
        loop {
            let Idle {
                mut connection,
                since,
            } = self.lock().pop_back()?;
            if since.elapsed() < IDLE_TIMEOUT && connection.is_reusable() {
                connection.reused = true;
                return Some(connection);
            }
        }
    }

    /// Keeps `connection` for the next request: call only once its response has been read
    /// to the end and the upstream did not ask to close.
    pub fn checkin(&self, connection: PlainConnection) {
        if !connection.read.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        // The least recently used end is where connections go stale while traffic is low.
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                connection,
                since: now,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn a_connection_the_upstream_closed_or_wrote_on_is_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = PlainConnections::default();

        let open = PlainConnection::open(address, Duration::from_secs(1))
            .await
            .unwrap();
        let (kept, _) = listener.accept().await.unwrap();
        connections.checkin(open);
        let reused = connections.checkout().expect("an open, quiet connection");
        assert!(reused.reused);
        connections.checkin(reused);

        drop(kept);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(connections.checkout().is_none(), "closed by the upstream");

        let open = PlainConnection::open(address, Duration::from_secs(1))
            .await
            .unwrap();
        let (mut talker, _) = listener.accept().await.unwrap();
        connections.checkin(open);
        talker.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            connections.checkout().is_none(),
            "bytes no request asked for"
        );
    }
}
