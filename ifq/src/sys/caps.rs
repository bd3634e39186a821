//! Capability and resource-limit checks, read from procfs and getrlimit (no unsafe).

use rustix::process::{getrlimit, Resource};

/// CAP_NET_ADMIN's bit in the capability sets.
pub(crate) const CAP_NET_ADMIN: u32 = 12;
/// CAP_IPC_LOCK's bit.
pub(crate) const CAP_IPC_LOCK: u32 = 14;

/// Whether the calling thread has `cap` in its effective set.
pub(crate) fn has_effective_cap(cap: u32) -> bool {
    // Capabilities are per thread; /proc/thread-self is this thread's view.
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .or_else(|_| std::fs::read_to_string("/proc/self/status"))
        .unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|bits| bits & (1u64 << cap) != 0)
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
