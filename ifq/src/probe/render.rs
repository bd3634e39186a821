//! The probe's report as text: what `probe` prints, step by step, with the fix for each
//! refusal.

use std::fmt;

use super::*;

pub(super) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        match &self.kernel {
            Some(k) => writeln!(f, "kernel:   {k}")?,
            None => writeln!(f, "kernel:   unknown")?,
        }
        writeln!(f, "io_uring: {}", self.io_uring)?;
        if !self.opcodes.is_empty() {
            let list = |supported: bool| {
                self.opcodes
                    .iter()
                    .filter(|o| o.supported == supported)
                    .map(|o| o.name)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            writeln!(f, "opcodes:  {}", list(true))?;
            let missing = list(false);
            if !missing.is_empty() {
                writeln!(f, "missing:  {missing}")?;
            }
        }
        writeln!(f, "features:")?;
        let feats = &self.features;
        writeln!(
            f,
            "  multishot receive (6.0+):              {}",
            feats.multishot_recv
        )?;
        writeln!(
            f,
            "  receive bundles (6.10+):               {}",
            feats.recv_bundle
        )?;
        writeln!(
            f,
            "  provided buffer ring (5.19+):          {}",
            feats.buf_ring
        )?;
        writeln!(
            f,
            "  incremental buffer ring (6.12+):       {}",
            feats.buf_ring_incremental
        )?;
        writeln!(
            f,
            "  SINGLE_ISSUER|DEFER_TASKRUN|CQE32 ring: {}",
            feats.zcrx_ring
        )?;
        writeln!(f, "privileges:")?;
        writeln!(f, "  CAP_NET_ADMIN (zcrx): {}", yes(self.cap_net_admin))?;
        let limit = self
            .memlock_limit
            .map_or_else(|| "unlimited".to_owned(), bytes);
        writeln!(
            f,
            "  RLIMIT_MEMLOCK: {limit} (CAP_IPC_LOCK: {})",
            yes(self.cap_ipc_lock)
        )?;
        match &self.zcrx {
            Some(z) if z.queried => {
                writeln!(f, "zcrx kernel features (IORING_REGISTER_QUERY):")?;
                writeln!(f, "  no device (7.1+):            {}", yes(z.no_device()))?;
                writeln!(f, "  refill flush (6.19+):        {}", yes(z.flush_rq()))?;
                writeln!(
                    f,
                    "  export/import (6.19+):       {}",
                    yes(z.export_import())
                )?;
                writeln!(f, "  events, copy stats (7.2+):   {}", yes(z.events()))?;
                writeln!(
                    f,
                    "  large rx buffers (7.0+):     {}",
                    yes(z.large_buffers())
                )?;
                writeln!(
                    f,
                    "  refill header: {} bytes, entries aligned to {}",
                    z.rq_hdr_size, z.rq_hdr_alignment
                )?;
            }
            _ => writeln!(
                f,
                "zcrx kernel features: no IORING_REGISTER_QUERY (Linux 6.19+); no device, \
                 flush, export/import and events are unavailable"
            )?,
        }
        writeln!(
            f,
            "  zcrx without a device (tried): {}",
            self.zcrx_no_device
        )?;
        writeln!(
            f,
            "zcrx per interface queue (tried a registration with a 16-page area):"
        )?;
        if self.interfaces.is_empty() {
            writeln!(f, "  no interfaces found")?;
        }
        for i in &self.interfaces {
            let driver = i.driver.as_deref().unwrap_or("virtual, no device driver");
            let rx = match i.rx_queues {
                Some(1) => ", 1 rx queue".to_owned(),
                Some(n) => format!(", {n} rx queues"),
                None => String::new(),
            };
            for q in &i.queues {
                let verdict = match &q.verdict {
                    ZcrxVerdict::Available => "AVAILABLE".to_owned(),
                    v => format!("unavailable: {}", v.reason()),
                };
                writeln!(
                    f,
                    "  {} queue {} ({driver}{rx}): {verdict}",
                    i.name, q.queue
                )?;
            }
        }
        let why = match &self.backend {
            Backend::Zcrx { .. } => String::new(),
            Backend::Unavailable(_) => String::new(),
            _ if self.interfaces.is_empty() => " (no interface probed for zcrx)".to_owned(),
            _ => " (no probed interface queue can do zcrx)".to_owned(),
        };
        write!(f, "backend:  {}{why}", self.backend)
    }
}
