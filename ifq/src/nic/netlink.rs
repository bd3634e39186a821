//! The thin netlink part: `ethtool` (rings, channels, RSS) and `netdev` (queues, NAPI) requests
//! through `neli`, and the ring and RSS changes with their restoring guard.

use neli::consts::nl::{NlmF, NlmFFlags};
use neli::consts::socket::NlFamily;
use neli::err::NlError;
use neli::genl::{Genlmsghdr, Nlattr};
use neli::nl::{NlPayload, Nlmsghdr};
use neli::socket::NlSocketHandle;
use neli::types::{Buffer, GenlBuffer};

use super::{
    check, is_default_rss, plan, Change, Channels, DataSplit, NicError, NicState, Read, Rings,
    RssContext, RxQueue,
};
use crate::sys::caps;

type Msg = Genlmsghdr<u8, u16>;

// ethtool family (uapi linux/ethtool_netlink_generated.h).
const ETHTOOL_MSG_RINGS_GET: u8 = 15;
const ETHTOOL_MSG_RINGS_SET: u8 = 16;
const ETHTOOL_MSG_CHANNELS_GET: u8 = 17;
const ETHTOOL_MSG_RSS_GET: u8 = 38;
const ETHTOOL_MSG_RSS_SET: u8 = 48;
const ETHTOOL_A_HEADER_DEV_INDEX: u16 = 1;
const ETHTOOL_A_X_HEADER: u16 = 1; // every message's header attribute
const RINGS_RX_MAX: u16 = 2;
const RINGS_RX: u16 = 6;
const RINGS_RX_BUF_LEN: u16 = 10;
const RINGS_TCP_DATA_SPLIT: u16 = 11;
const RINGS_HDS_THRESH: u16 = 17;
const RINGS_HDS_THRESH_MAX: u16 = 18;
const CHANNELS_RX_MAX: u16 = 2;
const CHANNELS_COMBINED_MAX: u16 = 5;
const CHANNELS_RX_COUNT: u16 = 6;
const CHANNELS_COMBINED_COUNT: u16 = 9;
const RSS_CONTEXT: u16 = 2;
const RSS_INDIR: u16 = 4;
// netdev family (uapi linux/netdev.h).
const NETDEV_CMD_QUEUE_GET: u8 = 10;
const NETDEV_CMD_NAPI_GET: u8 = 11;
const QUEUE_ID: u16 = 1;
const QUEUE_IFINDEX: u16 = 2;
const QUEUE_TYPE: u16 = 3;
const QUEUE_NAPI_ID: u16 = 4;
const QUEUE_DMABUF: u16 = 5;
const QUEUE_IO_URING: u16 = 6;
const NAPI_IFINDEX: u16 = 1;
const NAPI_ID: u16 = 2;
const NAPI_IRQ: u16 = 3;
const NAPI_PID: u16 = 4;

/// A failed request: the errno the kernel answered, or another failure.
enum ReqError {
    Errno(i32),
    NoFamily(String),
    Other(String),
}

impl ReqError {
    fn describe(&self) -> String {
        match self {
            Self::Errno(e) => e_str(*e),
            Self::NoFamily(f) => format!("this kernel has no '{f}' generic-netlink family"),
            Self::Other(s) => s.clone(),
        }
    }

    fn into_read<T>(self) -> Read<T> {
        match self {
            Self::Errno(e) if e == libc::EOPNOTSUPP || e == libc::ENOTSUPP_ => {
                Read::NotSupported(self.describe())
            }
            Self::NoFamily(_) => Read::NotSupported(self.describe()),
            _ => Read::Failed(self.describe()),
        }
    }
}

// The kernel's internal ENOTSUPP (524) leaks out of some drivers.
mod libc {
    pub(super) const EPERM: i32 = 1;
    pub(super) const EOPNOTSUPP: i32 = 95;
    pub(super) const ENOTSUPP_: i32 = 524;
}

fn nl_err(e: NlError<u16, Msg>) -> ReqError {
    match e {
        NlError::Nlmsgerr(m) => ReqError::Errno(m.error.abs()),
        other => ReqError::Other(format!("{other:?}")),
    }
}

/// One request on a fresh socket (a failed one leaves nothing behind for the next), the
/// replies' payloads.
fn request(
    family: &str,
    cmd: u8,
    attrs: GenlBuffer<u16, Buffer>,
    dump: bool,
    ack: bool,
) -> Result<Vec<Msg>, ReqError> {
    let mut sock = NlSocketHandle::connect(NlFamily::Generic, None, &[])
        .map_err(|e| ReqError::Other(format!("netlink socket: {e}")))?;
    let id = sock
        .resolve_genl_family(family)
        .map_err(|_| ReqError::NoFamily(family.to_owned()))?;
    let mut flags = vec![NlmF::Request];
    if dump {
        flags.push(NlmF::Dump);
    }
    if ack {
        flags.push(NlmF::Ack);
    }
    let msg = Nlmsghdr::new(
        None,
        id,
        NlmFFlags::new(&flags),
        None,
        None,
        NlPayload::Payload(Genlmsghdr::new(cmd, 1, attrs)),
    );
    sock.send(msg)
        .map_err(|e| ReqError::Other(format!("netlink send: {e}")))?;
    let mut out = Vec::new();
    if dump {
        // Until NLMSG_DONE. Not neli's iterator: it stops at the first message without
        // NLM_F_MULTI, and generic netlink dumps built with `genlmsg_iput` (netdev's queue and
        // NAPI dumps, 6.x-7.x) leave that flag off, so only the first queue came back.
        while let Some(reply) = sock.recv::<u16, Msg>().map_err(nl_err)? {
            match reply.nl_payload {
                NlPayload::Payload(p) => out.push(p),
                NlPayload::Empty => break, // NLMSG_DONE
                _ => {}
            }
        }
        return Ok(out);
    }
    for reply in sock.iter::<u16, Msg>(false) {
        let reply = reply.map_err(nl_err)?;
        if let NlPayload::Payload(p) = reply.nl_payload {
            out.push(p);
        }
    }
    Ok(out)
}

fn attr<P: neli::Size + neli::ToBytes>(ty: u16, p: P) -> Result<Nlattr<u16, Buffer>, ReqError> {
    Nlattr::new(false, false, ty, p).map_err(|e| ReqError::Other(e.to_string()))
}

/// The ethtool header attribute naming the interface by index.
fn ethtool_header(ifindex: u32) -> Result<GenlBuffer<u16, Buffer>, ReqError> {
    let mut inner = GenlBuffer::new();
    inner.push(attr(ETHTOOL_A_HEADER_DEV_INDEX, ifindex)?);
    let mut attrs = GenlBuffer::new();
    attrs.push(
        Nlattr::new(true, false, ETHTOOL_A_X_HEADER, inner)
            .map_err(|e| ReqError::Other(e.to_string()))?,
    );
    Ok(attrs)
}

fn u32_of(m: &Msg, ty: u16) -> Option<u32> {
    m.get_attr_handle().get_attr_payload_as::<u32>(ty).ok()
}

fn u8_of(m: &Msg, ty: u16) -> Option<u8> {
    m.get_attr_handle().get_attr_payload_as::<u8>(ty).ok()
}

fn read_rings(ifindex: u32) -> Read<Rings> {
    let msgs = match ethtool_header(ifindex)
        .and_then(|a| request("ethtool", ETHTOOL_MSG_RINGS_GET, a, false, false))
    {
        Ok(m) => m,
        Err(e) => return e.into_read(),
    };
    let Some(m) = msgs.first() else {
        return Read::Failed("no reply".into());
    };
    Read::Value(Rings {
        rx: u32_of(m, RINGS_RX),
        rx_max: u32_of(m, RINGS_RX_MAX),
        rx_buf_len: u32_of(m, RINGS_RX_BUF_LEN),
        tcp_data_split: u8_of(m, RINGS_TCP_DATA_SPLIT).map(|v| match v {
            1 => DataSplit::Disabled,
            2 => DataSplit::Enabled,
            _ => DataSplit::Unknown,
        }),
        hds_thresh: u32_of(m, RINGS_HDS_THRESH),
        hds_thresh_max: u32_of(m, RINGS_HDS_THRESH_MAX),
    })
}

fn read_channels(ifindex: u32) -> Read<Channels> {
    let msgs = match ethtool_header(ifindex)
        .and_then(|a| request("ethtool", ETHTOOL_MSG_CHANNELS_GET, a, false, false))
    {
        Ok(m) => m,
        Err(e) => return e.into_read(),
    };
    let Some(m) = msgs.first() else {
        return Read::Failed("no reply".into());
    };
    Read::Value(Channels {
        rx: u32_of(m, CHANNELS_RX_COUNT),
        combined: u32_of(m, CHANNELS_COMBINED_COUNT),
        rx_max: u32_of(m, CHANNELS_RX_MAX),
        combined_max: u32_of(m, CHANNELS_COMBINED_MAX),
    })
}

fn read_rss(ifindex: u32) -> Read<Vec<RssContext>> {
    // The plain get: context 0. Further contexts (listed by the dump, 6.11+) are not read.
    let got = ethtool_header(ifindex)
        .and_then(|a| request("ethtool", ETHTOOL_MSG_RSS_GET, a, false, false));
    let msgs = match got {
        Ok(m) => m,
        Err(e) => return e.into_read(),
    };
    Read::Value(
        msgs.iter()
            .map(|m| RssContext {
                context: u32_of(m, RSS_CONTEXT).unwrap_or(0),
                indir: m
                    .get_attr_handle()
                    .get_attribute(RSS_INDIR)
                    .map(|a| {
                        a.nla_payload
                            .as_ref()
                            .chunks_exact(4)
                            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect(),
    )
}

fn read_queues(ifindex: u32) -> Read<Vec<RxQueue>> {
    let mut attrs = GenlBuffer::new();
    match attr(QUEUE_IFINDEX, ifindex) {
        Ok(a) => attrs.push(a),
        Err(e) => return e.into_read(),
    }
    let queues = match request("netdev", NETDEV_CMD_QUEUE_GET, attrs, true, false) {
        Ok(m) => m,
        Err(e) => return e.into_read(),
    };
    // NAPI instances give the interrupts; a kernel or driver without them leaves irq empty.
    let mut napis = Vec::new();
    let mut attrs = GenlBuffer::new();
    if let Ok(a) = attr(NAPI_IFINDEX, ifindex) {
        attrs.push(a);
        if let Ok(msgs) = request("netdev", NETDEV_CMD_NAPI_GET, attrs, true, false) {
            napis = msgs
                .iter()
                .filter_map(|m| {
                    Some((
                        u32_of(m, NAPI_ID)?,
                        u32_of(m, NAPI_IRQ),
                        u32_of(m, NAPI_PID),
                    ))
                })
                .collect();
        }
    }
    let mut out: Vec<RxQueue> = queues
        .iter()
        .filter(|m| u32_of(m, QUEUE_IFINDEX) == Some(ifindex) && u32_of(m, QUEUE_TYPE) == Some(0))
        .filter_map(|m| {
            let napi_id = u32_of(m, QUEUE_NAPI_ID);
            let napi = napis.iter().find(|n| Some(n.0) == napi_id);
            Some(RxQueue {
                id: u32_of(m, QUEUE_ID)?,
                napi_id,
                irq: napi.and_then(|n| n.1),
                napi_pid: napi.and_then(|n| n.2),
                io_uring: m.get_attr_handle().get_attribute(QUEUE_IO_URING).is_some(),
                dmabuf: u32_of(m, QUEUE_DMABUF),
            })
        })
        .collect();
    out.sort_by_key(|q| q.id);
    Read::Value(out)
}

/// What rtnetlink says of one link in the calling thread's network namespace.
struct Link {
    ifindex: u32,
    /// The parent device's bus and name (`IFLA_PARENT_DEV_BUS_NAME`, `IFLA_PARENT_DEV_NAME`,
    /// Linux 5.18+): `("virtio", "virtio1")`, `("pci", "0000:3b:00.0")`.
    parent: Option<(String, String)>,
}

impl Link {
    /// The driver bound to the parent device, from sysfs's bus view: unlike
    /// `/sys/class/net/IF`, which shows the network namespace that mounted sysfs, the bus view
    /// is the same from every namespace (a container's interface has its driver too).
    fn driver(&self) -> Option<String> {
        let (bus, dev) = self.parent.as_ref()?;
        let link = std::fs::read_link(format!("/sys/bus/{bus}/devices/{dev}/driver")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }
}

/// `RTM_GETLINK` by name: `None` if there is no such link here. rtnetlink, not
/// `/sys/class/net`, so that the lookup happens in the caller's network namespace.
fn link_by_name(ifname: &str) -> Option<Link> {
    use neli::consts::rtnl::{Arphrd, IffFlags, Ifla, RtAddrFamily, Rtm};
    use neli::rtnl::{Ifinfomsg, Rtattr};
    use neli::types::RtBuffer;
    const IFLA_PARENT_DEV_NAME: u16 = 56;
    const IFLA_PARENT_DEV_BUS_NAME: u16 = 57;

    let mut sock = NlSocketHandle::connect(NlFamily::Route, None, &[]).ok()?;
    let mut attrs = RtBuffer::new();
    attrs.push(Rtattr::new(None, Ifla::Ifname, ifname).ok()?);
    let msg = Ifinfomsg::new(
        RtAddrFamily::Unspecified,
        Arphrd::None,
        0,
        IffFlags::empty(),
        IffFlags::empty(),
        attrs,
    );
    sock.send(Nlmsghdr::new(
        None,
        Rtm::Getlink,
        NlmFFlags::new(&[NlmF::Request]),
        None,
        None,
        NlPayload::Payload(msg),
    ))
    .ok()?;
    // An unknown name is an error reply (ENODEV), which neli returns as `Err`.
    let reply = sock.recv::<Rtm, Ifinfomsg>().ok()??;
    let NlPayload::Payload(info) = reply.nl_payload else {
        return None;
    };
    let ifindex = u32::try_from(info.ifi_index).ok()?;
    let handle = info.rtattrs.get_attr_handle();
    let text = |ty: u16| {
        handle
            .get_attr_payload_as_with_len::<String>(Ifla::UnrecognizedConst(ty))
            .ok()
    };
    let parent = text(IFLA_PARENT_DEV_BUS_NAME).zip(text(IFLA_PARENT_DEV_NAME));
    Some(Link { ifindex, parent })
}

/// Reads interface `ifname`: driver, rings, channels, RSS, ntuple rules, and from `netdev` its receive queues
/// with NAPI ids, interrupts and memory-provider bindings. What the kernel or driver does not
/// offer is [`Read::NotSupported`], not an error; an unknown interface is.
pub fn read(ifname: &str) -> Result<NicState, NicError> {
    if crate::zcrx::validate_ifname(ifname).is_err() {
        return Err(NicError::UnknownInterface(ifname.to_owned()));
    }
    let link = link_by_name(ifname).ok_or_else(|| NicError::UnknownInterface(ifname.to_owned()))?;
    let ifindex = link.ifindex;
    let driver = link.driver();
    Ok(NicState {
        ifname: ifname.to_owned(),
        ifindex,
        driver,
        rings: read_rings(ifindex),
        channels: read_channels(ifindex),
        rss: read_rss(ifindex),
        ntuple: super::ntuple::read_rules(ifname),
        rx_queues: read_queues(ifindex),
    })
}

/// What [`apply`] changed; dropping it puts the old settings back.
#[derive(Debug)]
#[must_use = "dropping the guard restores the NIC's settings at once"]
pub struct Applied {
    ifname: String,
    ifindex: u32,
    /// The changes made, in order.
    changes: Vec<Change>,
    /// The ring settings before (split, threshold).
    old_rings: Option<(Option<DataSplit>, Option<u32>)>,
    /// The default RSS table before; `None` inside when it was the kernel's default spread
    /// (restored by a reset).
    old_rss: Option<Option<Vec<u32>>>,
    keep: bool,
}

impl Applied {
    /// The changes made.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Keeps the changes: the guard no longer restores them.
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// Puts the old settings back now.
    pub fn restore(mut self) -> Result<(), NicError> {
        self.restore_now()
    }

    fn restore_now(&mut self) -> Result<(), NicError> {
        if self.keep {
            return Ok(());
        }
        self.keep = true;
        // In the reverse order of `apply_changes`; every step is tried, the first error kept.
        let rss = match self.old_rss.take() {
            Some(old) => set_rss(&self.ifname, self.ifindex, old.as_deref().unwrap_or(&[])),
            None => Ok(()),
        };
        if let Some((split, thresh)) = self.old_rings.take() {
            set_rings(
                &self.ifname,
                self.ifindex,
                split.map(|s| match s {
                    DataSplit::Unknown => 0,
                    DataSplit::Disabled => 1,
                    DataSplit::Enabled => 2,
                }),
                thresh,
            )?;
        }
        rss
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if let Err(e) = self.restore_now() {
            tracing::warn!(ifname = %self.ifname, error = %e, "could not restore NIC settings");
        }
    }
}

fn set_rings(
    ifname: &str,
    ifindex: u32,
    split: Option<u8>,
    thresh: Option<u32>,
) -> Result<(), NicError> {
    let to_err = |e: ReqError| match e {
        ReqError::Errno(e) if e == libc::EPERM => NicError::NotPermitted(ifname.to_owned()),
        ReqError::Errno(e) if e == libc::EOPNOTSUPP || e == libc::ENOTSUPP_ => {
            NicError::NotSupported {
                ifname: ifname.to_owned(),
                what: format!("the driver refused the ring settings: {}", e_str(e)),
            }
        }
        e => NicError::Netlink(e.describe()),
    };
    let mut attrs = ethtool_header(ifindex).map_err(to_err)?;
    if let Some(s) = split {
        attrs.push(attr(RINGS_TCP_DATA_SPLIT, s).map_err(to_err)?);
    }
    if let Some(t) = thresh {
        attrs.push(attr(RINGS_HDS_THRESH, t).map_err(to_err)?);
    }
    request("ethtool", ETHTOOL_MSG_RINGS_SET, attrs, false, true).map_err(to_err)?;
    Ok(())
}

/// Sets the default RSS context's table; an empty one resets it to the kernel's default spread.
fn set_rss(ifname: &str, ifindex: u32, indir: &[u32]) -> Result<(), NicError> {
    let to_err = |e: ReqError| match e {
        ReqError::Errno(e) if e == libc::EPERM => NicError::NotPermitted(ifname.to_owned()),
        ReqError::Errno(e) if e == libc::EOPNOTSUPP || e == libc::ENOTSUPP_ => {
            NicError::NotSupported {
                ifname: ifname.to_owned(),
                what: format!(
                    "the kernel or driver refused the RSS table ({}; setting it over netlink \
                     needs Linux 6.17+, else: ethtool -X {ifname} ...)",
                    e_str(e)
                ),
            }
        }
        e => NicError::Netlink(e.describe()),
    };
    let mut attrs = ethtool_header(ifindex).map_err(to_err)?;
    let bytes: Vec<u8> = indir.iter().flat_map(|q| q.to_ne_bytes()).collect();
    attrs.push(attr(RSS_INDIR, Buffer::from(bytes)).map_err(to_err)?);
    request("ethtool", ETHTOOL_MSG_RSS_SET, attrs, false, true).map_err(to_err)?;
    Ok(())
}

/// `Operation not supported (os error 95)`.
fn e_str(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// Makes the changes zcrx on `queue` needs that netlink can make (header/data split on,
/// threshold 0, the default RSS table off the queue), after checking: an unknown interface, a
/// queue out of range, a driver without header/data split or a caller without `CAP_NET_ADMIN`
/// is an error and nothing is changed. The guard puts the old settings back when dropped; a
/// change that fails halfway is undone before the error returns. Flow rules are left to the
/// command the check names.
pub fn apply(ifname: &str, queue: u32) -> Result<Applied, NicError> {
    let state = read(ifname)?;
    let c = check(&state, queue)?;
    let changes = plan(&c)?;
    apply_to(&state, changes)
}

/// Makes `changes` (from [`plan`], or chosen by the caller) on interface `ifname`, in order,
/// with the same guard as [`apply`]: dropped, it puts back what was changed; if a change fails,
/// those before it are undone before the error returns.
pub fn apply_changes(ifname: &str, changes: Vec<Change>) -> Result<Applied, NicError> {
    apply_to(&read(ifname)?, changes)
}

fn apply_to(state: &NicState, changes: Vec<Change>) -> Result<Applied, NicError> {
    let ifname = state.ifname.as_str();
    if !changes.is_empty() && !caps::has_effective_cap(caps::CAP_NET_ADMIN) {
        return Err(NicError::NotPermitted(ifname.to_owned()));
    }
    let mut applied = Applied {
        ifname: ifname.to_owned(),
        ifindex: state.ifindex,
        changes: Vec::new(),
        old_rings: None,
        old_rss: None,
        keep: false,
    };
    for change in changes {
        match &change {
            &Change::Rings {
                data_split,
                hds_thresh,
            } => {
                let rings = state.rings.value().cloned().unwrap_or_default();
                applied.old_rings = Some((
                    data_split.then_some(rings.tcp_data_split).flatten(),
                    hds_thresh.then_some(rings.hds_thresh).flatten(),
                ));
                // Split first, then the threshold: a driver may refuse a threshold while split
                // is off. On failure the guard (dropped here) restores what was set.
                if data_split {
                    set_rings(ifname, state.ifindex, Some(2), None)?;
                }
                if hds_thresh {
                    set_rings(ifname, state.ifindex, None, Some(0))?;
                }
            }
            Change::RssTable { indir } => {
                let old = state
                    .rss
                    .value()
                    .and_then(|c| c.iter().find(|c| c.context == 0))
                    .map(|c| c.indir.clone())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| NicError::NotSupported {
                        ifname: ifname.to_owned(),
                        what: "the default RSS table cannot be read, so it could not be put \
                               back"
                            .into(),
                    })?;
                if old.len() != indir.len() {
                    return Err(NicError::NotSupported {
                        ifname: ifname.to_owned(),
                        what: format!(
                            "the RSS table has {} buckets, the change {}",
                            old.len(),
                            indir.len()
                        ),
                    });
                }
                let count = state.rx_queue_count().unwrap_or(0);
                if let Some(q) = indir.iter().find(|&&q| q >= count) {
                    return Err(NicError::QueueOutOfRange {
                        ifname: ifname.to_owned(),
                        queue: *q,
                        count,
                    });
                }
                let default = is_default_rss(&old, count);
                set_rss(ifname, state.ifindex, indir)?;
                applied.old_rss = Some((!default).then_some(old));
            }
        }
        applied.changes.push(change);
    }
    Ok(applied)
}
