//! `guest`: runs the project's test binaries (or any program) inside a QEMU guest booted with a
//! Debian Linux 7.x kernel, where io_uring zcrx works without a special NIC (`ZCRX_REG_NODEV`).
//!
//! ```sh
//! cargo run -p guest -- kernel                                   # fetch or reuse the kernel
//! cargo run -p guest -- test -p zcrx-ifq --test zcrx_kernel --test bufring_kernel
//! cargo run -p guest -- test -p examples --test sink_iperf3 --with iperf3 -- --nocapture
//! cargo run -p guest -- exec target/debug/examples/probe
//! ```
//!
//! All the test binaries of one invocation run in one boot, one after the other; the tool exits
//! 0 only if the guest booted and every binary exited 0 with `test result: ok.`. It prints one
//! line per binary and, last, `N passed, N failed`.
// A binary: its modules' `pub` items are for each other, not an API (the rest of the
// workspace lints apply).
#![allow(unreachable_pub)]

mod cargo;
mod console;
mod host;
mod initramfs;
mod json;
mod kernel;
mod modules;
mod qemu;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use qemu::Accel;

#[derive(Parser, Debug)]
#[command(
    name = "guest",
    about = "Runs test binaries in a QEMU guest booted with a Debian Linux 7.x kernel",
    long_about = "Runs the project's test binaries (or any program) in a QEMU guest booted with \
                  a Debian Linux 7.x kernel from trixie-backports, cached under target/guest/. \
                  Under TCG a boot takes about 6 s and code runs several times slower than on \
                  the host."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Fetch (or reuse) the kernel, its uapi headers and modules; print the release and paths.
    Kernel {
        #[command(flatten)]
        kernel: KernelArgs,
    },
    /// Build test binaries with `cargo test --no-run` and run them all in one guest boot.
    Test {
        /// Package to test (as `cargo test -p`); repeatable.
        #[arg(short = 'p', long = "package")]
        packages: Vec<String>,
        /// Integration test target to run; repeatable.
        #[arg(long = "test")]
        tests: Vec<String>,
        /// The library's unit tests.
        #[arg(long)]
        lib: bool,
        /// The binaries' unit tests.
        #[arg(long)]
        bins: bool,
        /// Build with the release profile (as `cargo test --release`).
        #[arg(long)]
        release: bool,
        /// Features to enable (as `cargo test --features`).
        #[arg(long)]
        features: Option<String>,
        #[command(flatten)]
        vm: VmArgs,
        #[command(flatten)]
        kernel: KernelArgs,
        /// Arguments for every test binary (libtest's: `--skip NAME`, `--nocapture`, filters).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run one host program in the guest.
    Exec {
        /// The program.
        path: PathBuf,
        #[command(flatten)]
        vm: VmArgs,
        #[command(flatten)]
        kernel: KernelArgs,
        /// Its arguments.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Args, Debug, Clone)]
struct KernelArgs {
    /// `apt-get update` the private apt state and take the newest kernel there.
    #[arg(long)]
    refresh: bool,
    /// A kernel release to use (`7.2.12+deb13` or `7.2.12`) instead of the newest.
    #[arg(long, value_name = "RELEASE")]
    kernel_version: Option<String>,
    /// The Debian suite holding the kernel packages.
    #[arg(long, default_value = "trixie-backports")]
    suite: String,
    /// The Debian mirror.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    mirror: String,
    /// Cache directory (default: <target dir>/guest).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct VmArgs {
    /// A host program to copy into the guest's /usr/bin with its libraries: a name on PATH
    /// (installed from its Debian package if missing; `NAME:PACKAGE` names the package) or a
    /// path. Repeatable.
    #[arg(long = "with", value_name = "BIN")]
    with: Vec<String>,
    /// An environment variable for the programs (`K=V`); repeatable.
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Seconds each binary may run before it is killed (and counted as failed).
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Seconds the guest may take to reach its init.
    #[arg(long, default_value_t = 180)]
    boot_timeout: u64,
    /// auto: KVM if a probe boot with it works here (the verdict is cached), else TCG.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    accel: Accel,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    smp: u32,
    /// Guest memory (QEMU -m).
    #[arg(long, default_value = "4G")]
    memory: String,
    /// virtio-net-pci devices on one QEMU hub (eth0..): loads virtio_net and its dependencies
    /// from the kernel's modules and brings the interfaces up.
    #[arg(long, value_name = "N", default_value_t = 0)]
    virtio_net: usize,
    /// One more virtio-net-pci device, after the hub's, with Q queue pairs on a tap of its own
    /// (QEMU creates and removes it; it carries no traffic): channels, queues and NAPI ids for
    /// the NIC checks to read. Needs /dev/net/tun on the host.
    #[arg(long, value_name = "Q", default_value_t = 0)]
    virtio_net_mq: u32,
    /// Another kernel module to load (with its dependencies); repeatable.
    #[arg(long = "module", value_name = "NAME")]
    modules: Vec<String>,
}

fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

fn cache_dir(k: &KernelArgs) -> Result<PathBuf> {
    let dir = match &k.cache {
        Some(d) => d.clone(),
        None => cargo::target_dir(&workspace_root())?.join("guest"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn fetch_options(k: &KernelArgs) -> kernel::FetchOptions {
    kernel::FetchOptions {
        suite: k.suite.clone(),
        mirror: k.mirror.clone(),
        refresh: k.refresh,
        version: k.kernel_version.clone(),
    }
}

fn get_kernel(k: &KernelArgs, cache: &Path) -> Result<(kernel::Kernel, f64)> {
    let t = Instant::now();
    let kern = kernel::ensure(cache, &fetch_options(k))
        .context("cannot get a Linux 7.x kernel for the guest")?;
    Ok((kern, t.elapsed().as_secs_f64()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let counted = matches!(cli.cmd, Cmd::Test { .. });
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            println!("guest: FAIL: {e:#}");
            if counted {
                // Nothing ran: the run as a whole is one failure, never a skip.
                println!("0 passed, 1 failed");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Kernel { kernel: k } => {
            let cache = cache_dir(&k)?;
            let (kern, secs) = get_kernel(&k, &cache)?;
            println!("release  {}", kern.release.uname());
            println!("vmlinuz  {}", kern.vmlinuz.display());
            println!("headers  {}", kern.include.display());
            println!("modules  {}", kern.modules.display());
            println!("current  {}", cache.join("current").display());
            eprintln!("guest: kernel ready in {secs:.1} s");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Test {
            packages,
            tests,
            lib,
            bins,
            release,
            features,
            vm,
            kernel: k,
            args,
        } => {
            // Built as part of the whole workspace, so that features unify as in `cargo test
            // --workspace` and the binaries are the very ones it builds (with `-p` alone they
            // would be other builds); then only the asked-for packages' binaries run.
            let mut cargo_args = vec!["--workspace".to_string()];
            for t in &tests {
                cargo_args.extend(["--test".to_string(), t.clone()]);
            }
            if lib {
                cargo_args.push("--lib".into());
            }
            if bins {
                cargo_args.push("--bins".into());
            }
            if release {
                cargo_args.push("--release".into());
            }
            if let Some(f) = features {
                cargo_args.extend(["--features".to_string(), f]);
            }
            let t = Instant::now();
            let built = cargo::build_tests(&workspace_root(), &cargo_args)?;
            let build_secs = t.elapsed().as_secs_f64();
            let bins = cargo::select_packages(built, &packages)?;
            let progs = bins
                .iter()
                .map(|b| Program {
                    label: b.label(),
                    host: b.executable.clone(),
                    cwd: b.manifest_dir.to_string_lossy().into_owned(),
                    env: vec![
                        (
                            "CARGO_MANIFEST_DIR".into(),
                            b.manifest_dir.to_string_lossy().into_owned(),
                        ),
                        ("CARGO_PKG_NAME".into(), b.package.clone()),
                    ],
                    libtest: true,
                })
                .collect();
            boot_and_report(progs, &args, &vm, &k, Some(build_secs), true)
        }
        Cmd::Exec {
            path,
            vm,
            kernel: k,
            args,
        } => {
            let host = if path.components().count() == 1 && !path.exists() {
                host::which(&path.to_string_lossy())
                    .with_context(|| format!("{} is not on PATH", path.display()))?
            } else {
                std::fs::canonicalize(&path)
                    .with_context(|| format!("cannot find {}", path.display()))?
            };
            let prog = Program {
                label: host.to_string_lossy().into_owned(),
                host,
                cwd: "/root".into(),
                env: vec![],
                libtest: false,
            };
            boot_and_report(vec![prog], &args, &vm, &k, None, false)
        }
    }
}

/// One program to run in the guest.
struct Program {
    label: String,
    host: PathBuf,
    cwd: String,
    env: Vec<(String, String)>,
    libtest: bool,
}

fn parse_env(items: &[String]) -> Result<Vec<(String, String)>> {
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

fn boot_and_report(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// For checking the tool's time limit on itself: with `GUEST_SELF_TEST_HANG=1` this test
    /// never ends (`cargo run -p guest -- test -p guest --timeout 20 --env
    /// GUEST_SELF_TEST_HANG=1` must fail naming it unfinished); otherwise it passes at once.
    #[test]
    fn hangs_when_asked() {
        if std::env::var_os("GUEST_SELF_TEST_HANG").is_some() {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }

    #[test]
    fn env_items() {
        assert_eq!(
            parse_env(&["A=1".into(), "B_2=x=y".into()]).unwrap(),
            [
                ("A".to_string(), "1".to_string()),
                ("B_2".into(), "x=y".into())
            ]
        );
        for bad in ["A", "=1", "1A=x", "A-B=x", "A B=x"] {
            assert!(parse_env(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_parses() {
        let c = Cli::try_parse_from([
            "guest",
            "test",
            "-p",
            "ifq",
            "--test",
            "zcrx_kernel",
            "--test",
            "bufring_kernel",
            "--with",
            "iperf3",
            "--env",
            "A=1",
            "--timeout",
            "60",
            "--",
            "--skip",
            "register_nodev",
        ])
        .unwrap();
        let Cmd::Test {
            packages,
            tests,
            vm,
            args,
            ..
        } = c.cmd
        else {
            panic!("not test");
        };
        assert_eq!(packages, ["ifq"]);
        assert_eq!(tests, ["zcrx_kernel", "bufring_kernel"]);
        assert_eq!(vm.with, ["iperf3"]);
        assert_eq!(vm.timeout, 60);
        assert_eq!(vm.accel, Accel::Auto);
        assert_eq!(args, ["--skip", "register_nodev"]);
        let e = Cli::try_parse_from(["guest", "exec", "/bin/true", "--", "-x"]).unwrap();
        assert!(matches!(e.cmd, Cmd::Exec { ref args, .. } if args == &["-x"]));
    }
}
