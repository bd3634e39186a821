//! The byte streams the tests send and check, written once.
//!
//! Two, because they answer different needs:
//!
//! - [`Pattern`]: the documented xorshift64* stream, read in order from its start. It is what the
//!   `sink` example verifies (`--verify SEED`) and writes (`--generate`), so any sender in any
//!   language can replay it; [`PatternVerifier`] checks a stream piece by piece and says where
//!   it first differed.
//! - [`keyed`]: a stream keyed by position (splitmix64 of the word index), so that any byte can
//!   be written or checked at any offset without the bytes before it: the fault suite checks
//!   gigabytes in place, out of order, at random offsets.

/// The deterministic byte stream the sink verifies: xorshift64* (Vigna), 8 bytes per step.
///
/// The state starts at `seed` (or `0x9E37_79B9_7F4A_7C15` if `seed` is 0, since xorshift has no
/// zero state). Each step updates the state with `x ^= x >> 12; x ^= x << 25; x ^= x >> 27` and
/// emits `x * 0x2545_F491_4F6C_DD1D` (wrapping) as 8 little-endian bytes. Every connection
/// starts the stream afresh from the same seed, so any sender can replay it (`sink --generate`
/// writes it to stdout).
#[derive(Debug, Clone)]
pub struct Pattern {
    x: u64,
    word: [u8; 8],
    /// Bytes of `word` already used (8: none left).
    used: usize,
}

impl Pattern {
    /// The stream for `seed`, at its start.
    pub fn new(seed: u64) -> Self {
        Self {
            x: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> u64 {
        let mut x = self.x;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.x = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fills `out` with the next bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        while self.used < 8 && i < out.len() {
            out[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let mut words = out[i..].chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_word().to_le_bytes());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            self.word = self.next_word().to_le_bytes();
            rest.copy_from_slice(&self.word[..rest.len()]);
            self.used = rest.len();
        }
    }

    /// The first `len` bytes of the stream for `seed`.
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        Self::new(seed).fill(&mut v);
        v
    }

    /// Compares `data` with the next bytes of the stream (consuming them); returns the index
    /// in `data` of the first byte that differs.
    pub fn check(&mut self, data: &[u8]) -> Option<usize> {
        let mut i = 0;
        while self.used < 8 && i < data.len() {
            if data[i] != self.word[self.used] {
                return Some(i);
            }
            self.used += 1;
            i += 1;
        }
        let mut words = data[i..].chunks_exact(8);
        for w in &mut words {
            let want = self.next_word().to_le_bytes();
            if w != want {
                let j = w.iter().zip(want).position(|(a, b)| *a != b).unwrap_or(0);
                return Some(i + j);
            }
            i += 8;
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            self.word = self.next_word().to_le_bytes();
            if let Some(j) = rest.iter().zip(self.word).position(|(a, b)| *a != b) {
                return Some(i + j);
            }
            self.used = rest.len();
        }
        None
    }
}

/// Where a stream first differed from the [`Pattern`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Offset of the first wrong byte from the start of the connection's stream.
    pub offset: u64,
    /// The byte the pattern has there.
    pub expected: u8,
    /// The byte that arrived.
    pub got: u8,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "byte {} is {:#04x}, the pattern has {:#04x}",
            self.offset, self.got, self.expected
        )
    }
}

/// Checks a stream, piece by piece, against the [`Pattern`] for a seed. After the first
/// mismatch it stops comparing (the rest is almost certainly shifted) and remembers where it was.
#[derive(Debug, Clone)]
pub struct PatternVerifier {
    pattern: Pattern,
    offset: u64,
    mismatch: Option<Mismatch>,
}

impl PatternVerifier {
    /// A verifier at the start of the stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            pattern: Pattern::new(seed),
            offset: 0,
            mismatch: None,
        }
    }

    /// Checks the next piece of the stream. Returns `false` once any byte so far was wrong.
    pub fn update(&mut self, data: &[u8]) -> bool {
        if self.mismatch.is_none() {
            let before = self.pattern.clone();
            if let Some(i) = self.pattern.check(data) {
                let mut expected = [0u8; 1];
                let mut p = before;
                let mut skip = vec![0u8; i];
                p.fill(&mut skip);
                p.fill(&mut expected);
                self.mismatch = Some(Mismatch {
                    offset: self.offset + i as u64,
                    expected: expected[0],
                    got: data[i],
                });
            }
        }
        self.offset += data.len() as u64;
        self.mismatch.is_none()
    }

    /// Bytes seen so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The first mismatch, if any.
    pub fn mismatch(&self) -> Option<Mismatch> {
        self.mismatch
    }
}

/// The position-keyed stream: byte `off` of stream `seed` is computed from `(seed, off)` alone.
pub mod keyed {
    /// The 8-byte word `i` of stream `seed` (splitmix64 of the position): any byte of a stream can
    /// be checked without keeping the stream, so gigabytes can be verified in order, in place.
    #[inline]
    pub fn word(seed: u64, i: u64) -> u64 {
        let mut z = seed
            .wrapping_mul(0xA24B_AED4_963E_E407)
            .wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Writes bytes `off..off + out.len()` of stream `seed` into `out`.
    pub fn fill(seed: u64, off: u64, out: &mut [u8]) {
        let mut pos = off;
        let mut i = 0;
        while i < out.len() {
            let w = word(seed, pos / 8).to_le_bytes();
            let k = (pos % 8) as usize;
            let n = (8 - k).min(out.len() - i);
            out[i..i + n].copy_from_slice(&w[k..k + n]);
            i += n;
            pos += n as u64;
        }
    }

    /// Checks that `data` is bytes `off..off + data.len()` of stream `seed`; returns the index of
    /// the first wrong byte.
    pub fn check(seed: u64, off: u64, data: &[u8]) -> Option<usize> {
        let mut pos = off;
        let mut i = 0;
        // Unaligned head.
        while i < data.len() && pos % 8 != 0 {
            if data[i] != word(seed, pos / 8).to_le_bytes()[(pos % 8) as usize] {
                return Some(i);
            }
            i += 1;
            pos += 1;
        }
        // Whole words.
        while data.len() - i >= 8 {
            let got = u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
            if got != word(seed, pos / 8) {
                let want = word(seed, pos / 8).to_le_bytes();
                let k = (0..8).find(|&k| data[i + k] != want[k]).unwrap();
                return Some(i + k);
            }
            i += 8;
            pos += 8;
        }
        // Tail.
        while i < data.len() {
            if data[i] != word(seed, pos / 8).to_le_bytes()[(pos % 8) as usize] {
                return Some(i);
            }
            i += 1;
            pos += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_and_the_whole_agree() {
        let whole = Pattern::bytes(42, 1000);
        let mut p = Pattern::new(42);
        let mut pieces = Vec::new();
        for n in [1, 7, 8, 9, 100, 875] {
            let mut v = vec![0; n];
            p.fill(&mut v);
            pieces.extend(v);
        }
        assert_eq!(pieces, whole);
        let mut v = PatternVerifier::new(42);
        assert!(v.update(&whole[..13]) && v.update(&whole[13..]));
        let mut bad = whole.clone();
        bad[500] ^= 1;
        let mut v = PatternVerifier::new(42);
        assert!(!v.update(&bad));
        assert_eq!(v.mismatch().unwrap().offset, 500);
    }

    #[test]
    fn keyed_at_any_offset() {
        let mut whole = vec![0; 100];
        keyed::fill(7, 0, &mut whole);
        let mut part = vec![0; 37];
        keyed::fill(7, 13, &mut part);
        assert_eq!(part, whole[13..50]);
        assert_eq!(keyed::check(7, 13, &part), None);
        part[5] ^= 0xff;
        assert_eq!(keyed::check(7, 13, &part), Some(5));
    }
}
