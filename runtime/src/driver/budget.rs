//! How the thread's receive pool is shared: the byte budget each capped receive is armed with,
//! what its completions spend of it, and when a receive has taken more than it was promised.
//! Pure logic, like the ring depth controller (`crate::depth`): numbers in, decisions out; the
//! driver (`recv.rs`) reads the pool, applies the decisions and counts them.
//!
//! A receive's budget is the least of
//!
//! - what its connection may still hold: the limit minus what it holds (back-pressure: a
//!   connection at its limit waits until the application drops enough of its buffers);
//! - its fair share: the pool divided by the live connections, at least [`Budgets::new`]'s
//!   `share_floor` (smaller budgets end receives after a handful of chunks, and the re-arms cost
//!   more than the fairness buys: `docs/benchmarks.md`);
//! - what is free and not promised to other armed receives, so that receives never compete for
//!   the same chunks;
//! - and, for a connection that already holds buffers, that minus a reserve (an eighth of the
//!   pool, at least two chunks), which stays for connections holding nothing: one of them (a
//!   proxy's other side, a request/response peer) can always make progress and free the rest.
//!   Without it, connections at their limit could hold the whole pool while the one whose data
//!   would free them starved.
//!
//! Outside incremental mode every completion takes a whole chunk however few bytes it carries,
//! so that is what it spends. The kernel's cap counts bytes, though: with small segments a
//! receive keeps taking chunks after its promise is spent, and [`Budgets::overdrawn`] says when
//! to stop it (its connection at its limit, or holding buffers while the free pool is down to
//! the reserve).

/// Where one connection stands, in bytes: what the rules decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// What the connection keeps out of the pool (whole chunks unless incremental).
    pub(crate) held: u64,
    /// What the pool has free for receives (posted and not yet filled).
    pub(crate) free: u64,
}

/// What [`Budgets::arm`] decides for a receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arm {
    /// Arm it capped at this many bytes (never 0), now promised to it.
    Budget(u32),
    /// No room: wait until buffers come back. `over_limit`: the connection holds its limit
    /// (back-pressure); otherwise the free pool is promised to others, or is the reserve.
    Wait {
        /// The connection holds its limit.
        over_limit: bool,
    },
}

/// The budget rules of one receive pool, and the bytes promised to armed receives.
#[derive(Debug, Clone)]
pub(crate) struct Budgets {
    /// One chunk, in bytes (a page under zcrx).
    chunk: u64,
    /// The whole pool, in bytes.
    pool: u64,
    /// Bytes of the pool that connections already holding buffers may not be promised.
    reserve: u64,
    /// The smallest fair share a receive is armed with, in bytes.
    share_floor: u64,
    /// Most bytes one connection may hold.
    limit: u64,
    /// Completions take only their bytes from the pool (incremental buffer ring).
    incremental: bool,
    /// Bytes promised to armed receives and not yet received.
    committed: u64,
}

impl Budgets {
    /// The rules for a pool of `chunks` chunks of `chunk` bytes, whose connections may hold at
    /// most `limit` bytes each (`None`: no limit), with fair shares of at least `share_floor`
    /// bytes; `incremental`: completions take only their bytes, not whole chunks.
    pub(crate) fn new(
        chunk: u64,
        chunks: u64,
        limit: Option<u64>,
        share_floor: u64,
        incremental: bool,
    ) -> Self {
        Self {
            chunk,
            pool: chunk * chunks,
            reserve: chunk * (chunks / 8).max(2),
            share_floor,
            limit: limit.unwrap_or(u64::MAX),
            incremental,
            committed: 0,
        }
    }

    /// One chunk of the pool, in bytes.
    pub(crate) fn chunk(&self) -> u64 {
        self.chunk
    }

    /// Whether completions take only their bytes from the pool.
    pub(crate) fn incremental(&self) -> bool {
        self.incremental
    }

    /// Whole chunks promised to armed receives and not yet received: the most they may still
    /// deliver.
    pub(crate) fn promised_chunks(&self) -> u64 {
        self.committed / self.chunk
    }

    /// The budget of a receive for a connection standing at `f`, with `live` connections
    /// sharing the pool; a budget is promised to the receive until [`spend`](Self::spend)
    /// releases it.
    pub(crate) fn arm(&mut self, f: Footprint, live: usize) -> Arm {
        let mut room = f.free.saturating_sub(self.committed);
        if f.held > 0 {
            room = room.saturating_sub(self.reserve);
        }
        let share = (self.pool / live.max(1) as u64).max(self.share_floor);
        let budget = self.limit.saturating_sub(f.held).min(room).min(share);
        if budget == 0 {
            return Arm::Wait {
                over_limit: f.held >= self.limit,
            };
        }
        let budget = budget.min(u64::from(u32::MAX));
        self.committed += budget;
        Arm::Budget(budget as u32)
    }

    /// What a completion of `bytes` takes from the pool: a whole chunk, however few bytes it
    /// carries, unless incremental.
    pub(crate) fn taken(&self, bytes: u64) -> u64 {
        if self.incremental || bytes == 0 {
            bytes
        } else {
            bytes.max(self.chunk)
        }
    }

    /// `bytes` arrived on a capped receive that had `left` of its promise (`ended`: the
    /// receive's last completion, which releases the rest). Returns what is left of it.
    pub(crate) fn spend(&mut self, left: u64, bytes: u64, ended: bool) -> u64 {
        let spent = if ended {
            left
        } else {
            self.taken(bytes).min(left)
        };
        self.committed -= spent;
        left - spent
    }

    /// Whether a capped receive that ended with a completion of `bytes`, `left` of its promise
    /// still unspent, ended before its cap: the kernel ends it by itself only once the cap is
    /// spent, and the promise never runs behind the cap, so more than this completion still
    /// promised means the kernel could not post to a full completion queue.
    pub(crate) fn ended_early(&self, left: u64, bytes: u64) -> bool {
        left > self.taken(bytes)
    }

    /// Whether a receive whose promise is spent, and which still receives (the kernel's cap
    /// counts bytes, small segments take whole chunks), must stop: its connection, standing at
    /// `f`, holds its limit, or holds buffers while the free pool is down to the reserve. A
    /// connection holding nothing is left alone.
    pub(crate) fn overdrawn(&self, f: Footprint) -> bool {
        let at_limit = f.held.saturating_add(self.chunk) > self.limit;
        let into_reserve = f.held > 0 && f.free < self.reserve.saturating_add(self.chunk);
        at_limit || into_reserve
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K: u64 = 1024;
    const CHUNK: u64 = 32 * K;

    /// The default pool: 256 chunks of 32 KiB, a quarter of it per connection, fair shares of at
    /// least 16 chunks.
    fn default_pool() -> Budgets {
        Budgets::new(CHUNK, 256, Some(64 * CHUNK), 16 * CHUNK, false)
    }

    fn at(held: u64, free: u64) -> Footprint {
        Footprint { held, free }
    }

    #[test]
    fn a_budget_is_the_least_of_the_limit_the_share_and_the_room() {
        let mut b = default_pool();
        let pool = 256 * CHUNK;
        assert_eq!(b.reserve, 32 * CHUNK, "an eighth of the pool");
        // Alone: the limit (a quarter of the pool) is the least.
        assert_eq!(b.arm(at(0, pool), 1), Arm::Budget((64 * CHUNK) as u32));
        // Holding some: what it may still hold.
        let mut b = default_pool();
        assert_eq!(
            b.arm(at(60 * CHUNK, pool), 1),
            Arm::Budget((4 * CHUNK) as u32)
        );
        // Among 8: its share, a pool's eighth.
        let mut b = default_pool();
        assert_eq!(b.arm(at(0, pool), 8), Arm::Budget((32 * CHUNK) as u32));
        // Among 64: the share's floor, 16 chunks, not 4.
        let mut b = default_pool();
        assert_eq!(b.arm(at(0, pool), 64), Arm::Budget((16 * CHUNK) as u32));
        // Little free: the room.
        let mut b = default_pool();
        assert_eq!(b.arm(at(0, 3 * CHUNK), 1), Arm::Budget((3 * CHUNK) as u32));
    }

    #[test]
    fn promises_never_overlap() {
        let mut b = default_pool();
        let free = 40 * CHUNK;
        let mut promised = 0;
        let mut armed = 0;
        for _ in 0..10 {
            match b.arm(at(0, free), 64) {
                Arm::Budget(n) => {
                    promised += u64::from(n);
                    armed += 1;
                }
                Arm::Wait { over_limit } => {
                    assert!(!over_limit);
                    break;
                }
            }
        }
        assert_eq!(
            armed, 3,
            "16 + 16 + 8 chunks, then nothing is left to promise"
        );
        assert_eq!(promised, free);
        assert_eq!(b.committed, free);
    }

    #[test]
    fn the_reserve_stays_for_connections_that_hold_nothing() {
        let reserve = 32 * CHUNK;
        // Holding buffers, with one chunk beyond the reserve free: that one chunk.
        let mut b = default_pool();
        assert_eq!(
            b.arm(at(CHUNK, reserve + CHUNK), 1),
            Arm::Budget(CHUNK as u32)
        );
        // Down to the reserve: it waits, not for its own limit but for the pool.
        let mut b = default_pool();
        assert_eq!(
            b.arm(at(CHUNK, reserve), 1),
            Arm::Wait { over_limit: false }
        );
        // A connection holding nothing may take the reserve, up to its share.
        assert_eq!(b.arm(at(0, reserve), 2), Arm::Budget(reserve as u32));
    }

    #[test]
    fn connections_that_hold_buffers_cannot_hold_the_whole_pool() {
        // Four connections, whose limits add up to the whole pool, fill it as fast as it lets
        // them; none drops a buffer. Whatever they take, the reserve stays free, and a fifth
        // connection (the one whose data would let the others drop theirs) still gets a budget.
        let mut b = default_pool();
        let pool = 256 * CHUNK;
        let mut held = [0u64; 4];
        loop {
            let mut progress = false;
            for i in 0..4 {
                let free = pool - held.iter().sum::<u64>();
                if let Arm::Budget(n) = b.arm(at(held[i], free), 5) {
                    // The kernel fills the whole budget and the receive ends.
                    held[i] += u64::from(n);
                    b.spend(u64::from(n), u64::from(n), true);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        let free = pool - held.iter().sum::<u64>();
        assert!(free >= b.reserve, "{free} free, reserve {}", b.reserve);
        assert!(matches!(b.arm(at(0, free), 5), Arm::Budget(n) if n > 0));
    }

    #[test]
    fn a_connection_at_its_limit_waits_for_itself() {
        let mut b = default_pool();
        let pool = 256 * CHUNK;
        assert_eq!(
            b.arm(at(64 * CHUNK, pool), 1),
            Arm::Wait { over_limit: true }
        );
        assert_eq!(
            b.arm(at(100 * CHUNK, pool), 1),
            Arm::Wait { over_limit: true }
        );
        assert_eq!(b.committed, 0, "a wait promises nothing");
    }

    #[test]
    fn a_trickle_spends_a_chunk_per_completion() {
        // One byte per segment: each completion takes a whole chunk of the pool.
        let mut b = default_pool();
        let Arm::Budget(n) = b.arm(at(0, 256 * CHUNK), 64) else {
            panic!("no budget");
        };
        let mut left = u64::from(n);
        let mut completions = 0;
        while left > 0 {
            left = b.spend(left, 1, false);
            completions += 1;
        }
        assert_eq!(
            completions, 16,
            "16 chunks promised, 16 one-byte completions"
        );
        assert_eq!(b.committed, 0);
        // Incremental: the bytes only.
        let mut b = Budgets::new(CHUNK, 256, None, 16 * CHUNK, true);
        assert_eq!(b.taken(1), 1);
        assert_eq!(b.arm(at(0, 10), 1), Arm::Budget(10));
        assert_eq!(b.spend(10, 1, false), 9);
        assert_eq!(b.committed, 9);
    }

    #[test]
    fn the_last_completion_releases_the_rest() {
        let mut b = default_pool();
        let Arm::Budget(n) = b.arm(at(0, 256 * CHUNK), 1) else {
            panic!("no budget");
        };
        assert_eq!(b.spend(u64::from(n), CHUNK, false), u64::from(n) - CHUNK);
        assert_eq!(b.spend(u64::from(n) - CHUNK, 0, true), 0);
        assert_eq!(b.committed, 0);
    }

    #[test]
    fn a_receive_that_ends_with_more_promised_than_it_took_ended_early() {
        let b = default_pool();
        assert!(b.ended_early(3 * CHUNK, CHUNK), "a full CQ");
        assert!(!b.ended_early(CHUNK, CHUNK), "the cap");
        assert!(
            !b.ended_early(CHUNK, 100),
            "the cap: a small completion takes a chunk"
        );
        assert!(!b.ended_early(0, CHUNK));
    }

    #[test]
    fn an_overdrawn_receive_stops_at_the_limit_or_the_reserve() {
        let b = default_pool();
        let pool = 256 * CHUNK;
        assert!(!b.overdrawn(at(0, 0)), "holding nothing: left alone");
        assert!(
            !b.overdrawn(at(CHUNK, pool)),
            "plenty free, far from its limit"
        );
        assert!(
            b.overdrawn(at(63 * CHUNK + 1, pool)),
            "no room for another chunk"
        );
        assert!(!b.overdrawn(at(63 * CHUNK, pool)), "room for one more");
        assert!(
            b.overdrawn(at(CHUNK, 32 * CHUNK)),
            "holding, the pool at the reserve"
        );
        assert!(
            !b.overdrawn(at(CHUNK, 33 * CHUNK)),
            "one chunk above the reserve"
        );
    }

    #[test]
    fn budgets_fit_the_kernels_cap() {
        // A 16 GiB pool without a limit: the cap is a u32.
        let mut b = Budgets::new(1 << 20, 1 << 14, None, 16 << 20, false);
        assert_eq!(b.arm(at(0, 1 << 34), 1), Arm::Budget(u32::MAX));
        assert_eq!(b.committed, u64::from(u32::MAX));
    }

    /// A pool of 1..=4096 chunks of 4 KiB..1 MiB, with or without a limit.
    fn pools() -> impl Strategy<Value = Budgets> {
        (
            12u32..=20,
            1u64..=4096,
            proptest::option::of(0u64..=64 << 20),
            0u64..=64,
            any::<bool>(),
        )
            .prop_map(|(shift, chunks, limit, floor_chunks, incremental)| {
                let chunk = 1u64 << shift;
                Budgets::new(chunk, chunks, limit, floor_chunks * chunk, incremental)
            })
    }

    proptest! {
        /// Whatever the pool and the connection, a budget is never 0 and never more than what
        /// the connection may still hold, its fair share, what is free and unpromised, or (for
        /// a connection holding buffers) that less the reserve; it is promised, and nothing
        /// else is. A wait says whether the connection is at its limit, and comes only when one
        /// of those is 0.
        #[test]
        fn every_budget_keeps_every_rule(
            mut b in pools(),
            held in 0u64..=128 << 20,
            free in 0u64..=128 << 20,
            committed in 0u64..=128 << 20,
            live in 0usize..=10_000,
        ) {
            b.committed = committed;
            let share = (b.pool / live.max(1) as u64).max(b.share_floor);
            let mut room = free.saturating_sub(committed);
            if held > 0 {
                room = room.saturating_sub(b.reserve);
            }
            let may_hold = b.limit.saturating_sub(held);
            match b.arm(at(held, free), live) {
                Arm::Budget(n) => {
                    let n = u64::from(n);
                    prop_assert!(n > 0);
                    prop_assert!(n <= may_hold && n <= share && n <= room);
                    prop_assert_eq!(b.committed, committed + n);
                    // Promises stay within the pool that was free when they were made.
                    prop_assert!(b.committed <= free);
                    if held > 0 {
                        prop_assert!(b.committed + b.reserve <= free);
                    }
                }
                Arm::Wait { over_limit } => {
                    prop_assert_eq!(over_limit, held >= b.limit);
                    prop_assert!(may_hold == 0 || share == 0 || room == 0);
                    prop_assert_eq!(b.committed, committed);
                }
            }
        }

        /// A connection that holds nothing, within its limit, waits only if everything free is
        /// promised (or its fair share is 0): the reserve is its to take.
        #[test]
        fn a_connection_holding_nothing_gets_what_is_unpromised(
            mut b in pools(),
            free in 1u64..=128 << 20,
            committed in 0u64..=128 << 20,
            live in 1usize..=64,
        ) {
            b.committed = committed;
            let share = (b.pool / live as u64).max(b.share_floor);
            if b.limit > 0 && share > 0 && free > committed {
                prop_assert!(matches!(b.arm(at(0, free), live), Arm::Budget(_)));
            }
        }

        /// Connections armed, receiving and ending in any order, as the driver does (a receive
        /// is armed only when its connection has none, completions come only to armed ones):
        /// what is promised is always the sum of what the armed receives have left, a
        /// completion never adds to a promise, and the last one releases it.
        #[test]
        fn promises_add_up(
            mut b in pools(),
            script in proptest::collection::vec(
                (0usize..8, 0u64..=64 << 20, 0u64..=256 << 20, 0u64..=2 << 20, any::<bool>()),
                0..400,
            ),
        ) {
            let mut left: [Option<u64>; 8] = [None; 8];
            for (conn, held, free, bytes, ended) in script {
                match left[conn] {
                    None => {
                        if let Arm::Budget(n) = b.arm(at(held, free), 8) {
                            left[conn] = Some(u64::from(n));
                            prop_assert!(b.committed <= free);
                        }
                    }
                    Some(l) => {
                        let after = b.spend(l, bytes, ended);
                        prop_assert!(after <= l);
                        if ended {
                            prop_assert_eq!(after, 0);
                            left[conn] = None;
                        } else {
                            prop_assert_eq!(l - after, b.taken(bytes).min(l));
                            left[conn] = Some(after);
                        }
                    }
                }
                prop_assert_eq!(b.committed, left.iter().flatten().sum::<u64>());
            }
        }

        /// Without incremental mode a completion takes at least a chunk, so a promise of `n`
        /// bytes is spent after at most `n / chunk` completions (rounded up), however few bytes
        /// each carries; incremental, a completion takes exactly its bytes.
        #[test]
        fn a_promise_is_spent_in_chunks(
            b in pools(),
            budget in 1u64..=16 << 20,
            bytes in 1u64..=4096,
        ) {
            let mut b = b;
            b.committed = budget;
            let mut left = budget;
            let mut completions = 0u64;
            while left > 0 {
                left = b.spend(left, bytes, false);
                completions += 1;
            }
            let per = if b.incremental { bytes } else { bytes.max(b.chunk) };
            prop_assert_eq!(completions, budget.div_ceil(per));
            prop_assert_eq!(b.committed, 0);
        }

        /// Holding more, or with less free, an overdrawn receive stays overdrawn; a connection
        /// holding nothing, whose limit fits a chunk, is never stopped.
        #[test]
        fn overdrawn_is_monotone(
            b in pools(),
            held in 0u64..=128 << 20,
            free in 0u64..=128 << 20,
            more in 0u64..=16 << 20,
            less in 0u64..=16 << 20,
        ) {
            if b.overdrawn(at(held, free)) {
                prop_assert!(b.overdrawn(at(held + more, free)));
                prop_assert!(b.overdrawn(at(held, free.saturating_sub(less))));
            }
            if b.limit >= b.chunk {
                prop_assert!(!b.overdrawn(at(0, free)));
            }
        }
    }
}
