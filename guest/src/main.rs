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
//! All the test binaries of one invocation run in one boot, one after the other in package and
//! target name order (the same every run); the tool exits 0 only if the guest booted and every
//! binary exited 0 with `test result: ok.`. It prints one line per binary and, last,
//! `N passed, N failed`.
// A binary: its modules' `pub` items are for each other, not an API (the rest of the
// workspace lints apply).
#![allow(unreachable_pub)]

mod boot;
mod cargo;
mod console;
mod host;
mod initramfs;
mod kernel;
mod modules;
mod qemu;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use boot::{boot_and_report, Program};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::parse_env;

    /// For checking the tool's time limit on itself: with `GUEST_SELF_TEST_HANG=1` this test
    /// never ends (`cargo run -p guest -- test -p guest --timeout 20 --env
    /// GUEST_SELF_TEST_HANG=1` must fail naming it unfinished); otherwise it passes at once.
    #[test]
    fn hangs_when_asked() {
        if std::env::var_os("GUEST_SELF_TEST_HANG").is_some() {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
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
