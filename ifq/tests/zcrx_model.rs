//! The zcrx backend's user-side logic (completion decoding, chunk and reference accounting, the
//! refill protocol, cross-thread returns, teardown) driven by a model of the kernel, without a
//! NIC: the queue is built with `ZcrxIfq::simulated`, which allocates the refill region itself.
//!
//! The model (`test_kit::model::zcrx`) behaves as `io_uring/zcrx.c` (6.18) does:
//! - Buffers are pages. The "NIC" takes a free page and fills it with fragments; every fragment
//!   is one completion (`res` = length, `F_MORE`, big CQE `area_id << 48 | offset`) and one user
//!   reference on the page. Several completions may point into one page, and with chunks larger
//!   than a page the pages of one chunk are handed out independently.
//! - A page goes back to the free list only when the NIC is done with it and its user references
//!   are all returned; it is never handed out while it has user references.
//! - Refill: it reads entries from its head to the published tail (at most the ring size, at most
//!   64 per batch), skips entries with a bad area id, bad padding, an offset past the area, or a
//!   page without user references (a repeated return), drops one reference per good entry, and
//!   stores its head.
//!
//! The tests check what the kernel cannot: no entry is ever bad or repeated, and no page ever
//! has more entries in flight than references; no page is recycled while a handle points into it
//! (checked when its last reference comes back, and again because the model writes fresh bytes
//! into every page it hands out and each handle re-checks its bytes); the chunk counters balance;
//! bytes and owners are accounted; everything comes back in the end.

use std::collections::HashMap;
use std::sync::mpsc;
use zcrx_ifq::RxPool;

use proptest::prelude::*;
use test_kit::model::zcrx::Kernel;
use zcrx_ifq::completion::{CompletionError, CQE_F_MORE, ZCRX_OFFSET_MASK};
use zcrx_ifq::zcrx::ZcrxIfq;
use zcrx_ifq::{Area, Error, OwnerId, RecvEvent, RxBuf};

const AREA_ID: u16 = 1;
const TOKEN: u64 = (AREA_ID as u64) << 48;
const ENOMEM: i32 = 12;
const ENOSPC: i32 = 28;

/// What the test holds.
struct Held {
    buf: RxBuf,
    data: Vec<u8>,
    page: usize,
}

impl Held {
    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            &self.buf[..],
            &self.data[..],
            "the bytes under a live handle changed"
        );
        Ok(())
    }
}

#[derive(Default)]
struct Tracker {
    held: Vec<Held>,
    /// Bytes charged per (chunk, owner) since the chunk last left the user state.
    charged: HashMap<(u64, u32), u64>,
}

impl Tracker {
    fn live_in_page(&self, page: usize) -> usize {
        self.held.iter().filter(|h| h.page == page).count()
    }

    fn live_chunks(&self) -> Vec<u64> {
        // `chunk()`, not the offset: an empty handle split off at a chunk's end points past it.
        let mut v: Vec<u64> = self.held.iter().map(|h| u64::from(h.buf.chunk())).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// After a flush, chunks without handles have left the user state: forget their charges.
    fn settle(&mut self) {
        let live = self.live_chunks();
        self.charged
            .retain(|(c, _), _| live.binary_search(c).is_ok());
    }
}

#[derive(Debug, Clone)]
enum Op {
    Deliver { new_page: bool, len: u16, owner: u8 },
    Split { idx: usize, at: u16 },
    Drop { idx: usize },
    DropElsewhere { idx: usize },
    Flush,
    Refill { max: u32 },
    Overflow,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), any::<u16>(), 0u8..3).prop_map(|(new_page, len, owner)| Op::Deliver { new_page, len, owner }),
        2 => (any::<usize>(), any::<u16>()).prop_map(|(idx, at)| Op::Split { idx, at }),
        3 => any::<usize>().prop_map(|idx| Op::Drop { idx }),
        2 => any::<usize>().prop_map(|idx| Op::DropElsewhere { idx }),
        3 => Just(Op::Flush),
        3 => (1u32..100).prop_map(|max| Op::Refill { max }),
        1 => Just(Op::Overflow),
    ]
}

/// Drops handles on another thread; each drop is acknowledged so the test stays deterministic.
struct Dropper {
    tx: Option<mpsc::Sender<(RxBuf, mpsc::Sender<()>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dropper {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel::<(RxBuf, mpsc::Sender<()>)>();
        let thread = std::thread::spawn(move || {
            for (buf, ack) in rx {
                drop(buf);
                let _ = ack.send(());
            }
        });
        Self {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn drop_there(&self, buf: RxBuf) {
        let (ack_tx, ack_rx) = mpsc::channel();
        self.tx.as_ref().unwrap().send((buf, ack_tx)).unwrap();
        ack_rx.recv().unwrap();
    }
}

impl Drop for Dropper {
    fn drop(&mut self) {
        drop(self.tx.take());
        let _ = self.thread.take().unwrap().join();
    }
}

fn check_counts(
    ifq: &ZcrxIfq,
    chunks: u32,
    t: &Tracker,
    settled: bool,
) -> Result<(), TestCaseError> {
    let snap = ifq.snapshot();
    prop_assert_eq!(
        snap.counts.total(),
        chunks,
        "pool + kernel + user + refill == total"
    );
    prop_assert_eq!(
        snap.counts.pool,
        0,
        "zcrx never has free chunks on our side"
    );
    let live = t.live_chunks().len() as u32;
    prop_assert!(
        snap.counts.user >= live,
        "every chunk with a handle is in the user state"
    );
    if settled {
        prop_assert_eq!(snap.counts.user, live);
        let held: u64 = t.charged.values().sum();
        prop_assert_eq!(snap.held_bytes, held);
        let mut per: HashMap<u32, (u32, u64)> = HashMap::new();
        for (&(_, owner), &bytes) in &t.charged {
            let e = per.entry(owner).or_default();
            e.0 += 1;
            e.1 += bytes;
        }
        for (owner, stats) in &snap.owners {
            prop_assert_eq!(
                per.get(&owner.0).copied(),
                Some((stats.chunks, stats.bytes)),
                "owner {}",
                owner.0
            );
        }
        prop_assert_eq!(snap.owners.len(), per.len());
    }
    Ok(())
}

fn run(
    chunk_pages: u32,
    chunks: u32,
    rq_entries: u32,
    ops: Vec<Op>,
    teardown_at: Option<usize>,
    home: bool,
) -> Result<(), TestCaseError> {
    let page = rustix::param::page_size();
    let chunk_size = page * chunk_pages as usize;
    let area = Area::builder()
        .chunk_size(chunk_size)
        .chunks(chunks as usize)
        .build()
        .unwrap();
    let area_len = area.len();
    let mut ifq = ZcrxIfq::simulated(area, rq_entries, TOKEN).unwrap();
    if home {
        // As the runtime does: drops on this thread take the home path.
        prop_assert!(ifq.set_home_thread());
    }
    ifq.sim_set_owner_limit(Some(3000));
    prop_assert_eq!(ifq.area_token(), TOKEN);
    prop_assert_eq!(ifq.buffer_size(), page);
    let mut k = Kernel::new(&ifq, area_len, AREA_ID);
    let mut t = Tracker::default();
    let dropper = Dropper::new();
    let mut deliveries = 0u64;
    let teardown_at = teardown_at.map(|i| i.min(ops.len()));

    for (i, op) in ops.into_iter().enumerate() {
        if Some(i) == teardown_at {
            break;
        }
        match op {
            Op::Deliver {
                new_page,
                len,
                owner,
            } => {
                let (res, flags, big, data) = k
                    .fragment(&ifq, &|p| t.live_in_page(p), new_page, len)
                    .map_err(TestCaseError::fail)?;
                let c = ifq
                    .complete(OwnerId(owner.into()), res, flags, big)
                    .map_err(|e| {
                        TestCaseError::fail(format!("a valid completion was refused: {e}"))
                    })?;
                let (more, rearm) = (c.more, c.needs_rearm());
                match c.event {
                    RecvEvent::Data(buf) => {
                        let off = big[0] & ZCRX_OFFSET_MASK;
                        prop_assert_eq!(buf.area_offset(), off);
                        prop_assert_eq!(buf.len(), data.len());
                        prop_assert_eq!(buf.chunk() as u64, off / chunk_size as u64);
                        prop_assert!(more && !rearm);
                        *t.charged
                            .entry((off / chunk_size as u64, owner.into()))
                            .or_default() += data.len() as u64;
                        t.held.push(Held {
                            buf,
                            data,
                            page: (off / page as u64) as usize,
                        });
                        deliveries += 1;
                    }
                    RecvEvent::NoBuffers => prop_assert_eq!(res, -ENOMEM),
                    other => {
                        return Err(TestCaseError::fail(format!("unexpected event {other:?}")))
                    }
                }
            }
            Op::Split { idx, at } => {
                if t.held.is_empty() {
                    continue;
                }
                let idx = idx % t.held.len();
                let h = &mut t.held[idx];
                let at = usize::from(at) % (h.buf.len() + 1);
                let head = h.buf.split_to(at);
                let head_data: Vec<u8> = h.data.drain(..at).collect();
                let page = h.page;
                t.held.push(Held {
                    buf: head,
                    data: head_data,
                    page,
                });
            }
            Op::Drop { idx } | Op::DropElsewhere { idx } if !t.held.is_empty() => {
                let h = t.held.swap_remove(idx % t.held.len());
                h.check()?;
                if matches!(op, Op::DropElsewhere { .. }) {
                    dropper.drop_there(h.buf);
                } else {
                    drop(h.buf);
                }
            }
            Op::Drop { .. } | Op::DropElsewhere { .. } => {}
            Op::Flush => {
                ifq.flush();
                t.settle();
                k.peek(&ifq).map_err(TestCaseError::fail)?;
                check_counts(&ifq, chunks, &t, true)?;
                for owner in 0..3 {
                    let bytes: u64 = t
                        .charged
                        .iter()
                        .filter(|((_, o), _)| *o == owner)
                        .map(|(_, b)| b)
                        .sum();
                    prop_assert_eq!(ifq.over_limit(OwnerId(owner)), bytes >= 3000);
                }
            }
            Op::Refill { max } => {
                k.refill(&ifq, &|p| t.live_in_page(p), max)
                    .map_err(TestCaseError::fail)?;
            }
            Op::Overflow => {
                let c = ifq.complete(OwnerId(0), -ENOSPC, 0, [0; 2]).unwrap();
                prop_assert!(matches!(c.event, RecvEvent::CqOverflow) && c.needs_rearm());
            }
        }
        prop_assert_eq!(
            k.skipped(),
            0,
            "the kernel skipped a bad or repeated refill entry"
        );
        check_counts(&ifq, chunks, &t, false)?;
        for h in &t.held {
            h.check()?;
        }
    }
    prop_assert_eq!(ifq.stats().deliveries, deliveries);

    if teardown_at.is_some() {
        // Teardown with handles alive: they stay valid; the report names them.
        let live = t.live_chunks().len() as u32;
        let report = ifq.teardown();
        prop_assert_eq!(report.held_chunks, live);
        prop_assert_eq!(report.is_clean(), live == 0);
        for (n, h) in t.held.drain(..).enumerate() {
            h.check()?;
            if n % 2 == 0 {
                dropper.drop_there(h.buf);
            }
        }
        return Ok(());
    }

    // Drain: drop everything (half on the other thread), then flush and refill until the kernel
    // has every reference back.
    for (n, h) in t.held.drain(..).enumerate() {
        h.check()?;
        if n % 2 == 0 {
            dropper.drop_there(h.buf);
        } else {
            drop(h.buf);
        }
    }
    k.close_filling(&|p| t.live_in_page(p))
        .map_err(TestCaseError::fail)?;
    for _ in 0..10_000 {
        ifq.flush();
        k.peek(&ifq).map_err(TestCaseError::fail)?;
        let read = k
            .refill(&ifq, &|p| t.live_in_page(p), 64)
            .map_err(TestCaseError::fail)?;
        if read == 0 && ifq.pending_chunks() == 0 && k.cached_head() == ifq.sim_tail() {
            break;
        }
    }
    prop_assert_eq!(k.skipped(), 0);
    prop_assert_eq!(ifq.pending_chunks(), 0);
    prop_assert!(k.all_references_back(), "every user reference came back");
    let (free, pages) = k.free_pages();
    prop_assert_eq!(free, pages, "every page is free again");
    let snap = ifq.snapshot();
    prop_assert_eq!(snap.counts.kernel, chunks);
    prop_assert_eq!(snap.held_bytes, 0);
    prop_assert!(snap.owners.is_empty());
    let stats = ifq.stats();
    prop_assert_eq!(stats.rqes, deliveries, "one refill entry per completion");
    let report = ifq.teardown();
    prop_assert!(report.is_clean());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random interleavings of deliveries, splits, drops on two threads, flushes and kernel
    /// refills, with chunks of 1, 2 or 4 pages and refill queues from 1 to 16 entries.
    #[test]
    fn kernel_model(
        chunk_pages in prop_oneof![Just(1u32), Just(2), Just(4)],
        chunks in 1u32..6,
        rq_log2 in 0u32..5,
        ops in proptest::collection::vec(op(), 1..300),
        home in any::<bool>(),
    ) {
        run(chunk_pages, chunks, 1 << rq_log2, ops, None, home)?;
    }

    /// The same, torn down at a random point with handles still alive.
    #[test]
    fn teardown_with_live_handles(
        chunk_pages in prop_oneof![Just(1u32), Just(2)],
        chunks in 1u32..5,
        rq_log2 in 0u32..4,
        ops in proptest::collection::vec(op(), 1..150),
        at in any::<usize>(),
        home in any::<bool>(),
    ) {
        let at = at % (ops.len() + 1);
        run(chunk_pages, chunks, 1 << rq_log2, ops, Some(at), home)?;
    }
}

#[derive(Debug, Clone)]
enum Hostile {
    Cqe {
        res: i32,
        flags: u32,
        area: u16,
        off: u64,
        pad: u64,
    },
    Drop(usize),
    Flush,
    KernelTakesAll,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let res = prop_oneof![
        3 => 1i32..5000,
        1 => any::<i32>(),
        1 => prop_oneof![Just(0), Just(-ENOMEM), Just(-ENOSPC), Just(-14), Just(i32::MIN), Just(i32::MAX)],
    ];
    let area = prop_oneof![3 => Just(AREA_ID), 1 => any::<u16>()];
    let off = prop_oneof![3 => 0u64..(64 * 1024), 1 => 0u64..(1 << 48)];
    let cqe =
        (res, any::<u32>(), area, off, any::<u64>()).prop_map(|(res, flags, area, off, pad)| {
            Hostile::Cqe {
                res,
                flags,
                area,
                off,
                pad,
            }
        });
    prop_oneof![
        6 => cqe,
        2 => any::<usize>().prop_map(Hostile::Drop),
        1 => Just(Hostile::Flush),
        1 => Just(Hostile::KernelTakesAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary completion values: typed errors or in-bounds handles, never a panic, and the
    /// counters always balance.
    #[test]
    fn hostile_completions_are_typed_errors(
        chunk_pages in prop_oneof![Just(1u32), Just(2)],
        ops in proptest::collection::vec(hostile(), 1..200),
    ) {
        let page = rustix::param::page_size();
        let chunks = 8u32;
        let area = Area::builder().chunk_size(page * chunk_pages as usize).chunks(chunks as usize).build().unwrap();
        let area_len = area.len() as u64;
        let mut ifq = ZcrxIfq::simulated(area, 4, TOKEN).unwrap();
        let mut held: Vec<RxBuf> = Vec::new();
        for op in ops {
            match op {
                Hostile::Cqe { res, flags, area, off, pad } => {
                    let big = [(u64::from(area) << 48) | off, pad];
                    match ifq.complete(OwnerId(9), res, flags, big) {
                        Ok(c) => match c.event {
                            RecvEvent::Data(buf) => {
                                prop_assert!(res > 0);
                                prop_assert_eq!(area, AREA_ID);
                                prop_assert_eq!(buf.area_offset(), off);
                                prop_assert_eq!(buf.len(), res as usize);
                                prop_assert!(off + res as u64 <= area_len);
                                prop_assert!(off % page as u64 + res as u64 <= page as u64, "within one buffer");
                                held.push(buf);
                            }
                            RecvEvent::Eof => prop_assert_eq!(res, 0),
                            RecvEvent::NoBuffers => prop_assert_eq!(res, -ENOMEM),
                            RecvEvent::CqOverflow => prop_assert_eq!(res, -ENOSPC),
                            RecvEvent::Error(e) => prop_assert!(res < 0 && e.raw_os_error().is_some()),
                        },
                        Err(Error::BadCompletion(_)) => prop_assert!(res > 0),
                        Err(e) => return Err(TestCaseError::fail(format!("untyped rejection: {e}"))),
                    }
                }
                Hostile::Drop(i) => {
                    if !held.is_empty() {
                        held.swap_remove(i % held.len());
                    }
                }
                Hostile::Flush => {
                    ifq.flush();
                }
                Hostile::KernelTakesAll => ifq.sim_set_head(ifq.sim_tail()),
            }
            let snap = ifq.snapshot();
            prop_assert_eq!(snap.counts.total(), chunks);
        }
        let wrong = ifq.complete(OwnerId(1), 10, CQE_F_MORE, [(7u64 << 48) | 4096, 0]);
        let wrong_area = matches!(
            wrong,
            Err(Error::BadCompletion(CompletionError::WrongArea { area_id: 7, expected: AREA_ID }))
        );
        prop_assert!(wrong_area);
        let past = ifq.complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN | area_len, 0]);
        let past_end = matches!(past, Err(Error::BadCompletion(CompletionError::OffsetOutOfRange { .. })));
        prop_assert!(past_end);
        let across = ifq.complete(OwnerId(1), 2, CQE_F_MORE, [TOKEN | (page as u64 - 1), 0]);
        let crosses = matches!(across, Err(Error::BadCompletion(CompletionError::LengthOutOfRange { .. })));
        prop_assert!(crosses);
        drop(held);
        for _ in 0..100 {
            ifq.flush();
            ifq.sim_set_head(ifq.sim_tail());
        }
        let snap = ifq.snapshot();
        prop_assert_eq!(snap.counts.user + snap.counts.refill, 0, "everything returned");
        prop_assert_eq!(snap.counts.kernel, chunks);
    }
}

/// Under `CQE_MIXED` filler entries and the `F_32` flag must not confuse decoding; and a
/// zero-length "data" CQE is EOF, not a handle.
#[test]
fn eof_and_errors_are_not_handles() {
    let page = rustix::param::page_size();
    let area = Area::builder().chunk_size(page).chunks(2).build().unwrap();
    let mut ifq = ZcrxIfq::simulated(area, 2, TOKEN).unwrap();
    let c = ifq.complete(OwnerId(0), 0, 0, [TOKEN, 0]).unwrap();
    assert!(matches!(c.event, RecvEvent::Eof) && !c.needs_rearm());
    let c = ifq.complete(OwnerId(0), -104, 0, [0; 2]).unwrap();
    assert!(matches!(c.event, RecvEvent::Error(ref e) if e.raw_os_error() == Some(104)));
    let c = ifq.complete(OwnerId(0), -ENOMEM, 0, [0; 2]).unwrap();
    assert!(matches!(c.event, RecvEvent::NoBuffers) && c.needs_rearm());
    assert_eq!(ifq.stats().no_buffers, 1);
    assert_eq!(ifq.snapshot().counts.kernel, 2);
}

/// A full refill queue: the rest waits, in order, and the accounting stays balanced meanwhile.
#[test]
fn full_refill_queue_keeps_the_rest_pending() {
    let page = rustix::param::page_size() as u64;
    let area = Area::builder()
        .chunk_size(page as usize)
        .chunks(8)
        .build()
        .unwrap();
    let mut ifq = ZcrxIfq::simulated(area, 2, TOKEN).unwrap();
    assert_eq!(ifq.rq_entries(), 2);
    // Three fragments into page 0, one into each of pages 1..4.
    let mut bufs = Vec::new();
    for (p, off) in [(0, 0), (0, 100), (0, 200), (1, 0), (2, 0), (3, 0)] {
        let c = ifq
            .complete(OwnerId(1), 50, CQE_F_MORE, [TOKEN | (p * page + off), 0])
            .unwrap();
        let RecvEvent::Data(b) = c.event else {
            panic!("data expected")
        };
        bufs.push(b);
    }
    let others = bufs.split_off(3);
    drop(bufs);
    // Page 0 owes 3 entries, the ring holds 2: it cannot be completed yet.
    assert_eq!(ifq.flush(), 0);
    assert_eq!(ifq.sim_tail(), 2);
    assert_eq!(ifq.pending_chunks(), 1);
    drop(others);
    assert_eq!(ifq.flush(), 0, "the ring is still full");
    assert_eq!(ifq.pending_chunks(), 4);
    let snap = ifq.snapshot();
    assert_eq!(
        (snap.counts.refill, snap.counts.kernel, snap.counts.user),
        (4, 4, 0)
    );
    assert_eq!(snap.held_bytes, 0);
    // The kernel takes both; page 0's last entry and one more page fit, oldest first.
    assert_eq!(
        [ifq.sim_read_rqe(0).0, ifq.sim_read_rqe(1).0],
        [TOKEN, TOKEN]
    );
    ifq.sim_set_head(2);
    assert_eq!(ifq.flush(), 2);
    assert_eq!(ifq.sim_tail(), 4);
    assert_eq!(ifq.sim_read_rqe(2).0, TOKEN);
    assert!([1, 2, 3]
        .map(|p| TOKEN | (p * page))
        .contains(&ifq.sim_read_rqe(3).0));
    ifq.sim_set_head(4);
    assert_eq!(ifq.flush(), 2);
    assert_eq!(ifq.pending_chunks(), 0);
    assert_eq!(ifq.snapshot().counts.kernel, 8);
    assert_eq!(ifq.stats().rqes, 6);
    assert!(ifq.stats().rq_full >= 2);
    // A head that cannot be right (past the published tail) is ignored: the producer still
    // believes the kernel is at 4, so both slots are taken and nothing is overwritten.
    ifq.sim_set_head(1000);
    let c = ifq
        .complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN | (5 * page), 0])
        .unwrap();
    drop(c);
    assert_eq!(ifq.flush(), 0);
    assert_eq!(ifq.sim_tail(), 6);
    assert_eq!(ifq.pending_chunks(), 1);
    ifq.sim_set_head(6);
    assert_eq!(ifq.flush(), 1);
    assert_eq!(ifq.sim_tail(), 7);
    assert_eq!(ifq.sim_read_rqe(6).0, TOKEN | (5 * page));
    assert_eq!(ifq.pending_chunks(), 0);
}

/// A queue with a home thread completes receives only there: elsewhere the completion is a typed
/// error (the home thread's drops rely on redeliveries happening at home) and its reference goes
/// back to the kernel at the next flush, and back at home it works again.
#[test]
fn home_thread_owns_completions() {
    let page = rustix::param::page_size() as u64;
    let area = Area::builder()
        .chunk_size(page as usize)
        .chunks(2)
        .build()
        .unwrap();
    let mut ifq = ZcrxIfq::simulated(area, 2, TOKEN).unwrap();
    assert!(ifq.set_home_thread());
    let c = ifq
        .complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN, 0])
        .unwrap();
    let RecvEvent::Data(held) = c.event else {
        panic!("data expected")
    };
    let mut ifq = std::thread::spawn(move || {
        assert!(!ifq.set_home_thread(), "the home is taken");
        let e = ifq
            .complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN | 100, 0])
            .unwrap_err();
        assert!(matches!(e, zcrx_ifq::Error::AwayFromHome), "{e}");
        assert!(e.to_string().contains("set_home_thread"));
        // A refused completion that is not valid either is refused for that, and costs nothing.
        assert!(ifq
            .complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN | (1 << 40), 0])
            .is_err());
        ifq
    })
    .join()
    .unwrap();
    assert_eq!(ifq.stats().refused, 1);
    // The refused reference goes back at the next flush (the chunk itself is still held, so
    // only that entry is written), and only once.
    assert_eq!(ifq.flush(), 0);
    assert_eq!(ifq.sim_tail(), 1, "the refused reference went back");
    assert_eq!(
        ifq.sim_read_rqe(0).0,
        TOKEN,
        "buffer 0, where it was delivered"
    );
    assert_eq!(ifq.flush(), 0);
    assert_eq!(ifq.sim_tail(), 1);
    assert_eq!(
        ifq.snapshot().counts.user,
        1,
        "the held chunk is still held"
    );
    ifq.sim_set_head(1); // the kernel took it
                         // At home again: a second fragment of the held chunk, then both drop here.
    let c = ifq
        .complete(OwnerId(1), 10, CQE_F_MORE, [TOKEN | 200, 0])
        .unwrap();
    let RecvEvent::Data(again) = c.event else {
        panic!("data expected")
    };
    assert_eq!(ifq.snapshot().counts.user, 1);
    drop((held, again));
    assert_eq!(ifq.flush(), 1);
    assert_eq!(
        ifq.sim_tail(),
        3,
        "one entry per delivery, and the refused one"
    );
}
