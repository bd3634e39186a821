//! What registration refuses, and why: no device, no privilege, a queue out of range, bad
//! names, a ring without the flags zcrx needs, another thread, the memlock limit.

use super::*;

/// (a) Loopback has no parent device and no queue-management ops: `EOPNOTSUPP`.
pub(crate) fn loopback_is_device_unsupported() -> Outcome {
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
pub(crate) fn without_cap_net_admin_is_not_permitted() {
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
pub(crate) fn queue_out_of_range() -> Outcome {
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
pub(crate) fn interface_names() {
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
pub(crate) fn ring_requirements() -> Outcome {
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
pub(crate) fn registering_from_another_thread() -> Outcome {
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
pub(crate) fn memlock_limit_is_checked_before_registering() -> Outcome {
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
