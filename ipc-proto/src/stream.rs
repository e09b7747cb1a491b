//! [`IpcStream`]: a Unix stream socket that wakes its process only for what it waits for.
//!
//! Why not tokio's `UnixStream`: tokio registers every stream for readability *and* writability,
//! and Linux wakes a Unix socket's writer (`unix_write_space`) every time the reader consumes data,
//! whether or not the writer was ever short of room. So each frame a worker sent woke it once more
//! when the metaserver read it (`EPOLLOUT`), and each command the metaserver sent woke the
//! metaserver when the worker read it: two wake-ups per step where one is needed (measured in
//! BENCHMARKS.md, issue 19: 23 000 → 13 000 context switches a second with 100 sessions).
//!
//! An `IpcStream` registers its socket for readability only. Writes go straight to the socket; only
//! when the socket has no room (the peer is not reading) does a write register a duplicate of the
//! descriptor for writability and wait on it, and the duplicate is dropped (deregistered) as soon
//! as a write gets through. Backpressure is unchanged: a writer still waits, it is just not woken
//! when it was not waiting.

use socket2::Socket;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix stream socket, registered with tokio for readability only.
#[derive(Debug)]
pub struct IpcStream {
    socket: AsyncFd<Socket>,
    /// A duplicate of `socket` registered for writability, present only while a write waits for
    /// room.
    write_wait: Option<AsyncFd<Socket>>,
    /// `recv` calls that found nothing to read (tests check that a short read avoids one).
    #[cfg(test)]
    empty_reads: usize,
}

impl IpcStream {
    /// Takes over a connected stream socket (made non-blocking here). Must be called inside a
    /// tokio runtime.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let socket = Socket::from(fd);
        socket.set_nonblocking(true)?;
        Ok(IpcStream {
            socket: register(socket, Interest::READABLE)?,
            write_wait: None,
            #[cfg(test)]
            empty_reads: 0,
        })
    }

    /// Registers a duplicate of the socket for writability. If room appeared between the failed
    /// write and this call, epoll reports the new registration ready at once, so no wake-up is
    /// lost.
    fn start_write_wait(&mut self) -> io::Result<&AsyncFd<Socket>> {
        if self.write_wait.is_none() {
            let dup = self.socket.get_ref().try_clone()?;
            self.write_wait = Some(register(dup, Interest::WRITABLE)?);
        }
        Ok(self.write_wait.as_ref().expect("registered above"))
    }
}

fn register(socket: Socket, interest: Interest) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: a `socket2::Socket` owns its descriptor: it is open from construction until the
    // `Socket` is dropped, and `as_raw_fd` always returns that same descriptor (the type has no
    // way to replace it). The `AsyncFd` owns the `Socket`, so the descriptor outlives the
    // registration.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(io::Error::from)
}

impl AsyncRead for IpcStream {
    fn poll_read(
        #[cfg_attr(not(test), allow(unused_mut))] // only the tests' counter writes to it
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.socket.poll_read_ready(cx))?;
            // SAFETY: `recv` only writes bytes into the slice (it never de-initialises any), which
            // is all `unfilled_mut` asks of its caller.
            let unfilled = unsafe { buf.unfilled_mut() };
            let room = unfilled.len();
            match guard.try_io(|socket| socket.get_ref().recv(unfilled)) {
                Ok(Ok(n)) => {
                    if n > 0 && n < room {
                        // A short read emptied the socket: wait for the next edge rather than
                        // pay for a `recv` that would block (tokio's own streams do the same).
                        guard.clear_ready();
                    }
                    // SAFETY: `recv` returned `n`: the kernel wrote the first `n` bytes of the
                    // unfilled part.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {
                    #[cfg(test)]
                    {
                        self.empty_reads += 1;
                    }
                    continue; // readiness was cleared; wait for the next edge
                }
            }
        }
    }
}

impl AsyncWrite for IpcStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_wait.is_none() {
            match self.socket.get_ref().send(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
        loop {
            let attempt = {
                let waiter = self.start_write_wait()?;
                let mut guard = ready!(waiter.poll_write_ready(cx))?;
                guard.try_io(|socket| socket.get_ref().send(buf))
            };
            if let Ok(result) = attempt {
                self.write_wait = None; // room again: stop listening for it
                return Poll::Ready(result);
            } // else it would block: readiness was cleared; wait for the next edge
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // nothing is buffered here
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::io::Read;
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const EPOLLIN: u32 = 0x1;
    const EPOLLOUT: u32 = 0x4;

    /// The event masks with which this process's epoll instances watch the socket open at `fd`
    /// (under any descriptor number: a duplicate counts), read from `/proc/self/fdinfo`, whose
    /// lines for an epoll instance read `tfd: N events: HEX data: HEX pos:0 ino:HEX sdev:HEX`.
    /// An instance open under two descriptors (mio duplicates its own) lists the same lines
    /// twice; they count once.
    fn epoll_masks(fd: RawFd) -> Vec<u32> {
        let ino = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        let mut registrations = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap() {
            let Ok(info) = std::fs::read_to_string(entry.unwrap().path()) else {
                continue; // closed meanwhile
            };
            for line in info.lines().filter(|l| l.starts_with("tfd:")) {
                let watched = line.split_whitespace().find_map(|f| f.strip_prefix("ino:"));
                if watched.map(|h| u64::from_str_radix(h, 16).unwrap()) == Some(ino) {
                    registrations.insert(line.to_owned());
                }
            }
        }
        let mask = |line: &String| {
            let events = line.split_whitespace().nth(3).expect("an events field");
            u32::from_str_radix(events, 16).unwrap()
        };
        registrations.iter().map(mask).collect()
    }

    fn poll_once<F: Future + Unpin>(f: &mut F) -> impl Future<Output = Poll<F::Output>> + '_ {
        std::future::poll_fn(move |cx| Poll::Ready(Pin::new(&mut *f).poll(cx)))
    }

    /// The point of the type: the socket is watched for readability alone, so the peer reading
    /// what we wrote does not wake us.
    #[tokio::test(flavor = "current_thread")]
    async fn the_socket_is_watched_for_reading_only() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let fd = ours.as_raw_fd();
        let mut stream = IpcStream::from_fd(ours.into()).unwrap();
        let masks = epoll_masks(fd);
        assert_eq!(masks.len(), 1, "one registration: {masks:x?}");
        assert_eq!(masks[0] & (EPOLLIN | EPOLLOUT), EPOLLIN, "{:#x}", masks[0]);

        // It still reads and writes, and reads the peer's end of stream as 0 bytes.
        stream.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        std::io::Write::write_all(&mut peer, b"pong").unwrap();
        drop(peer);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"pong");
    }

    /// A read that got less than it had room for emptied the socket: the next read waits for new
    /// data without asking the kernel first.
    #[tokio::test(flavor = "current_thread")]
    async fn a_short_read_does_not_ask_again_before_new_data() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let mut stream = IpcStream::from_fd(ours.into()).unwrap();
        let mut buf = [0; 64];
        for word in [&b"one"[..], b"two", b"three"] {
            std::io::Write::write_all(&mut peer, word).unwrap();
            let n = stream.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], word);
            let mut next = Box::pin(stream.read(&mut buf));
            assert!(poll_once(&mut next).await.is_pending(), "read from nothing");
        }
        assert_eq!(stream.empty_reads, 0, "asked the kernel with nothing there");
    }

    /// A write that finds no room waits (watching a duplicate for writability meanwhile), goes on
    /// when the peer reads, delivers every byte in order, and stops watching afterwards.
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_without_room_waits_for_the_reader() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let fd = ours.as_raw_fd();
        let mut stream = IpcStream::from_fd(ours.into()).unwrap();
        let data: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect(); // > any socket buffer
        let mut write = Box::pin(stream.write_all(&data));
        assert!(poll_once(&mut write).await.is_pending(), "8 MiB fitted");
        let mut masks = epoll_masks(fd);
        masks.sort_by_key(|m| m & EPOLLOUT);
        assert_eq!(masks.len(), 2, "a second registration waits: {masks:x?}");
        assert_eq!(masks[1] & (EPOLLIN | EPOLLOUT), EPOLLOUT, "{masks:x?}");

        let reader = std::thread::spawn(move || {
            let mut got = vec![0; 8 << 20];
            peer.read_exact(&mut got).map(|_| got)
        });
        tokio::time::timeout(Duration::from_secs(20), write)
            .await
            .expect("the write went on when the peer read")
            .unwrap();
        assert!(
            reader.join().unwrap().unwrap() == data,
            "bytes lost or reordered"
        );
        assert_eq!(epoll_masks(fd).len(), 1, "still watching for room");
        assert!(stream.write_wait.is_none());
    }
}
