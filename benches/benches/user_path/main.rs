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
mod cross_thread;
mod cycles;
mod parts;

use cross_thread::*;
use cycles::*;
use parts::*;

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

criterion_group! {
    name = benches;
    // Short defaults keep the whole suite around two minutes; command-line flags override them.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bufring_cycle, zcrx_cycle, refill, chunk_table, cross_thread, decode
}
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
