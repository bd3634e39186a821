//! The pure check and plan against hand-made interface states.

use super::*;

fn capable() -> NicState {
    NicState {
        ifname: "eth1".into(),
        ifindex: 3,
        driver: Some("mlx5_core".into()),
        rings: Read::Value(Rings {
            rx: Some(1024),
            tcp_data_split: Some(DataSplit::Unknown),
            hds_thresh: Some(256),
            hds_thresh_max: Some(1024),
            ..Rings::default()
        }),
        channels: Read::Value(Channels {
            combined: Some(4),
            combined_max: Some(8),
            ..Channels::default()
        }),
        rss: Read::Value(vec![RssContext {
            context: 0,
            indir: vec![0, 1, 2, 3, 0, 1, 2, 3],
        }]),
        ntuple: Read::Value(Vec::new()),
        rx_queues: Read::Value(
            (0..4)
                .map(|id| RxQueue {
                    id,
                    napi_id: Some(8193 + id),
                    irq: Some(40 + id),
                    napi_pid: None,
                    io_uring: false,
                    dmabuf: None,
                })
                .collect(),
        ),
    }
}

fn status(c: &Check, k: StepKind) -> &StepStatus {
    &c.step(k).unwrap().status
}

#[test]
fn missing_steps_name_their_commands() {
    let c = check(&capable(), 3).unwrap();
    assert_eq!(status(&c, StepKind::Queue), &StepStatus::Done);
    assert_eq!(
        status(&c, StepKind::HeaderSplit),
        &StepStatus::Missing {
            fix: "ethtool -G eth1 tcp-data-split on".into()
        }
    );
    assert_eq!(
        status(&c, StepKind::HdsThreshold),
        &StepStatus::Missing {
            fix: "ethtool -G eth1 hds-thresh 0".into()
        }
    );
    assert_eq!(
        status(&c, StepKind::RssOff),
        &StepStatus::Missing {
            fix: "ethtool -X eth1 equal 3".into()
        }
    );
    assert!(matches!(
        status(&c, StepKind::FlowRule),
        StepStatus::Missing { fix } if fix.contains("ntuple on") && fix.contains("action 3")
    ));
    assert_eq!(status(&c, StepKind::QueueFree), &StepStatus::Done);
    assert!(!c.ready());
    assert_eq!(
        plan(&c).unwrap(),
        vec![
            Change::Rings {
                data_split: true,
                hds_thresh: true
            },
            Change::RssTable {
                indir: vec![0, 1, 2, 0, 1, 2, 0, 1]
            }
        ]
    );
    let c = check(&capable(), 1).unwrap();
    assert_eq!(
        status(&c, StepKind::RssOff),
        &StepStatus::Missing {
            fix: "ethtool -X eth1 weight 1 0 1 1".into()
        }
    );
    assert!(c.to_string().contains("MISSING; fix: ethtool -G eth1"));
}

#[test]
fn prepared_queue_is_done_but_for_the_flow_rule() {
    let mut s = capable();
    s.rings = Read::Value(Rings {
        tcp_data_split: Some(DataSplit::Enabled),
        hds_thresh: Some(0),
        ..Rings::default()
    });
    s.rss = Read::Value(vec![RssContext {
        context: 0,
        indir: vec![0, 1, 2, 0, 1, 2],
    }]);
    let c = check(&s, 3).unwrap();
    for k in [
        StepKind::Queue,
        StepKind::HeaderSplit,
        StepKind::HdsThreshold,
        StepKind::RssOff,
        StepKind::QueueFree,
    ] {
        assert_eq!(status(&c, k), &StepStatus::Done, "{k:?}");
    }
    assert!(!c.ready(), "the flow rule cannot be read");
    assert_eq!(plan(&c).unwrap(), vec![]);
}

#[test]
fn rss_tables_without_a_queue() {
    assert_eq!(rss_table_without(0, 2, 6), Some(vec![1, 1, 1, 1, 1, 1]));
    assert_eq!(rss_table_without(1, 3, 4), Some(vec![0, 2, 0, 2]));
    assert_eq!(rss_table_without(0, 1, 4), None, "no other queue");
    assert_eq!(rss_table_without(0, 2, 0), None);
    assert!(is_default_rss(&[0, 1, 0, 1], 2));
    assert!(!is_default_rss(&[1, 1, 1, 1], 2));
    assert!(!is_default_rss(&[0, 0], 0));
    // A single queue that RSS names: nothing to move the flows to.
    let mut s = capable();
    s.channels = Read::Value(Channels {
        combined: Some(1),
        ..Channels::default()
    });
    s.rx_queues = Read::NotSupported("old kernel".into());
    s.rss = Read::Value(vec![RssContext {
        context: 0,
        indir: vec![0; 8],
    }]);
    let c = check(&s, 0).unwrap();
    assert!(matches!(
        status(&c, StepKind::RssOff),
        StepStatus::Unsupported(why) if why.contains("single receive queue")
    ));
}

#[test]
fn bound_queue_is_not_free() {
    let mut s = capable();
    if let Read::Value(q) = &mut s.rx_queues {
        q[2].io_uring = true;
    }
    let c = check(&s, 2).unwrap();
    assert!(matches!(
        status(&c, StepKind::QueueFree),
        StepStatus::Missing { .. }
    ));
}

#[test]
fn no_header_split_is_unsupported_and_plan_refuses() {
    let mut s = capable();
    s.driver = Some("virtio_net".into());
    s.rings = Read::Value(Rings {
        rx: Some(256),
        ..Rings::default()
    });
    s.rss = Read::NotSupported("Operation not supported".into());
    let c = check(&s, 0).unwrap();
    assert!(matches!(
        status(&c, StepKind::HeaderSplit),
        StepStatus::Unsupported(why) if why.contains("virtio_net")
    ));
    assert!(matches!(
        status(&c, StepKind::RssOff),
        StepStatus::Unknown { .. }
    ));
    assert!(matches!(
        plan(&c),
        Err(NicError::NotSupported { ifname, .. }) if ifname == "eth1"
    ));
}

#[test]
fn loopback_like_reads_nothing_and_queue_range_is_checked() {
    let s = NicState {
        ifname: "lo".into(),
        ifindex: 1,
        driver: None,
        rings: Read::NotSupported("Operation not supported".into()),
        channels: Read::NotSupported("Operation not supported".into()),
        rss: Read::NotSupported("Operation not supported".into()),
        ntuple: Read::NotSupported("the driver keeps no ntuple flow rules".into()),
        rx_queues: Read::Value(vec![RxQueue {
            id: 0,
            napi_id: None,
            irq: None,
            napi_pid: None,
            io_uring: false,
            dmabuf: None,
        }]),
    };
    assert_eq!(s.rx_queue_count(), Some(1));
    let c = check(&s, 0).unwrap();
    assert!(matches!(
        status(&c, StepKind::HeaderSplit),
        StepStatus::Unsupported(_)
    ));
    assert!(matches!(
        status(&c, StepKind::RssOff),
        StepStatus::Unsupported(_)
    ));
    assert!(plan(&c).is_err());
    assert_eq!(
        check(&s, 1).unwrap_err(),
        NicError::QueueOutOfRange {
            ifname: "lo".into(),
            queue: 1,
            count: 1
        }
    );
}

fn rule(flow: FlowType, queue: u32, rss_context: Option<u32>) -> FlowRule {
    FlowRule {
        location: 0,
        flow,
        dst_ip: None,
        src_port: None,
        dst_port: Some(9000),
        action: FlowAction::Queue { queue, vf: 0 },
        rss_context,
        extended: false,
    }
}

#[test]
fn a_tcp_rule_to_the_queue_is_the_flow_step() {
    let mut s = capable();
    // Rules elsewhere, for UDP, or relative to an RSS context do not count.
    s.ntuple = Read::Value(vec![
        rule(FlowType::Tcp6, 2, None),
        rule(FlowType::Udp6, 3, None),
        rule(FlowType::Tcp4, 3, Some(1)),
    ]);
    let c = check(&s, 3).unwrap();
    assert!(matches!(
        status(&c, StepKind::FlowRule),
        StepStatus::Missing { .. }
    ));
    if let Read::Value(rules) = &mut s.ntuple {
        rules.push(rule(FlowType::Tcp4, 3, None));
    }
    let c = check(&s, 3).unwrap();
    assert_eq!(status(&c, StepKind::FlowRule), &StepStatus::Done);
}

#[test]
fn no_flow_rules_on_the_driver_is_unsupported_and_a_failed_read_unknown() {
    let mut s = capable();
    s.ntuple = Read::NotSupported("the driver keeps no ntuple flow rules".into());
    let c = check(&s, 3).unwrap();
    assert!(matches!(
        status(&c, StepKind::FlowRule),
        StepStatus::Unsupported(why) if why.contains("no ntuple")
    ));
    s.ntuple = Read::Failed("ETHTOOL_GRXCLSRLCNT: Permission denied".into());
    let c = check(&s, 3).unwrap();
    assert!(matches!(
        status(&c, StepKind::FlowRule),
        StepStatus::Unknown { check, .. } if check.contains("ethtool -n eth1")
    ));
}
