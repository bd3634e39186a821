//! Naming the NIC: interface names and indexes, and how many receive queues it has.

use super::*;

/// `IFNAMSIZ`: interface names are at most 15 bytes plus a NUL.
pub const IFNAMSIZ: usize = 16;

/// Which network interface to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// By name, e.g. `"eth0"`.
    Name(String),
    /// By index (`ip link` shows it before the name).
    Index(u32),
    /// None: `ZCRX_REG_NODEV` (Linux 7.1+). Receives on any TCP socket of the ring are copied by
    /// the kernel into the area, with the same completions, refill ring and teardown scrub as on
    /// a NIC queue.
    NoDevice,
}

/// Checks an interface name the way the kernel would before looking it up: not empty, shorter
/// than [`IFNAMSIZ`], no NUL, no `/`, no whitespace, not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() >= IFNAMSIZ {
        Some("it is longer than 15 bytes (IFNAMSIZ is 16 including the NUL)")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.chars().any(char::is_whitespace) {
        Some("it contains whitespace")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not interface names")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::BadInterfaceName {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

pub(super) fn netdevice_socket() -> Result<rustix::fd::OwnedFd> {
    use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
    socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .or_else(|_| {
        socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )
    })
    .map_err(|e| Error::Os {
        what: "opening a socket to look up the interface",
        source: e.into(),
    })
}

/// An interface by both its names: what [`resolve_interface`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResolvedInterface {
    /// Its name (`"no device"` for [`Interface::NoDevice`]).
    pub name: String,
    /// Its index (0 for [`Interface::NoDevice`]).
    pub index: u32,
}

impl ResolvedInterface {
    fn new(name: String, index: u32) -> Self {
        Self { name, index }
    }
}

/// Resolves an interface to its name and index. A name is validated first
/// ([`Error::BadInterfaceName`]); a name or index that does not exist is
/// [`Error::UnknownInterface`].
pub fn resolve_interface(interface: &Interface) -> Result<ResolvedInterface> {
    match interface {
        Interface::Name(name) => {
            validate_ifname(name)?;
            let sock = netdevice_socket()?;
            match rustix::net::netdevice::name_to_index(&sock, name) {
                Ok(index) => Ok(ResolvedInterface::new(name.clone(), index)),
                Err(Errno::NODEV) => Err(Error::UnknownInterface { name: name.clone() }),
                Err(e) => Err(Error::Os {
                    what: "looking up the interface index",
                    source: e.into(),
                }),
            }
        }
        Interface::NoDevice => Ok(ResolvedInterface::new("no device".to_owned(), 0)),
        Interface::Index(index) => {
            let sock = netdevice_socket()?;
            match rustix::net::netdevice::index_to_name(&sock, *index) {
                Ok(name) => Ok(ResolvedInterface::new(name, *index)),
                Err(Errno::NODEV) => Err(Error::UnknownInterface {
                    name: format!("ifindex {index}"),
                }),
                Err(e) => Err(Error::Os {
                    what: "looking up the interface name",
                    source: e.into(),
                }),
            }
        }
    }
}

/// Receive queues of `ifname` as sysfs shows them (`/sys/class/net/IF/queues/rx-N`); `None`
/// when sysfs cannot tell (not mounted, another network namespace's view).
pub fn rx_queue_count(ifname: &str) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{ifname}/queues")).ok()?;
    let n = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("rx-")))
        .count();
    (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX))
}
