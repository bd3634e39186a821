//! Shared by the fuzz targets: the application's live handles (dropped, sliced and split in any
//! order) and the per-owner stats check. Each target uses the parts it needs.
#![allow(dead_code)]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use zcrx_ifq::{RxBuf, Snapshot};

/// A handle the application holds, with the chunk and the area range it was given.
pub struct Live {
    pub buf: RxBuf,
    pub chunk: u32,
    pub start: u64,
    pub end: u64,
}

impl Live {
    pub fn new(buf: RxBuf, chunk: u32) -> Self {
        let start = buf.area_offset();
        let end = start + buf.len() as u64;
        Self {
            buf,
            chunk,
            start,
            end,
        }
    }
}

/// What the application does with the handles it holds.
#[derive(Arbitrary, Debug)]
pub enum HandleOp {
    Drop(u16),
    Slice { i: u16, from: u16, to: u16 },
    Split { i: u16, at: u16 },
}

/// Applies `op` to the handle it picks (nothing when none is live). Every new piece must point
/// where its range says.
pub fn apply(live: &mut Vec<Live>, op: &HandleOp) {
    if live.is_empty() {
        return;
    }
    let n = live.len();
    match *op {
        HandleOp::Drop(i) => {
            live.swap_remove(usize::from(i) % n);
        }
        HandleOp::Slice { i, from, to } => {
            let l = &live[usize::from(i) % n];
            let len = l.buf.len();
            let (a, b) = (usize::from(from) % (len + 1), usize::from(to) % (len + 1));
            let (a, b) = (a.min(b), a.max(b));
            let s = l.buf.slice(a..b);
            assert_eq!(s.area_offset(), l.start + a as u64);
            let (chunk, start) = (l.chunk, l.start);
            live.push(Live {
                buf: s,
                chunk,
                start: start + a as u64,
                end: start + b as u64,
            });
        }
        HandleOp::Split { i, at } => {
            let l = &mut live[usize::from(i) % n];
            let at = usize::from(at) % (l.buf.len() + 1);
            let head = l.buf.split_to(at);
            let (chunk, start) = (l.chunk, l.start);
            l.start += at as u64;
            assert_eq!(l.buf.area_offset(), l.start);
            live.push(Live {
                buf: head,
                chunk,
                start,
                end: start + at as u64,
            });
        }
    }
}

/// Reads every live handle's bytes: an out-of-bounds view would fault or trip ASan.
pub fn touch_all(live: &[Live]) {
    for l in live {
        std::hint::black_box(l.buf.iter().fold(0u8, |a, b| a ^ b));
    }
}

/// A few far-apart owner ids (they collide in the owner table's direct-mapped slots), mostly
/// small ones.
pub fn owner_id(o: u8) -> u32 {
    match o {
        250..=255 => u32::MAX - u32::from(o - 250) * 8,
        _ => u32::from(o % 24),
    }
}

/// Checks the snapshot's held bytes and per-owner stats against the model's charges (one
/// `(owner, bytes)` list per chunk the application holds); returns the recount, owner ->
/// (chunks, bytes).
pub fn check_owner_stats<'a>(
    snap: &Snapshot,
    charges: impl IntoIterator<Item = &'a [(u32, u64)]>,
) -> BTreeMap<u32, (u32, u64)> {
    let mut per: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
    for chunk in charges {
        for (o, b) in chunk {
            let e = per.entry(*o).or_default();
            e.0 += 1;
            e.1 += b;
        }
    }
    assert_eq!(snap.held_bytes, per.values().map(|v| v.1).sum::<u64>());
    let got: Vec<(u32, (u32, u64))> = snap
        .owners
        .iter()
        .map(|(o, s)| (o.0, (s.chunks, s.bytes)))
        .collect();
    let want: Vec<(u32, (u32, u64))> = per.iter().map(|(o, v)| (*o, *v)).collect();
    assert_eq!(got, want, "per-owner stats");
    per
}
