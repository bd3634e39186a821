//! Helpers shared by the kernel tests.
#![allow(dead_code)]

pub(crate) mod zcrx;

/// A deterministic byte stream (xorshift64*), so a receiver can check every byte it gets
/// against what the sender wrote without keeping a copy.
pub(crate) struct Pattern {
    state: u64,
    word: [u8; 8],
    pos: usize,
}

impl Pattern {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: seed | 1,
            word: [0; 8],
            pos: 8,
        }
    }

    fn next_word(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.pos == 8 {
                self.word = self.next_word().to_le_bytes();
                self.pos = 0;
            }
            *b = self.word[self.pos];
            self.pos += 1;
        }
    }

    /// Compares `got` with the next `got.len()` bytes of the stream; returns the index of the
    /// first mismatch.
    pub(crate) fn check(&mut self, got: &[u8]) -> Option<usize> {
        let mut expect = vec![0u8; got.len()];
        self.fill(&mut expect);
        got.iter().zip(&expect).position(|(a, b)| a != b)
    }
}

/// FNV-1a, 64 bit: an order-sensitive checksum of a stream.
#[derive(Clone, Copy)]
pub(crate) struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Whether `addr` lies inside any mapping of this process. (Adjacent anonymous mappings are
/// merged in /proc/self/maps, so a mapping's start is not a reliable key.)
pub(crate) fn is_mapped(addr: u64) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().any(|l| {
        let range = l.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        (a..b).contains(&addr)
    })
}
