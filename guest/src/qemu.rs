//! Booting the guest: the QEMU command line, streaming the serial console live while reading
//! the init's markers, and killing QEMU when a stage overruns its deadline.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::console::{self, EscState, Marker};

/// How QEMU runs the guest's CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM if a probe boot with it works on this machine (verdict cached), else TCG.
    Auto,
    /// Hardware virtualisation (`-accel kvm -cpu host`).
    Kvm,
    /// Emulation (`-accel tcg,thread=multi -cpu max`): slower, works everywhere.
    Tcg,
}

/// One boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The kernel image.
    pub kernel: PathBuf,
    /// The gzip'd newc initramfs.
    pub initrd: PathBuf,
    /// `Kvm` or `Tcg` (not `Auto`).
    pub accel: Accel,
    /// `-m` (e.g. `4G`).
    pub memory: String,
    /// `-smp`.
    pub smp: u32,
    /// virtio-net-pci devices on one QEMU hub (eth0, eth1, ...).
    pub nics: usize,
    /// Queue pairs of one more virtio-net-pci device (after the hub's), on a tap that QEMU
    /// creates and removes and nothing else joins: channels, queues and NAPI ids to read, no
    /// traffic. 0: no such device. QEMU's hub has one queue pair; only tap has more.
    pub mq_queues: u32,
}

/// The QEMU arguments for a boot (no network unless `nics` > 0; the console on stdio).
pub fn qemu_args(cfg: &VmConfig) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &str| a.push(s.to_string());
    match cfg.accel {
        Accel::Kvm => {
            push("-accel");
            push("kvm");
            push("-cpu");
            push("host");
        }
        _ => {
            push("-accel");
            push("tcg,thread=multi");
            push("-cpu");
            push("max");
        }
    }
    for s in ["-nographic", "-no-reboot", "-m"] {
        push(s);
    }
    push(&cfg.memory);
    push("-smp");
    push(&cfg.smp.to_string());
    if cfg.nics == 0 && cfg.mq_queues == 0 {
        push("-nic");
        push("none");
    } else {
        for i in 0..cfg.nics {
            push("-netdev");
            push(&format!("hubport,id=n{i},hubid=0"));
            push("-device");
            push(&format!("virtio-net-pci,netdev=n{i},romfile="));
        }
        if cfg.mq_queues > 0 {
            let q = cfg.mq_queues;
            push("-netdev");
            push(&format!(
                "tap,id=mq,script=no,downscript=no,vhost=off,queues={q}"
            ));
            push("-device");
            // A vector per queue (rx and tx) plus config and control.
            push(&format!(
                "virtio-net-pci,netdev=mq,mq=on,rss=on,vectors={},romfile=",
                2 * q + 2
            ));
        }
    }
    push("-kernel");
    push(&cfg.kernel.to_string_lossy());
    push("-initrd");
    push(&cfg.initrd.to_string_lossy());
    push("-append");
    push("console=ttyS0 quiet panic=-1 rdinit=/init");
    a
}

/// How long each stage may take before QEMU is killed.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From start to the init's boot marker.
    pub boot: Duration,
    /// From a program's start marker to its exit marker (the guest's own per-program limit
    /// plus slack: the init kills the program first, and this catches a guest that hangs).
    pub run: Duration,
    /// Between markers otherwise (a program's `--list`, the poweroff).
    pub between: Duration,
}

/// What came of a boot.
#[derive(Debug)]
pub struct Outcome {
    /// The console text (control sequences removed).
    pub console: String,
    /// QEMU's exit status, if it exited by itself.
    pub status: Option<ExitStatus>,
    /// Why QEMU was killed, if it was.
    pub killed: Option<String>,
    /// Host seconds from QEMU's start to the boot marker.
    pub boot_secs: Option<f64>,
    /// Host seconds QEMU ran.
    pub total_secs: f64,
    /// QEMU's stderr.
    pub stderr: String,
}

enum Event {
    Out(Vec<u8>),
    Err(Vec<u8>),
    OutEof,
    ErrEof,
}

fn pump(mut r: impl Read + Send + 'static, tx: mpsc::Sender<Event>, err: bool) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(if err { Event::ErrEof } else { Event::OutEof });
                    return;
                }
                Ok(n) => {
                    let chunk = buf[..n].to_vec();
                    let _ = tx.send(if err {
                        Event::Err(chunk)
                    } else {
                        Event::Out(chunk)
                    });
                }
            }
        }
    });
}

/// Text on QEMU's stderr that means KVM cannot run this guest here.
pub fn kvm_failed(stderr: &str) -> bool {
    stderr.contains("KVM internal error")
        || stderr.contains("emulation failure")
        || stderr.contains("failed to initialize kvm")
        || stderr.contains("Could not access KVM")
}

/// Boots, streams the console to stdout if `echo`, and returns when QEMU exits or is killed at
/// a deadline. `prefix` is the init's marker prefix.
pub fn run(cfg: &VmConfig, prefix: &str, deadlines: Deadlines, echo: bool) -> Result<Outcome> {
    let args = qemu_args(cfg);
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel();
    pump(child.stdout.take().expect("piped"), tx.clone(), false);
    pump(child.stderr.take().expect("piped"), tx, true);

    let mut console_bytes: Vec<u8> = Vec::new();
    let mut stderr = Vec::new();
    let mut esc = EscState::default();
    let mut shown = console::EchoFilter::new(prefix);
    let mut line_start = 0usize;
    let mut deadline = start + deadlines.boot;
    let mut stage = String::from("the guest to boot (no boot marker from its init)");
    let mut boot_secs = None;
    let mut eofs = 0;
    let mut killed = None;
    let stdout = std::io::stdout();
    loop {
        let now = Instant::now();
        if now >= deadline {
            let limit = deadline.duration_since(start).as_secs_f64();
            killed = Some(format!(
                "killed QEMU after waiting for {stage} (deadline {limit:.0} s after start)"
            ));
            let _ = child.kill();
            break;
        }
        let ev = match rx.recv_timeout(deadline - now) {
            Ok(ev) => ev,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match ev {
            Event::Out(chunk) => {
                let clean = console::strip_control(&chunk, &mut esc);
                if echo {
                    let mut o = stdout.lock();
                    let _ = o.write_all(&shown.feed(&clean));
                    let _ = o.flush();
                }
                console_bytes.extend_from_slice(&clean);
                while let Some(nl) = console_bytes[line_start..].iter().position(|&b| b == b'\n') {
                    let end = line_start + nl;
                    let line =
                        String::from_utf8_lossy(&console_bytes[line_start..end]).into_owned();
                    line_start = end + 1;
                    let Some((_, m)) = console::parse_marker(&line, prefix) else {
                        continue;
                    };
                    let now = Instant::now();
                    match m {
                        Marker::Boot { .. } => {
                            boot_secs = Some(now.duration_since(start).as_secs_f64());
                            deadline = now + deadlines.between;
                            stage = "the first program to start".into();
                        }
                        Marker::Start { i, .. } => {
                            deadline = now + deadlines.run;
                            stage = format!(
                                "program {i} to exit (the guest's own time limit did not end it)"
                            );
                        }
                        Marker::Exit { i, .. } => {
                            deadline = now + deadlines.between;
                            stage = format!("the init to go on after program {i}");
                        }
                        Marker::Done => {
                            deadline = now + deadlines.between;
                            stage = "the guest to power off".into();
                        }
                        Marker::Timeout { .. } | Marker::Listed { .. } => {}
                    }
                }
            }
            Event::Err(chunk) => {
                if echo {
                    let _ = std::io::stderr().write_all(&chunk);
                }
                stderr.extend_from_slice(&chunk);
                if cfg.accel == Accel::Kvm && kvm_failed(&String::from_utf8_lossy(&stderr)) {
                    killed =
                        Some("KVM cannot run this guest here (QEMU: KVM internal error)".into());
                    let _ = child.kill();
                    break;
                }
            }
            Event::OutEof | Event::ErrEof => {
                eofs += 1;
                if eofs == 2 {
                    break;
                }
            }
        }
    }
    let status = child.wait().ok();
    Ok(Outcome {
        console: String::from_utf8_lossy(&console_bytes).into_owned(),
        status: if killed.is_some() { None } else { status },
        killed,
        boot_secs,
        total_secs: start.elapsed().as_secs_f64(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// The cached verdict of the KVM probe, keyed by what it depends on.
pub fn probe_key(kernel_release: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    format!(
        "host {} | {} | guest {}",
        host.trim(),
        qemu.trim(),
        kernel_release
    )
}

/// Whether /dev/kvm can be opened for reading and writing.
pub fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Reads a cached probe verdict (`kvm` or `tcg`) for `key`.
pub fn cached_verdict(file: &Path, key: &str) -> Option<Accel> {
    let text = std::fs::read_to_string(file).ok()?;
    let (verdict, k) = text.trim_end().split_once('\t')?;
    if k != key {
        return None;
    }
    match verdict {
        "kvm" => Some(Accel::Kvm),
        "tcg" => Some(Accel::Tcg),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let cfg = VmConfig {
            kernel: "/c/vmlinuz".into(),
            initrd: "/c/i.gz".into(),
            accel: Accel::Tcg,
            memory: "4G".into(),
            smp: 2,
            nics: 0,
            mq_queues: 0,
        };
        let a = qemu_args(&cfg).join(" ");
        assert_eq!(
            a,
            "-accel tcg,thread=multi -cpu max -nographic -no-reboot -m 4G -smp 2 -nic none \
             -kernel /c/vmlinuz -initrd /c/i.gz -append console=ttyS0 quiet panic=-1 rdinit=/init"
        );
        let kvm = qemu_args(&VmConfig {
            accel: Accel::Kvm,
            nics: 2,
            ..cfg.clone()
        })
        .join(" ");
        assert!(kvm.starts_with("-accel kvm -cpu host "));
        assert!(kvm.contains(
            "-netdev hubport,id=n0,hubid=0 -device virtio-net-pci,netdev=n0,romfile= \
             -netdev hubport,id=n1,hubid=0 -device virtio-net-pci,netdev=n1,romfile="
        ));
        assert!(!kvm.contains("-nic none"));
        let mq = qemu_args(&VmConfig {
            mq_queues: 4,
            ..cfg
        })
        .join(" ");
        assert!(mq.contains(
            "-netdev tap,id=mq,script=no,downscript=no,vhost=off,queues=4 \
             -device virtio-net-pci,netdev=mq,mq=on,rss=on,vectors=10,romfile="
        ));
        assert!(!mq.contains("-nic none") && !mq.contains("hubport"));
    }

    #[test]
    fn kvm_failure_text() {
        assert!(kvm_failed(
            "KVM internal error. Suberror: 1\nemulation failure\n"
        ));
        assert!(!kvm_failed(
            "qemu-system-x86_64: warning: host doesn't support requested feature"
        ));
    }

    #[test]
    fn probe_verdicts() {
        let dir = std::env::temp_dir().join(format!("guest-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("accel");
        std::fs::write(&f, "tcg\tkey 1\n").unwrap();
        assert_eq!(cached_verdict(&f, "key 1"), Some(Accel::Tcg));
        assert_eq!(cached_verdict(&f, "key 2"), None);
        std::fs::write(&f, "kvm\tkey 1\n").unwrap();
        assert_eq!(cached_verdict(&f, "key 1"), Some(Accel::Kvm));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
