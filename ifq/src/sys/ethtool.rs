//! The one `SIOCETHTOOL` ioctl the NIC reader makes: the ntuple flow rules
//! (`ETHTOOL_GRXCLSRLCNT`, `ETHTOOL_GRXCLSRLALL`, `ETHTOOL_GRXCLSRULE`), which the `ethtool`
//! netlink family does not carry (Linux 6.18). Requests and replies are byte buffers laid out as
//! `struct ethtool_rxnfc`; `nic::ntuple` encodes and decodes them, with the offsets of the
//! structs here (compared with the uapi header by `tests/abi_layout.rs`).

#![allow(non_camel_case_types)]

use std::io;
use std::mem::{offset_of, size_of};

use rustix::net::{AddressFamily, SocketType};

/// The ethtool ioctl (`linux/sockios.h`).
const SIOCETHTOOL: rustix::ioctl::Opcode = 0x8946;
/// `IFNAMSIZ`.
const IFNAMSIZ: usize = 16;

/// `struct ifreq` with the `ifr_data` member of its union; the padding keeps the union's size
/// (that of `struct ifmap`, 24 bytes on 64-bit) so the kernel's copy stays inside it.
#[repr(C)]
struct IfreqData {
    ifr_name: [u8; IFNAMSIZ],
    ifr_data: *mut u8,
    _pad: [u8; 24 - size_of::<usize>()],
}

/// Get the number of classification rules.
pub(crate) const ETHTOOL_GRXCLSRLCNT: u32 = 0x2e;
/// Get one classification rule.
pub(crate) const ETHTOOL_GRXCLSRULE: u32 = 0x2f;
/// Get the locations of all classification rules.
pub(crate) const ETHTOOL_GRXCLSRLALL: u32 = 0x30;

/// `struct ethtool_flow_ext`.
#[repr(C)]
pub(crate) struct ethtool_flow_ext {
    padding: [u8; 2],
    h_dest: [u8; 6],
    vlan_etype: u16,
    vlan_tci: u16,
    data: [u32; 2],
}

/// `struct ethtool_rx_flow_spec`; `h_u` and `m_u` are `union ethtool_flow_union` (52 bytes).
#[repr(C)]
pub(crate) struct ethtool_rx_flow_spec {
    flow_type: u32,
    h_u: [u32; 13],
    h_ext: ethtool_flow_ext,
    m_u: [u32; 13],
    m_ext: ethtool_flow_ext,
    ring_cookie: u64,
    location: u32,
}

/// `struct ethtool_rxnfc` without its trailing `rule_locs[]`, which starts at
/// [`RXNFC_RULE_LOCS`]; `rule_cnt` shares a union with `rss_context`.
#[repr(C)]
pub(crate) struct ethtool_rxnfc {
    cmd: u32,
    flow_type: u32,
    data: u64,
    fs: ethtool_rx_flow_spec,
    rule_cnt: u32,
}

/// Byte offsets into an `ethtool_rxnfc` request or reply.
pub(crate) const RXNFC_CMD: usize = offset_of!(ethtool_rxnfc, cmd);
pub(crate) const RXNFC_RULE_CNT: usize = offset_of!(ethtool_rxnfc, rule_cnt);
/// `rule_locs[]` follows the union of `rule_cnt` and `rss_context` (offset 188, inside the
/// struct's tail padding).
pub(crate) const RXNFC_RULE_LOCS: usize = RXNFC_RULE_CNT + size_of::<u32>();
/// Offsets of the flow spec's fields, from the start of the `ethtool_rxnfc`.
pub(crate) const FS_FLOW_TYPE: usize =
    offset_of!(ethtool_rxnfc, fs) + offset_of!(ethtool_rx_flow_spec, flow_type);
pub(crate) const FS_H_U: usize =
    offset_of!(ethtool_rxnfc, fs) + offset_of!(ethtool_rx_flow_spec, h_u);
pub(crate) const FS_M_U: usize =
    offset_of!(ethtool_rxnfc, fs) + offset_of!(ethtool_rx_flow_spec, m_u);
pub(crate) const FS_RING_COOKIE: usize =
    offset_of!(ethtool_rxnfc, fs) + offset_of!(ethtool_rx_flow_spec, ring_cookie);
pub(crate) const FS_LOCATION: usize =
    offset_of!(ethtool_rxnfc, fs) + offset_of!(ethtool_rx_flow_spec, location);
/// The size of a request without rule locations.
pub(crate) const RXNFC_SIZE: usize = size_of::<ethtool_rxnfc>();

/// The layouts of the structs above, for the layout tests.
#[cfg(feature = "sim")]
pub(crate) fn layouts() -> Vec<super::abi::Layout> {
    use super::abi::Layout;
    vec![
        Layout {
            name: "ethtool_flow_ext",
            size: size_of::<ethtool_flow_ext>(),
            fields: vec![
                ("padding", offset_of!(ethtool_flow_ext, padding)),
                ("h_dest", offset_of!(ethtool_flow_ext, h_dest)),
                ("vlan_etype", offset_of!(ethtool_flow_ext, vlan_etype)),
                ("vlan_tci", offset_of!(ethtool_flow_ext, vlan_tci)),
                ("data", offset_of!(ethtool_flow_ext, data)),
            ],
        },
        Layout {
            name: "ethtool_rx_flow_spec",
            size: size_of::<ethtool_rx_flow_spec>(),
            fields: vec![
                ("flow_type", offset_of!(ethtool_rx_flow_spec, flow_type)),
                ("h_u", offset_of!(ethtool_rx_flow_spec, h_u)),
                ("h_ext", offset_of!(ethtool_rx_flow_spec, h_ext)),
                ("m_u", offset_of!(ethtool_rx_flow_spec, m_u)),
                ("m_ext", offset_of!(ethtool_rx_flow_spec, m_ext)),
                ("ring_cookie", offset_of!(ethtool_rx_flow_spec, ring_cookie)),
                ("location", offset_of!(ethtool_rx_flow_spec, location)),
            ],
        },
        Layout {
            name: "ethtool_rxnfc",
            size: size_of::<ethtool_rxnfc>(),
            fields: vec![
                ("cmd", RXNFC_CMD),
                ("flow_type", offset_of!(ethtool_rxnfc, flow_type)),
                ("data", offset_of!(ethtool_rxnfc, data)),
                ("fs", offset_of!(ethtool_rxnfc, fs)),
                ("rule_cnt", RXNFC_RULE_CNT),
                ("rule_locs", RXNFC_RULE_LOCS),
            ],
        },
    ]
}

/// Sends the `ethtool_rxnfc` request in `buf` to interface `ifname`; the kernel writes the reply
/// over it. For `ETHTOOL_GRXCLSRLALL`, `buf` must have room for the `rule_cnt` locations it
/// asks for (checked: `InvalidInput` otherwise, before any call).
pub(crate) fn rxnfc(ifname: &str, buf: &mut [u8]) -> io::Result<()> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(&0) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    if buf.len() < RXNFC_SIZE {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let word = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    if word(RXNFC_CMD) == ETHTOOL_GRXCLSRLALL {
        let room = RXNFC_RULE_LOCS as u64 + 4 * u64::from(word(RXNFC_RULE_CNT));
        if (buf.len() as u64) < room {
            return Err(io::ErrorKind::InvalidInput.into());
        }
    }
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None)?;
    let mut ifr = IfreqData {
        ifr_name: [0; IFNAMSIZ],
        ifr_data: buf.as_mut_ptr(),
        _pad: [0; 24 - size_of::<usize>()],
    };
    ifr.ifr_name[..name.len()].copy_from_slice(name);
    // SAFETY: SIOCETHTOOL takes a `struct ifreq`, which `IfreqData` lays out (name, then the
    // union as its `ifr_data` pointer, padded to the union's size). The name is NUL-terminated
    // (shorter than IFNAMSIZ, zero-filled); the data pointer is `buf`, exclusively borrowed for
    // the call. The kernel reads and writes at most `sizeof(struct ethtool_rxnfc)` bytes of it,
    // plus for ETHTOOL_GRXCLSRLALL `rule_cnt` u32s at `RXNFC_RULE_LOCS`, and `buf` is that
    // long (both checked above).
    unsafe {
        let req = rustix::ioctl::Updater::<SIOCETHTOOL, IfreqData>::new(&mut ifr);
        rustix::ioctl::ioctl(&sock, req)?;
    }
    Ok(())
}
