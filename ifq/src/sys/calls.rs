//! The register calls zcrx makes (`io_uring_register` with the zcrx opcodes): registration and
//! import of an interface queue, the control operations (flush, export, event re-arm) and the
//! queries, each a safe function over one `unsafe` call whose arguments it owns. The structs
//! and numbers they pass are in [`abi`](crate::sys::abi).

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::sys::abi::*;
use crate::sys::mmap::Mmap;

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
/// they describe must be owned by the caller.
unsafe fn register_zcrx_ifq(
    ring: BorrowedFd<'_>,
    reg: *mut io_uring_zcrx_ifq_reg,
) -> io::Result<()> {
    // SAFETY: forwarded from the caller.
    unsafe { register_raw(ring, IORING_REGISTER_ZCRX_IFQ, reg.cast(), 1) }.map(drop)
}

/// What a zcrx registration asks for (`struct io_uring_zcrx_ifq_reg` and what it points to).
#[derive(Debug)]
pub(crate) struct ZcrxRegistration<'a> {
    /// Interface index (0 without a device).
    pub(crate) if_idx: u32,
    /// Receive queue index.
    pub(crate) if_rxq: u32,
    /// Refill entries asked for.
    pub(crate) rq_entries: u32,
    /// `ZCRX_REG_*`.
    pub(crate) flags: u32,
    /// The area: the kernel pins its pages and writes received data into every buffer of it
    /// that it holds, starting with all of them. The caller hands over an area no handle points
    /// into (a fresh one, owned by the queue from now on).
    pub(crate) area: &'a Mmap,
    /// The refill region (pinned by the kernel too).
    pub(crate) region: &'a Mmap,
    /// The buffer size asked for (0: a page).
    pub(crate) rx_buf_len: u32,
    /// Which events to post, and where the statistics go (`None`: no events).
    pub(crate) events: Option<zcrx_event_desc>,
}

/// The kernel's answer to a zcrx registration or import.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ZcrxRegistered {
    /// Refill entries, as rounded.
    pub(crate) rq_entries: u32,
    /// Where the head, tail and entries are in the refill region.
    pub(crate) offsets: io_uring_zcrx_offsets,
    /// The id receives name.
    pub(crate) zcrx_id: u32,
    /// The buffer size in use (7.0+; 0 before: a page).
    pub(crate) rx_buf_len: u32,
    /// The area token (`area_id << 48`) refill entries carry; 0 for an import.
    pub(crate) rq_area_token: u64,
}

/// Registers a zcrx interface queue on `ring` (`IORING_REGISTER_ZCRX_IFQ`).
pub(crate) fn register_zcrx(
    ring: BorrowedFd<'_>,
    r: &ZcrxRegistration<'_>,
) -> io::Result<ZcrxRegistered> {
    let mut area_reg = io_uring_zcrx_area_reg {
        addr: r.area.as_ptr() as u64,
        len: r.area.len() as u64,
        ..Default::default()
    };
    let mut region_desc = io_uring_region_desc {
        user_addr: r.region.as_ptr() as u64,
        size: r.region.len() as u64,
        flags: IORING_MEM_REGION_TYPE_USER,
        ..Default::default()
    };
    let mut event_desc = r.events.unwrap_or_default();
    let mut reg = io_uring_zcrx_ifq_reg {
        if_idx: r.if_idx,
        if_rxq: r.if_rxq,
        rq_entries: r.rq_entries,
        flags: r.flags,
        area_ptr: std::ptr::addr_of_mut!(area_reg) as u64,
        region_ptr: std::ptr::addr_of_mut!(region_desc) as u64,
        rx_buf_len: r.rx_buf_len,
        event_desc: if r.events.is_some() {
            std::ptr::addr_of_mut!(event_desc) as u64
        } else {
            0
        },
        ..Default::default()
    };
    // SAFETY: `reg`, `area_reg`, `region_desc` and `event_desc` are live locals passed as
    // pointers derived from `&mut`. The area and the region are page-aligned mappings the caller
    // owns (borrowed for the call); the kernel pins their pages, so unmapping them later is
    // harmless to it. That the kernel may write into the area at all is what `r.area` is for.
    unsafe { register_zcrx_ifq(ring, &mut reg) }?;
    Ok(ZcrxRegistered {
        rq_entries: reg.rq_entries,
        offsets: reg.offsets,
        zcrx_id: reg.zcrx_id,
        rx_buf_len: reg.rx_buf_len,
        rq_area_token: area_reg.rq_area_token,
    })
}

/// Imports an exported zcrx queue (`ZCRX_REG_IMPORT`, its fd in `if_idx`) on `ring`.
pub(crate) fn import_zcrx(
    ring: BorrowedFd<'_>,
    export: BorrowedFd<'_>,
) -> io::Result<ZcrxRegistered> {
    let mut reg = io_uring_zcrx_ifq_reg {
        if_idx: std::os::fd::AsRawFd::as_raw_fd(&export) as u32,
        flags: ZCRX_REG_IMPORT,
        ..Default::default()
    };
    // SAFETY: `reg` is a live local passed as a pointer derived from `&mut`; an import carries
    // no area, region or event pointer (all 0).
    unsafe { register_zcrx_ifq(ring, &mut reg) }?;
    Ok(ZcrxRegistered {
        rq_entries: reg.rq_entries,
        offsets: reg.offsets,
        zcrx_id: reg.zcrx_id,
        rx_buf_len: reg.rx_buf_len,
        rq_area_token: 0,
    })
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
