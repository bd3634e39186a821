//! liburing's own zcrx test (`test/zcrx.c`, the `ZCRX_REG_NODEV` rewrite: the kernel maintainers'
//! list of cases and expected errnos), case by case against `ifq`. It needs Linux 7.1+ (no
//! device); on older kernels every test is reported as ignored, with the reason. Run it in the 7.x
//! guest: `cargo run -p guest -- test -p zcrx-ifq --test zcrx_liburing_cases`.
//!
//! Each case asserts the exact errno Linux 7.3 gives (read from `io_uring/zcrx.c`, `memmap.c`,
//! `rsrc.c`, `register.c` and `net.c`; liburing often accepts either of two) and what `ifq` makes
//! of it. Where the safe API can express a case it goes through the API (`ZcrxIfq::register*`,
//! `ZcrxConfig::rx_buf_len`, `RecvEvent` from `complete()`, `export()`/`import()`, the hidden
//! `raw_refill`/`raw_ctrl_flush*` hooks for hostile refill rings). `ifq` maps the area and the
//! refill region itself (page-aligned, writable, the region sized for the entries) and keeps
//! the registration and control structs to itself, so the cases about those are sent raw, built
//! from `zcrx_ifq::abi_info`, and show what `ZcrxRefusal::from_errno` makes of the errno.
//!
//! | case                                        | 7.3 answer                                 |
//! |---------------------------------------------|--------------------------------------------|
//! | no refill region / NULL region memory       | EFAULT (`copy_from_user`/`io_create_region`) |
//! | region size 0 / too small for the entries   | EINVAL (`io_allocate_rbuf_ring`)           |
//! | rq_entries 127                              | 0, rounded up to 128 and written back      |
//! | rq_entries 0, ~0, 32769 (no CLAMP), 384     | EINVAL                                     |
//! | area len 0 / addr 0 / no area               | EFAULT                                     |
//! | area below / above its mapping, read-only   | EFAULT (`pin_user_pages_fast`)             |
//! | area size or address not page-aligned       | EINVAL (`io_import_area`)                  |
//! | read-only registration structs              | EFAULT (`copy_to_user`, rolled back)       |
//! | rx_buf_len ~0 / 1<<31 (no device)           | EINVAL / EOPNOTSUPP                        |
//! | receive on fd -1 / ring fd / wrong ifq id   | EBADF / ENOTSOCK / EINVAL, no F_MORE       |
//! | receive on a UDP socket (not in liburing)   | EPROTONOSUPPORT, no F_MORE                 |
//! | flush of an unknown id                      | ENXIO                                      |
//! | export without a ring / unknown id          | EINVAL / ENXIO                             |
//! | import of fd -1 / without a ring            | EBADF / EINVAL                             |
//! | export into read-only memory                | EFAULT                                     |
//! | hostile refill entries and indices, flushed | 0 (the kernel skips them)                  |
//! | twice the area, nothing returned            | -ENOMEM ends the receive                   |

use std::ffi::c_void;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::addr_of_mut;
use std::time::{Duration, Instant};
use test_kit::{skip, Outcome};
use zcrx_ifq::RxPool;

use zcrx_ifq::abi_info::{
    io_uring_region_desc, io_uring_zcrx_area_reg, io_uring_zcrx_ifq_reg, zcrx_ctrl,
    IORING_MEM_REGION_TYPE_USER, IORING_REGISTER_ZCRX_CTRL, IORING_REGISTER_ZCRX_IFQ,
    IORING_ZCRX_AREA_SHIFT, RQE_SIZE, ZCRX_CTRL_EXPORT, ZCRX_REG_IMPORT, ZCRX_REG_NODEV,
};
use zcrx_ifq::completion::CQE_F_MORE;
use zcrx_ifq::error::ZcrxRefusal;
use zcrx_ifq::io_uring::types::{Fd, SubmitArgs, Timespec};
use zcrx_ifq::io_uring::{cqueue, opcode, squeue, IoUring};
use zcrx_ifq::zcrx::{ZcrxConfig, ZcrxFeatures, ZcrxIfq};
use zcrx_ifq::{Area, Error, OwnerId, RecvEvent, RxBuf};

#[path = "../common/mod.rs"]
mod common;
use common::zcrx::{nodev_guard, zcrx_ring};

type Ring = IoUring<squeue::Entry, cqueue::Entry32>;

/// liburing's `RQ_ENTRIES`, `RQ_ENTRIES_SMALL` and `AREA_SZ` (4096 * 132).
const RQ_ENTRIES: u32 = 128;
const RQ_ENTRIES_SMALL: u32 = 16;
const AREA_PAGES: usize = 132;
/// `IO_RQ_MAX_ENTRIES`: the largest refill ring without `IORING_SETUP_CLAMP`.
const RQ_MAX: u32 = 32768;
const USER_DATA: u64 = 0x2c7c;

fn page() -> usize {
    rustix::param::page_size()
}

fn area_len() -> usize {
    AREA_PAGES * page()
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        0 => "0",
        libc::EINVAL => "EINVAL",
        libc::EFAULT => "EFAULT",
        libc::EBADF => "EBADF",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::ENXIO => "ENXIO",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOMEM => "ENOMEM",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ERANGE => "ERANGE",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EPERM => "EPERM",
        _ => "another errno",
    }
}

mod clone;
mod raw;
mod recv;
mod refill;
mod register;
mod transfer;

use clone::*;
use raw::*;
use recv::*;
use refill::*;
use register::*;
use transfer::*;

test_kit::main!(
    register_basic,
    refill_region_refused,
    rq_entries_rounding,
    rq_entries_limits,
    area_bounds,
    area_read_only,
    rx_buf_len_refused,
    rx_buf_len_2_gib_without_a_device,
    read_only_params,
    invalid_recv,
    exit_with_a_receive_in_flight,
    invalid_clone,
    clone_and_receive_through_the_import,
    flush_of_an_unknown_id,
    refill_entries_naming_an_unheld_buffer,
    refill_entries_out_of_bounds,
    refill_tail_behind_head,
    refill_tail_past_the_ring,
    recv_without_returns_runs_dry,
    recv_with_returns,
    recv_lazy_returns_small_refill_ring,
    abnormal_exit_direct,
    abnormal_exit_iowq,
    abnormal_exit_direct_exported,
    abnormal_exit_iowq_exported,
);
