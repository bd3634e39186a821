//! The pure part: a [`NicState`] turned into the steps zcrx needs on one queue, each with its
//! fix, and into the [`Change`]s `apply` makes. Tested without a kernel.

use std::fmt;

use super::{DataSplit, NicError, NicState, Read};

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

    let add_rule = format!(
        "ethtool -K {ifname} ntuple on && ethtool -N {ifname} flow-type tcp6 dst-port PORT \
         action {queue} (and flow-type tcp4), for each port the service listens on"
    );
    steps.push(Step {
        kind: StepKind::FlowRule,
        status: match &state.ntuple {
            // Any TCP rule to the queue: which ports the service uses is not known here.
            Read::Value(rules) if rules.iter().any(|r| r.steers_tcp_to(queue)) => StepStatus::Done,
            Read::Value(_) => StepStatus::Missing { fix: add_rule },
            Read::NotSupported(why) => StepStatus::Unsupported(format!(
                "{why}: nothing can steer the service's flows to the queue"
            )),
            Read::Failed(why) => StepStatus::Unknown {
                why: why.clone(),
                check: format!("check with: ethtool -n {ifname}; fix: {add_rule}"),
            },
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

/// The changes [`apply`](super::apply) would make for `queue`: those of the check's missing steps that netlink
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
