//! The thread's io_uring, with 16-byte completions (buffer ring) or 32-byte ones (zcrx).

use std::io;

use zcrx_ifq::io_uring::{cqueue, squeue, types, IoUring};

pub(crate) enum Ring {
    Small(IoUring),
    Big(IoUring<squeue::Entry, cqueue::Entry32>),
}

/// One completion, copied out of the ring (both CQE sizes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cqe {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    pub(crate) flags: u32,
    /// The second half of a 32-byte CQE (zcrx's location); zeros on a 16-byte ring.
    pub(crate) big: [u64; 2],
}

macro_rules! each {
    ($self:ident, $r:ident => $e:expr) => {
        match $self {
            Ring::Small($r) => $e,
            Ring::Big($r) => $e,
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
            b.build(sq).map(Ring::Big)
        } else {
            let mut b = IoUring::builder();
            setup(&mut b, cq);
            b.build(sq).map(Ring::Small)
        };
        r.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "io_uring setup failed: {e} (SINGLE_ISSUER | DEFER_TASKRUN need Linux 6.1+)"
                ),
            )
        })
    }

    /// # Safety
    /// Everything `sqe` points at must stay valid until its final completion.
    pub(crate) unsafe fn push(&mut self, sqe: &squeue::Entry) -> bool {
        // SAFETY: forwarded to the caller.
        each!(self, r => unsafe { r.submission().push(sqe) }.is_ok())
    }

    /// Whether completions overflowed the CQ and wait in the kernel (`IORING_SQ_CQ_OVERFLOW`):
    /// the next enter moves them into the CQ first.
    pub(crate) fn cq_overflow(&mut self) -> bool {
        each!(self, r => r.submission().cq_overflow())
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

    pub(crate) fn drain(&mut self, out: &mut Vec<Cqe>) {
        match self {
            Ring::Small(r) => out.extend(r.completion().map(|c| Cqe {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
                big: [0; 2],
            })),
            Ring::Big(r) => out.extend(r.completion().map(|c| Cqe {
                user_data: c.user_data(),
                result: c.result(),
                flags: c.flags(),
                big: *c.big_cqe(),
            })),
        }
    }
}
