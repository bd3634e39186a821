//! The kernel's side of a zcrx queue (`io_uring/zcrx.c`, 6.18), without a NIC:
//! - Buffers are pages. The "NIC" takes a free page and fills it with fragments; every fragment
//!   is one completion (`res` = length, `F_MORE`, big CQE `area_id << 48 | offset`) and one user
//!   reference on the page.
//! - A page goes back to the free list only when the NIC is done with it and its user references
//!   are all returned; it is never handed out while it has user references.
//! - Refill: it reads entries from its head to the published tail (at most the ring size, at most
//!   64 per batch), skips entries with a bad area id, bad padding, an offset past the area, or a
//!   page without user references (a repeated return), drops one reference per good entry, and
//!   stores its head.
//!
//! Where the model would recycle or hand out a page, it asks the caller how many live handles
//! point into it (`live_in_page`) and fails if any does.

use std::collections::{HashMap, VecDeque};

use zcrx_ifq::completion::{CQE_F_MORE, ZCRX_OFFSET_MASK};
use zcrx_ifq::zcrx::ZcrxIfq;

use super::Check;
use crate::pattern::keyed;

/// `-ENOMEM`: the copy fallback found no free buffer, which ends the receive.
pub const ENOMEM: i32 = -12;

/// One fragment's completion: `res`, `flags`, the big CQE's two words, and the bytes written.
pub type Fragment = (i32, u32, [u64; 2], Vec<u8>);

/// The model; [`Kernel::consume_all`] is the benchmarks' refill (everything published is taken,
/// nothing checked).
#[derive(Debug)]
pub struct Kernel {
    area_id: u16,
    page: u64,
    pages: usize,
    free: VecDeque<usize>,
    urefs: Vec<u32>,
    /// The page the NIC is filling and the fill offset in it.
    filling: Option<(usize, u64)>,
    cached_head: u32,
    entries: u32,
    /// Entries skipped as bad or repeated (must stay 0 for a correct user side).
    skipped: u32,
    /// Fragments so far: each fragment's bytes are the keyed pattern of this seed.
    seq: u64,
}

impl Kernel {
    /// A model of `ifq`, whose area of `area_len` bytes has id `area_id` (the top 16 bits of
    /// its token), with every page free.
    pub fn new(ifq: &ZcrxIfq, area_len: usize, area_id: u16) -> Self {
        let page = ifq.buffer_size() as u64;
        let pages = area_len / page as usize;
        Self {
            area_id,
            page,
            pages,
            free: (0..pages).collect(),
            urefs: vec![0; pages],
            filling: None,
            cached_head: 0,
            entries: ifq.rq_entries(),
            skipped: 0,
            seq: 0,
        }
    }

    /// Refill entries skipped as bad or repeated.
    pub fn skipped(&self) -> u32 {
        self.skipped
    }

    /// The kernel's refill head.
    pub fn cached_head(&self) -> u32 {
        self.cached_head
    }

    /// Whether every user reference came back.
    pub fn all_references_back(&self) -> bool {
        self.urefs.iter().all(|&u| u == 0)
    }

    /// Free pages, and all pages.
    pub fn free_pages(&self) -> (usize, usize) {
        (self.free.len(), self.pages)
    }

    /// The kernel takes every published refill entry (head = tail), without a check.
    #[inline(always)]
    pub fn consume_all(ifq: &ZcrxIfq) {
        ifq.sim_set_head(ifq.sim_tail());
    }

    /// The NIC is done with its page; it is recycled if no user reference is left.
    pub fn close_filling(&mut self, live_in_page: &dyn Fn(usize) -> usize) -> Check {
        if let Some((p, _)) = self.filling.take() {
            if self.urefs[p] == 0 {
                if live_in_page(p) != 0 {
                    return Err(format!("page {p} recycled while a handle points into it"));
                }
                self.free.push_back(p);
            }
        }
        Ok(())
    }

    /// One fragment of up to `want` bytes, in a fresh page if `new_page` (or the current one is
    /// full), or an `-ENOMEM` completion when no page is free.
    pub fn fragment(
        &mut self,
        ifq: &ZcrxIfq,
        live_in_page: &dyn Fn(usize) -> usize,
        new_page: bool,
        want: u16,
    ) -> Check<Fragment> {
        if new_page || self.filling.is_some_and(|(_, fill)| fill >= self.page) {
            self.close_filling(live_in_page)?;
        }
        if self.filling.is_none() {
            let Some(p) = self.free.pop_front() else {
                return Ok((ENOMEM, 0, [0; 2], Vec::new()));
            };
            if self.urefs[p] != 0 {
                return Err(format!("page {p} with user references handed out again"));
            }
            if live_in_page(p) != 0 {
                return Err(format!("page {p} handed out while a handle points into it"));
            }
            self.filling = Some((p, 0));
        }
        let (p, fill) = self.filling.expect("a page being filled");
        let room = self.page - fill;
        let len = (u64::from(want) % room) + 1;
        let off = p as u64 * self.page + fill;
        self.seq += 1;
        let mut data = vec![0; len as usize];
        keyed::fill(self.seq, 0, &mut data);
        // SAFETY: page `p` is the NIC's: it was free (no user references, and the caller just
        // confirmed no handle covers it) and nothing is delivered from it until this returns.
        unsafe { ifq.sim_write(off, &data) };
        self.filling = Some((p, fill + len));
        self.urefs[p] += 1;
        Ok((
            len as i32,
            CQE_F_MORE,
            [(u64::from(self.area_id) << 48) | off, 0],
            data,
        ))
    }

    /// Reads up to `max` (and at most 64) refill entries, like `io_zcrx_ring_refill`: how many.
    pub fn refill(
        &mut self,
        ifq: &ZcrxIfq,
        live_in_page: &dyn Fn(usize) -> usize,
        max: u32,
    ) -> Check<u32> {
        let tail = ifq.sim_tail();
        let n = tail
            .wrapping_sub(self.cached_head)
            .min(self.entries)
            .min(max)
            .min(64);
        for _ in 0..n {
            let (off, _len, pad) = ifq.sim_read_rqe(self.cached_head);
            self.cached_head = self.cached_head.wrapping_add(1);
            let page = ((off & ZCRX_OFFSET_MASK) / self.page) as usize;
            if pad != 0
                || (off >> 48) as u16 != self.area_id
                || page >= self.pages
                || self.urefs[page] == 0
            {
                self.skipped += 1;
                continue;
            }
            self.urefs[page] -= 1;
            if self.urefs[page] == 0 && self.filling.map(|f| f.0) != Some(page) {
                if live_in_page(page) != 0 {
                    return Err(format!(
                        "page {page} recycled while a handle points into it"
                    ));
                }
                self.free.push_back(page);
            }
        }
        ifq.sim_set_head(self.cached_head);
        Ok(n)
    }

    /// Checks the published, unread entries: the area token, zero padding, a page of the area
    /// that has a user reference to return, and no more entries for a page than it has
    /// references. (An entry may name a page that has a live handle if the NIC went on filling
    /// the page after an earlier fragment was returned: references are per page, and the page is
    /// only recycled when all are back, which `refill` checks.)
    pub fn peek(&self, ifq: &ZcrxIfq) -> Check {
        let mut per_page: HashMap<usize, u32> = HashMap::new();
        let tail = ifq.sim_tail();
        if tail.wrapping_sub(self.cached_head) > self.entries {
            return Err("tail ran past the head".into());
        }
        let mut at = self.cached_head;
        while at != tail {
            let (off, len, pad) = ifq.sim_read_rqe(at);
            if (off >> 48) as u16 != self.area_id {
                return Err(format!("entry {at}: area token {:#x}", off >> 48));
            }
            if (len, pad) != (0, 0) {
                return Err(format!("entry {at}: len {len}, pad {pad}"));
            }
            let page = ((off & ZCRX_OFFSET_MASK) / self.page) as usize;
            if page >= self.pages {
                return Err(format!("entry {at}: page {page} past the area"));
            }
            let n = per_page.entry(page).or_default();
            *n += 1;
            if *n > self.urefs[page] {
                return Err(format!("more entries for page {page} than references"));
            }
            at = at.wrapping_add(1);
        }
        Ok(())
    }
}
