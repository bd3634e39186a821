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

mod cases;
mod hostile;

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
