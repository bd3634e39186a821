//! The zcrx ABI: numbers and struct layouts from the kernel's uapi headers
//! (`include/uapi/linux/io_uring.h`, and since 7.1 `linux/io_uring/zcrx.h` and
//! `linux/io_uring/query.h`; checked against Linux 7.3), the refill region (the one piece of
//! memory besides the area that zcrx shares with the kernel), and the register calls zcrx uses.
//!
//! The area, region, refill entry and CQE structs are the `io-uring` crate's bindgen output
//! (from the 6.15 header, unchanged since), re-exported under their C names. The ifq
//! registration grew `rx_buf_len` (7.0) and `event_desc` (7.2) after that crate's header, and the
//! query and control structs (6.19+) are not in it, so those are defined here.
//! `tests/abi_layout.rs` checks every size and field offset against the header.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use io_uring::types::{
    io_uring_region_desc, io_uring_zcrx_area_reg, io_uring_zcrx_cqe, io_uring_zcrx_rqe,
};

use crate::sys::mmap::Mmap;
use crate::sys::ring::{write_rqe, BufReg, SharedU32};

/// `IORING_OP_RECV_ZC` (6.15).
pub const IORING_OP_RECV_ZC: u8 = 58;
/// `IORING_REGISTER_ZCRX_IFQ` (6.15), `nr_args` = 1.
pub const IORING_REGISTER_ZCRX_IFQ: u32 = 32;
/// `IORING_REGISTER_QUERY` (6.19), `nr_args` = 0; works on any ring fd (or on -1).
pub const IORING_REGISTER_QUERY: u32 = 35;
/// `IORING_REGISTER_ZCRX_CTRL` (6.19), `nr_args` = 0.
pub const IORING_REGISTER_ZCRX_CTRL: u32 = 36;
/// `IO_URING_QUERY_ZCRX`: what zcrx this kernel has.
pub const IO_URING_QUERY_ZCRX: u32 = 1;
/// `IO_URING_QUERY_ZCRX_EVENT` (7.2): which events, and the statistics' size and alignment.
pub const IO_URING_QUERY_ZCRX_EVENT: u32 = 3;
/// `ZCRX_CTRL_FLUSH_RQ`: the kernel takes the refill entries now.
pub const ZCRX_CTRL_FLUSH_RQ: u32 = 0;
/// `ZCRX_CTRL_EXPORT`: an fd that keeps the ifq alive and can be imported by another ring.
pub const ZCRX_CTRL_EXPORT: u32 = 1;
/// `ZCRX_CTRL_ARM_EVENT` (7.2): let an event that fired fire again.
pub const ZCRX_CTRL_ARM_EVENT: u32 = 2;
/// `ZCRX_FEATURE_RX_PAGE_SIZE` (7.0): `rx_buf_len` may ask for buffers larger than a page.
pub const ZCRX_FEATURE_RX_PAGE_SIZE: u32 = 1 << 0;
/// `ZCRX_FEATURE_EVENT` (7.2): events and copy statistics.
pub const ZCRX_FEATURE_EVENT: u32 = 1 << 1;
/// `ZCRX_EVENT_ALLOC_FAIL`: the queue found no free buffer.
pub const ZCRX_EVENT_ALLOC_FAIL: u32 = 0;
/// `ZCRX_EVENT_COPY`: data went through the copy fallback.
pub const ZCRX_EVENT_COPY: u32 = 1;
/// `ZCRX_EVENT_DESC_FLAG_STATS`: `stats_offset` places a `zcrx_stats` in the refill region.
pub const ZCRX_EVENT_DESC_FLAG_STATS: u32 = 1 << 0;
/// `IORING_ZCRX_AREA_SHIFT`: the area id sits above this bit of a zcrx offset.
pub const IORING_ZCRX_AREA_SHIFT: u32 = 48;
/// `IORING_MEM_REGION_TYPE_USER`: the region descriptor points at user memory.
pub const IORING_MEM_REGION_TYPE_USER: u32 = 1;
/// `IORING_ZCRX_AREA_DMABUF` (6.16): the area is a dma-buf.
pub const IORING_ZCRX_AREA_DMABUF: u32 = 1;
/// `ZCRX_REG_IMPORT` (6.19): import an exported ifq (its fd in `if_idx`).
pub const ZCRX_REG_IMPORT: u32 = 1;
/// `ZCRX_REG_NODEV` (7.1): no device; every receive goes through the copy path.
pub const ZCRX_REG_NODEV: u32 = 2;
/// `IORING_RECV_MULTISHOT`, set in the SQE's `ioprio` (RECV_ZC requires it).
pub const IORING_RECV_MULTISHOT: u16 = 1 << 1;
/// `IO_RQ_MAX_ENTRIES` in `io_uring/zcrx.c`: the largest refill queue without `SETUP_CLAMP`.
pub const IO_RQ_MAX_ENTRIES: u32 = 32768;
/// Size of one refill entry.
pub const RQE_SIZE: usize = 16;
/// Bytes reserved in front of the refill entries for the kernel's header (`struct io_uring
/// {u32 head; u32 tail;}`, 8 bytes). Linux 6.15-6.17 put the entries right after it (offset 8);
/// 6.18 aligns them to `L1_CACHE_BYTES` (64 on x86-64 and arm64, 128 on ppc64, 256 on s390).
/// 256 covers every architecture; the offsets the kernel returns are used, never assumed.
pub const RQ_HEADER_RESERVE: usize = 256;

/// `struct io_uring_zcrx_offsets`: where the kernel put the head, the tail and the entries
/// inside the refill region.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_zcrx_offsets {
    /// Offset of the kernel's head word.
    pub head: u32,
    /// Offset of the application's tail word.
    pub tail: u32,
    /// Offset of the first refill entry.
    pub rqes: u32,
    /// Reserved.
    pub __resv2: u32,
    /// Reserved.
    pub __resv: [u64; 2],
}

/// `struct io_uring_zcrx_ifq_reg`, the argument of `IORING_REGISTER_ZCRX_IFQ` (7.3 layout).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_zcrx_ifq_reg {
    /// Interface index; with `ZCRX_REG_IMPORT`, the exported fd.
    pub if_idx: u32,
    /// Receive queue index.
    pub if_rxq: u32,
    /// Refill entries (rounded up to a power of two by the kernel, which writes it back).
    pub rq_entries: u32,
    /// `ZCRX_REG_*`.
    pub flags: u32,
    /// `struct io_uring_zcrx_area_reg *`.
    pub area_ptr: u64,
    /// `struct io_uring_region_desc *`.
    pub region_ptr: u64,
    /// Written by the kernel.
    pub offsets: io_uring_zcrx_offsets,
    /// Written by the kernel: the id receives name.
    pub zcrx_id: u32,
    /// 7.0+: the buffer size asked for (0: a page); the kernel writes back the one it uses.
    /// Reserved (and left 0) before.
    pub rx_buf_len: u32,
    /// 7.2+: `struct zcrx_event_desc *` or 0.
    pub event_desc: u64,
    /// Reserved.
    pub __resv: [u64; 2],
}

/// `struct zcrx_event_desc` (7.2): which events to post as CQEs, and where the statistics go.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct zcrx_event_desc {
    /// `user_data` of the event CQEs.
    pub user_data: u64,
    /// `1 << ZCRX_EVENT_*` for each event wanted.
    pub type_mask: u32,
    /// `ZCRX_EVENT_DESC_FLAG_*`.
    pub flags: u32,
    /// Offset of a `zcrx_stats` in the refill region (with `ZCRX_EVENT_DESC_FLAG_STATS`).
    pub stats_offset: u64,
    /// Reserved.
    pub __resv2: [u64; 9],
}

/// `struct zcrx_stats` (7.2), kept up to date by the kernel inside the refill region.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct zcrx_stats {
    /// Completions that went through the copy fallback.
    pub copy_count: u64,
    /// Bytes copied by it.
    pub copy_bytes: u64,
}

/// `struct zcrx_ctrl`, the argument of `IORING_REGISTER_ZCRX_CTRL`. The 48-byte union is
/// `args`: `zcrx_fd` of `zc_export` and `event_type` of `zc_arm_event` are its first word.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct zcrx_ctrl {
    /// The ifq.
    pub zcrx_id: u32,
    /// `ZCRX_CTRL_*`.
    pub op: u32,
    /// Reserved.
    pub __resv: [u64; 2],
    /// The per-operation union.
    pub args: [u32; 12],
}

/// `struct io_uring_query_hdr` (6.19).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_query_hdr {
    /// Next header in a chain, or 0.
    pub next_entry: u64,
    /// Pointer to the answer buffer.
    pub query_data: u64,
    /// `IO_URING_QUERY_*`.
    pub query_op: u32,
    /// Size of the answer buffer; the kernel writes back how much it filled.
    pub size: u32,
    /// Written by the kernel: 0 or a negative errno.
    pub result: i32,
    /// Reserved.
    pub __resv: [u32; 3],
}

/// `struct io_uring_query_zcrx` (6.19).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_query_zcrx {
    /// Supported `ZCRX_REG_*` flags.
    pub register_flags: u64,
    /// Supported `IORING_ZCRX_AREA_*` flags.
    pub area_flags: u64,
    /// Number of `ZCRX_CTRL_*` operations.
    pub nr_ctrl_opcodes: u32,
    /// `ZCRX_FEATURE_*`.
    pub features: u32,
    /// Size of the refill ring header.
    pub rq_hdr_size: u32,
    /// Alignment of the entries after it.
    pub rq_hdr_alignment: u32,
    /// Reserved.
    pub __resv2: u64,
}

/// `struct io_uring_query_zcrx_event` (7.2).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_query_zcrx_event {
    /// `1 << ZCRX_EVENT_*` supported.
    pub event_flags: u32,
    /// `sizeof(struct zcrx_stats)`.
    pub stats_size: u32,
    /// Alignment `stats_offset` must have.
    pub stats_off_alignment: u32,
    /// Reserved.
    pub __resv1: u32,
    /// Reserved.
    pub __resv2: [u64; 4],
}

// The numbers the `io-uring` crate carries must agree with ours.
const _: () = {
    assert!(io_uring::opcode::RecvZc::CODE == IORING_OP_RECV_ZC);
    assert!(io_uring::types::IORING_ZCRX_AREA_SHIFT == IORING_ZCRX_AREA_SHIFT);
    assert!(io_uring::types::IORING_MEM_REGION_TYPE_USER == IORING_MEM_REGION_TYPE_USER);
    assert!(crate::completion::ZCRX_AREA_SHIFT == IORING_ZCRX_AREA_SHIFT);
    assert!(size_of::<io_uring_zcrx_rqe>() == RQE_SIZE);
    assert!(size_of::<io_uring_zcrx_cqe>() == 16);
    assert!(size_of::<io_uring_zcrx_area_reg>() == 48);
    assert!(size_of::<io_uring_region_desc>() == 64);
    assert!(size_of::<io_uring_zcrx_ifq_reg>() == 96);
    assert!(
        size_of::<io_uring_zcrx_ifq_reg>() == size_of::<io_uring::types::io_uring_zcrx_ifq_reg>()
    );
    assert!(offset_of!(io_uring_zcrx_ifq_reg, offsets) == 32);
    assert!(offset_of!(io_uring_zcrx_ifq_reg, zcrx_id) == 64);
    assert!(offset_of!(io_uring_zcrx_ifq_reg, rx_buf_len) == 68);
    assert!(offset_of!(io_uring_zcrx_ifq_reg, event_desc) == 72);
    assert!(size_of::<io_uring_zcrx_offsets>() == 32);
    assert!(size_of::<zcrx_event_desc>() == 96);
    assert!(size_of::<zcrx_stats>() == 16);
    assert!(size_of::<zcrx_ctrl>() == 72);
    assert!(offset_of!(zcrx_ctrl, args) == 24);
    assert!(size_of::<io_uring_query_hdr>() == 40);
    assert!(size_of::<io_uring_query_zcrx>() == 40);
    assert!(size_of::<io_uring_query_zcrx_event>() == 48);
    assert!(size_of::<BufReg>() == 40);
};

/// Size and field offsets of one ABI struct as this crate compiles it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The C struct name.
    pub name: &'static str,
    /// `sizeof`.
    pub size: usize,
    /// `offsetof` of each field, in declaration order.
    pub fields: Vec<(&'static str, usize)>,
}

/// The layouts of every struct this crate passes to, or shares with, the kernel for zcrx and
/// buffer rings (including ones private to the crate), for `tests/abi_layout.rs`.
pub fn layouts() -> Vec<Layout> {
    macro_rules! layout {
        ($name:literal, $t:ty, [$($f:ident),* $(,)?]) => {
            Layout {
                name: $name,
                size: size_of::<$t>(),
                fields: vec![$((stringify!($f), offset_of!($t, $f))),*],
            }
        };
    }
    vec![
        layout!("io_uring_zcrx_rqe", io_uring_zcrx_rqe, [off, len, __pad]),
        layout!("io_uring_zcrx_cqe", io_uring_zcrx_cqe, [off, __pad]),
        layout!(
            "io_uring_zcrx_offsets",
            io_uring_zcrx_offsets,
            [head, tail, rqes, __resv2, __resv]
        ),
        layout!(
            "io_uring_zcrx_area_reg",
            io_uring_zcrx_area_reg,
            [addr, len, rq_area_token, flags, dmabuf_fd, __resv2]
        ),
        layout!(
            "io_uring_region_desc",
            io_uring_region_desc,
            [user_addr, size, flags, id, mmap_offset, __resv]
        ),
        layout!(
            "io_uring_zcrx_ifq_reg",
            io_uring_zcrx_ifq_reg,
            [
                if_idx, if_rxq, rq_entries, flags, area_ptr, region_ptr, offsets, zcrx_id,
                rx_buf_len, event_desc, __resv
            ]
        ),
        layout!(
            "zcrx_event_desc",
            zcrx_event_desc,
            [user_data, type_mask, flags, stats_offset, __resv2]
        ),
        layout!("zcrx_stats", zcrx_stats, [copy_count, copy_bytes]),
        layout!("zcrx_ctrl", zcrx_ctrl, [zcrx_id, op, __resv, args]),
        layout!(
            "io_uring_query_hdr",
            io_uring_query_hdr,
            [next_entry, query_data, query_op, size, result, __resv]
        ),
        layout!(
            "io_uring_query_zcrx",
            io_uring_query_zcrx,
            [
                register_flags,
                area_flags,
                nr_ctrl_opcodes,
                features,
                rq_hdr_size,
                rq_hdr_alignment,
                __resv2
            ]
        ),
        layout!(
            "io_uring_query_zcrx_event",
            io_uring_query_zcrx_event,
            [
                event_flags,
                stats_size,
                stats_off_alignment,
                __resv1,
                __resv2
            ]
        ),
        layout!(
            "io_uring_buf_reg",
            BufReg,
            [ring_addr, ring_entries, bgid, flags, resv]
        ),
    ]
}

/// The refill queue inside a refill region: the kernel's head word, our tail word, and the
/// `entries` refill entries, at the offsets the kernel returned.
#[derive(Debug)]
pub(crate) struct RefillRing {
    head: SharedU32,
    tail: SharedU32,
    rqes: *mut u8,
    mask: u32,
    base: *mut u8,
    region_len: usize,
}

// SAFETY: the pointers point into a mapping whose owner keeps it alive for as long as this value
// (see `new`); all accesses go through `&self`/`&mut self` of the single owner, atomically for the
// index words.
unsafe impl Send for RefillRing {}

impl RefillRing {
    /// Bytes a refill region needs for `entries` entries: the header reserve plus the entries,
    /// rounded up to whole pages (the kernel pins whole pages).
    pub(crate) fn region_len(entries: u32, page: usize) -> usize {
        (RQ_HEADER_RESERVE + entries as usize * RQE_SIZE).div_ceil(page) * page
    }

    /// The ring view of `map` with the kernel's `head`, `tail` and `rqes` offsets. `None` if the
    /// offsets are misaligned or do not fit `entries` entries inside the mapping.
    ///
    /// # Safety
    /// `map` must stay mapped for as long as the returned value is used, and the head and tail
    /// words must only ever be accessed atomically (the kernel does so with
    /// `smp_load_acquire`/`smp_store_release`).
    pub(crate) unsafe fn new(
        map: &Mmap,
        head: u32,
        tail: u32,
        rqes: u32,
        entries: u32,
    ) -> Option<Self> {
        let len = map.len() as u64;
        let word_ok = |off: u32| off % 4 == 0 && u64::from(off) + 4 <= len;
        let rqes_ok =
            rqes as usize % 8 == 0 && u64::from(rqes) + u64::from(entries) * RQE_SIZE as u64 <= len;
        if !entries.is_power_of_two()
            || !word_ok(head)
            || !word_ok(tail)
            || head == tail
            || !rqes_ok
        {
            return None;
        }
        let (h0, h1, t0, t1) = (
            u64::from(head),
            u64::from(head) + 4,
            u64::from(tail),
            u64::from(tail) + 4,
        );
        let rq = (
            u64::from(rqes),
            u64::from(rqes) + u64::from(entries) * RQE_SIZE as u64,
        );
        let overlaps = |a: (u64, u64), b: (u64, u64)| a.0 < b.1 && b.0 < a.1;
        if overlaps((h0, h1), rq) || overlaps((t0, t1), rq) {
            return None;
        }
        let base = map.as_ptr();
        // SAFETY: every offset was checked to lie inside the mapping with the needed alignment
        // (the mapping is page-aligned), and the caller guarantees the mapping outlives `self`
        // and that the words are only accessed atomically.
        unsafe {
            Some(Self {
                head: SharedU32::new(base.add(head as usize)),
                tail: SharedU32::new(base.add(tail as usize)),
                rqes: base.add(rqes as usize),
                mask: entries - 1,
                base,
                region_len: map.len(),
            })
        }
    }

    /// Loads the kernel's head (acquire: the kernel is done with every entry before it).
    pub(crate) fn head(&self) -> u32 {
        self.head.load_acquire()
    }

    /// `(head, tail, rqes)` offsets inside the region, as the kernel gave them.
    pub(crate) fn offsets(&self) -> (u32, u32, u32) {
        let at = |p: *const u8| (p as usize - self.base as usize) as u32;
        (at(self.head.ptr()), at(self.tail.ptr()), at(self.rqes))
    }

    /// Length of the region this ring lives in.
    pub(crate) fn mapped_len(&self) -> usize {
        self.region_len
    }

    /// Loads the tail word (acquire): where a previous producer left it.
    pub(crate) fn tail_word(&self) -> u32 {
        self.tail.load_acquire()
    }

    /// Publishes our tail (release: every entry before it is written first).
    pub(crate) fn publish_tail(&self, tail: u32) {
        self.tail.store_release(tail);
    }

    /// Writes refill entry `slot` (masked to the ring) with `off`.
    ///
    /// # Safety
    /// The kernel must not be reading that slot: it must come from
    /// [`ZcrxRefill::push`](crate::refill::zcrx::ZcrxRefill::push) and not be published yet.
    pub(crate) unsafe fn write(&self, slot: u32, off: u64) {
        let at = (slot & self.mask) as usize * RQE_SIZE;
        // SAFETY: `at + 16 <= entries * 16`, inside the region (checked in `new`); the caller
        // guarantees the kernel does not read this slot until a later tail publish.
        unsafe { write_rqe(self.rqes.add(at), off, 0) }
    }

    #[cfg(feature = "sim")]
    /// Writes slot `slot` (masked) with any bytes, hostile ones included: for tests of what
    /// the kernel does with bad refill entries.
    ///
    /// # Safety
    /// As [`write`](Self::write); and an entry naming a buffer the application holds makes the
    /// kernel reuse it under a live handle, so no such entry may be written while one lives.
    pub(crate) unsafe fn write_raw(&self, slot: u32, off: u64, len: u32, pad: u32) {
        let at = (slot & self.mask) as usize * RQE_SIZE;
        // SAFETY: in bounds as in `write`; the caller vouches for the rest.
        unsafe {
            let p = self.rqes.add(at);
            p.cast::<u64>().write_volatile(off);
            p.add(8).cast::<u32>().write_volatile(len);
            p.add(12).cast::<u32>().write_volatile(pad);
        }
    }

    #[cfg(feature = "sim")]
    /// Stores any value into the head word (the kernel's), for tests of garbage indices.
    pub(crate) fn store_head_raw(&self, head: u32) {
        self.head.store_release(head);
    }

    #[cfg(feature = "sim")]
    /// The kernel side, for simulations: loads our tail (acquire).
    pub(crate) fn sim_tail(&self) -> u32 {
        self.tail.load_acquire()
    }

    #[cfg(feature = "sim")]
    /// The kernel side, for simulations: stores the head (release).
    pub(crate) fn sim_set_head(&self, head: u32) {
        self.head.store_release(head);
    }

    #[cfg(feature = "sim")]
    /// The kernel side, for simulations: reads refill entry `slot` (masked) as
    /// `(off, len, pad)`. Only meaningful for a published slot.
    pub(crate) fn sim_read(&self, slot: u32) -> (u64, u32, u32) {
        let at = (slot & self.mask) as usize * RQE_SIZE;
        // SAFETY: in bounds as in `write`, 8-byte aligned; in a simulation the "kernel" runs on
        // the owner's thread through `&self`, so no write to the slot is concurrent with this
        // read.
        unsafe {
            let p = self.rqes.add(at);
            (
                p.cast::<u64>().read_volatile(),
                p.add(8).cast::<u32>().read_volatile(),
                p.add(12).cast::<u32>().read_volatile(),
            )
        }
    }
}

/// The kernel's copy statistics (`struct zcrx_stats`, 7.2) inside a refill region, which the
/// kernel updates with plain stores while receives run.
#[derive(Debug)]
pub(crate) struct SharedStats {
    ptr: *const zcrx_stats,
}

// SAFETY: the pointer points into a mapping whose owner keeps it alive for as long as this value
// (see `new`); it is only read, with volatile loads of aligned words.
unsafe impl Send for SharedStats {}

impl SharedStats {
    /// The statistics at `offset` in `map`; `None` if they do not fit or are misaligned.
    ///
    /// # Safety
    /// `map` must stay mapped for as long as the returned value is used.
    pub(crate) unsafe fn new(map: &Mmap, offset: u64) -> Option<Self> {
        let fits = offset % 8 == 0
            && offset
                .checked_add(size_of::<zcrx_stats>() as u64)
                .is_some_and(|end| end <= map.len() as u64);
        fits.then(|| Self {
            // SAFETY: in bounds (checked), the caller keeps the mapping alive.
            ptr: unsafe { map.as_ptr().add(offset as usize) }
                .cast_const()
                .cast(),
        })
    }

    /// `(copy_count, copy_bytes)` as last stored by the kernel.
    pub(crate) fn read(&self) -> (u64, u64) {
        // SAFETY: in bounds and 8-aligned (checked in `new`), the mapping is alive; the kernel
        // writes the words with single aligned stores (`WRITE_ONCE`), so a volatile load sees
        // an old or a new value, never a torn one.
        unsafe {
            (
                std::ptr::addr_of!((*self.ptr).copy_count).read_volatile(),
                std::ptr::addr_of!((*self.ptr).copy_bytes).read_volatile(),
            )
        }
    }
}

/// `io_uring_register(ring, opcode, arg, nr_args)` for opcodes `rustix` has no name for: the
/// kernel ABI's register opcode word is `opcode | flags`, so the raw opcode goes in the flags
/// with a named opcode of 0.
///
/// # Safety
/// `arg` must be what the kernel expects for `opcode` (valid, and writable where the kernel
/// writes back), and every pointer inside it as well.
unsafe fn register_raw(
    ring: BorrowedFd<'_>,
    opcode: u32,
    arg: *mut std::ffi::c_void,
    nr_args: u32,
) -> io::Result<u32> {
    use rustix::io_uring::{io_uring_register_with, IoringRegisterFlags, IoringRegisterOp};
    const _: () = assert!(IoringRegisterOp::RegisterBuffers as u32 == 0);
    // SAFETY: the opcode word is `0 | opcode`; the caller vouches for `arg`.
    unsafe {
        io_uring_register_with(
            ring,
            IoringRegisterOp::RegisterBuffers,
            IoringRegisterFlags::from_bits_retain(opcode),
            arg.cast_const(),
            nr_args,
        )
    }
    .map_err(Into::into)
}

/// `io_uring_register(ring, IORING_REGISTER_ZCRX_IFQ, reg, 1)`.
///
/// The kernel writes its answers (`rq_entries` as rounded, `offsets`, `zcrx_id`, `rx_buf_len`,
/// and through the embedded pointers `rq_area_token` and the region descriptor) back into the
/// caller's structs, so they are passed as pointers derived from `&mut`.
/// (`io_uring::Submitter::register_ifq` takes `&io_uring_zcrx_ifq_reg`, through which a write
/// is undefined behaviour: the compiler may assume the struct unchanged after the call.)
///
/// # Safety
/// `reg` must point to a valid, writable `io_uring_zcrx_ifq_reg` whose `area_ptr`,
/// `region_ptr` and `event_desc` are 0 or point to valid, writable `io_uring_zcrx_area_reg`,
/// `io_uring_region_desc` and `zcrx_event_desc` values (derived from `&mut`), and the memory
/// they describe must be owned by the caller and stay mapped while the kernel may use it.
pub(crate) unsafe fn register_zcrx_ifq(
    ring: BorrowedFd<'_>,
    reg: *mut io_uring_zcrx_ifq_reg,
) -> io::Result<()> {
    // SAFETY: forwarded from the caller.
    unsafe { register_raw(ring, IORING_REGISTER_ZCRX_IFQ, reg.cast(), 1) }.map(drop)
}

/// One `IORING_REGISTER_ZCRX_CTRL` call with `ctrl` (the kernel may write `ctrl` back).
fn zcrx_ctrl(ring: BorrowedFd<'_>, ctrl: &mut zcrx_ctrl) -> io::Result<()> {
    // The operations this crate sends (flush, export, arm event) carry no pointer: the kernel
    // reads and writes only the 72 bytes of `ctrl`.
    debug_assert!(matches!(
        ctrl.op,
        ZCRX_CTRL_FLUSH_RQ | ZCRX_CTRL_EXPORT | ZCRX_CTRL_ARM_EVENT
    ));
    // SAFETY: `ctrl` is a valid, writable `zcrx_ctrl` (a `&mut`), with no embedded pointer.
    unsafe {
        register_raw(
            ring,
            IORING_REGISTER_ZCRX_CTRL,
            (ctrl as *mut zcrx_ctrl).cast(),
            0,
        )
    }
    .map(drop)
}

/// `ZCRX_CTRL_FLUSH_RQ`: the kernel takes the published refill entries of ifq `zcrx_id` now
/// (up to the ring's size). Needed where no page pool consumes them (`ZCRX_REG_NODEV`), and to
/// make room in a full refill ring.
pub(crate) fn ctrl_flush_rq(ring: BorrowedFd<'_>, zcrx_id: u32) -> io::Result<()> {
    zcrx_ctrl(
        ring,
        &mut zcrx_ctrl {
            zcrx_id,
            op: ZCRX_CTRL_FLUSH_RQ,
            ..Default::default()
        },
    )
}

/// `ZCRX_CTRL_EXPORT`: a new close-on-exec fd holding a reference to ifq `zcrx_id`.
pub(crate) fn ctrl_export(ring: BorrowedFd<'_>, zcrx_id: u32) -> io::Result<OwnedFd> {
    let mut ctrl = zcrx_ctrl {
        zcrx_id,
        op: ZCRX_CTRL_EXPORT,
        ..Default::default()
    };
    zcrx_ctrl(ring, &mut ctrl)?;
    let fd = ctrl.args[0] as RawFd;
    if fd < 0 {
        return Err(io::ErrorKind::InvalidData.into());
    }
    // SAFETY: on success the kernel installed a new fd in this process and wrote its number
    // into `zcrx_fd`; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ZCRX_CTRL_ARM_EVENT`: event `event_type` of ifq `zcrx_id`, which fired, may fire again.
pub(crate) fn ctrl_arm_event(
    ring: BorrowedFd<'_>,
    zcrx_id: u32,
    event_type: u32,
) -> io::Result<()> {
    let mut ctrl = zcrx_ctrl {
        zcrx_id,
        op: ZCRX_CTRL_ARM_EVENT,
        ..Default::default()
    };
    ctrl.args[0] = event_type;
    zcrx_ctrl(ring, &mut ctrl)
}

/// One `IORING_REGISTER_QUERY` entry: fills `out` for `query_op`. `Ok(false)` when the kernel
/// does not know the register opcode (before 6.19: `EINVAL`) or the query (`EOPNOTSUPP` in the
/// header's result).
fn query<T: Copy + Default>(ring: BorrowedFd<'_>, query_op: u32, out: &mut T) -> io::Result<bool> {
    let mut hdr = io_uring_query_hdr {
        query_data: (out as *mut T) as u64,
        query_op,
        size: size_of::<T>() as u32,
        ..Default::default()
    };
    // SAFETY: `hdr` is a valid, writable header with no next entry; `query_data` points to `out`,
    // writable for `size` bytes (the kernel writes at most that much). `T` is one of the plain
    // integer query structs, valid whatever the kernel writes into it.
    let answer = unsafe {
        register_raw(
            ring,
            IORING_REGISTER_QUERY,
            (&mut hdr as *mut io_uring_query_hdr).cast(),
            0,
        )
    };
    match answer {
        Ok(_) if hdr.result == 0 => Ok(true),
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `IO_URING_QUERY_ZCRX`; `None` before 6.19.
pub(crate) fn query_zcrx(ring: BorrowedFd<'_>) -> io::Result<Option<io_uring_query_zcrx>> {
    let mut q = io_uring_query_zcrx::default();
    Ok(query(ring, IO_URING_QUERY_ZCRX, &mut q)?.then_some(q))
}

/// `IO_URING_QUERY_ZCRX_EVENT`; `None` before 7.2.
pub(crate) fn query_zcrx_event(
    ring: BorrowedFd<'_>,
) -> io::Result<Option<io_uring_query_zcrx_event>> {
    let mut q = io_uring_query_zcrx_event::default();
    Ok(query(ring, IO_URING_QUERY_ZCRX_EVENT, &mut q)?.then_some(q))
}
