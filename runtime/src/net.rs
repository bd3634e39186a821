//! TCP: a listener with multishot accept and streams whose receives are multishot receives into
//! the thread's shared pool, yielding [`RxBuf`]s.
//!
//! Every future here is cancellation-safe: accepted sockets and received buffers are queued on
//! the listener or stream, not in the future, so dropping an `accept()` or `recv()` future loses
//! nothing; dropping a `connect()` or `send` future cancels the request and the driver keeps its
//! buffers and socket until the kernel has finished with them.
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

use std::any::Any;
use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
use zcrx_ifq::io_uring::{opcode, types};
use zcrx_ifq::{OwnerId, RxBuf};

use crate::context;
use crate::op::Op;

/// Sends of at least this many bytes from an [`RxBuf`] use zero-copy send.
pub const ZC_SEND_THRESHOLD: usize = 64 * 1024;

/// Most buffers [`TcpStream::send_bufs`] puts in one request (the kernel takes up to 1024
/// iovecs; 64 pages or chunks is plenty for one wake-up's worth).
pub const SEND_BUFS_MAX: usize = 64;

/// What a `SENDMSG` of received buffers points at (the buffers, their iovecs, the header), owned
/// by its request's slot until the kernel's final completion.
struct SendMsgKeep {
    _fd: Rc<OwnedFd>,
    bufs: Vec<RxBuf>,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
}

impl SendMsgKeep {
    fn new(fd: Rc<OwnedFd>, bufs: Vec<RxBuf>) -> Box<Self> {
        let iov = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: `msghdr` is plain data, and all zeros is a header without name or control.
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut keep = Box::new(Self {
            _fd: fd,
            bufs,
            iov,
            msg,
        });
        // Both point into the box's heap allocations, which do not move with the box.
        keep.msg.msg_iov = keep.iov.as_mut_ptr();
        keep.msg.msg_iovlen = keep.iov.len() as _;
        keep
    }

    fn msg(&self) -> *const libc::msghdr {
        &self.msg
    }
}

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

/// A raw `sockaddr` the kernel reads during `connect`; boxed so its address is stable.
#[repr(C)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

fn raw_addr(addr: &SocketAddr) -> (Box<RawAddr>, libc::socklen_t) {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            (
                Box::new(RawAddr { v4: sin }),
                std::mem::size_of::<libc::sockaddr_in>() as _,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            (
                Box::new(RawAddr { v6: sin6 }),
                std::mem::size_of::<libc::sockaddr_in6>() as _,
            )
        }
    }
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
#[derive(Debug)]
pub struct TcpStream {
    key: usize,
    fd: Rc<OwnedFd>,
}

impl TcpStream {
    /// Connects. Dropping the future cancels the attempt and closes the socket. Fails outside
    /// a runtime.
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<Self> {
        context::check()?;
        let addr = resolve(addr)?;
        let fd = new_socket(&addr)?;
        let (raw, len) = raw_addr(&addr);
        // SAFETY: both union variants start with the family field, like `sockaddr`.
        let ptr = &*raw as *const RawAddr as *const libc::sockaddr;
        let sqe = opcode::Connect::new(types::Fd(fd.as_raw_fd()), ptr, len).build();
        let (res, _, keep) = Op::submit(sqe, Box::new((fd, raw))).await;
        let (fd, _) = *keep
            .downcast::<(OwnedFd, Box<RawAddr>)>()
            .expect("connect resources");
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
        Self { key, fd }
    }

    /// The id the receive pool charges this connection's held bytes to.
    pub fn owner(&self) -> OwnerId {
        context::with_driver(|d| d.conn_owner(self.key))
    }

    /// The next received bytes, or `None` at end of stream. Cancellation-safe: nothing is lost
    /// if the future is dropped.
    pub async fn recv(&self) -> io::Result<Option<RxBuf>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next received bytes.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<RxBuf>>> {
        context::with_driver(|d| d.poll_recv(self.key, cx))
    }

    /// A buffer that has already arrived, if any, without waiting (an error or the end of the
    /// stream is left for [`recv`](Self::recv)). With [`send_bufs`](Self::send_bufs), a
    /// forwarder sends what arrived together in one request: under zcrx a completion carries at
    /// most a page.
    pub fn try_recv_buf(&self) -> Option<RxBuf> {
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
        let keep: Box<(Rc<OwnedFd>, B)> = Box::new((self.fd.clone(), buf));
        let data = keep.1.as_ref();
        let (ptr, len) = (data.as_ptr(), data.len().min(u32::MAX as usize) as u32);
        let fd = types::Fd(self.fd.as_raw_fd());
        let sqe = if zc {
            opcode::SendZc::new(fd, ptr, len).build()
        } else {
            opcode::Send::new(fd, ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        };
        let (res, _, keep) = Op::submit(sqe, keep as Box<dyn Any>).await;
        let (_, buf) = *keep.downcast::<(Rc<OwnedFd>, B)>().expect("send resources");
        let r = if res < 0 {
            Err(errno(res))
        } else {
            Ok(res as usize)
        };
        (r, buf)
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
            let keep = SendMsgKeep::new(self.fd.clone(), batch);
            let sqe = opcode::SendMsg::new(types::Fd(self.fd.as_raw_fd()), keep.msg())
                .flags(libc::MSG_NOSIGNAL as u32)
                .build();
            let (res, _, keep) = Op::submit(sqe, keep as Box<dyn Any>).await;
            let keep = *keep.downcast::<SendMsgKeep>().expect("sendmsg resources");
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
            for mut b in keep.bufs {
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
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        let sqe = opcode::Shutdown::new(types::Fd(self.fd.as_raw_fd()), how).build();
        let (res, _, _) = Op::submit(sqe, Box::new(self.fd.clone())).await;
        if res < 0 {
            Err(errno(res))
        } else {
            Ok(())
        }
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
