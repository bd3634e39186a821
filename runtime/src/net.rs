//! TCP: a listener with multishot accept and streams whose receives are multishot receives into
//! the thread's shared pool, yielding [`RxBuf`]s.
//!
//! Every future here is cancellation-safe: accepted sockets and received buffers are queued on
//! the listener or stream, not in the future, so dropping an `accept()`, `recv()` or `read()`
//! future loses nothing; dropping a `connect()` or `send` future cancels the request and the
//! driver keeps its buffers and socket until the kernel has finished with them.
//!
//! [`TcpStream`] also speaks the ecosystem's I/O traits: `tokio::io::{AsyncRead, AsyncWrite,
//! AsyncBufRead}` with the `tokio` feature, `futures_io::{AsyncRead, AsyncWrite, AsyncBufRead}`
//! with `futures-io` (see the type's docs for what is zero-copy and what is copied).
//!
//! Listeners and streams belong to the runtime of the thread that made them. Outside a runtime
//! (not within `Runtime::block_on`, `Builder::run` or a task spawned there), the calls that
//! make one ([`TcpListener::bind`], [`TcpListener::bind_reuseport`], [`TcpListener::from_std`],
//! [`TcpStream::connect`], [`TcpStream::from_std`]) fail with an error saying so.
//!
//! # Panics
//!
//! A listener's or stream's other methods, and their futures, panic when called or polled
//! outside the runtime they belong to (after its `block_on` returned, say): they have no error
//! to return, and there is no ring to run them on.

use std::cell::Cell;
use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
use zcrx_ifq::{OwnerId, RxBuf};

use crate::context;
use crate::op::Op;
use crate::sys::request::Owned;

#[cfg(feature = "futures-io")]
mod futures_compat;
mod placement;
mod rw;
#[cfg(feature = "tokio")]
mod tokio_compat;

pub use placement::ListenerGroup;
pub use rw::WRITE_MAX;

/// Sends of at least this many bytes from an [`RxBuf`] use zero-copy send.
pub const ZC_SEND_THRESHOLD: usize = 64 * 1024;

/// Most buffers [`TcpStream::send_bufs`] puts in one request (the kernel takes up to 1024
/// iovecs; 64 pages or chunks is plenty for one wake-up's worth).
pub const SEND_BUFS_MAX: usize = 64;

fn resolve(addr: impl ToSocketAddrs) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    })
}

fn new_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    Ok(rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn to_std(addr: impl Into<Option<rustix::net::SocketAddrAny>>) -> io::Result<SocketAddr> {
    addr.into()
        .and_then(|a| SocketAddr::try_from(a).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address"))
}

fn errno(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

/// A TCP listening socket whose accepts are one multishot accept request.
#[derive(Debug)]
pub struct TcpListener {
    key: usize,
    fd: Rc<OwnedFd>,
}

impl TcpListener {
    /// Binds and listens (with `SO_REUSEADDR`). Fails outside a runtime.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::bind_with(resolve(addr)?, false)
    }

    /// Binds with `SO_REUSEPORT` too, so that one listener per thread can share the port and the
    /// kernel spreads connections across them.
    pub fn bind_reuseport(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::bind_with(resolve(addr)?, true)
    }

    fn bind_with(addr: SocketAddr, reuseport: bool) -> io::Result<Self> {
        context::check()?;
        let fd = new_socket(&addr)?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        if reuseport {
            sockopt::set_socket_reuseport(&fd, true)?;
        }
        rustix::net::bind(&fd, &addr)?;
        rustix::net::listen(&fd, 1024)?;
        Ok(Self::from_fd(fd))
    }

    /// Wraps a bound, listening socket. Outside a runtime it fails (and closes `l`).
    pub fn from_std(l: std::net::TcpListener) -> io::Result<Self> {
        context::check()?;
        Ok(Self::from_fd(l.into()))
    }

    fn from_fd(fd: OwnedFd) -> Self {
        let fd = Rc::new(fd);
        let key = context::with_driver(|d| d.add_listener(fd.clone()));
        Self { key, fd }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        to_std(rustix::net::getsockname(&*self.fd)?)
    }

    /// Waits for a connection. Cancellation-safe. After a graceful shutdown was triggered it
    /// fails with `ConnectionAborted`.
    ///
    /// A connection whose peer already reset it before it was accepted (its address is gone,
    /// `ENOTCONN`) is closed and skipped: it never reaches the application, and one vanished
    /// client cannot make `accept` fail.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            let fd =
                std::future::poll_fn(|cx| context::with_driver(|d| d.poll_accept(self.key, cx)))
                    .await?;
            match rustix::net::getpeername(&fd) {
                Ok(peer) => return Ok((TcpStream::from_fd(fd), to_std(peer)?)),
                Err(rustix::io::Errno::NOTCONN) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        if let Some(h) = context::try_current() {
            if let Ok(mut d) = h.driver.try_borrow_mut() {
                d.drop_listener(self.key);
            }
        }
    }
}

/// A TCP connection. Its receive side is a multishot receive armed from the start: received
/// chunks queue on the stream (charged to this connection) until taken with
/// [`recv`](Self::recv) or as a [`Stream`](futures_core::Stream).
///
/// # Async I/O traits
///
/// Besides the native, zero-copy [`recv`](Self::recv) / [`send_buf`](Self::send_buf), the
/// stream implements the ecosystem's byte-stream traits, so codecs, `copy`, HTTP stacks and
/// the like run over it:
///
/// | | `TcpStream` | `&TcpStream` |
/// |---|---|---|
/// | `tokio::io::AsyncRead`, `AsyncWrite` (feature `tokio`) | yes | yes |
/// | `tokio::io::AsyncBufRead` (feature `tokio`) | yes | no |
/// | `futures_io::AsyncRead`, `AsyncWrite` (feature `futures-io`) | yes | yes |
/// | `futures_io::AsyncBufRead` (feature `futures-io`) | yes | no |
///
/// - **`poll_fill_buf` is zero-copy**: it hands out the bytes of the received buffer the
///   stream holds (the [`RxBuf`], in the receive area), `consume(n)` advances through it, and
///   once it is consumed the buffer is dropped and its chunk goes back to the pool.
/// - **`poll_read` copies** out of that held buffer (and out of buffers that have already
///   arrived, to fill the caller's buffer), keeping the remainder held. So does
///   [`read`](Self::read), for code that uses neither trait.
/// - **`poll_write` copies** the caller's bytes (at most [`WRITE_MAX`] a call) into a buffer
///   the kernel owns until its send completes, whose allocation the stream keeps for the next
///   write; `poll_write_vectored` gathers all its slices into that one buffer for one send.
///   See [Cancellation](#cancellation) for what a dropped write means. For zero-copy sends of received bytes there is
///   [`send_buf`](Self::send_buf).
///
/// The stream holds at most one partly consumed buffer; [`recv`](Self::recv),
/// [`poll_recv`](Self::poll_recv), [`try_recv_buf`](Self::try_recv_buf) and the `Stream` impl
/// hand its remainder back first, so the APIs can be mixed without losing or reordering a byte.
///
/// `&TcpStream` has the read and write traits (like std's `impl Read for &TcpStream`) so one
/// stream can be read by one task and written by another, as the two directions of
/// `tokio::io::copy` are. It has no `AsyncBufRead`: the slice `poll_fill_buf` returns borrows
/// the held buffer, and through a shared reference another task could take or drop that buffer
/// (and hand its chunk back to the kernel) while the slice is still in use. With exclusive
/// access (`TcpStream` itself) nothing can. Each direction supports one task at a time: a
/// second task reading (or writing) the same stream concurrently may not be woken.
///
/// ## Cancellation
///
/// - Reads (`poll_read`, `poll_fill_buf`, [`read`](Self::read)) are cancellation-safe: a read
///   that returns `Pending` has taken nothing, and whatever it did not copy stays held or
///   queued on the stream. Dropping a read future midway loses no byte.
/// - `poll_write` submits one send of a copy of the caller's bytes and returns `Pending` until
///   it completes; the send lives in the stream, not in the future that polled it. Dropping
///   that future does **not** cancel the send: its bytes (all, or the prefix the kernel took)
///   still go out, and the writes that follow are credited with them as far as they write the
///   same bytes. A write polled again with the same data (as `write` and `write_all` are, or
///   a retry from where the last reported count left off) returns their count, or a shorter
///   write of the same bytes takes part of it; a write of other bytes means the earlier one
///   was abandoned: its bytes stay sent, uncounted, and the new ones follow them. Unlike
///   tokio's own `TcpStream`, where `Pending` means nothing was written, a dropped write here
///   may have written.
/// - A write is taken to be the dropped one polled again, without comparing every byte, when
///   it passes the same slices (the same addresses and lengths, the last one possibly longer)
///   with the sent bytes' first and last byte there; any other write is compared byte by byte.
///   So a caller that abandons a write and then rewrites the middle of the same buffer in
///   place (same first and last byte) is credited with the earlier bytes, which went out
///   instead; `write_all`, codecs and hyper poll again with what they passed.
/// - `poll_flush` waits for such a send left in flight (and reports its error); a later
///   `poll_write` of the same data still gets its count.
/// - `poll_shutdown` (`poll_close` in `futures-io`) waits for a send in flight, then shuts the
///   write side down (`shutdown(SHUT_WR)`: the peer reads the end of the stream). The request
///   lives in the stream too: dropping the future does not undo it.
/// - Dropping the stream cancels a send still in flight.
pub struct TcpStream {
    key: usize,
    fd: Rc<OwnedFd>,
    /// The received buffer being read through `poll_read` / `poll_fill_buf`, partly consumed;
    /// never empty when present.
    held: Cell<Option<RxBuf>>,
    /// The write side of the I/O traits: the send in flight, or the shutdown.
    #[cfg_attr(not(any(feature = "tokio", feature = "futures-io")), allow(dead_code))]
    write: Cell<rw::WriteState>,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("key", &self.key)
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl TcpStream {
    /// Connects. Dropping the future cancels the attempt and closes the socket. Fails outside
    /// a runtime.
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<Self> {
        context::check()?;
        let addr = resolve(addr)?;
        let fd = new_socket(&addr)?;
        let addr = rustix::net::SocketAddrAny::from(addr);
        let (res, _, req) = Op::submit(Owned::Connect { fd, addr }).await;
        let Owned::Connect { fd, .. } = *req else {
            unreachable!("a connect hands back a connect")
        };
        if res < 0 {
            return Err(errno(res));
        }
        Ok(Self::from_fd(fd))
    }

    /// Wraps a connected socket. Outside a runtime it fails (and closes `s`).
    pub fn from_std(s: std::net::TcpStream) -> io::Result<Self> {
        context::check()?;
        Ok(Self::from_fd(s.into()))
    }

    fn from_fd(fd: OwnedFd) -> Self {
        let fd = Rc::new(fd);
        let key = context::with_driver(|d| d.add_conn(fd.clone()));
        Self {
            key,
            fd,
            held: Cell::new(None),
            write: Cell::new(rw::WriteState::default()),
        }
    }

    /// The id the receive pool charges this connection's held bytes to.
    pub fn owner(&self) -> OwnerId {
        context::with_driver(|d| d.conn_owner(self.key))
    }

    /// The next received bytes, or `None` at end of stream. Cancellation-safe: nothing is lost
    /// if the future is dropped. If a read through the I/O traits left a buffer partly
    /// consumed, its remainder comes first.
    pub async fn recv(&self) -> io::Result<Option<RxBuf>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next received bytes (the remainder of a partly read buffer first).
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<RxBuf>>> {
        if let Some(buf) = self.held.take() {
            return Poll::Ready(Ok(Some(buf)));
        }
        self.poll_queue(cx)
    }

    /// A buffer that has already arrived, if any, without waiting (an error or the end of the
    /// stream is left for [`recv`](Self::recv)); the remainder of a partly read buffer first.
    /// With [`send_bufs`](Self::send_bufs), a forwarder sends what arrived together in one
    /// request: under zcrx a completion carries at most a page.
    pub fn try_recv_buf(&self) -> Option<RxBuf> {
        self.held.take().or_else(|| self.take_queued())
    }

    /// The next buffer from the driver's queue (not the held one).
    fn poll_queue(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<RxBuf>>> {
        context::with_driver(|d| d.poll_recv(self.key, cx))
    }

    /// A buffer already in the driver's queue (not the held one).
    fn take_queued(&self) -> Option<RxBuf> {
        context::with_driver(|d| d.take_queued(self.key))
    }

    /// Sends from an owned buffer; returns the bytes sent and the buffer.
    pub async fn send_owned<B: AsRef<[u8]> + 'static>(&self, buf: B) -> (io::Result<usize>, B) {
        self.send_with(buf, false).await
    }

    /// Zero-copy send (`SEND_ZC`): the kernel reads the buffer in place; it is returned only
    /// after the kernel's notification that it is done with it.
    pub async fn send_zc<B: AsRef<[u8]> + 'static>(&self, buf: B) -> (io::Result<usize>, B) {
        self.send_with(buf, true).await
    }

    async fn send_with<B: AsRef<[u8]> + 'static>(
        &self,
        buf: B,
        zc: bool,
    ) -> (io::Result<usize>, B) {
        let (res, _, keep) = self.send_op(buf, zc).await;
        send_result(res, *keep)
    }

    /// Submits one send (or zero-copy send) of `buf`, which the request's slot owns (with a
    /// reference to the socket) until the kernel's final completion; see [`send_result`].
    fn send_op<B: AsRef<[u8]> + 'static>(&self, buf: B, zc: bool) -> Op {
        Op::submit(Owned::Send {
            fd: self.fd.clone(),
            buf: Box::new(buf),
            zc,
        })
    }

    /// Sends some of `data` (copied into a buffer the kernel owns until it is done, so
    /// dropping the future is safe). Returns the bytes sent.
    pub async fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.send_owned(data.to_vec()).await.0
    }

    /// Sends all of `data`.
    pub async fn send_all(&self, data: &[u8]) -> io::Result<()> {
        let mut buf = data.to_vec();
        let mut off = 0;
        while off < buf.len() {
            let (r, b) = self.send_owned(SliceFrom(buf, off)).await;
            buf = b.0;
            match r? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => off += n,
            }
        }
        Ok(())
    }

    /// Sends all bytes of a received buffer straight from the receive area, without a copy; the
    /// chunk goes back to the pool only when the kernel is done with it. Large buffers use
    /// zero-copy send.
    pub async fn send_buf(&self, mut buf: RxBuf) -> io::Result<()> {
        while !buf.is_empty() {
            let zc = buf.len() >= ZC_SEND_THRESHOLD;
            let (r, b) = self.send_with(buf, zc).await;
            buf = b;
            match r? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => buf.advance(n),
            }
        }
        Ok(())
    }

    /// Sends all bytes of `bufs`, in order, straight from the receive area like
    /// [`send_buf`](Self::send_buf), in as few requests as the kernel takes: one `SENDMSG` with
    /// one iovec per buffer (at most [`SEND_BUFS_MAX`] a request), again for what a short send
    /// left. Each chunk goes back to the pool once the kernel is done with it.
    pub async fn send_bufs(&self, bufs: impl IntoIterator<Item = RxBuf>) -> io::Result<()> {
        let mut bufs: std::collections::VecDeque<RxBuf> =
            bufs.into_iter().filter(|b| !b.is_empty()).collect();
        while !bufs.is_empty() {
            if bufs.len() == 1 {
                return self.send_buf(bufs.pop_front().expect("one buffer")).await;
            }
            let batch: Vec<RxBuf> = bufs.drain(..bufs.len().min(SEND_BUFS_MAX)).collect();
            let (res, _, req) = Op::submit(Owned::send_msg(self.fd.clone(), batch)).await;
            let Owned::SendMsg {
                bufs: sent_bufs, ..
            } = *req
            else {
                unreachable!("a sendmsg hands back a sendmsg")
            };
            if res < 0 {
                return Err(errno(res));
            }
            if res == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            // Sent buffers are done with (the kernel copied them); what a short send left goes
            // first next time, in order.
            let mut sent = res as usize;
            let mut unsent = Vec::new();
            for mut b in sent_bufs {
                if sent >= b.len() {
                    sent -= b.len();
                    continue;
                }
                b.advance(sent);
                sent = 0;
                unsent.push(b);
            }
            for b in unsent.into_iter().rev() {
                bufs.push_front(b);
            }
        }
        Ok(())
    }

    /// Shuts down the read, write or both halves.
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let (res, _, _) = self.shutdown_op(how).await;
        if res < 0 {
            Err(errno(res))
        } else {
            Ok(())
        }
    }

    /// Submits a `shutdown(2)` of `how`.
    fn shutdown_op(&self, how: Shutdown) -> Op {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        Op::submit(Owned::Shutdown {
            fd: self.fd.clone(),
            how,
        })
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        Ok(sockopt::set_tcp_nodelay(&*self.fd, on)?)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        Ok(sockopt::tcp_nodelay(&*self.fd)?)
    }

    /// Sets `SO_LINGER`. `Some(Duration::ZERO)` makes closing the stream reset the connection
    /// (RST) instead of an orderly close: how a proxy passes a reset on.
    pub fn set_linger(&self, linger: Option<std::time::Duration>) -> io::Result<()> {
        Ok(sockopt::set_socket_linger(&*self.fd, linger)?)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        to_std(rustix::net::getsockname(&*self.fd)?)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        to_std(rustix::net::getpeername(&*self.fd)?)
    }

    /// The CPU that last received a packet of this connection (`SO_INCOMING_CPU`): with
    /// [`ListenerGroup::bind_by_cpu`] it is the CPU of the thread that accepted it.
    pub fn incoming_cpu(&self) -> io::Result<u32> {
        Ok(sockopt::socket_incoming_cpu(&*self.fd)?)
    }

    /// The NAPI id of the receive queue that last delivered a packet of this connection
    /// (`SO_INCOMING_NAPI_ID`; 0 when the driver has no NAPI ids). With
    /// [`ListenerGroup::bind_by_queue`] it is the NAPI id of the queue of the thread that
    /// accepted it: compare with `zcrx_ifq::nic::NicState::queues`.
    pub fn incoming_napi_id(&self) -> io::Result<u32> {
        crate::sys::incoming_napi_id(&*self.fd)
    }
}

/// The outcome of a [`TcpStream::send_op`] of a `B`, and the buffer back.
fn send_result<B: 'static>(res: i32, req: Owned) -> (io::Result<usize>, B) {
    let Owned::Send { buf, .. } = req else {
        unreachable!("a send hands back a send")
    };
    let buf = *buf.into_any().downcast::<B>().expect("the buffer sent");
    let r = if res < 0 {
        Err(errno(res))
    } else {
        Ok(res as usize)
    };
    (r, buf)
}

/// The tail of a buffer from an offset (for partial sends).
struct SliceFrom(Vec<u8>, usize);

impl AsRef<[u8]> for SliceFrom {
    fn as_ref(&self) -> &[u8] {
        &self.0[self.1..]
    }
}

impl futures_core::Stream for TcpStream {
    type Item = io::Result<RxBuf>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_recv(cx).map(|r| r.transpose())
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        if let Some(h) = context::try_current() {
            if let Ok(mut d) = h.driver.try_borrow_mut() {
                d.drop_conn(self.key);
            }
        }
    }
}
