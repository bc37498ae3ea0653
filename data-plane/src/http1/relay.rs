//! Relaying a body from one side to the other without hyper between them: a body of known
//! length goes as it came; a chunked one keeps its data and its chunk sizes, with the chunk
//! lines rewritten as hyper's encoder writes them (no extensions, uppercase hex) and its
//! trailers dropped (hyper sends none unless `Trailer` announced them, and `Trailer` is
//! hop-by-hop); a body that ends with the upstream's close goes out chunked, as hyper sends it.

use std::io::Write as _;
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// What hyper's decoder allows of chunk extensions over a whole body, and of its trailers.
const EXTENSIONS_LIMIT: usize = 16 * 1024;
const TRAILERS_LIMIT: usize = 16 * 1024;
/// Read at least this much at a time.
const READ_SIZE: usize = 16 * 1024;

/// Why a relay stopped before the body's end.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the sender closed before the body's end")]
    Truncated,
    #[error("reading the body failed: {0}")]
    Read(std::io::Error),
    #[error("writing the body failed: {0}")]
    Write(std::io::Error),
    #[error("no byte moved for the idle timeout")]
    Timeout,
    #[error("the chunked body is malformed: {0}")]
    Framing(&'static str),
}

/// How the body being relayed is delimited where it comes from.
#[derive(Debug)]
pub enum Decoding {
    Length(u64),
    Chunked(Dechunk),
    /// Until the sender closes; sent on chunked, or as it came (an HTTP/1.0 answer, which
    /// then ends with the connection too).
    UntilClose {
        chunked: bool,
    },
}

/// One direction of a relay: where the bytes come from, what was read from there already,
/// and how long a read or a write may wait.
#[derive(Debug)]
pub struct Relay<'a, R, W> {
    pub from: &'a mut R,
    pub read: &'a mut BytesMut,
    pub to: &'a mut W,
    pub idle_timeout: Duration,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Relay<'_, R, W> {
    /// Writes `out` (a head, or nothing) followed by the body, in as few writes as the bytes
    /// at hand allow. Bytes past the body's end stay in `read`.
    pub async fn body(
        &mut self,
        mut decoding: Decoding,
        mut out: Vec<u8>,
    ) -> Result<(), RelayError> {
        loop {
            let done = match &mut decoding {
                Decoding::Length(remaining) => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(self.read.len());
                    out.extend_from_slice(&self.read[..take]);
                    self.read.advance(take);
                    *remaining -= take as u64;
                    *remaining == 0
                }
                Decoding::Chunked(dechunk) => {
                    let used = dechunk.feed(self.read, &mut out)?;
                    self.read.advance(used);
                    dechunk.is_done()
                }
                Decoding::UntilClose { chunked } => {
                    if !self.read.is_empty() {
                        if *chunked {
                            let _ = write!(out, "{:X}\r\n", self.read.len());
                        }
                        out.extend_from_slice(self.read);
                        if *chunked {
                            out.extend_from_slice(b"\r\n");
                        }
                        self.read.clear();
                    }
                    false
                }
            };
            if !out.is_empty() {
                self.write(&out).await?;
                out.clear();
            }
            if done {
                return Ok(());
            }
            if self.fill().await? == 0 {
                return match decoding {
                    Decoding::UntilClose { chunked: true } => self.write(b"0\r\n\r\n").await,
                    Decoding::UntilClose { chunked: false } => Ok(()),
                    _ => Err(RelayError::Truncated),
                };
            }
        }
    }

    /// Reads more into `read`; 0 at the sender's end.
    async fn fill(&mut self) -> Result<usize, RelayError> {
        self.read.reserve(READ_SIZE);
        match tokio::time::timeout(self.idle_timeout, self.from.read_buf(self.read)).await {
            Ok(Ok(count)) => Ok(count),
            Ok(Err(error)) => Err(RelayError::Read(error)),
            Err(_) => Err(RelayError::Timeout),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        match tokio::time::timeout(self.idle_timeout, self.to.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(RelayError::Write(error)),
            Err(_) => Err(RelayError::Timeout),
        }
    }
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// At a chunk-size line.
    SizeLine,
    /// Inside a chunk's data, with this much of it left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk, at a trailer line or the final CRLF.
    Trailers,
    Done,
}

/// A chunked body's decoder, which writes the chunks again as it reads them. Its rules are
/// hyper's: a size of hex digits (no overflow), optional spaces or tabs, an extension of
/// any bytes but LF, CRLF line ends only (a bare LF is refused), CRLF after each chunk's
/// data, trailer lines up to the final CRLF.
#[derive(Debug)]
pub struct Dechunk {
    stage: Stage,
    extension_bytes: usize,
    trailer_bytes: usize,
}

impl Default for Dechunk {
    fn default() -> Self {
        Self {
            stage: Stage::SizeLine,
            extension_bytes: 0,
            trailer_bytes: 0,
        }
    }
}

impl Dechunk {
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Decodes what it can of `input`, appending the chunks as they go out to `out`, and
    /// says how many bytes of `input` it used.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, RelayError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.stage {
                Stage::Done => return Ok(used),
                Stage::SizeLine => {
                    let Some(end) = line_end(rest) else {
                        self.check_partial_line(rest)?;
                        return Ok(used);
                    };
                    let (size, extension) = size_line(&rest[..end])?;
                    self.extension_bytes += extension;
                    if self.extension_bytes > EXTENSIONS_LIMIT {
                        return Err(RelayError::Framing("chunk extensions are too long"));
                    }
                    used += end + 2;
                    if size == 0 {
                        self.stage = Stage::Trailers;
                    } else {
                        let _ = write!(out, "{size:X}\r\n");
                        self.stage = Stage::Data(size);
                    }
                }
                Stage::Data(remaining) => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    out.extend_from_slice(&rest[..take]);
                    used += take;
                    let left = remaining - take as u64;
                    self.stage = if left == 0 {
                        Stage::DataEnd
                    } else {
                        Stage::Data(left)
                    };
                }
                Stage::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        out.extend_from_slice(b"\r\n");
                        used += 2;
                        self.stage = Stage::SizeLine;
                    }
                    [] | [b'\r'] => return Ok(used),
                    _ => return Err(RelayError::Framing("a chunk does not end with CRLF")),
                },
                Stage::Trailers => {
                    let Some(end) = line_end(rest) else {
                        if rest.len() + self.trailer_bytes > TRAILERS_LIMIT {
                            return Err(RelayError::Framing("the trailers are too long"));
                        }
                        if rest.contains(&b'\n') {
                            return Err(RelayError::Framing("a bare LF in the trailers"));
                        }
                        return Ok(used);
                    };
                    if rest[..end].contains(&b'\n') {
                        return Err(RelayError::Framing("a bare LF in the trailers"));
                    }
                    self.trailer_bytes += end + 2;
                    if self.trailer_bytes > TRAILERS_LIMIT {
                        return Err(RelayError::Framing("the trailers are too long"));
                    }
                    used += end + 2;
                    if end == 0 {
                        out.extend_from_slice(b"0\r\n\r\n");
                        self.stage = Stage::Done;
                    }
                }
            }
        }
    }

    /// A size line not yet complete must still be able to become a valid one.
    fn check_partial_line(&self, rest: &[u8]) -> Result<(), RelayError> {
        if rest.contains(&b'\n') {
            return Err(RelayError::Framing("a bare LF in a chunk-size line"));
        }
        if rest.len() > EXTENSIONS_LIMIT + 32 {
            return Err(RelayError::Framing("chunk extensions are too long"));
        }
        Ok(())
    }
}

/// Where the first CRLF of `bytes` starts.
fn line_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|pair| pair == b"\r\n")
}

/// A chunk-size line (without its CRLF): the size, and how many bytes its extension took.
fn size_line(line: &[u8]) -> Result<(u64, usize), RelayError> {
    let digits = line
        .iter()
        .take_while(|byte| byte.is_ascii_hexdigit())
        .count();
    if digits == 0 {
        return Err(RelayError::Framing("a chunk-size line has no size"));
    }
    let mut size: u64 = 0;
    for &digit in &line[..digits] {
        let value = u64::from((digit as char).to_digit(16).unwrap_or(0));
        size = size
            .checked_mul(16)
            .and_then(|size| size.checked_add(value))
            .ok_or(RelayError::Framing("a chunk size overflows"))?;
    }
    let rest = &line[digits..];
    let spaces = rest
        .iter()
        .take_while(|byte| matches!(byte, b' ' | b'\t'))
        .count();
    let rest = &rest[spaces..];
    match rest.first() {
        None => Ok((size, 0)),
        Some(b';') if !rest.contains(&b'\n') => Ok((size, rest.len())),
        Some(_) => Err(RelayError::Framing("a chunk-size line is malformed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dechunked(input: &[u8]) -> Result<(Vec<u8>, usize, bool), RelayError> {
        let mut dechunk = Dechunk::default();
        let mut out = Vec::new();
        let used = dechunk.feed(input, &mut out)?;
        Ok((out, used, dechunk.is_done()))
    }

    #[test]
    fn chunks_keep_their_data_and_lose_extensions_and_trailers() {
        let input = b"5;name=value\r\nhello\r\na \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (out, used, done) = dechunked(input).unwrap();
        assert!(done);
        assert_eq!(out, b"5\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n");
        assert_eq!(
            used,
            input.len() - "NEXT".len(),
            "what follows the body stays"
        );
    }

    #[test]
    fn a_body_in_pieces_decodes_as_a_whole_one() {
        let whole = b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let mut dechunk = Dechunk::default();
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for &byte in whole {
            pending.push(byte);
            let used = dechunk.feed(&pending, &mut out).unwrap();
            pending.drain(..used);
        }
        assert!(dechunk.is_done());
        assert_eq!(out, b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n");
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for input in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"5 x\r\nhello\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\nX: 1\nY: 2\r\n\r\n",
            b"\r\n",
        ] {
            assert!(dechunked(input).is_err(), "{input:?}");
        }
        let long = format!("1;{}\r\n", "e".repeat(EXTENSIONS_LIMIT + 1));
        assert!(dechunked(long.as_bytes()).is_err());
    }

    #[tokio::test]
    async fn a_body_until_close_goes_out_chunked_and_lengths_stop_at_their_end() {
        let (mut upstream, mut from) = tokio::io::duplex(1024);
        upstream.write_all(b"abc").await.unwrap();
        drop(upstream);
        let mut read = BytesMut::from(&b"xy"[..]);
        let mut to = Vec::new();
        let mut relay = Relay {
            from: &mut from,
            read: &mut read,
            to: &mut to,
            idle_timeout: Duration::from_secs(1),
        };
        relay
            .body(Decoding::UntilClose { chunked: true }, b"HEAD\r\n".to_vec())
            .await
            .unwrap();
        assert_eq!(to, b"HEAD\r\n2\r\nxy\r\n3\r\nabc\r\n0\r\n\r\n");

        let (_, mut from) = tokio::io::duplex(1024);
        let mut read = BytesMut::from(&b"12345NEXT"[..]);
        let mut to = Vec::new();
        let mut relay = Relay {
            from: &mut from,
            read: &mut read,
            to: &mut to,
            idle_timeout: Duration::from_secs(1),
        };
        relay.body(Decoding::Length(5), Vec::new()).await.unwrap();
        assert_eq!(to, b"12345");
        assert_eq!(&read[..], b"NEXT");
    }

    #[tokio::test]
    async fn a_sender_that_closes_early_truncates_the_body() {
        let (upstream, mut from) = tokio::io::duplex(1024);
        drop(upstream);
        let mut read = BytesMut::from(&b"123"[..]);
        let mut to = Vec::new();
        let mut relay = Relay {
            from: &mut from,
            read: &mut read,
            to: &mut to,
            idle_timeout: Duration::from_secs(1),
        };
        assert!(matches!(
            relay.body(Decoding::Length(5), Vec::new()).await,
            Err(RelayError::Truncated)
        ));
    }
}
