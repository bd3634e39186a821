//! zcrx helpers shared by the zcrx kernel tests: the ring zcrx needs, the guards that skip
//! with a reason, and a loopback transfer checked byte by byte.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use zcrx_ifq::RxPool;

use rustix::thread::{capabilities, CapabilitySet};
use test_kit::{skip, Outcome, Skip};
use zcrx_ifq::io_uring::types::{Fd, SubmitArgs, Timespec};
use zcrx_ifq::io_uring::{cqueue, squeue, IoUring};
use zcrx_ifq::probe::KernelVersion;
use zcrx_ifq::zcrx::{ZcrxFeatures, ZcrxIfq};
use zcrx_ifq::{Area, OwnerId, RecvEvent};

/// A ring as zcrx needs it: `SINGLE_ISSUER | DEFER_TASKRUN` with 32-byte CQEs.
pub(crate) fn zcrx_ring() -> IoUring<squeue::Entry, cqueue::Entry32> {
    IoUring::<squeue::Entry, cqueue::Entry32>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(1024)
        .build(64)
        .expect("a SINGLE_ISSUER | DEFER_TASKRUN ring with 32-byte CQEs")
}

/// A skip when this process cannot get past the capability check.
pub(crate) fn require_root() -> Outcome {
    let caps = capabilities(None).expect("capget");
    if !rustix::process::geteuid().is_root() || !caps.effective.contains(CapabilitySet::NET_ADMIN) {
        return Err(skip("needs root (CAP_NET_ADMIN)"));
    }
    Ok(())
}

/// A skip saying why where this kernel or process cannot have a device-less queue; else what
/// the kernel's query says. Where `ZCRX_NODEV_REQUIRED` is set (`.ci/run` sets it in the kernel
/// guest) it fails instead, so that a guest that cannot run them does not go green.
pub(crate) fn nodev_guard() -> Result<ZcrxFeatures, Skip> {
    let required = std::env::var_os("ZCRX_NODEV_REQUIRED").is_some();
    if let Err(why) = require_root() {
        assert!(!required, "ZCRX_NODEV_REQUIRED is set and {why}");
        return Err(why);
    }
    let kernel = KernelVersion::current().expect("uname");
    if !kernel.at_least(7, 1) {
        assert!(
            !required,
            "ZCRX_NODEV_REQUIRED is set and {kernel} has no ZCRX_REG_NODEV"
        );
        return Err(skip(format!(
            "{kernel} has no ZCRX_REG_NODEV (7.1+); the kernel guest runs it"
        )));
    }
    let features = ZcrxFeatures::detect().expect("IORING_REGISTER_QUERY");
    // 7.1 has the query (6.19) and NODEV: a kernel that says otherwise is not the one we think.
    assert!(
        features.queried && features.no_device(),
        "{kernel} does not report ZCRX_REG_NODEV: {features:?}"
    );
    Ok(features)
}

/// A NODEV queue on a new ring with `chunks` pages, or a skip saying why this kernel or process
/// cannot have one.
pub(crate) fn nodev_queue(
    chunks: usize,
    rq_entries: Option<u32>,
) -> Result<(IoUring<squeue::Entry, cqueue::Entry32>, ZcrxIfq), Skip> {
    nodev_guard()?;
    let ring = zcrx_ring();
    let area = Area::builder()
        .chunk_size(4096)
        .chunks(chunks)
        .build()
        .unwrap();
    let rx =
        ZcrxIfq::register_nodev(&ring, area, rq_entries, None).expect("ZCRX_REG_NODEV on 7.1+");
    Ok((ring, rx))
}

/// Sends `len` bytes of [`pattern`] over a loopback connection and receives them through `rx`,
/// checking every byte. Returns the bytes received.
pub(crate) fn transfer(
    ring: &mut IoUring<squeue::Entry, cqueue::Entry32>,
    rx: &mut ZcrxIfq,
    len: usize,
) -> u64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let writer = std::thread::spawn(move || {
        let data: Vec<u8> = (0..len).map(pattern).collect();
        client.write_all(&data).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest);
    });
    let got = receive_until_eof(ring, rx, &server, Duration::from_secs(120));
    // The writer waits for the server side to close.
    drop(server);
    writer.join().unwrap();
    got
}

/// Byte `i` of the stream `transfer` and `receive_until_eof` use. Not test-kit's keyed
/// pattern on purpose: the real-NIC test receives it from another host, whose sender is a
/// one-line Python command (`zcrx_kernel/on_a_nic.rs`).
pub(crate) fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 8)) as u8
}

/// Receives on `sock` through `rx` until EOF, checking every byte against [`pattern`] and
/// re-arming after overflow or buffer shortage. Returns the byte count.
pub(crate) fn receive_until_eof(
    ring: &mut IoUring<squeue::Entry, cqueue::Entry32>,
    rx: &mut ZcrxIfq,
    sock: &TcpStream,
    timeout: Duration,
) -> u64 {
    let deadline = Instant::now() + timeout;
    let arm = |ring: &mut IoUring<squeue::Entry, cqueue::Entry32>, rx: &ZcrxIfq| {
        let sqe = rx.recv_zc(Fd(sock.as_raw_fd())).user_data(1);
        // SAFETY: the socket outlives the request (it is only closed after EOF, which ends it).
        unsafe { ring.submission().push(&sqe).expect("SQ has room") };
    };
    arm(ring, rx);
    let mut received = 0u64;
    loop {
        assert!(
            Instant::now() < deadline,
            "no EOF within {timeout:?} ({received} bytes so far)"
        );
        let ts = Timespec::new().sec(1);
        match ring
            .submitter()
            .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
        {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::TIME.raw_os_error()) => {}
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INTR.raw_os_error()) => {}
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        let cqes: Vec<(i32, u32, [u64; 2])> = ring
            .completion()
            .map(|c| (c.result(), c.flags(), *c.big_cqe()))
            .collect();
        let mut done = false;
        for (res, flags, big) in cqes {
            let c = rx
                .complete(OwnerId(1), res, flags, big)
                .expect("a valid completion");
            let rearm = c.needs_rearm();
            match c.event {
                RecvEvent::Data(buf) => {
                    for (i, &b) in buf.iter().enumerate() {
                        assert_eq!(
                            b,
                            pattern(received as usize + i),
                            "byte {}",
                            received as usize + i
                        );
                    }
                    received += buf.len() as u64;
                }
                RecvEvent::Eof => done = true,
                RecvEvent::NoBuffers | RecvEvent::CqOverflow => {}
                RecvEvent::Error(e) => panic!("receive failed: {e}"),
            }
            if rearm && !done {
                rx.flush();
                arm(ring, rx);
            }
        }
        rx.flush();
        if done {
            return received;
        }
    }
}
