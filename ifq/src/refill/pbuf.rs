//! Producer side of a provided buffer ring.

/// Index bookkeeping for a provided buffer ring of `entries` (a power of two, at most 32768)
/// slots. The kernel consumes entries in order from its private head; we know an entry was
/// consumed when a completion says its buffer is finished.
#[derive(Debug, Clone)]
pub struct PbufProducer {
    mask: u16,
    entries: u32,
    /// Next slot to write (wraps at 2^16, like the kernel's).
    tail: u16,
    /// The tail the kernel has seen.
    published: u16,
    /// Entries posted (published or not) and not yet consumed by the kernel.
    in_ring: u32,
}

impl PbufProducer {
    /// A producer for a ring of `entries` slots.
    ///
    /// # Panics
    /// If `entries` is not a power of two in `1..=32768`.
    pub fn new(entries: u32) -> Self {
        assert!(
            entries.is_power_of_two() && entries <= 32768,
            "bad buffer ring size {entries}"
        );
        Self {
            mask: (entries - 1) as u16,
            entries,
            tail: 0,
            published: 0,
            in_ring: 0,
        }
    }

    /// Slots in the ring.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Entries posted and not yet consumed.
    pub fn in_ring(&self) -> u32 {
        self.in_ring
    }

    /// Entries written but not yet published.
    #[inline]
    pub fn pending(&self) -> u16 {
        self.tail.wrapping_sub(self.published)
    }

    /// Reserves the next slot; the caller writes the entry at the returned index. `None` when
    /// every slot holds an unconsumed entry (writing would overwrite one the kernel may still
    /// read).
    #[inline]
    pub fn push(&mut self) -> Option<u16> {
        if self.in_ring >= self.entries {
            return None;
        }
        let slot = self.tail & self.mask;
        self.tail = self.tail.wrapping_add(1);
        self.in_ring += 1;
        Some(slot)
    }

    /// Returns the tail to store (with release ordering) if anything is pending.
    #[inline]
    pub fn publish(&mut self) -> Option<u16> {
        if self.tail == self.published {
            return None;
        }
        self.published = self.tail;
        Some(self.tail)
    }

    /// The kernel finished one posted buffer (a completion without `F_BUF_MORE`).
    /// Returns false (and changes nothing) if no entry was outstanding: a bogus completion.
    #[inline]
    pub fn consumed(&mut self) -> bool {
        let outstanding = self.in_ring - u32::from(self.pending());
        if outstanding == 0 {
            return false;
        }
        self.in_ring -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// The kernel side: reads slots from its head up to the published tail, in order.
    struct KernelModel {
        head: u16,
        slots: Vec<Option<u32>>,
        taken: VecDeque<u32>,
    }

    impl KernelModel {
        fn take(&mut self, tail: u16, mask: u16) -> Option<u32> {
            if self.head == tail {
                return None;
            }
            let id = self.slots[(self.head & mask) as usize]
                .take()
                .expect("slot written");
            self.head = self.head.wrapping_add(1);
            Some(id)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Post,
        Publish,
        KernelTake,
        Complete,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Post),
            Just(Op::Publish),
            Just(Op::KernelTake),
            Just(Op::Complete)
        ]
    }

    proptest! {
        #[test]
        fn never_overwrites_and_delivers_in_order(
            log2 in 0u32..6,
            ops in proptest::collection::vec(op(), 1..3000),
        ) {
            let entries = 1u32 << log2;
            let mut p = PbufProducer::new(entries);
            let mut k = KernelModel { head: 0, slots: vec![None; entries as usize], taken: VecDeque::new() };
            let mut next_id = 0u32;
            let mut posted = VecDeque::new();
            let mut tail = 0u16;
            for op in ops {
                match op {
                    Op::Post => match p.push() {
                        Some(slot) => {
                            prop_assert!(k.slots[slot as usize].is_none(), "overwrote an unconsumed slot");
                            k.slots[slot as usize] = Some(next_id);
                            posted.push_back(next_id);
                            next_id += 1;
                        }
                        None => prop_assert_eq!(p.in_ring(), entries),
                    },
                    Op::Publish => if let Some(t) = p.publish() { tail = t },
                    Op::KernelTake => if let Some(id) = k.take(tail, p.mask) {
                        prop_assert_eq!(Some(id), posted.pop_front(), "kernel sees ids in post order");
                        k.taken.push_back(id);
                    },
                    // A completion only ever follows the kernel taking a buffer.
                    Op::Complete => {
                        if k.taken.pop_front().is_some() {
                            prop_assert!(p.consumed());
                        }
                    }
                }
                prop_assert!(p.in_ring() <= entries);
            }
        }
    }

    #[test]
    fn wraps_past_u16() {
        let mut p = PbufProducer::new(4);
        for _ in 0..70_000 {
            let slot = p.push().unwrap();
            assert!(slot < 4);
            p.publish();
            assert!(p.consumed());
        }
        assert_eq!(p.in_ring(), 0);
        assert!(!p.consumed(), "nothing outstanding");
    }

    #[test]
    fn full_refuses() {
        let mut p = PbufProducer::new(2);
        assert!(p.push().is_some() && p.push().is_some());
        assert_eq!(p.push(), None);
        assert!(
            !p.consumed(),
            "unpublished entries cannot have been consumed"
        );
        p.publish();
        assert!(p.consumed());
        assert!(p.push().is_some());
    }
}
