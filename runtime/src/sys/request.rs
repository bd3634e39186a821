//! The requests the runtime submits, each built here from what it points at, so that pushing one
//! is safe.
//!
//! - [`Plain`] requests point at no memory of ours: cancels, multishot accepts without a peer
//!   address, and the pool's multishot receives (the kernel writes only into memory registered
//!   with it, which `zcrx_ifq` keeps alive for as long as the registration).
//! - [`Owned`] requests read or write memory they own (an address, a buffer, iovecs, the
//!   eventfd read's 8 bytes). The ring boxes one, builds its entry from the box's final
//!   addresses, keeps the box from the push until the request's final completion (the first
//!   without `IORING_CQE_F_MORE`) and hands it back with that completion. What is still in
//!   flight when the ring goes is leaked, never freed under the kernel.

use std::any::Any;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use rustix::net::SocketAddrAny;
use zcrx_ifq::io_uring::{opcode, squeue, types};
use zcrx_ifq::RxBuf;

/// A request that points at no memory of ours.
#[derive(Clone)]
pub(crate) enum Plain {
    /// Cancels the requests whose `user_data` is `target`.
    Cancel {
        /// The `user_data` of the requests to cancel.
        target: u64,
    },
    /// A multishot accept on a listening socket, without the peer's address; the new fds are
    /// close-on-exec.
    AcceptMulti {
        /// The listening socket (kept open by its listener until the final completion).
        fd: RawFd,
    },
    /// A multishot receive into the thread's pool, as `zcrx_ifq::RxPool::recv` built it (buffer
    /// select or `RECV_ZC`: no address in the entry, the kernel picks registered memory).
    Recv(squeue::Entry),
}

impl Plain {
    pub(super) fn entry(self) -> squeue::Entry {
        match self {
            Plain::Cancel { target } => opcode::AsyncCancel::new(target).build(),
            Plain::AcceptMulti { fd } => opcode::AcceptMulti::new(types::Fd(fd))
                .flags(libc::SOCK_CLOEXEC)
                .build(),
            Plain::Recv(e) => e,
        }
    }
}

/// The bytes a send reads: any `AsRef<[u8]> + 'static` value, handed back as itself.
pub(crate) trait SendBuf: Any {
    /// The bytes to send.
    fn bytes(&self) -> &[u8];
    /// Back to the value, for a downcast.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<B: AsRef<[u8]> + 'static> SendBuf for B {
    fn bytes(&self) -> &[u8] {
        self.as_ref()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// A request that reads or writes memory it owns; see the module docs.
pub(crate) enum Owned {
    /// Connects `fd` to `addr`.
    Connect {
        /// The new socket, handed back with the completion.
        fd: OwnedFd,
        /// The address the kernel reads.
        addr: SocketAddrAny,
    },
    /// Sends `buf` (`SEND_ZC` when `zc`).
    Send {
        /// The socket, open until the final completion.
        fd: Rc<OwnedFd>,
        /// What is sent.
        buf: Box<dyn SendBuf>,
        /// Zero-copy send: a second completion (the notification) ends it.
        zc: bool,
    },
    /// Sends received buffers, in order, with one `SENDMSG`.
    SendMsg {
        /// The socket, open until the final completion.
        fd: Rc<OwnedFd>,
        /// What is sent, straight from the receive area.
        bufs: Vec<RxBuf>,
        /// One iovec per buffer, filled in at the push.
        iov: Vec<libc::iovec>,
        /// The header the kernel reads, pointing at `iov`, filled in at the push.
        msg: libc::msghdr,
    },
    /// `shutdown(2)` of `how` (`SHUT_RD`, `SHUT_WR`, `SHUT_RDWR`).
    Shutdown {
        /// The socket, open until the completion.
        fd: Rc<OwnedFd>,
        /// Which halves.
        how: i32,
    },
    /// Reads an eventfd's 8-byte counter.
    ReadCounter {
        /// The eventfd (its owner keeps it open for as long as the ring).
        fd: RawFd,
        /// Where the kernel writes the counter.
        buf: [u8; 8],
    },
}

impl std::fmt::Debug for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Owned::Connect { .. } => "Connect",
            Owned::Send { .. } => "Send",
            Owned::SendMsg { .. } => "SendMsg",
            Owned::Shutdown { .. } => "Shutdown",
            Owned::ReadCounter { .. } => "ReadCounter",
        })
    }
}

impl Owned {
    /// A `SENDMSG` of `bufs` on `fd`.
    pub(crate) fn send_msg(fd: Rc<OwnedFd>, bufs: Vec<RxBuf>) -> Self {
        Owned::SendMsg {
            fd,
            bufs,
            iov: Vec::new(),
            msg: super::empty_msghdr(),
        }
    }

    /// The entry for this request, pointing into `self`, which is boxed and is not moved out
    /// of its box until the final completion (the ring keeps the box).
    pub(super) fn entry(&mut self) -> squeue::Entry {
        match self {
            Owned::Connect { fd, addr } => opcode::Connect::new(
                types::Fd(fd.as_raw_fd()),
                addr.as_ptr().cast(),
                addr.addr_len(),
            )
            .build(),
            Owned::Send { fd, buf, zc } => {
                let data = buf.bytes();
                let (ptr, len) = (data.as_ptr(), data.len().min(u32::MAX as usize) as u32);
                let fd = types::Fd(fd.as_raw_fd());
                if *zc {
                    opcode::SendZc::new(fd, ptr, len).build()
                } else {
                    opcode::Send::new(fd, ptr, len)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                }
            }
            Owned::SendMsg { fd, bufs, iov, msg } => {
                *iov = bufs
                    .iter()
                    .map(|b| libc::iovec {
                        iov_base: b.as_ptr() as *mut libc::c_void,
                        iov_len: b.len(),
                    })
                    .collect();
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = iov.len() as _;
                opcode::SendMsg::new(types::Fd(fd.as_raw_fd()), &*msg)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
            }
            Owned::Shutdown { fd, how } => {
                opcode::Shutdown::new(types::Fd(fd.as_raw_fd()), *how).build()
            }
            Owned::ReadCounter { fd, buf } => {
                opcode::Read::new(types::Fd(*fd), buf.as_mut_ptr(), 8).build()
            }
        }
    }
}
