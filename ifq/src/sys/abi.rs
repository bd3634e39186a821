//! The zcrx ABI: numbers and struct layouts from `include/uapi/linux/io_uring.h` (Linux 6.18),
//! and the refill region, the one piece of memory besides the area that zcrx shares with the
//! kernel.
//!
//! The registration structs are the `io-uring` crate's bindgen output (generated from the same
//! header), re-exported here under their C names; `tests/abi_layout.rs` checks every size and
//! field offset against the header.

use std::mem::{offset_of, size_of};

pub use io_uring::types::{
    io_uring_region_desc, io_uring_zcrx_area_reg, io_uring_zcrx_cqe, io_uring_zcrx_ifq_reg,
    io_uring_zcrx_rqe,
};

use crate::sys::mmap::Mmap;
use crate::sys::ring::{write_rqe, BufReg, SharedU32};

/// `IORING_OP_RECV_ZC` (6.15).
pub const IORING_OP_RECV_ZC: u8 = 58;
/// `IORING_REGISTER_ZCRX_IFQ` (6.15), `nr_args` = 1.
pub const IORING_REGISTER_ZCRX_IFQ: u32 = 32;
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
    assert!(offset_of!(io_uring_zcrx_ifq_reg, offsets) == 32);
    assert!(offset_of!(io_uring_zcrx_ifq_reg, zcrx_id) == 64);
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
    let reg = io_uring_zcrx_ifq_reg::default();
    let base = std::ptr::addr_of!(reg) as usize;
    let at = |p: *const u32| p as usize - base;
    vec![
        layout!("io_uring_zcrx_rqe", io_uring_zcrx_rqe, [off, len, __pad]),
        layout!("io_uring_zcrx_cqe", io_uring_zcrx_cqe, [off, __pad]),
        // Not re-exported by `io-uring`: measured inside its only user.
        Layout {
            name: "io_uring_zcrx_offsets",
            size: std::mem::size_of_val(&reg.offsets),
            fields: vec![
                (
                    "head",
                    at(&reg.offsets.head) - offset_of!(io_uring_zcrx_ifq_reg, offsets),
                ),
                (
                    "tail",
                    at(&reg.offsets.tail) - offset_of!(io_uring_zcrx_ifq_reg, offsets),
                ),
                (
                    "rqes",
                    at(&reg.offsets.rqes) - offset_of!(io_uring_zcrx_ifq_reg, offsets),
                ),
            ],
        },
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
                if_idx, if_rxq, rq_entries, flags, area_ptr, region_ptr, offsets, zcrx_id, __resv2,
                __resv
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
            })
        }
    }

    /// Loads the kernel's head (acquire: the kernel is done with every entry before it).
    pub(crate) fn head(&self) -> u32 {
        self.head.load_acquire()
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

    /// The kernel side, for simulations: loads our tail (acquire).
    pub(crate) fn sim_tail(&self) -> u32 {
        self.tail.load_acquire()
    }

    /// The kernel side, for simulations: stores the head (release).
    pub(crate) fn sim_set_head(&self, head: u32) {
        self.head.store_release(head);
    }

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

/// `io_uring_register(ring, IORING_REGISTER_ZCRX_IFQ, reg, 1)`.
///
/// The kernel writes its answers (`rq_entries` as rounded, `offsets`, `zcrx_id`, and through the
/// embedded pointers `rq_area_token` and the region descriptor) back into the caller's structs,
/// so they are passed as pointers derived from `&mut`. (`io_uring::Submitter::register_ifq` takes
/// `&io_uring_zcrx_ifq_reg`, through which a write is undefined behaviour: the compiler may assume
/// the struct unchanged after the call.) `rustix` has no named opcode for it, so the raw opcode is
/// passed the way the kernel ABI defines the register opcode word, `opcode | flags`, with an
/// opcode of 0.
///
/// # Safety
/// `reg` must point to a valid, writable `io_uring_zcrx_ifq_reg` whose `area_ptr` and
/// `region_ptr` point to valid, writable `io_uring_zcrx_area_reg` and `io_uring_region_desc`
/// values (derived from `&mut`), and the memory they describe must be owned by the caller and
/// stay mapped while the kernel may use it.
pub(crate) unsafe fn register_zcrx_ifq(
    ring: std::os::fd::BorrowedFd<'_>,
    reg: *mut io_uring_zcrx_ifq_reg,
) -> std::io::Result<()> {
    use rustix::io_uring::{io_uring_register_with, IoringRegisterFlags, IoringRegisterOp};
    const _: () = assert!(IoringRegisterOp::RegisterBuffers as u32 == 0);
    // SAFETY: the opcode word is `0 | IORING_REGISTER_ZCRX_IFQ`; the caller guarantees `reg` and
    // what it points to are valid and writable for the kernel.
    unsafe {
        io_uring_register_with(
            ring,
            IoringRegisterOp::RegisterBuffers,
            IoringRegisterFlags::from_bits_retain(IORING_REGISTER_ZCRX_IFQ),
            reg.cast_const().cast(),
            1,
        )
    }
    .map(drop)
    .map_err(Into::into)
}
