//! Memory mappings: anonymous, or of a memfd that another process can map too.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{self, MapFlags, ProtFlags};

/// 2 MiB, the only huge page size this crate asks for.
pub(crate) const HUGE_PAGE_SIZE: usize = 2 << 20;

/// An owned, page-aligned, read-write anonymous mapping. Unmapped on drop unless leaked.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it between threads is fine.
// Concurrent access is governed by the owners (the kernel writes only into chunks it owns, and
// handles read only chunks the application owns).
unsafe impl Send for Mmap {}
// SAFETY: as above; `&Mmap` exposes only the pointer and length, never a reference to the bytes.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes (a multiple of the page size, or of 2 MiB with `huge`), zero-filled.
    pub(crate) fn anonymous(len: usize, huge: bool, populate: bool) -> io::Result<Self> {
        assert!(len > 0, "zero-length mapping");
        let mut flags = MapFlags::PRIVATE;
        if huge {
            // MAP_HUGETLB | MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT(26)).
            flags |= MapFlags::HUGETLB | MapFlags::from_bits_retain(21 << 26);
        }
        if populate {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: an anonymous mapping at an address of the kernel's choosing aliases nothing.
        let ptr = unsafe {
            mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
            )
        }?;
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    /// Maps `len` bytes (a multiple of the page size) of a new memfd, shared, zero-filled: the
    /// same pages can be mapped by another process that gets the fd.
    pub(crate) fn shared_memfd(name: &str, len: usize) -> io::Result<(Self, OwnedFd)> {
        assert!(len > 0, "zero-length mapping");
        let fd = memfd_create(name, MemfdFlags::CLOEXEC)?;
        ftruncate(&fd, len as u64)?;
        let map = Self::map_shared(&fd, len)?;
        Ok((map, fd))
    }

    /// Maps the first `len` bytes of the file `fd` (a memfd), shared, read-write.
    pub(crate) fn map_shared(fd: impl AsFd, len: usize) -> io::Result<Self> {
        assert!(len > 0, "zero-length mapping");
        // SAFETY: a new mapping at an address of the kernel's choosing aliases no Rust object;
        // other mappings of the same file (another process's) are shared memory whose access
        // the owners coordinate (the refill ring's single producer, chunk ownership).
        let ptr = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        }?;
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Locks the pages in memory (counts against RLIMIT_MEMLOCK unless CAP_IPC_LOCK).
    pub(crate) fn lock(&self) -> io::Result<()> {
        // SAFETY: the range is exactly this live mapping.
        unsafe { mm::mlock(self.ptr.as_ptr().cast(), self.len) }.map_err(Into::into)
    }

    /// Writes one byte per page so every page is faulted in now rather than on first receive.
    pub(crate) fn prefault(&self) {
        let page = rustix::param::page_size();
        let mut off = 0;
        while off < self.len {
            // SAFETY: `off < len`, inside the mapping; volatile so the write is not elided. The
            // mapping is fresh and unshared, so nothing else reads or writes it concurrently.
            unsafe { self.ptr.as_ptr().add(off).write_volatile(0) };
            off += page;
        }
    }

    /// Gives up the mapping without unmapping it. Used when the kernel may still write into it
    /// (a buffer ring that could not be unregistered): leaking memory is safe, unmapping is not.
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: the range is exactly the mapping this value owns, and every user of the memory
        // (handles, kernel registrations) has ended by the time the owner drops it; owners that
        // cannot guarantee that call `leak` instead.
        let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Copies `data` to `base + offset`, inside a live mapping of `len` bytes at `base`: the
/// simulated kernel's copy, or a simulated NIC's DMA (feature `sim`).
///
/// # Panics
/// If the range leaves the mapping.
///
/// # Safety
/// `base..base + len` is a live writable mapping for the whole call, and nothing reads or
/// writes the range meanwhile: no [`RxBuf`](crate::RxBuf) may cover any byte of it, and none
/// may be made over it during the call.
#[cfg(feature = "sim")]
pub(crate) unsafe fn copy_into(base: *mut u8, len: usize, offset: u64, data: &[u8]) {
    let end = offset
        .checked_add(data.len() as u64)
        .expect("range overflows");
    assert!(end <= len as u64, "write past the end of the area");
    // SAFETY: the range is inside the live mapping (checked above, and the caller vouches for
    // the mapping) and does not overlap `data` (a separate borrow); the caller guarantees that
    // nothing reads it meanwhile.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(offset as usize), data.len()) };
}
