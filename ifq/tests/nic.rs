//! The NIC settings reader, checker and apply against the running kernel: loopback and veth on
//! the host (no ring parameters), virtio_net in the guest (`--virtio-net 2`), a zcrx-capable NIC
//! when `ZCRX_IFNAME` and `ZCRX_QUEUE` name one.

use test_kit::netns::{in_netns, is_root, rx_bytes, virtio_nets, HubPair};
use test_kit::{skip, Outcome};
use zcrx_ifq::nic::{self, Change, NicError, NicState, Read, StepKind, StepStatus};

/// Held by the tests that read or change the virtio_net interfaces: libtest runs tests in
/// parallel, and one test's change must not show in another's reads.
static VIRTIO_NICS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn unknown_interface_is_a_typed_error() {
    assert_eq!(
        nic::read("nosuchif0").unwrap_err(),
        NicError::UnknownInterface("nosuchif0".into())
    );
    assert!(matches!(
        nic::apply("nosuchif0", 0),
        Err(NicError::UnknownInterface(_))
    ));
}

fn loopback_has_no_ring_params_and_apply_changes_nothing() {
    let before = nic::read("lo").unwrap();
    println!("{before:#?}");
    assert_eq!(before.driver, None);
    assert!(
        matches!(before.rings, Read::NotSupported(_)),
        "{:?}",
        before.rings
    );
    let check = nic::check(&before, 0).unwrap();
    println!("{check}");
    assert!(matches!(
        check.step(StepKind::HeaderSplit).unwrap().status,
        StepStatus::Unsupported(_)
    ));
    // Loopback has no rxnfc operations: the ntuple ioctl answers EOPNOTSUPP.
    assert!(
        matches!(&before.ntuple, Read::NotSupported(why) if why.contains("ETHTOOL_GRXCLSRLCNT")),
        "{:?}",
        before.ntuple
    );
    assert_flow_step_follows_the_rules(&before, &check);
    assert!(!check.ready());
    let err = nic::apply("lo", 0).unwrap_err();
    assert!(matches!(err, NicError::NotSupported { .. }), "{err:?}");
    if let Some(n) = before.rx_queue_count() {
        assert!(matches!(
            nic::apply("lo", n),
            Err(NicError::QueueOutOfRange { .. })
        ));
    }
    assert_eq!(nic::read("lo").unwrap(), before);
}

/// The ntuple rules read through the ioctl decide the flow-rule step: none on the driver is
/// unsupported, a readable empty table is missing (nothing here adds rules), and the read itself
/// never fails on these drivers.
fn assert_flow_step_follows_the_rules(state: &NicState, check: &nic::Check) {
    let step = &check.step(StepKind::FlowRule).unwrap().status;
    match &state.ntuple {
        Read::NotSupported(_) => assert!(matches!(step, StepStatus::Unsupported(_)), "{step:?}"),
        Read::Value(rules) => {
            assert!(rules.is_empty(), "{rules:?}");
            assert!(matches!(step, StepStatus::Missing { .. }), "{step:?}");
        }
        Read::Failed(why) => panic!("reading the ntuple rules of {}: {why}", state.ifname),
    }
}

fn veth_has_no_ring_params_and_apply_changes_nothing() -> Outcome {
    if !is_root() {
        return Err(skip("needs root to create a veth pair"));
    }
    let ok = std::process::Command::new("ip")
        .args([
            "link",
            "add",
            "zcnic0",
            "numrxqueues",
            "4",
            "numtxqueues",
            "4",
            "type",
            "veth",
            "peer",
            "name",
            "zcnic1",
        ])
        .status()
        .is_ok_and(|s| s.success())
        && std::process::Command::new("ip")
            .args(["link", "set", "zcnic0", "up"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        return Err(skip(
            "`ip link add ... type veth` failed (no veth module or no ip)",
        ));
    }
    let result = std::panic::catch_unwind(|| {
        let before = nic::read("zcnic0").unwrap();
        println!("{before:#?}");
        // Every queue of the dump, not only the first message's.
        let ids: Vec<u32> = before
            .rx_queues
            .value()
            .expect("netdev lists the queues")
            .iter()
            .map(|q| q.id)
            .collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        let check = nic::check(&before, 3).unwrap();
        assert_flow_step_follows_the_rules(&before, &check);
        assert!(matches!(
            nic::check(&before, 4),
            Err(NicError::QueueOutOfRange { .. })
        ));
        let check = nic::check(&before, 0).unwrap();
        println!("{check}");
        assert!(!check.ready());
        let err = nic::apply("zcnic0", 0).unwrap_err();
        println!("apply: {err}");
        assert!(matches!(err, NicError::NotSupported { .. }), "{err:?}");
        assert_eq!(nic::read("zcnic0").unwrap(), before);
    });
    let _ = std::process::Command::new("ip")
        .args(["link", "del", "zcnic0"])
        .status();
    result.unwrap();
    Ok(())
}

fn virtio_net_reports_no_header_split() -> Outcome {
    let _nics = VIRTIO_NICS.lock().unwrap_or_else(|e| e.into_inner());
    let nics = virtio_nets();
    if nics.is_empty() {
        return Err(skip(
            "no virtio_net interface (the guest's --virtio-net N gives them)",
        ));
    }
    // The largest combined_max seen, with that interface's queues and channels.
    let mut most_queues = (0, 0, 0);
    for ifname in &nics {
        let before = nic::read(ifname).unwrap();
        println!("{before:#?}");
        assert_eq!(before.driver.as_deref(), Some("virtio_net"));
        let channels = before
            .channels
            .value()
            .expect("virtio_net reports channels");
        assert!(channels.rx_queues() >= 1, "{channels:?}");
        let queues = before.rx_queues.value().expect("netdev lists the queues");
        assert_eq!(queues.len() as u32, before.rx_queue_count().unwrap());
        // Every receive queue is served by a NAPI instance of its own.
        let napi: std::collections::BTreeSet<u32> = queues
            .iter()
            .map(|q| q.napi_id.expect("virtio_net links its queues to NAPI ids"))
            .collect();
        assert_eq!(napi.len(), queues.len(), "{queues:?}");
        // virtio_net runs min(its queue pairs, the CPUs) of them.
        let max = channels.combined_max.unwrap_or(1);
        if max > most_queues.0 {
            most_queues = (max, queues.len() as u32, channels.rx_queues());
        }
        let check = nic::check(&before, 0).unwrap();
        println!("{check}");
        assert!(matches!(
            check.step(StepKind::HeaderSplit).unwrap().status,
            StepStatus::Unsupported(_)
        ));
        assert_flow_step_follows_the_rules(&before, &check);
        let err = nic::apply(ifname, 0).unwrap_err();
        println!("apply: {err}");
        assert!(matches!(err, NicError::NotSupported { .. }), "{err:?}");
        let n = before.rx_queue_count().unwrap();
        assert!(matches!(
            nic::apply(ifname, n),
            Err(NicError::QueueOutOfRange { .. })
        ));
        assert_eq!(nic::read(ifname).unwrap(), before);
    }
    // The kernel guest's `--virtio-net-mq Q` adds a device with Q queue pairs; CI says so.
    if let Ok(q) = std::env::var("NIC_EXPECT_QUEUE_PAIRS") {
        let q: u32 = q.parse().expect("NIC_EXPECT_QUEUE_PAIRS is a number");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let (max, listed, channels) = most_queues;
        assert_eq!(
            max, q,
            "a virtio_net interface with {q} queue pairs at most"
        );
        assert_eq!(channels, q.min(cpus), "one queue pair per CPU in use");
        assert_eq!(listed, channels, "netdev lists every queue in use");
        println!("virtio_net: {max} queue pairs at most, {channels} in use, {listed} listed");
    }
    Ok(())
}

/// On a virtio_net device with RSS (the kernel guest's `--virtio-net-mq`, whose device QEMU
/// gives `rss=on`), the RSS table is a real setting: taking a queue out of it and putting it back
/// leaves every setting as it was, through `restore`, through the guard's drop, and when a later
/// change fails halfway.
fn virtio_net_rss_table_applies_and_restores() -> Outcome {
    let _nics = VIRTIO_NICS.lock().unwrap_or_else(|e| e.into_inner());
    let with_rss: Vec<(String, NicState)> = virtio_nets()
        .into_iter()
        .map(|n| {
            let s = nic::read(&n).unwrap();
            (n, s)
        })
        .filter(|(_, s)| {
            s.rx_queue_count().unwrap_or(0) >= 2
                && s.rss
                    .value()
                    .is_some_and(|c| c.iter().any(|c| c.context == 0 && !c.indir.is_empty()))
        })
        .collect();
    if with_rss.is_empty() {
        assert!(
            std::env::var_os("NIC_EXPECT_QUEUE_PAIRS").is_none(),
            "the multi-queue virtio_net device has no RSS table"
        );
        return Err(skip(
            "no multi-queue virtio_net with RSS (the guest's --virtio-net-mq Q)",
        ));
    }
    for (ifname, before) in with_rss {
        let count = before.rx_queue_count().unwrap();
        let table = &before.rss.value().unwrap()[0].indir;
        assert!(table.contains(&0), "{table:?}");
        let check = nic::check(&before, 0).unwrap();
        assert!(matches!(
            check.step(StepKind::RssOff).unwrap().status,
            StepStatus::Missing { .. }
        ));
        let indir = nic::rss_table_without(0, count, table.len()).unwrap();
        let change = || Change::RssTable {
            indir: indir.clone(),
        };

        let applied = nic::apply_changes(&ifname, vec![change()]).unwrap();
        let during = nic::read(&ifname).unwrap();
        assert_eq!(during.rss.value().unwrap()[0].indir, indir);
        assert_eq!(
            nic::check(&during, 0)
                .unwrap()
                .step(StepKind::RssOff)
                .unwrap()
                .status,
            StepStatus::Done
        );
        applied.restore().unwrap();
        assert_eq!(nic::read(&ifname).unwrap(), before, "restore");

        drop(nic::apply_changes(&ifname, vec![change()]).unwrap());
        assert_eq!(nic::read(&ifname).unwrap(), before, "the guard's drop");

        // The RSS change succeeds, the rings change after it fails: nothing stays changed.
        let err = nic::apply_changes(
            &ifname,
            vec![
                change(),
                Change::Rings {
                    data_split: true,
                    hds_thresh: true,
                },
            ],
        )
        .unwrap_err();
        println!("{ifname}: halfway: {err}");
        assert!(matches!(err, NicError::NotSupported { .. }), "{err:?}");
        assert_eq!(nic::read(&ifname).unwrap(), before, "a failure halfway");

        // A table naming a queue the interface does not have changes nothing.
        let bad = vec![count; table.len()];
        assert!(matches!(
            nic::apply_changes(&ifname, vec![Change::RssTable { indir: bad }]),
            Err(NicError::QueueOutOfRange { .. })
        ));
        assert_eq!(nic::read(&ifname).unwrap(), before);
    }
    Ok(())
}

fn capable_nic_apply_and_restore() -> Outcome {
    let (Ok(ifname), Ok(queue)) = (std::env::var("ZCRX_IFNAME"), std::env::var("ZCRX_QUEUE"))
    else {
        return Err(skip(
            "needs a zcrx-capable NIC: set ZCRX_IFNAME and ZCRX_QUEUE",
        ));
    };
    let queue: u32 = queue.parse().expect("ZCRX_QUEUE is a number");
    let before = nic::read(&ifname).unwrap();
    let applied = nic::apply(&ifname, queue).unwrap();
    let during = nic::check(&nic::read(&ifname).unwrap(), queue).unwrap();
    println!("{during}");
    assert_eq!(
        during.step(StepKind::HeaderSplit).unwrap().status,
        StepStatus::Done
    );
    applied.restore().unwrap();
    assert_eq!(nic::read(&ifname).unwrap().rings, before.rings);
    Ok(())
}

/// The kernel guest's two hub devices (`--virtio-net 2`), one moved into a network namespace:
/// traffic between them crosses QEMU's hub and both virtio_net drivers (the kernel would route
/// it over `lo` if both were in one namespace). The checks run on each side against the real
/// driver, in its namespace, and `apply` changes nothing on either; 16 MiB sent from the
/// namespace arrive byte for byte through the other device's receive path.
fn virtio_net_hub_pair_across_namespaces() -> Outcome {
    let _nics = VIRTIO_NICS.lock().unwrap_or_else(|e| e.into_inner());
    let before_here = match test_kit::netns::virtio_nets().first() {
        Some(n) => nic::read(n).unwrap(),
        None => {
            return Err(skip(
                "needs two virtio_net devices on a hub (the guest's --virtio-net 2)",
            ))
        }
    };
    let pair = HubPair::new("zcpeer").map_err(skip)?;
    let (here, there, ns) = (pair.here.clone(), pair.there.clone(), pair.ns);
    assert_eq!(before_here.ifname, here);

    // The checks against the driver, on each side of the hub.
    let check_here = nic::check(&nic::read(&here).unwrap(), 0).unwrap();
    println!("{here}, this namespace:\n{check_here}");
    let name = there.clone();
    let (there_state, check_there, apply_there, after_there) = in_netns(ns, move || {
        let state = nic::read(&name).unwrap();
        let check = nic::check(&state, 0).unwrap().to_string();
        let apply = nic::apply(&name, 0).map(|_| ()).unwrap_err();
        (state, check, apply, nic::read(&name).unwrap())
    });
    println!("{there}, namespace {ns}:\n{check_there}");
    assert_eq!(there_state.driver.as_deref(), Some("virtio_net"));
    for check in [check_here.to_string(), check_there.clone()] {
        assert!(
            check.contains("header/data split on: NOT SUPPORTED"),
            "{check}"
        );
        assert!(check.contains("not ready for zcrx"), "{check}");
    }
    assert!(
        matches!(apply_there, NicError::NotSupported { .. }),
        "{apply_there:?}"
    );
    assert_eq!(after_there, there_state, "apply changed {there}");
    assert!(matches!(
        nic::apply(&here, 0),
        Err(NicError::NotSupported { .. })
    ));

    // Traffic through the hub: the namespace's device sends, this one receives.
    const LEN: usize = 16 << 20;
    let listener = std::net::TcpListener::bind((HubPair::HERE_ADDR, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx_before = rx_bytes(&here);
    let sender = std::thread::spawn(move || {
        in_netns(ns, move || {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect((HubPair::HERE_ADDR, port)).unwrap();
            let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
            s.write_all(&data).unwrap();
        })
    });
    let (mut conn, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip().to_string(), HubPair::THERE_ADDR);
    let mut got = Vec::with_capacity(LEN);
    std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
    sender.join().unwrap();
    assert_eq!(got.len(), LEN);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    let crossed = rx_bytes(&here) - rx_before;
    println!("{LEN} bytes from {ns} through the hub: {here} received {crossed} bytes");
    assert!(crossed >= LEN as u64, "{crossed} bytes on {here}");

    drop(pair);
    assert_eq!(nic::read(&here).unwrap().rings, before_here.rings);
    Ok(())
}

test_kit::main!(
    unknown_interface_is_a_typed_error,
    loopback_has_no_ring_params_and_apply_changes_nothing,
    veth_has_no_ring_params_and_apply_changes_nothing,
    virtio_net_reports_no_header_split,
    virtio_net_rss_table_applies_and_restores,
    virtio_net_hub_pair_across_namespaces,
    capable_nic_apply_and_restore,
);
