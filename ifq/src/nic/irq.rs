//! Where a queue's interrupts are handled, against where the thread serving it runs.
//!
//! zcrx is fastest when the core that takes the queue's interrupt (and runs its NAPI poll) is the
//! core of the thread that receives from the queue: the page-pool refill, the completion and the
//! application's read of the payload then share one cache. The kernel says which interrupt
//! serves a queue (the `netdev` family: queue -> NAPI instance -> IRQ) and `/proc/irq/N/`
//! says which CPUs take it; this module puts the two together. The parsing and the verdict are
//! pure; reading `/proc` is one call.

use std::fmt;

use super::{NicError, NicState};

/// The CPUs in a kernel CPU list such as `0-3,8,10-11` (`/proc/irq/N/smp_affinity_list`),
/// sorted, or `None` if it is not one.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// The CPUs that take interrupt `irq`: the effective affinity where the kernel reports it (the
/// CPU the interrupt controller actually targets), else the allowed set.
pub fn irq_cpus(irq: u32) -> std::io::Result<Vec<u32>> {
    let dir = format!("/proc/irq/{irq}");
    let text = std::fs::read_to_string(format!("{dir}/effective_affinity_list"))
        .or_else(|_| std::fs::read_to_string(format!("{dir}/smp_affinity_list")))?;
    parse_cpu_list(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{dir}: not a CPU list: {text:?}"),
        )
    })
}

/// Where queue `queue` of an interface takes its interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueIrq {
    /// Interface.
    pub ifname: String,
    /// Receive queue.
    pub queue: u32,
    /// Its interrupt, from its NAPI instance; `None` where the driver does not say (virtio_net
    /// on 7.3) or the kernel has no `netdev` family.
    pub irq: Option<u32>,
    /// The CPUs that take that interrupt (empty if unknown).
    pub cpus: Vec<u32>,
}

impl QueueIrq {
    /// Reads it from what [`read`](super::read) returned and `/proc/irq`.
    pub fn of(state: &NicState, queue: u32) -> Result<Self, NicError> {
        let count = state.rx_queue_count().unwrap_or(0);
        if state.rx_queue_count().is_some() && queue >= count {
            return Err(NicError::QueueOutOfRange {
                ifname: state.ifname.clone(),
                queue,
                count,
            });
        }
        let irq = state.rx_queue(queue).and_then(|q| q.irq);
        let cpus = irq.and_then(|n| irq_cpus(n).ok()).unwrap_or_default();
        Ok(Self {
            ifname: state.ifname.clone(),
            queue,
            irq,
            cpus,
        })
    }

    /// Whether a thread on `cpu` serves this queue from the core that takes its interrupts.
    pub fn placement(&self, cpu: u32) -> Placement {
        match self.irq {
            None => Placement::Unknown,
            Some(_) if self.cpus.is_empty() => Placement::Unknown,
            Some(_) if self.cpus.contains(&cpu) => Placement::Aligned,
            Some(irq) => Placement::Mismatch {
                irq,
                thread_cpu: cpu,
                irq_cpus: self.cpus.clone(),
            },
        }
    }
}

/// The verdict of [`QueueIrq::placement`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// The thread's CPU takes the queue's interrupts.
    Aligned,
    /// The queue's interrupts go elsewhere: the fix is to move one of them.
    Mismatch {
        /// The queue's interrupt.
        irq: u32,
        /// Where the thread runs.
        thread_cpu: u32,
        /// Where the interrupt goes.
        irq_cpus: Vec<u32>,
    },
    /// The driver or kernel does not say which interrupt serves the queue.
    Unknown,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Aligned => {
                f.write_str("the thread runs on the core that takes the queue's interrupts")
            }
            Self::Mismatch {
                irq,
                thread_cpu,
                irq_cpus,
            } => {
                let list: Vec<String> = irq_cpus.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "the queue's interrupt (IRQ {irq}) is taken on CPU {} but the thread serving \
                     it runs on CPU {thread_cpu}: move the interrupt with \
                     `echo {thread_cpu} > /proc/irq/{irq}/smp_affinity_list` (and stop \
                     irqbalance from moving it back), or run the thread on CPU {}",
                    list.join(","),
                    irq_cpus[0]
                )
            }
            Self::Unknown => {
                f.write_str("the driver does not say which interrupt serves the queue")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5"), Some(vec![5]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3,1,1"), Some(vec![1, 3]));
        for bad in ["x", "3-1", "1-", "-1", "1,,2", "0-4294967295"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad}");
        }
    }

    #[test]
    fn verdicts() {
        let q = |irq, cpus: &[u32]| QueueIrq {
            ifname: "eth1".into(),
            queue: 3,
            irq,
            cpus: cpus.to_vec(),
        };
        assert_eq!(q(None, &[]).placement(0), Placement::Unknown);
        assert_eq!(q(Some(40), &[]).placement(0), Placement::Unknown);
        assert_eq!(q(Some(40), &[2, 3]).placement(3), Placement::Aligned);
        let m = q(Some(40), &[2]).placement(5);
        assert_eq!(
            m,
            Placement::Mismatch {
                irq: 40,
                thread_cpu: 5,
                irq_cpus: vec![2]
            }
        );
        let text = m.to_string();
        assert!(
            text.contains("echo 5 > /proc/irq/40/smp_affinity_list"),
            "{text}"
        );
        assert!(text.contains("run the thread on CPU 2"), "{text}");
    }

    #[test]
    fn this_machines_interrupts_read() {
        // Every interrupt the kernel lists has an affinity that parses.
        let mut read = 0;
        for e in std::fs::read_dir("/proc/irq").unwrap().flatten() {
            let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            irq_cpus(n).unwrap();
            read += 1;
        }
        assert!(read > 0, "no interrupts in /proc/irq");
    }
}
