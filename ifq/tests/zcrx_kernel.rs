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

mod common;
use common::zcrx::{nodev_queue, receive_until_eof, require_root, transfer, zcrx_ring};

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

/// (a) Loopback has no parent device and no queue-management ops: `EOPNOTSUPP`.
fn loopback_is_device_unsupported() -> Outcome {
    require_root()?;
    let ring = zcrx_ring();
    let (e, r) = refusal(ZcrxIfq::register(
        &ring,
        small_area(),
        ZcrxConfig::new("lo", 0),
    ));
    assert_eq!(r, ZcrxRefusal::DeviceUnsupported);
    let msg = e.to_string();
    assert!(msg.contains("lo queue 0"), "names the queue: {msg}");
    assert!(
        msg.contains("EOPNOTSUPP") && msg.contains("queue-management"),
        "explains why: {msg}"
    );
    assert!(
        msg.contains("buffer-ring"),
        "says what to use instead: {msg}"
    );
    println!("lo queue 0: {msg}");
    Ok(())
}

/// (b) Capabilities are per thread: a thread that dropped `CAP_NET_ADMIN` from its effective set
/// gets `EPERM`, checked before anything else.
fn without_cap_net_admin_is_not_permitted() {
    let result = std::thread::spawn(|| {
        let mut caps = capabilities(None).expect("capget");
        caps.effective.remove(CapabilitySet::NET_ADMIN);
        set_capabilities(None, caps).expect("capset (dropping an effective capability)");
        assert!(!capabilities(None)
            .unwrap()
            .effective
            .contains(CapabilitySet::NET_ADMIN));
        // The ring is created on this thread: SINGLE_ISSUER binds it to its creator.
        let ring = zcrx_ring();
        ZcrxIfq::register(&ring, small_area(), ZcrxConfig::new("lo", 0))
    })
    .join()
    .expect("thread");
    let (e, r) = refusal(result);
    assert_eq!(r, ZcrxRefusal::NotPermitted);
    let msg = e.to_string();
    assert!(
        msg.contains("CAP_NET_ADMIN") && msg.contains("EPERM"),
        "{msg}"
    );
    // This thread kept the capability.
    if rustix::process::geteuid().is_root() {
        assert!(capabilities(None)
            .unwrap()
            .effective
            .contains(CapabilitySet::NET_ADMIN));
    }
}

/// (c) An out-of-range queue fails before registering, saying how many queues there are and how
/// to add some (the kernel looks at the queue index last: `lo` and drivers without
/// queue-management ops would answer `EOPNOTSUPP` first, hiding the real mistake). Queue 0
/// exists everywhere and still reaches the kernel.
fn queue_out_of_range() -> Outcome {
    require_root()?;
    let mut names = interfaces_with_device();
    names.push("lo".to_string());
    for ifname in names {
        let Some(queues) = zcrx_ifq::zcrx::rx_queue_count(&ifname) else {
            println!("{ifname}: sysfs shows no receive queues, not checked");
            continue;
        };
        let ring = zcrx_ring();
        match ZcrxIfq::register(&ring, small_area(), ZcrxConfig::new(&ifname, queues)) {
            Err(e @ Error::QueueOutOfRange { .. }) => {
                let msg = e.to_string();
                println!("{ifname} queue {queues}: {msg}");
                assert!(
                    msg.contains(&format!("{queues} receive queue")) && msg.contains("ethtool -L"),
                    "{msg}"
                );
            }
            other => panic!("{ifname} queue {queues}: expected QueueOutOfRange, got {other:?}"),
        }
        let ring = zcrx_ring();
        match ZcrxIfq::register(&ring, small_area(), ZcrxConfig::new(&ifname, 0)) {
            Err(Error::QueueOutOfRange { .. }) => panic!("{ifname} queue 0 exists"),
            Ok(_) => println!("{ifname} queue 0: registered (a zcrx-capable NIC)"),
            Err(e) => println!("{ifname} queue 0 reaches the kernel: {e}"),
        }
    }
    Ok(())
}

/// (d) Names are validated before any lookup; unknown names and indexes are typed errors.
fn interface_names() {
    let ring = zcrx_ring();
    for (name, why) in [
        ("", "empty"),
        ("abcdefghijklmnop", "longer than 15"),
        ("eth\0", "NUL"),
        ("a/b", "'/'"),
        ("a b", "whitespace"),
        ("..", "'.'"),
    ] {
        match ZcrxIfq::register(&ring, small_area(), ZcrxConfig::new(name, 0)) {
            Err(Error::BadInterfaceName { name: n, why: w }) => {
                assert_eq!(n, name);
                assert!(w.contains(why), "{name:?}: {w}");
            }
            other => panic!("{name:?}: expected BadInterfaceName, got {other:?}"),
        }
    }
    // 15 bytes is the longest valid name; this one does not exist.
    match ZcrxIfq::register(&ring, small_area(), ZcrxConfig::new("nosuchif012345", 0)) {
        Err(Error::UnknownInterface { name }) => assert_eq!(name, "nosuchif012345"),
        other => panic!("expected UnknownInterface, got {other:?}"),
    }
    match ZcrxIfq::register(&ring, small_area(), ZcrxConfig::with_index(0x7fff_fff0, 0)) {
        Err(e @ Error::UnknownInterface { .. }) => assert!(e.to_string().contains("ip link")),
        other => panic!("expected UnknownInterface, got {other:?}"),
    }
    let lo = zcrx_ifq::zcrx::resolve_interface(&Interface::Name("lo".into())).unwrap();
    assert_eq!(
        (lo.name.as_str(), lo.index),
        ("lo", 1),
        "lo is always ifindex 1"
    );
    assert_eq!(
        zcrx_ifq::zcrx::resolve_interface(&Interface::Index(1))
            .unwrap()
            .name,
        "lo"
    );
}

/// A ring without `SINGLE_ISSUER` is refused before the kernel is asked; one with it but without
/// `DEFER_TASKRUN` is refused by the kernel with `EINVAL`.
fn ring_requirements() -> Outcome {
    let plain = IoUring::<squeue::Entry, cqueue::Entry32>::builder()
        .build(8)
        .unwrap();
    match ZcrxIfq::register(&plain, small_area(), ZcrxConfig::new("lo", 0)) {
        Err(e @ Error::RingNotSuitable { .. }) => {
            assert!(e.to_string().contains("setup_defer_taskrun"))
        }
        other => panic!("expected RingNotSuitable, got {other:?}"),
    }
    require_root()?;
    let no_defer = IoUring::<squeue::Entry, cqueue::Entry32>::builder()
        .setup_single_issuer()
        .build(8)
        .unwrap();
    let (e, r) = refusal(ZcrxIfq::register(
        &no_defer,
        small_area(),
        ZcrxConfig::new("lo", 0),
    ));
    assert_eq!(r, ZcrxRefusal::InvalidSetup);
    assert!(e.to_string().contains("DEFER_TASKRUN"), "{e}");
    Ok(())
}

/// A SINGLE_ISSUER ring refuses registrations from any thread but its creator with `EEXIST`
/// (`__io_uring_register`), which the queue reports as a ring problem, not as "queue in use".
fn registering_from_another_thread() -> Outcome {
    require_root()?;
    let ring = zcrx_ring();
    let result = std::thread::scope(|s| {
        s.spawn(|| ZcrxIfq::register(&ring, small_area(), ZcrxConfig::new("lo", 0)))
            .join()
            .unwrap()
    });
    match result {
        Err(e @ Error::RingNotSuitable { .. }) => {
            assert!(e.to_string().contains("another thread"), "{e}")
        }
        other => panic!("expected RingNotSuitable, got {other:?}"),
    }
    Ok(())
}

/// RLIMIT_MEMLOCK is checked before the kernel is asked (since 6.17 the kernel charges the area
/// to it): a thread without `CAP_IPC_LOCK` and an area over the limit gets `MemlockLimit`.
fn memlock_limit_is_checked_before_registering() -> Outcome {
    let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Memlock).current else {
        return Err(skip("RLIMIT_MEMLOCK is unlimited"));
    };
    let chunks = (limit / 4096 + 1).next_power_of_two() as usize;
    let result = std::thread::spawn(move || {
        let mut caps = capabilities(None).expect("capget");
        caps.effective.remove(CapabilitySet::IPC_LOCK);
        set_capabilities(None, caps).expect("capset (dropping an effective capability)");
        let ring = zcrx_ring();
        let area = Area::builder()
            .chunk_size(4096)
            .chunks(chunks)
            .build()
            .unwrap();
        ZcrxIfq::register(&ring, area, ZcrxConfig::new("lo", 0))
    })
    .join()
    .expect("thread");
    match result {
        Err(e @ Error::MemlockLimit { needed, limit: l }) => {
            assert!(needed > l && l == limit, "{e}");
            assert!(e.to_string().contains("ulimit -l"), "{e}");
        }
        other => panic!("expected MemlockLimit, got {other:?}"),
    }
    Ok(())
}

/// `ZCRX_REG_NODEV` arrived in 7.1; older kernels reject the flag with `EINVAL`, which becomes
/// `KernelTooOld`. On 7.1+ a device-less queue copies loopback TCP data into the area.
fn register_nodev() -> Outcome {
    require_root()?;
    let kernel = KernelVersion::current().expect("uname");
    let mut ring = zcrx_ring();
    let area = Area::builder()
        .chunk_size(4096)
        .chunks(256)
        .build()
        .unwrap();
    let result = ZcrxIfq::register_nodev(&ring, area, None, None);
    if !kernel.at_least(7, 1) {
        match result {
            Err(
                e @ Error::KernelTooOld {
                    feature: "ZCRX_REG_NODEV",
                    needs: "7.1",
                },
            ) => {
                println!("{kernel}: {e}");
            }
            other => panic!("expected KernelTooOld on {kernel}, got {other:?}"),
        }
        return Ok(());
    }
    let mut rx = result.expect("ZCRX_REG_NODEV on 7.1+");
    assert!(rx.is_no_device());
    assert!(rx.features().queried && rx.features().no_device());
    // 1 MiB through a 1 MiB area: without ZCRX_CTRL_FLUSH_RQ after returns the area runs dry
    // (nothing else takes refill entries without a device).
    let got = transfer(&mut ring, &mut rx, 1 << 20);
    assert_eq!(got, 1 << 20);
    let stats = rx.stats();
    assert!(stats.ctrl_flushes > 0, "{stats:?}");
    assert_eq!(stats.ctrl_flush_errors, 0, "{stats:?}");
    let report = rx.teardown();
    assert_eq!(report.held_chunks, 0);
    Ok(())
}

/// 64 MiB through a 64-chunk (256 KiB) area without a device: every buffer goes round 256
/// times, byte-exact, and the accounting ends clean.
fn nodev_64_mib_through_64_chunks() -> Outcome {
    let (mut ring, mut rx) = nodev_queue(64, None)?;
    assert_eq!(rx.rq_entries(), 64);
    const LEN: usize = 64 << 20;
    let got = transfer(&mut ring, &mut rx, LEN);
    assert_eq!(got, LEN as u64);
    let stats = rx.stats();
    println!("64 MiB through 64 chunks: {stats:?}");
    assert!(
        stats.returned_chunks >= (LEN / (64 * 4096)) as u64,
        "{stats:?}"
    );
    assert_eq!(stats.ctrl_flush_errors, 0);
    let report = rx.teardown();
    assert_eq!(report.held_chunks, 0);
    Ok(())
}

/// (e) A real zero-copy receive on a NIC queue, in one command: it checks the queue, applies
/// what is missing (`nic::apply`: header/data split on, hds-thresh 0, the queue out of the RSS
/// table), adds the flow rule with `ethtool -N` when ethtool is there, receives, and puts every
/// setting back (the rule deleted, the guard restoring the rest, also when the test fails),
/// then reads the interface again to prove it. Run as root:
/// `ZCRX_IFNAME=eth1 ZCRX_QUEUE=3 cargo test -p zcrx-ifq --test zcrx_kernel real_zero_copy_receive -- --nocapture`
/// (optionally `ZCRX_PORT`, default 9999, and `ZCRX_TIMEOUT_SECS`, default 120), and from another
/// host send the test pattern:
/// `python3 -c 'import sys; sys.stdout.buffer.write(bytes(((i*31)^(i>>8))&255 for i in range(1<<24)))' | nc HOST 9999`.
fn real_zero_copy_receive() -> Outcome {
    let (Ok(ifname), Ok(queue)) = (std::env::var("ZCRX_IFNAME"), std::env::var("ZCRX_QUEUE"))
    else {
        return Err(skip(
            "set ZCRX_IFNAME and ZCRX_QUEUE to a zcrx-capable NIC queue",
        ));
    };
    let queue: u32 = queue.parse().expect("ZCRX_QUEUE is a queue index");
    let port: u16 = std::env::var("ZCRX_PORT")
        .ok()
        .map_or(9999, |p| p.parse().expect("ZCRX_PORT"));
    let timeout = Duration::from_secs(
        std::env::var("ZCRX_TIMEOUT_SECS")
            .ok()
            .map_or(120, |s| s.parse().expect("ZCRX_TIMEOUT_SECS")),
    );
    let before = nic::read(&ifname).unwrap();
    let check = nic::check(&before, queue).unwrap();
    println!("{check}");
    let applied = nic::apply(&ifname, queue).unwrap();
    println!("applied: {:?}", applied.changes());
    let rule = FlowRule::add(&ifname, port, queue);
    let with_rule = nic::read(&ifname).unwrap();
    let check = nic::check(&with_rule, queue).unwrap();
    println!("{check}");
    // The rule `ethtool -N` added reads back through the ioctl, and the step sees it.
    let rules = with_rule
        .ntuple
        .value()
        .expect("the driver lists its ntuple rules");
    assert!(
        rules
            .iter()
            .any(|r| r.steers_tcp_to(queue) && r.dst_port == Some(port)),
        "{rules:?}"
    );
    assert_eq!(
        check.step(nic::StepKind::FlowRule).unwrap().status,
        nic::StepStatus::Done
    );
    let mut ring = IoUring::<squeue::Entry, cqueue::Entry32>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(8192)
        .build(256)
        .unwrap();
    let area = Area::builder()
        .chunk_size(4096)
        .chunks(8192)
        .build()
        .unwrap();
    let mut rx = ZcrxIfq::register(&ring, area, ZcrxConfig::new(&ifname, queue))
        .unwrap_or_else(|e| panic!("zcrx registration on {ifname} queue {queue}: {e}"));
    let listener = TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    println!(
        "zcrx on {ifname} queue {queue} (zcrx id {}): send the pattern to port {port}",
        rx.zcrx_id()
    );
    let deadline = Instant::now() + timeout;
    let sock = loop {
        match listener.accept() {
            Ok((s, peer)) => {
                println!("connection from {peer}");
                break s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no connection within {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    sock.set_nonblocking(false).unwrap();
    let got = receive_until_eof(&mut ring, &mut rx, &sock, timeout);
    let stats = rx.stats();
    println!(
        "received {got} bytes in {} completions; {stats:?}",
        stats.deliveries
    );
    assert!(got > 0, "no data arrived");
    let report = rx.teardown();
    assert_eq!(report.held_chunks, 0);
    // The queue stays bound until the ring goes; then the settings can go back.
    drop(ring);
    drop(rule);
    applied.restore().unwrap();
    let after = nic::read(&ifname).unwrap();
    assert_eq!(after.rings, before.rings, "ring settings restored");
    assert_eq!(after.rss, before.rss, "RSS table restored");
    Ok(())
}

/// An ntuple rule steering a TCP port to a queue, deleted when dropped. ntuple rules have no
/// netlink interface, so this drives `ethtool` (absent: the operator's rule is assumed).
struct FlowRule {
    ifname: String,
    ids: Vec<String>,
}

impl FlowRule {
    fn add(ifname: &str, port: u16, queue: u32) -> Self {
        let mut ids = Vec::new();
        for flow in ["tcp4", "tcp6"] {
            let out = std::process::Command::new("ethtool")
                .args(["-N", ifname, "flow-type", flow, "dst-port"])
                .arg(port.to_string())
                .arg("action")
                .arg(queue.to_string())
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    let text = String::from_utf8_lossy(&o.stdout);
                    // "Added rule with ID 1023"
                    if let Some(id) = text.split_whitespace().last() {
                        println!("flow rule {flow} port {port} -> queue {queue}: id {id}");
                        ids.push(id.to_owned());
                    }
                }
                Ok(o) => println!(
                    "ethtool -N {ifname} flow-type {flow}: {} (keeping the operator's rules)",
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => println!("no ethtool ({e}): steer port {port} to queue {queue} by hand"),
            }
        }
        Self {
            ifname: ifname.to_owned(),
            ids,
        }
    }
}

impl Drop for FlowRule {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = std::process::Command::new("ethtool")
                .args(["-N", &self.ifname, "delete", id])
                .status();
        }
    }
}

/// The probe on this kind of machine: `lo` cannot do zcrx (`EOPNOTSUPP`), and a buffer ring is
/// chosen.
fn probe_reports_lo_unsupported_and_picks_a_buffer_ring() -> Outcome {
    require_root()?;
    let report = probe_with(&ProbeOptions {
        interfaces: Some(vec!["lo".into()]),
        queues: vec![0],
    });
    let verdict = report.verdict("lo", 0).expect("lo queue 0 probed");
    assert_eq!(
        verdict,
        &ZcrxVerdict::Refused(ZcrxRefusal::DeviceUnsupported)
    );
    assert!(verdict.reason().contains("EOPNOTSUPP"));
    assert!(report.has_opcode("RECV"));
    let kernel = report.kernel.clone().expect("kernel version");
    let expected = if kernel.at_least(6, 12) {
        Backend::BufRingIncremental
    } else {
        Backend::BufRing
    };
    assert_eq!(report.backend, expected);
    let text = report.to_string();
    assert!(
        text.contains("lo queue 0") && text.contains("unavailable"),
        "{text}"
    );
    assert!(text.contains("backend:  buffer ring"), "{text}");
    if kernel.at_least(6, 15) {
        assert!(report.has_opcode("RECV_ZC"));
    }

    // Every interface of this machine: whatever they are, nothing may claim zcrx unless a
    // registration really succeeded, and the backend follows the verdicts.
    let all = zcrx_ifq::probe::probe();
    let any_zcrx = all
        .interfaces
        .iter()
        .flat_map(|i| &i.queues)
        .any(|q| q.verdict.is_available());
    assert_eq!(matches!(all.backend, Backend::Zcrx { .. }), any_zcrx);
    println!("{all}");
    Ok(())
}

/// Events and copy statistics (Linux 7.2) without a device: every receive is a copy, so the
/// kernel posts one copy event (then none until re-armed) and counts the bytes it copied; with
/// every buffer held the copy path runs dry, and the receive ends with -ENOMEM.
fn nodev_events_and_copy_statistics() -> Outcome {
    require_root()?;
    let kernel = KernelVersion::current().expect("uname");
    let features = zcrx_ifq::zcrx::ZcrxFeatures::detect().expect("query");
    if !features.events() || !features.no_device() {
        return Err(skip(format!(
            "{kernel} has no zcrx events (7.2+) or no ZCRX_REG_NODEV (7.1+)"
        )));
    }
    const EVENTS: u64 = 0xe7e7;
    let mut ring = zcrx_ring();
    let area = Area::builder().chunk_size(4096).chunks(16).build().unwrap();
    let mut rx = ZcrxIfq::register(
        &ring,
        area,
        zcrx_ifq::zcrx::ZcrxConfig::no_device().events(EVENTS),
    )
    .expect("NODEV with events");
    assert_eq!(rx.event_user_data(), Some(EVENTS));
    // Not fired yet: re-arming is the kernel's EINVAL.
    assert!(rx.rearm_event(zcrx_ifq::zcrx::ZcrxEvent::Copy).is_err());

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let sqe = rx.recv_zc(Fd(server.as_raw_fd())).user_data(1);
    // SAFETY: `server` outlives the request (the ring goes first).
    unsafe { ring.submission().push(&sqe).unwrap() };
    #[derive(Default)]
    struct Seen {
        events: Vec<zcrx_ifq::zcrx::ZcrxEvent>,
        held: Vec<zcrx_ifq::RxBuf>,
        bytes: u64,
        ended: Option<String>,
    }
    // Runs the ring until `until` holds, holding every buffer if `hold`.
    fn pump(
        rx: &mut ZcrxIfq,
        ring: &mut IoUring<squeue::Entry, cqueue::Entry32>,
        seen: &mut Seen,
        hold: bool,
        until: impl Fn(&Seen) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !until(seen) {
            assert!(
                Instant::now() < deadline,
                "stalled: {} bytes, {:?}, {:?}",
                seen.bytes,
                seen.events,
                seen.ended
            );
            let ts = Timespec::new().nsec(50_000_000);
            let _ = ring
                .submitter()
                .submit_with_args(1, &SubmitArgs::new().timespec(&ts));
            let cqes: Vec<_> = ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags(), *c.big_cqe()))
                .collect();
            for (ud, res, flags, big) in cqes {
                if ud == EVENTS {
                    seen.events.push(rx.event(res).expect("a known event"));
                    continue;
                }
                let c = rx.complete(OwnerId(1), res, flags, big).unwrap();
                match c.event {
                    RecvEvent::Data(buf) => {
                        seen.bytes += buf.len() as u64;
                        if hold {
                            seen.held.push(buf);
                        }
                    }
                    e => seen.ended = Some(format!("{e:?}")),
                }
            }
            rx.flush();
        }
    }
    let mut seen = Seen::default();
    // Round 1: 16 KiB, buffers dropped at once. Round 2: 256 KiB, every buffer held, so the
    // 16-page area runs dry.
    client.write_all(&[7u8; 16 << 10]).unwrap();
    pump(&mut rx, &mut ring, &mut seen, false, |s| {
        s.bytes >= 16 << 10 && !s.events.is_empty()
    });
    assert_eq!(
        seen.events,
        [zcrx_ifq::zcrx::ZcrxEvent::Copy],
        "one copy event until re-armed"
    );
    let s = rx.stats();
    assert_eq!((s.copy_bytes, s.copy_events), (16 << 10, 1), "{s:?}");
    // 7.3 counts a copy per skb fragment copied (io_zcrx_copy_frag), not per CQE as the uapi
    // comment says: 16 KiB over loopback arrive as one fragment and four CQEs.
    assert!(s.copy_count >= 1 && s.copy_count <= s.deliveries, "{s:?}");
    rx.rearm_event(zcrx_ifq::zcrx::ZcrxEvent::Copy)
        .expect("re-arm after it fired");

    client.write_all(&[9u8; 256 << 10]).unwrap();
    pump(&mut rx, &mut ring, &mut seen, true, |s| s.ended.is_some());
    let Seen {
        events,
        held,
        bytes,
        ended,
    } = seen;
    let s = rx.stats();
    println!("events {events:?}, ended with {ended:?}; {s:?}");
    assert_eq!(
        ended.as_deref(),
        Some("NoBuffers"),
        "the copy path ran dry (-ENOMEM)"
    );
    // 7.3 posts ZCRX_EVENT_ALLOC_FAIL only from the page pool's refill
    // (io_pp_zc_alloc_netmems); the copy path that a queue without a device uses fails with
    // -ENOMEM and posts nothing. So without a device the receive's end is the only signal.
    assert_eq!(s.out_of_buffer_events, 0, "{s:?}");
    assert_eq!(s.copy_events, 2, "re-armed, it fired once more: {s:?}");
    assert_eq!(
        s.copy_bytes, bytes,
        "the kernel counted every byte it copied"
    );
    assert_eq!(held.len(), 16, "every page of the area is held");
    drop(held);
    rx.flush();
    drop(server);
    assert_eq!(rx.teardown().held_chunks, 0);
    Ok(())
}

/// Fds of this process open on the file with inode `ino` (each io_uring has its own inode).
fn fds_on(ino: u64) -> usize {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
        .filter(|m| m.ino() == ino)
        .count()
}

/// Teardown without a device while buffers are held on other threads: the report counts them,
/// the ring lives on while they do (the kernel's scrub would let it reuse them), their bytes do
/// not change while another queue streams 8 MiB, and the ring goes once the last one drops.
fn nodev_teardown_with_buffers_held_elsewhere() -> Outcome {
    let (mut ring, mut rx) = nodev_queue(64, None)?;
    let ring_ino = rustix::fs::fstat(&ring).unwrap().st_ino;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.write_all(&[0x5a; 40 << 10]).unwrap();
    let sqe = rx.recv_zc(Fd(server.as_raw_fd())).user_data(1);
    // SAFETY: `server` outlives the request (the queue's ring goes first, below).
    unsafe { ring.submission().push(&sqe).unwrap() };
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held
        .iter()
        .map(|b: &zcrx_ifq::RxBuf| b.len())
        .sum::<usize>()
        < 40 << 10
    {
        assert!(Instant::now() < deadline, "40 KiB did not arrive");
        ring.submit_and_wait(1).unwrap();
        let cqes: Vec<_> = ring
            .completion()
            .map(|c| (c.result(), c.flags(), *c.big_cqe()))
            .collect();
        for (res, flags, big) in cqes {
            if let RecvEvent::Data(buf) = rx.complete(OwnerId(1), res, flags, big).unwrap().event {
                held.push(buf);
            }
        }
    }
    let sums: Vec<u64> = held.iter().map(|b| checksum(b)).collect();
    let n = held.len();
    // Half the buffers go to other threads, which hold them until told to check and drop.
    let (tx, rx_done) = std::sync::mpsc::channel::<()>();
    let rx_done = std::sync::Arc::new(std::sync::Mutex::new(rx_done));
    let elsewhere: Vec<_> = held
        .drain(n / 2..)
        .zip(sums[n / 2..].to_vec())
        .map(|(buf, sum)| {
            let wait = std::sync::Arc::clone(&rx_done);
            std::thread::spawn(move || {
                let _ = wait.lock().unwrap().recv();
                assert_eq!(checksum(&buf), sum, "a held buffer changed");
            })
        })
        .collect();
    let report = rx.teardown();
    assert_eq!(report.held_chunks as usize, n, "{report:?}");
    drop(ring);
    drop(server);
    assert_eq!(
        fds_on(ring_ino),
        1,
        "the queue's duplicate keeps the ring open"
    );
    // Another queue streams 8 MiB meanwhile: the kernel must not reuse the held pages.
    let (mut ring2, mut rx2) = nodev_queue(64, None).unwrap();
    assert_eq!(transfer(&mut ring2, &mut rx2, 8 << 20), 8 << 20);
    for (buf, sum) in held.iter().zip(&sums) {
        assert_eq!(checksum(buf), *sum, "a held buffer changed");
    }
    drop(held);
    for _ in &elsewhere {
        tx.send(()).unwrap();
    }
    for t in elsewhere {
        t.join().expect("a holder thread");
    }
    drop(rx2.teardown());
    drop(ring2);
    assert_eq!(fds_on(ring_ino), 0, "the ring went with the last buffer");
    println!(
        "{n} buffers held across teardown, {} on other threads",
        n - n / 2
    );
    Ok(())
}

fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
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
