//! Benchmarks: criterion micro-benchmarks, the side-by-side `rxbench` harness and `soak`.

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| std::io::Error::new(e.kind(), format!("pinning to CPU {cpu}: {e}")))
}
