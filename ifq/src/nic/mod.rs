//! The operator's side of zcrx on a NIC: read what the kernel says about an interface and its
//! queues (the `ethtool` and `netdev` generic-netlink families, and the `SIOCETHTOOL` ioctl for
//! ntuple flow rules), say step by step what is missing
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

mod check;
mod irq;
mod netlink;
mod ntuple;
mod state;
#[cfg(test)]
mod tests;

pub(crate) use check::is_default_rss;
pub use check::{check, plan, rss_table_without, Change, Check, Step, StepKind, StepStatus};
pub use irq::{irq_cpus, parse_cpu_list, Placement, QueueIrq};
pub use netlink::{apply, apply_changes, read, Applied};
pub use ntuple::{FlowAction, FlowRule, FlowType};
pub use state::{Channels, DataSplit, NicError, NicState, Read, Rings, RssContext, RxQueue};
