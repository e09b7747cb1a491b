//! Framing — the one way every Hamlet process reads and writes frames: a `u32` big-endian body
//! length, then a MessagePack body (structs as maps, so fields can be added later without breaking
//! older peers).
//!
//! [`MsgCodec`] is `tokio_util`'s [`LengthDelimitedCodec`] with MessagePack on top. The length is
//! checked against the maximum *before* anything is allocated, so a hostile or corrupt peer cannot
//! make us reserve gigabytes. Used through `tokio_util::codec::Framed`, reads are cancel-safe: a
//! `select!` may drop a pending read without losing a partial frame.

use bytes::{BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Default maximum body size of one frame (1 MiB): far above any message we send.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer closed the connection")]
    Closed,
    #[error("frame exceeds the limit of {max} bytes")]
    Oversize { max: usize },
    #[error("undecodable frame body: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("unencodable message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("i/o error: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Decodes frames into `In` and encodes `Out` (the two directions of one connection).
#[derive(Debug)]
pub struct MsgCodec<In, Out> {
    frames: LengthDelimitedCodec,
    max: usize,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> MsgCodec<In, Out> {
    pub fn new(max: usize) -> Self {
        let frames = LengthDelimitedCodec::builder()
            .length_field_length(HEADER_LEN)
            .big_endian()
            .max_frame_length(max)
            .new_codec();
        MsgCodec {
            frames,
            max,
            _types: PhantomData,
        }
    }

    /// The same framing for other message types (after the handshake, say).
    pub fn retype<In2, Out2>(self) -> MsgCodec<In2, Out2> {
        MsgCodec {
            frames: self.frames,
            max: self.max,
            _types: PhantomData,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl<In, Out> Clone for MsgCodec<In, Out> {
    fn clone(&self) -> Self {
        MsgCodec::new(self.max)
    }
}

impl<In: DeserializeOwned, Out> Decoder for MsgCodec<In, Out> {
    type Item = In;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        match self.frames.decode(src) {
            Ok(Some(body)) => Ok(Some(rmp_serde::from_slice(&body)?)),
            Ok(None) => Ok(None),
            // Its only error: a header announcing more than the maximum (nothing was allocated).
            Err(_) => Err(FrameError::Oversize { max: self.max }),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, FrameError> {
        match self.decode(src)? {
            Some(m) => Ok(Some(m)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed in the middle of a frame ({} bytes)",
                    src.len()
                ),
            ))),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for MsgCodec<In, Out> {
    type Error = FrameError;

    fn encode(&mut self, msg: Out, dst: &mut BytesMut) -> Result<(), FrameError> {
        let start = dst.len();
        dst.put_u32(0);
        rmp_serde::encode::write_named(&mut (&mut *dst).writer(), &msg)?;
        let len = dst.len() - start - HEADER_LEN;
        if len > self.max {
            dst.truncate(start);
            return Err(FrameError::Oversize { max: self.max });
        }
        dst[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}
