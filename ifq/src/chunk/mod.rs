//! Chunk ownership as a pure state machine (no syscalls, no atomics).
//!
//! Every chunk of an area is in exactly one state:
//!
//! ```text
//!            take_from_pool             deliver (a completion names it)
//!   Pool ───────────────────► Kernel ─────────────────────────────► User{deliveries, kernel_busy}
//!    ▲                          ▲  ▲                                   │   ▲ deliver again (zcrx,
//!    │ reclaim (teardown)       │  └──────── publish ◄── Refill{n} ◄───┘   │ or incremental mode
//!    └──────────────────────────┘             (the ring tail moved)  release (last handle gone, │ while kernel_busy)
//!                                                                      kernel done)        ─────┘
//! ```
//!
//! `pool + kernel + user + refill == total` at every step. Bytes delivered into a chunk are
//! charged to the owner (a connection id) that received them until the chunk is released, so the
//! runtime can stop reading a connection that holds more than its share of the area.
//!
//! The table never panics on a bad transition: a completion is kernel input, and a chunk id or
//! state it names may be wrong; the caller gets an [`AccountingError`].

use std::fmt;

mod owners;

use owners::OwnerMap;

/// Index of a chunk in its area.
pub type ChunkId = u32;

/// Who received a chunk's bytes: typically a connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(pub u32);

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "owner {}", self.0)
    }
}

/// Where [`ChunkTable::release`] puts a chunk whose handles are all gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseTo {
    /// The refill state: it waits for its refill entries to be written and the tail published
    /// ([`ChunkTable::publish`]). For a backend whose queue can be full (zcrx's refill ring).
    Refill,
    /// Straight back to the kernel: its ring entry is written at once (a buffer ring with room).
    Kernel,
    /// The free pool, on top ([`take_from_pool`](ChunkTable::take_from_pool) hands it out next,
    /// while its lines are still in cache). For a backend that keeps fewer chunks posted than it
    /// has.
    Pool,
}

/// Where one chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Free, not posted to the kernel.
    Pool,
    /// Posted: the kernel (NIC, TCP stack, buffer ring) may write into it.
    Kernel,
    /// Handed to the application by `deliveries` completions. With `kernel_busy` the kernel also
    /// still writes into the rest of the chunk (incremental buffer consumption).
    User {
        /// Completions that pointed into this chunk since it left the kernel.
        deliveries: u32,
        /// The kernel keeps filling the chunk (`IORING_CQE_F_BUF_MORE`).
        kernel_busy: bool,
    },
    /// Every handle is gone; waiting to be published back to the kernel with `entries` refill
    /// entries (zcrx wants one per delivery; a buffer ring one per chunk).
    Refill {
        /// Refill entries to write.
        entries: u32,
    },
}

impl ChunkState {
    /// The state's name, without its counts: `pool`, `kernel`, `user` or `refill`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pool => "pool",
            Self::Kernel => "kernel",
            Self::User { .. } => "user",
            Self::Refill { .. } => "refill",
        }
    }
}

/// When a completion may name a chunk that the application already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// Never: one completion per posted chunk (plain buffer ring).
    Never,
    /// Only while the kernel said it keeps filling the chunk (incremental buffer ring).
    WhileKernelBusy,
    /// Always, also while the chunk waits in the refill queue (zcrx: several skb fragments, and
    /// so several completions, may share one chunk; each holds a kernel user reference).
    Always,
}

/// A rejected transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountingError {
    /// The chunk id is past the end of the area.
    #[error("chunk {chunk} does not exist (the area has {total} chunks)")]
    NoSuchChunk {
        /// The id named.
        chunk: ChunkId,
        /// Chunks in the area.
        total: u32,
    },
    /// The chunk is not in a state that allows the transition.
    #[error("chunk {chunk} is in the {} state and cannot {action}", from.name())]
    BadTransition {
        /// The chunk.
        chunk: ChunkId,
        /// Its current state.
        from: ChunkState,
        /// What was attempted.
        action: &'static str,
    },
}

/// Bytes and chunks held by one owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnerStats {
    /// Chunks this owner has bytes in.
    pub chunks: u32,
    /// Bytes delivered to this owner in chunks not yet released.
    pub bytes: u64,
}

/// Chunks per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Free chunks.
    pub pool: u32,
    /// Chunks posted to the kernel.
    pub kernel: u32,
    /// Chunks the application holds.
    pub user: u32,
    /// Chunks waiting to be published back.
    pub refill: u32,
}

impl Counts {
    /// The sum, which always equals the area's chunk count.
    pub fn total(&self) -> u32 {
        self.pool + self.kernel + self.user + self.refill
    }
}

/// Who holds what, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Chunks per state.
    pub counts: Counts,
    /// Bytes delivered and not yet released, over all owners.
    pub held_bytes: u64,
    /// Per owner, sorted by id; owners holding nothing are left out.
    pub owners: Vec<(OwnerId, OwnerStats)>,
}

impl Snapshot {
    /// What `owner` holds (nothing if it is not in [`owners`](Self::owners)).
    pub fn owner(&self, owner: OwnerId) -> OwnerStats {
        owner_in(&self.owners, owner)
    }
}

/// `owner`'s entry in a list sorted by id, or nothing held.
pub(crate) fn owner_in(owners: &[(OwnerId, OwnerStats)], owner: OwnerId) -> OwnerStats {
    owners
        .binary_search_by_key(&owner, |(o, _)| *o)
        .map(|i| owners[i].1)
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Holders {
    None,
    One(OwnerId, u64),
    /// Boxed so that the common cases keep a chunk's slot small (zcrx only, rare).
    Many(Box<[(OwnerId, u64)]>),
}

/// Everything the table knows about one chunk, in one place: a completion and a return each
/// touch one slot.
#[derive(Debug, Clone)]
struct Slot {
    state: ChunkState,
    holders: Holders,
}

/// What a [`ChunkTable::deliver`] found, for the caller's handle counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The chunk had no handle before this completion: it came from the kernel or the refill
    /// queue.
    pub first: bool,
    /// The kernel was still filling the chunk before this completion.
    pub was_kernel_busy: bool,
}

/// The ownership table of one area. See the [module docs](self).
pub struct ChunkTable {
    slots: Vec<Slot>,
    free: Vec<ChunkId>,
    counts: Counts,
    owners: OwnerMap,
    held_bytes: u64,
    limit: Option<u64>,
    redelivery: Redelivery,
}

impl fmt::Debug for ChunkTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkTable")
            .field("counts", &self.counts)
            .field("held_bytes", &self.held_bytes)
            .field("owners", &self.owners.len())
            .finish()
    }
}

impl ChunkTable {
    /// A table of `total` chunks, all in the pool.
    pub fn new(total: u32, redelivery: Redelivery) -> Self {
        Self {
            slots: vec![
                Slot {
                    state: ChunkState::Pool,
                    holders: Holders::None,
                };
                total as usize
            ],
            // Reversed so chunk 0 is taken first.
            free: (0..total).rev().collect(),
            counts: Counts {
                pool: total,
                ..Counts::default()
            },
            owners: OwnerMap::new(total),
            held_bytes: 0,
            limit: None,
            redelivery,
        }
    }

    /// Chunks in the area.
    pub fn total(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Chunks per state.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The state of one chunk.
    #[inline]
    pub fn state(&self, chunk: ChunkId) -> Result<ChunkState, AccountingError> {
        self.slots
            .get(chunk as usize)
            .map(|s| s.state)
            .ok_or(AccountingError::NoSuchChunk {
                chunk,
                total: self.total(),
            })
    }

    /// Sets (or clears) the most bytes one owner may hold before [`over_limit`](Self::over_limit)
    /// says so.
    pub fn set_owner_limit(&mut self, bytes: Option<u64>) {
        self.limit = bytes;
    }

    /// The per-owner limit, if any.
    pub fn owner_limit(&self) -> Option<u64> {
        self.limit
    }

    /// What one owner holds.
    pub fn owner(&self, owner: OwnerId) -> OwnerStats {
        self.owners.get(&owner).copied().unwrap_or_default()
    }

    /// Whether `owner` holds at least its limit. The runtime stops reading such a connection
    /// until it returns buffers.
    pub fn over_limit(&self, owner: OwnerId) -> bool {
        self.limit.is_some_and(|l| self.owner(owner).bytes >= l)
    }

    /// Bytes held by the application over all owners.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Who holds what.
    pub fn snapshot(&self) -> Snapshot {
        let mut owners: Vec<_> = self.owners.iter().collect();
        owners.sort_unstable_by_key(|(o, _)| *o);
        Snapshot {
            counts: self.counts,
            held_bytes: self.held_bytes,
            owners,
        }
    }

    #[inline]
    fn slot(&self, chunk: ChunkId) -> Result<usize, AccountingError> {
        if (chunk as usize) < self.slots.len() {
            Ok(chunk as usize)
        } else {
            Err(AccountingError::NoSuchChunk {
                chunk,
                total: self.total(),
            })
        }
    }

    fn bad(&self, chunk: ChunkId, action: &'static str) -> AccountingError {
        AccountingError::BadTransition {
            chunk,
            from: self.slots[chunk as usize].state,
            action,
        }
    }

    /// Takes a free chunk, the one freed last, and marks it posted to the kernel. `None` when
    /// the pool is empty.
    #[inline]
    pub fn take_from_pool(&mut self) -> Option<ChunkId> {
        let chunk = self.free.pop()?;
        debug_assert_eq!(self.slots[chunk as usize].state, ChunkState::Pool);
        self.slots[chunk as usize].state = ChunkState::Kernel;
        self.counts.pool -= 1;
        self.counts.kernel += 1;
        Some(chunk)
    }

    /// A completion handed `len` bytes of `chunk` to `owner`. `kernel_keeps` is true when the
    /// kernel goes on filling the same chunk (incremental mode). Says what the chunk was before.
    #[inline(always)]
    pub fn deliver(
        &mut self,
        chunk: ChunkId,
        owner: OwnerId,
        len: u32,
        kernel_keeps: bool,
    ) -> Result<Delivery, AccountingError> {
        let i = self.slot(chunk)?;
        let mut found = Delivery {
            first: true,
            was_kernel_busy: false,
        };
        let deliveries = match self.slots[i].state {
            ChunkState::Kernel => {
                self.counts.kernel -= 1;
                self.counts.user += 1;
                1
            }
            ChunkState::User {
                deliveries,
                kernel_busy,
            } => {
                let allowed = match self.redelivery {
                    Redelivery::Never => false,
                    Redelivery::WhileKernelBusy => kernel_busy,
                    Redelivery::Always => true,
                };
                if !allowed {
                    return Err(self.bad(chunk, "be delivered again"));
                }
                found = Delivery {
                    first: false,
                    was_kernel_busy: kernel_busy,
                };
                deliveries
                    .checked_add(1)
                    .ok_or_else(|| self.bad(chunk, "count more deliveries"))?
            }
            ChunkState::Refill { entries } if self.redelivery == Redelivery::Always => {
                self.counts.refill -= 1;
                self.counts.user += 1;
                entries
                    .checked_add(1)
                    .ok_or_else(|| self.bad(chunk, "count more deliveries"))?
            }
            _ => return Err(self.bad(chunk, "be delivered")),
        };
        self.slots[i].state = ChunkState::User {
            deliveries,
            kernel_busy: kernel_keeps,
        };
        self.charge(i, owner, u64::from(len));
        Ok(found)
    }

    #[inline(always)]
    fn charge(&mut self, i: usize, owner: OwnerId, bytes: u64) {
        let new_holder = match &mut self.slots[i].holders {
            h @ Holders::None => {
                *h = Holders::One(owner, bytes);
                true
            }
            Holders::One(o, b) if *o == owner => {
                *b += bytes;
                false
            }
            h @ Holders::One(..) => {
                let Holders::One(o, b) = *h else {
                    unreachable!()
                };
                *h = Holders::Many(Box::new([(o, b), (owner, bytes)]));
                true
            }
            Holders::Many(v) => match v.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, b)) => {
                    *b += bytes;
                    false
                }
                None => {
                    let mut grown = std::mem::take(v).into_vec();
                    grown.push((owner, bytes));
                    *v = grown.into_boxed_slice();
                    true
                }
            },
        };
        let stats = self.owners.entry(owner);
        stats.bytes += bytes;
        stats.chunks += u32::from(new_holder);
        self.held_bytes += bytes;
    }

    #[inline(always)]
    fn discharge(&mut self, i: usize) {
        let holders = std::mem::replace(&mut self.slots[i].holders, Holders::None);
        let mut undo = |owners: &mut OwnerMap, owner: OwnerId, bytes: u64| {
            if let Some(s) = owners.get_mut(&owner) {
                s.bytes -= bytes;
                s.chunks -= 1;
                if s.chunks == 0 {
                    debug_assert_eq!(s.bytes, 0);
                    owners.remove(&owner);
                }
            }
            self.held_bytes -= bytes;
        };
        match holders {
            Holders::None => {}
            Holders::One(o, b) => undo(&mut self.owners, o, b),
            Holders::Many(v) => v
                .into_vec()
                .into_iter()
                .for_each(|(o, b)| undo(&mut self.owners, o, b)),
        }
    }

    /// The kernel stopped filling a chunk it was filling incrementally.
    pub fn kernel_done(&mut self, chunk: ChunkId) -> Result<(), AccountingError> {
        let i = self.slot(chunk)?;
        match &mut self.slots[i].state {
            ChunkState::User {
                kernel_busy: busy @ true,
                ..
            } => {
                *busy = false;
                Ok(())
            }
            _ => Err(self.bad(chunk, "be finished by the kernel")),
        }
    }

    /// Every handle into `chunk` is gone and the kernel no longer fills it: it leaves the user
    /// state for `to`. Returns how many refill entries it needs (one per delivery), which a
    /// backend writes now ([`ReleaseTo::Kernel`]) or before [`publish`](Self::publish)
    /// ([`ReleaseTo::Refill`]).
    #[inline(always)]
    pub fn release(&mut self, chunk: ChunkId, to: ReleaseTo) -> Result<u32, AccountingError> {
        let i = self.slot(chunk)?;
        let ChunkState::User {
            deliveries,
            kernel_busy: false,
        } = self.slots[i].state
        else {
            let action = match to {
                ReleaseTo::Refill => "be released to refill",
                ReleaseTo::Kernel => "be released to the kernel",
                ReleaseTo::Pool => "be released to the pool",
            };
            return Err(self.bad(chunk, action));
        };
        self.counts.user -= 1;
        match to {
            ReleaseTo::Refill => {
                self.slots[i].state = ChunkState::Refill {
                    entries: deliveries,
                };
                self.counts.refill += 1;
            }
            ReleaseTo::Kernel => {
                self.slots[i].state = ChunkState::Kernel;
                self.counts.kernel += 1;
            }
            ReleaseTo::Pool => {
                self.slots[i].state = ChunkState::Pool;
                self.counts.pool += 1;
                self.free.push(chunk);
            }
        }
        self.discharge(i);
        Ok(deliveries)
    }

    /// The chunk's refill entries were written and the ring tail published: the kernel owns it.
    /// Returns the number of entries it had.
    #[inline]
    pub fn publish(&mut self, chunk: ChunkId) -> Result<u32, AccountingError> {
        let i = self.slot(chunk)?;
        match self.slots[i].state {
            ChunkState::Refill { entries } => {
                self.slots[i].state = ChunkState::Kernel;
                self.counts.refill -= 1;
                self.counts.kernel += 1;
                Ok(entries)
            }
            _ => Err(self.bad(chunk, "be published")),
        }
    }

    /// Takes a chunk back from the kernel or the refill queue into the pool (after the kernel
    /// gave up its registration).
    pub fn reclaim(&mut self, chunk: ChunkId) -> Result<(), AccountingError> {
        let i = self.slot(chunk)?;
        match self.slots[i].state {
            ChunkState::Kernel => self.counts.kernel -= 1,
            ChunkState::Refill { .. } => self.counts.refill -= 1,
            _ => return Err(self.bad(chunk, "be reclaimed")),
        }
        self.slots[i].state = ChunkState::Pool;
        self.counts.pool += 1;
        self.free.push(chunk);
        Ok(())
    }

    /// Checks every invariant (feature `sim`, for tests; O(total)).
    #[cfg(any(test, feature = "sim"))]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut c = Counts::default();
        for s in &self.slots {
            match s.state {
                ChunkState::Pool => c.pool += 1,
                ChunkState::Kernel => c.kernel += 1,
                ChunkState::User { .. } => c.user += 1,
                ChunkState::Refill { .. } => c.refill += 1,
            }
        }
        if c != self.counts {
            return Err(format!("counts {:?} != recount {:?}", self.counts, c));
        }
        if c.total() != self.total() {
            return Err(format!(
                "counts sum {} != total {}",
                c.total(),
                self.total()
            ));
        }
        if self.free.len() != c.pool as usize {
            return Err(format!("free list {} != pool {}", self.free.len(), c.pool));
        }
        let mut bytes = 0;
        let mut per: std::collections::HashMap<OwnerId, OwnerStats> = Default::default();
        for (i, slot) in self.slots.iter().enumerate() {
            let list: Vec<(OwnerId, u64)> = match &slot.holders {
                Holders::None => vec![],
                Holders::One(o, b) => vec![(*o, *b)],
                Holders::Many(v) => v.to_vec(),
            };
            if !list.is_empty() && !matches!(slot.state, ChunkState::User { .. }) {
                return Err(format!("chunk {i} has holders but is {:?}", slot.state));
            }
            for (o, b) in list {
                bytes += b;
                let s = per.entry(o).or_default();
                s.bytes += b;
                s.chunks += 1;
            }
        }
        if bytes != self.held_bytes {
            return Err(format!("held {} != recount {}", self.held_bytes, bytes));
        }
        let mine: std::collections::HashMap<_, _> = self.owners.iter().collect();
        if mine != per {
            return Err(format!("owner stats {mine:?} != recount {per:?}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
