//! Capability and resource-limit checks, through capget and getrlimit (no unsafe).

use rustix::process::{getrlimit, Resource};
use rustix::thread::CapabilitySet;

/// CAP_NET_ADMIN.
pub(crate) const CAP_NET_ADMIN: CapabilitySet = CapabilitySet::NET_ADMIN;
/// CAP_IPC_LOCK.
pub(crate) const CAP_IPC_LOCK: CapabilitySet = CapabilitySet::IPC_LOCK;

/// Whether the calling thread has `cap` in its effective set. Capabilities are per thread:
/// `capget` with no pid reads the caller's. A failed `capget` counts as not having it.
pub(crate) fn has_effective_cap(cap: CapabilitySet) -> bool {
    rustix::thread::capabilities(None).is_ok_and(|sets| sets.effective.contains(cap))
}

/// The soft RLIMIT_MEMLOCK in bytes (`None` for unlimited).
pub(crate) fn memlock_limit() -> Option<u64> {
    getrlimit(Resource::Memlock).current
}

/// Whether `bytes` more may be locked by this process.
pub(crate) fn may_lock(bytes: u64) -> Result<(), (u64, u64)> {
    if has_effective_cap(CAP_IPC_LOCK) {
        return Ok(());
    }
    match memlock_limit() {
        Some(limit) if bytes > limit => Err((bytes, limit)),
        _ => Ok(()),
    }
}
