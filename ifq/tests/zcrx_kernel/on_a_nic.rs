//! On a zcrx-capable NIC (`ZCRX_IFNAME`, `ZCRX_QUEUE`): set-up checked and applied, a flow
//! rule, real zero-copy receive; and the probe's verdict on loopback.

use super::*;

/// (e) A real zero-copy receive on a NIC queue, in one command: it checks the queue, applies
/// what is missing (`nic::apply`: header/data split on, hds-thresh 0, the queue out of the RSS
/// table), adds the flow rule with `ethtool -N` when ethtool is there, receives, and puts every
/// setting back (the rule deleted, the guard restoring the rest, also when the test fails),
/// then reads the interface again to prove it. Run as root:
/// `ZCRX_IFNAME=eth1 ZCRX_QUEUE=3 cargo test -p zcrx-ifq --test zcrx_kernel real_zero_copy_receive -- --nocapture`
/// (optionally `ZCRX_PORT`, default 9999, and `ZCRX_TIMEOUT_SECS`, default 120), and from another
/// host send the test pattern:
/// `python3 -c 'import sys; sys.stdout.buffer.write(bytes(((i*31)^(i>>8))&255 for i in range(1<<24)))' | nc HOST 9999`.
pub(crate) fn real_zero_copy_receive() -> Outcome {
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
pub(crate) struct FlowRule {
    pub(crate) ifname: String,
    pub(crate) ids: Vec<String>,
}

impl FlowRule {
    pub(crate) fn add(ifname: &str, port: u16, queue: u32) -> Self {
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
pub(crate) fn probe_reports_lo_unsupported_and_picks_a_buffer_ring() -> Outcome {
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
