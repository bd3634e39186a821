//! The receive area: one page-aligned anonymous mapping split into equal power-of-two chunks.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::sys::caps;
use crate::sys::mmap::{Mmap, HUGE_PAGE_SIZE};

/// Smallest chunk size: one page.
pub const MIN_CHUNK_SIZE: usize = 4096;
/// Largest chunk size: 1 MiB.
pub const MAX_CHUNK_SIZE: usize = 1 << 20;
/// Most chunks an area may have (chunk ids are `u32` and the return stack reserves one value).
pub const MAX_CHUNKS: usize = (u32::MAX >> 1) as usize;

/// How to build an [`Area`].
///
/// ```
/// let area = zcrx_ifq::Area::builder().chunk_size(16 * 1024).chunks(64).build()?;
/// assert_eq!(area.len(), 1 << 20);
/// # Ok::<(), zcrx_ifq::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AreaBuilder {
    chunk_size: usize,
    chunks: usize,
    huge_pages: bool,
    prefault: bool,
    lock: bool,
    shared: bool,
}

impl Default for AreaBuilder {
    fn default() -> Self {
        Self {
            chunk_size: 32 * 1024,
            chunks: 256,
            huge_pages: false,
            prefault: false,
            lock: false,
            shared: false,
        }
    }
}

impl AreaBuilder {
    /// Bytes per chunk: a power of two from 4 KiB to 1 MiB (default 32 KiB).
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes;
        self
    }

    /// Number of chunks (default 256).
    pub fn chunks(mut self, n: usize) -> Self {
        self.chunks = n;
        self
    }

    /// Back the area with 2 MiB huge pages (they must be reserved in
    /// `/proc/sys/vm/nr_hugepages`; the area length must be a multiple of 2 MiB).
    pub fn huge_pages(mut self, on: bool) -> Self {
        self.huge_pages = on;
        self
    }

    /// Fault every page in at build time instead of on first receive.
    pub fn prefault(mut self, on: bool) -> Self {
        self.prefault = on;
        self
    }

    /// Lock the area in memory (`mlock`). Fails at build time if the area exceeds
    /// RLIMIT_MEMLOCK and the process lacks CAP_IPC_LOCK. zcrx pins the area anyway and, since
    /// Linux 6.17, counts it against the same limit.
    pub fn lock(mut self, on: bool) -> Self {
        self.lock = on;
        self
    }

    /// Back the area with a memfd mapped shared, so another process can map the same pages: a
    /// zcrx queue that will be [exported](crate::zcrx::ZcrxIfq::export) needs it. Not with huge
    /// pages.
    pub fn shared(mut self, on: bool) -> Self {
        self.shared = on;
        self
    }

    /// Validates the configuration and maps the area.
    pub fn build(self) -> Result<Area> {
        let Self {
            chunk_size,
            chunks,
            huge_pages,
            prefault,
            lock,
            shared,
        } = self;
        if chunks == 0 {
            return Err(Error::ZeroChunks);
        }
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
        {
            return Err(Error::BadChunkSize { chunk_size });
        }
        if chunks > MAX_CHUNKS {
            return Err(Error::TooManyChunks {
                chunks,
                max: MAX_CHUNKS,
                why: "per area",
            });
        }
        let len = chunk_size
            .checked_mul(chunks)
            .filter(|&l| l < (1usize << 47))
            .ok_or(Error::TooManyChunks {
                chunks,
                max: (1usize << 47) / chunk_size,
                why: "for an area below 128 TiB",
            })?;
        if huge_pages && len % HUGE_PAGE_SIZE != 0 {
            return Err(Error::HugePageMisfit { len });
        }
        if lock {
            caps::may_lock(len as u64)
                .map_err(|(needed, limit)| Error::MemlockLimit { needed, limit })?;
        }
        if shared && huge_pages {
            return Err(Error::SharedHugePages);
        }
        let mut shared_fd = None;
        let map = if shared {
            Mmap::shared_memfd("zcrx-area", len).map(|(map, fd)| {
                shared_fd = Some(fd);
                map
            })
        } else {
            Mmap::anonymous(len, huge_pages, prefault && !huge_pages)
        };
        let map = map.map_err(|source| {
            if huge_pages {
                Error::HugePagesUnavailable {
                    len,
                    pages: len / HUGE_PAGE_SIZE,
                    source,
                }
            } else {
                Error::Map { len, source }
            }
        })?;
        if prefault {
            // Huge pages are faulted by touching (MAP_POPULATE on hugetlb may fail lazily).
            map.prefault();
        }
        if lock {
            map.lock().map_err(|source| Error::Map { len, source })?;
        }
        Ok(Area {
            map,
            chunk_size: chunk_size as u32,
            chunk_shift: chunk_size.trailing_zeros(),
            chunks: chunks as u32,
            huge_pages,
            shared_fd,
        })
    }
}

/// A page-aligned anonymous mapping of `chunks * chunk_size` bytes. Chunk `i` covers bytes
/// `i * chunk_size .. (i + 1) * chunk_size`.
#[derive(Debug)]
pub struct Area {
    map: Mmap,
    chunk_size: u32,
    chunk_shift: u32,
    chunks: u32,
    huge_pages: bool,
    /// The memfd behind a [shared](AreaBuilder::shared) area.
    shared_fd: Option<OwnedFd>,
}

impl Area {
    /// Maps the area another process [exported](crate::zcrx::ZcrxIfq::export): `chunks`
    /// chunks of `chunk_size` bytes of the memfd `fd`. The geometry is checked against the
    /// file's size.
    pub(crate) fn from_shared_fd(fd: OwnedFd, chunk_size: usize, chunks: usize) -> Result<Self> {
        let bad = |why: String| Error::BadExport { why };
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
        {
            return Err(Error::BadChunkSize { chunk_size });
        }
        if chunks == 0 || chunks > MAX_CHUNKS {
            return Err(bad(format!("{chunks} chunks")));
        }
        let len = chunk_size
            .checked_mul(chunks)
            .filter(|&l| l < (1usize << 47))
            .ok_or_else(|| bad(format!("{chunks} chunks of {chunk_size} bytes")))?;
        let size = rustix::fs::fstat(&fd)
            .map_err(|e| Error::Os {
                what: "reading the size of the exported area",
                source: e.into(),
            })?
            .st_size;
        if u64::try_from(size).ok() != Some(len as u64) {
            return Err(bad(format!(
                "the area file holds {size} bytes, the geometry says {len}"
            )));
        }
        let map = Mmap::map_shared(&fd, len).map_err(|source| Error::Map { len, source })?;
        Ok(Self {
            map,
            chunk_size: chunk_size as u32,
            chunk_shift: chunk_size.trailing_zeros(),
            chunks: chunks as u32,
            huge_pages: false,
            shared_fd: Some(fd),
        })
    }

    /// The memfd of a [shared](AreaBuilder::shared) area.
    pub fn shared_fd(&self) -> Option<BorrowedFd<'_>> {
        self.shared_fd.as_ref().map(|fd| fd.as_fd())
    }

    /// Starts a builder with the defaults (256 chunks of 32 KiB).
    pub fn builder() -> AreaBuilder {
        AreaBuilder::default()
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: an area has at least one chunk.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes per chunk.
    #[inline]
    pub fn chunk_size(&self) -> usize {
        self.chunk_size as usize
    }

    /// Number of chunks.
    #[inline]
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// Whether the area is backed by 2 MiB huge pages.
    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }

    /// The start address (for registration with the kernel).
    #[inline]
    pub fn addr(&self) -> u64 {
        self.map.as_ptr() as u64
    }

    /// Byte offset of a chunk's start.
    #[inline]
    pub fn chunk_offset(&self, chunk: ChunkId) -> u64 {
        u64::from(chunk) << self.chunk_shift
    }

    /// Splits an area offset into (chunk, offset inside the chunk); `None` past the end.
    #[inline]
    pub fn locate(&self, offset: u64) -> Option<(ChunkId, u32)> {
        if offset >= self.len() as u64 {
            return None;
        }
        Some((
            (offset >> self.chunk_shift) as u32,
            (offset & u64::from(self.chunk_size - 1)) as u32,
        ))
    }

    #[inline]
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// The mapping, for registering it with the kernel.
    pub(crate) fn mapping(&self) -> &Mmap {
        &self.map
    }

    /// Gives up the mapping without unmapping it (see [`Mmap::leak`]).
    pub(crate) fn leak(self) {
        self.map.leak();
    }
}
