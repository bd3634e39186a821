//! How many chunks the buffer ring keeps posted: a controller the driver feeds once per loop
//! turn with what the kernel took since the last flush.
//!
//! The rule and why it is needed are documented once, on `Builder::adaptive_depth`; the
//! measurements behind it are in `docs/benchmarks.md` ("Choices behind the defaults"). What
//! that page does not say: a receive that finds the ring empty now and then is cheap (the data
//! waits in its socket one turn), many turn after turn are not, hence two growth triggers (a
//! turn's starved receives many for what it took, or a sustained average over [`SUSTAIN`]
//! turns). The shrink probe runs whatever the turns took, because backlogged sockets fill
//! whatever is posted: a full turn does not show that the depth is needed, and without the
//! probe a ring that grew at the start, when every socket holds data, stayed at the whole pool.

/// Turns per shrink decision.
const WINDOW: u32 = 256;
/// Turns over which sustained starvation is judged.
const SUSTAIN: u32 = 16;
/// Starved receives per turn, on average over [`SUSTAIN`] turns, that make the ring grow.
const SUSTAINED_STARVED: u32 = 4;

/// The depth a pool of `chunks` chunks of `chunk` bytes starts at and never goes below: 64
/// chunks, or 2 MiB of smaller ones. Small enough to stay in the CPU's cache, and twice the
/// default coalescing batch (32 completions): a coalescing wait asks for at most half of what
/// is posted, so a shallower floor would also halve the batch.
pub(crate) fn floor(chunk: u64, chunks: u64) -> u32 {
    (2u64 << 20)
        .div_ceil(chunk.max(1))
        .max(64)
        .min(chunks)
        .min(u64::from(u32::MAX)) as u32
}

/// A change of depth [`Depth::turn`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Doubled: receives went without.
    Raised(u32),
    /// Down a quarter (a probe) or to twice the largest turn.
    Cut(u32),
}

/// The ring depth controller (pure logic: no ring, no syscalls).
#[derive(Debug, Clone)]
pub(crate) struct Depth {
    floor: u32,
    ceiling: u32,
    depth: u32,
    /// Turns seen in the current window.
    turns: u32,
    /// Most chunks one turn took in the current window.
    peak: u32,
    /// Starved receives in the current window.
    starved_in_window: u32,
    /// Turns, and starved receives, since the last sustained-starvation decision.
    sustain_turns: u32,
    sustain_starved: u32,
}

impl Depth {
    /// A controller between `floor` and `ceiling` chunks (`floor` is clamped into
    /// `1..=ceiling`), starting at the floor.
    pub(crate) fn new(floor: u32, ceiling: u32) -> Self {
        let ceiling = ceiling.max(1);
        let floor = floor.clamp(1, ceiling);
        Self {
            floor,
            ceiling,
            depth: floor,
            turns: 0,
            peak: 0,
            starved_in_window: 0,
            sustain_turns: 0,
            sustain_starved: 0,
        }
    }

    /// The depth to post.
    #[cfg(test)]
    pub(crate) fn get(&self) -> u32 {
        self.depth
    }

    /// One turn: the kernel took `taken` chunks since the last flush, and `starved` receives
    /// ended for lack of buffers. Returns the new depth when it changes.
    pub(crate) fn turn(&mut self, taken: u32, starved: u32) -> Option<Change> {
        self.sustain_turns += 1;
        self.sustain_starved = self.sustain_starved.saturating_add(starved);
        let sustained = self.sustain_starved >= SUSTAINED_STARVED * SUSTAIN;
        if sustained || self.sustain_turns >= SUSTAIN {
            self.sustain_turns = 0;
            self.sustain_starved = 0;
        }
        if sustained || starved.saturating_mul(2) > taken {
            self.turns = 0;
            self.peak = 0;
            self.starved_in_window = 0;
            let grown = self.depth.saturating_mul(2).min(self.ceiling);
            return self.set(grown).map(Change::Raised);
        }
        self.peak = self.peak.max(taken);
        self.starved_in_window = self.starved_in_window.saturating_add(starved);
        self.turns += 1;
        if self.turns < WINDOW {
            return None;
        }
        let peak = std::mem::take(&mut self.peak);
        let starved_in_window = std::mem::take(&mut self.starved_in_window);
        self.turns = 0;
        let cut = self.depth - self.depth / 4;
        let shrunk = if starved_in_window == 0 {
            // Nothing went without: probe lower, whatever the turns took.
            cut
        } else if peak.saturating_mul(2) < self.depth {
            cut.max(peak.saturating_mul(2))
        } else {
            return None;
        };
        self.set(shrunk.max(self.floor)).map(Change::Cut)
    }

    fn set(&mut self, depth: u32) -> Option<u32> {
        (depth != self.depth).then(|| {
            self.depth = depth;
            depth
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs `n` turns that each took `taken` chunks with `starved` starved receives.
    fn turns(d: &mut Depth, n: u32, taken: u32, starved: u32) {
        for _ in 0..n {
            d.turn(taken, starved);
        }
    }

    #[test]
    fn starts_at_the_floor_and_doubles_on_heavy_starvation_up_to_the_ceiling() {
        let mut d = Depth::new(32, 256);
        assert_eq!(d.get(), 32);
        assert_eq!(
            d.turn(32, 17),
            Some(Change::Raised(64)),
            "17 starved for 32 taken"
        );
        assert_eq!(d.turn(64, 33), Some(Change::Raised(128)));
        assert_eq!(d.turn(128, 65), Some(Change::Raised(256)));
        assert_eq!(d.turn(256, 200), None, "at the ceiling");
        assert_eq!(d.get(), 256);
    }

    #[test]
    fn a_few_starved_receives_now_and_then_do_not_grow_it() {
        let mut d = Depth::new(32, 256);
        // 8 flows through 32 chunks: a starved receive or two most turns.
        for i in 0..10 * WINDOW {
            assert_eq!(d.turn(32, 1 + i % 2), None);
        }
        assert_eq!(
            d.turn(32, 16),
            None,
            "16 starved for 32 taken is not yet one in two"
        );
        assert_eq!(d.get(), 32);
    }

    #[test]
    fn sustained_starvation_grows_it() {
        let mut d = Depth::new(32, 256);
        // 64 flows through 32 chunks: a dozen starved receives every turn, each turn taking
        // the whole ring.
        let mut grown_at = None;
        for turn in 0..SUSTAIN {
            if d.turn(32, 12).is_some() {
                grown_at = Some(turn);
                break;
            }
        }
        assert_eq!(grown_at, Some(SUSTAINED_STARVED * SUSTAIN / 12));
        assert_eq!(d.get(), 64);
        // Three a turn is below the sustained rate: no more growth.
        turns(&mut d, 4 * SUSTAIN, 64, 3);
        assert_eq!(d.get(), 64);
    }

    #[test]
    fn a_window_without_starvation_probes_lower_whatever_the_turns_took() {
        let mut d = Depth::new(32, 256);
        for _ in 0..3 {
            d.turn(0, 1);
        }
        assert_eq!(d.get(), 256);
        // Backlogged sockets fill whatever is posted, so a full turn does not prove the depth
        // is needed; only receives that went without do.
        turns(&mut d, WINDOW - 1, 256, 0);
        assert_eq!(d.turn(256, 0), Some(Change::Cut(192)));
        turns(&mut d, WINDOW, 192, 0);
        assert_eq!(d.get(), 144);
        turns(&mut d, 8 * WINDOW, 100, 0);
        assert_eq!(d.get(), 32, "down to the floor, not below");
    }

    #[test]
    fn with_some_starvation_it_shrinks_only_to_twice_the_peak() {
        let mut d = Depth::new(32, 256);
        for _ in 0..3 {
            d.turn(0, 1);
        }
        // One starved receive a window, far too few to grow it.
        let window = |d: &mut Depth, taken| {
            d.turn(taken, 1);
            turns(d, WINDOW - 1, taken, 0);
        };
        window(&mut d, 10);
        assert_eq!(d.get(), 192, "a quarter at a time");
        window(&mut d, 60);
        assert_eq!(d.get(), 144);
        window(&mut d, 65);
        assert_eq!(d.get(), 130, "not below twice the window's peak");
        window(&mut d, 65);
        assert_eq!(d.get(), 130, "twice the peak is where it holds");
        window(&mut d, 70);
        assert_eq!(d.get(), 130, "a larger peak does not grow it either");
    }

    #[test]
    fn a_ceiling_below_the_floor_wins() {
        let d = Depth::new(32, 8);
        assert_eq!(d.get(), 8);
        assert_eq!(Depth::new(0, 0).get(), 1);
    }

    #[test]
    fn the_floor_is_64_chunks_or_two_mebibytes() {
        assert_eq!(floor(32 * 1024, 256), 64);
        assert_eq!(floor(4096, 4096), 512);
        assert_eq!(floor(4096, 100), 100, "not more than the pool");
        assert_eq!(floor(0, 8), 8);
    }

    proptest! {
        /// Whatever the turns look like, the depth stays within its bounds, grows when a turn's
        /// starved receives are one for every two chunks it took (unless at the ceiling), comes
        /// down at most a quarter at a time, and never below twice what a turn of the window
        /// took if any receive of the window starved.
        #[test]
        fn bounded_and_responsive(
            floor in 1u32..64,
            ceiling in 1u32..1024,
            script in proptest::collection::vec((0u32..1024, 0u32..70), 0..3000),
        ) {
            let mut d = Depth::new(floor, ceiling);
            let floor = floor.min(ceiling);
            let mut peak = 0;
            let mut window_starved = 0;
            for (taken, starved) in script {
                let before = d.get();
                let changed = d.turn(taken, starved);
                let after = d.get();
                prop_assert!(after >= floor && after <= ceiling);
                match changed {
                    None => prop_assert_eq!(after, before),
                    Some(Change::Raised(n)) => prop_assert!(n == after && after > before),
                    Some(Change::Cut(n)) => prop_assert!(n == after && after < before),
                }
                if starved * 2 > taken {
                    prop_assert!(after > before || after == ceiling);
                }
                match changed {
                    Some(Change::Raised(_)) => {
                        peak = 0;
                        window_starved = 0;
                    }
                    Some(Change::Cut(_)) => {
                        peak = peak.max(taken);
                        window_starved += starved;
                        prop_assert!(
                            window_starved == 0 || after >= 2 * peak || after == floor,
                            "cut to {} below twice the peak {} with {} starved",
                            after, peak, window_starved
                        );
                        prop_assert!(after >= before - before / 4);
                        peak = 0;
                        window_starved = 0;
                    }
                    None if d.turns == 0 => {
                        peak = 0;
                        window_starved = 0;
                    }
                    None => {
                        peak = peak.max(taken);
                        window_starved += starved;
                    }
                }
            }
        }

        /// A steady load of `load` chunks a turn, where a turn that finds too few posted has
        /// `starved` receives go without: the depth covers the load nearly all the time. It
        /// probes lower after each window without starvation, so it may starve once per probe,
        /// at most once a window, and never stays more than a quarter below the load.
        #[test]
        fn settles_on_a_steady_load(load in 1u32..256, starved in 1u32..64) {
            let mut d = Depth::new(32, 256);
            let mut starved_late = 0;
            for turn in 0..40 * WINDOW {
                let short = load > d.get();
                d.turn(load.min(d.get()), if short { starved.max(load) } else { 0 });
                if turn > 20 * WINDOW {
                    prop_assert!(d.get() >= load - load / 4);
                    prop_assert!(d.get() <= (2 * load).max(32).next_power_of_two().min(256));
                    starved_late += u32::from(short);
                }
            }
            prop_assert!(starved_late <= 20, "{} starved turns in 20 windows", starved_late);
        }
    }
}
