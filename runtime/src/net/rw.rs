//! The poll logic behind [`TcpStream`]'s byte-stream I/O: [`TcpStream::read`] and the I/O trait
//! impls (tokio's and futures-io's are thin adapters over these functions).
//!
//! Reading goes through the stream's held buffer: the received [`RxBuf`](crate::RxBuf) being consumed, never
//! empty when present. `fill_buf` lends its bytes in place; `read` copies out of it and out of
//! buffers that have already arrived. Whatever is not consumed stays held, and the native
//! receive API hands it back first.
//!
//! Writing copies the caller's bytes into an owned buffer, submits one send, and keeps the
//! request in the stream's [`WriteState`] until a poll sees it complete.

// Without a trait feature only `read` uses this module.
#![cfg_attr(not(any(feature = "tokio", feature = "futures-io")), allow(dead_code))]

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use super::{errno, send_result, TcpStream};
use crate::op::Op;

/// Most bytes one `poll_write` of the I/O traits copies and sends; a larger buffer is written
/// in several calls (`write_all` loops).
pub const WRITE_MAX: usize = 128 * 1024;

/// The write side of the I/O traits.
#[derive(Default)]
pub(super) enum WriteState {
    /// Nothing in flight.
    #[default]
    Idle,
    /// A send of a copy of the caller's bytes (the request's slot owns the copy), and where
    /// those bytes came from.
    Sending(Op, Origin),
    /// A send that completed before a `poll_write` took all of its result (a flush waited for
    /// it, or a shorter write took part of it): its error (`res < 0`), or the bytes it sent that
    /// no write has been credited with yet, `bytes[at..]`. A `poll_write` whose buffer begins
    /// with them (or is a prefix of them) gets the credit.
    Sent {
        res: i32,
        bytes: Vec<u8>,
        at: usize,
        origin: Origin,
    },
    /// `shutdown(SHUT_WR)` in flight.
    ShuttingDown(Op),
    /// The write side is shut down.
    Shut,
}

/// Where a send's copy came from: the address of the caller's first byte and how many bytes
/// its buffers held. A write polled again with the same memory after `Pending` (what
/// `write_all` and hyper do) is recognised by it without comparing the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Origin {
    addr: usize,
    len: usize,
}

impl Origin {
    fn of(bufs: &[io::IoSlice<'_>]) -> Self {
        Self {
            addr: bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(0, |b| b.as_ptr() as usize),
            len: bufs.iter().map(|b| b.len()).sum(),
        }
    }
}

/// Whether the concatenation of `bufs` begins with `prefix`.
fn starts_with(bufs: &[io::IoSlice<'_>], mut prefix: &[u8]) -> bool {
    for b in bufs {
        if prefix.is_empty() {
            break;
        }
        let k = b.len().min(prefix.len());
        if b[..k] != prefix[..k] {
            return false;
        }
        prefix = &prefix[k..];
    }
    prefix.is_empty()
}

/// Whether `bytes` begins with the concatenation of `bufs`.
fn is_prefix_of(bufs: &[io::IoSlice<'_>], mut bytes: &[u8]) -> bool {
    for b in bufs {
        if b.len() > bytes.len() || b[..] != bytes[..b.len()] {
            return false;
        }
        bytes = &bytes[b.len()..];
    }
    true
}

impl TcpStream {
    /// Reads received bytes into `buf` and returns how many: at least one, or 0 at the end of
    /// the stream (or if `buf` is empty). Copies out of the held received buffer and out of
    /// buffers that have already arrived, until `buf` is full or nothing more has arrived; a
    /// partly copied buffer stays held for the next read (or [`recv`](Self::recv)).
    ///
    /// For code that uses neither tokio's nor futures-io's traits; [`recv`](Self::recv) gets
    /// the same bytes without a copy. Cancellation-safe: a read future dropped before it
    /// completes has taken nothing.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_read_slice(cx, buf)).await
    }

    /// [`read`](Self::read) as a poll.
    pub(super) fn poll_read_slice(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let room = buf.len();
        let mut at = 0;
        self.poll_read_with(cx, room, |bytes| {
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        })
    }

    /// Hands `put` up to `room` bytes in order (several slices if several buffers had arrived)
    /// and returns how many; waits only while nothing has been handed. 0: end of stream, or
    /// `room` is 0. Returns `Pending` having taken nothing.
    pub(super) fn poll_read_with(
        &self,
        cx: &mut Context<'_>,
        room: usize,
        mut put: impl FnMut(&[u8]),
    ) -> Poll<io::Result<usize>> {
        if room == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut held = self.held.take();
        let mut n = 0;
        let r = loop {
            let buf = match held.as_mut() {
                Some(buf) => buf,
                // Some bytes are in hand: take only what has already arrived.
                None if n > 0 => match self.take_queued() {
                    Some(buf) => held.insert(buf),
                    None => break Ok(n),
                },
                None => match self.poll_queue(cx) {
                    // Nothing was taken (`held` is empty).
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Some(buf))) => held.insert(buf),
                    Poll::Ready(Ok(None)) => break Ok(0),
                    Poll::Ready(Err(e)) => break Err(e),
                },
            };
            let k = buf.len().min(room - n);
            put(&buf[..k]);
            buf.advance(k);
            n += k;
            if buf.is_empty() {
                // Consumed: the chunk goes back to the pool.
                held = None;
            }
            if n == room {
                break Ok(n);
            }
        };
        self.held.set(held);
        Poll::Ready(r)
    }

    /// The held buffer's bytes, in place; receives the next buffer first if none is held.
    /// Empty at the end of the stream.
    pub(super) fn poll_fill_buf_mut(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        while self.held.get_mut().is_none() {
            match ready!(self.poll_queue(cx)) {
                Ok(Some(buf)) if !buf.is_empty() => *self.held.get_mut() = Some(buf),
                Ok(Some(_)) => {}
                Ok(None) => return Poll::Ready(Ok(&[])),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(self.held.get_mut().as_deref().unwrap_or_default()))
    }

    /// Advances through the held buffer (at most to its end), dropping it once consumed.
    pub(super) fn consume_held(&mut self, amt: usize) {
        let held = self.held.get_mut();
        if let Some(buf) = held.as_mut() {
            buf.advance(amt.min(buf.len()));
            if buf.is_empty() {
                *held = None;
            }
        }
    }

    /// Runs `f` on the write state (taken out of its cell meanwhile).
    fn with_write<R>(&self, f: impl FnOnce(&mut WriteState) -> R) -> R {
        let mut st = self.write.take();
        let r = f(&mut st);
        self.write.set(st);
        r
    }

    /// `poll_write`: copies up to [`WRITE_MAX`] bytes of `buf`, sends them, and returns the
    /// count once the send completes. See the type's docs ("Cancellation") for a write that is
    /// abandoned after `Pending`.
    pub(super) fn poll_write_copy(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_gather(cx, &[io::IoSlice::new(buf)])
    }

    /// `poll_write_vectored`: as [`poll_write_copy`](Self::poll_write_copy), gathering the
    /// slices (up to [`WRITE_MAX`] bytes in all) into the one copy that is sent, so a header
    /// and a body go out in one send.
    pub(super) fn poll_write_gather(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let origin = Origin::of(bufs);
        if origin.len == 0 {
            return Poll::Ready(Ok(0));
        }
        self.with_write(|st| loop {
            match st {
                WriteState::Idle | WriteState::Shut => {
                    // The request's slot owns the copy until the kernel is done with it; the
                    // allocation of the last one is reused.
                    let mut copy = self.write_spare.take();
                    copy.clear();
                    for b in bufs {
                        let room = WRITE_MAX - copy.len();
                        if room == 0 {
                            break;
                        }
                        copy.extend_from_slice(&b[..b.len().min(room)]);
                    }
                    *st = WriteState::Sending(self.send_op(copy, false), origin);
                }
                WriteState::Sending(..) | WriteState::ShuttingDown(_) => {
                    ready!(self.poll_in_flight(st, cx))?;
                }
                WriteState::Sent {
                    res,
                    bytes,
                    at,
                    origin: from,
                } => {
                    if *res < 0 {
                        let res = *res;
                        self.recycle(std::mem::take(st));
                        return Poll::Ready(Err(errno(res)));
                    }
                    let sent = &bytes[*at..];
                    // The usual case: polled again with the same data, from the same memory
                    // (then the bytes are not compared), or from elsewhere with equal bytes.
                    let same_memory =
                        *at == 0 && from.addr == origin.addr && origin.len >= from.len;
                    if same_memory || starts_with(bufs, sent) {
                        let n = sent.len();
                        self.recycle(std::mem::take(st));
                        return Poll::Ready(Ok(n));
                    }
                    if is_prefix_of(bufs, sent) {
                        // A shorter write of the same bytes: it takes part of the credit.
                        *at += origin.len;
                        return Poll::Ready(Ok(origin.len));
                    }
                    // The write that sent those bytes was abandoned: they stay sent, and this
                    // buffer follows them.
                    self.recycle(std::mem::take(st));
                }
            }
        })
    }

    /// Keeps a finished send's buffer for the next write's copy.
    fn recycle(&self, st: WriteState) {
        if let WriteState::Sent { bytes, .. } = st {
            self.write_spare.set(bytes);
        }
    }

    /// `poll_flush`: waits for a send (or shutdown) in flight; reports a failed send.
    pub(super) fn poll_flush_send(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with_write(|st| {
            ready!(self.poll_in_flight(st, cx))?;
            if let WriteState::Sent { res, .. } = *st {
                if res < 0 {
                    self.recycle(std::mem::take(st));
                    return Poll::Ready(Err(errno(res)));
                }
            }
            Poll::Ready(Ok(()))
        })
    }

    /// `poll_shutdown` / `poll_close`: waits for a send in flight, then shuts the write side
    /// down.
    pub(super) fn poll_shutdown_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with_write(|st| loop {
            match st {
                WriteState::Sending(..) | WriteState::ShuttingDown(_) => {
                    ready!(self.poll_in_flight(st, cx))?;
                }
                WriteState::Sent { res, .. } if *res < 0 => {
                    let res = *res;
                    self.recycle(std::mem::take(st));
                    return Poll::Ready(Err(errno(res)));
                }
                WriteState::Idle | WriteState::Sent { .. } => {
                    self.recycle(std::mem::take(st));
                    *st = WriteState::ShuttingDown(self.shutdown_op(Shutdown::Write));
                }
                WriteState::Shut => return Poll::Ready(Ok(())),
            }
        })
    }
}

impl TcpStream {
    /// Waits for the request in flight in `st`, if any: a send becomes [`WriteState::Sent`], a
    /// shutdown [`WriteState::Shut`] (or, failed, `Idle` and the error).
    fn poll_in_flight(&self, st: &mut WriteState, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let op = match st {
            WriteState::Sending(op, _) | WriteState::ShuttingDown(op) => op,
            _ => return Poll::Ready(Ok(())),
        };
        let (res, _, keep) = ready!(Pin::new(op).poll(cx));
        match std::mem::take(st) {
            WriteState::Sending(_, origin) => {
                let (_, mut bytes) = send_result::<Vec<u8>>(res, keep);
                bytes.truncate(res.max(0) as usize);
                *st = WriteState::Sent {
                    res,
                    bytes,
                    at: 0,
                    origin,
                };
                Poll::Ready(Ok(()))
            }
            _ if res < 0 => Poll::Ready(Err(errno(res))),
            _ => {
                *st = WriteState::Shut;
                Poll::Ready(Ok(()))
            }
        }
    }
}
