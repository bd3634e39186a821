//! Who holds how much: per-owner statistics of the owners that hold chunks, kept without
//! hashing for nearly every owner.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{OwnerId, OwnerStats};

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Per-owner stats of the owners that hold at least one chunk. At most one owner per chunk can
/// hold anything, so a direct-mapped table with a slot per chunk (by `id & mask`) holds nearly all
/// of them without hashing (connection ids are sequential or slab indices); an owner whose slot is
/// taken by another goes to a hash map.
#[derive(Default)]
pub(super) struct OwnerMap {
    /// `(id, stats)`; a slot with `stats.chunks == 0` is free.
    slots: Box<[(OwnerId, OwnerStats)]>,
    mask: u32,
    in_slots: usize,
    spill: HashMap<OwnerId, OwnerStats, BuildHasherDefault<IdHasher>>,
}

impl OwnerMap {
    pub(super) fn new(chunks: u32) -> Self {
        let n = chunks.max(1).next_power_of_two();
        Self {
            slots: vec![(OwnerId(0), OwnerStats::default()); n as usize].into_boxed_slice(),
            mask: n - 1,
            in_slots: 0,
            spill: HashMap::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.in_slots + self.spill.len()
    }

    #[inline]
    fn home(&self, owner: OwnerId) -> usize {
        (owner.0 & self.mask) as usize
    }

    pub(super) fn get(&self, owner: &OwnerId) -> Option<&OwnerStats> {
        let (id, s) = &self.slots[self.home(*owner)];
        if s.chunks > 0 && id == owner {
            Some(s)
        } else if self.spill.is_empty() {
            None
        } else {
            self.spill.get(owner)
        }
    }

    /// The entry of `owner`, created empty if absent; the caller must leave it with
    /// `chunks > 0` (or call [`remove`](Self::remove)).
    #[inline]
    pub(super) fn entry(&mut self, owner: OwnerId) -> &mut OwnerStats {
        let i = self.home(owner);
        let free = self.slots[i].1.chunks == 0;
        if !free && self.slots[i].0 == owner {
            return &mut self.slots[i].1;
        }
        if free && (self.spill.is_empty() || !self.spill.contains_key(&owner)) {
            self.in_slots += 1;
            self.slots[i] = (owner, OwnerStats::default());
            return &mut self.slots[i].1;
        }
        self.spill.entry(owner).or_default()
    }

    #[inline]
    pub(super) fn get_mut(&mut self, owner: &OwnerId) -> Option<&mut OwnerStats> {
        let i = self.home(*owner);
        if self.slots[i].1.chunks > 0 && self.slots[i].0 == *owner {
            Some(&mut self.slots[i].1)
        } else if self.spill.is_empty() {
            None
        } else {
            self.spill.get_mut(owner)
        }
    }

    /// Removes the entry of `owner`, which is present (the caller may have just emptied it). An
    /// owner in the spill map never has its id in its home slot (it went there because another
    /// owner held the slot, and while it is in the map it never claims the slot).
    #[inline]
    pub(super) fn remove(&mut self, owner: &OwnerId) {
        let i = self.home(*owner);
        if self.slots[i].0 == *owner {
            self.slots[i].1 = OwnerStats::default();
            self.in_slots -= 1;
        } else {
            self.spill.remove(owner);
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (OwnerId, OwnerStats)> + '_ {
        self.slots
            .iter()
            .filter(|(_, s)| s.chunks > 0)
            .copied()
            .chain(self.spill.iter().map(|(o, s)| (*o, *s)))
    }
}
