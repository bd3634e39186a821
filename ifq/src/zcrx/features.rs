//! What the kernel's zcrx offers, from `IORING_REGISTER_QUERY` (6.19+) or the version.

use super::*;

/// What the running kernel's zcrx offers, as `IORING_REGISTER_QUERY` (Linux 6.19+) reports it.
///
/// Before 6.19 there is no query: [`queried`](Self::queried) is false and the values are the
/// 6.15-6.18 rules (no registration flags, no control operations, and a refill header that fits
/// in the 256 bytes reserved for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZcrxFeatures {
    /// Whether the kernel answered the query (6.19+).
    pub queried: bool,
    /// `ZCRX_REG_*` flags the kernel accepts (import 6.19, no-device 7.1).
    pub register_flags: u64,
    /// `IORING_ZCRX_AREA_*` flags (dma-buf).
    pub area_flags: u64,
    /// Number of `ZCRX_CTRL_*` operations: flush and export (6.19), arm event (7.2), add area.
    pub ctrl_opcodes: u32,
    /// `ZCRX_FEATURE_*`: large receive buffers (7.0), events and statistics (7.2).
    pub features: u32,
    /// Bytes of the refill ring header.
    pub rq_hdr_size: u32,
    /// Alignment of the refill entries after the header.
    pub rq_hdr_alignment: u32,
    /// `1 << ZCRX_EVENT_*` the kernel can post (7.2).
    pub event_types: u32,
    /// Size of the statistics block (7.2; 0 before).
    pub stats_size: u32,
    /// Alignment of the statistics block in the refill region.
    pub stats_alignment: u32,
}

impl ZcrxFeatures {
    /// The 6.15-6.18 rules, for kernels without the query.
    pub(crate) const PRE_QUERY: Self = Self {
        queried: false,
        register_flags: 0,
        area_flags: abi::IORING_ZCRX_AREA_DMABUF as u64,
        ctrl_opcodes: 0,
        features: 0,
        rq_hdr_size: RQ_HEADER_RESERVE as u32,
        rq_hdr_alignment: 64,
        event_types: 0,
        stats_size: 0,
        stats_alignment: 8,
    };

    /// Asks the kernel through `ring` (any io_uring fd).
    pub fn query(ring: impl AsFd) -> Result<Self> {
        let os = |source| Error::Os {
            what: "querying zcrx features (IORING_REGISTER_QUERY)",
            source,
        };
        let Some(q) = calls::query_zcrx(ring.as_fd()).map_err(os)? else {
            return Ok(Self::PRE_QUERY);
        };
        let mut this = Self {
            queried: true,
            register_flags: q.register_flags,
            area_flags: q.area_flags,
            ctrl_opcodes: q.nr_ctrl_opcodes,
            features: q.features,
            rq_hdr_size: q.rq_hdr_size,
            rq_hdr_alignment: q.rq_hdr_alignment.max(1),
            ..Self::PRE_QUERY
        };
        if let Some(e) = calls::query_zcrx_event(ring.as_fd()).map_err(os)? {
            this.event_types = e.event_flags;
            this.stats_size = e.stats_size;
            this.stats_alignment = e.stats_off_alignment.max(1);
        }
        Ok(this)
    }

    /// Asks the kernel through a small throwaway ring.
    pub fn detect() -> Result<Self> {
        let ring = IoUring::<squeue::Entry, cqueue::Entry>::builder()
            .build(1)
            .map_err(|source| Error::Os {
                what: "creating an io_uring to query zcrx features",
                source,
            })?;
        Self::query(&ring)
    }

    /// `ZCRX_REG_NODEV`: zcrx without a device (7.1).
    pub fn no_device(&self) -> bool {
        self.register_flags & u64::from(ZCRX_REG_NODEV) != 0
    }

    /// `ZCRX_REG_IMPORT` and `ZCRX_CTRL_EXPORT`: an ifq shared through an fd (6.19).
    pub fn export_import(&self) -> bool {
        self.register_flags & u64::from(ZCRX_REG_IMPORT) != 0
            && self.ctrl_opcodes > abi::ZCRX_CTRL_EXPORT
    }

    /// `ZCRX_CTRL_FLUSH_RQ`: refill entries taken on request (6.19).
    pub fn flush_rq(&self) -> bool {
        self.ctrl_opcodes > abi::ZCRX_CTRL_FLUSH_RQ
    }

    /// Out-of-buffers and copy-fallback events, and copy statistics (7.2).
    pub fn events(&self) -> bool {
        self.features & ZCRX_FEATURE_EVENT != 0 && self.ctrl_opcodes > abi::ZCRX_CTRL_ARM_EVENT
    }

    /// Receive buffers larger than a page (`rx_buf_len`, 7.0; the NIC driver must support them).
    pub fn large_buffers(&self) -> bool {
        self.features & ZCRX_FEATURE_RX_PAGE_SIZE != 0
    }

    /// The refill region for `entries` entries, and where the statistics go when `stats`:
    /// `ALIGN(ALIGN(header, alignment) + entries * 16 [+ stats], page)`.
    pub(super) fn region(&self, entries: u32, page: usize, stats: bool) -> (usize, Option<u64>) {
        let align = |v: usize, a: usize| v.div_ceil(a) * a;
        let rqes = align(self.rq_hdr_size as usize, self.rq_hdr_alignment as usize);
        let end = rqes + entries as usize * RQE_SIZE;
        if stats && self.stats_size > 0 {
            let at = align(end, self.stats_alignment as usize);
            (align(at + self.stats_size as usize, page), Some(at as u64))
        } else {
            (align(end, page), None)
        }
    }
}

/// [`ZcrxFeatures::query`] on a ring this thread must be the submitter of.
pub(super) fn query_on(ring: &IoUring<squeue::Entry, cqueue::Entry32>) -> Result<ZcrxFeatures> {
    query_fd(ring.as_fd())
}

pub(super) fn query_fd(ring: BorrowedFd<'_>) -> Result<ZcrxFeatures> {
    match ZcrxFeatures::query(ring) {
        // A SINGLE_ISSUER ring answers every register call from another thread so.
        Err(Error::Os { source, .. })
            if source.raw_os_error() == Some(Errno::EXIST.raw_os_error()) =>
        {
            Err(another_thread())
        }
        other => other,
    }
}
