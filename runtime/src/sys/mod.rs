//! The runtime's few raw OS calls: the io_uring submission push (`ring.rs`) of requests built
//! here from what they point at (`request.rs`), fds that a completion created, the zeroed
//! `msghdr` of a send, the reuseport program and `SO_INCOMING_NAPI_ID`. Every `unsafe` of the
//! `zcrx` crate is in this module; the rest of the crate is safe code on top. The push is safe
//! because the ring owns what an entry points at until the request's final completion.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

pub(crate) mod request;
pub(crate) mod ring;

/// Takes ownership of the fd an accept completion returned (`res >= 0`).
///
/// The kernel installed it in this process for this completion only, and a completion is
/// decoded once, so nothing else owns it.
pub(crate) fn fd_from_accept(res: i32) -> OwnedFd {
    assert!(res >= 0, "an accept completion's fd is not negative");
    // SAFETY: on success an accept completion's result is a new fd that this process owns and
    // that nothing else refers to (the completion is consumed once, by the caller).
    unsafe { OwnedFd::from_raw_fd(res) }
}

/// A `msghdr` without name, control or iovecs.
pub(crate) fn empty_msghdr() -> libc::msghdr {
    // SAFETY: `msghdr` is plain data (pointers and integers, some private padding fields), and
    // all zeros is a header without name, iovecs or control data.
    unsafe { std::mem::zeroed() }
}

/// `SO_ATTACH_REUSEPORT_CBPF` (`asm-generic/socket.h`; the libc crate has it for Android only).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Attaches a classic BPF program to the reuseport group of `sock`: for each new connection the
/// program's return value picks the group's socket by index (in the order they started
/// listening); an index past the group's end falls back to the kernel's hash.
pub(crate) fn attach_reuseport_cbpf(
    sock: impl AsFd,
    program: &[libc::sock_filter],
) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `len` filters that live across the call (the kernel copies the
    // program before returning), and the option's length is that of `sock_fprog`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::addr_of!(prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_INCOMING_NAPI_ID` (`asm-generic/socket.h`, Linux 4.12).
const SO_INCOMING_NAPI_ID: libc::c_int = 56;

/// The NAPI id of the receive queue that last delivered a packet of `sock`'s connection
/// (`SO_INCOMING_NAPI_ID`; 0 when the driver has no NAPI ids, or before the first packet).
pub(crate) fn incoming_napi_id(sock: impl AsFd) -> io::Result<u32> {
    let mut id: libc::c_uint = 0;
    let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
    // SAFETY: `id` and `len` are live, writable and sized as the option's value (an unsigned
    // int) for the whole call; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_INCOMING_NAPI_ID,
            std::ptr::addr_of_mut!(id).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(id)
    } else {
        Err(io::Error::last_os_error())
    }
}
