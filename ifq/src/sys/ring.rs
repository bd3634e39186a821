//! Shared ring words: the heads and tails the kernel and this process both touch. The kernel
//! reads our tails with load-acquire and we read its heads with load-acquire; we publish entries
//! with a store-release of the tail. The entry arrays behind them are written by their owners,
//! [`PbufRing`](crate::sys::pbuf::PbufRing) and [`RefillRing`](crate::sys::refill::RefillRing).

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

/// A `u16` or `u32` word in shared ring memory, accessed atomically.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedU32(*const AtomicU32);

impl SharedU32 {
    /// # Safety
    /// `ptr` must be 4-byte aligned, point into a mapping that outlives every use of this value,
    /// and only ever be accessed atomically (by us and by the kernel).
    pub(crate) unsafe fn new(ptr: *mut u8) -> Self {
        debug_assert_eq!(ptr as usize % 4, 0);
        Self(ptr.cast::<AtomicU32>())
    }

    /// Where the word is.
    pub(crate) fn ptr(self) -> *const u8 {
        self.0.cast()
    }

    pub(crate) fn load_acquire(self) -> u32 {
        // SAFETY: per `new`'s contract the pointer is valid, aligned and atomically accessed.
        unsafe { &*self.0 }.load(Ordering::Acquire)
    }

    pub(crate) fn store_release(self, v: u32) {
        // SAFETY: per `new`'s contract.
        unsafe { &*self.0 }.store(v, Ordering::Release)
    }
}

/// The 16-bit tail of a provided buffer ring (it overlays the `resv` field of entry 0).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedU16(*const AtomicU16);

impl SharedU16 {
    /// # Safety
    /// As [`SharedU32::new`], with 2-byte alignment.
    pub(crate) unsafe fn new(ptr: *mut u8) -> Self {
        debug_assert_eq!(ptr as usize % 2, 0);
        Self(ptr.cast::<AtomicU16>())
    }

    pub(crate) fn store_release(self, v: u16) {
        // SAFETY: per `new`'s contract.
        unsafe { &*self.0 }.store(v, Ordering::Release)
    }

    #[cfg(feature = "sim")]
    pub(crate) fn load_acquire(self) -> u16 {
        // SAFETY: per `new`'s contract.
        unsafe { &*self.0 }.load(Ordering::Acquire)
    }
}

// SAFETY: these are pointers to atomics in memory owned by the structure holding them.
unsafe impl Send for SharedU32 {}
// SAFETY: as above.
unsafe impl Send for SharedU16 {}
