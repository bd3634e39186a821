//! ntuple flow rules (`ethtool -n`): the requests of the `SIOCETHTOOL` ioctl (`sys::ethtool`)
//! encoded and their replies decoded, as plain byte work tested without a kernel, and the read
//! that strings the three requests together.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Read;
use crate::sys::ethtool::{
    rxnfc, ETHTOOL_GRXCLSRLALL, ETHTOOL_GRXCLSRLCNT, ETHTOOL_GRXCLSRULE, FS_FLOW_TYPE, FS_H_U,
    FS_LOCATION, FS_M_U, FS_RING_COOKIE, RXNFC_CMD, RXNFC_RULE_CNT, RXNFC_RULE_LOCS, RXNFC_SIZE,
};

const EOPNOTSUPP: i32 = rustix::io::Errno::OPNOTSUPP.raw_os_error();
const ENOENT: i32 = rustix::io::Errno::NOENT.raw_os_error();

/// More rules than any driver's table holds: a reply claiming more is refused rather than
/// allocated for.
const MAX_RULES: u32 = 1 << 16;

const TCP_V4_FLOW: u32 = 0x01;
const UDP_V4_FLOW: u32 = 0x02;
const SCTP_V4_FLOW: u32 = 0x03;
const TCP_V6_FLOW: u32 = 0x05;
const UDP_V6_FLOW: u32 = 0x06;
const SCTP_V6_FLOW: u32 = 0x07;
/// Flag bits on `flow_type`: extra fields, a MAC match, an RSS context.
const FLOW_EXT: u32 = 0x8000_0000;
const FLOW_MAC_EXT: u32 = 0x4000_0000;
const FLOW_RSS: u32 = 0x2000_0000;
/// `ring_cookie` values that are not a queue.
const RX_CLS_FLOW_DISC: u64 = u64::MAX;
const RX_CLS_FLOW_WAKE: u64 = u64::MAX - 1;

/// What a rule matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowType {
    /// TCP over IPv4 (`flow-type tcp4`).
    Tcp4,
    /// UDP over IPv4.
    Udp4,
    /// SCTP over IPv4.
    Sctp4,
    /// TCP over IPv6 (`flow-type tcp6`).
    Tcp6,
    /// UDP over IPv6.
    Udp6,
    /// SCTP over IPv6.
    Sctp6,
    /// Another flow type (`ETHER_FLOW`, `IPV4_USER_FLOW`...): its number, without flag bits.
    Other(u32),
}

impl FlowType {
    fn from_raw(raw: u32) -> Self {
        match raw {
            TCP_V4_FLOW => Self::Tcp4,
            UDP_V4_FLOW => Self::Udp4,
            SCTP_V4_FLOW => Self::Sctp4,
            TCP_V6_FLOW => Self::Tcp6,
            UDP_V6_FLOW => Self::Udp6,
            SCTP_V6_FLOW => Self::Sctp6,
            other => Self::Other(other),
        }
    }

    fn is_v6(self) -> bool {
        matches!(self, Self::Tcp6 | Self::Udp6 | Self::Sctp6)
    }

    fn has_ports(self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

/// What a rule does with the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAction {
    /// Deliver to a receive queue (`action N`). `vf` is the cookie's VF field: 0 for the
    /// device itself.
    Queue {
        /// The queue (with an RSS context, an offset into the context's queues).
        queue: u32,
        /// The VF field of the cookie.
        vf: u8,
    },
    /// Drop them (`action -1`).
    Drop,
    /// Wake-on-LAN (`action -2`).
    Wake,
}

/// One ntuple flow rule, as `ethtool -n IFNAME` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowRule {
    /// Its location in the driver's table (`loc`).
    pub location: u32,
    /// What it matches on.
    pub flow: FlowType,
    /// The destination address, when the rule matches all of it.
    pub dst_ip: Option<IpAddr>,
    /// The source port, when the rule matches all of it.
    pub src_port: Option<u16>,
    /// The destination port, when the rule matches all of it.
    pub dst_port: Option<u16>,
    /// What it does.
    pub action: FlowAction,
    /// The RSS context the queue is relative to (`context N`), if any.
    pub rss_context: Option<u32>,
    /// It also matches on extra fields (VLAN, user data, a MAC address) not decoded here.
    pub extended: bool,
}

impl FlowRule {
    /// Whether the rule sends TCP (v4 or v6) straight to `queue` of the device itself.
    pub fn steers_tcp_to(&self, queue: u32) -> bool {
        matches!(self.flow, FlowType::Tcp4 | FlowType::Tcp6)
            && self.rss_context.is_none()
            && self.action == FlowAction::Queue { queue, vf: 0 }
    }
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn get_be16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// `ETHTOOL_GRXCLSRLCNT`: how many rules there are.
pub(crate) fn count_request() -> Vec<u8> {
    let mut buf = vec![0; RXNFC_SIZE];
    put_u32(&mut buf, RXNFC_CMD, ETHTOOL_GRXCLSRLCNT);
    buf
}

/// `ETHTOOL_GRXCLSRLALL` for `count` rules: where they are.
pub(crate) fn locations_request(count: u32) -> Vec<u8> {
    let len = (RXNFC_RULE_LOCS + 4 * count as usize).max(RXNFC_SIZE);
    let mut buf = vec![0; len];
    put_u32(&mut buf, RXNFC_CMD, ETHTOOL_GRXCLSRLALL);
    put_u32(&mut buf, RXNFC_RULE_CNT, count);
    buf
}

/// `ETHTOOL_GRXCLSRULE` for the rule at `location`.
pub(crate) fn rule_request(location: u32) -> Vec<u8> {
    let mut buf = vec![0; RXNFC_SIZE];
    put_u32(&mut buf, RXNFC_CMD, ETHTOOL_GRXCLSRULE);
    put_u32(&mut buf, FS_LOCATION, location);
    buf
}

/// The rule count of a `count_request` reply.
pub(crate) fn decode_count(reply: &[u8]) -> u32 {
    get_u32(reply, RXNFC_RULE_CNT)
}

/// The locations of a `locations_request` reply: as many as the kernel says it wrote, never
/// more than the request had room for.
pub(crate) fn decode_locations(reply: &[u8]) -> Vec<u32> {
    let room = (reply.len().saturating_sub(RXNFC_RULE_LOCS) / 4) as u32;
    let n = decode_count(reply).min(room);
    (0..n as usize)
        .map(|i| get_u32(reply, RXNFC_RULE_LOCS + 4 * i))
        .collect()
}

/// A `rule_request` reply (at least `RXNFC_SIZE` bytes).
pub(crate) fn decode_rule(reply: &[u8]) -> FlowRule {
    let raw_type = get_u32(reply, FS_FLOW_TYPE);
    let flow = FlowType::from_raw(raw_type & !(FLOW_EXT | FLOW_MAC_EXT | FLOW_RSS));
    // The `tcp_ip4_spec`/`tcp_ip6_spec` members of the flow union, in network order; a mask bit
    // set means the bit is matched.
    let (dst_at, dst_len, ports_at) = if flow.is_v6() {
        (16, 16, 32)
    } else {
        (4, 4, 8)
    };
    let value = &reply[FS_H_U..FS_H_U + 52];
    let mask = &reply[FS_M_U..FS_M_U + 52];
    let full = |at: usize, len: usize| mask[at..at + len].iter().all(|&b| b == 0xff);
    let dst_ip = (flow.has_ports() && full(dst_at, dst_len)).then(|| {
        if flow.is_v6() {
            let octets: [u8; 16] = value[dst_at..dst_at + 16].try_into().expect("16 bytes");
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            let octets: [u8; 4] = value[dst_at..dst_at + 4].try_into().expect("4 bytes");
            IpAddr::V4(Ipv4Addr::from(octets))
        }
    });
    let port = |at: usize| (flow.has_ports() && full(at, 2)).then(|| get_be16(value, at));
    let cookie = get_u64(reply, FS_RING_COOKIE);
    let action = match cookie {
        RX_CLS_FLOW_DISC => FlowAction::Drop,
        RX_CLS_FLOW_WAKE => FlowAction::Wake,
        c => FlowAction::Queue {
            queue: c as u32,
            vf: (c >> 32) as u8,
        },
    };
    FlowRule {
        location: get_u32(reply, FS_LOCATION),
        flow,
        dst_ip,
        src_port: port(ports_at),
        dst_port: port(ports_at + 2),
        action,
        rss_context: (raw_type & FLOW_RSS != 0).then(|| get_u32(reply, RXNFC_RULE_CNT)),
        extended: raw_type & (FLOW_EXT | FLOW_MAC_EXT) != 0,
    }
}

/// Reads the ntuple rules of `ifname`. A driver without them (`EOPNOTSUPP`) is
/// [`Read::NotSupported`].
pub(crate) fn read_rules(ifname: &str) -> Read<Vec<FlowRule>> {
    let failed = |what: &str, e: std::io::Error| match e.raw_os_error() {
        Some(EOPNOTSUPP) => Read::NotSupported(format!(
            "the driver keeps no ntuple flow rules ({what}: {e})"
        )),
        _ => Read::Failed(format!("{what}: {e}")),
    };
    let mut req = count_request();
    if let Err(e) = rxnfc(ifname, &mut req) {
        return failed("ETHTOOL_GRXCLSRLCNT", e);
    }
    let count = decode_count(&req);
    if count == 0 {
        return Read::Value(Vec::new());
    }
    if count > MAX_RULES {
        return Read::Failed(format!(
            "ETHTOOL_GRXCLSRLCNT reported {count} rules, more than any driver holds"
        ));
    }
    let mut req = locations_request(count);
    if let Err(e) = rxnfc(ifname, &mut req) {
        return failed("ETHTOOL_GRXCLSRLALL", e);
    }
    let mut rules = Vec::new();
    for location in decode_locations(&req) {
        let mut req = rule_request(location);
        match rxnfc(ifname, &mut req) {
            Ok(()) => rules.push(decode_rule(&req)),
            // Deleted between the two requests.
            Err(e) if e.raw_os_error() == Some(ENOENT) => {}
            Err(e) => return failed("ETHTOOL_GRXCLSRULE", e),
        }
    }
    Read::Value(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `rule_request` reply as a driver fills it for
    /// `flow-type tcp6 dst-port 9000 action 3 loc 7`.
    fn tcp6_reply() -> Vec<u8> {
        let mut r = rule_request(7);
        put_u32(&mut r, FS_FLOW_TYPE, TCP_V6_FLOW);
        r[FS_H_U + 34..FS_H_U + 36].copy_from_slice(&9000u16.to_be_bytes());
        r[FS_M_U + 34..FS_M_U + 36].copy_from_slice(&[0xff, 0xff]);
        r[FS_RING_COOKIE..FS_RING_COOKIE + 8].copy_from_slice(&3u64.to_ne_bytes());
        r
    }

    #[test]
    fn requests_carry_their_command_and_argument() {
        let c = count_request();
        assert_eq!((c.len(), get_u32(&c, RXNFC_CMD)), (RXNFC_SIZE, 0x2e));
        let l = locations_request(5);
        assert_eq!(get_u32(&l, RXNFC_CMD), 0x30);
        assert_eq!(get_u32(&l, RXNFC_RULE_CNT), 5);
        assert_eq!(l.len(), RXNFC_RULE_LOCS + 20);
        let r = rule_request(9);
        assert_eq!(
            (get_u32(&r, RXNFC_CMD), get_u32(&r, FS_LOCATION)),
            (0x2f, 9)
        );
    }

    #[test]
    fn a_tcp6_port_rule_decodes() {
        let rule = decode_rule(&tcp6_reply());
        assert_eq!(rule.location, 7);
        assert_eq!(rule.flow, FlowType::Tcp6);
        assert_eq!(
            (rule.src_port, rule.dst_port, rule.dst_ip),
            (None, Some(9000), None)
        );
        assert_eq!(rule.action, FlowAction::Queue { queue: 3, vf: 0 });
        assert!(rule.steers_tcp_to(3) && !rule.steers_tcp_to(2));
    }

    #[test]
    fn a_tcp4_rule_with_address_and_partial_port_mask() {
        let mut r = rule_request(1);
        put_u32(&mut r, FS_FLOW_TYPE, TCP_V4_FLOW | FLOW_EXT);
        r[FS_H_U + 4..FS_H_U + 8].copy_from_slice(&[10, 0, 0, 2]);
        r[FS_M_U + 4..FS_M_U + 8].copy_from_slice(&[0xff; 4]);
        r[FS_H_U + 10..FS_H_U + 12].copy_from_slice(&80u16.to_be_bytes());
        r[FS_M_U + 10..FS_M_U + 12].copy_from_slice(&[0xff, 0x00]);
        let rule = decode_rule(&r);
        assert_eq!(rule.dst_ip, Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))));
        assert_eq!(rule.dst_port, None, "a partial mask is not a port");
        assert!(rule.extended);
        assert_eq!(rule.action, FlowAction::Queue { queue: 0, vf: 0 });
    }

    #[test]
    fn drop_wake_vf_and_rss_context_actions() {
        let mut r = tcp6_reply();
        r[FS_RING_COOKIE..FS_RING_COOKIE + 8].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert_eq!(decode_rule(&r).action, FlowAction::Drop);
        r[FS_RING_COOKIE..FS_RING_COOKIE + 8].copy_from_slice(&(u64::MAX - 1).to_ne_bytes());
        assert_eq!(decode_rule(&r).action, FlowAction::Wake);
        let vf = (2u64 << 32) | 3;
        r[FS_RING_COOKIE..FS_RING_COOKIE + 8].copy_from_slice(&vf.to_ne_bytes());
        let rule = decode_rule(&r);
        assert_eq!(rule.action, FlowAction::Queue { queue: 3, vf: 2 });
        assert!(!rule.steers_tcp_to(3), "a VF's queue is not the device's");
        let mut r = tcp6_reply();
        put_u32(&mut r, FS_FLOW_TYPE, TCP_V6_FLOW | FLOW_RSS);
        put_u32(&mut r, RXNFC_RULE_CNT, 4);
        let rule = decode_rule(&r);
        assert_eq!((rule.flow, rule.rss_context), (FlowType::Tcp6, Some(4)));
        assert!(
            !rule.steers_tcp_to(3),
            "relative to a context, not queue 3 itself"
        );
    }

    #[test]
    fn other_flow_types_have_no_ports() {
        let mut r = tcp6_reply();
        put_u32(&mut r, FS_FLOW_TYPE, 0x12);
        let rule = decode_rule(&r);
        assert_eq!((rule.flow, rule.dst_port), (FlowType::Other(0x12), None));
    }

    #[test]
    fn locations_never_read_past_the_reply() {
        let mut l = locations_request(2);
        put_u32(&mut l, RXNFC_RULE_LOCS, 11);
        put_u32(&mut l, RXNFC_RULE_LOCS + 4, 12);
        assert_eq!(decode_locations(&l), vec![11, 12]);
        // The kernel claims more than there was room for.
        put_u32(&mut l, RXNFC_RULE_CNT, 1000);
        assert_eq!(decode_locations(&l).len(), (l.len() - RXNFC_RULE_LOCS) / 4);
    }

    #[test]
    fn the_ioctl_refuses_short_buffers_and_bad_names() {
        let mut short = vec![0; RXNFC_SIZE - 1];
        assert!(rxnfc("lo", &mut short).is_err());
        let mut l = locations_request(4);
        l.truncate(RXNFC_SIZE);
        assert_eq!(
            rxnfc("lo", &mut l).unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
        let mut c = count_request();
        assert!(rxnfc("a-name-far-too-long", &mut c).is_err());
    }

    #[test]
    fn loopback_has_no_ntuple_rules() {
        // Loopback has no rxnfc operations: the kernel answers EOPNOTSUPP.
        assert!(matches!(read_rules("lo"), Read::NotSupported(why) if why.contains("GRXCLSRLCNT")));
    }
}
