//! Registration: sizes planned, the kernel called, its refusals turned into reasons.

use super::*;

pub(super) enum Target {
    Device {
        ifname: String,
        if_index: u32,
        queue: u32,
    },
    NoDevice,
}

impl Target {
    pub(super) fn ifname(&self) -> &str {
        match self {
            Self::Device { ifname, .. } => ifname,
            Self::NoDevice => "no device",
        }
    }

    pub(super) fn queue(&self) -> u32 {
        match self {
            Self::Device { queue, .. } => *queue,
            Self::NoDevice => 0,
        }
    }
}

/// Sizes worked out before registering.
pub(crate) struct Plan {
    /// log2 of the buffer size asked for (a page unless `rx_buf_len` says more).
    pub(crate) buf_shift: u32,
    pub(crate) entries: u32,
    pub(crate) region_len: usize,
    /// Where the kernel's statistics go in the region, when events are asked for.
    stats_offset: Option<u64>,
}

impl Plan {
    pub(crate) fn new(
        area: &Area,
        rq_entries: Option<u32>,
        rx_buf_len: Option<u32>,
        features: &ZcrxFeatures,
        stats: bool,
        no_device: bool,
    ) -> Result<Self> {
        let page = rustix::param::page_size();
        let buf = match rx_buf_len {
            None | Some(0) => page,
            Some(len) => {
                let len = len as usize;
                if !len.is_power_of_two() || len < page {
                    return Err(Error::BadRxBufLen {
                        rx_buf_len: len,
                        why: "it must be a power of two of at least a page",
                    });
                }
                if len > crate::area::MAX_CHUNK_SIZE {
                    return Err(Error::BadRxBufLen {
                        rx_buf_len: len,
                        why: "it is larger than the largest chunk (1 MiB), which must hold it",
                    });
                }
                if len > page && no_device {
                    return Err(Error::BadRxBufLen {
                        rx_buf_len: len,
                        why: "without a device the kernel copies into page-sized buffers only \
                              (it answers EOPNOTSUPP); leave rx_buf_len unset",
                    });
                }
                if len > page && !features.large_buffers() {
                    return Err(Error::KernelTooOld {
                        feature: "zcrx receive buffers larger than a page (rx_buf_len)",
                        needs: "7.0",
                    });
                }
                len
            }
        };
        if area.chunk_size() < buf {
            return Err(Error::ZcrxChunkTooSmall {
                chunk_size: area.chunk_size(),
                buffer_size: buf,
            });
        }
        let bufs = u32::try_from(area.len() / buf).unwrap_or(u32::MAX);
        let entries = rq_entries
            .unwrap_or(bufs)
            .clamp(1, IO_RQ_MAX_ENTRIES)
            .next_power_of_two();
        let (region_len, stats_offset) = if features.queried {
            features.region(entries, page, stats)
        } else {
            (RefillRing::region_len(entries, page), None)
        };
        Ok(Self {
            buf_shift: buf.trailing_zeros(),
            entries,
            region_len,
            stats_offset,
        })
    }
}

impl ZcrxIfq {
    /// Registers `area` on receive queue `config.queue` of `config.interface` for zero-copy
    /// receive, through `ring`.
    ///
    /// `ring` must be built with `setup_single_issuer()` and `setup_defer_taskrun()` (its CQEs
    /// are 32 bytes by type), and this must run on the thread that created it (a `SINGLE_ISSUER`
    /// ring refuses registrations from other threads).
    ///
    /// Errors:
    /// - [`Error::RingNotSuitable`] when the ring lacks `SINGLE_ISSUER` or belongs to another
    ///   thread (a ring with `SINGLE_ISSUER` but without `DEFER_TASKRUN` cannot be detected from
    ///   here: the kernel answers `EINVAL`, [`ZcrxRefusal::InvalidSetup`]);
    /// - [`Error::BadInterfaceName`], [`Error::UnknownInterface`];
    /// - [`Error::ZcrxChunkTooSmall`] when a chunk is smaller than a page;
    /// - [`Error::MemlockLimit`] when the area and refill region exceed RLIMIT_MEMLOCK (the
    ///   kernel charges them to it since 6.17);
    /// - [`Error::ZcrxRefused`] with the kernel's reason.
    pub fn register(
        ring: &IoUring<squeue::Entry, cqueue::Entry32>,
        area: Area,
        config: ZcrxConfig,
    ) -> Result<Self> {
        check_ring(ring)?;
        if config.interface == Interface::NoDevice {
            return Self::register_target(RingRef(ring), area, Target::NoDevice, &config);
        }
        let ResolvedInterface {
            name: ifname,
            index: if_index,
        } = resolve_interface(&config.interface)?;
        // The kernel checks the capability before anything else; so do we, so that a process
        // without it hears about the capability rather than about the queue index.
        if !caps::has_effective_cap(caps::CAP_NET_ADMIN) {
            return Err(Error::ZcrxRefused {
                ifname,
                queue: config.queue,
                refusal: ZcrxRefusal::NotPermitted,
            });
        }
        if let Some(queues) = rx_queue_count(&ifname) {
            if config.queue >= queues {
                return Err(Error::QueueOutOfRange {
                    ifname,
                    queue: config.queue,
                    queues,
                });
            }
        }
        let target = Target::Device {
            ifname,
            if_index,
            queue: config.queue,
        };
        Self::register_target(RingRef(ring), area, target, &config)
    }

    /// Registers `area` without a device (`ZCRX_REG_NODEV`, Linux 7.1+): receives on any TCP
    /// socket of the ring copy into the area, with the same buffer and refill protocol. Useful to
    /// run zcrx code paths without a capable NIC. Needs `CAP_NET_ADMIN` like a device queue.
    ///
    /// On kernels before 7.1 this returns [`Error::KernelTooOld`] (the kernel rejects the flag
    /// with `EINVAL`). The same as [`register`](Self::register) with
    /// [`ZcrxConfig::no_device`].
    pub fn register_nodev(
        ring: &IoUring<squeue::Entry, cqueue::Entry32>,
        area: Area,
        rq_entries: Option<u32>,
        owner_limit: Option<u64>,
    ) -> Result<Self> {
        let mut config = ZcrxConfig::no_device();
        config.rq_entries = rq_entries;
        config.owner_limit = owner_limit;
        Self::register(ring, area, config)
    }

    pub(super) fn register_target(
        ring: RingRef<'_>,
        area: Area,
        target: Target,
        config: &ZcrxConfig,
    ) -> Result<Self> {
        let features = query_fd(ring.fd())?;
        let no_device = matches!(target, Target::NoDevice);
        if no_device && features.queried && !features.no_device() {
            return Err(Error::KernelTooOld {
                feature: "ZCRX_REG_NODEV",
                needs: "7.1",
            });
        }
        if config.events.is_some() && !features.events() {
            return Err(Error::KernelTooOld {
                feature: "zcrx events and statistics",
                needs: "7.2",
            });
        }
        let plan = Plan::new(
            &area,
            config.rq_entries,
            config.rx_buf_len,
            &features,
            config.events.is_some(),
            no_device,
        )?;
        if config.exportable && area.shared_fd().is_none() {
            return Err(Error::NotExportable {
                why: "an exportable queue needs a shared area: Area::builder().shared(true)",
            });
        }
        let needed = area.len() as u64 + plan.region_len as u64;
        caps::may_lock(needed).map_err(|(needed, limit)| Error::MemlockLimit { needed, limit })?;
        let map_err = |source| Error::Map {
            len: plan.region_len,
            source,
        };
        let (region, region_fd) = if config.exportable {
            let (map, fd) = Mmap::shared_memfd("zcrx-refill", plan.region_len).map_err(map_err)?;
            (map, Some(fd))
        } else {
            (
                Mmap::anonymous(plan.region_len, false, true).map_err(map_err)?,
                None,
            )
        };
        // Duplicated before registering, so a failure here leaves nothing registered.
        let ring_fd = dup_ring_fd(ring.fd())?;

        let (if_idx, if_rxq, flags) = match &target {
            Target::Device {
                if_index, queue, ..
            } => (*if_index, *queue, 0),
            Target::NoDevice => (0, 0, ZCRX_REG_NODEV),
        };
        let events = config.events.map(|user_data| {
            let mut desc = zcrx_event_desc {
                user_data,
                type_mask: features.event_types
                    & ((1 << ZCRX_EVENT_ALLOC_FAIL) | (1 << ZCRX_EVENT_COPY)),
                ..Default::default()
            };
            if let Some(at) = plan.stats_offset {
                desc.flags = ZCRX_EVENT_DESC_FLAG_STATS;
                desc.stats_offset = at;
            }
            desc
        });
        // The area and the region end up in `Shared` and stay mapped for as long as the queue or
        // any handle lives; the area is fresh (owned by value), so no handle points into it.
        let answer = calls::register_zcrx(
            ring.fd(),
            &ZcrxRegistration {
                if_idx,
                if_rxq,
                rq_entries: plan.entries,
                flags,
                area: area.mapping(),
                region: &region,
                rx_buf_len: config.rx_buf_len.unwrap_or(0),
                events,
            },
        );
        let reg = match answer {
            Ok(reg) => reg,
            Err(e) => {
                if e.raw_os_error() == Some(Errno::EXIST.raw_os_error())
                    && !ring.on_submitter_thread()
                {
                    return Err(another_thread());
                }
                let err = refusal_error(&target, config, e);
                tracing::debug!(
                    ifname = target.ifname(),
                    queue = target.queue(),
                    "zcrx registration refused: {err}"
                );
                return Err(err);
            }
        };
        // 7.0+ writes back the buffer size in use (0 before: a page).
        let buf_shift = match reg.rx_buf_len {
            0 => plan.buf_shift,
            len if len.is_power_of_two() && len as usize <= area.chunk_size() => {
                len.trailing_zeros()
            }
            len => {
                return Err(Error::Os {
                    what: "the kernel chose a buffer size that does not divide the chunks",
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("rx_buf_len {len}, chunk size {}", area.chunk_size()),
                    ),
                })
            }
        };

        // The kernel answered: entries as rounded, the offsets inside the region, the id.
        let entries = reg.rq_entries;
        let region = Arc::new(region);
        let rq = RefillRing::new(
            Arc::clone(&region),
            reg.offsets.head,
            reg.offsets.tail,
            reg.offsets.rqes,
            entries,
        )
        .ok_or_else(|| Error::Os {
            what: "the kernel returned refill queue offsets that do not fit the region",
            source: io::ErrorKind::InvalidData.into(),
        })?;
        let (ifname, if_index, queue) = match target {
            Target::Device {
                ifname,
                if_index,
                queue,
            } => (ifname, if_index, queue),
            Target::NoDevice => ("no device".to_owned(), 0, 0),
        };
        let kernel_stats = plan
            .stats_offset
            .filter(|_| config.events.is_some())
            .and_then(|at| SharedStats::new(&region, at));
        let mut this = Self::assemble(
            area,
            region,
            rq,
            reg.rq_area_token,
            reg.zcrx_id,
            buf_shift,
            config.owner_limit,
            false,
        );
        let ring_fd = Arc::new(ring_fd);
        this.core.shared.keep_alive(Box::new(Arc::clone(&ring_fd)));
        this.ring_fd = Some(ring_fd);
        this.no_device = no_device;
        this.features = features;
        this.event_user_data = config.events;
        this.kernel_stats = kernel_stats;
        this.region_fd = region_fd;
        this.ifname = ifname;
        this.if_index = if_index;
        this.queue = queue;
        Ok(this)
    }

    /// The queue over `area`, with the refill ring `rq` in `region`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        area: Area,
        region: Arc<Mmap>,
        rq: RefillRing,
        area_token: u64,
        zcrx_id: u32,
        buf_shift: u32,
        owner_limit: Option<u64>,
        simulated: bool,
    ) -> Self {
        let chunks = area.chunks() as usize;
        let bufs_per_chunk = area.chunk_size() >> buf_shift;
        let mut core = Core::new(area, Redelivery::Always);
        core.table.set_owner_limit(owner_limit);
        // Every buffer starts in the kernel's free list.
        while core.table.take_from_pool().is_some() {}
        core.shared.keep_alive(Box::new(region));
        Self {
            core,
            rq,
            area_token,
            area_id: (area_token >> ZCRX_AREA_SHIFT) as u16,
            zcrx_id,
            ifname: String::new(),
            if_index: 0,
            queue: 0,
            buf_shift,
            refs: PageRefs::new(chunks, bufs_per_chunk),
            pending: VecDeque::new(),
            queued: vec![false; chunks],
            refused: Vec::new(),
            ring_fd: None,
            no_device: false,
            features: ZcrxFeatures::PRE_QUERY,
            event_user_data: None,
            kernel_stats: None,
            region_fd: None,
            simulated,
            stats: ZcrxStats::default(),
        }
    }
}

pub(super) fn check_ring(ring: &IoUring<squeue::Entry, cqueue::Entry32>) -> Result<()> {
    if ring.params().is_setup_single_issuer() {
        Ok(())
    } else {
        Err(Error::RingNotSuitable {
            what:
                "SINGLE_ISSUER is not set (zcrx needs DEFER_TASKRUN, which requires SINGLE_ISSUER)",
        })
    }
}

/// Whether this thread may register on `ring`. A SINGLE_ISSUER ring answers `EEXIST` to every
/// registration from another thread, which would otherwise read as "queue in use"; a probe
/// registration (no side effects) tells the two apart.
pub(super) fn on_submitter_thread(ring: &IoUring<squeue::Entry, cqueue::Entry32>) -> bool {
    let answer = ring.submitter().register_probe(&mut io_uring::Probe::new());
    answer.err().and_then(|e| e.raw_os_error()) != Some(Errno::EXIST.raw_os_error())
}

/// The ring a registration goes to.
#[derive(Clone, Copy)]
pub(super) struct RingRef<'a>(&'a IoUring<squeue::Entry, cqueue::Entry32>);

impl RingRef<'_> {
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    pub(super) fn on_submitter_thread(&self) -> bool {
        on_submitter_thread(self.0)
    }
}

pub(super) fn another_thread() -> Error {
    Error::RingNotSuitable {
        what: "it belongs to another thread (a SINGLE_ISSUER ring accepts registrations only \
               from the thread that created it; register there)",
    }
}

pub(super) fn refusal_error(target: &Target, config: &ZcrxConfig, e: io::Error) -> Error {
    let errno = e.raw_os_error().unwrap_or(0);
    let refusal = ZcrxRefusal::from_errno(errno);
    if matches!(target, Target::NoDevice) && refusal == ZcrxRefusal::InvalidSetup {
        let old = crate::kernel::KernelVersion::current().is_some_and(|v| !v.at_least(7, 1));
        if old {
            return Error::KernelTooOld {
                feature: "ZCRX_REG_NODEV",
                needs: "7.1",
            };
        }
    }
    let page = rustix::param::page_size() as u32;
    if let Some(len) = config.rx_buf_len.filter(|&l| l > page) {
        if matches!(target, Target::NoDevice) && refusal == ZcrxRefusal::DeviceUnsupported {
            return Error::BadRxBufLen {
                rx_buf_len: len as usize,
                why: "without a device the kernel copies into page-sized buffers only \
                      (EOPNOTSUPP); leave rx_buf_len unset",
            };
        }
        if matches!(
            refusal,
            ZcrxRefusal::NoSuchQueue | ZcrxRefusal::DeviceUnsupported
        ) {
            return Error::BadRxBufLen {
                rx_buf_len: len as usize,
                why: "the NIC driver does not support buffers of that size, or the area is not \
                      physically contiguous enough for them (ERANGE/EOPNOTSUPP); try huge pages \
                      or a smaller rx_buf_len",
            };
        }
    }
    Error::ZcrxRefused {
        ifname: target.ifname().to_owned(),
        queue: target.queue(),
        refusal,
    }
}
