//! What this machine can do, found out by asking the kernel: its version, the io_uring opcodes
//! and receive features it has, for each interface queue whether zcrx works there (by trying a
//! registration) and why not, and which backend automatic selection would pick.
//!
//! ```no_run
//! let report = zcrx_ifq::probe::probe();
//! println!("{report}");
//! ```
//!
//! Trying zcrx binds the queue for a moment on a NIC that supports it (the driver restarts the
//! queue when the memory provider is installed and again when the test ring is closed), so on a
//! production machine probe only the queues you mean to use ([`ProbeOptions`]).

use std::fmt;
use std::path::Path;

use io_uring::{cqueue, opcode, squeue, IoUring, Probe};

use crate::area::Area;
use crate::backend::RxPool;
use crate::bufring::{BufRing, BufRingConfig};
use crate::error::{Error, ZcrxRefusal};
use crate::sys::caps;
use crate::zcrx::{ZcrxConfig, ZcrxIfq};

// Here too, where the probe's report names it.
pub use crate::kernel::KernelVersion;

mod render;

/// One io_uring opcode and whether the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Opcode {
    /// The name without the `IORING_OP_` prefix.
    pub name: &'static str,
    /// The opcode number.
    pub code: u8,
    /// Whether `IORING_REGISTER_PROBE` reports it supported.
    pub supported: bool,
}

/// The opcodes the probe reports, by name.
pub const OPCODES: &[(&str, u8)] = &[
    ("NOP", opcode::Nop::CODE),
    ("READ", opcode::Read::CODE),
    ("WRITE", opcode::Write::CODE),
    ("READ_FIXED", opcode::ReadFixed::CODE),
    ("POLL_ADD", opcode::PollAdd::CODE),
    ("TIMEOUT", opcode::Timeout::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ("ACCEPT", opcode::Accept::CODE),
    ("CONNECT", opcode::Connect::CODE),
    ("CLOSE", opcode::Close::CODE),
    ("SEND", opcode::Send::CODE),
    ("RECV", opcode::Recv::CODE),
    ("SENDMSG", opcode::SendMsg::CODE),
    ("RECVMSG", opcode::RecvMsg::CODE),
    ("PROVIDE_BUFFERS", opcode::ProvideBuffers::CODE),
    ("SHUTDOWN", opcode::Shutdown::CODE),
    ("SOCKET", opcode::Socket::CODE),
    ("SEND_ZC", opcode::SendZc::CODE),
    ("SENDMSG_ZC", opcode::SendMsgZc::CODE),
    ("READ_MULTISHOT", opcode::ReadMulti::CODE),
    ("BIND", opcode::Bind::CODE),
    ("LISTEN", opcode::Listen::CODE),
    ("RECV_ZC", opcode::RecvZc::CODE),
    ("EPOLL_WAIT", opcode::EpollWait::CODE),
];

/// Whether something works, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// It works.
    Yes,
    /// It does not; the reason in plain words.
    No(String),
}

impl Support {
    /// Whether it works.
    pub fn is_yes(&self) -> bool {
        matches!(self, Self::Yes)
    }

    fn from_result<T>(r: Result<T, String>) -> Self {
        match r {
            Ok(_) => Self::Yes,
            Err(why) => Self::No(why),
        }
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Yes => f.write_str("yes"),
            Self::No(why) => write!(f, "no: {why}"),
        }
    }
}

/// Receive features of io_uring.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// Multishot receive (`RECV` with `IORING_RECV_MULTISHOT`, Linux 6.0+; judged from the
    /// kernel version and the `RECV` opcode).
    pub multishot_recv: Support,
    /// Receive bundles (`IORING_FEAT_RECVSEND_BUNDLE`, 6.10+).
    pub recv_bundle: Support,
    /// Provided buffer rings (registered a one-chunk test ring).
    pub buf_ring: Support,
    /// Incremental buffer consumption (`IOU_PBUF_RING_INC`, registered a test ring).
    pub buf_ring_incremental: Support,
    /// A ring with `SINGLE_ISSUER | DEFER_TASKRUN` and 32-byte CQEs, as zcrx needs.
    pub zcrx_ring: Support,
}

/// The zcrx verdict for one interface queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZcrxVerdict {
    /// A registration succeeded (and was released again).
    Available,
    /// The kernel refused the registration.
    Refused(ZcrxRefusal),
    /// Something else prevented the attempt (no zcrx in this kernel, interface gone, limits).
    Failed(String),
}

impl ZcrxVerdict {
    /// Whether zcrx works on the queue.
    pub fn is_available(&self) -> bool {
        matches!(self, Self::Available)
    }

    /// The verdict in plain words.
    pub fn reason(&self) -> String {
        match self {
            Self::Available => "zcrx works here".to_owned(),
            Self::Refused(r) => r.reason(),
            Self::Failed(why) => why.clone(),
        }
    }
}

/// One queue of an interface and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueReport {
    /// The receive queue index.
    pub queue: u32,
    /// Whether zcrx works there.
    pub verdict: ZcrxVerdict,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterfaceReport {
    /// Its name.
    pub name: String,
    /// Its index, if sysfs says.
    pub index: Option<u32>,
    /// The device driver (`virtio_net`, `mlx5_core`...); `None` for virtual devices.
    pub driver: Option<String>,
    /// Receive queues (`/sys/class/net/IF/queues/rx-*`).
    pub rx_queues: Option<u32>,
    /// The queues tried.
    pub queues: Vec<QueueReport>,
}

/// The backend automatic selection would pick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// zcrx on this interface queue.
    Zcrx {
        /// Interface name.
        ifname: String,
        /// Queue index.
        queue: u32,
    },
    /// A provided buffer ring; the kernel also offers incremental consumption
    /// (`Builder::incremental` in the runtime turns it on).
    BufRingIncremental,
    /// A plain provided buffer ring.
    BufRing,
    /// Nothing works; why.
    Unavailable(String),
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zcrx { ifname, queue } => write!(f, "zcrx on {ifname} queue {queue}"),
            Self::BufRingIncremental => {
                f.write_str("buffer ring (incremental consumption available)")
            }
            Self::BufRing => f.write_str("buffer ring"),
            Self::Unavailable(why) => write!(f, "none: {why}"),
        }
    }
}

/// Everything the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The kernel version (`None` if `uname` gave an unparsable release).
    pub kernel: Option<KernelVersion>,
    /// Whether an io_uring could be created at all.
    pub io_uring: Support,
    /// Opcodes of interest (see [`OPCODES`]); empty if io_uring is unavailable.
    pub opcodes: Vec<Opcode>,
    /// Receive features.
    pub features: Features,
    /// Whether this thread has `CAP_NET_ADMIN` (zcrx registration needs it).
    pub cap_net_admin: bool,
    /// Whether this thread has `CAP_IPC_LOCK` (lifts RLIMIT_MEMLOCK).
    pub cap_ipc_lock: bool,
    /// The soft RLIMIT_MEMLOCK in bytes; `None` for unlimited.
    pub memlock_limit: Option<u64>,
    /// Every interface probed.
    pub interfaces: Vec<InterfaceReport>,
    /// What the kernel's zcrx offers (`IORING_REGISTER_QUERY`, 6.19+; the pre-query rules
    /// before), if an io_uring could be made.
    pub zcrx: Option<crate::zcrx::ZcrxFeatures>,
    /// zcrx without a device (`ZCRX_REG_NODEV`, 7.1+): a registration was tried.
    pub zcrx_no_device: Support,
    /// What automatic backend selection would pick.
    pub backend: Backend,
}

impl Report {
    /// Whether the kernel reported `name` (e.g. `"RECV_ZC"`) supported.
    pub fn has_opcode(&self, name: &str) -> bool {
        self.opcodes.iter().any(|o| o.name == name && o.supported)
    }

    /// The verdict for `ifname` queue `queue`, if probed.
    pub fn verdict(&self, ifname: &str, queue: u32) -> Option<&ZcrxVerdict> {
        self.interfaces
            .iter()
            .find(|i| i.name == ifname)?
            .queues
            .iter()
            .find(|q| q.queue == queue)
            .map(|q| &q.verdict)
    }
}

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Interfaces to try zcrx on; `None` for every interface in `/sys/class/net`.
    pub interfaces: Option<Vec<String>>,
    /// Queues to try on each (default: queue 0).
    pub queues: Vec<u32>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            interfaces: None,
            queues: vec![0],
        }
    }
}

/// Probes with the defaults: every interface, queue 0.
pub fn probe() -> Report {
    probe_with(&ProbeOptions::default())
}

/// Probes the interfaces and queues in `options`.
pub fn probe_with(options: &ProbeOptions) -> Report {
    let kernel = KernelVersion::current();
    let (io_uring, opcodes, recv_bundle) = match IoUring::new(8) {
        Ok(ring) => {
            let mut probe = Probe::new();
            let opcodes = match ring.submitter().register_probe(&mut probe) {
                Ok(()) => OPCODES
                    .iter()
                    .map(|&(name, code)| Opcode {
                        name,
                        code,
                        supported: probe.is_supported(code),
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            let bundle = if ring.params().is_feature_recvsend_bundle() {
                Support::Yes
            } else {
                Support::No("the kernel lacks IORING_FEAT_RECVSEND_BUNDLE (Linux 6.10+)".into())
            };
            (Support::Yes, opcodes, bundle)
        }
        Err(e) => {
            let why = format!(
                "io_uring_setup failed ({e}); io_uring may be disabled \
                 (/proc/sys/kernel/io_uring_disabled) or blocked by seccomp"
            );
            (Support::No(why.clone()), Vec::new(), Support::No(why))
        }
    };
    let has = |name: &str| {
        opcodes
            .iter()
            .any(|o: &Opcode| o.name == name && o.supported)
    };

    let multishot_recv = if !has("RECV") {
        Support::No("the kernel has no IORING_OP_RECV".into())
    } else if kernel.as_ref().is_some_and(|k| !k.at_least(6, 0)) {
        Support::No("multishot receive needs Linux 6.0+".into())
    } else {
        Support::Yes
    };
    let buf_ring = Support::from_result(try_buf_ring(false));
    let buf_ring_incremental = Support::from_result(try_buf_ring(true));
    let zcrx_ring = Support::from_result(zcrx_ring().map_err(|e| {
        format!(
            "could not build a SINGLE_ISSUER | DEFER_TASKRUN ring with 32-byte CQEs ({e}); \
             DEFER_TASKRUN needs Linux 6.1+"
        )
    }));
    let features = Features {
        multishot_recv,
        recv_bundle,
        buf_ring,
        buf_ring_incremental,
        zcrx_ring,
    };

    let names = options.interfaces.clone().unwrap_or_else(list_interfaces);
    let recv_zc = has("RECV_ZC");
    let interfaces: Vec<InterfaceReport> = names
        .into_iter()
        .map(|name| {
            let sys = Path::new("/sys/class/net").join(&name);
            let queues = options
                .queues
                .iter()
                .map(|&queue| {
                    let verdict = if !recv_zc {
                        ZcrxVerdict::Failed(
                            "this kernel has no zcrx: IORING_OP_RECV_ZC needs Linux 6.15+ built \
                             with CONFIG_IO_URING_ZCRX"
                                .into(),
                        )
                    } else if let Support::No(why) = &features.zcrx_ring {
                        ZcrxVerdict::Failed(why.clone())
                    } else {
                        try_zcrx(&name, queue)
                    };
                    QueueReport { queue, verdict }
                })
                .collect();
            InterfaceReport {
                index: std::fs::read_to_string(sys.join("ifindex"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok()),
                driver: std::fs::read_link(sys.join("device/driver"))
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
                rx_queues: std::fs::read_dir(sys.join("queues")).ok().map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                        .count() as u32
                }),
                name,
                queues,
            }
        })
        .collect();

    let backend = interfaces
        .iter()
        .flat_map(|i| i.queues.iter().map(move |q| (i, q)))
        .find(|(_, q)| q.verdict.is_available())
        .map(|(i, q)| Backend::Zcrx {
            ifname: i.name.clone(),
            queue: q.queue,
        })
        .unwrap_or_else(|| {
            if features.buf_ring_incremental.is_yes() {
                Backend::BufRingIncremental
            } else if features.buf_ring.is_yes() {
                Backend::BufRing
            } else {
                Backend::Unavailable(match (&io_uring, &features.buf_ring) {
                    (Support::No(why), _) | (_, Support::No(why)) => why.clone(),
                    _ => "no receive backend works".into(),
                })
            }
        });

    let zcrx = crate::zcrx::ZcrxFeatures::detect().ok();
    let zcrx_no_device = match (&zcrx, recv_zc) {
        (_, false) => Support::No("the kernel has no IORING_OP_RECV_ZC".into()),
        (Some(z), _) if z.queried && !z.no_device() => {
            Support::No("the kernel's zcrx has no ZCRX_REG_NODEV (Linux 7.1+)".into())
        }
        _ => Support::from_result(try_zcrx_no_device()),
    };

    Report {
        kernel,
        io_uring,
        opcodes,
        features,
        cap_net_admin: caps::has_effective_cap(caps::CAP_NET_ADMIN),
        cap_ipc_lock: caps::has_effective_cap(caps::CAP_IPC_LOCK),
        memlock_limit: caps::memlock_limit(),
        interfaces,
        zcrx,
        zcrx_no_device,
        backend,
    }
}

/// Registers (and drops) a 16-page queue without a device.
fn try_zcrx_no_device() -> std::result::Result<(), String> {
    let ring = zcrx_ring().map_err(|e| format!("could not build a zcrx ring ({e})"))?;
    let page = rustix::param::page_size();
    let area = Area::builder()
        .chunk_size(page)
        .chunks(16)
        .build()
        .map_err(|e| e.to_string())?;
    let ifq = ZcrxIfq::register(&ring, area, ZcrxConfig::no_device().rq_entries(16))
        .map_err(|e| e.to_string())?;
    drop(ifq.teardown());
    Ok(())
}

fn zcrx_ring() -> std::io::Result<IoUring<squeue::Entry, cqueue::Entry32>> {
    IoUring::<squeue::Entry, cqueue::Entry32>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(8)
}

fn try_buf_ring(incremental: bool) -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let area = Area::builder()
        .chunk_size(4096)
        .chunks(1)
        .build()
        .map_err(|e| e.to_string())?;
    let config = BufRingConfig {
        incremental,
        ..BufRingConfig::default()
    };
    let rx = BufRing::register(&ring, area, config).map_err(|e| e.to_string())?;
    rx.teardown();
    Ok(())
}

/// Tries a zcrx registration on `ifname` queue `queue` with a 16-page area on a fresh ring, and
/// releases it again.
pub fn try_zcrx(ifname: &str, queue: u32) -> ZcrxVerdict {
    let ring = match zcrx_ring() {
        Ok(ring) => ring,
        Err(e) => {
            return ZcrxVerdict::Failed(format!(
                "could not build a SINGLE_ISSUER | DEFER_TASKRUN ring with 32-byte CQEs ({e})"
            ))
        }
    };
    let page = rustix::param::page_size();
    let area = match Area::builder().chunk_size(page).chunks(16).build() {
        Ok(area) => area,
        Err(e) => return ZcrxVerdict::Failed(e.to_string()),
    };
    match ZcrxIfq::register(&ring, area, ZcrxConfig::new(ifname, queue).rq_entries(16)) {
        Ok(ifq) => {
            // Nothing was received: dropping the queue and the ring unbinds it.
            drop(ifq.teardown());
            ZcrxVerdict::Available
        }
        Err(Error::ZcrxRefused { refusal, .. }) => ZcrxVerdict::Refused(refusal),
        Err(e) => ZcrxVerdict::Failed(e.to_string()),
    }
}

fn list_interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::render::bytes;
    use super::*;

    #[test]
    fn backend_display() {
        assert_eq!(
            Backend::Zcrx {
                ifname: "eth1".into(),
                queue: 3
            }
            .to_string(),
            "zcrx on eth1 queue 3"
        );
        assert_eq!(
            Backend::BufRingIncremental.to_string(),
            "buffer ring (incremental consumption available)"
        );
        assert_eq!(bytes(8 << 20), "8 MiB");
        assert_eq!(bytes(1000), "1000 bytes");
    }
}
