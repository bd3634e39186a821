//! Completion decoding and the buffer-ring backend's handling of arbitrary completions.
//!
//! Drives `zcrx_ifq::completion::decode_bufring` and a simulated `BufRing` (the real user-side code,
//! no kernel) with arbitrary `res`/`flags` values, plausible ones (small buffer ids, lengths near
//! the chunk size, chosen flag bits) and honest ones (the next buffer the kernel would take), mixed
//! with handle drops, slices, splits and flushes. A model of the ring checks, after every step:
//! - a completion is accepted exactly when the buffer it names is the kernel's (posted and not
//!   consumed, or being filled in incremental mode) and the bytes fit in the chunk; a refused one
//!   is a typed `BadCompletion` error and changes nothing;
//! - an accepted one is an in-bounds handle of `res` bytes at the expected place, overlapping no
//!   live handle (no double delivery);
//! - a flush posts exactly the chunks whose handles are all gone and that the kernel no longer
//!   fills, each once, none with a live handle (no early or double return);
//! - the counters, held bytes and per-owner stats match the model.
#![no_main]

use std::collections::HashSet;
use zcrx_ifq::RxPool;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use zcrx_ifq::bufring::{BufRing, BufRingConfig};
use zcrx_ifq::completion::{
    decode_bufring, BufLoc, CompletionError, Event, CQE_BUFFER_SHIFT, CQE_F_BUFFER, CQE_F_BUF_MORE,
    CQE_F_MORE,
};
use zcrx_ifq::{Area, Error, OwnerId, RecvEvent, RxBuf};

#[path = "common/mod.rs"]
mod common;
use common::{apply, check_owner_stats, owner_id, touch_all, HandleOp, Live};

const CHUNK: u32 = 4096;
const ENOBUFS: i32 = 105;

#[derive(Arbitrary, Debug)]
struct Input {
    chunks: u8,
    incremental: bool,
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
    },
    /// A data completion for a small buffer id with a length up to a little past the chunk and
    /// chosen flag bits (`F_BUFFER` is set unless bit 7 of `bits` is).
    Data {
        owner: u8,
        bid: u8,
        len: u16,
        bits: u8,
    },
    /// A completion without data (EOF, `-ENOBUFS`, an errno) that may name a buffer.
    Empty {
        owner: u8,
        bid: u8,
        res: i8,
        bits: u8,
    },
    /// What an honest kernel would complete next: `want` bytes into the buffer it is filling or
    /// the oldest posted one.
    Honest {
        owner: u8,
        want: u16,
    },
    /// Drop, slice or split a live handle.
    Handle(HandleOp),
    Flush,
    /// Tears the ring down while handles live; the rest of the input only uses handles.
    Teardown,
}

/// Where the model thinks a chunk is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum M {
    /// Posted in the ring, not consumed.
    Ring,
    /// Delivered: handles may live, or be gone and not collected yet. `busy`: the kernel goes
    /// on filling it (incremental), `filled` bytes so far.
    Held {
        busy: bool,
        filled: u32,
        /// Bytes charged per owner since it left the ring.
        owners: Vec<(u32, u64)>,
    },
}

fn flags_of(bid: u16, bits: u8) -> u32 {
    let mut f = u32::from(bid) << CQE_BUFFER_SHIFT;
    if bits & 0x80 == 0 {
        f |= CQE_F_BUFFER;
    }
    if bits & 1 != 0 {
        f |= CQE_F_MORE;
    }
    if bits & 2 != 0 {
        f |= CQE_F_BUF_MORE;
    }
    // Other low bits as they come (SOCK_NONEMPTY, NOTIF, SKIP, ...).
    f | (u32::from(bits >> 2) & 0x1f) << 2
}

struct Harness {
    ring: BufRing,
    chunks: u32,
    incremental: bool,
    limit: Option<u64>,
    model: Vec<M>,
    /// Posted buffer ids in the order the kernel would take them.
    order: Vec<u16>,
    /// How far the model has read the ring (slot index, like the kernel's tail copy).
    seen_tail: u16,
    /// The area's address, as the ring entries tell it.
    base: Option<u64>,
    live: Vec<Live>,
}

impl Harness {
    fn new(input: &Input) -> Self {
        let chunks = u32::from(input.chunks % 8) + 1;
        let area = Area::builder()
            .chunk_size(CHUNK as usize)
            .chunks(chunks as usize)
            .build()
            .expect("area");
        let limit = input.limit.map(u64::from);
        let ring = BufRing::simulated(
            area,
            BufRingConfig {
                incremental: input.incremental,
                owner_limit: limit,
                ..Default::default()
            },
        )
        .expect("simulated ring");
        let mut h = Self {
            ring,
            chunks,
            incremental: input.incremental,
            limit,
            model: vec![
                M::Held {
                    busy: false,
                    filled: 0,
                    owners: vec![]
                };
                chunks as usize
            ],
            order: vec![],
            seen_tail: 0,
            base: None,
            live: vec![],
        };
        // Every chunk is posted at start.
        let posted = h.sync();
        assert_eq!(posted.len(), chunks as usize, "every chunk posted at start");
        h
    }

    /// Reads the entries published since the last call, as the kernel would; checks each names a
    /// chunk that may go back (held, not busy, no live handle) and is not already posted.
    fn sync(&mut self) -> Vec<u16> {
        let tail = self.ring.sim_tail();
        let mut posted = vec![];
        while self.seen_tail != tail {
            let (addr, len, bid) = self.ring.sim_entry(self.seen_tail);
            self.seen_tail = self.seen_tail.wrapping_add(1);
            assert_eq!(len, CHUNK, "entry length");
            assert!(
                u32::from(bid) < self.chunks,
                "posted bid {bid} out of range"
            );
            let base = addr.wrapping_sub(u64::from(bid) * u64::from(CHUNK));
            assert_eq!(
                *self.base.get_or_insert(base),
                base,
                "entry address is its chunk's"
            );
            match &self.model[bid as usize] {
                M::Ring => panic!("bid {bid} posted twice"),
                M::Held { busy: true, .. } => panic!("bid {bid} posted while the kernel fills it"),
                M::Held { .. } => {}
            }
            assert!(
                !self.live.iter().any(|l| l.chunk == u32::from(bid)),
                "bid {bid} posted while a handle points into it"
            );
            self.model[bid as usize] = M::Ring;
            self.order.push(bid);
            posted.push(bid);
        }
        posted
    }

    /// What the model expects of a delivery of `len` bytes into `bid`: `Ok(offset)` or `Err`.
    fn expect(&self, bid: u16, len: u32) -> Result<u32, ()> {
        if u32::from(bid) >= self.chunks {
            return Err(());
        }
        let (offset, allowed) = match &self.model[bid as usize] {
            M::Ring => (0, true),
            M::Held { busy, filled, .. } => (
                if self.incremental { *filled } else { 0 },
                self.incremental && *busy,
            ),
        };
        if u64::from(offset) + u64::from(len) > u64::from(CHUNK) || !allowed {
            return Err(());
        }
        Ok(offset)
    }

    fn complete(&mut self, owner: u32, res: i32, flags: u32) {
        let decoded = decode_bufring(res, flags);
        // The decoder on its own.
        let loc = (flags & CQE_F_BUFFER != 0).then_some(BufLoc {
            bid: (flags >> CQE_BUFFER_SHIFT) as u16,
            buf_more: flags & CQE_F_BUF_MORE != 0,
        });
        match &decoded {
            Ok(d) => {
                assert_eq!(d.loc, loc);
                assert_eq!(d.more, flags & CQE_F_MORE != 0);
                match d.event {
                    Event::Data { len } => {
                        assert!(res > 0 && len == res as u32 && loc.is_some())
                    }
                    Event::Eof => assert_eq!(res, 0),
                    Event::NoBuffers => assert_eq!(res, -ENOBUFS),
                    Event::CqOverflow => panic!("a buffer ring has no CQ-overflow event"),
                    Event::Error { errno } => {
                        assert!(res < 0 && errno > 0 && res != -ENOBUFS);
                        assert_eq!(errno, res.checked_neg().unwrap_or(i32::MAX));
                    }
                }
            }
            Err(e) => {
                assert!(res > 0 && loc.is_none());
                assert_eq!(*e, CompletionError::MissingBuffer { len: res as u32 });
            }
        }

        let before = self.ring.snapshot();
        let len = res.max(0) as u32;
        let expect = match (decoded.is_ok(), loc) {
            (false, _) => Err(()),
            (true, Some(loc)) => self.expect(loc.bid, len),
            (true, None) => Ok(0),
        };
        let got = self.ring.complete(OwnerId(owner), res, flags);
        match got {
            Err(e) => {
                assert!(expect.is_err(), "refused an acceptable completion: {e}");
                assert!(
                    matches!(e, Error::BadCompletion(_)),
                    "untyped refusal: {e:?}"
                );
                assert_eq!(
                    self.ring.snapshot(),
                    before,
                    "a refused completion changed nothing"
                );
            }
            Ok(c) => {
                let offset = expect.expect("accepted a completion the model refuses");
                assert_eq!(c.more, flags & CQE_F_MORE != 0);
                match c.event {
                    RecvEvent::Data(buf) => {
                        assert!(res > 0);
                        let loc = loc.expect("data has a buffer");
                        self.delivered(owner, loc, len, offset);
                        self.check_new(buf, loc.bid, offset, len);
                    }
                    other => {
                        match other {
                            RecvEvent::Eof => assert_eq!(res, 0),
                            RecvEvent::NoBuffers => assert_eq!(res, -ENOBUFS),
                            RecvEvent::Error(e) => {
                                assert!(res < 0 && e.raw_os_error().is_some_and(|n| n > 0))
                            }
                            RecvEvent::CqOverflow | RecvEvent::Data(_) => {
                                panic!("unexpected event for res {res}")
                            }
                        }
                        if let Some(loc) = loc {
                            // The buffer was consumed with no bytes: accounted, handed back.
                            self.delivered(owner, loc, 0, offset);
                        }
                    }
                }
            }
        }
    }

    fn delivered(&mut self, owner: u32, loc: BufLoc, len: u32, offset: u32) {
        let busy = self.incremental && loc.buf_more;
        let m = &mut self.model[loc.bid as usize];
        let mut owners = match std::mem::replace(m, M::Ring) {
            M::Ring => {
                self.order.retain(|b| *b != loc.bid);
                vec![]
            }
            M::Held { owners, .. } => owners,
        };
        match owners.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, b)) => *b += u64::from(len),
            None => owners.push((owner, u64::from(len))),
        }
        *m = M::Held {
            busy,
            filled: if self.incremental { offset + len } else { 0 },
            owners,
        };
    }

    fn check_new(&mut self, buf: RxBuf, bid: u16, offset: u32, len: u32) {
        let chunk = u32::from(bid);
        let start = u64::from(chunk) * u64::from(CHUNK) + u64::from(offset);
        let end = start + u64::from(len);
        assert_eq!(buf.chunk(), chunk);
        assert_eq!(buf.len(), len as usize);
        assert_eq!(buf.area_offset(), start);
        assert!(end <= u64::from(self.chunks) * u64::from(CHUNK));
        for l in &self.live {
            assert!(
                l.end <= start || end <= l.start || len == 0 || l.start == l.end,
                "double delivery: [{start}, {end}) overlaps a live handle at [{}, {})",
                l.start,
                l.end
            );
        }
        // Touch the bytes: an out-of-bounds slice would fault or trip ASan.
        std::hint::black_box(buf.iter().fold(0u8, |a, b| a ^ b));
        let live = Live::new(buf, chunk);
        assert_eq!((live.start, live.end), (start, end));
        self.live.push(live);
    }

    fn honest(&mut self, owner: u32, want: u16) {
        let want = u32::from(want) % (2 * CHUNK) + 1;
        let busy = (0..self.chunks)
            .find(|&c| matches!(self.model[c as usize], M::Held { busy: true, .. }));
        let (bid, offset) = match busy {
            Some(c) if self.incremental => match &self.model[c as usize] {
                M::Held { filled, .. } => (c as u16, *filled),
                M::Ring => unreachable!(),
            },
            _ => match self.order.first() {
                Some(&b) => (b, 0),
                None => {
                    // The ring ran dry: -ENOBUFS ends the multishot request.
                    let c = self
                        .ring
                        .complete(OwnerId(owner), -ENOBUFS, 0)
                        .expect("ENOBUFS");
                    assert!(matches!(c.event, RecvEvent::NoBuffers) && c.needs_rearm());
                    return;
                }
            },
        };
        let room = CHUNK - offset;
        let n = want.min(room);
        let mut flags = CQE_F_BUFFER | CQE_F_MORE | (u32::from(bid) << CQE_BUFFER_SHIFT);
        if self.incremental && n < room {
            flags |= CQE_F_BUF_MORE;
        }
        if n == 0 {
            // A full busy chunk: the kernel finishes it with an empty completion.
            self.complete(owner, 0, flags & !CQE_F_BUF_MORE);
            assert!(
                matches!(self.model[bid as usize], M::Held { busy: false, .. }),
                "an honest empty completion was refused"
            );
            return;
        }
        let before = self.live.len();
        self.complete(owner, n as i32, flags);
        assert_eq!(
            self.live.len(),
            before + 1,
            "an honest completion was refused"
        );
    }

    fn flush(&mut self) {
        let publishes = self.ring.stats().publishes;
        let n = self.ring.flush();
        assert_eq!(self.ring.stats().publishes, publishes + u64::from(n > 0));
        // Exactly the chunks with no live handle that the kernel does not fill go back.
        let live: HashSet<u32> = self.live.iter().map(|l| l.chunk).collect();
        let mut due: Vec<u16> = (0..self.chunks)
            .filter(|c| !live.contains(c))
            .filter(|&c| matches!(self.model[c as usize], M::Held { busy: false, .. }))
            .map(|c| c as u16)
            .collect();
        let mut posted = self.sync();
        assert_eq!(posted.len(), n);
        posted.sort_unstable();
        due.sort_unstable();
        assert_eq!(posted, due, "flush returned the wrong chunks");
    }

    fn check(&self) {
        let snap = self.ring.snapshot();
        let ring = self.model.iter().filter(|m| **m == M::Ring).count() as u32;
        assert_eq!(snap.counts.total(), self.chunks);
        assert_eq!(snap.counts.kernel, ring);
        assert_eq!(snap.counts.user, self.chunks - ring);
        assert_eq!(snap.counts.refill, 0);
        assert_eq!(self.ring.available(), ring);
        let per = check_owner_stats(
            &snap,
            self.model.iter().filter_map(|m| match m {
                M::Held { owners, .. } => Some(owners.as_slice()),
                _ => None,
            }),
        );
        for (o, (_, bytes)) in per.iter().take(4) {
            assert_eq!(
                self.ring.over_limit(OwnerId(*o)),
                self.limit.is_some_and(|l| *bytes >= l)
            );
        }
    }
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(&input);
    let mut ops = input.ops.iter().take(512);
    for op in ops.by_ref() {
        match *op {
            Op::Raw { owner, res, flags } => h.complete(owner_id(owner), res, flags),
            Op::Data {
                owner,
                bid,
                len,
                bits,
            } => {
                let len = i32::from(len % (CHUNK as u16 + 64)) + 1;
                h.complete(owner_id(owner), len, flags_of(u16::from(bid % 12), bits))
            }
            Op::Empty {
                owner,
                bid,
                res,
                bits,
            } => {
                let res = match res {
                    0..=63 => 0,
                    64..=127 => -ENOBUFS,
                    r => i32::from(r),
                };
                h.complete(owner_id(owner), res, flags_of(u16::from(bid % 12), bits))
            }
            Op::Honest { owner, want } => h.honest(owner_id(owner), want),
            Op::Flush => h.flush(),
            Op::Teardown => {
                // The ring goes while handles live: they stay readable, and the rest of the
                // input drops, slices and splits them in any order (ASan watches the memory).
                let Harness { ring, mut live, .. } = h;
                let chunks: HashSet<u32> = live.iter().map(|l| l.chunk).collect();
                let report = ring.teardown();
                assert!(report.clean, "{report:?}");
                assert_eq!(report.held_chunks, chunks.len() as u32, "{report:?}");
                assert_eq!(report.counts.user, report.held_chunks);
                for op in ops {
                    if let Op::Handle(op) = op {
                        apply(&mut live, op);
                    }
                    touch_all(&live);
                }
                return;
            }
            Op::Handle(ref op) => apply(&mut h.live, op),
        }
        h.check();
    }
    // Everything comes back once every handle is gone (busy chunks stay with the kernel).
    h.live.clear();
    h.flush();
    h.check();
    let busy = h
        .model
        .iter()
        .filter(|m| matches!(m, M::Held { busy: true, .. }))
        .count() as u32;
    assert_eq!(h.ring.available() + busy, h.chunks);
    let report = h.ring.teardown();
    assert!(report.is_clean(), "{report:?}");
});
