//! The whole user-side cycle per chunk: `bufring_cycle` and `zcrx_cycle`, with the simulated
//! queues and the kernel models' fast paths that drive them.

use super::*;

/// A simulated buffer ring and the kernel model (`test_kit::model::bufring`) on its fast path:
/// the kernel takes entries in ring order and the model reads the buffer id of the entry at its
/// head, nothing else.
pub(crate) struct BufRingSim {
    pub(crate) ring: BufRing,
    pub(crate) kernel: Kernel,
    pub(crate) batch: u32,
    pub(crate) since_flush: u32,
    /// Completions per chunk (incremental mode fills a chunk over several receives).
    pub(crate) segments: u32,
    /// Chunks are charged to `owners` connections in turn.
    pub(crate) owners: u32,
    pub(crate) next_owner: u32,
    /// Read the first byte of each handle (else only its length).
    pub(crate) read_byte: bool,
}

impl BufRingSim {
    pub(crate) fn new(batch: u32, incremental: bool, segments: u32) -> Self {
        Self::with_owners(batch, incremental, segments, 1)
    }

    pub(crate) fn with_owners(batch: u32, incremental: bool, segments: u32, owners: u32) -> Self {
        assert!(batch <= CHUNKS / 2 && (segments == 1 || incremental));
        let mut ring = BufRing::simulated(
            area(),
            BufRingConfig {
                incremental,
                ..Default::default()
            },
        )
        .expect("simulated ring");
        // As the runtime does: the benchmark thread is the ring's home.
        assert!(ring.set_home_thread());
        let mut this = Self {
            ring,
            kernel: Kernel::new(CHUNK),
            batch,
            since_flush: 0,
            segments,
            owners,
            next_owner: 0,
            read_byte: true,
        };
        this.validate();
        this
    }

    /// One chunk through the user side.
    #[inline(always)]
    pub(crate) fn step(&mut self) {
        let bid = self.kernel.take(&self.ring);
        let len = (CHUNK as u32 / self.segments) as i32;
        let owner = if self.owners == 1 {
            OWNER
        } else {
            self.next_owner = if self.next_owner + 1 == self.owners {
                0
            } else {
                self.next_owner + 1
            };
            OwnerId(1 + self.next_owner)
        };
        for seg in 1..=self.segments {
            let flags = recv_flags(bid, seg < self.segments);
            let c = self.ring.complete(owner, len, flags).expect("complete");
            match c.event {
                RecvEvent::Data(buf) if self.read_byte => touch(&buf),
                RecvEvent::Data(buf) => touch_len(&buf),
                _ => unreachable!("data"),
            }
        }
        self.since_flush += 1;
        if self.since_flush == self.batch {
            self.since_flush = 0;
            self.ring.flush();
        }
    }

    /// Runs the cycle with every check the timed loop leaves out: the model never reads past the
    /// published tail, every flush returns the batch, and the accounting balances. Leaves the
    /// ring in a state where the timed loop may start.
    pub(crate) fn validate(&mut self) {
        for _ in 0..4 * CHUNKS {
            assert!(!self.kernel.dry(&self.ring), "the model ran dry");
            let flushes = self.ring.stats().publishes;
            let flushing = self.since_flush + 1 == self.batch;
            self.step();
            if flushing {
                assert_eq!(self.ring.stats().publishes, flushes + 1);
                let snap = self.ring.snapshot();
                assert_eq!((snap.counts.user, snap.counts.refill), (0, 0));
                assert_eq!(snap.counts.kernel, CHUNKS);
            }
        }
        let stats = self.ring.stats();
        assert_eq!(stats.deliveries, u64::from(4 * CHUNKS * self.segments));
    }
}

pub(crate) fn bufring_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("bufring_cycle");
    g.throughput(Throughput::Elements(1));
    for batch in BATCHES {
        let mut sim = BufRingSim::new(batch, false, 1);
        g.bench_function(BenchmarkId::new("plain", batch), |b| {
            b.iter_custom(|iters| timed(iters, || sim.step()))
        });
    }
    let mut sim = BufRingSim::new(16, false, 1);
    sim.read_byte = false;
    g.bench_function(BenchmarkId::new("len_only", 16), |b| {
        b.iter_custom(|iters| timed(iters, || sim.step()))
    });
    // Chunks of 64 connections in turn: the per-owner accounting with many owners.
    let mut sim = BufRingSim::with_owners(16, false, 1, 64);
    g.bench_function(BenchmarkId::new("owners64", 16), |b| {
        b.iter_custom(|iters| timed(iters, || sim.step()))
    });
    for (name, segments) in [("inc1", 1), ("inc4", 4)] {
        let mut sim = BufRingSim::new(16, true, segments);
        g.bench_function(BenchmarkId::new(name, 16), |b| {
            b.iter_custom(|iters| timed(iters, || sim.step()))
        });
    }
    // The model's own per-chunk cost (reading the entry at its head), included above.
    let sim = BufRingSim::new(16, false, 1);
    let mut head = 0u16;
    g.bench_function("model_only", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                black_box(sim.ring.sim_entry(head));
                head = head.wrapping_add(1);
            })
        })
    });
    g.finish();
}

/// A simulated zcrx queue (one page per chunk) and the kernel model: pages are handed out
/// round-robin, one full-page completion each; after every flush the model consumes the refill
/// queue (head = tail).
pub(crate) struct ZcrxSim {
    pub(crate) ifq: ZcrxIfq,
    pub(crate) next: u32,
    pub(crate) batch: u32,
    pub(crate) since_flush: u32,
}

impl ZcrxSim {
    pub(crate) fn new(batch: u32) -> Self {
        assert!(batch <= CHUNKS);
        let mut ifq = ZcrxIfq::simulated(area(), CHUNKS, TOKEN).expect("simulated zcrx");
        assert!(ifq.set_home_thread());
        assert_eq!(ifq.buffer_size(), CHUNK, "one kernel buffer per chunk");
        let mut this = Self {
            ifq,
            next: 0,
            batch,
            since_flush: 0,
        };
        this.validate();
        this
    }

    #[inline(always)]
    pub(crate) fn step(&mut self) {
        let off = u64::from(self.next) << CHUNK.trailing_zeros();
        self.next = (self.next + 1) & (CHUNKS - 1);
        let c = self
            .ifq
            .complete(OWNER, CHUNK as i32, CQE_F_MORE, [TOKEN | off, 0])
            .expect("complete");
        match c.event {
            RecvEvent::Data(buf) => touch(&buf),
            _ => unreachable!("data"),
        }
        self.since_flush += 1;
        if self.since_flush == self.batch {
            self.since_flush = 0;
            self.ifq.flush();
            // The kernel consumes every published entry.
            ZcrxKernel::consume_all(&self.ifq);
        }
    }

    pub(crate) fn validate(&mut self) {
        for _ in 0..4 * CHUNKS {
            let before = self.ifq.stats();
            let flushing = self.since_flush + 1 == self.batch;
            self.step();
            if flushing {
                let after = self.ifq.stats();
                assert_eq!(after.rqes, before.rqes + u64::from(self.batch));
                assert_eq!(after.publishes, before.publishes + 1);
                assert_eq!(after.rq_full, 0);
                assert_eq!(self.ifq.pending_chunks(), 0);
                let snap = self.ifq.snapshot();
                assert_eq!((snap.counts.user, snap.counts.refill), (0, 0));
            }
        }
    }
}

pub(crate) fn zcrx_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("zcrx_cycle");
    g.throughput(Throughput::Elements(1));
    for batch in BATCHES {
        let mut sim = ZcrxSim::new(batch);
        g.bench_function(BenchmarkId::new("page", batch), |b| {
            b.iter_custom(|iters| timed(iters, || sim.step()))
        });
    }
    g.finish();
}
