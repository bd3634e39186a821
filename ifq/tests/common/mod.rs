//! Helpers shared by the kernel tests.
#![allow(dead_code)]

pub(crate) mod zcrx;

/// A deterministic byte stream, so a receiver can check every byte it gets against what the
/// sender wrote without keeping a copy.
#[allow(unused_imports)]
pub(crate) use test_kit::Pattern;

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
