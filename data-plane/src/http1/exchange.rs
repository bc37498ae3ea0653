//! One request to an upstream node over the engine's own connections: the head and the body
//! written (in one write when the body is at hand), the response head read. It is an
//! [`Attempt`] of the pool's policy, so retries, ejection and in-flight counting are those of
//! every other request.

use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use http::{HeaderValue, Method};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::relay::{Decoding, Relay};
use super::request_head::may_end_a_head;
use super::response_head::{self, ParsedResponse, ResponseHead};
use crate::upstream::plain::PlainConnection;
use crate::upstream::{Attempt, AttemptError, Member};

/// The largest response head read, as hyper's client allows (8 KiB + 4 KiB per header).
const MAX_RESPONSE_HEAD: usize = 8192 + 4096 * 100;

/// The request as it goes upstream, and the client it came from (its body is read from
/// there as it is sent).
#[derive(Debug)]
pub struct PlainAttempt<'a, C> {
    /// The request head, written as hyper's client writes it.
    pub head: Vec<u8>,
    pub method: &'a Method,
    pub body_length: u64,
    pub client: &'a mut C,
    /// What was read from the client past the request head.
    pub client_read: &'a mut BytesMut,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Some of the body has been read from the client: the request cannot be sent again.
    started: bool,
    /// All of the body went upstream.
    body_sent: bool,
    /// The head has no `Host`: each attempt names its node there.
    host_missing: bool,
}

impl<'a, C> PlainAttempt<'a, C> {
    pub fn new(
        head: Vec<u8>,
        method: &'a Method,
        client: (&'a mut C, &'a mut BytesMut),
        body_length: u64,
        timeouts: (Duration, Duration),
    ) -> Self {
        let (client, client_read) = client;
        let (connect_timeout, idle_timeout) = timeouts;
        Self {
            head,
            method,
            body_length,
            client,
            client_read,
            connect_timeout,
            idle_timeout,
            started: false,
            body_sent: false,
            host_missing: false,
        }
    }

    /// The head has no `Host` (the client's `Connection` header named it, and it went with
    /// the hop-by-hop headers): each attempt names its node there, as hyper's path does.
    pub fn name_the_node(&mut self) {
        self.host_missing = true;
    }

    /// How much of the request's body is still unread on the client's connection: none once
    /// it went upstream, all of it when no attempt began to read it, and an unknown part
    /// (`None`) when an attempt failed half-way.
    pub fn unread_body(&self) -> Option<u64> {
        if self.body_sent || self.body_length == 0 {
            Some(0)
        } else if self.started {
            None
        } else {
            Some(self.body_length)
        }
    }

    /// A request the upstream cannot have acted on twice if it sees it twice, and that has
    /// no body to read again: one a closed keep-alive connection never answered may go out
    /// once more, as nginx sends such a request again.
    fn may_send_again(&self) -> bool {
        self.body_length == 0
            && matches!(
                *self.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            )
    }
}

/// An upstream's answer: its head, and the connection its body is read from.
#[derive(Debug)]
pub struct PlainAnswer {
    pub head: ResponseHead,
    pub connection: PlainConnection,
}

/// How one exchange on one connection ended without an answer.
enum Failed {
    /// A kept-alive connection closed before any byte of an answer.
    Stale,
    Failed(String),
}

impl<C: AsyncRead + AsyncWrite + Unpin> Attempt for PlainAttempt<'_, C> {
    type Answer = PlainAnswer;

    fn can_retry(&self) -> bool {
        !self.started
    }

    async fn send(&mut self, member: &Member) -> Result<PlainAnswer, AttemptError> {
        let host = if self.host_missing {
            member.host_value()
        } else {
            None
        };
        loop {
            let connection = match member.plain_connections().checkout() {
                Some(connection) => connection,
                None => PlainConnection::open(member.address, self.connect_timeout)
                    .await
                    .map_err(|error| {
                        tracing::debug!(upstream = %member.address, %error, "connect failed");
                        AttemptError::Connect
                    })?,
            };
            let reused = connection.reused;
            match self.exchange(connection, host.as_ref()).await {
                Ok(answer) => return Ok(answer),
                Err(Failed::Stale) if reused && self.may_send_again() => continue,
                Err(Failed::Stale) => {
                    return Err(AttemptError::Failed(
                        "the upstream closed the connection without an answer".to_owned(),
                    ));
                }
                Err(Failed::Failed(detail)) => return Err(AttemptError::Failed(detail)),
            }
        }
    }
}

impl<C: AsyncRead + AsyncWrite + Unpin> PlainAttempt<'_, C> {
    async fn exchange(
        &mut self,
        mut connection: PlainConnection,
        host: Option<&HeaderValue>,
    ) -> Result<PlainAnswer, Failed> {
        if self.body_length == 0 {
            let named;
            let head = match host {
                Some(host) => {
                    named = with_host(&self.head, host);
                    &named
                }
                None => &self.head,
            };
            if let Err(error) = connection.stream.write_all(head).await {
                return Err(stale_or(&error));
            }
        } else {
            // Sent once only: no later attempt needs the head again.
            let head = std::mem::take(&mut self.head);
            let head = match host {
                Some(host) => with_host(&head, host),
                None => head,
            };
            self.started = true;
            let mut relay = Relay {
                from: &mut *self.client,
                read: &mut *self.client_read,
                to: &mut connection.stream,
                idle_timeout: self.idle_timeout,
            };
            relay
                .body(Decoding::Length(self.body_length), head)
                .await
                .map_err(|error| Failed::Failed(error.to_string()))?;
            self.body_sent = true;
        }
        let head = read_head(&mut connection, self.method).await?;
        Ok(PlainAnswer { head, connection })
    }
}

/// `head` (which ends with its empty line) with a `host` line last, where hyper's path adds
/// it.
fn with_host(head: &[u8], host: &HeaderValue) -> Vec<u8> {
    let lines = head.strip_suffix(b"\r\n").unwrap_or(head);
    let mut named = Vec::with_capacity(head.len() + 8 + host.len());
    named.extend_from_slice(lines);
    named.extend_from_slice(b"host: ");
    named.extend_from_slice(host.as_bytes());
    named.extend_from_slice(b"\r\n\r\n");
    named
}

fn stale_or(error: &std::io::Error) -> Failed {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    if matches!(
        error.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted
    ) {
        Failed::Stale
    } else {
        Failed::Failed(error.to_string())
    }
}

/// Reads the final response head, skipping informational ones.
async fn read_head(
    connection: &mut PlainConnection,
    method: &Method,
) -> Result<ResponseHead, Failed> {
    let mut searched = 0;
    let mut answered = false;
    loop {
        if may_end_a_head(&connection.read, searched) {
            match response_head::parse(&connection.read, method) {
                ParsedResponse::Complete(head, length) => {
                    connection.read.advance(length);
                    return Ok(head);
                }
                ParsedResponse::Informational(length) => {
                    connection.read.advance(length);
                    searched = 0;
                    continue;
                }
                ParsedResponse::Invalid(reason) => return Err(Failed::Failed(reason.to_owned())),
                ParsedResponse::Partial => {}
            }
        }
        searched = connection.read.len();
        if connection.read.len() >= MAX_RESPONSE_HEAD {
            return Err(Failed::Failed("the response head is too large".to_owned()));
        }
        connection.read.reserve(4096);
        match connection.stream.read_buf(&mut connection.read).await {
            Ok(0) if !answered && connection.read.is_empty() => return Err(Failed::Stale),
            Ok(0) => {
                return Err(Failed::Failed(
                    "the upstream closed the connection mid-head".to_owned(),
                ));
            }
            Ok(_) => answered = true,
            Err(error) if !answered => return Err(stale_or(&error)),
            Err(error) => return Err(Failed::Failed(error.to_string())),
        }
    }
}
