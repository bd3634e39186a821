//! The buffer-ring backend's user-side logic (completion decoding, chunk accounting, the refill
//! protocol, cross-thread returns) driven by a model of the kernel consumer.
//!
//! The model (`test_kit::model::bufring`) reads buffer ids from the ring memory exactly as the
//! kernel does (from its private head up to the published tail), writes "received" bytes into
//! the chunk the entry names, and posts completions. Every handle remembers the bytes it was given; if a chunk ever went back to
//! the kernel while a handle still pointed into it, the model's next write would change those
//! bytes and the handle's check would fail. The model also checks that no buffer id is in the
//! ring twice.

use std::collections::HashSet;
use zcrx_ifq::RxPool;

use proptest::prelude::*;
use test_kit::model::bufring::{Kernel, ENOBUFS};
use zcrx_ifq::bufring::{BufRing, BufRingConfig};
use zcrx_ifq::completion::{CQE_F_BUFFER, CQE_F_BUF_MORE, CQE_F_MORE};
use zcrx_ifq::{Area, OwnerId, RecvEvent, RxBuf};

const CHUNK: usize = 4096;

struct Held {
    buf: RxBuf,
    expect: Vec<u8>,
}

impl Held {
    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            &self.buf[..],
            &self.expect[..],
            "bytes under a live handle changed"
        );
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Recv { want: usize, owner: u32 },
    Drop(usize),
    DropOnThread(usize),
    Split(usize, usize),
    Flush,
    SetMaxPosted(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..2 * CHUNK, 0u32..3).prop_map(|(want, owner)| Op::Recv { want, owner }),
        3 => any::<usize>().prop_map(Op::Drop),
        1 => any::<usize>().prop_map(Op::DropOnThread),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, at)| Op::Split(i, at)),
        2 => Just(Op::Flush),
        1 => (1u32..10).prop_map(Op::SetMaxPosted),
    ]
}

fn run(
    chunks: usize,
    incremental: bool,
    home: bool,
    max_posted: Option<u32>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let area = Area::builder()
        .chunk_size(CHUNK)
        .chunks(chunks)
        .build()
        .unwrap();
    let mut ring = BufRing::simulated(
        area,
        BufRingConfig {
            incremental,
            max_posted,
            ..Default::default()
        },
    )
    .unwrap();
    let mut max = max_posted.map_or(chunks, |m| m as usize);
    if home {
        // As the runtime does: drops on this thread take the home path.
        prop_assert!(ring.set_home_thread());
    }
    let mut k = Kernel::new(CHUNK);
    let mut held: Vec<Held> = vec![];
    let held_chunks = |held: &Vec<Held>| held.iter().map(|h| h.buf.chunk()).collect::<HashSet<_>>();
    k.sync(&ring, &held_chunks(&held))
        .map_err(TestCaseError::fail)?;
    prop_assert_eq!(
        k.in_ring(),
        chunks.min(max),
        "every chunk posted at start, up to max_posted"
    );
    for op in ops {
        let flushed = matches!(op, Op::Flush);
        match op {
            Op::Recv { want, owner } => {
                let (res, flags) = k.recv(&ring, want, incremental);
                let c = ring.complete(OwnerId(owner), res, flags).unwrap();
                match c.event {
                    RecvEvent::Data(buf) => {
                        let expect = buf.to_vec();
                        prop_assert_eq!(expect.len(), res as usize);
                        held.push(Held { buf, expect });
                    }
                    RecvEvent::NoBuffers => prop_assert_eq!(res, ENOBUFS),
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            Op::Drop(i) if !held.is_empty() => {
                let h = held.swap_remove(i % held.len());
                h.check()?;
            }
            Op::DropOnThread(i) if !held.is_empty() => {
                let h = held.swap_remove(i % held.len());
                std::thread::spawn(move || h.check()).join().unwrap()?;
            }
            Op::Split(i, at) if !held.is_empty() => {
                let n = held.len();
                let h = &mut held[i % n];
                let at = at % (h.buf.len() + 1);
                let head = h.buf.split_to(at);
                let expect_head = h.expect.drain(..at).collect();
                held.push(Held {
                    buf: head,
                    expect: expect_head,
                });
            }
            Op::Flush => {
                let publishes = ring.stats().publishes;
                let before = ring.posted() as usize;
                let n = ring.flush();
                let posted = ring.posted() as usize;
                // One tail store per flush that posted anything, none otherwise.
                prop_assert_eq!(
                    ring.stats().publishes,
                    publishes + u64::from(posted > before)
                );
                prop_assert!(posted <= before.max(max), "never posts past max_posted");
                let pool = ring.snapshot().counts.pool as usize;
                prop_assert!(
                    pool == 0 || posted >= max,
                    "tops up from the pool to max_posted"
                );
                prop_assert!(n == 0 || posted > before || posted >= max || pool == 0);
                k.sync(&ring, &held_chunks(&held))
                    .map_err(TestCaseError::fail)?;
            }
            Op::SetMaxPosted(m) => {
                ring.set_max_posted(m);
                max = m as usize;
            }
            _ => {}
        }
        for h in &held {
            h.check()?;
        }
        let snap = ring.snapshot();
        prop_assert_eq!(snap.counts.total() as usize, chunks, "counters balance");
        // What the model's kernel can still take: the entries it has not finished (the chunk it
        // is filling incrementally stays at the head until full).
        prop_assert_eq!(ring.posted() as usize, k.in_ring());
        prop_assert_eq!(ring.available(), snap.counts.kernel + snap.counts.pool);
        let user_chunks = held_chunks(&held).len() as u32;
        // Dropped handles' chunks stay `user` until a flush collects them; the chunk the kernel
        // is filling incrementally counts as user once delivered into.
        prop_assert!(snap.counts.user >= user_chunks);
        if flushed {
            prop_assert!(snap.counts.user <= user_chunks + u32::from(k.filling()));
            prop_assert_eq!(snap.counts.refill, 0);
        }
        let held_bytes: u64 = snap.owners.iter().map(|(_, s)| s.bytes).sum();
        prop_assert_eq!(held_bytes, snap.held_bytes);
    }
    // Teardown with handles still held: they are reported and stay readable.
    let distinct = held_chunks(&held).len() as u32;
    let report = ring.teardown();
    prop_assert!(report.clean);
    prop_assert_eq!(report.held_chunks, distinct);
    for h in &held {
        h.check()?;
    }
    drop(held);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn plain_ring_against_kernel_model(chunks in 1usize..9, home in any::<bool>(), max in proptest::option::of(1u32..10), ops in proptest::collection::vec(op(), 1..300)) {
        run(chunks, false, home, max, ops)?;
    }

    #[test]
    fn incremental_ring_against_kernel_model(chunks in 1usize..9, home in any::<bool>(), max in proptest::option::of(1u32..10), ops in proptest::collection::vec(op(), 1..300)) {
        run(chunks, true, home, max, ops)?;
    }
}

#[test]
fn hostile_completions_are_typed_errors() {
    let area = Area::builder().chunk_size(CHUNK).chunks(4).build().unwrap();
    let mut ring = BufRing::simulated(area, BufRingConfig::default()).unwrap();
    let owner = OwnerId(0);
    // Buffer id past the area.
    assert!(ring.complete(owner, 10, CQE_F_BUFFER | (9 << 16)).is_err());
    // Length past the chunk.
    assert!(ring
        .complete(owner, CHUNK as i32 + 1, CQE_F_BUFFER)
        .is_err());
    // Data with no buffer.
    assert!(ring.complete(owner, 10, CQE_F_MORE).is_err());
    // A valid delivery, then the same buffer again (the kernel cannot hand it out twice).
    let first = ring.complete(owner, 10, CQE_F_BUFFER | (1 << 16)).unwrap();
    assert!(ring.complete(owner, 10, CQE_F_BUFFER | (1 << 16)).is_err());
    // BUF_MORE on a non-incremental ring is not trusted to keep the chunk busy either way.
    drop(first);
    assert_eq!(ring.flush(), 1);
    assert_eq!(ring.snapshot().counts.total(), 4);
    // Fuzz-ish sweep: nothing panics.
    for res in [i32::MIN, -1, 0, 1, 4096, 4097, i32::MAX] {
        for flags in [
            0,
            CQE_F_BUFFER,
            CQE_F_BUFFER | CQE_F_BUF_MORE | 0xFFFF_0000,
            u32::MAX,
        ] {
            let _ = ring.complete(owner, res, flags);
        }
    }
    let snap = ring.snapshot();
    assert_eq!(snap.counts.total(), 4);
}
