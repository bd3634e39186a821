//! The poll logic behind [`TcpStream`]'s byte-stream I/O: [`TcpStream::read`] and the I/O trait
//! impls (tokio's and futures-io's are thin adapters over these functions).
//!
//! Reading goes through the stream's held buffer: the received [`RxBuf`](crate::RxBuf) being consumed, never
//! empty when present. `fill_buf` lends its bytes in place; `read` copies out of it and out of
//! buffers that have already arrived. Whatever is not consumed stays held, and the native
//! receive API hands it back first.
//!
//! Writing copies the caller's bytes (one slice or several, gathered) into an owned buffer whose
//! allocation is reused from write to write, submits one send, and keeps the request in the
//! stream's [`WriteState`] until a poll sees it complete.

// Without a trait feature only `read` uses this module.
#![cfg_attr(not(any(feature = "tokio", feature = "futures-io")), allow(dead_code))]

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use super::{errno, send_result, TcpStream};
use crate::op::Op;

/// Most bytes one `poll_write` of the I/O traits copies and sends; a larger buffer is written
/// in several calls (`write_all` loops).
pub const WRITE_MAX: usize = 128 * 1024;

/// The write side of the I/O traits: what is in flight, and the allocations kept across writes.
#[derive(Default)]
pub(super) struct WriteState {
    phase: Phase,
    /// The allocation of the last completed send's buffer, emptied, for the next write's copy
    /// (at most [`WRITE_MAX`] bytes of capacity are kept).
    spare: Vec<u8>,
    /// Where the bytes of the send in flight (or [`Phase::Sent`]) came from: the address and
    /// length of each non-empty caller slice it copied from, in order (its allocation is
    /// kept too).
    src: Vec<(usize, usize)>,
}

/// What the write side is doing.
#[derive(Default)]
enum Phase {
    /// Nothing in flight.
    #[default]
    Idle,
    /// A send of a copy of the caller's bytes (the request's slot owns the copy).
    Sending(Op),
    /// A send that completed before a `poll_write` took all of its result (a flush waited for
    /// it, or a shorter write took part of it): its error (`res < 0`), or the bytes it sent that
    /// no write has been credited with yet, `bytes[at..]`. A `poll_write` whose buffer begins
    /// with them (or is a prefix of them) gets the credit.
    Sent { res: i32, bytes: Vec<u8>, at: usize },
    /// `shutdown(SHUT_WR)` in flight.
    ShuttingDown(Op),
    /// The write side is shut down.
    Shut,
}

impl WriteState {
    /// Back to `Idle`, keeping the sent buffer's allocation for the next copy.
    fn idle(&mut self) {
        if let Phase::Sent { bytes, .. } = std::mem::take(&mut self.phase) {
            if bytes.capacity() <= WRITE_MAX {
                self.spare = bytes;
            }
        }
    }
}

/// The bytes of `bufs`, in order, as one sequence of (non-empty) slices.
fn chunks<'a>(bufs: &'a [IoSlice<'_>]) -> impl Iterator<Item = &'a [u8]> + 'a {
    bufs.iter().map(|b| &**b).filter(|b| !b.is_empty())
}

/// How much of `sent` (the bytes a completed send took, all of them not yet credited, and
/// copied from the slices recorded in `src`) the retry `bufs` is credited with: `Some(n)` if
/// `bufs` begins with all `n` of `sent`, or is a prefix of them; `None` if `bufs` holds other
/// bytes (the write that sent them was abandoned).
///
/// The cheap rule: if `bufs` begins with the very slices the send copied (same addresses, the
/// same lengths, the last one as long or longer) and agrees with `sent` on the first and last
/// byte, it is the same write polled again: the caller still holds the bytes it had us send.
/// Anything else is compared byte by byte.
fn credit(sent: &[u8], src: Option<&[(usize, usize)]>, bufs: &[IoSlice<'_>]) -> Option<usize> {
    if let Some(src) = src {
        if same_slices(sent, src, bufs) {
            return Some(sent.len());
        }
    }
    // Byte by byte: `bufs` begins with `sent`, or `sent` with all of `bufs`.
    let mut rest = sent;
    for b in chunks(bufs) {
        let k = b.len().min(rest.len());
        if b[..k] != rest[..k] {
            return None;
        }
        rest = &rest[k..];
        if rest.is_empty() {
            return Some(sent.len());
        }
    }
    Some(sent.len() - rest.len())
}

/// Whether `bufs` begins with the slices of `src` that the `sent.len()` bytes were copied from
/// (the last one at least as long as what was taken of it), and has `sent`'s first and last
/// bytes there.
fn same_slices(sent: &[u8], src: &[(usize, usize)], bufs: &[IoSlice<'_>]) -> bool {
    let (Some(&first), Some(&last)) = (sent.first(), sent.last()) else {
        return false;
    };
    let mut left = sent.len();
    let mut got = chunks(bufs);
    let mut head = None;
    for &(addr, len) in src {
        let Some(b) = got.next() else { return false };
        let take = len.min(left);
        // Every slice but the last must be the one copied, whole; the last may have grown.
        if b.as_ptr() as usize != addr || b.len() < take || (take < left && b.len() != len) {
            return false;
        }
        head.get_or_insert(b[0]);
        left -= take;
        if left == 0 {
            return head == Some(first) && b[take - 1] == last;
        }
    }
    false
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

    /// `poll_write`: [`poll_write_gather`](Self::poll_write_gather) of one slice.
    pub(super) fn poll_write_copy(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_gather(cx, &[IoSlice::new(buf)])
    }

    /// `poll_write_vectored`: copies up to [`WRITE_MAX`] bytes of `bufs`, in order, into one
    /// owned buffer (the allocation of the previous write's, reused), sends them in one send,
    /// and returns the count once the send completes. See the type's docs ("Cancellation") for
    /// a write that is abandoned after `Pending`.
    pub(super) fn poll_write_gather(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if chunks(bufs).next().is_none() {
            return Poll::Ready(Ok(0));
        }
        self.with_write(|w| loop {
            match &mut w.phase {
                Phase::Idle | Phase::Shut => {
                    // The request's slot owns the copy until the kernel is done with it.
                    let mut copy = std::mem::take(&mut w.spare);
                    copy.clear();
                    w.src.clear();
                    let total: usize = chunks(bufs).map(<[u8]>::len).sum();
                    copy.reserve_exact(total.min(WRITE_MAX));
                    for b in chunks(bufs) {
                        let k = b.len().min(WRITE_MAX - copy.len());
                        copy.extend_from_slice(&b[..k]);
                        w.src.push((b.as_ptr() as usize, b.len()));
                        if copy.len() == WRITE_MAX {
                            break;
                        }
                    }
                    w.phase = Phase::Sending(self.send_op(copy, false));
                }
                Phase::Sending(_) | Phase::ShuttingDown(_) => {
                    ready!(poll_in_flight(&mut w.phase, cx))?;
                }
                Phase::Sent { res, bytes, at } => {
                    if *res < 0 {
                        let res = *res;
                        w.idle();
                        return Poll::Ready(Err(errno(res)));
                    }
                    let sent = &bytes[*at..];
                    // The slices are known only for the whole of the send's bytes.
                    let src = (*at == 0).then_some(&w.src[..]);
                    match credit(sent, src, bufs) {
                        // The usual case: polled again with the same data.
                        Some(n) if n == sent.len() => {
                            w.idle();
                            return Poll::Ready(Ok(n));
                        }
                        // A shorter write of the same bytes: it takes part of the credit.
                        Some(n) => {
                            *at += n;
                            return Poll::Ready(Ok(n));
                        }
                        // The write that sent those bytes was abandoned: they stay sent, and
                        // these bytes follow them.
                        None => w.idle(),
                    }
                }
            }
        })
    }

    /// `poll_flush`: waits for a send (or shutdown) in flight; reports a failed send.
    pub(super) fn poll_flush_send(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with_write(|w| {
            ready!(poll_in_flight(&mut w.phase, cx))?;
            if let Phase::Sent { res, .. } = w.phase {
                if res < 0 {
                    w.idle();
                    return Poll::Ready(Err(errno(res)));
                }
            }
            Poll::Ready(Ok(()))
        })
    }

    /// `poll_shutdown` / `poll_close`: waits for a send in flight, then shuts the write side
    /// down.
    pub(super) fn poll_shutdown_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with_write(|w| loop {
            match &w.phase {
                Phase::Sending(_) | Phase::ShuttingDown(_) => {
                    ready!(poll_in_flight(&mut w.phase, cx))?;
                }
                Phase::Sent { res, .. } if *res < 0 => {
                    let res = *res;
                    w.idle();
                    return Poll::Ready(Err(errno(res)));
                }
                Phase::Idle | Phase::Sent { .. } => {
                    w.idle();
                    w.phase = Phase::ShuttingDown(self.shutdown_op(Shutdown::Write));
                }
                Phase::Shut => return Poll::Ready(Ok(())),
            }
        })
    }
}

/// Waits for the request in flight in `st`, if any: a send becomes [`Phase::Sent`], a
/// shutdown [`Phase::Shut`] (or, failed, `Idle` and the error).
fn poll_in_flight(st: &mut Phase, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let op = match st {
        Phase::Sending(op) | Phase::ShuttingDown(op) => op,
        _ => return Poll::Ready(Ok(())),
    };
    let (res, _, keep) = ready!(Pin::new(op).poll(cx));
    match std::mem::take(st) {
        Phase::Sending(_) => {
            let (_, mut bytes) = send_result::<Vec<u8>>(res, *keep);
            bytes.truncate(res.max(0) as usize);
            *st = Phase::Sent { res, bytes, at: 0 };
            Poll::Ready(Ok(()))
        }
        _ if res < 0 => Poll::Ready(Err(errno(res))),
        _ => {
            *st = Phase::Shut;
            Poll::Ready(Ok(()))
        }
    }
}
