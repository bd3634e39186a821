//! The refill producers (`zcrx_ifq::refill::pbuf::PbufProducer`, `zcrx_ifq::refill::zcrx::ZcrxRefill`)
//! under arbitrary sequences, with kernel heads and completions that may be honest, go
//! backwards, run past the tail or take any value.
//!
//! Checked after every step: no panic or overflow; never more entries in flight than the ring
//! holds; slots in range; pending never more than in flight; a head is accepted exactly when it
//! lies between the last accepted head and the published tail; and, while the kernel side is
//! honest about what it consumed, no slot is overwritten before the kernel read it and the
//! kernel sees every entry once, in order.
#![no_main]

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use zcrx_ifq::completion::ZCRX_OFFSET_MASK;
use zcrx_ifq::refill::pbuf::PbufProducer;
use zcrx_ifq::refill::zcrx::{rqe_off, ZcrxRefill};

#[derive(Arbitrary, Debug)]
enum Input {
    Pbuf {
        log2: u8,
        ops: Vec<PbufOp>,
    },
    Zcrx {
        log2: u8,
        start: Start,
        ops: Vec<ZcrxOp>,
    },
    RqeOff(u64, u64),
}

#[derive(Arbitrary, Debug)]
enum PbufOp {
    Push(u8),
    Publish,
    /// The kernel reads up to `n` published entries.
    KernelTake(u8),
    /// A completion for a buffer the kernel took.
    Complete,
    /// A completion for a buffer the kernel never took (a lie): refused while nothing published
    /// is outstanding, and never an overflow.
    Bogus,
}

#[derive(Arbitrary, Debug)]
enum Start {
    Zero,
    NearWrap(u16),
    Any(u32),
}

#[derive(Arbitrary, Debug)]
enum ZcrxOp {
    Push(u8),
    Publish,
    /// The kernel consumes up to `n` entries and stores its head; the producer observes it.
    Kernel(u8),
    /// The producer observes / asks for space with an impossible or arbitrary head.
    Observe(HeadVal),
    Space(HeadVal),
}

#[derive(Arbitrary, Debug)]
enum HeadVal {
    Back(u8),
    Beyond(u8),
    /// Relative to the last accepted head.
    Ahead(u16),
    Any(u32),
}

fn pbuf(log2: u8, ops: &[PbufOp]) {
    let entries = 1u32 << (log2 % 16);
    let mut p = PbufProducer::new(entries);
    assert_eq!(p.entries(), entries);
    // Kernel model: slots, its private head, the published tail it has seen.
    let mut slots: Vec<Option<u64>> = vec![None; entries as usize];
    let mut head = 0u16;
    let mut tail = 0u16;
    let mut next = 0u64;
    let mut posted: VecDeque<u64> = VecDeque::new();
    let mut taken = 0u32;
    let mut honest = true;
    for op in ops.iter().take(4096) {
        match *op {
            PbufOp::Push(n) => {
                for _ in 0..=n {
                    let before = p.in_ring();
                    match p.push() {
                        Some(slot) => {
                            assert!(u32::from(slot) < entries);
                            assert_eq!(p.in_ring(), before + 1);
                            if honest {
                                assert!(slots[slot as usize].is_none(), "overwrote an unread slot");
                            }
                            slots[slot as usize] = Some(next);
                            posted.push_back(next);
                            next += 1;
                        }
                        None => {
                            assert_eq!(p.in_ring(), entries);
                            break;
                        }
                    }
                }
            }
            PbufOp::Publish => {
                let pending = p.pending();
                match p.publish() {
                    Some(t) => {
                        assert!(pending > 0);
                        assert_eq!(t.wrapping_sub(tail), pending);
                        tail = t;
                    }
                    None => assert_eq!(pending, 0),
                }
                assert_eq!(p.pending(), 0);
            }
            PbufOp::KernelTake(n) => {
                for _ in 0..=n {
                    if head == tail {
                        break;
                    }
                    let slot = (head as u32 & (entries - 1)) as usize;
                    let v = slots[slot].take();
                    if honest {
                        assert_eq!(v, posted.pop_front(), "the kernel sees entries in order");
                    }
                    head = head.wrapping_add(1);
                    taken += 1;
                }
            }
            PbufOp::Complete => {
                if taken > 0 {
                    taken -= 1;
                    let ok = p.consumed();
                    if honest {
                        assert!(ok, "a real consumption was refused");
                    }
                }
            }
            PbufOp::Bogus => {
                let outstanding = p.in_ring() - u32::from(p.pending());
                let ok = p.consumed();
                assert_eq!(ok, outstanding > 0);
                if ok {
                    // The producer now believes a slot is free that the kernel may not have
                    // read: from here on only the bounds are checked.
                    honest = false;
                }
            }
        }
        assert!(p.in_ring() <= entries, "more in the ring than it holds");
        assert!(u32::from(p.pending()) <= p.in_ring());
    }
}

fn start(s: &Start) -> u32 {
    match *s {
        Start::Zero => 0,
        Start::NearWrap(d) => u32::MAX - u32::from(d),
        Start::Any(v) => v,
    }
}

fn zcrx(log2: u8, start_at: &Start, ops: &[ZcrxOp]) {
    let entries = 1u32 << (log2 % 16);
    let start = start(start_at);
    let mut p = ZcrxRefill::starting_at(entries, start);
    assert_eq!((p.entries(), p.tail(), p.head()), (entries, start, start));
    // Kernel model: slots, its head, the tail it was shown.
    let mut slots: Vec<Option<u64>> = vec![None; entries as usize];
    let mut khead = start;
    let mut shown = start;
    let mut next = 0u64;
    let mut seen = 0u64;
    for op in ops.iter().take(4096) {
        match op {
            ZcrxOp::Push(n) => {
                for _ in 0..=*n {
                    let before = p.in_flight();
                    match p.push() {
                        Some(slot) => {
                            assert!(slot < entries);
                            assert_eq!(p.in_flight(), before + 1);
                            assert!(slots[slot as usize].is_none(), "overwrote an unread slot");
                            slots[slot as usize] = Some(next);
                            next += 1;
                        }
                        None => {
                            assert_eq!(p.in_flight(), entries);
                            break;
                        }
                    }
                }
            }
            ZcrxOp::Publish => {
                if let Some(t) = p.publish() {
                    assert_ne!(t, shown);
                    shown = t;
                }
                assert_eq!(p.pending(), 0);
                assert_eq!(p.tail(), shown);
            }
            ZcrxOp::Kernel(n) => {
                let avail = shown.wrapping_sub(khead).min(entries);
                for _ in 0..avail.min(u32::from(*n)) {
                    let slot = (khead & (entries - 1)) as usize;
                    let v = slots[slot]
                        .take()
                        .expect("the kernel read an unwritten slot");
                    assert_eq!(v, seen, "the kernel sees every entry once, in order");
                    seen += 1;
                    khead = khead.wrapping_add(1);
                }
                assert!(p.observe(khead), "an honest head was refused");
                assert_eq!(p.head(), khead);
            }
            ZcrxOp::Observe(v) | ZcrxOp::Space(v) => {
                let last = p.head();
                let h = match *v {
                    HeadVal::Back(n) => last.wrapping_sub(u32::from(n) + 1),
                    HeadVal::Beyond(n) => shown.wrapping_add(u32::from(n) + 1),
                    HeadVal::Ahead(n) => last.wrapping_add(u32::from(n)),
                    HeadVal::Any(h) => h,
                };
                let plausible = h.wrapping_sub(last) <= shown.wrapping_sub(last);
                let accepted = match op {
                    ZcrxOp::Observe(_) => p.observe(h),
                    _ => {
                        let space = p.space(h);
                        assert_eq!(space, entries - p.in_flight());
                        p.head() == h
                    }
                };
                assert_eq!(accepted, plausible, "head {h} (last {last}, tail {shown})");
                if plausible {
                    // Make the kernel agree: it consumed up to there.
                    assert_eq!(p.head(), h);
                    while khead != h {
                        let slot = (khead & (entries - 1)) as usize;
                        assert_eq!(slots[slot].take(), Some(seen));
                        seen += 1;
                        khead = khead.wrapping_add(1);
                    }
                } else {
                    assert_eq!(p.head(), last, "an impossible head moved the producer");
                }
            }
        }
        assert!(
            p.in_flight() <= entries,
            "more in flight than the ring holds"
        );
        assert!(p.pending() <= p.in_flight());
        assert_eq!(p.tail().wrapping_sub(p.head()), p.in_flight());
    }
}

fuzz_target!(|input: Input| match input {
    Input::Pbuf { log2, ops } => pbuf(log2, &ops),
    Input::Zcrx { log2, start, ops } => zcrx(log2, &start, &ops),
    Input::RqeOff(off, token) => {
        let v = rqe_off(off, token);
        assert_eq!(
            v & ZCRX_OFFSET_MASK,
            (off & ZCRX_OFFSET_MASK) | (token & ZCRX_OFFSET_MASK)
        );
        assert_eq!(v & !ZCRX_OFFSET_MASK, token & !ZCRX_OFFSET_MASK);
    }
});
