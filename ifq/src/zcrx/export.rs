//! Sharing a zcrx queue with another ring, in this process or another (Linux 6.19+): the kernel's
//! export fd (`ZCRX_CTRL_EXPORT`), the area and refill region as memfds, and the geometry, sent
//! together over a Unix socket with `SCM_RIGHTS`.
//!
//! The refill ring has a single producer, so an export hands the queue over: the exporting
//! [`ZcrxIfq`] is consumed, and the importer becomes the only one to return buffers. That is the
//! privilege split the kernel allows: a process with `CAP_NET_ADMIN` registers and exports; one
//! without it imports (which needs no capability) and receives.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::{Error, Result};

/// What an importer needs besides the fds: the queue's geometry and where the kernel put the
/// refill ring's words. Sent as [`ExportInfo::LEN`] little-endian bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExportInfo {
    pub(crate) chunk_size: u32,
    pub(crate) chunks: u32,
    pub(crate) buf_shift: u32,
    pub(crate) rq_entries: u32,
    pub(crate) region_len: u64,
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) rqes: u32,
    pub(crate) no_device: bool,
    pub(crate) area_token: u64,
}

const MAGIC: &[u8; 8] = b"ZCRXEXP1";

impl ExportInfo {
    pub(crate) const LEN: usize = 56;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..8].copy_from_slice(MAGIC);
        let words = [
            self.chunk_size,
            self.chunks,
            self.buf_shift,
            self.rq_entries,
        ];
        for (i, w) in words.iter().enumerate() {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        b[24..32].copy_from_slice(&self.region_len.to_le_bytes());
        b[32..36].copy_from_slice(&self.head.to_le_bytes());
        b[36..40].copy_from_slice(&self.tail.to_le_bytes());
        b[40..44].copy_from_slice(&self.rqes.to_le_bytes());
        b[44..48].copy_from_slice(&u32::from(self.no_device).to_le_bytes());
        b[48..56].copy_from_slice(&self.area_token.to_le_bytes());
        b
    }

    /// Decodes what another process sent: only the shape is checked here (the importer checks
    /// the values against the files and the kernel).
    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::BadExport {
            why: why.to_owned(),
        };
        if b.len() != Self::LEN {
            return Err(bad("the message has the wrong length"));
        }
        if &b[..8] != MAGIC {
            return Err(bad("the message is not a zcrx export (wrong magic)"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        let flags = u32_at(44);
        if flags > 1 {
            return Err(bad("unknown flags"));
        }
        Ok(Self {
            chunk_size: u32_at(8),
            chunks: u32_at(12),
            buf_shift: u32_at(16),
            rq_entries: u32_at(20),
            region_len: u64_at(24),
            head: u32_at(32),
            tail: u32_at(36),
            rqes: u32_at(40),
            no_device: flags == 1,
            area_token: u64_at(48),
        })
    }
}

/// An exported zcrx queue: the kernel's export fd, the area's and the refill region's memfds,
/// and the geometry. Made by [`ZcrxIfq::export`](super::ZcrxIfq::export), moved to another
/// process with [`send`](Self::send) and [`recv`](Self::recv), taken over with
/// [`ZcrxIfq::import`](super::ZcrxIfq::import). Dropping it closes the fds (the queue dies with
/// the last ring or fd that holds it).
#[derive(Debug)]
pub struct ZcrxExport {
    pub(crate) zcrx: OwnedFd,
    pub(crate) area: OwnedFd,
    pub(crate) region: OwnedFd,
    pub(crate) info: ExportInfo,
}

impl ZcrxExport {
    /// Sends it over a connected Unix socket (one message, the three fds as `SCM_RIGHTS`).
    pub fn send(&self, socket: impl AsFd) -> Result<()> {
        let bytes = self.info.encode();
        let fds: [BorrowedFd<'_>; 3] = [self.zcrx.as_fd(), self.area.as_fd(), self.region.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let pushed = control.push(SendAncillaryMessage::ScmRights(&fds));
        debug_assert!(pushed, "the control buffer is sized for three fds");
        let sent = sendmsg(
            socket,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(|e| Error::Os {
            what: "sending the exported zcrx queue",
            source: e.into(),
        })?;
        if sent != bytes.len() {
            return Err(Error::Os {
                what: "sending the exported zcrx queue (short write)",
                source: std::io::ErrorKind::WriteZero.into(),
            });
        }
        Ok(())
    }

    /// Receives one sent with [`send`](Self::send) (blocking on a blocking socket). Anything
    /// but one message of the right shape with exactly three fds is [`Error::BadExport`]; fds
    /// that came with a bad message are closed.
    pub fn recv(socket: impl AsFd) -> Result<Self> {
        let mut bytes = [0u8; ExportInfo::LEN + 1];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut bytes)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| Error::Os {
            what: "receiving an exported zcrx queue",
            source: e.into(),
        })?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = m {
                fds.extend(received);
            }
        }
        if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
            return Err(Error::BadExport {
                why: "more fds came than a zcrx export has".into(),
            });
        }
        let info = ExportInfo::decode(&bytes[..msg.bytes])?;
        let [zcrx, area, region]: [OwnedFd; 3] =
            fds.try_into().map_err(|v: Vec<OwnedFd>| Error::BadExport {
                why: format!("{} fds came with it, a zcrx export has 3", v.len()),
            })?;
        Ok(Self {
            zcrx,
            area,
            region,
            info,
        })
    }

    /// Whether the exported queue has no device (`ZCRX_REG_NODEV`).
    pub fn is_no_device(&self) -> bool {
        self.info.no_device
    }

    /// The area's chunk size.
    pub fn chunk_size(&self) -> usize {
        self.info.chunk_size as usize
    }

    /// The area's chunk count.
    pub fn chunks(&self) -> u32 {
        self.info.chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ExportInfo {
        ExportInfo {
            chunk_size: 4096,
            chunks: 64,
            buf_shift: 12,
            rq_entries: 64,
            region_len: 8192,
            head: 0,
            tail: 64,
            rqes: 128,
            no_device: true,
            area_token: 0,
        }
    }

    #[test]
    fn info_round_trips() {
        let i = info();
        assert_eq!(ExportInfo::decode(&i.encode()).unwrap(), i);
        let j = ExportInfo {
            no_device: false,
            area_token: 3 << 48,
            ..i
        };
        assert_eq!(ExportInfo::decode(&j.encode()).unwrap(), j);
    }

    #[test]
    fn bad_messages_are_refused() {
        let b = info().encode();
        assert!(ExportInfo::decode(&b[..55]).is_err());
        let mut wrong = b;
        wrong[0] = b'X';
        assert!(ExportInfo::decode(&wrong).is_err());
        let mut flags = b;
        flags[44] = 7;
        assert!(ExportInfo::decode(&flags).is_err());
    }

    #[test]
    fn send_and_recv_carry_three_fds() {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let memfd = |n| rustix::fs::memfd_create(n, rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let e = ZcrxExport {
            zcrx: memfd("z"),
            area: memfd("a"),
            region: memfd("r"),
            info: info(),
        };
        e.send(&a).unwrap();
        let got = ZcrxExport::recv(&b).unwrap();
        assert_eq!(got.info, e.info);
        // Three new fds, not the sender's numbers reused.
        assert_ne!(
            std::os::fd::AsRawFd::as_raw_fd(&got.zcrx),
            std::os::fd::AsRawFd::as_raw_fd(&e.zcrx)
        );
        // Two fds only: refused, nothing leaks (the fds drop with the error).
        let fds = [e.zcrx.as_fd(), e.area.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        let bytes = info().encode();
        sendmsg(
            &a,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        match ZcrxExport::recv(&b) {
            Err(Error::BadExport { why }) => assert!(why.contains("2 fds"), "{why}"),
            other => panic!("expected BadExport, got {other:?}"),
        }
    }
}
