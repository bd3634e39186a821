//! Producer side of the zcrx refill queue (pure index logic, no memory access).
//!
//! The refill queue is a single-producer single-consumer ring of `entries` 16-byte refill entries
//! (`struct io_uring_zcrx_rqe`) in memory shared with the kernel, with two free-running `u32`
//! indices: the tail, written by us with a store-release after the entries it covers, and the
//! head, written by the kernel with a store-release after it has read entries. Entry `i` lives in
//! slot `i & (entries - 1)`.
//!
//! The kernel consumer (`io_zcrx_ring_refill` in `io_uring/zcrx.c`) reads
//! `min(tail - cached_head, entries)` entries from its cached head, in batches of at most 64 (the
//! page pool's refill size), and silently skips an entry whose area id or padding is wrong, whose
//! offset is past the area, or whose buffer holds no user reference (a repeated return). It only
//! runs when the page pool needs buffers, so returned entries may sit in the ring for a while.
//!
//! [`ZcrxRefill`] tracks our tail, the tail last published and the last kernel head it saw, and
//! never hands out a slot the kernel may still read. A head value that cannot be right (behind the
//! last one seen, or past the published tail) is ignored, so a corrupted head word can stall the
//! producer but never make it overwrite an unconsumed entry.

use crate::completion::ZCRX_OFFSET_MASK;

/// The value of a refill entry's `off` field that returns the buffer at `chunk_offset` (a byte
/// offset in the area; only the low 48 bits are used) of the area whose token the kernel wrote
/// into `rq_area_token` at registration (`area_id << 48`).
#[inline]
pub fn rqe_off(chunk_offset: u64, area_token: u64) -> u64 {
    (chunk_offset & ZCRX_OFFSET_MASK) | area_token
}

/// Index bookkeeping for a zcrx refill queue of `entries` slots. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ZcrxRefill {
    mask: u32,
    entries: u32,
    /// Next entry to write (free-running).
    tail: u32,
    /// The tail the kernel has been shown.
    published: u32,
    /// The last plausible kernel head seen.
    head: u32,
}

impl ZcrxRefill {
    /// A producer for a ring of `entries` slots whose head and tail both start at 0 (as they do
    /// in a freshly zeroed refill region).
    ///
    /// # Panics
    /// If `entries` is not a power of two.
    pub fn new(entries: u32) -> Self {
        Self::starting_at(entries, 0)
    }

    /// A producer whose head and tail both start at `index` (tests use this to start next to the
    /// `u32` wrap-around).
    ///
    /// # Panics
    /// If `entries` is not a power of two.
    pub fn starting_at(entries: u32, index: u32) -> Self {
        assert!(
            entries.is_power_of_two(),
            "refill queue size {entries} is not a power of two"
        );
        Self {
            mask: entries - 1,
            entries,
            tail: index,
            published: index,
            head: index,
        }
    }

    /// A producer taking over a ring whose tail word reads `tail` and head word `head` (a
    /// queue imported from another ring: everything up to `tail` is published). `None` if the
    /// two cannot both be right (more than `entries` apart).
    ///
    /// # Panics
    /// If `entries` is not a power of two.
    pub fn resume(entries: u32, head: u32, tail: u32) -> Option<Self> {
        let mut this = Self::starting_at(entries, tail);
        if tail.wrapping_sub(head) > entries {
            return None;
        }
        this.head = head;
        Some(this)
    }

    /// Slots in the ring.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Our tail (the index of the next entry to write).
    pub fn tail(&self) -> u32 {
        self.tail
    }

    /// The last kernel head accepted.
    #[inline]
    pub fn head(&self) -> u32 {
        self.head
    }

    /// Entries written but not yet published.
    pub fn pending(&self) -> u32 {
        self.tail.wrapping_sub(self.published)
    }

    /// Entries written (published or not) that the kernel has not consumed, as far as we know.
    pub fn in_flight(&self) -> u32 {
        self.tail.wrapping_sub(self.head)
    }

    /// Records a kernel head (read with load-acquire). Returns false, and keeps the previous one,
    /// if `head` is not between the previous head and the published tail: the kernel only ever
    /// moves its head forward and never past the tail it was shown.
    #[inline]
    pub fn observe(&mut self, head: u32) -> bool {
        let moved = head.wrapping_sub(self.head);
        if moved > self.published.wrapping_sub(self.head) {
            return false;
        }
        self.head = head;
        true
    }

    /// Free slots given the kernel head `head` (see [`observe`](Self::observe)).
    pub fn space(&mut self, head: u32) -> u32 {
        self.observe(head);
        self.entries - self.in_flight()
    }

    /// Reserves the next slot; the caller writes the entry at the returned index (in
    /// `0..entries`). `None` when every slot holds an entry the kernel may not have read yet.
    #[inline]
    pub fn push(&mut self) -> Option<u32> {
        if self.in_flight() >= self.entries {
            return None;
        }
        let slot = self.tail & self.mask;
        self.tail = self.tail.wrapping_add(1);
        Some(slot)
    }

    /// Returns the tail to store (with release ordering) if entries were written since the last
    /// publish.
    #[inline]
    pub fn publish(&mut self) -> Option<u32> {
        if self.tail == self.published {
            return None;
        }
        self.published = self.tail;
        Some(self.tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The kernel consumer as `io_zcrx_ring_refill` implements it: reads entries from its cached
    /// head up to the tail it loads (at most `entries` of them), in batches of at most 64, skips
    /// entries it cannot use, and publishes its head after each batch.
    struct KernelModel {
        entries: u32,
        cached_head: u32,
        /// The head word in shared memory.
        head_word: u32,
        slots: Vec<Option<u64>>,
        seen: Vec<u64>,
    }

    impl KernelModel {
        fn new(entries: u32, start: u32) -> Self {
            Self {
                entries,
                cached_head: start,
                head_word: start,
                slots: vec![None; entries as usize],
                seen: Vec::new(),
            }
        }

        fn refill(&mut self, tail_word: u32, want: u32) {
            let available = tail_word.wrapping_sub(self.cached_head).min(self.entries);
            let n = available.min(want).min(64);
            for _ in 0..n {
                let slot = (self.cached_head & (self.entries - 1)) as usize;
                self.cached_head = self.cached_head.wrapping_add(1);
                // Taking the value models "read exactly once": a second read of the same slot
                // without a new write would find nothing.
                let v = self.slots[slot]
                    .take()
                    .expect("kernel read a slot that was never written");
                self.seen.push(v);
            }
            self.head_word = self.cached_head;
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8),
        Publish,
        Kernel(u32),
        BogusHead(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..40).prop_map(Op::Push),
            2 => Just(Op::Publish),
            3 => (1u32..200).prop_map(Op::Kernel),
            1 => any::<u32>().prop_map(Op::BogusHead),
        ]
    }

    fn start() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0u32), u32::MAX - 300..=u32::MAX, any::<u32>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Every pushed entry is seen by the kernel exactly once, in push order; no unconsumed
        /// slot is ever overwritten; correct across the u32 wrap and when full.
        #[test]
        fn kernel_sees_every_entry_once_in_order(
            log2 in 0u32..8,
            start in start(),
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let entries = 1u32 << log2;
            let mut p = ZcrxRefill::starting_at(entries, start);
            let mut k = KernelModel::new(entries, start);
            let mut tail_word = start;
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Push(n) => {
                        for _ in 0..n {
                            let free = p.space(k.head_word);
                            match p.push() {
                                Some(slot) => {
                                    prop_assert!(free > 0);
                                    prop_assert!(slot < entries);
                                    prop_assert!(k.slots[slot as usize].is_none(),
                                        "overwrote an entry the kernel has not read");
                                    k.slots[slot as usize] = Some(next);
                                    next += 1;
                                }
                                None => {
                                    prop_assert_eq!(free, 0);
                                    prop_assert_eq!(p.in_flight(), entries);
                                    break;
                                }
                            }
                        }
                    }
                    Op::Publish => {
                        if let Some(t) = p.publish() {
                            tail_word = t;
                        }
                        prop_assert_eq!(p.pending(), 0);
                    }
                    Op::Kernel(want) => k.refill(tail_word, want),
                    Op::BogusHead(h) => {
                        // A head outside [last head, published tail] must be ignored. First let
                        // the producer catch up with the real head.
                        prop_assert!(p.observe(k.head_word));
                        let before = p.head();
                        let plausible = h.wrapping_sub(before) <= tail_word.wrapping_sub(before);
                        prop_assert_eq!(p.observe(h), plausible);
                        if plausible {
                            // It is plausible, so make the kernel agree (as if it had consumed up
                            // to there): skip its slots.
                            while k.cached_head != h {
                                k.refill(h, 1);
                            }
                        } else {
                            prop_assert_eq!(p.head(), before);
                        }
                    }
                }
                prop_assert!(p.in_flight() <= entries);
                prop_assert!(p.pending() <= p.in_flight());
            }
            // Drain: publish and let the kernel consume everything.
            if let Some(t) = p.publish() {
                tail_word = t;
            }
            while k.cached_head != tail_word {
                k.refill(tail_word, 64);
            }
            let expected: Vec<u64> = (0..next).collect();
            prop_assert_eq!(&k.seen, &expected, "every entry once, in order");
            prop_assert_eq!(p.space(k.head_word), entries);
        }
    }

    #[test]
    fn full_ring_refuses_until_the_head_moves() {
        let mut p = ZcrxRefill::starting_at(4, u32::MAX - 1);
        for _ in 0..4 {
            assert!(p.push().is_some());
        }
        assert_eq!(p.push(), None);
        // Unpublished entries cannot have been consumed: a head past the published tail is bogus.
        assert!(!p.observe((u32::MAX - 1).wrapping_add(2)));
        assert_eq!(p.space((u32::MAX - 1).wrapping_add(2)), 0);
        let tail = p.publish().unwrap();
        assert_eq!(tail, (u32::MAX - 1).wrapping_add(4));
        assert_eq!(p.space((u32::MAX - 1).wrapping_add(2)), 2);
        // Index u32::MAX - 1 + 4 lands in slot 2 again: the two slots the kernel freed.
        assert_eq!(p.push(), Some(2));
        assert_eq!(p.push(), Some(3));
        assert_eq!(p.push(), None);
    }

    #[test]
    fn slots_wrap_with_the_index() {
        let mut p = ZcrxRefill::starting_at(8, u32::MAX - 2);
        let slots: Vec<u32> = (0..8).map(|_| p.push().unwrap()).collect();
        assert_eq!(slots, vec![5, 6, 7, 0, 1, 2, 3, 4]);
        assert_eq!(p.publish(), Some(5));
        assert_eq!(p.publish(), None);
    }

    #[test]
    fn rqe_off_keeps_offset_and_token() {
        assert_eq!(rqe_off(0x1234_5000, 0), 0x1234_5000);
        assert_eq!(rqe_off(0x1000, 3 << 48), (3 << 48) | 0x1000);
        // Area-id bits of the offset (e.g. copied from a CQE) are replaced by the token.
        assert_eq!(rqe_off((7 << 48) | 0x2000, 1 << 48), (1 << 48) | 0x2000);
    }
}
