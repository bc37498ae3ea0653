//! A WebSocket relayed frame by frame. Each frame's header is checked and forwarded, then its
//! payload is copied through a small buffer as it arrives: nothing is reassembled into
//! messages. What a socket costs the node therefore does not depend on what its two sides
//! send: at most [`RELAY_BUFFER`] bytes per direction, however large a frame and however long
//! a fragmented message stays unfinished. (Reassembling up to 16 MiB per message let 50
//! sockets holding unfinished messages take a node past its 1 GiB limit.)
//!
//! The node still speaks for itself at frame boundaries: when the session ends (close code
//! 1008), when the node shuts down (1001), when a frame is over the limit (1009) and when a
//! side breaks the protocol (1002).

use std::io::Cursor;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};
use tokio_util::sync::CancellationToken;

/// Most bytes a direction holds: read from one side and not yet written to the other. Four
/// times tokio's own copy buffer, so a busy socket moves large frames in few system calls.
pub const RELAY_BUFFER: usize = 64 << 10;
/// What a direction holds between frames. Interactive traffic is mostly frames this small;
/// 10,000 idle sockets hold 20 MiB of these.
const IDLE_BUFFER: usize = 1 << 10;
/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_HEADER: usize = 14;
/// Control frames carry at most this much (RFC 6455, 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;
/// Once one side's close frame has been relayed, how long the other has to answer with its
/// own before both connections are dropped.
const CLOSE_REPLY: Duration = Duration::from_secs(5);
/// Once the node closes a socket itself, how long a frame already under way has to finish
/// (a close frame cannot cut into it) and the close frames have to be written.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// One end of a relayed WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }
}

/// Why the node ends a WebSocket itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    SessionEnded,
    ShuttingDown,
    /// This side sent a frame over `limits.max_websocket_frame_bytes`.
    TooBig(Side),
    /// This side sent something RFC 6455 does not allow.
    ProtocolError(Side),
    /// This side's connection ended, or failed, without a close frame.
    Gone(Side),
}

impl Stop {
    /// The close frame the node sends `to`; none to a side whose connection is gone.
    fn close_frame(self, to: Side) -> Option<Frame> {
        let (code, reason) = match self {
            Stop::Gone(side) if side == to => return None,
            Stop::SessionEnded if to == Side::Client => (CloseCode::Policy, "session ended"),
            Stop::ShuttingDown if to == Side::Client => (CloseCode::Away, "node shutting down"),
            Stop::TooBig(_) => (CloseCode::Size, "frame too big"),
            Stop::ProtocolError(side) if side == to => (CloseCode::Protocol, "protocol error"),
            // The upstream is told no more than that the socket is closing, as before frames
            // were relayed one by one; so is a client whose upstream went away.
            _ => return Some(Frame::close(None)),
        };
        Some(Frame::close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
    }
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The source's close frame went through; it sends nothing more.
    Closed,
    /// The node's close frame was written to the destination, after a stop.
    Stopped,
    /// The source sent a frame the node refuses; the destination was told.
    Refused(Stop),
    /// The source's connection ended or failed.
    SourceGone,
    /// Writing to the destination failed.
    DestinationGone,
}

/// Relays frames between the client and the upstream until both have closed, either
/// connection ends, the session ends (`ended`) or the node shuts down (`shutting_down`).
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    max_frame_bytes: u64,
    ended: CancellationToken,
    shutting_down: CancellationToken,
) where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let (stop, stopped) = watch::channel(None);
    let mut to_upstream = Direction::new(
        client_read,
        upstream_write,
        Side::Client,
        max_frame_bytes,
        stopped.clone(),
    );
    let mut to_client = Direction::new(
        upstream_read,
        client_write,
        Side::Upstream,
        max_frame_bytes,
        stopped,
    );
    let upward = to_upstream.run();
    let downward = to_client.run();
    tokio::pin!(upward, downward);
    let (mut upward_done, mut downward_done) = (false, false);
    // Set once the end is in sight: when it passes, both connections are dropped as they are.
    let mut deadline: Option<tokio::time::Instant> = None;
    let stop_with = |reason: Stop, deadline: &mut Option<tokio::time::Instant>| {
        // The first reason wins: it is the one both sides hear.
        stop.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some(reason);
            }
            first
        });
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + STOP_GRACE);
    };
    while !(upward_done && downward_done) {
        let give_up = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = ended.cancelled(), if deadline.is_none() => {
                stop_with(Stop::SessionEnded, &mut deadline);
            }
            () = shutting_down.cancelled(), if deadline.is_none() => {
                stop_with(Stop::ShuttingDown, &mut deadline);
            }
            ending = &mut upward, if !upward_done => {
                upward_done = true;
                react(ending, Side::Client, &mut deadline, &stop_with);
            }
            ending = &mut downward, if !downward_done => {
                downward_done = true;
                react(ending, Side::Upstream, &mut deadline, &stop_with);
            }
            () = give_up => return,
        }
    }
}

/// What the other direction is told when the one reading from `source` ends.
fn react(
    ending: Ending,
    source: Side,
    deadline: &mut Option<tokio::time::Instant>,
    stop_with: &impl Fn(Stop, &mut Option<tokio::time::Instant>),
) {
    match ending {
        // The other side has its turn to close; it need not be told anything.
        Ending::Closed => {
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_REPLY);
        }
        Ending::Stopped => {}
        Ending::Refused(reason) => stop_with(reason, deadline),
        Ending::SourceGone => stop_with(Stop::Gone(source), deadline),
        Ending::DestinationGone => stop_with(Stop::Gone(source.other()), deadline),
    }
}

/// Frames from one side to the other.
struct Direction<R, W> {
    from: R,
    to: W,
    /// The side `from` reads.
    source: Side,
    /// Bytes read from `from`; those before `start` have been written to `to`.
    buffer: Vec<u8>,
    start: usize,
    /// Payload bytes of the current frame still to copy; 0 between frames.
    remaining: u64,
    /// The current frame is a close frame: once it is through, the direction is done.
    closing: bool,
    /// Inside a fragmented message: the next data frame must be a continuation.
    fragmented: bool,
    /// Set by the node once it closes the socket: finish the current frame, start no other.
    stopping: bool,
    max_frame_bytes: u64,
    stopped: watch::Receiver<Option<Stop>>,
}

impl<R, W> Direction<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    fn new(
        from: R,
        to: W,
        source: Side,
        max_frame_bytes: u64,
        stopped: watch::Receiver<Option<Stop>>,
    ) -> Self {
        Self {
            from,
            to,
            source,
            buffer: Vec::new(),
            start: 0,
            remaining: 0,
            closing: false,
            fragmented: false,
            stopping: false,
            max_frame_bytes,
            stopped,
        }
    }

    async fn run(&mut self) -> Ending {
        loop {
            match self.forward().await {
                Ok(Some(ending)) => return ending,
                Ok(None) => {}
                Err(ending) => return ending,
            }
            if self.to.flush().await.is_err() {
                return Ending::DestinationGone;
            }
            let stop = *self.stopped.borrow();
            if let Some(reason) = stop {
                return self.finish(reason).await;
            }
            self.make_room();
            // Reading is cancel safe: bytes read are in the buffer or still in the socket.
            let source_open = tokio::select! {
                read = self.from.read_buf(&mut self.buffer) => matches!(read, Ok(n) if n > 0),
                changed = self.stopped.wait_for(Option::is_some) => {
                    if changed.is_err() {
                        // The relay is over.
                        return Ending::Stopped;
                    }
                    true
                }
            };
            if !source_open {
                return match self.finish(Stop::Gone(self.source)).await {
                    Ending::Stopped => Ending::SourceGone,
                    other => other,
                };
            }
        }
    }

    /// Writes what the buffer holds of whole headers and of payloads; `Ok(None)` when it
    /// needs more bytes from the source.
    async fn forward(&mut self) -> Result<Option<Ending>, Ending> {
        loop {
            if self.remaining > 0 {
                let buffered = &self.buffer[self.start..];
                if buffered.is_empty() {
                    return Ok(None);
                }
                let take = buffered
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                if self.to.write_all(&buffered[..take]).await.is_err() {
                    return Err(Ending::DestinationGone);
                }
                self.start += take;
                self.remaining -= take as u64;
                if self.remaining > 0 {
                    return Ok(None);
                }
            }
            if self.closing {
                let _ = self.to.flush().await;
                let _ = self.to.shutdown().await;
                return Ok(Some(Ending::Closed));
            }
            // Once the node has stopped the socket, no new frame starts, even one already
            // read: the peer's reply to the node's close (read together with the stop) must
            // not overtake the node's own close frame to the client.
            if self.stopping || self.stopped.borrow().is_some() {
                return Ok(None);
            }
            // Between frames: is a whole header buffered?
            let mut cursor = Cursor::new(&self.buffer[self.start..]);
            let (header, length) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(None),
                Err(_) => return Err(self.refuse(Stop::ProtocolError(self.source)).await),
            };
            let header_length = usize::try_from(cursor.position()).unwrap_or(MAX_HEADER);
            if let Err(reason) = self.admit(&header, length) {
                return Err(self.refuse(reason).await);
            }
            let header_bytes = &self.buffer[self.start..self.start + header_length];
            // Forwarded as it came: a browser's mask is as good for the upstream as any.
            if self.to.write_all(header_bytes).await.is_err() {
                return Err(Ending::DestinationGone);
            }
            self.start += header_length;
            self.remaining = length;
            self.closing = header.opcode == OpCode::Control(Control::Close);
        }
    }

    /// Whether a frame with this header may pass; keeps track of fragmented messages.
    fn admit(&mut self, header: &FrameHeader, length: u64) -> Result<(), Stop> {
        let broken = Err(Stop::ProtocolError(self.source));
        // No extension was negotiated (the node removes the offer), so no reserved bit is set.
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return broken;
        }
        // Clients mask every frame; servers none (RFC 6455, 5.1).
        if header.mask.is_some() != (self.source == Side::Client) {
            return broken;
        }
        if length > self.max_frame_bytes {
            return Err(Stop::TooBig(self.source));
        }
        match header.opcode {
            OpCode::Control(_) if !header.is_final || length > MAX_CONTROL_PAYLOAD => broken,
            OpCode::Control(_) => Ok(()),
            OpCode::Data(Data::Continue) if !self.fragmented => broken,
            OpCode::Data(Data::Text | Data::Binary) if self.fragmented => broken,
            OpCode::Data(_) => {
                self.fragmented = !header.is_final;
                Ok(())
            }
        }
    }

    /// The source sent what the node refuses: the destination hears why and is closed.
    async fn refuse(&mut self, reason: Stop) -> Ending {
        self.write_close(reason).await;
        Ending::Refused(reason)
    }

    /// The node closes the socket: the frame under way is finished (a close frame cannot
    /// cut into it; the relay's grace bounds how long that may take), then the destination
    /// gets the node's close frame.
    async fn finish(&mut self, reason: Stop) -> Ending {
        self.stopping = true;
        loop {
            match self.forward().await {
                Ok(Some(ending)) => return ending,
                Ok(None) if self.remaining == 0 => break,
                Ok(None) => {}
                Err(ending) => return ending,
            }
            if reason == Stop::Gone(self.source) {
                // The rest of the frame will never come: the destination cannot be told.
                let _ = self.to.shutdown().await;
                return Ending::Stopped;
            }
            self.make_room();
            match self.from.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => {
                    let _ = self.to.shutdown().await;
                    return Ending::Stopped;
                }
                Ok(_) => {}
            }
        }
        self.write_close(reason).await;
        Ending::Stopped
    }

    async fn write_close(&mut self, reason: Stop) {
        let destination = self.source.other();
        if let Some(mut frame) = reason.close_frame(destination) {
            if destination == Side::Upstream {
                frame.header_mut().mask = Some(rand::random());
            }
            let mut bytes = Vec::with_capacity(MAX_HEADER + MAX_CONTROL_PAYLOAD as usize);
            if frame.format(&mut bytes).is_ok() {
                let _ = self.to.write_all(&bytes).await;
            }
        }
        let _ = self.to.flush().await;
        let _ = self.to.shutdown().await;
    }

    /// Readies the buffer for the next read: written bytes dropped, room for what the
    /// current frame still needs (at most [`RELAY_BUFFER`]), and between frames no more
    /// than [`IDLE_BUFFER`] held.
    fn make_room(&mut self) {
        if self.start == self.buffer.len() {
            self.buffer.clear();
            if self.remaining == 0 && self.buffer.capacity() > IDLE_BUFFER {
                self.buffer = Vec::new();
            }
        } else {
            // Part of a header: fewer than MAX_HEADER bytes.
            self.buffer.drain(..self.start);
        }
        self.start = 0;
        let wanted = u64::try_from(self.buffer.len())
            .unwrap_or(u64::MAX)
            .saturating_add(self.remaining)
            .saturating_add(MAX_HEADER as u64);
        let wanted = usize::try_from(wanted)
            .unwrap_or(usize::MAX)
            .clamp(IDLE_BUFFER, RELAY_BUFFER);
        if self.buffer.capacity() < wanted {
            self.buffer.reserve_exact(wanted - self.buffer.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_hears_why_the_node_closed_and_the_upstream_that_it_closed() {
        let code = |stop: Stop, to| {
            stop.close_frame(to).map(|frame| {
                frame
                    .payload()
                    .get(..2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
            })
        };
        assert_eq!(code(Stop::SessionEnded, Side::Client), Some(Some(1008)));
        assert_eq!(code(Stop::ShuttingDown, Side::Client), Some(Some(1001)));
        assert_eq!(code(Stop::SessionEnded, Side::Upstream), Some(None));
        assert_eq!(
            code(Stop::TooBig(Side::Client), Side::Client),
            Some(Some(1009))
        );
        assert_eq!(
            code(Stop::TooBig(Side::Client), Side::Upstream),
            Some(Some(1009))
        );
        assert_eq!(
            code(Stop::ProtocolError(Side::Upstream), Side::Upstream),
            Some(Some(1002))
        );
        assert_eq!(code(Stop::Gone(Side::Upstream), Side::Upstream), None);
        assert_eq!(code(Stop::Gone(Side::Upstream), Side::Client), Some(None));
    }

    #[tokio::test]
    async fn a_large_frame_crosses_byte_for_byte() {
        // A client frame of 1 MiB, sent in one go, crosses in pieces of at most RELAY_BUFFER
        // and arrives as it was sent, mask included.
        let (client, mut client_peer) = tokio::io::duplex(4 << 20);
        let (upstream, mut upstream_peer) = tokio::io::duplex(4 << 20);
        let relay = tokio::spawn(relay(
            client,
            upstream,
            16 << 20,
            CancellationToken::new(),
            CancellationToken::new(),
        ));
        let mut frame = Vec::new();
        let mut masked = Frame::message(vec![3u8; 1 << 20], OpCode::Data(Data::Binary), true);
        masked.header_mut().mask = Some([1, 2, 3, 4]);
        masked.format(&mut frame).expect("format");
        client_peer.write_all(&frame).await.expect("write");
        let mut received = vec![0u8; frame.len()];
        upstream_peer.read_exact(&mut received).await.expect("read");
        assert_eq!(received, frame, "the frame crosses byte for byte");
        drop(client_peer);
        drop(upstream_peer);
        relay
            .await
            .expect("the relay ends when both sides are gone");
    }
}
