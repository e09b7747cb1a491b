//! Framing: `u32` big-endian body length, then a MessagePack body (structs as maps, so fields can be
//! added later without breaking older peers).
//!
//! The length is checked against a maximum *before* any allocation, so a hostile or corrupt peer
//! cannot make us reserve gigabytes.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Default maximum body size of one frame (1 MiB): far above any message we send.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer closed the connection")]
    Closed,
    #[error("connection closed in the middle of a frame ({got} of {want} bytes)")]
    ShortRead { got: usize, want: usize },
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversize { len: usize, max: usize },
    #[error("undecodable frame body: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("unencodable message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `msg` as one complete frame (header + body).
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; HEADER_LEN];
    rmp_serde::encode::write_named(&mut buf, msg)?;
    let len = buf.len() - HEADER_LEN;
    if len > max {
        return Err(FrameError::Oversize { len, max });
    }
    buf[..HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(buf)
}

/// Decodes one frame body (without header).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(rmp_serde::from_slice(body)?)
}

/// Incremental decoder for byte streams that arrive in arbitrary pieces.
///
/// Feed bytes with [`FrameDecoder::extend`], take complete bodies with [`FrameDecoder::next_body`].
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
        }
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete body, `Ok(None)` if more bytes are needed.
    pub fn next_body(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..HEADER_LEN].try_into().expect("4 bytes")) as usize;
        if len > self.max {
            return Err(FrameError::Oversize { len, max: self.max });
        }
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let body = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(body))
    }

    /// Bytes buffered but not yet returned.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Reads one frame body from `r`. A clean EOF before the header is [`FrameError::Closed`].
pub async fn read_body<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Closed
            } else {
                FrameError::ShortRead {
                    got,
                    want: HEADER_LEN,
                }
            });
        }
        got += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::Oversize { len, max });
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = r.read(&mut body[got..]).await?;
        if n == 0 {
            return Err(FrameError::ShortRead { got, want: len });
        }
        got += n;
    }
    Ok(body)
}

/// Reads and decodes one message.
pub async fn read_msg<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<T, FrameError> {
    let body = read_body(r, max).await?;
    decode_body(&body)
}

/// Encodes and writes one message.
pub async fn write_msg<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &T,
    max: usize,
) -> Result<(), FrameError> {
    let frame = encode(msg, max)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}
