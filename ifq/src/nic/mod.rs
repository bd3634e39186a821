//! The operator's side of zcrx on a NIC: read what the kernel says about an interface and its
//! queues (the `ethtool` and `netdev` generic-netlink families), say step by step what is missing
//! for zcrx on one queue and the command that fixes it, and apply what can be applied, with a
//! guard that puts it back.
//!
//! ```no_run
//! let state = zcrx_ifq::nic::read("eth1")?;
//! let check = zcrx_ifq::nic::check(&state, 3)?;
//! println!("{check}");
//! # Ok::<(), zcrx_ifq::nic::NicError>(())
//! ```
//!
//! The pure part ([`check`], [`plan`]) turns a [`NicState`] into [`Step`]s and [`Change`]s and is
//! tested without a kernel; the netlink part (`read`, `apply`) is thin. Netlink goes through
//! `neli` 0.6: a synchronous socket, generic-netlink family resolution, typed attributes, and
//! four small dependencies (`byteorder`, `libc`, `log`, its proc macros), where the rust-netlink
//! crates are async (tokio) and have no `netdev` family.

mod netlink;

use std::fmt;

pub use netlink::{apply, apply_changes, read, Applied};

/// A value the kernel may or may not report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<T> {
    /// What the kernel reported.
    Value(T),
    /// The kernel or driver does not offer it (`EOPNOTSUPP`, an attribute absent, a family this
    /// kernel lacks); why, in plain words. Not an error.
    NotSupported(String),
    /// Reading it failed for another reason.
    Failed(String),
}

impl<T> Read<T> {
    /// The value, if reported.
    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Header/data split (`ETHTOOL_A_RINGS_TCP_DATA_SPLIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSplit {
    /// The driver does not say (or decides by itself).
    Unknown,
    /// Off.
    Disabled,
    /// On.
    Enabled,
}

/// Ring parameters (`ethtool -g`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Rings {
    /// Receive ring size.
    pub rx: Option<u32>,
    /// Largest receive ring size.
    pub rx_max: Option<u32>,
    /// Receive buffer length.
    pub rx_buf_len: Option<u32>,
    /// Header/data split; `None`: the driver has no such setting.
    pub tcp_data_split: Option<DataSplit>,
    /// Header/data split threshold (6.13+); `None`: not reported.
    pub hds_thresh: Option<u32>,
    /// Largest threshold the driver takes.
    pub hds_thresh_max: Option<u32>,
}

/// Channel counts (`ethtool -l`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Channels {
    /// Receive-only channels.
    pub rx: Option<u32>,
    /// Combined channels.
    pub combined: Option<u32>,
    /// Largest receive-only count.
    pub rx_max: Option<u32>,
    /// Largest combined count.
    pub combined_max: Option<u32>,
}

impl Channels {
    /// Receive queues: receive-only plus combined channels.
    pub fn rx_queues(&self) -> u32 {
        self.rx.unwrap_or(0) + self.combined.unwrap_or(0)
    }
}

/// One RSS context (`ethtool -x`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RssContext {
    /// 0 is the default context.
    pub context: u32,
    /// The indirection table: entry i names the queue of hash bucket i.
    pub indir: Vec<u32>,
}

/// One receive queue (`netdev` family).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RxQueue {
    /// Queue index.
    pub id: u32,
    /// NAPI instance that services it.
    pub napi_id: Option<u32>,
    /// Its interrupt, from the NAPI instance.
    pub irq: Option<u32>,
    /// PID of the NAPI thread, if threaded.
    pub napi_pid: Option<u32>,
    /// An io_uring memory provider (zcrx) is bound to it.
    pub io_uring: bool,
    /// A dmabuf (devmem TCP) is bound to it: its id.
    pub dmabuf: Option<u32>,
}

/// What was read about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NicState {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// Device driver (`None`: a virtual device).
    pub driver: Option<String>,
    /// Ring parameters.
    pub rings: Read<Rings>,
    /// Channel counts.
    pub channels: Read<Channels>,
    /// RSS contexts, the default (0) first.
    pub rss: Read<Vec<RssContext>>,
    /// ntuple flow rules: not in the `ethtool` netlink family (only the ioctl has them).
    pub ntuple: Read<()>,
    /// Receive queues with their NAPI ids, interrupts and bindings.
    pub rx_queues: Read<Vec<RxQueue>>,
}

impl NicState {
    /// The number of receive queues, from channels, else the `netdev` queue list.
    pub fn rx_queue_count(&self) -> Option<u32> {
        if let Some(c) = self.channels.value() {
            if c.rx_queues() > 0 {
                return Some(c.rx_queues());
            }
        }
        self.rx_queues.value().map(|q| q.len() as u32)
    }

    /// The `netdev` entry of receive queue `queue`.
    pub fn rx_queue(&self, queue: u32) -> Option<&RxQueue> {
        self.rx_queues.value()?.iter().find(|q| q.id == queue)
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NicError {
    /// No such interface.
    #[error("no interface named '{0}'")]
    UnknownInterface(String),
    /// The queue index is past the interface's receive queues.
    #[error("{ifname} has {count} receive queues (0..{count}); queue {queue} is out of range")]
    QueueOutOfRange {
        /// Interface.
        ifname: String,
        /// Queue asked for.
        queue: u32,
        /// Queues it has.
        count: u32,
    },
    /// The driver lacks what a change needs.
    #[error("{ifname}: {what}")]
    NotSupported {
        /// Interface.
        ifname: String,
        /// What is missing, in plain words.
        what: String,
    },
    /// Changing NIC settings needs `CAP_NET_ADMIN`.
    #[error("changing {0}'s settings needs CAP_NET_ADMIN (run as root)")]
    NotPermitted(String),
    /// A netlink request failed.
    #[error("netlink: {0}")]
    Netlink(String),
}

/// One thing zcrx needs on the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// The queue exists.
    Queue,
    /// Header/data split is on.
    HeaderSplit,
    /// The header/data split threshold is 0.
    HdsThreshold,
    /// RSS does not spread other flows onto the queue.
    RssOff,
    /// A flow rule steers the service's flows to the queue.
    FlowRule,
    /// No other memory provider (zcrx, devmem) holds the queue.
    QueueFree,
}

impl StepKind {
    /// What the step is for, in a few words.
    pub fn title(self) -> &'static str {
        match self {
            Self::Queue => "the queue exists",
            Self::HeaderSplit => "header/data split on",
            Self::HdsThreshold => "header/data split threshold 0",
            Self::RssOff => "RSS off the queue",
            Self::FlowRule => "a flow rule steers the port to the queue",
            Self::QueueFree => "no other memory provider on the queue",
        }
    }
}

/// Where a step stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepStatus {
    /// Already so.
    Done,
    /// Not so; the command that makes it so.
    Missing {
        /// An `ethtool` command line.
        fix: String,
    },
    /// The driver cannot do it: zcrx cannot work on this interface.
    Unsupported(String),
    /// Cannot be read; how to check by hand.
    Unknown {
        /// Why it cannot be read.
        why: String,
        /// The command that checks, and the one that sets it.
        check: String,
    },
}

/// One step of a [`Check`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Step {
    /// Which step.
    pub kind: StepKind,
    /// Where it stands.
    pub status: StepStatus,
}

/// What zcrx on one queue still needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// Interface.
    pub ifname: String,
    /// Queue.
    pub queue: u32,
    /// Driver, if any.
    pub driver: Option<String>,
    /// The steps, in the order to take them.
    pub steps: Vec<Step>,
    /// The default RSS table without the queue, when RSS spreads flows onto it: what
    /// [`plan`] sets.
    rss_without_queue: Option<Vec<u32>>,
}

impl Check {
    /// Whether no step is missing, unsupported or unknown.
    pub fn ready(&self) -> bool {
        self.steps.iter().all(|s| s.status == StepStatus::Done)
    }

    /// The step of `kind`.
    pub fn step(&self, kind: StepKind) -> Option<&Step> {
        self.steps.iter().find(|s| s.kind == kind)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let driver = self.driver.as_deref().unwrap_or("virtual, no driver");
        writeln!(
            f,
            "zcrx on {} queue {} ({driver}), step by step:",
            self.ifname, self.queue
        )?;
        for (i, s) in self.steps.iter().enumerate() {
            let title = s.kind.title();
            match &s.status {
                StepStatus::Done => writeln!(f, "  {}. {title}: done", i + 1)?,
                StepStatus::Missing { fix } => {
                    writeln!(f, "  {}. {title}: MISSING; fix: {fix}", i + 1)?
                }
                StepStatus::Unsupported(why) => {
                    writeln!(f, "  {}. {title}: NOT SUPPORTED: {why}", i + 1)?
                }
                StepStatus::Unknown { why, check } => {
                    writeln!(f, "  {}. {title}: unknown ({why}); {check}", i + 1)?
                }
            }
        }
        if self.ready() {
            write!(f, "ready for zcrx")
        } else {
            write!(f, "not ready for zcrx")
        }
    }
}

/// A change `apply` can make through netlink.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Ring parameters: header/data split on and/or threshold 0.
    Rings {
        /// Set header/data split on.
        data_split: bool,
        /// Set the threshold to 0.
        hds_thresh: bool,
    },
    /// The default RSS context's indirection table (`ethtool -X`; `ETHTOOL_MSG_RSS_SET`,
    /// Linux 6.17+): which receive queue each hash bucket goes to.
    RssTable {
        /// The new table, as long as the driver's.
        indir: Vec<u32>,
    },
}

/// The RSS table that spreads flows over every queue of `count` except `queue`, as `ethtool -X
/// IF weight 1 .. 0 .. 1` does, with `len` buckets. None if no other queue exists.
pub fn rss_table_without(queue: u32, count: u32, len: usize) -> Option<Vec<u32>> {
    let others: Vec<u32> = (0..count).filter(|&q| q != queue).collect();
    if others.is_empty() || len == 0 {
        return None;
    }
    Some((0..len).map(|i| others[i % others.len()]).collect())
}

/// Whether `indir` is the kernel's default spread over `count` queues (bucket `i` to queue
/// `i % count`): restoring it is a reset, which also clears the interface's "RSS configured"
/// mark, rather than a write of the same table.
pub(crate) fn is_default_rss(indir: &[u32], count: u32) -> bool {
    count > 0
        && indir
            .iter()
            .enumerate()
            .all(|(i, &q)| u64::from(q) == i as u64 % u64::from(count))
}

fn not_supported_reason<T>(r: &Read<T>) -> Option<&str> {
    match r {
        Read::NotSupported(why) | Read::Failed(why) => Some(why),
        Read::Value(_) => None,
    }
}

/// Checks `queue` of the interface read in `state`: the steps zcrx needs, each done, missing
/// (with the `ethtool` command that fixes it), unsupported or unknown. An out-of-range queue is
/// an error.
pub fn check(state: &NicState, queue: u32) -> Result<Check, NicError> {
    let ifname = &state.ifname;
    let count = state.rx_queue_count();
    if let Some(count) = count {
        if queue >= count {
            return Err(NicError::QueueOutOfRange {
                ifname: ifname.clone(),
                queue,
                count,
            });
        }
    }
    let mut steps = Vec::new();
    steps.push(Step {
        kind: StepKind::Queue,
        status: match count {
            Some(_) => StepStatus::Done,
            None => StepStatus::Unknown {
                why: "neither channels nor the netdev queue list could be read".into(),
                check: format!("check with: ethtool -l {ifname}"),
            },
        },
    });

    // Header/data split and its threshold.
    let (split, thresh) = match &state.rings {
        Read::Value(r) => {
            let split = match r.tcp_data_split {
                None => StepStatus::Unsupported(format!(
                    "the driver ({}) reports no tcp-data-split setting: no header/data split, \
                     which zcrx needs",
                    state.driver.as_deref().unwrap_or("virtual")
                )),
                Some(DataSplit::Enabled) => StepStatus::Done,
                Some(_) => StepStatus::Missing {
                    fix: format!("ethtool -G {ifname} tcp-data-split on"),
                },
            };
            let thresh = match (r.tcp_data_split, r.hds_thresh) {
                (None, _) => StepStatus::Unsupported("no header/data split".into()),
                (_, Some(0)) => StepStatus::Done,
                (_, Some(_)) => StepStatus::Missing {
                    fix: format!("ethtool -G {ifname} hds-thresh 0"),
                },
                (_, None) => StepStatus::Unknown {
                    why: "the kernel reports no hds-thresh (Linux 6.13+)".into(),
                    check: format!("check with: ethtool -g {ifname}"),
                },
            };
            (split, thresh)
        }
        other => {
            let why = not_supported_reason(other).unwrap_or_default();
            let s = format!("ring parameters cannot be read: {why}");
            (
                StepStatus::Unsupported(s.clone()),
                StepStatus::Unsupported(s),
            )
        }
    };
    steps.push(Step {
        kind: StepKind::HeaderSplit,
        status: split,
    });
    steps.push(Step {
        kind: StepKind::HdsThreshold,
        status: thresh,
    });

    // RSS: the default context must not name the queue.
    let mut rss_without_queue = None;
    let rss = match &state.rss {
        Read::Value(ctxs) => match ctxs.iter().find(|c| c.context == 0) {
            Some(c) if c.indir.is_empty() => StepStatus::Unsupported(
                "the driver reports an empty RSS indirection table: RSS cannot be kept off \
                 the queue"
                    .into(),
            ),
            Some(c) if c.indir.contains(&queue) => {
                rss_without_queue =
                    rss_table_without(queue, count.unwrap_or(queue + 1), c.indir.len());
                match rss_without_queue {
                    Some(_) => StepStatus::Missing {
                        fix: rss_fix(ifname, queue, count.unwrap_or(queue + 1)),
                    },
                    None => StepStatus::Unsupported(
                        "the interface has a single receive queue: every flow lands on it".into(),
                    ),
                }
            }
            Some(_) => StepStatus::Done,
            None => StepStatus::Unknown {
                why: "no default RSS context reported".into(),
                check: format!("check with: ethtool -x {ifname}"),
            },
        },
        other => match count {
            // One queue and no RSS: nothing spreads flows onto it but it takes every flow.
            Some(1) => StepStatus::Unsupported(format!(
                "RSS cannot be read ({}) and the interface has a single receive queue: every \
                 flow lands on it",
                not_supported_reason(other).unwrap_or_default()
            )),
            _ => StepStatus::Unknown {
                why: format!(
                    "RSS cannot be read: {}",
                    not_supported_reason(other).unwrap_or_default()
                ),
                check: format!(
                    "check with: ethtool -x {ifname}; fix: {}",
                    rss_fix(ifname, queue, count.unwrap_or(queue + 1))
                ),
            },
        },
    };
    steps.push(Step {
        kind: StepKind::RssOff,
        status: rss,
    });

    steps.push(Step {
        kind: StepKind::FlowRule,
        status: StepStatus::Unknown {
            why: "ntuple rules are not in the ethtool netlink family".into(),
            check: format!(
                "check with: ethtool -n {ifname}; add one per port: ethtool -K {ifname} ntuple \
                 on && ethtool -N {ifname} flow-type tcp6 dst-port PORT action {queue} (and \
                 flow-type tcp4)"
            ),
        },
    });

    steps.push(Step {
        kind: StepKind::QueueFree,
        status: match state.rx_queue(queue) {
            Some(q) if q.io_uring => StepStatus::Missing {
                fix: "an io_uring zcrx queue is already bound there: close the ring that holds \
                      it, or pick another queue"
                    .into(),
            },
            Some(q) if q.dmabuf.is_some() => StepStatus::Missing {
                fix: "a dmabuf (devmem TCP) is bound there: release it, or pick another queue"
                    .into(),
            },
            Some(_) => StepStatus::Done,
            None => StepStatus::Unknown {
                why: match &state.rx_queues {
                    Read::Value(_) => "the netdev family does not list this queue".into(),
                    other => not_supported_reason(other).unwrap_or_default().to_owned(),
                },
                check: "check with: ynl --family netdev --dump queue-get".into(),
            },
        },
    });

    Ok(Check {
        ifname: ifname.clone(),
        queue,
        driver: state.driver.clone(),
        steps,
        rss_without_queue,
    })
}

/// The `ethtool -X` line that keeps RSS off `queue` of `count` queues.
fn rss_fix(ifname: &str, queue: u32, count: u32) -> String {
    if queue + 1 == count && queue > 0 {
        format!("ethtool -X {ifname} equal {queue}")
    } else {
        let weights: Vec<&str> = (0..count)
            .map(|q| if q == queue { "0" } else { "1" })
            .collect();
        format!("ethtool -X {ifname} weight {}", weights.join(" "))
    }
}

/// The changes [`apply`] would make for `queue`: those of the check's missing steps that netlink
/// can set. An unsupported step (no header/data split) is an error: nothing would help.
pub fn plan(check: &Check) -> Result<Vec<Change>, NicError> {
    for s in &check.steps {
        if let (StepKind::HeaderSplit, StepStatus::Unsupported(why)) = (s.kind, &s.status) {
            return Err(NicError::NotSupported {
                ifname: check.ifname.clone(),
                what: why.clone(),
            });
        }
    }
    let missing = |k| {
        matches!(
            check.step(k),
            Some(Step {
                status: StepStatus::Missing { .. },
                ..
            })
        )
    };
    let data_split = missing(StepKind::HeaderSplit);
    let hds_thresh = missing(StepKind::HdsThreshold);
    let mut changes = Vec::new();
    if data_split || hds_thresh {
        changes.push(Change::Rings {
            data_split,
            hds_thresh,
        });
    }
    if missing(StepKind::RssOff) {
        if let Some(indir) = &check.rss_without_queue {
            changes.push(Change::RssTable {
                indir: indir.clone(),
            });
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
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
            ntuple: Read::NotSupported("ioctl only".into()),
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
            StepStatus::Unknown { check, .. } if check.contains("action 3")
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
            ntuple: Read::NotSupported("ioctl only".into()),
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
}
