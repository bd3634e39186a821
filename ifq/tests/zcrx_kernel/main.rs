//! zcrx against the running kernel. Without a zcrx-capable NIC every registration is refused; these
//! tests pin down *which* refusal each situation gets and that the typed error explains it.
//!
//! What Linux 6.18 answers (`io_register_zcrx_ifq` in `io_uring/zcrx.c`, then `__net_mp_open_rxq`
//! in `net/core/netdev_rx_queue.c`), in the order it checks:
//! 1. no `CAP_NET_ADMIN` -> `EPERM` (before anything else);
//! 2. ring without `DEFER_TASKRUN`, or without `CQE32`/`CQE_MIXED` -> `EINVAL`;
//! 3. bad registration fields (`flags` != 0 on 6.18, so `ZCRX_REG_NODEV` too) -> `EINVAL`;
//! 4. unknown ifindex -> `ENODEV`; an interface without a parent device (`lo`, `ifb`, veth) ->
//!    `EOPNOTSUPP`, before the area is even pinned and before the queue index is looked at;
//! 5. area pinning/accounting -> `EFAULT`/`ENOMEM`;
//! 6. a device whose driver lacks queue-management ops (virtio_net here) -> `EOPNOTSUPP`, again
//!    before the queue index; only then queue index out of range -> `ERANGE`, header/data split
//!    off -> `EINVAL`, XDP or already bound -> `EEXIST`, AF_XDP -> `EBUSY`.
//!
//! So `ERANGE` is only observable on a NIC that supports zcrx; on this kind of machine an
//! out-of-range queue gets `EOPNOTSUPP`, and the tests accept either where they cannot know.
//!
//! A real zero-copy receive runs only when `ZCRX_IFNAME` and `ZCRX_QUEUE` name a prepared queue
//! (see `real_zero_copy_receive`).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use test_kit::{skip, Outcome};
use zcrx_ifq::RxPool;

use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
use zcrx_ifq::error::ZcrxRefusal;
use zcrx_ifq::io_uring::types::{Fd, SubmitArgs, Timespec};
use zcrx_ifq::io_uring::{cqueue, squeue, IoUring};
use zcrx_ifq::nic;
use zcrx_ifq::probe::{probe_with, Backend, KernelVersion, ProbeOptions, ZcrxVerdict};
use zcrx_ifq::zcrx::{Interface, ZcrxConfig, ZcrxIfq};
use zcrx_ifq::{Area, Error, OwnerId, RecvEvent};

#[path = "../common/mod.rs"]
mod common;
use common::zcrx::{nodev_queue, receive_until_eof, require_root, transfer, zcrx_ring};

mod nodev;
mod on_a_nic;
mod refused;

use nodev::*;
use on_a_nic::*;
use refused::*;

fn small_area() -> Area {
    Area::builder()
        .chunk_size(4096)
        .chunks(16)
        .build()
        .expect("a 64 KiB area")
}

fn refusal(r: Result<ZcrxIfq, Error>) -> (Error, ZcrxRefusal) {
    match r {
        Err(e @ Error::ZcrxRefused { refusal, .. }) => (e, refusal),
        Err(e) => panic!("expected a zcrx refusal, got another error: {e}"),
        Ok(ifq) => panic!("registration unexpectedly succeeded: {ifq:?}"),
    }
}

fn interfaces_with_device() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("device").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

test_kit::main!(
    loopback_is_device_unsupported,
    without_cap_net_admin_is_not_permitted,
    queue_out_of_range,
    interface_names,
    ring_requirements,
    registering_from_another_thread,
    memlock_limit_is_checked_before_registering,
    register_nodev,
    nodev_64_mib_through_64_chunks,
    real_zero_copy_receive,
    probe_reports_lo_unsupported_and_picks_a_buffer_ring,
    nodev_events_and_copy_statistics,
    nodev_teardown_with_buffers_held_elsewhere,
);
