//! The data path: receive requests, completions turned into handles, and the refill
//! entries written back.

use super::*;

/// The owner's side of the refill queue during a flush: what each kernel buffer is owed and
/// where its entries go.
pub(super) struct RefillWriter<'a> {
    rq: &'a mut RefillRing,
    area_token: u64,
    buf_shift: u32,
    refs: &'a mut PageRefs,
    /// Entries written.
    rqes: u64,
}

impl RefillWriter<'_> {
    /// Writes the refill entries `chunk` still owes. False if the queue filled up first (what
    /// was written stays written and counted).
    #[inline]
    pub(super) fn write_chunk(&mut self, chunk: ChunkId) -> bool {
        let Self {
            rq,
            area_token,
            buf_shift,
            refs,
            rqes,
        } = self;
        refs.give_back(chunk, |buf| {
            push_ref(rq, *area_token, *buf_shift, buf, rqes)
        })
    }

    /// Writes one refill entry for kernel buffer `buf`. False if the queue is full.
    #[inline]
    pub(super) fn write_ref(&mut self, buf: usize) -> bool {
        push_ref(
            self.rq,
            self.area_token,
            self.buf_shift,
            buf,
            &mut self.rqes,
        )
    }
}

/// One of the references the kernel gave for buffer `buf`, which no handle needs any more, as a
/// refill entry. False if the queue is full.
#[inline]
fn push_ref(
    rq: &mut RefillRing,
    area_token: u64,
    buf_shift: u32,
    buf: usize,
    rqes: &mut u64,
) -> bool {
    let off = rqe_off((buf as u64) << buf_shift, area_token);
    if !rq.push(off) {
        return false;
    }
    *rqes += 1;
    true
}

/// Writes the entries of released chunks that waited for room in the refill ring, oldest first,
/// until the ring is full. Returns how many chunks went back.
pub(super) fn write_pending(
    core: &mut Core,
    out: &mut RefillWriter<'_>,
    pending: &mut VecDeque<ChunkId>,
    queued: &mut [bool],
) -> usize {
    let mut returned = 0;
    while let Some(&chunk) = pending.front() {
        if !matches!(core.table.state(chunk), Ok(ChunkState::Refill { .. })) {
            // The kernel handed out another buffer of this chunk while it waited: it comes back
            // when its new handles drop.
            pending.pop_front();
            queued[chunk as usize] = false;
            continue;
        }
        if !out.write_chunk(chunk) {
            break;
        }
        let published = core.table.publish(chunk);
        debug_assert!(published.is_ok(), "a refill chunk publishes");
        pending.pop_front();
        queued[chunk as usize] = false;
        returned += 1;
    }
    returned
}

impl ZcrxIfq {
    /// A multishot zero-copy receive on `fd` (a TCP socket whose flow arrives on this queue).
    /// Set `user_data` and push it. `len` 0 means no byte limit.
    pub fn recv_zc(&self, fd: impl Into<RecvFd>) -> squeue::Entry {
        match fd.into() {
            RecvFd::Fd(fd) => opcode::RecvZc::new(fd, 0).ifq(self.zcrx_id).build(),
            RecvFd::Fixed(fd) => opcode::RecvZc::new(fd, 0).ifq(self.zcrx_id).build(),
        }
    }

    /// [`recv_zc`](Self::recv_zc) that ends, with a completion of 0 bytes and no `F_MORE`,
    /// once it delivered `max_bytes` (0: no cap). The end of the stream looks the same: tell
    /// them apart by counting what arrived.
    pub fn recv_zc_capped(&self, fd: impl Into<RecvFd>, max_bytes: u32) -> squeue::Entry {
        match fd.into() {
            RecvFd::Fd(fd) => opcode::RecvZc::new(fd, max_bytes).ifq(self.zcrx_id).build(),
            RecvFd::Fixed(fd) => opcode::RecvZc::new(fd, max_bytes).ifq(self.zcrx_id).build(),
        }
    }

    /// Decodes and checks a completion of a receive from [`recv_zc`](Self::recv_zc) and charges
    /// its bytes to `owner`. `big_cqe` is the second half of the 32-byte CQE
    /// (`cqueue::Entry32::big_cqe()`). Every kernel value is checked before it becomes a slice;
    /// a bad one is an error and nothing is read or recorded.
    #[inline]
    pub fn complete(
        &mut self,
        owner: OwnerId,
        res: i32,
        flags: u32,
        big_cqe: [u64; 2],
    ) -> Result<Completion> {
        let d = decode_zcrx(res, flags, big_cqe);
        let event = match d.event {
            Event::Data { len } => {
                let loc = d.loc.expect("the decoder gives a location for data");
                RecvEvent::Data(self.take(owner, loc, len)?)
            }
            Event::Eof => RecvEvent::Eof,
            Event::NoBuffers => {
                self.stats.no_buffers += 1;
                RecvEvent::NoBuffers
            }
            Event::CqOverflow => {
                self.stats.cq_overflows += 1;
                RecvEvent::CqOverflow
            }
            Event::Error { errno } => RecvEvent::Error(io::Error::from_raw_os_error(errno)),
        };
        Ok(Completion {
            event,
            more: d.more,
        })
    }

    #[inline]
    pub(super) fn take(&mut self, owner: OwnerId, loc: ZcrxLoc, len: u32) -> Result<RxBuf> {
        if loc.area_id != self.area_id {
            return Err(CompletionError::WrongArea {
                area_id: loc.area_id,
                expected: self.area_id,
            }
            .into());
        }
        let area = self.core.area();
        let (chunk, in_chunk) =
            area.locate(loc.offset)
                .ok_or(CompletionError::OffsetOutOfRange {
                    offset: loc.offset,
                    area_len: area.len() as u64,
                })?;
        // The kernel never lets a completion cross one of its buffers; one that does would break
        // the per-buffer reference count.
        let buf_size = 1u64 << self.buf_shift;
        let in_buf = loc.offset & (buf_size - 1);
        if in_buf + u64::from(len) > buf_size {
            return Err(CompletionError::LengthOutOfRange {
                offset: in_buf as u32,
                len,
                chunk_size: buf_size as u32,
            }
            .into());
        }
        let buf = (loc.offset >> self.buf_shift) as usize;
        if self.core.shared.returns.away_from_home() {
            // The kernel may hand out more of a chunk the application holds, and drops on the
            // home thread count on the owner adding such handles only there: no handle. The
            // reference the kernel gave us goes back at the next flush (the kernel keeps the
            // buffer while any other reference, a handle's, is out).
            self.refused.push(buf as u32);
            self.stats.refused += 1;
            if self.stats.refused == 1 {
                tracing::warn!(
                    zcrx_id = self.zcrx_id,
                    "a zcrx completion was refused away from the queue's home thread (its data \
                     is lost; ZcrxStats::refused counts them): complete on the home thread"
                );
            }
            return Err(Error::AwayFromHome);
        }
        let handle = self.core.deliver(chunk, in_chunk, len, owner, false)?;
        self.refs.took(buf);
        self.stats.deliveries += 1;
        self.stats.bytes += u64::from(len);
        Ok(handle)
    }

    /// [`RxPool::flush`]: hands every chunk whose handles have all dropped (on any thread)
    /// back to the kernel, one refill entry per reference, then one release store of the tail.
    /// If the refill queue is full the rest stays queued, in order, for the next flush.
    pub(super) fn flush_returns(&mut self) -> usize {
        let Self {
            core,
            rq,
            area_token,
            buf_shift,
            refs,
            pending,
            queued,
            refused,
            stats,
            ring_fd,
            no_device,
            features,
            zcrx_id,
            ..
        } = self;
        rq.observe_head();
        let mut out = RefillWriter {
            rq,
            area_token: *area_token,
            buf_shift: *buf_shift,
            refs,
            rqes: 0,
        };
        // References of refused completions first: no chunk waits on them.
        let gave_back = refused
            .iter()
            .take_while(|&&buf| out.write_ref(buf as usize))
            .count();
        refused.drain(..gave_back);
        let full = !refused.is_empty();
        // Chunks that waited for room go first, in order.
        let mut returned = write_pending(core, &mut out, pending, queued);
        let mut full = full || !pending.is_empty();
        // Then the chunks whose handles dropped since: written straight away while there is
        // room, else queued behind the others.
        core.drain_returns(|table, chunk| {
            if !full && pending.is_empty() {
                if out.write_chunk(chunk) {
                    // Entries written: straight back to the kernel state.
                    let recycled = table.release(chunk, ReleaseTo::Kernel);
                    debug_assert!(recycled.is_ok(), "a returned chunk recycles: {recycled:?}");
                    returned += 1;
                    return;
                }
                full = true;
            }
            match table.release(chunk, ReleaseTo::Refill) {
                Ok(_) => {
                    if !std::mem::replace(&mut queued[chunk as usize], true) {
                        pending.push_back(chunk);
                    }
                }
                // Unreachable by construction, as in `Core::collect_returns`.
                Err(e) => debug_assert!(false, "release refused: {e}"),
            }
        });
        if full {
            stats.rq_full += 1;
        }
        if out.rq.publish() {
            stats.publishes += 1;
        }
        // Without a device no page pool takes the entries: tell the kernel to, whenever some are
        // unconsumed. On a NIC the page pool takes them as it refills, but a full ring would
        // stop returns until it does: make room then. Once per flush.
        let ctrl_flush = features.flush_rq()
            && out.rq.in_flight() > 0
            && (*no_device || (full && !pending.is_empty()));
        if let (true, Some(ring_fd)) = (ctrl_flush, ring_fd.as_ref()) {
            stats.ctrl_flushes += 1;
            match calls::ctrl_flush_rq(ring_fd.as_fd(), *zcrx_id) {
                Ok(()) => {
                    out.rq.observe_head();
                    // Room again: what still waits goes in now (the kernel takes it at the next
                    // flush without a device, or as the page pool refills).
                    returned += write_pending(core, &mut out, pending, queued);
                    if out.rq.publish() {
                        stats.publishes += 1;
                    }
                }
                Err(e) => {
                    stats.ctrl_flush_errors += 1;
                    stats.last_ctrl_errno = e.raw_os_error().unwrap_or(-1);
                    // Returns then wait for room: said once, counted always.
                    if stats.ctrl_flush_errors == 1 {
                        tracing::warn!(
                            zcrx_id = *zcrx_id,
                            "the kernel refused to take the zcrx refill entries \
                             (ZCRX_CTRL_FLUSH_RQ): {e}"
                        );
                    }
                }
            }
        }
        stats.rqes += out.rqes;
        stats.returned_chunks += returned as u64;
        returned
    }
}
