//! What to register: the interface queue (or none), the refill queue, events, limits.

use super::*;

/// An event the kernel posts for a zcrx queue (Linux 7.2), once per kind until
/// [re-armed](ZcrxIfq::rearm_event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZcrxEvent {
    /// `ZCRX_EVENT_ALLOC_FAIL`: the queue had no free buffer (on a NIC the packet was dropped
    /// and TCP will retransmit; return buffers).
    OutOfBuffers,
    /// `ZCRX_EVENT_COPY`: data went through the copy fallback (always, without a device).
    Copy,
}

impl ZcrxEvent {
    pub(super) fn kernel_type(self) -> u32 {
        match self {
            Self::OutOfBuffers => ZCRX_EVENT_ALLOC_FAIL,
            Self::Copy => ZCRX_EVENT_COPY,
        }
    }
}

/// How to register a zcrx interface queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZcrxConfig {
    /// The interface.
    pub interface: Interface,
    /// The receive queue index on it (`ethtool -l DEV` shows how many there are).
    pub queue: u32,
    /// Refill queue entries (rounded up to a power of two, at most 32768). Default: one per page
    /// of the area, so that every buffer can be returned at once.
    pub rq_entries: Option<u32>,
    /// Most bytes one owner may hold before [`ZcrxIfq::over_limit`] says to stop reading it.
    pub owner_limit: Option<u64>,
    /// The kernel buffer size to ask for (`rx_buf_len`, Linux 7.0+): a power of two of at least
    /// a page, at most the chunk size; `None` for a page. Needs a NIC driver that supports it;
    /// without a device the kernel refuses anything but a page.
    pub rx_buf_len: Option<u32>,
    /// Ask the kernel (7.2+) to post [`ZcrxEvent`]s as CQEs with this `user_data`, and to keep
    /// copy statistics ([`ZcrxStats::copy_count`]).
    pub events: Option<u64>,
    /// Make the queue [exportable](ZcrxIfq::export): the refill region goes in a memfd, and the
    /// area must be [shared](crate::AreaBuilder::shared).
    pub exportable: bool,
}

impl ZcrxConfig {
    /// Queue `queue` of the interface named `ifname`.
    pub fn new(ifname: impl Into<String>, queue: u32) -> Self {
        Self::on(Interface::Name(ifname.into()), queue)
    }

    /// Queue `queue` of the interface with index `if_index`.
    pub fn with_index(if_index: u32, queue: u32) -> Self {
        Self::on(Interface::Index(if_index), queue)
    }

    /// No device (`ZCRX_REG_NODEV`, Linux 7.1+); see [`Interface::NoDevice`].
    pub fn no_device() -> Self {
        Self::on(Interface::NoDevice, 0)
    }

    pub(super) fn on(interface: Interface, queue: u32) -> Self {
        Self {
            interface,
            queue,
            rq_entries: None,
            owner_limit: None,
            rx_buf_len: None,
            events: None,
            exportable: false,
        }
    }

    /// Makes the queue exportable ([`exportable`](Self::exportable)).
    pub fn exportable(mut self, on: bool) -> Self {
        self.exportable = on;
        self
    }

    /// Sets the kernel buffer size ([`rx_buf_len`](Self::rx_buf_len)).
    pub fn rx_buf_len(mut self, bytes: u32) -> Self {
        self.rx_buf_len = Some(bytes);
        self
    }

    /// Asks for events with this `user_data` ([`events`](Self::events)).
    pub fn events(mut self, user_data: u64) -> Self {
        self.events = Some(user_data);
        self
    }

    /// Sets the refill queue size.
    pub fn rq_entries(mut self, entries: u32) -> Self {
        self.rq_entries = Some(entries);
        self
    }

    /// Sets the per-owner byte limit.
    pub fn owner_limit(mut self, bytes: u64) -> Self {
        self.owner_limit = Some(bytes);
        self
    }
}
