//! Parts of the cycle alone: the refill producers (`refill`), chunk accounting
//! (`chunk_table`) and completion decoding (`decode`).

use super::*;

/// `PbufProducer` as `BufRing` drives it: push a slot and write the 16-byte entry per chunk; every
/// `batch`, publish with a release store of the tail; the kernel then consumes the batch (one
/// `consumed` per completion, as `complete` does).
pub(crate) struct PbufBench {
    pub(crate) p: PbufProducer,
    pub(crate) mem: Vec<(u64, u32, u16)>,
    pub(crate) tail: AtomicU16,
    pub(crate) batch: u32,
    pub(crate) since: u32,
    pub(crate) next: u16,
}

impl PbufBench {
    pub(crate) fn new(batch: u32) -> Self {
        Self {
            p: PbufProducer::new(CHUNKS),
            mem: vec![(0, 0, 0); CHUNKS as usize],
            tail: AtomicU16::new(0),
            batch,
            since: 0,
            next: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn step(&mut self) {
        let slot = self.p.push().expect("room");
        let bid = self.next;
        self.next = (self.next + 1) & (CHUNKS as u16 - 1);
        self.mem[usize::from(slot)] = (u64::from(bid) << 12, CHUNK as u32, bid);
        self.since += 1;
        if self.since == self.batch {
            self.since = 0;
            if let Some(t) = self.p.publish() {
                self.tail.store(t, Ordering::Release);
            }
            for _ in 0..self.batch {
                black_box(self.p.consumed());
            }
            black_box(&self.mem);
        }
    }
}

/// `ZcrxRefill` as `ZcrxIfq::flush` drives it: observe the kernel head, push and write one entry
/// per chunk, publish with a release store of the tail every `batch`; the kernel model then
/// consumes everything (head = tail).
pub(crate) struct ZcrxRefillBench {
    pub(crate) r: ZcrxRefill,
    pub(crate) mem: Vec<[u64; 2]>,
    pub(crate) tail: AtomicU32,
    pub(crate) head: AtomicU32,
    pub(crate) batch: u32,
    pub(crate) since: u32,
    pub(crate) next: u64,
}

impl ZcrxRefillBench {
    pub(crate) fn new(batch: u32) -> Self {
        Self {
            r: ZcrxRefill::new(CHUNKS),
            mem: vec![[0; 2]; CHUNKS as usize],
            tail: AtomicU32::new(0),
            head: AtomicU32::new(0),
            batch,
            since: 0,
            next: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn step(&mut self) {
        if self.since == 0 {
            self.r.observe(self.head.load(Ordering::Acquire));
        }
        let slot = self.r.push().expect("room");
        let off = rqe_off(self.next << 12, TOKEN);
        self.next = (self.next + 1) & u64::from(CHUNKS - 1);
        self.mem[slot as usize] = [off, 0];
        self.since += 1;
        if self.since == self.batch {
            self.since = 0;
            if let Some(t) = self.r.publish() {
                self.tail.store(t, Ordering::Release);
                // The kernel model consumes what was published.
                self.head.store(t, Ordering::Release);
            }
            black_box(&self.mem);
        }
    }
}

pub(crate) fn refill(c: &mut Criterion) {
    let mut g = c.benchmark_group("refill");
    g.throughput(Throughput::Elements(1));
    for batch in BATCHES {
        let mut p = PbufBench::new(batch);
        g.bench_function(BenchmarkId::new("pbuf", batch), |b| {
            b.iter_custom(|iters| timed(iters, || p.step()))
        });
    }
    for batch in BATCHES {
        let mut r = ZcrxRefillBench::new(batch);
        g.bench_function(BenchmarkId::new("zcrx", batch), |b| {
            b.iter_custom(|iters| timed(iters, || r.step()))
        });
    }
    g.finish();
}

/// `ChunkTable` for one chunk: deliver, then (per chunk or per batch) release and publish.
pub(crate) struct TableBench {
    pub(crate) t: ChunkTable,
    pub(crate) next: u32,
    pub(crate) batch: u32,
    pub(crate) since: u32,
    pub(crate) held: Vec<u32>,
}

impl TableBench {
    pub(crate) fn new(batch: u32, redelivery: Redelivery) -> Self {
        let mut t = ChunkTable::new(CHUNKS, redelivery);
        while t.take_from_pool().is_some() {}
        Self {
            t,
            next: 0,
            batch,
            since: 0,
            held: Vec::with_capacity(batch as usize),
        }
    }

    #[inline(always)]
    pub(crate) fn step(&mut self) {
        let chunk = self.next;
        self.next = (self.next + 1) & (CHUNKS - 1);
        self.t
            .deliver(chunk, OWNER, CHUNK as u32, false)
            .expect("deliver");
        if self.batch == 1 {
            black_box(self.t.release(chunk, ReleaseTo::Refill).expect("release"));
            black_box(self.t.publish(chunk).expect("publish"));
            return;
        }
        self.held.push(chunk);
        self.since += 1;
        if self.since == self.batch {
            self.since = 0;
            for chunk in self.held.drain(..) {
                black_box(self.t.release(chunk, ReleaseTo::Refill).expect("release"));
                black_box(self.t.publish(chunk).expect("publish"));
            }
        }
    }
}

pub(crate) fn chunk_table(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunk_table");
    g.throughput(Throughput::Elements(1));
    for (name, batch, redelivery) in [
        ("never", 1, Redelivery::Never),
        ("never", 16, Redelivery::Never),
        ("always", 16, Redelivery::Always),
    ] {
        let mut t = TableBench::new(batch, redelivery);
        g.bench_function(BenchmarkId::new(name, batch), |b| {
            b.iter_custom(|iters| timed(iters, || t.step()))
        });
    }
    g.finish();
}

pub(crate) fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    let flags: Vec<u32> = (0..1024u32).map(|i| recv_flags(i as u16, false)).collect();
    let mut i = 0usize;
    g.bench_function("bufring", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                let f = black_box(flags[i & 1023]);
                i += 1;
                black_box(decode_bufring(black_box(CHUNK as i32), f)).ok();
            })
        })
    });
    let bigs: Vec<[u64; 2]> = (0..1024u64).map(|i| [TOKEN | (i << 12), 0]).collect();
    let mut i = 0usize;
    g.bench_function("zcrx", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                let big = black_box(bigs[i & 1023]);
                i += 1;
                black_box(decode_zcrx(black_box(CHUNK as i32), CQE_F_MORE, big));
            })
        })
    });
    g.finish();
}
