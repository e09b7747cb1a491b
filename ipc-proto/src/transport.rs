//! Connections over local (Unix domain) sockets and the handshake on both sides. Listeners are
//! `interprocess`'s (tokio flavour); every connected socket becomes an [`IpcStream`] (registered for
//! readability only: see its module). A [`Connection`] is a `tokio_util` `Framed` stream of
//! [`MsgCodec`] frames: read it with `StreamExt::next` (cancel-safe, so it may sit in a `select!`),
//! write with `SinkExt::send`.

use crate::frame::{FrameError, MsgCodec};
use crate::handshake::{Hello, HelloReply, WorkerKind, PROTOCOL_VERSION};
pub use crate::stream::IpcStream;
use futures_util::{SinkExt, StreamExt};
use interprocess::local_socket::{
    tokio::{prelude::*, Listener, Stream},
    GenericFilePath, ListenerOptions,
};
use serde::{de::DeserializeOwned, Serialize};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;
use tokio_util::codec::Framed;

/// A framed connection that reads `In` and writes `Out`.
pub type Connection<In, Out> = Framed<IpcStream, MsgCodec<In, Out>>;

/// Frames of a handshake are small; a peer is not trusted with more until it has authenticated.
const HANDSHAKE_MAX_FRAME: usize = 4096;

/// Binds a listener at a filesystem path (the parent directory must exist and be private).
pub fn bind(path: &Path) -> std::io::Result<Listener> {
    let name = path.to_fs_name::<GenericFilePath>()?;
    ListenerOptions::new().name(name).create_tokio()
}

/// Connects to a listener at a filesystem path.
pub async fn connect(path: &Path) -> std::io::Result<IpcStream> {
    let name = path.to_fs_name::<GenericFilePath>()?;
    into_ipc_stream(Stream::connect(name).await?)
}

/// Accepts the next connection on a listener.
pub async fn accept(listener: &Listener) -> std::io::Result<IpcStream> {
    into_ipc_stream(listener.accept().await?)
}

fn into_ipc_stream(stream: Stream) -> std::io::Result<IpcStream> {
    let Stream::UdSocket(socket) = stream;
    IpcStream::from_fd(OwnedFd::try_from(socket)?)
}

/// Reads the next message; a clean end of stream is [`FrameError::Closed`].
pub async fn recv<In: DeserializeOwned, Out>(
    conn: &mut Connection<In, Out>,
) -> Result<In, FrameError> {
    conn.next().await.unwrap_or(Err(FrameError::Closed))
}

/// Worker side: connect, send [`Hello`], wait for the verdict; then the connection speaks `In`/`Out`.
pub async fn worker_handshake<In, Out: Serialize>(
    path: &Path,
    kind: WorkerKind,
    token: &str,
    max: usize,
) -> Result<Connection<In, Out>, HandshakeFailure> {
    let stream = connect(path).await.map_err(FrameError::Io)?;
    let mut conn: Connection<HelloReply, Hello> = Framed::new(stream, MsgCodec::new(max));
    conn.send(Hello {
        protocol_version: PROTOCOL_VERSION,
        kind,
        pid: std::process::id(),
        token: token.to_owned(),
    })
    .await?;
    match recv(&mut conn).await? {
        HelloReply::Accepted => Ok(conn.map_codec(MsgCodec::retype)),
        HelloReply::Refused { reason } => Err(HandshakeFailure::Refused(reason)),
    }
}

/// Metaserver side: accept connections until one presents the expected hello, or time out.
/// Connections with a bad hello are told why and dropped; waiting continues.
pub async fn accept_worker<In, Out: Serialize>(
    listener: &Listener,
    kind: WorkerKind,
    token: &str,
    max: usize,
    timeout: Duration,
) -> Result<(Connection<In, Out>, Hello), HandshakeFailure> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let stream = tokio::time::timeout_at(deadline, accept(listener))
            .await
            .map_err(|_| HandshakeFailure::Timeout)?
            .map_err(FrameError::Io)?;
        let mut conn: Connection<Hello, HelloReply> =
            Framed::new(stream, MsgCodec::new(HANDSHAKE_MAX_FRAME));
        let hello = match tokio::time::timeout_at(deadline, recv(&mut conn)).await {
            Err(_) => return Err(HandshakeFailure::Timeout),
            Ok(Err(_)) => continue,
            Ok(Ok(h)) => h,
        };
        match hello.verify(kind, token) {
            Ok(()) => {
                conn.send(HelloReply::Accepted).await?;
                let conn = conn.map_codec(|_| MsgCodec::new(max));
                return Ok((conn, hello));
            }
            Err(e) => {
                let reason = e.to_string();
                let _ = conn.send(HelloReply::Refused { reason }).await;
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
