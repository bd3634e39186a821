//! The memory of a provided buffer ring: the entries the kernel takes buffers from, the tail that
//! publishes them, and the registration that hands that memory to the kernel.
//!
//! [`PbufRing`] owns all three and the producer that says which slot is next, so every write into
//! the ring lands at a slot its own producer reserved: in bounds (the slot is masked to the ring)
//! and not yet published (the kernel reads a slot only after a later tail store). What an entry
//! names (which chunk) is the chunk table's business: the kernel believes it, so the caller posts
//! only chunks that no handle points into.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use rustix::io_uring::{io_uring_register, IoringRegisterOp};

use crate::refill::pbuf::PbufProducer;
use crate::sys::mmap::Mmap;
use crate::sys::ring::SharedU16;

/// Size of one `struct io_uring_buf` entry: `{addr: u64, len: u32, bid: u16, resv: u16}`.
const ENTRY_SIZE: usize = 16;

/// `struct io_uring_buf_reg` (40 bytes), the argument of (un)registering a buffer ring.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BufReg {
    pub(crate) ring_addr: u64,
    pub(crate) ring_entries: u32,
    pub(crate) bgid: u16,
    pub(crate) flags: u16,
    pub(crate) resv: [u64; 3],
}

/// A provided buffer ring's entry array, tail and producer, and its registration.
///
/// The memory is unmapped only when the kernel is known not to use it: never registered, or
/// unregistered successfully. A failed unregister, or a drop while still registered whose
/// unregister fails, leaks it instead.
#[derive(Debug)]
pub(crate) struct PbufRing {
    /// The entry array; `None` once leaked.
    mem: Option<Mmap>,
    /// `mem`'s first byte, kept apart so that a push needs no `Option` check.
    base: NonNull<u8>,
    tail: SharedU16,
    producer: PbufProducer,
    /// The io_uring the ring is registered on (a duplicate of its fd) and its buffer group id,
    /// until it is unregistered.
    registration: Option<(OwnedFd, u16)>,
}

// SAFETY: the pointers point into `mem`, which this value owns (or has leaked, which keeps them
// valid forever); the ring is written only through `&mut self`.
unsafe impl Send for PbufRing {}

impl PbufRing {
    /// Bytes of ring memory for `entries` entries: whole pages.
    pub(crate) fn map_len(entries: u32) -> usize {
        let page = rustix::param::page_size();
        (entries as usize * ENTRY_SIZE).div_ceil(page) * page
    }

    /// Maps a zeroed, prefaulted ring of `entries` entries (a power of two, at most 32768),
    /// registered nowhere yet.
    pub(crate) fn new(entries: u32) -> io::Result<Self> {
        let mem = Mmap::anonymous(Self::map_len(entries), false, true)?;
        let base = NonNull::new(mem.as_ptr()).expect("a mapping is never at address 0");
        // SAFETY: the tail is the u16 at byte 14 of entry 0 (the `resv` field that
        // `io_uring_buf_ring` overlays), 2-byte aligned in the page-aligned mapping, which lives
        // as long as `self` (or is leaked); we and the kernel access it only atomically.
        let tail = unsafe { SharedU16::new(base.as_ptr().add(14)) };
        Ok(Self {
            mem: Some(mem),
            base,
            tail,
            producer: PbufProducer::new(entries),
            registration: None,
        })
    }

    /// Registers the ring as buffer group `bgid` with `flags` (`IOU_PBUF_RING_*`) on the io_uring
    /// `ring_fd` (a duplicate of the caller's), which the ring keeps for the unregister.
    pub(crate) fn register(&mut self, ring_fd: OwnedFd, bgid: u16, flags: u16) -> io::Result<()> {
        assert!(self.registration.is_none(), "registered twice");
        let mem = self.mem.as_ref().expect("ring memory present until leaked");
        let arg = BufReg {
            ring_addr: mem.as_ptr() as u64,
            ring_entries: self.producer.entries(),
            bgid,
            flags,
            resv: [0; 3],
        };
        // SAFETY: `arg` is a valid `io_uring_buf_reg` for the duration of the call, describing a
        // live, page-aligned mapping of `ring_entries` entries that `self` owns. From here on the
        // kernel reads it until it is unregistered, and `self` never unmaps it before that: a
        // failed unregister, here or on drop, leaks it.
        unsafe {
            io_uring_register(
                &ring_fd,
                IoringRegisterOp::RegisterPbufRing,
                (&arg as *const BufReg).cast(),
                1,
            )
        }?;
        self.registration = Some((ring_fd, bgid));
        Ok(())
    }

    /// Unregisters the ring (nothing to do if it is not registered). On failure the memory is
    /// leaked, never unmapped, as the kernel may still read it.
    pub(crate) fn unregister(&mut self) -> io::Result<()> {
        let Some((ring_fd, bgid)) = self.registration.take() else {
            return Ok(());
        };
        let arg = BufReg {
            bgid,
            ..BufReg::default()
        };
        // SAFETY: `arg` is a valid `io_uring_buf_reg` for the duration of the call; the kernel
        // only reads it.
        let answer = unsafe {
            io_uring_register(
                ring_fd.as_fd(),
                IoringRegisterOp::UnregisterPbufRing,
                (&arg as *const BufReg).cast(),
                1,
            )
        };
        if answer.is_err() {
            if let Some(mem) = self.mem.take() {
                mem.leak();
            }
        }
        answer.map(drop).map_err(Into::into)
    }

    /// Whether the ring memory is still mapped (false once leaked).
    pub(crate) fn is_mapped(&self) -> bool {
        self.mem.is_some()
    }

    /// Writes the entry `{addr, len, bid}` at the producer's next slot, to be published by the
    /// next [`publish`](Self::publish). False, and nothing written, if every slot holds an entry
    /// the kernel has not consumed.
    #[inline]
    pub(crate) fn push(&mut self, addr: u64, len: u32, bid: u16) -> bool {
        let Some(slot) = self.producer.push() else {
            return false;
        };
        // SAFETY: `slot` is masked to the ring's `entries` slots, so the entry's 14 bytes lie in
        // the mapping (`map_len` covers every entry), 8-byte aligned; the mapping is alive (or
        // leaked) while `self` is. The kernel does not read this slot until a later tail store:
        // the producer hands out only slots the kernel has consumed or never seen. Ring memory
        // is never borrowed as a Rust reference, so the writes alias nothing. The last two bytes
        // (for entry 0: the tail) are left alone.
        unsafe {
            let entry = self.base.as_ptr().add(usize::from(slot) * ENTRY_SIZE);
            entry.cast::<u64>().write_volatile(addr);
            entry.add(8).cast::<u32>().write_volatile(len);
            entry.add(12).cast::<u16>().write_volatile(bid);
        }
        true
    }

    /// Publishes every entry pushed since the last publish with one release store of the tail.
    /// False if there was none.
    #[inline]
    pub(crate) fn publish(&mut self) -> bool {
        match self.producer.publish() {
            Some(tail) => {
                self.tail.store_release(tail);
                true
            }
            None => false,
        }
    }

    /// The kernel finished one posted buffer (see [`PbufProducer::consumed`]).
    #[inline]
    pub(crate) fn consumed(&mut self) -> bool {
        self.producer.consumed()
    }

    /// Entries posted and not yet consumed.
    #[inline]
    pub(crate) fn in_ring(&self) -> u32 {
        self.producer.in_ring()
    }

    /// The kernel's side, for simulations: entry `slot` (masked) as `(addr, len, bid)`.
    #[cfg(feature = "sim")]
    pub(crate) fn kernel_read(&self, slot: u16) -> (u64, u32, u16) {
        let slot = usize::from(slot) & (self.producer.entries() as usize - 1);
        // SAFETY: in bounds and aligned as in `push`; only `&mut self` writes the ring, so no
        // write of ours is concurrent with this read (a kernel's would be volatile against
        // volatile: an old or a new value).
        unsafe {
            let entry = self.base.as_ptr().add(slot * ENTRY_SIZE);
            (
                entry.cast::<u64>().read_volatile(),
                entry.add(8).cast::<u32>().read_volatile(),
                entry.add(12).cast::<u16>().read_volatile(),
            )
        }
    }

    /// The kernel's side, for simulations: the published tail (acquire).
    #[cfg(feature = "sim")]
    pub(crate) fn kernel_tail(&self) -> u16 {
        self.tail.load_acquire()
    }
}

impl Drop for PbufRing {
    fn drop(&mut self) {
        // The owner unregisters first; if it did not, do it now, leaking on failure.
        let _ = self.unregister();
    }
}
