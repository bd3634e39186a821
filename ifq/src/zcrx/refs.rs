//! The kernel's user references, per buffer: pure accounting, no syscalls.
//!
//! Every zcrx completion is a slice of one kernel buffer (a page on 6.18) and takes one "user
//! reference" on it; the kernel reuses the buffer only after one refill entry per reference came
//! back. A chunk of the area is one or more whole buffers, and goes back when every handle into
//! it has dropped: then each of its buffers is owed as many refill entries as it has references.
//! [`PageRefs`] counts them and gives them back in order, stopping (and resuming at the next
//! flush) where the refill ring is full.

use crate::chunk::ChunkId;

/// References the kernel gave per buffer, and their sum per chunk.
#[derive(Debug)]
pub(super) struct PageRefs {
    bufs_per_chunk: usize,
    /// Per kernel buffer: references no refill entry returned yet.
    refs: Vec<u32>,
    /// Per chunk: the sum of `refs` over its buffers (a chunk that owes nothing is skipped
    /// without walking its buffers).
    owed: Vec<u32>,
}

impl PageRefs {
    /// `chunks` chunks of `bufs_per_chunk` kernel buffers each, none referenced.
    pub(super) fn new(chunks: usize, bufs_per_chunk: usize) -> Self {
        Self {
            bufs_per_chunk,
            refs: vec![0; chunks * bufs_per_chunk],
            owed: vec![0; chunks],
        }
    }

    /// Kernel buffers in all.
    #[cfg(test)]
    fn buffers(&self) -> usize {
        self.refs.len()
    }

    /// A completion in buffer `buf` took a reference. The caller checked `buf` against the area
    /// (a kernel value, bounds-checked before it gets here).
    #[inline]
    pub(super) fn took(&mut self, buf: usize) {
        let chunk = buf / self.bufs_per_chunk;
        // Bounded: the kernel gives a buffer out again only after all its references came back,
        // so one buffer collects at most one reference per byte.
        self.refs[buf] = self.refs[buf].saturating_add(1);
        self.owed[chunk] = self.owed[chunk].saturating_add(1);
    }

    /// Refill entries `chunk` still owes.
    #[cfg(test)]
    fn owed(&self, chunk: ChunkId) -> u32 {
        self.owed[chunk as usize]
    }

    /// Gives back the references `chunk` owes, one `give(buf)` call per reference, buffer by
    /// buffer. `give` returns false when there is no room; the walk stops there, what was given
    /// stays given, and the next call resumes. True once the chunk owes nothing.
    #[inline]
    pub(super) fn give_back(
        &mut self,
        chunk: ChunkId,
        mut give: impl FnMut(usize) -> bool,
    ) -> bool {
        let c = chunk as usize;
        let first = c * self.bufs_per_chunk;
        for buf in first..first + self.bufs_per_chunk {
            if self.owed[c] == 0 {
                break;
            }
            while self.refs[buf] > 0 {
                if !give(buf) {
                    return false;
                }
                self.refs[buf] -= 1;
                self.owed[c] -= 1;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_entry_per_reference_in_buffer_order() {
        let mut r = PageRefs::new(2, 4);
        assert_eq!(r.buffers(), 8);
        for buf in [5, 4, 5, 7] {
            r.took(buf);
        }
        assert_eq!((r.owed(0), r.owed(1)), (0, 4));
        let mut given = Vec::new();
        assert!(r.give_back(1, |b| {
            given.push(b);
            true
        }));
        assert_eq!(given, [4, 5, 5, 7]);
        assert_eq!(r.owed(1), 0);
        // Nothing owed: nothing given.
        assert!(r.give_back(1, |_| panic!("owes nothing")));
    }

    #[test]
    fn a_full_ring_stops_the_walk_and_the_next_resumes() {
        let mut r = PageRefs::new(1, 2);
        for buf in [0, 0, 1] {
            r.took(buf);
        }
        let mut room = 2;
        let mut given = Vec::new();
        assert!(!r.give_back(0, |b| {
            if room == 0 {
                return false;
            }
            room -= 1;
            given.push(b);
            true
        }));
        assert_eq!((given.as_slice(), r.owed(0)), ([0, 0].as_slice(), 1));
        assert!(r.give_back(0, |b| {
            given.push(b);
            true
        }));
        assert_eq!(given, [0, 0, 1]);
    }

    proptest! {
        /// Over any sequence of references taken and walks cut short by a full ring, every
        /// reference goes back exactly once, to its own buffer, and `owed` is always the sum.
        #[test]
        fn every_reference_goes_back_once(
            takes in proptest::collection::vec(0usize..16, 0..200),
            rooms in proptest::collection::vec(0usize..8, 1..40),
        ) {
            let (chunks, per) = (4, 4);
            let mut r = PageRefs::new(chunks, per);
            let mut expect = vec![0u32; chunks * per];
            for &b in &takes {
                r.took(b);
                expect[b] += 1;
            }
            let mut back = vec![0u32; chunks * per];
            for (i, &room) in rooms.iter().cycle().take(rooms.len() * 8).enumerate() {
                let chunk = (i % chunks) as ChunkId;
                let mut left = room;
                r.give_back(chunk, |b| {
                    if left == 0 {
                        return false;
                    }
                    left -= 1;
                    back[b] += 1;
                    true
                });
                for c in 0..chunks {
                    let sum: u32 = (c * per..(c + 1) * per).map(|b| expect[b] - back[b]).sum();
                    prop_assert_eq!(r.owed(c as ChunkId), sum);
                }
            }
            for c in 0..chunks {
                let all = r.give_back(c as ChunkId, |b| {
                    back[b] += 1;
                    true
                });
                prop_assert!(all);
            }
            prop_assert_eq!(back, expect);
        }
    }
}
