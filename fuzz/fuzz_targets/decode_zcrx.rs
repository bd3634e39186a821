//! Completion decoding and the zcrx backend's handling of arbitrary completions and kernel heads.
//!
//! Drives `zcrx_ifq::completion::decode_zcrx` and a simulated `ZcrxIfq` (the real user-side code, no
//! kernel) with arbitrary `res`/`flags`/big-CQE values, plausible ones (the queue's area id,
//! offsets in or just past the area, lengths around a buffer), handle drops, slices, splits,
//! flushes, and kernel refill heads that move honestly, jump backwards or past the tail, or take
//! any value. A model checks, after every step:
//! - a data completion is accepted exactly when its area id is the queue's, its offset is in the
//!   area and its bytes stay in one kernel buffer; a refused one is a typed `BadCompletion` error
//!   and changes nothing; an accepted one is an in-bounds handle of `res` bytes at that offset;
//! - every refill entry written carries the area token, zero padding and a buffer of the area;
//!   no buffer gets more entries than completions named it (no double return), and none is
//!   written while a handle points into its chunk (no early return);
//! - the producer never has more entries in flight than the ring holds, whatever the head says;
//! - the counters, held bytes and per-owner stats match the model; at the end every reference
//!   comes back exactly once.
#![no_main]

use std::sync::OnceLock;
use zcrx_ifq::RxPool;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use zcrx_ifq::completion::{
    decode_zcrx, Event, ZcrxLoc, CQE_F_MORE, ZCRX_AREA_SHIFT, ZCRX_OFFSET_MASK,
};
use zcrx_ifq::zcrx::ZcrxIfq;
use zcrx_ifq::{Area, Error, OwnerId, RecvEvent};

#[path = "common/mod.rs"]
mod common;
use common::{apply, check_owner_stats, owner_id, touch_all, HandleOp, Live};

const ENOMEM: i32 = 12;
const ENOSPC: i32 = 28;

#[derive(Arbitrary, Debug)]
struct Input {
    chunk_pages: u8,
    chunks: u8,
    rq_entries: u8,
    area_id: u16,
    limit: Option<u16>,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Raw CQE values.
    Raw {
        owner: u8,
        res: i32,
        flags: u32,
        big: [u64; 2],
    },
    /// A data completion with the queue's area id (unless `wrong_area`), an offset in or just
    /// past the area and a length up to a little more than a buffer.
    Data {
        owner: u8,
        wrong_area: Option<u16>,
        off: u32,
        len: u16,
        flags: u8,
    },
    /// A completion without data.
    Empty {
        res: i8,
        flags: u8,
        big: u64,
    },
    /// Drop, slice or split a live handle.
    Handle(HandleOp),
    Flush,
    /// The kernel stores a refill head.
    Head(Head),
    /// Tears the queue down while handles live; the rest of the input only uses handles.
    Teardown,
}

#[derive(Arbitrary, Debug)]
enum Head {
    /// Consumes up to `n` published entries, as the kernel does.
    Consume(u8),
    /// Goes back `n` entries (impossible: must be ignored).
    Back(u8),
    /// Goes `n + 1` entries past the published tail (impossible: must be ignored).
    Beyond(u8),
    /// Any value.
    Any(u32),
}

struct Harness {
    ifq: ZcrxIfq,
    page: u64,
    pages: u64,
    chunk_size: u64,
    chunks: u32,
    area_len: u64,
    area_id: u16,
    limit: Option<u64>,
    /// Per kernel buffer: references handed out by accepted completions, and refill entries
    /// written for it.
    given: Vec<u64>,
    returned: Vec<u64>,
    /// Per chunk: delivered since its handles were last collected, and the bytes charged per
    /// owner meanwhile.
    user: Vec<bool>,
    owners: Vec<Vec<(u32, u64)>>,
    /// The kernel's head word, and the producer's view of it (the last plausible value).
    head_word: u32,
    head: u32,
    live: Vec<Live>,
}

impl Harness {
    fn new(input: &Input) -> Self {
        let page = page_size();
        let chunk_pages = 1u64 << (input.chunk_pages % 3);
        let chunks = u32::from(input.chunks % 8) + 1;
        let chunk_size = page * chunk_pages;
        let area = Area::builder()
            .chunk_size(chunk_size as usize)
            .chunks(chunks as usize)
            .build()
            .expect("area");
        let area_len = area.len() as u64;
        let token = u64::from(input.area_id) << ZCRX_AREA_SHIFT;
        let entries = u32::from(input.rq_entries % 16) + 1;
        let limit = input.limit.map(u64::from);
        let mut ifq = ZcrxIfq::simulated(area, entries, token).expect("simulated queue");
        ifq.sim_set_owner_limit(limit);
        assert_eq!(ifq.buffer_size() as u64, page);
        assert!(ifq.rq_entries().is_power_of_two() && ifq.rq_entries() >= entries);
        let pages = area_len / page;
        Self {
            ifq,
            page,
            pages,
            chunk_size,
            chunks,
            area_len,
            area_id: input.area_id,
            limit,
            given: vec![0; pages as usize],
            returned: vec![0; pages as usize],
            user: vec![false; chunks as usize],
            owners: vec![vec![]; chunks as usize],
            head_word: 0,
            head: 0,
            live: vec![],
        }
    }

    fn outstanding(&self, chunk: u32) -> u64 {
        let per = self.chunk_size / self.page;
        (u64::from(chunk) * per..(u64::from(chunk) + 1) * per)
            .map(|p| self.given[p as usize] - self.returned[p as usize])
            .sum()
    }

    fn complete(&mut self, owner: u32, res: i32, flags: u32, big: [u64; 2]) {
        // The decoder on its own.
        let d = decode_zcrx(res, flags, big);
        assert_eq!(d.more, flags & CQE_F_MORE != 0);
        match d.event {
            Event::Data { len } => {
                assert!(res > 0 && len == res as u32);
                assert_eq!(
                    d.loc,
                    Some(ZcrxLoc {
                        area_id: (big[0] >> ZCRX_AREA_SHIFT) as u16,
                        offset: big[0] & ZCRX_OFFSET_MASK,
                    })
                );
            }
            other => {
                assert_eq!(d.loc, None, "a location without data");
                match other {
                    Event::Eof => assert_eq!(res, 0),
                    Event::NoBuffers => assert_eq!(res, -ENOMEM),
                    Event::CqOverflow => assert_eq!(res, -ENOSPC),
                    Event::Error { errno } => {
                        assert!(res < 0 && errno > 0 && res != -ENOMEM && res != -ENOSPC);
                        assert_eq!(errno, res.checked_neg().unwrap_or(i32::MAX));
                    }
                    Event::Data { .. } => unreachable!(),
                }
            }
        }

        let before = self.ifq.snapshot();
        let stats = self.ifq.stats();
        let area_id = (big[0] >> ZCRX_AREA_SHIFT) as u16;
        let offset = big[0] & ZCRX_OFFSET_MASK;
        let len = res.max(0) as u64;
        let acceptable = res <= 0
            || (area_id == self.area_id
                && offset < self.area_len
                && offset % self.page + len <= self.page);
        match self.ifq.complete(OwnerId(owner), res, flags, big) {
            Err(e) => {
                assert!(!acceptable, "refused an acceptable completion: {e}");
                assert!(
                    matches!(e, Error::BadCompletion(_)),
                    "untyped refusal: {e:?}"
                );
                assert_eq!(
                    self.ifq.snapshot(),
                    before,
                    "a refused completion changed nothing"
                );
                assert_eq!(self.ifq.stats(), stats);
            }
            Ok(c) => {
                assert!(acceptable, "accepted a bad completion ({res}, {big:x?})");
                assert_eq!(c.more, flags & CQE_F_MORE != 0);
                match c.event {
                    RecvEvent::Data(buf) => {
                        assert!(res > 0);
                        assert_eq!(buf.area_offset(), offset);
                        assert_eq!(buf.len() as u64, len);
                        let chunk = (offset / self.chunk_size) as u32;
                        assert_eq!(buf.chunk(), chunk);
                        assert!(offset + len <= self.area_len);
                        std::hint::black_box(buf.iter().fold(0u8, |a, b| a ^ b));
                        self.given[(offset / self.page) as usize] += 1;
                        self.user[chunk as usize] = true;
                        let owners = &mut self.owners[chunk as usize];
                        match owners.iter_mut().find(|(o, _)| *o == owner) {
                            Some((_, b)) => *b += len,
                            None => owners.push((owner, len)),
                        }
                        self.live.push(Live::new(buf, chunk));
                    }
                    other => {
                        match other {
                            RecvEvent::Eof => assert_eq!(res, 0),
                            RecvEvent::NoBuffers => assert_eq!(res, -ENOMEM),
                            RecvEvent::CqOverflow => assert_eq!(res, -ENOSPC),
                            RecvEvent::Error(e) => {
                                assert!(res < 0 && e.raw_os_error().is_some_and(|n| n > 0))
                            }
                            RecvEvent::Data(_) => unreachable!(),
                        }
                        let after = self.ifq.snapshot();
                        assert_eq!(after, before, "a completion without data changed nothing");
                    }
                }
            }
        }
    }

    /// Where the kernel really is: the head word if it is plausible, else the producer's view.
    fn kernel_head(&self) -> u32 {
        let tail = self.ifq.sim_tail();
        if self.head_word.wrapping_sub(self.head) <= tail.wrapping_sub(self.head) {
            self.head_word
        } else {
            self.head
        }
    }

    fn set_head(&mut self, op: &Head) {
        let tail = self.ifq.sim_tail();
        let kernel = self.kernel_head();
        let h = match *op {
            Head::Consume(n) => kernel.wrapping_add(u32::from(n).min(tail.wrapping_sub(kernel))),
            Head::Back(n) => self.head.wrapping_sub(u32::from(n) + 1),
            Head::Beyond(n) => tail.wrapping_add(u32::from(n) + 1),
            Head::Any(h) => h,
        };
        self.head_word = h;
        self.ifq.sim_set_head(h);
    }

    fn flush(&mut self) {
        let entries = self.ifq.rq_entries();
        let tail = self.ifq.sim_tail();
        // The producer accepts the head word only if it lies between its last head and the
        // published tail.
        if self.head_word.wrapping_sub(self.head) <= tail.wrapping_sub(self.head) {
            self.head = self.head_word;
        }
        let live_chunks: Vec<u32> = self.live.iter().map(|l| l.chunk).collect();
        let n = self.ifq.flush();
        let new_tail = self.ifq.sim_tail();
        assert!(
            new_tail.wrapping_sub(self.head) <= entries,
            "the tail ran {} entries past the kernel's head (ring of {entries})",
            new_tail.wrapping_sub(self.head)
        );
        let mut at = tail;
        while at != new_tail {
            let (off, len, pad) = self.ifq.sim_read_rqe(at);
            at = at.wrapping_add(1);
            assert_eq!((off >> ZCRX_AREA_SHIFT) as u16, self.area_id, "area token");
            assert_eq!((len, pad), (0, 0), "refill entry padding");
            let off = off & ZCRX_OFFSET_MASK;
            assert_eq!(off % self.page, 0, "refill entries name whole buffers");
            let p = off / self.page;
            assert!(p < self.pages, "refill entry past the area");
            let chunk = (off / self.chunk_size) as u32;
            assert!(
                !live_chunks.contains(&chunk),
                "buffer {p} returned while a handle points into chunk {chunk}"
            );
            self.returned[p as usize] += 1;
            assert!(
                self.returned[p as usize] <= self.given[p as usize],
                "buffer {p}: more refill entries than references (double return)"
            );
        }
        // Every chunk whose handles are gone was collected.
        for c in 0..self.chunks {
            if !live_chunks.contains(&c) && self.user[c as usize] {
                self.user[c as usize] = false;
                self.owners[c as usize].clear();
            }
        }
        // `flush` counts the chunks it handed back in full.
        let _ = n;
    }

    fn check(&self) {
        let snap = self.ifq.snapshot();
        assert_eq!(snap.counts.total(), self.chunks);
        let user = self.user.iter().filter(|u| **u).count() as u32;
        let refill = (0..self.chunks)
            .filter(|&c| !self.user[c as usize] && self.outstanding(c) > 0)
            .count() as u32;
        assert_eq!(snap.counts.user, user, "user chunks");
        assert_eq!(
            snap.counts.refill, refill,
            "chunks waiting for refill entries"
        );
        assert!(self.ifq.pending_chunks() as u32 >= refill);
        for (c, owners) in self.owners.iter().enumerate() {
            assert!(owners.is_empty() || self.user[c]);
        }
        let per = check_owner_stats(&snap, self.owners.iter().map(|o| o.as_slice()));
        for (o, (_, bytes)) in per.iter().take(4) {
            assert_eq!(
                self.ifq.over_limit(OwnerId(*o)),
                self.limit.is_some_and(|l| *bytes >= l)
            );
        }
    }
}

/// The kernel's buffer size (the page size), as a simulated queue reports it.
fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        [4096usize, 16384, 65536]
            .into_iter()
            .find_map(|size| {
                let area = Area::builder().chunk_size(size).chunks(1).build().ok()?;
                ZcrxIfq::simulated(area, 1, 0)
                    .ok()
                    .map(|q| q.buffer_size() as u64)
            })
            .expect("a simulated queue")
    })
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(&input);
    let mut ops = input.ops.iter().take(512);
    for op in ops.by_ref() {
        match op {
            Op::Raw {
                owner,
                res,
                flags,
                big,
            } => h.complete(owner_id(*owner), *res, *flags, *big),
            Op::Data {
                owner,
                wrong_area,
                off,
                len,
                flags,
            } => {
                let area_id = wrong_area.unwrap_or(h.area_id);
                let off = u64::from(*off) % (h.area_len + h.page);
                let len = i32::from(*len % (h.page as u16 + 64)) + 1;
                let big = [(u64::from(area_id) << ZCRX_AREA_SHIFT) | off, 0];
                h.complete(owner_id(*owner), len, u32::from(*flags), big)
            }
            Op::Empty { res, flags, big } => {
                let res = match *res {
                    0..=63 => 0,
                    64..=95 => -ENOMEM,
                    96..=127 => -ENOSPC,
                    r => i32::from(r),
                };
                h.complete(0, res, u32::from(*flags), [*big, 0])
            }
            Op::Flush => h.flush(),
            Op::Head(op) => h.set_head(op),
            Op::Teardown => {
                // The queue goes while handles live: they stay readable (the area stays mapped
                // until the last one drops), and the rest of the input drops, slices and splits
                // them in any order (ASan watches the memory).
                let Harness { ifq, mut live, .. } = h;
                let chunks: std::collections::HashSet<u32> = live.iter().map(|l| l.chunk).collect();
                let report = ifq.teardown();
                assert_eq!(report.held_chunks, chunks.len() as u32, "{report:?}");
                for op in ops {
                    if let Op::Handle(op) = op {
                        apply(&mut live, op);
                    }
                    touch_all(&live);
                }
                return;
            }
            Op::Handle(op) => apply(&mut h.live, op),
        }
        h.check();
    }
    // Every reference comes back exactly once when the handles are gone and the kernel keeps
    // consuming.
    h.live.clear();
    let total: u64 = h.given.iter().sum::<u64>() - h.returned.iter().sum::<u64>();
    let rounds = total / u64::from(h.ifq.rq_entries()) + 3;
    for _ in 0..rounds {
        h.flush();
        h.check();
        h.set_head(&Head::Consume(u8::MAX));
    }
    h.flush();
    h.check();
    assert_eq!(h.given, h.returned, "every reference returned exactly once");
    assert_eq!(h.ifq.snapshot().counts.kernel, h.chunks);
    let report = h.ifq.teardown();
    assert!(report.is_clean(), "{report:?}");
});
