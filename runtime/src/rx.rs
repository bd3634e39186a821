//! The thread's receive pool: a provided buffer ring or a zcrx interface queue.

use std::io;
use std::os::fd::RawFd;

use ifq::backend::Completion;
use ifq::bufring::{BufRing, BufRingConfig};
use ifq::io_uring::{squeue, types};
use ifq::zcrx::{ZcrxConfig, ZcrxIfq};
use ifq::{Area, OwnerId, Snapshot, TeardownReport};

use crate::builder::{Config, RxBackend};
use crate::ring::Ring;

pub(crate) enum Rx {
    Buf(BufRing),
    Zcrx(ZcrxIfq),
}

static FALLBACK_SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Rx {
    /// Sets up the ring and the receive pool `config` asks for on thread `index`.
    pub(crate) fn setup(config: &Config, index: usize) -> io::Result<(Ring, Rx, String)> {
        let area = || {
            Area::builder()
                .chunk_size(config.chunk_size)
                .chunks(config.chunks)
                .prefault(true)
                .build()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        let want_zcrx = match (&config.backend, &config.zcrx) {
            (RxBackend::BufRing, _) => None,
            (RxBackend::Zcrx, None) => return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "RxBackend::Zcrx needs an interface and queue: Builder::zcrx_queue(ifname, queue)",
            )),
            (_, Some((ifname, queue))) => Some((ifname.clone(), queue + index as u32)),
            (RxBackend::Auto, None) => None,
        };
        if let Some((ifname, queue)) = want_zcrx {
            let ring = Ring::new(config.sq_entries, config.cq_entries, true)?;
            let Ring::Big(r) = &ring else { unreachable!() };
            let mut zc = ZcrxConfig::new(ifname.clone(), queue);
            if let Some(l) = config.conn_limit {
                zc = zc.owner_limit(l);
            }
            match ZcrxIfq::register(r, area()?, zc) {
                Ok(mut ifq) => {
                    // The runtime is thread-per-core: the queue never leaves this thread.
                    ifq.set_home_thread();
                    return Ok((
                        ring,
                        Rx::Zcrx(ifq),
                        format!("zcrx on {ifname} queue {queue}"),
                    ));
                }
                Err(e) if config.backend == RxBackend::Zcrx => {
                    return Err(io::Error::new(io::ErrorKind::Unsupported, e));
                }
                Err(e) => {
                    if !FALLBACK_SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        eprintln!("runtime: {e}; falling back to the provided buffer ring");
                    }
                }
            }
        }
        let ring = Ring::new(config.sq_entries, config.cq_entries, false)?;
        let Ring::Small(r) = &ring else {
            unreachable!()
        };
        let mut buf = BufRing::register(
            r,
            area()?,
            BufRingConfig {
                bgid: 0,
                incremental: config.incremental,
                owner_limit: config.conn_limit,
                // An adaptive depth starts at its floor; the driver moves it from there.
                max_posted: config.adaptive_floor().or(config.max_posted),
            },
        )
        .map_err(io::Error::other)?;
        // The runtime is thread-per-core: the ring never leaves this thread.
        buf.set_home_thread();
        let what = if config.incremental {
            "buffer ring (incremental)"
        } else {
            "buffer ring"
        };
        Ok((ring, Rx::Buf(buf), what.to_string()))
    }

    /// A receive for `fd`, capped at `budget` bytes where the backend can (0: no cap).
    pub(crate) fn recv(&self, fd: RawFd, budget: u32) -> squeue::Entry {
        match self {
            Rx::Buf(b) if budget > 0 => b.recv_multishot_capped(types::Fd(fd), budget),
            Rx::Buf(b) => b.recv_multishot(types::Fd(fd)),
            Rx::Zcrx(z) => z.recv_zc(types::Fd(fd)),
        }
    }

    /// Whether receives can be capped (the buffer ring, on kernels with the cap).
    pub(crate) fn can_cap(&self) -> bool {
        matches!(self, Rx::Buf(_))
    }

    pub(crate) fn complete(
        &mut self,
        owner: OwnerId,
        res: i32,
        flags: u32,
        big: [u64; 2],
    ) -> ifq::Result<Completion> {
        match self {
            Rx::Buf(b) => b.complete(owner, res, flags),
            Rx::Zcrx(z) => z.complete(owner, res, flags, big),
        }
    }

    /// Installs what a buffer dropped on another thread calls to wake this thread's loop.
    pub(crate) fn set_return_waker(&mut self, wake: impl Fn() + Send + Sync + 'static) -> bool {
        match self {
            Rx::Buf(b) => b.set_return_waker(wake),
            Rx::Zcrx(z) => z.set_return_waker(wake),
        }
    }

    /// Before sleeping: the next buffer dropped on another thread wakes the loop. True if some
    /// came back already (do not sleep).
    pub(crate) fn arm_return_wake(&self) -> bool {
        match self {
            Rx::Buf(b) => b.arm_return_wake(),
            Rx::Zcrx(z) => z.arm_return_wake(),
        }
    }

    pub(crate) fn disarm_return_wake(&self) {
        match self {
            Rx::Buf(b) => b.disarm_return_wake(),
            Rx::Zcrx(z) => z.disarm_return_wake(),
        }
    }

    pub(crate) fn flush(&mut self) -> usize {
        match self {
            Rx::Buf(b) => b.flush(),
            Rx::Zcrx(z) => z.flush(),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        match self {
            Rx::Buf(b) => b.snapshot(),
            Rx::Zcrx(z) => z.snapshot(),
        }
    }

    pub(crate) fn over_limit(&self, owner: OwnerId) -> bool {
        match self {
            Rx::Buf(b) => b.over_limit(owner),
            Rx::Zcrx(z) => z.over_limit(owner),
        }
    }

    pub(crate) fn owner_limit(&self) -> Option<u64> {
        match self {
            Rx::Buf(b) => b.owner_limit(),
            Rx::Zcrx(_) => None, // zcrx: back-pressure by cancelling (see the driver)
        }
    }

    /// What `owner` keeps out of the pool, in bytes. Without incremental consumption every
    /// completion takes a whole chunk however few bytes it carries, so a chunk counts whole: a
    /// peer sending one byte per segment must not pin a chunk per byte within a byte limit.
    pub(crate) fn owner_footprint(&self, owner: OwnerId, incremental: bool) -> u64 {
        match self {
            Rx::Buf(b) => {
                let s = b.owner(owner);
                if incremental {
                    s.bytes
                } else {
                    s.bytes.max(u64::from(s.chunks) * b.chunk_size() as u64)
                }
            }
            Rx::Zcrx(z) => z.owner(owner).bytes,
        }
    }

    /// `(chunk size, chunks)` of the pool.
    pub(crate) fn geometry(&self) -> (u64, u64) {
        match self {
            Rx::Buf(b) => (b.chunk_size() as u64, u64::from(b.chunks())),
            Rx::Zcrx(z) => (
                z.chunk_size() as u64,
                u64::from(z.snapshot().counts.total()),
            ),
        }
    }

    /// Chunks receives can fill before the loop's next flush: posted to the buffer ring (which
    /// may hold fewer than are free, see `Builder::max_posted`), or free in the zcrx pool.
    pub(crate) fn posted(&self) -> u32 {
        match self {
            Rx::Buf(b) => b.posted(),
            Rx::Zcrx(_) => self.available(),
        }
    }

    /// Keeps at most `n` chunks posted (the buffer ring; zcrx's page pool is the kernel's).
    pub(crate) fn set_max_posted(&mut self, n: u32) {
        if let Rx::Buf(b) = self {
            b.set_max_posted(n);
        }
    }

    /// Chunks the kernel can receive into right now, or once the loop flushes.
    pub(crate) fn available(&self) -> u32 {
        match self {
            Rx::Buf(b) => b.available(),
            Rx::Zcrx(z) => z.snapshot().counts.kernel,
        }
    }

    pub(crate) fn teardown(self) -> TeardownReport {
        match self {
            Rx::Buf(b) => b.teardown(),
            Rx::Zcrx(z) => z.teardown(),
        }
    }
}
