//! The kernel's consumer of a provided buffer ring: it takes entries in ring order from its
//! private head up to the published tail, writes "received" bytes into the chunk an entry names
//! and posts the completion; in incremental mode (`IOU_PBUF_RING_INC`) it fills the buffer at
//! its head over several receives.

use std::collections::{HashSet, VecDeque};

use zcrx_ifq::bufring::BufRing;
use zcrx_ifq::completion::{CQE_BUFFER_SHIFT, CQE_F_BUFFER, CQE_F_BUF_MORE, CQE_F_MORE};

use super::Check;
use crate::pattern::keyed;

/// `-ENOBUFS`: the ring ran dry, which ends a multishot receive.
pub const ENOBUFS: i32 = -105;

/// The completion flags of a receive into buffer `bid`: `F_BUFFER | F_MORE` and the id, with
/// `F_BUF_MORE` when the kernel goes on filling the buffer (incremental mode).
#[inline(always)]
pub fn recv_flags(bid: u16, buf_more: bool) -> u32 {
    let flags = CQE_F_BUFFER | CQE_F_MORE | (u32::from(bid) << CQE_BUFFER_SHIFT);
    if buf_more {
        flags | CQE_F_BUF_MORE
    } else {
        flags
    }
}

/// The model. [`Kernel::take`] is the benchmarks' path (the buffer id at the head, nothing
/// checked or written); [`Kernel::sync`] and [`Kernel::recv`] are the checking one.
#[derive(Debug)]
pub struct Kernel {
    /// Ring index, taken mod 2^16. A `u32`, not a `u16`: a 32-bit load of a value just stored
    /// 16 bits wide stalls on store forwarding, which would time the model in a benchmark
    /// instead of the user side.
    head: u32,
    /// Published entries seen (ring index mod 2^16).
    tail: u16,
    /// Buffer ids between head and tail.
    in_ring: VecDeque<u16>,
    /// Incremental mode: (addr, bid, filled) of the buffer at the head being filled.
    current: Option<(u64, u16, u32)>,
    /// Each buffer's length.
    chunk: usize,
    /// Receives so far: the receive's bytes are the keyed pattern of this seed.
    seq: u64,
}

impl Kernel {
    /// A model of a ring of buffers of `chunk` bytes, before anything is published.
    pub fn new(chunk: usize) -> Self {
        Self {
            head: 0,
            tail: 0,
            in_ring: VecDeque::new(),
            current: None,
            chunk,
            seq: 0,
        }
    }

    fn head(&self) -> u16 {
        self.head as u16
    }

    /// Takes the entry at the head without a check or a write: its buffer id.
    #[inline(always)]
    pub fn take(&mut self, ring: &BufRing) -> u16 {
        let (_, _, bid) = ring.sim_entry(self.head as u16);
        self.head = self.head.wrapping_add(1);
        bid
    }

    /// How many published entries the kernel has not taken yet.
    pub fn in_ring(&self) -> usize {
        self.in_ring.len()
    }

    /// Whether the kernel is filling the buffer at its head (incremental mode).
    pub fn filling(&self) -> bool {
        self.current.is_some()
    }

    /// Whether the head has reached the published tail (the ring is dry for the kernel).
    pub fn dry(&self, ring: &BufRing) -> bool {
        self.head() == ring.sim_tail()
    }

    /// Reads newly published entries; fails if an id is posted while already in the ring, while
    /// the kernel still fills it, or while a live handle holds it (`held`), or with another
    /// length than the chunk's.
    pub fn sync(&mut self, ring: &BufRing, held: &HashSet<u32>) -> Check {
        let tail = ring.sim_tail();
        while self.tail != tail {
            let (_, len, bid) = ring.sim_entry(self.tail);
            if len as usize != self.chunk {
                return Err(format!("bid {bid} posted with length {len}"));
            }
            if self.in_ring.contains(&bid) {
                return Err(format!("bid {bid} posted twice"));
            }
            if self.current.map(|c| c.1) == Some(bid) {
                return Err(format!("bid {bid} posted while the kernel still fills it"));
            }
            if held.contains(&u32::from(bid)) {
                return Err(format!("bid {bid} posted while a handle holds it"));
            }
            self.in_ring.push_back(bid);
            self.tail = self.tail.wrapping_add(1);
        }
        Ok(())
    }

    /// One receive of up to `want` bytes: the completion's `(res, flags)`. Each receive writes
    /// fresh bytes (test-kit's keyed pattern, a seed per receive), so that a handle that kept
    /// its bytes proves its buffer was not reused.
    pub fn recv(&mut self, ring: &BufRing, want: usize, incremental: bool) -> (i32, u32) {
        if !incremental || self.current.is_none() {
            if self.head() == self.tail {
                return (ENOBUFS, 0);
            }
            let (addr, _, bid) = ring.sim_entry(self.head());
            assert_eq!(
                self.in_ring.front(),
                Some(&bid),
                "the model's own ring order"
            );
            if incremental {
                self.current = Some((addr, bid, 0));
            } else {
                self.head = self.head.wrapping_add(1);
                self.in_ring.pop_front();
                let n = want.min(self.chunk);
                self.fill(ring, addr, n);
                return (n as i32, recv_flags(bid, false));
            }
        }
        let (addr, bid, filled) = self.current.expect("a buffer being filled");
        let n = want.min(self.chunk - filled as usize);
        self.fill(ring, addr + u64::from(filled), n);
        let filled = filled + n as u32;
        let more = (filled as usize) < self.chunk;
        if more {
            self.current = Some((addr, bid, filled));
        } else {
            self.current = None;
            self.head = self.head.wrapping_add(1);
            self.in_ring.pop_front();
        }
        (n as i32, recv_flags(bid, more))
    }

    fn fill(&mut self, ring: &BufRing, addr: u64, n: usize) {
        let mut data = vec![0; n];
        keyed::fill(self.seq, 0, &mut data);
        self.seq += 1;
        // SAFETY: the model writes only into the buffer it took from the ring and has not
        // completed yet, which no handle covers as long as the queue never posts a held chunk;
        // `sync` and the callers' byte checks are there to catch the queue breaking that.
        unsafe { ring.sim_kernel_write(addr, &data) };
    }
}
