//! The simulated kernel (feature `sim`): queues registered with no io_uring, and hooks that play
//! the kernel's and the NIC's side of the rings and the area, for this project's own tests,
//! benchmarks and fuzz targets. Not part of the supported API (no semver promise); off by
//! default.
//!
//! It sits above both backends and below nothing: the raw writes it needs are in `sys/`
//! (`sys::mmap::copy_into`, `sys::refill`), and its `unsafe fn`s only forward their caller's
//! contract to them.
//!
//! Reading what the kernel would read is safe. Writing what the kernel or a NIC would write is
//! not: [`BufRing::sim_kernel_write`] and [`ZcrxIfq::sim_write`] write into the area, where a
//! live [`RxBuf`](crate::RxBuf) may be reading, and [`ZcrxIfq::raw_refill`] hands buffers back
//! to a real kernel; each says what its caller must vouch for.

use std::sync::Arc;

use crate::area::Area;
use crate::bufring::{ring_for, BufRing, BufRingConfig};
use crate::error::{Error, Result};
use crate::sys::calls;
use crate::sys::mmap::{copy_into, Mmap};
use crate::sys::refill::RefillRing;
use crate::zcrx::{Plan, ZcrxFeatures, ZcrxIfq};

/// The zcrx ABI as this crate compiles it (struct layouts and numbers), for layout tests
/// (feature `sim`).
pub mod abi_info {
    pub use crate::sys::abi::{
        io_uring_query_hdr, io_uring_query_zcrx, io_uring_query_zcrx_event, io_uring_region_desc,
        io_uring_zcrx_area_reg, io_uring_zcrx_cqe, io_uring_zcrx_ifq_reg, io_uring_zcrx_offsets,
        io_uring_zcrx_rqe, layouts, zcrx_ctrl, zcrx_event_desc, zcrx_stats, Layout,
        IORING_MEM_REGION_TYPE_USER, IORING_OP_RECV_ZC, IORING_RECV_MULTISHOT,
        IORING_REGISTER_QUERY, IORING_REGISTER_ZCRX_CTRL, IORING_REGISTER_ZCRX_IFQ,
        IORING_ZCRX_AREA_DMABUF, IORING_ZCRX_AREA_SHIFT, IO_RQ_MAX_ENTRIES, IO_URING_QUERY_ZCRX,
        IO_URING_QUERY_ZCRX_EVENT, RQE_SIZE, RQ_HEADER_RESERVE, ZCRX_CTRL_ARM_EVENT,
        ZCRX_CTRL_EXPORT, ZCRX_CTRL_FLUSH_RQ, ZCRX_EVENT_ALLOC_FAIL, ZCRX_EVENT_COPY,
        ZCRX_EVENT_DESC_FLAG_STATS, ZCRX_FEATURE_EVENT, ZCRX_FEATURE_RX_PAGE_SIZE, ZCRX_REG_IMPORT,
        ZCRX_REG_NODEV,
    };
}

/// Copies `data` into `area` at byte `offset`, as the kernel's copy or a NIC's DMA would.
///
/// # Panics
/// If the range leaves the area.
///
/// # Safety
/// No [`RxBuf`](crate::RxBuf) may cover any byte of the range, and none may be made over it
/// during the call.
unsafe fn write_area(area: &Area, offset: u64, data: &[u8]) {
    // SAFETY: forwarded from the caller; the area's mapping is live while `area` is borrowed.
    unsafe { copy_into(area.base(), area.len(), offset, data) }
}

impl BufRing {
    /// A buffer ring that is not registered with any io_uring (feature `sim`): completions come
    /// from the caller, a model of the kernel in tests and benchmarks. Everything else is the
    /// real code.
    pub fn simulated(area: Area, config: BufRingConfig) -> Result<Self> {
        let ring = ring_for(&area)?;
        Ok(Self::assemble(area, config, ring, true))
    }

    /// Simulation: reads ring slot `slot` (masked) as the kernel would: `(addr, len, bid)`.
    pub fn sim_entry(&self, slot: u16) -> (u64, u32, u16) {
        self.ring.kernel_read(slot)
    }

    /// Simulation: the published tail, as the kernel would read it (acquire).
    pub fn sim_tail(&self) -> u16 {
        self.ring.kernel_tail()
    }

    /// Simulation: the kernel's copy of received bytes into the area at `addr` (an address taken
    /// from a ring entry).
    ///
    /// # Safety
    /// No [`RxBuf`](crate::RxBuf) may cover any byte of the range, and none may be made over it
    /// during the call: the model writes only into buffers it took from the ring and has not
    /// completed yet, as the kernel does. (Tests that check, by content, that a handle's bytes
    /// never change rely on this too: if the queue ever posted a held chunk, they would catch
    /// it, by undefined behaviour.)
    ///
    /// # Panics
    /// If the range is outside the area, or the ring is not [simulated](Self::simulated).
    pub unsafe fn sim_kernel_write(&self, addr: u64, data: &[u8]) {
        assert!(self.simulated, "only in simulated mode");
        let area = self.core.area();
        let off = addr
            .checked_sub(area.addr())
            .expect("address below the area");
        // SAFETY: forwarded from the caller.
        unsafe { write_area(area, off, data) };
    }
}

impl ZcrxIfq {
    /// A queue whose registration is simulated (feature `sim`): the refill region is allocated
    /// here with the 6.18 layout (head at 0, tail at 4, entries at 64) and no kernel is involved.
    /// Tests drive the kernel side with the `sim_*` methods.
    pub fn simulated(area: Area, rq_entries: u32, area_token: u64) -> Result<Self> {
        let plan = Plan::new(
            &area,
            Some(rq_entries),
            None,
            &ZcrxFeatures::PRE_QUERY,
            false,
            false,
        )?;
        let region =
            Mmap::anonymous(plan.region_len, false, false).map_err(|source| Error::Map {
                len: plan.region_len,
                source,
            })?;
        let region = Arc::new(region);
        let rq = RefillRing::new(Arc::clone(&region), 0, 4, 64, plan.entries)
            .expect("the simulated layout fits the region");
        let mut this = Self::assemble(
            area,
            region,
            rq,
            area_token & !crate::completion::ZCRX_OFFSET_MASK,
            0,
            plan.buf_shift,
            None,
            true,
        );
        this.ifname = "simulated".to_owned();
        Ok(this)
    }

    fn assert_simulated(&self) {
        assert!(
            self.simulated,
            "sim_* methods are only for ZcrxIfq::simulated queues"
        );
    }

    /// Simulation: the kernel side loads the refill tail (acquire).
    pub fn sim_tail(&self) -> u32 {
        self.assert_simulated();
        self.rq.kernel_tail()
    }

    /// Simulation: the kernel side reads refill entry `index` (masked) as `(off, len, pad)`.
    pub fn sim_read_rqe(&self, index: u32) -> (u64, u32, u32) {
        self.assert_simulated();
        self.rq.kernel_read(index)
    }

    /// Simulation: the kernel side stores its head (release).
    pub fn sim_set_head(&self, head: u32) {
        self.assert_simulated();
        self.rq.kernel_set_head(head);
    }

    /// Simulation: the "NIC" writes `data` into the area at `area_offset`.
    ///
    /// # Safety
    /// No [`RxBuf`](crate::RxBuf) may cover any byte of the range, and none may be created over
    /// it during the call: the model writes only buffers the kernel side owns, as a NIC would.
    ///
    /// # Panics
    /// If the range leaves the area, or the queue is not simulated.
    pub unsafe fn sim_write(&self, area_offset: u64, data: &[u8]) {
        self.assert_simulated();
        // SAFETY: forwarded from the caller.
        unsafe { write_area(self.core.area(), area_offset, data) };
    }

    /// Simulation: sets the per-owner limit.
    pub fn sim_set_owner_limit(&mut self, bytes: Option<u64>) {
        self.assert_simulated();
        self.core.table.set_owner_limit(bytes);
    }

    /// Test support, against a real kernel (feature `sim`): writes `entries` (`(off, len, pad)`,
    /// hostile ones included) into the refill ring after the last published entry, then
    /// publishes `tail` (default: just past them) and, if given, stores `head` into the kernel's
    /// head word. The queue's own producer state is not told: the kernel's answer to garbage is
    /// what such a test looks at, and [`snapshot`](Self::snapshot) must still balance afterwards.
    ///
    /// # Safety
    /// No entry, written now or left in the ring from before and covered by `tail`, may name a
    /// buffer of a live [`RxBuf`](crate::RxBuf) of this queue: the kernel would take it back and
    /// reuse it under the handle.
    pub unsafe fn raw_refill(
        &mut self,
        entries: &[(u64, u32, u32)],
        tail: Option<u32>,
        head: Option<u32>,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { self.rq.write_raw(entries, tail, head) };
    }

    /// Test support (feature `sim`): `ZCRX_CTRL_FLUSH_RQ` once, now, whatever the queue's
    /// state; the kernel's answer as an errno.
    pub fn raw_ctrl_flush(&self) -> std::result::Result<(), i32> {
        self.raw_ctrl_flush_id(self.zcrx_id)
    }

    /// Test support (feature `sim`): `ZCRX_CTRL_FLUSH_RQ` for another id on this queue's ring.
    pub fn raw_ctrl_flush_id(&self, zcrx_id: u32) -> std::result::Result<(), i32> {
        use std::os::fd::AsFd;
        let ring = self.ring_fd.as_ref().ok_or(-1)?;
        calls::ctrl_flush_rq(ring.as_fd(), zcrx_id).map_err(|e| e.raw_os_error().unwrap_or(-1))
    }
}
