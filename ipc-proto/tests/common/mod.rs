//! Test helpers: frames through the production codec ([`MsgCodec`] in a `FramedRead`, as every
//! process reads them), with the input cut into arbitrary chunks.

use bytes::BytesMut;
use futures_util::StreamExt;
use ipc_proto::frame::{FrameError, MsgCodec};
use serde::{de::DeserializeOwned, Serialize};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::{Encoder, FramedRead};

/// Encodes one message as a complete frame.
pub fn encode<T: Serialize>(msg: T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = BytesMut::new();
    MsgCodec::<(), T>::new(max).encode(msg, &mut buf)?;
    Ok(buf.to_vec())
}

/// A reader that hands out its input one chunk per read, so frames arrive split anywhere.
pub struct Chunked {
    chunks: std::collections::VecDeque<Vec<u8>>,
}

impl Chunked {
    /// Cuts `bytes` into pieces whose lengths cycle through `cuts` (each at least 1).
    pub fn new(bytes: &[u8], cuts: &[usize]) -> Self {
        let mut chunks = std::collections::VecDeque::new();
        let (mut pos, mut i) = (0, 0);
        while pos < bytes.len() {
            let n = cuts
                .get(i % cuts.len().max(1))
                .copied()
                .unwrap_or(usize::MAX)
                .max(1);
            let end = bytes.len().min(pos.saturating_add(n));
            chunks.push_back(bytes[pos..end].to_vec());
            pos = end;
            i += 1;
        }
        Chunked { chunks }
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(mut c) = self.chunks.pop_front() {
            let n = c.len().min(buf.remaining());
            buf.put_slice(&c[..n]);
            if n < c.len() {
                self.chunks.push_front(c.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Reads every frame of `bytes` (cut at `cuts`) as `T` with the production reader; returns the
/// messages and the error that ended the stream, if any.
pub fn read_all<T: DeserializeOwned>(
    bytes: &[u8],
    cuts: &[usize],
    max: usize,
) -> (Vec<T>, Option<FrameError>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut reader = FramedRead::new(Chunked::new(bytes, cuts), MsgCodec::<T, ()>::new(max));
        let mut out = Vec::new();
        while let Some(item) = reader.next().await {
            match item {
                Ok(m) => out.push(m),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    })
}
