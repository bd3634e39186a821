//! Sharing a zcrx queue with another ring, in this process or another (Linux 6.19+): the kernel's
//! export fd (`ZCRX_CTRL_EXPORT`), the area and refill region as memfds, and the geometry, sent
//! together over a Unix socket with `SCM_RIGHTS`.
//!
//! The refill ring has a single producer, so an export hands the queue over: the exporting
//! [`ZcrxIfq`] is consumed, and the importer becomes the only one to return buffers.
//!
//! Linux 7.3 checks `CAP_NET_ADMIN` for an import as for any registration, and refuses to pass
//! an io_uring fd over `SCM_RIGHTS`, so a receiver without the capability cannot take over a
//! queue another process registered. What the kernel does allow is a split in time: only the
//! registration needs the capability, so a thread can register, drop every capability and its
//! root uid, and receive from then on (`ifq/tests/zcrx_export.rs` shows it).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::*;
use crate::area::Area;
use crate::error::{Error, Result};
use crate::sys::abi::IO_RQ_MAX_ENTRIES;
use crate::sys::mmap::Mmap;

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
        let fds = [self.zcrx.as_fd(), self.area.as_fd(), self.region.as_fd()];
        send_fds(socket, &bytes, &fds, "sending the exported zcrx queue")
    }

    /// Receives one sent with [`send`](Self::send) (blocking on a blocking socket). Anything
    /// but one message of the right shape with exactly three fds is [`Error::BadExport`]; fds
    /// that came with a bad message are closed.
    pub fn recv(socket: impl AsFd) -> Result<Self> {
        let (bytes, fds) =
            recv_with_fds::<{ ExportInfo::LEN + 1 }>(socket, "receiving an exported zcrx queue")?;
        let info = ExportInfo::decode(&bytes)?;
        let [zcrx, area, region] = three(fds)?;
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

/// The area and refill region of an exported or handed-off queue, mapped after checking them
/// against `info` and the files' sizes.
pub(crate) struct Mapped {
    pub(crate) area: Area,
    pub(crate) region_map: Mmap,
    pub(crate) region_fd: OwnedFd,
}

impl Mapped {
    pub(crate) fn new(area: OwnedFd, region: OwnedFd, info: &ExportInfo) -> Result<Self> {
        let bad = |why: String| Error::BadExport { why };
        let page = rustix::param::page_size();
        if !info.rq_entries.is_power_of_two() || info.rq_entries > IO_RQ_MAX_ENTRIES {
            return Err(bad(format!("{} refill entries", info.rq_entries)));
        }
        if info.area_token & crate::completion::ZCRX_OFFSET_MASK != 0 {
            return Err(bad(format!("area token {:#x}", info.area_token)));
        }
        let area = Area::from_shared_fd(area, info.chunk_size as usize, info.chunks as usize)?;
        if !(page.trailing_zeros()..=area.chunk_size().trailing_zeros()).contains(&info.buf_shift) {
            return Err(bad(format!("buffer shift {}", info.buf_shift)));
        }
        let region_len = usize::try_from(info.region_len)
            .ok()
            .filter(|&l| l > 0 && l % page == 0 && l <= 1 << 30)
            .ok_or_else(|| bad(format!("refill region of {} bytes", info.region_len)))?;
        let size = rustix::fs::fstat(&region)
            .map_err(|e| Error::Os {
                what: "reading the size of the exported refill region",
                source: e.into(),
            })?
            .st_size;
        if u64::try_from(size).ok() != Some(region_len as u64) {
            return Err(bad(format!(
                "the refill region file holds {size} bytes, the geometry says {region_len}"
            )));
        }
        let region_map = Mmap::map_shared(&region, region_len).map_err(|source| Error::Map {
            len: region_len,
            source,
        })?;
        Ok(Self {
            area,
            region_map,
            region_fd: region,
        })
    }
}

fn send_fds(
    socket: impl AsFd,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    what: &'static str,
) -> Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
        debug_assert!(pushed, "the control buffer is sized for three fds");
    }
    let sent = sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(|e| Error::Os {
        what,
        source: e.into(),
    })?;
    if sent != bytes.len() {
        return Err(Error::Os {
            what,
            source: std::io::ErrorKind::WriteZero.into(),
        });
    }
    Ok(())
}

/// One message of at most `N - 1` bytes and the fds that came with it.
fn recv_with_fds<const N: usize>(
    socket: impl AsFd,
    what: &'static str,
) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut bytes = [0u8; N];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| Error::Os {
        what,
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
    Ok((bytes[..msg.bytes].to_vec(), fds))
}

fn three(fds: Vec<OwnedFd>) -> Result<[OwnedFd; 3]> {
    fds.try_into().map_err(|v: Vec<OwnedFd>| Error::BadExport {
        why: format!("{} fds came with it, a zcrx export has 3", v.len()),
    })
}

/// [`ZcrxIfq::export`] refused: why, and the queue, still usable.
#[derive(Debug)]
pub struct ExportRefused {
    /// The queue, as it was (flushed).
    pub queue: Box<ZcrxIfq>,
    /// Why.
    pub error: Error,
}

impl std::fmt::Display for ExportRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ExportRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl ZcrxIfq {
    /// Hands the queue over to another ring, in this process or another (Linux 6.19+): returns
    /// the kernel's export fd with the area's and refill region's memfds and the geometry, for
    /// [`ZcrxExport::send`] and [`ZcrxIfq::import`]. The refill ring has one producer, so this
    /// queue is consumed: the importer returns buffers from now on. The ring it was registered
    /// on may be dropped afterwards; the queue lives while any ring or fd holds it.
    ///
    /// Errors ([`Error::NotExportable`]): the queue was not registered with
    /// [`ZcrxConfig::exportable`], the application still holds buffers of it (they would have
    /// no producer to go back through), or the kernel lacks export ([`Error::KernelTooOld`]).
    /// The queue comes back with the error ([`ExportRefused::queue`]), unchanged but flushed.
    pub fn export(mut self) -> std::result::Result<ZcrxExport, ExportRefused> {
        match self.export_parts() {
            Ok(export) => Ok(export),
            Err(error) => Err(ExportRefused {
                queue: Box::new(self),
                error,
            }),
        }
    }

    pub(super) fn export_parts(&mut self) -> Result<ZcrxExport> {
        if !self.features.export_import() {
            return Err(Error::KernelTooOld {
                feature: "zcrx export and import (ZCRX_CTRL_EXPORT, ZCRX_REG_IMPORT)",
                needs: "6.19",
            });
        }
        let exportable = self.region_fd.is_some()
            && self.core.area().shared_fd().is_some()
            && self.ring_fd.is_some();
        if !exportable {
            return Err(Error::NotExportable {
                why: "register it with ZcrxConfig::exportable(true) over a shared area",
            });
        }
        self.flush();
        let counts = self.core.table.counts();
        if counts.user > 0 || counts.refill > 0 || !self.refused.is_empty() {
            return Err(Error::NotExportable {
                why: "the application still holds buffers of it; drop them, flush, export",
            });
        }
        let dup = |fd: BorrowedFd<'_>| {
            fd.try_clone_to_owned().map_err(|source| Error::Os {
                what: "duplicating an fd for the export",
                source,
            })
        };
        let (Some(region_fd), Some(area_fd), Some(ring)) = (
            self.region_fd.as_ref(),
            self.core.area().shared_fd(),
            self.ring_fd.as_ref(),
        ) else {
            unreachable!("checked above")
        };
        let (area, region) = (dup(area_fd)?, dup(region_fd.as_fd())?);
        let zcrx = calls::ctrl_export(ring.as_fd(), self.zcrx_id).map_err(|source| Error::Os {
            what: "exporting the zcrx queue (ZCRX_CTRL_EXPORT)",
            source,
        })?;
        let (head, tail, rqes) = self.rq.offsets();
        Ok(ZcrxExport {
            zcrx,
            area,
            region,
            info: export::ExportInfo {
                chunk_size: self.chunk_size() as u32,
                chunks: self.core.area().chunks(),
                buf_shift: self.buf_shift,
                rq_entries: self.rq.entries(),
                region_len: self.rq.mapped_len() as u64,
                head,
                tail,
                rqes,
                no_device: self.no_device,
                area_token: self.area_token,
            },
        })
    }

    /// Takes over an [exported](Self::export) queue on `ring` (built like a ring for
    /// [`register`](Self::register); on this thread), in this process or one the export was
    /// [sent](ZcrxExport::send) to. Everything that came in is checked against the files and
    /// the kernel's answer first ([`Error::BadExport`]).
    ///
    /// Linux 7.3 checks `CAP_NET_ADMIN` for an import as for any registration (before it looks
    /// at the import flag), so the importer needs the capability too: without it this is
    /// [`Error::ZcrxRefused`] with [`ZcrxRefusal::NotPermitted`].
    ///
    /// Events stay with the ring that registered the queue.
    pub fn import(
        ring: &IoUring<squeue::Entry, cqueue::Entry32>,
        export: ZcrxExport,
        owner_limit: Option<u64>,
    ) -> Result<Self> {
        check_ring(ring)?;
        let features = query_on(ring)?;
        if !features.export_import() {
            return Err(Error::KernelTooOld {
                feature: "zcrx export and import (ZCRX_CTRL_EXPORT, ZCRX_REG_IMPORT)",
                needs: "6.19",
            });
        }
        let ZcrxExport {
            zcrx,
            area,
            region,
            info,
        } = export;
        let mapped = Mapped::new(area, region, &info)?;
        let reg = calls::import_zcrx(ring.as_fd(), zcrx.as_fd());
        let reg = match reg {
            Ok(reg) => reg,
            Err(e) => {
                if e.raw_os_error() == Some(Errno::EXIST.raw_os_error())
                    && !on_submitter_thread(ring)
                {
                    return Err(another_thread());
                }
                return Err(match e.raw_os_error().map(Errno::from_raw_os_error) {
                    Some(Errno::BADF) => Error::BadExport {
                        why: "the fd is not an exported zcrx queue (EBADF)".into(),
                    },
                    // Linux 7.3 checks CAP_NET_ADMIN before it looks at the import flag.
                    Some(Errno::PERM) => Error::ZcrxRefused {
                        ifname: "an imported queue".into(),
                        queue: 0,
                        refusal: ZcrxRefusal::NotPermitted,
                    },
                    _ => Error::Os {
                        what: "importing the zcrx queue (ZCRX_REG_IMPORT)",
                        source: e,
                    },
                });
            }
        };
        let o = reg.offsets;
        let this = Self::attach(
            ring,
            mapped,
            &info,
            reg.zcrx_id,
            (o.head, o.tail, o.rqes),
            features,
            owner_limit,
        )?;
        // The ring holds the queue now; the export fd's reference may go.
        drop(zcrx);
        Ok(this)
    }

    /// A queue over `mapped`, imported on `ring` as `zcrx_id` with
    /// the refill ring at `offsets`, which must be the ones `info` names.
    pub(super) fn attach(
        ring: &IoUring<squeue::Entry, cqueue::Entry32>,
        mapped: Mapped,
        info: &export::ExportInfo,
        zcrx_id: u32,
        offsets: (u32, u32, u32),
        features: ZcrxFeatures,
        owner_limit: Option<u64>,
    ) -> Result<Self> {
        let bad = |why: String| Error::BadExport { why };
        let (head, tail, rqes) = offsets;
        if offsets != (info.head, info.tail, info.rqes) {
            return Err(bad(format!(
                "the kernel puts the refill ring at {offsets:?}, the export says {:?}",
                (info.head, info.tail, info.rqes)
            )));
        }
        let Mapped {
            area,
            region_map,
            region_fd,
        } = mapped;
        let region_map = Arc::new(region_map);
        let mut rq = RefillRing::new(Arc::clone(&region_map), head, tail, rqes, info.rq_entries)
            .ok_or_else(|| bad("the refill ring does not fit the region".into()))?;
        if !rq.resume() {
            return Err(bad(
                "the refill ring's head and tail are inconsistent".into()
            ));
        }
        let ring_fd = dup_ring_fd(ring.as_fd())?;
        let mut this = Self::assemble(
            area,
            region_map,
            rq,
            info.area_token,
            zcrx_id,
            info.buf_shift,
            owner_limit,
            false,
        );
        let ring_fd = Arc::new(ring_fd);
        this.core.shared.keep_alive(Box::new(Arc::clone(&ring_fd)));
        this.ring_fd = Some(ring_fd);
        this.no_device = info.no_device;
        this.features = features;
        this.region_fd = Some(region_fd);
        this.ifname = "imported".to_owned();
        Ok(this)
    }
}

#[cfg(test)]
mod tests;
