//! Micro-benchmarks of the user-side receive path: what the runtime spends per received chunk,
//! against simulated kernels (`BufRing::simulated`, `ZcrxIfq::simulated`), so no NIC or io_uring
//! is involved and only user-space work is timed.
//!
//! Every benchmark times one chunk per criterion iteration (`Throughput::Elements(1)`), so the
//! reported time *is* the cost per chunk; batched work (a flush every `B` chunks) is amortised over
//! the iterations. State (the ring, the model's indices, the batch counter) lives across
//! iterations and samples.
//!
//! The target: the whole user-side cost per chunk (the `bufring_cycle` and `zcrx_cycle` groups)
//! under 25 ns, i.e. under a sixth of the 164 ns that 200 Gbit/s of 4 KiB chunks leaves per chunk.
//!
//! Run: `cargo bench -p benches --bench user_path` (about two minutes; defaults of 1 s warm-up and
//! 3 s measurement, overridable on the command line); `-- --test` runs each benchmark once. The
//! numbers are wall-clock: run on an otherwise idle machine (`cross_thread` needs two free cores).
//! They also depend on the host: `benches/count-instructions` counts the cycles in instructions
//! under callgrind instead (the `USER_PATH_COUNT` mode below), the same on any machine.
//!
//! Groups:
//! - `bufring_cycle`: completion -> `BufRing::complete` -> `RxBuf` (read its length and first
//!   byte) -> drop -> `flush` every `B` chunks (one tail store per flush). The model takes buffer
//!   ids in ring order with `sim_entry` (three loads: `model_only` times it alone).
//!   `len_only`: the handle's length is read but not its bytes (reading the first byte of a new
//!   page per chunk costs an L1 and TLB miss, which is the application's, not the runtime's).
//!   `owners64`: chunks charged to 64 connections in turn. Incremental mode: one completion per
//!   chunk (`inc1`) and four per chunk (`inc4`).
//! - `zcrx_cycle`: big-CQE completion -> `ZcrxIfq::complete` -> `RxBuf` -> drop -> `flush` every
//!   `B` chunks (one refill entry per chunk, one tail store); the model hands pages out round-robin
//!   (valid: a page comes back at most `B <= N` chunks after it went out) and consumes the refill
//!   queue after each flush by moving the head to the tail.
//! - `refill`: the refill producers alone (`PbufProducer`, `ZcrxRefill`) with the entry write and
//!   the release store of the tail, published every `B`.
//! - `chunk_table`: `ChunkTable` deliver + release + publish, per chunk or in batches.
//! - `cross_thread`: handles made on the owner, dropped on another thread in batches, flushed on
//!   the owner; pipeline throughput per chunk (and the same batching on one thread for
//!   comparison).
//! - `decode`: `decode_bufring`, `decode_zcrx`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};
use zcrx_ifq::RxPool;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use test_kit::model::bufring::{recv_flags, Kernel};
use test_kit::model::zcrx::Kernel as ZcrxKernel;
use zcrx_ifq::bufring::{BufRing, BufRingConfig};
use zcrx_ifq::chunk::{ChunkTable, Redelivery, ReleaseTo};
use zcrx_ifq::completion::{decode_bufring, decode_zcrx, CQE_F_MORE};
use zcrx_ifq::refill::pbuf::PbufProducer;
use zcrx_ifq::refill::zcrx::{rqe_off, ZcrxRefill};
use zcrx_ifq::zcrx::ZcrxIfq;
use zcrx_ifq::{Area, OwnerId, RecvEvent, RxBuf};

/// 4 KiB chunks, as in the 200 Gbit/s budget.
const CHUNK: usize = 4096;
/// Chunks in the area (and ring entries): at least twice the largest batch, small enough that
/// the touched pages stay in the TLB (the point is the runtime's cost, not the data's).
const CHUNKS: u32 = 1024;
const OWNER: OwnerId = OwnerId(7);
const BATCHES: [u32; 3] = [1, 16, 256];
const AREA_ID: u16 = 1;
const TOKEN: u64 = (AREA_ID as u64) << 48;

fn area() -> Area {
    Area::builder()
        .chunk_size(CHUNK)
        .chunks(CHUNKS as usize)
        .prefault(true)
        .build()
        .expect("area")
}

/// What the application does with a chunk before dropping it: look at it.
#[inline(always)]
fn touch(buf: &RxBuf) {
    black_box(buf.len());
    black_box(buf[0]);
}

/// Looks at the handle only, not at the bytes.
#[inline(always)]
fn touch_len(buf: &RxBuf) {
    black_box(buf.len());
    black_box(buf.as_ptr());
}

/// Times `iters` calls of `step` (one chunk each).
#[inline(always)]
fn timed(iters: u64, mut step: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        step();
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------------------------
// Buffer ring

/// A simulated buffer ring and the kernel model (`test_kit::model::bufring`) on its fast path:
/// the kernel takes entries in ring order and the model reads the buffer id of the entry at its
/// head, nothing else.
struct BufRingSim {
    ring: BufRing,
    kernel: Kernel,
    batch: u32,
    since_flush: u32,
    /// Completions per chunk (incremental mode fills a chunk over several receives).
    segments: u32,
    /// Chunks are charged to `owners` connections in turn.
    owners: u32,
    next_owner: u32,
    /// Read the first byte of each handle (else only its length).
    read_byte: bool,
}

impl BufRingSim {
    fn new(batch: u32, incremental: bool, segments: u32) -> Self {
        Self::with_owners(batch, incremental, segments, 1)
    }

    fn with_owners(batch: u32, incremental: bool, segments: u32, owners: u32) -> Self {
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
    fn step(&mut self) {
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
    fn validate(&mut self) {
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

fn bufring_cycle(c: &mut Criterion) {
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

// ---------------------------------------------------------------------------------------------
// zcrx

/// A simulated zcrx queue (one page per chunk) and the kernel model: pages are handed out
/// round-robin, one full-page completion each; after every flush the model consumes the refill
/// queue (head = tail).
struct ZcrxSim {
    ifq: ZcrxIfq,
    next: u32,
    batch: u32,
    since_flush: u32,
}

impl ZcrxSim {
    fn new(batch: u32) -> Self {
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
    fn step(&mut self) {
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

    fn validate(&mut self) {
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

fn zcrx_cycle(c: &mut Criterion) {
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

// ---------------------------------------------------------------------------------------------
// Refill producers alone

/// `PbufProducer` as `BufRing` drives it: push a slot and write the 16-byte entry per chunk; every
/// `batch`, publish with a release store of the tail; the kernel then consumes the batch (one
/// `consumed` per completion, as `complete` does).
struct PbufBench {
    p: PbufProducer,
    mem: Vec<(u64, u32, u16)>,
    tail: AtomicU16,
    batch: u32,
    since: u32,
    next: u16,
}

impl PbufBench {
    fn new(batch: u32) -> Self {
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
    fn step(&mut self) {
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
struct ZcrxRefillBench {
    r: ZcrxRefill,
    mem: Vec<[u64; 2]>,
    tail: AtomicU32,
    head: AtomicU32,
    batch: u32,
    since: u32,
    next: u64,
}

impl ZcrxRefillBench {
    fn new(batch: u32) -> Self {
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
    fn step(&mut self) {
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

fn refill(c: &mut Criterion) {
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

// ---------------------------------------------------------------------------------------------
// Chunk accounting alone

/// `ChunkTable` for one chunk: deliver, then (per chunk or per batch) release and publish.
struct TableBench {
    t: ChunkTable,
    next: u32,
    batch: u32,
    since: u32,
    held: Vec<u32>,
}

impl TableBench {
    fn new(batch: u32, redelivery: Redelivery) -> Self {
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
    fn step(&mut self) {
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

fn chunk_table(c: &mut Criterion) {
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

// ---------------------------------------------------------------------------------------------
// Cross-thread drop

/// Waits for a message by spinning (a blocking receive would add a futex wake-up per batch), and
/// yields now and then so the peer gets a core when the machine has fewer free cores than two.
fn spin_recv<T>(rx: &Receiver<T>) -> Option<T> {
    let mut spins = 0u32;
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Empty) => {
                spins += 1;
                if spins % 1024 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            Err(TryRecvError::Disconnected) => return None,
        }
    }
}

/// The owner side of the cross-thread pipeline: fills a batch of handles, hands it to the
/// dropper (or drops it itself), and flushes before each batch. Two batch vectors circulate, so
/// at most two batches are out of the ring (`CHUNKS >= 2 * batch + 1` keeps the model fed).
struct CrossOwner {
    sim: BufRingSim,
    batch: usize,
    spare: Vec<Vec<RxBuf>>,
    to_dropper: Option<mpsc::Sender<Vec<RxBuf>>>,
    back: Option<Receiver<Vec<RxBuf>>>,
}

impl CrossOwner {
    fn take_vec(&mut self) -> Vec<RxBuf> {
        match self.spare.pop() {
            Some(v) => v,
            None => spin_recv(self.back.as_ref().expect("a dropper when no spare"))
                .expect("dropper alive"),
        }
    }

    fn one_batch(&mut self, n: usize) {
        let mut v = self.take_vec();
        self.sim.ring.flush();
        for _ in 0..n {
            let bid = self.sim.kernel.take(&self.sim.ring);
            let flags = recv_flags(bid, false);
            let c = self
                .sim
                .ring
                .complete(OWNER, CHUNK as i32, flags)
                .expect("complete");
            match c.event {
                RecvEvent::Data(buf) => {
                    touch(&buf);
                    v.push(buf);
                }
                _ => unreachable!("data"),
            }
        }
        match &self.to_dropper {
            Some(tx) => tx.send(v).expect("dropper alive"),
            None => {
                v.clear();
                self.spare.push(v);
            }
        }
    }

    /// Runs `chunks` chunks through the pipeline and waits until every handle has dropped and
    /// been flushed.
    fn run(&mut self, chunks: u64) -> Duration {
        let start = Instant::now();
        let mut left = chunks;
        while left > 0 {
            let n = left.min(self.batch as u64);
            self.one_batch(n as usize);
            left -= n;
        }
        while self.spare.len() < 2 {
            let v = spin_recv(self.back.as_ref().expect("dropper")).expect("dropper alive");
            self.spare.push(v);
        }
        self.sim.ring.flush();
        start.elapsed()
    }
}

fn cross_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_thread");
    g.throughput(Throughput::Elements(1));
    for batch in [32usize, 256] {
        // Same batching, dropped on the owner thread: the baseline.
        let mut owner = CrossOwner {
            sim: BufRingSim::new(16, false, 1),
            batch,
            spare: vec![Vec::with_capacity(batch), Vec::with_capacity(batch)],
            to_dropper: None,
            back: None,
        };
        g.bench_function(BenchmarkId::new("same_thread", batch), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(batch as u64);
                    owner.one_batch(n as usize);
                    left -= n;
                }
                owner.sim.ring.flush();
                start.elapsed()
            })
        });

        // Dropped on another thread, without and with a return waker installed (the runtime
        // installs one: the first drop after each flush then clones its `Arc`).
        for waker in [false, true] {
            std::thread::scope(|s| {
                let (to_dropper, from_owner) = mpsc::channel::<Vec<RxBuf>>();
                let (to_owner, back) = mpsc::channel::<Vec<RxBuf>>();
                s.spawn(move || {
                    while let Some(mut v) = spin_recv(&from_owner) {
                        v.clear(); // the drops under test
                        if to_owner.send(v).is_err() {
                            break;
                        }
                    }
                });
                let mut owner = CrossOwner {
                    sim: BufRingSim::new(16, false, 1),
                    batch,
                    spare: vec![Vec::with_capacity(batch), Vec::with_capacity(batch)],
                    to_dropper: Some(to_dropper),
                    back: Some(back),
                };
                let name = if waker {
                    assert!(owner.sim.ring.set_return_waker(|| {}));
                    "other_thread_waker"
                } else {
                    "other_thread"
                };
                g.bench_function(BenchmarkId::new(name, batch), |b| {
                    b.iter_custom(|iters| owner.run(iters))
                });
                let snap = owner.sim.ring.snapshot();
                assert_eq!(snap.counts.kernel, CHUNKS, "every chunk came back");
                // Dropping the owner closes the channel; the dropper exits.
            });
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Decoding alone

fn decode(c: &mut Criterion) {
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

criterion_group! {
    name = benches;
    // Short defaults keep the whole suite around two minutes; command-line flags override them.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bufring_cycle, zcrx_cycle, refill, chunk_table, cross_thread, decode
}
// ---------------------------------------------------------------------------------------------
// Instruction counts

/// One cycle of each kind, by name, for [`count`].
const COUNTED: [&str; 6] = [
    "bufring/1",
    "bufring/16",
    "bufring/256",
    "zcrx/1",
    "zcrx/16",
    "zcrx/256",
];

/// Runs `steps` chunks of one cycle inside a function callgrind can single out
/// (`--toggle-collect=*counted_steps*`), so the instructions per chunk do not depend on the
/// machine's load or clock the way nanoseconds do. Set-up and validation stay outside it.
#[inline(never)]
fn counted_steps(steps: u64, mut step: impl FnMut()) {
    for _ in 0..steps {
        step();
    }
}

/// `USER_PATH_COUNT=CYCLE:STEPS` (CYCLE one of [`COUNTED`]): run that many chunks through the
/// cycle and exit, for `valgrind --tool=callgrind` (see `benches/count-instructions`).
fn count(spec: &str) {
    let (cycle, steps) = spec
        .split_once(':')
        .and_then(|(c, n)| Some((c, n.parse::<u64>().ok()?)))
        .unwrap_or_else(|| {
            panic!("USER_PATH_COUNT={spec}: expected CYCLE:STEPS, CYCLE one of {COUNTED:?}")
        });
    assert!(
        COUNTED.contains(&cycle),
        "USER_PATH_COUNT: unknown cycle {cycle:?}, expected one of {COUNTED:?}"
    );
    // Well formed: it is one of `COUNTED`.
    let (kind, batch) = cycle.split_once('/').expect("KIND/BATCH");
    let batch: u32 = batch.parse().expect("a batch size");
    match kind {
        "bufring" => {
            let mut sim = BufRingSim::new(batch, false, 1);
            counted_steps(steps, || sim.step());
        }
        _ => {
            let mut sim = ZcrxSim::new(batch);
            counted_steps(steps, || sim.step());
        }
    }
}

fn main() {
    if let Ok(spec) = std::env::var("USER_PATH_COUNT") {
        count(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
