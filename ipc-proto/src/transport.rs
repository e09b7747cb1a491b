//! Frame I/O over local sockets (`interprocess`, tokio flavour).
//!
//! One [`interprocess`] stream is shared by a reader and a writer through an `Arc`, the pattern the
//! crate recommends now that `Stream::split` is deprecated: `&Stream` implements the tokio I/O traits.

use crate::frame::{self, FrameError};
use crate::handshake::{Hello, HelloReply, WorkerKind, PROTOCOL_VERSION};
use interprocess::local_socket::{
    tokio::{prelude::*, Listener, Stream},
    GenericFilePath, ListenerOptions,
};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Reading half of a framed connection.
#[derive(Debug)]
pub struct FrameReader {
    stream: Arc<Stream>,
    max: usize,
}

/// Writing half of a framed connection.
#[derive(Debug)]
pub struct FrameWriter {
    stream: Arc<Stream>,
    max: usize,
}

/// Splits a connected stream into framed halves with a maximum frame size.
pub fn framed(stream: Stream, max: usize) -> (FrameReader, FrameWriter) {
    let stream = Arc::new(stream);
    (
        FrameReader {
            stream: stream.clone(),
            max,
        },
        FrameWriter { stream, max },
    )
}

impl FrameReader {
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<T, FrameError> {
        let mut s: &Stream = &self.stream;
        frame::read_msg(&mut s, self.max).await
    }
}

impl FrameWriter {
    pub async fn write<T: Serialize>(&mut self, msg: &T) -> Result<(), FrameError> {
        let mut s: &Stream = &self.stream;
        frame::write_msg(&mut s, msg, self.max).await
    }

    /// Writes an already encoded frame.
    pub async fn write_raw(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        use tokio::io::AsyncWriteExt;
        let mut s: &Stream = &self.stream;
        s.write_all(frame).await?;
        Ok(())
    }
}

/// Binds a listener at a filesystem path (the parent directory must exist and be private).
pub fn bind(path: &Path) -> std::io::Result<Listener> {
    let name = path.to_fs_name::<GenericFilePath>()?;
    ListenerOptions::new().name(name).create_tokio()
}

/// Connects to a listener at a filesystem path.
pub async fn connect(path: &Path) -> std::io::Result<Stream> {
    let name = path.to_fs_name::<GenericFilePath>()?;
    Stream::connect(name).await
}

/// Worker side: connect, send [`Hello`], wait for the verdict.
pub async fn worker_handshake(
    path: &Path,
    kind: WorkerKind,
    token: &str,
    max: usize,
) -> Result<(FrameReader, FrameWriter), HandshakeFailure> {
    let stream = connect(path).await.map_err(FrameError::Io)?;
    let (mut r, mut w) = framed(stream, max);
    w.write(&Hello {
        protocol_version: PROTOCOL_VERSION,
        kind,
        pid: std::process::id(),
        token: token.to_owned(),
    })
    .await?;
    match r.read::<HelloReply>().await? {
        HelloReply::Accepted => Ok((r, w)),
        HelloReply::Refused { reason } => Err(HandshakeFailure::Refused(reason)),
    }
}

/// Metaserver side: accept connections until one presents the expected hello, or time out.
/// Connections with a bad hello are told why and dropped; waiting continues.
pub async fn accept_worker(
    listener: &Listener,
    kind: WorkerKind,
    token: &str,
    max: usize,
    timeout: Duration,
) -> Result<(FrameReader, FrameWriter, Hello), HandshakeFailure> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let stream = tokio::time::timeout_at(deadline, listener.accept())
            .await
            .map_err(|_| HandshakeFailure::Timeout)?
            .map_err(FrameError::Io)?;
        let (mut r, mut w) = framed(stream, max.min(4096));
        let hello = match tokio::time::timeout_at(deadline, r.read::<Hello>()).await {
            Err(_) => return Err(HandshakeFailure::Timeout),
            Ok(Err(_)) => continue,
            Ok(Ok(h)) => h,
        };
        match hello.verify(kind, token) {
            Ok(()) => {
                w.write(&HelloReply::Accepted).await?;
                r.max = max;
                w.max = max;
                return Ok((r, w, hello));
            }
            Err(e) => {
                let _ = w
                    .write(&HelloReply::Refused {
                        reason: e.to_string(),
                    })
                    .await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    #[error("handshake refused: {0}")]
    Refused(String),
    #[error("no worker completed the handshake in time")]
    Timeout,
    #[error(transparent)]
    Frame(#[from] FrameError),
}
