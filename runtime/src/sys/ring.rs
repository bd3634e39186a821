//! The thread's io_uring, with 16-byte completions (buffer ring) or 32-byte ones (zcrx), and the
//! memory of the requests in flight (`request.rs`): pushing a request is safe because the ring
//! builds its entry and owns what the entry points at until the final completion.

use std::collections::HashMap;
use std::io;

use zcrx_ifq::completion::CQE_F_MORE;
use zcrx_ifq::io_uring::{cqueue, squeue, types, IoUring};

use super::request::{Owned, Plain};

enum Uring {
    Small(IoUring),
    Big(IoUring<squeue::Entry, cqueue::Entry32>),
}

pub(crate) struct Ring {
    uring: Uring,
    /// The requests in flight that point at memory, by `user_data`: freed (handed back) only at
    /// their final completion.
    in_flight: HashMap<u64, Box<Owned>>,
}

/// One completion, copied out of the ring (both CQE sizes).
pub(crate) struct Cqe {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    pub(crate) flags: u32,
    /// The second half of a 32-byte CQE (zcrx's location); zeros on a 16-byte ring.
    pub(crate) big: [u64; 2],
    /// At an owned request's final completion: the request, with what it owned.
    pub(crate) owned: Option<Box<Owned>>,
}

macro_rules! each {
    ($self:ident, $r:ident => $e:expr) => {
        match &$self.uring {
            Uring::Small($r) => $e,
            Uring::Big($r) => $e,
        }
    };
}

macro_rules! each_mut {
    ($self:ident, $r:ident => $e:expr) => {
        match &mut $self.uring {
            Uring::Small($r) => $e,
            Uring::Big($r) => $e,
        }
    };
}

impl Ring {
    pub(crate) fn new(sq: u32, cq: u32, big: bool) -> io::Result<Self> {
        fn setup<C: cqueue::EntryMarker>(
            b: &mut zcrx_ifq::io_uring::Builder<squeue::Entry, C>,
            cq: u32,
        ) {
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag()
                .setup_cqsize(cq)
                .setup_submit_all();
        }
        let r = if big {
            let mut b = IoUring::<squeue::Entry, cqueue::Entry32>::builder();
            setup(&mut b, cq);
            b.build(sq).map(Uring::Big)
        } else {
            let mut b = IoUring::builder();
            setup(&mut b, cq);
            b.build(sq).map(Uring::Small)
        };
        let uring = r.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "io_uring setup failed: {e} (SINGLE_ISSUER | DEFER_TASKRUN need Linux 6.1+)"
                ),
            )
        })?;
        Ok(Self {
            uring,
            in_flight: HashMap::new(),
        })
    }

    /// The ring with 32-byte completions, if this is one (for registering a zcrx queue).
    pub(crate) fn big(&self) -> Option<&IoUring<squeue::Entry, cqueue::Entry32>> {
        match &self.uring {
            Uring::Big(r) => Some(r),
            Uring::Small(_) => None,
        }
    }

    /// The ring with 16-byte completions, if this is one (for registering a buffer ring).
    pub(crate) fn small(&self) -> Option<&IoUring> {
        match &self.uring {
            Uring::Small(r) => Some(r),
            Uring::Big(_) => None,
        }
    }

    /// Pushes a request that points at no memory of ours; false if the submission queue is
    /// full (nothing was pushed).
    pub(crate) fn push(&mut self, user_data: u64, req: &Plain) -> bool {
        let sqe = req.clone().entry().user_data(user_data);
        // SAFETY: a `Plain` entry holds no address (see `request.rs`): the kernel reads or
        // writes no memory through it but what is registered with it, which outlives the
        // registration.
        each_mut!(self, r => unsafe { r.submission().push(&sqe) }.is_ok())
    }

    /// Pushes a request that points into `req`, which the ring keeps until the request's final
    /// completion and then hands back in its [`Cqe`]. If the submission queue is full, nothing
    /// is pushed and `req` comes back. Panics if `user_data` names an owned request still in
    /// flight (its memory stays where it is).
    pub(crate) fn push_owned(
        &mut self,
        user_data: u64,
        mut req: Box<Owned>,
    ) -> Result<(), Box<Owned>> {
        assert!(
            !self.in_flight.contains_key(&user_data),
            "user_data {user_data:#x} is already in flight"
        );
        let sqe = req.entry().user_data(user_data);
        // SAFETY: the entry points only into `*req` (an address, a buffer it owns, iovecs and a
        // header it owns, or memory a received buffer in it holds), and the box's contents do not
        // move: on success it goes into `in_flight`, which releases it only at the request's
        // final completion (`drain`) and leaks it if the ring goes first (`Drop`).
        let pushed = each_mut!(self, r => unsafe { r.submission().push(&sqe) }.is_ok());
        if !pushed {
            return Err(req);
        }
        self.in_flight.insert(user_data, req);
        Ok(())
    }

    /// Leaks every owned request still in flight (the kernel may still use their memory);
    /// returns how many.
    pub(crate) fn leak_in_flight(&mut self) -> usize {
        let n = self.in_flight.len();
        for (_, req) in self.in_flight.drain() {
            std::mem::forget(req);
        }
        n
    }

    /// Whether completions overflowed the CQ and wait in the kernel (`IORING_SQ_CQ_OVERFLOW`):
    /// the next enter moves them into the CQ first.
    pub(crate) fn cq_overflow(&mut self) -> bool {
        each_mut!(self, r => r.submission().cq_overflow())
    }

    /// Whether `io_uring_enter` takes a minimum wait (`IORING_FEAT_MIN_TIMEOUT`, Linux 6.13+).
    pub(crate) fn has_min_wait(&self) -> bool {
        each!(self, r => r.params().is_feature_min_timeout())
    }

    pub(crate) fn submit(&self) -> io::Result<usize> {
        each!(self, r => r.submit())
    }

    pub(crate) fn submit_and_wait(&self, n: usize) -> io::Result<usize> {
        each!(self, r => r.submit_and_wait(n))
    }

    pub(crate) fn submit_with_args(
        &self,
        n: usize,
        args: &types::SubmitArgs<'_, '_>,
    ) -> io::Result<usize> {
        each!(self, r => r.submitter().submit_with_args(n, args))
    }

    /// Moves the posted completions into `out`, each owned request's memory with its final one.
    pub(crate) fn drain(&mut self, out: &mut Vec<Cqe>) {
        let start = out.len();
        match &mut self.uring {
            Uring::Small(r) => out.extend(r.completion().map(|c| Cqe {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
                big: [0; 2],
                owned: None,
            })),
            Uring::Big(r) => out.extend(r.completion().map(|c| Cqe {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
                big: *c.big_cqe(),
                owned: None,
            })),
        }
        if self.in_flight.is_empty() {
            return;
        }
        for c in &mut out[start..] {
            if c.flags & CQE_F_MORE == 0 {
                c.owned = self.in_flight.remove(&c.user_data);
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Closing the ring does not wait for the kernel to finish what is in flight.
        self.leak_in_flight();
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use rustix::event::{eventfd, EventfdFlags};

    use super::*;

    fn read_counter(fd: &impl AsRawFd) -> Owned {
        Owned::ReadCounter {
            fd: fd.as_raw_fd(),
            buf: [0; 8],
        }
    }

    /// Reaps until a completion arrives.
    fn reap(ring: &mut Ring) -> Vec<Cqe> {
        let mut out = Vec::new();
        while out.is_empty() {
            ring.submit_and_wait(1).unwrap();
            ring.drain(&mut out);
        }
        out
    }

    #[test]
    fn an_owned_request_comes_back_with_its_final_completion() {
        let mut ring = Ring::new(8, 16, false).unwrap();
        let efd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        ring.push_owned(7, Box::new(read_counter(&efd))).unwrap();
        ring.submit().unwrap();
        assert_eq!(ring.in_flight.len(), 1);
        rustix::io::write(&efd, &5u64.to_ne_bytes()).unwrap();
        let cqes = reap(&mut ring);
        assert_eq!((cqes[0].user_data, cqes[0].result), (7, 8));
        // The kernel wrote the counter into the memory the ring kept.
        match cqes[0].owned.as_deref() {
            Some(Owned::ReadCounter { buf, .. }) => assert_eq!(u64::from_ne_bytes(*buf), 5),
            _ => panic!("the read came back without its buffer"),
        }
        assert!(ring.in_flight.is_empty());
    }

    #[test]
    fn plain_requests_carry_nothing_back() {
        let mut ring = Ring::new(8, 16, false).unwrap();
        assert!(ring.push(9, &Plain::Cancel { target: 1234 }));
        let cqes = reap(&mut ring);
        assert_eq!(cqes[0].user_data, 9);
        assert_eq!(cqes[0].result, -(rustix::io::Errno::NOENT.raw_os_error()));
        assert!(cqes[0].owned.is_none());
    }

    #[test]
    #[should_panic(expected = "already in flight")]
    fn a_user_data_in_flight_is_not_reused() {
        let mut ring = Ring::new(8, 16, false).unwrap();
        let efd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        ring.push_owned(7, Box::new(read_counter(&efd))).unwrap();
        let _ = ring.push_owned(7, Box::new(read_counter(&efd)));
    }

    #[test]
    fn a_full_submission_queue_hands_the_request_back() {
        let mut ring = Ring::new(1, 16, false).unwrap();
        let efd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        ring.push_owned(1, Box::new(read_counter(&efd))).unwrap();
        let back = ring.push_owned(2, Box::new(read_counter(&efd)));
        assert!(matches!(
            back.map_err(|b| *b),
            Err(Owned::ReadCounter { .. })
        ));
        assert_eq!(ring.in_flight.len(), 1, "only the pushed one is kept");
        // Still in flight at the drop: leaked, not freed.
        assert_eq!(ring.leak_in_flight(), 1);
    }
}
