//! One boot: the programs and their environment, the initramfs, the accelerator, QEMU, and the
//! report read off the console.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::qemu::Accel;
use crate::{
    cache_dir, console, get_kernel, host, initramfs, kernel, modules, qemu, KernelArgs, VmArgs,
};

/// One program to run in the guest.
pub struct Program {
    pub label: String,
    pub host: PathBuf,
    pub cwd: String,
    pub env: Vec<(String, String)>,
    pub libtest: bool,
}

pub fn parse_env(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--env {kv}: expected K=V"))?;
            let valid = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                bail!("--env {kv}: {k:?} is not a variable name");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `--with` items: (name in /usr/bin, host path).
fn resolve_tools(with: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for w in with {
        if w.contains('/') {
            let p = std::fs::canonicalize(w).with_context(|| format!("--with {w}: not found"))?;
            let name = p
                .file_name()
                .context("--with: no file name")?
                .to_string_lossy()
                .into_owned();
            out.push((name, p));
            continue;
        }
        let (name, package) = match w.split_once(':') {
            Some((n, p)) => (n, p),
            None => (w.as_str(), host::debian_package_of(w)),
        };
        host::ensure_commands(&[(name, package)]).with_context(|| {
            format!("--with {name}: not on the host (Debian package {package})")
        })?;
        let p = host::which(name).with_context(|| format!("--with {name}: not found"))?;
        out.push((name.to_string(), p));
    }
    Ok(out)
}

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}{:x}",
        t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32),
        t.subsec_nanos() & 0xfff
    )
}

/// Builds an initramfs at `out` for `spec` (with the given programs and tools) and returns its
/// uncompressed data size.
fn build_initramfs(
    out: &Path,
    spec: &initramfs::InitSpec,
    programs: &[(String, PathBuf)],
    tools: &[(String, PathBuf)],
    modules: Vec<(String, Vec<u8>)>,
) -> Result<u64> {
    let busybox = host::which("busybox").context("busybox not found")?;
    let mut contents = initramfs::Contents {
        busybox_libs: host::libraries_of(&busybox)?,
        busybox,
        modules,
        ..Default::default()
    };
    for (guest, hostp) in programs {
        let libs = host::libraries_of(hostp)?;
        contents.programs.push((guest.clone(), hostp.clone(), libs));
    }
    for (name, hostp) in tools {
        let libs = host::libraries_of(hostp)?;
        contents.tools.push((name.clone(), hostp.clone(), libs));
    }
    let list = initramfs::file_list(&contents, &initramfs::init_script(spec))?;
    initramfs::write_gzipped(&list, out)
}

fn host_tools() -> Result<()> {
    host::ensure_commands(&[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("gzip", "gzip"),
        ("ldd", "libc-bin"),
    ])
}

/// Decides KVM or TCG. `Auto` boots a tiny guest with KVM once (the verdict is cached per host
/// kernel, QEMU and guest kernel) and falls back to TCG if it does not reach its init.
fn choose_accel(want: Accel, cache: &Path, kern: &kernel::Kernel, vm: &VmArgs) -> Result<Accel> {
    match want {
        Accel::Tcg => return Ok(Accel::Tcg),
        Accel::Kvm => {
            if !qemu::kvm_device_usable() {
                bail!("--accel kvm: /dev/kvm cannot be opened");
            }
            return Ok(Accel::Kvm);
        }
        Accel::Auto => {}
    }
    if !qemu::kvm_device_usable() {
        return Ok(Accel::Tcg);
    }
    let key = qemu::probe_key(&kern.release.uname());
    let file = cache.join("accel-probe");
    if let Some(v) = qemu::cached_verdict(&file, &key) {
        eprintln!(
            "guest: accel {} (cached probe verdict in {})",
            if v == Accel::Kvm { "kvm" } else { "tcg" },
            file.display()
        );
        return Ok(v);
    }
    let t = Instant::now();
    let n = nonce();
    let spec = initramfs::InitSpec {
        nonce: n.clone(),
        runs: vec![],
        env: vec![],
        timeout_secs: 10,
        nofile: None,
        modules: vec![],
        ifaces: 0,
    };
    let initrd = cache.join(format!("probe-{}.cpio.gz", std::process::id()));
    build_initramfs(&initrd, &spec, &[], &[], vec![])?;
    let cfg = qemu::VmConfig {
        kernel: kern.vmlinuz.clone(),
        initrd: initrd.clone(),
        accel: Accel::Kvm,
        memory: vm.memory.clone(),
        smp: vm.smp,
        nics: 0,
        mq_queues: 0,
    };
    let d = qemu::Deadlines {
        boot: Duration::from_secs(30),
        run: Duration::from_secs(10),
        between: Duration::from_secs(10),
    };
    let out = qemu::run(&cfg, &initramfs::marker(&n), d, false);
    let _ = std::fs::remove_file(&initrd);
    let out = out?;
    let ok = out.boot_secs.is_some() && !qemu::kvm_failed(&out.stderr);
    let v = if ok { Accel::Kvm } else { Accel::Tcg };
    let why = if ok {
        format!("the probe booted in {:.1} s", out.boot_secs.unwrap_or(0.0))
    } else {
        out.killed
            .clone()
            .unwrap_or_else(|| "the probe did not reach its init".into())
    };
    eprintln!(
        "guest: accel {} (KVM probe {:.1} s: {why})",
        if ok { "kvm" } else { "tcg" },
        t.elapsed().as_secs_f64()
    );
    std::fs::write(
        &file,
        format!("{}\t{key}\n", if ok { "kvm" } else { "tcg" }),
    )?;
    Ok(v)
}

fn module_files(kern: &kernel::Kernel, vm: &VmArgs) -> Result<Vec<(String, Vec<u8>)>> {
    let mut names: Vec<String> = Vec::new();
    if vm.virtio_net > 0 || vm.virtio_net_mq > 0 {
        names.extend(["virtio_pci", "virtio_net"].map(String::from));
    }
    names.extend(vm.modules.iter().cloned());
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let files = modules::index(&kern.modules)?;
    let mut bytes: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let modules::LoadOrder {
        modules: order,
        builtin,
    } = modules::load_order(&refs, &files, |path| {
        let ko = modules::read_module(&kern.modules.join(path))?;
        let deps = modules::modinfo_field(&ko, "depends").unwrap_or_default();
        bytes.insert(path.to_string(), ko);
        Ok(deps
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect())
    })?;
    for b in &builtin {
        eprintln!("guest: no module file for {b}: taken to be built into the kernel");
    }
    let mut out = Vec::new();
    for (name, path) in order {
        let ko = match bytes.remove(&path) {
            Some(b) => b,
            None => modules::read_module(&kern.modules.join(&path))?,
        };
        out.push((format!("lib/modules/guest/{name}.ko"), ko));
    }
    Ok(out)
}

pub fn boot_and_report(
    progs: Vec<Program>,
    args: &[String],
    vm: &VmArgs,
    k: &KernelArgs,
    build_secs: Option<f64>,
    expect_libtest: bool,
) -> Result<ExitCode> {
    let t_all = Instant::now();
    let env = parse_env(&vm.env)?;
    host_tools()?;
    let cache = cache_dir(k)?;
    let (kern, kernel_secs) = get_kernel(k, &cache)?;
    eprintln!(
        "guest: kernel {} ({}) ready in {kernel_secs:.1} s",
        kern.release.uname(),
        kern.vmlinuz.display()
    );
    let tools = resolve_tools(&vm.with)?;
    let modules = module_files(&kern, vm)?;

    let n = nonce();
    let spec = initramfs::InitSpec {
        nonce: n.clone(),
        runs: progs
            .iter()
            .map(|p| initramfs::GuestRun {
                path: initramfs::guest_path_for(&p.host),
                args: args.to_vec(),
                cwd: p.cwd.clone(),
                env: p.env.clone(),
                libtest: p.libtest,
            })
            .collect(),
        env,
        timeout_secs: vm.timeout,
        nofile: host::nofile_limit(),
        modules: modules.iter().map(|(p, _)| format!("/{p}")).collect(),
        ifaces: vm.virtio_net + usize::from(vm.virtio_net_mq > 0),
    };
    let run_dir = cache.join("run");
    std::fs::create_dir_all(&run_dir)?;
    let initrd = run_dir.join(format!("initramfs-{}.cpio.gz", std::process::id()));
    let t = Instant::now();
    let programs: Vec<(String, PathBuf)> = progs
        .iter()
        .map(|p| (initramfs::guest_path_for(&p.host), p.host.clone()))
        .collect();
    let raw = build_initramfs(&initrd, &spec, &programs, &tools, modules)?;
    let packed = std::fs::metadata(&initrd)?.len();
    let initramfs_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "guest: initramfs {:.0} MB ({:.0} MB gzip'd) in {initramfs_secs:.1} s",
        raw as f64 / 1e6,
        packed as f64 / 1e6
    );

    let accel = choose_accel(vm.accel, &cache, &kern, vm)?;
    let cfg = qemu::VmConfig {
        kernel: kern.vmlinuz.clone(),
        initrd: initrd.clone(),
        accel,
        memory: vm.memory.clone(),
        smp: vm.smp,
        nics: vm.virtio_net,
        mq_queues: vm.virtio_net_mq,
    };
    let deadlines = qemu::Deadlines {
        boot: Duration::from_secs(vm.boot_timeout),
        run: Duration::from_secs(vm.timeout + 60),
        between: Duration::from_secs(120),
    };
    let accel_name = if accel == Accel::Kvm { "kvm" } else { "tcg" };
    eprintln!(
        "guest: booting {} under {accel_name} ({} CPUs, {}), {} program(s), {} s limit each",
        kern.release.uname(),
        vm.smp,
        vm.memory,
        progs.len(),
        vm.timeout
    );
    let out = qemu::run(&cfg, &initramfs::marker(&n), deadlines, true);
    let _ = std::fs::remove_file(&initrd);
    let out = out?;
    let log = run_dir.join("console.log");
    let _ = std::fs::write(&log, &out.console);

    let rep = console::parse_console(&out.console, &initramfs::marker(&n), progs.len());
    println!();
    let mut problems: Vec<String> = Vec::new();
    match &rep.boot {
        Some((release, uptime)) => {
            println!(
                "guest: booted Linux {release} under {accel_name} in {:.1} s (guest uptime {uptime:.1} s at init)",
                out.boot_secs.unwrap_or(0.0)
            );
            if !release.starts_with(&kern.release.debian()) {
                problems.push(format!(
                    "the guest ran {release}, not {}",
                    kern.release.uname()
                ));
            }
        }
        None if out.killed.is_none() => {
            problems.push("the guest did not boot (no boot marker from its init)".into())
        }
        None => {}
    }
    if let Some(why) = &out.killed {
        problems.push(why.clone());
    } else if !rep.done {
        let status = out.status.map_or_else(|| "?".into(), |s| s.to_string());
        problems.push(format!("QEMU exited ({status}) before the init finished"));
    }
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut all_ok = problems.is_empty();
    for (p, r) in progs.iter().zip(&rep.runs) {
        let ok = r.passed(expect_libtest);
        all_ok &= ok;
        let (np, nf, ni) = r.counts(expect_libtest);
        passed += np;
        failed += nf;
        let how = if !r.started {
            "not run".to_string()
        } else if let Some(limit) = r.timed_out {
            format!("killed at the {limit} s time limit")
        } else {
            match r.exit {
                Some(c) if c > 128 && c < 128 + 65 => {
                    format!("exit {c} (killed by signal {})", c - 128)
                }
                Some(c) => format!("exit {c}"),
                None => "no exit marker".into(),
            }
        };
        let secs = r.secs.map_or_else(String::new, |s| format!(", {s:.1} s"));
        let counts = if r.libtest || !expect_libtest && r.summary.is_some() {
            format!(", {np} passed, {nf} failed, {ni} ignored")
        } else {
            String::new()
        };
        let mut line = format!(
            "guest: {} {}: {how}{counts}{secs}",
            if ok { "PASS" } else { "FAIL" },
            p.label
        );
        if !r.failed_tests.is_empty() {
            line.push_str(&format!("; failed: {}", r.failed_tests.join(", ")));
        }
        if !r.unfinished.is_empty() {
            line.push_str(&format!("; unfinished: {}", r.unfinished.join(", ")));
        }
        if r.started && r.exit == Some(0) && r.libtest && r.summary.is_none() {
            line.push_str("; no `test result:` line");
        }
        println!("{line}");
    }
    for p in &problems {
        println!("guest: FAIL: {p}");
    }
    println!(
        "guest: times: kernel {kernel_secs:.1} s{}, initramfs {initramfs_secs:.1} s, boot {}, guest total {:.1} s, all {:.1} s (console: {})",
        build_secs.map_or_else(String::new, |b| format!(", cargo build {b:.1} s")),
        out.boot_secs
            .map_or_else(|| "-".into(), |b| format!("{b:.1} s")),
        out.total_secs,
        t_all.elapsed().as_secs_f64() + build_secs.unwrap_or(0.0),
        log.display()
    );
    if expect_libtest {
        println!("{passed} passed, {failed} failed");
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
