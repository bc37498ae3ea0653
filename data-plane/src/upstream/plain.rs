//! Kept-alive plain TCP connections to one upstream node, for the node's own HTTP/1 engine
//! (`crate::http1`), which reads and writes the bytes itself. Each connection carries its
//! read buffer: bytes that arrived past one response (none, from an upstream that frames
//! correctly) make the connection unfit for another.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::idle::{IdleList, Reusable};

/// One node's idle plain connections.
pub type PlainConnections = IdleList<PlainConnection>;

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
}

impl Reusable for PlainConnection {
    /// Whether an idle connection can take a request: nothing arrived on it (an upstream's
    /// close, or bytes no request asked for) since its last response.
    fn is_reusable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(
            self.stream.try_read(&mut probe),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    fn taken(&mut self) {
        self.reused = true;
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
