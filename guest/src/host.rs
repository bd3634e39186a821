//! The host side: finding programs, installing their Debian packages when missing, running
//! commands, and the shared libraries `ldd` names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};

/// Where `name` is on `PATH` (or in the sbin directories), if anywhere.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs `cmd`, failing with its stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let what = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes sure each `(program, Debian package)` is on the host, installing the packages of the
/// missing ones with `apt-get install -y` (after one `apt-get update` per process). Fails
/// saying which package could not be installed.
pub fn ensure_commands(tools: &[(&str, &str)]) -> Result<()> {
    static UPDATED: Mutex<bool> = Mutex::new(false);
    let missing: Vec<&(&str, &str)> = tools.iter().filter(|(b, _)| which(b).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.sort_unstable();
    packages.dedup();
    let names: Vec<&str> = missing.iter().map(|(b, _)| *b).collect();
    if which("apt-get").is_none() {
        bail!(
            "{} not found and no apt-get: install the Debian package(s) {}",
            names.join(", "),
            packages.join(" ")
        );
    }
    let mut updated = UPDATED.lock().unwrap_or_else(|e| e.into_inner());
    if !*updated {
        eprintln!("guest: apt-get update (to install {})", packages.join(" "));
        apt(&["update"]).context("apt-get update failed")?;
        *updated = true;
    }
    eprintln!(
        "guest: apt-get install -y {} (for {})",
        packages.join(" "),
        names.join(", ")
    );
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&packages);
    apt(&args).with_context(|| {
        format!(
            "cannot install the Debian package(s) {} (needed for {})",
            packages.join(" "),
            names.join(", ")
        )
    })?;
    match missing.iter().find(|(b, _)| which(b).is_none()) {
        Some((b, p)) => bail!("{b} still missing after installing the Debian package {p}"),
        None => Ok(()),
    }
}

fn apt(args: &[&str]) -> Result<()> {
    let out = Command::new("apt-get")
        .args(["-q", "-o", "DPkg::Lock::Timeout=120"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .context("cannot run apt-get")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(4).collect();
        bail!(
            "{}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    Ok(())
}

/// The Debian package that ships `program`, for the programs tests drive; otherwise the
/// program's own name (right for most).
pub fn debian_package_of(program: &str) -> &str {
    match program {
        "redis-benchmark" | "redis-cli" => "redis-tools",
        "nc" => "netcat-openbsd",
        "ss" | "ip" | "tc" => "iproute2",
        "ping" => "iputils-ping",
        other => other,
    }
}

/// The libraries in `ldd` output that must be copied: absolute paths, the dynamic loader
/// included, the vDSO (which the kernel provides) left out. `Err` names a library `ldd` could
/// not find.
pub fn parse_ldd(output: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        if line.is_empty()
            || line.contains("not a dynamic executable")
            || line == "statically linked"
        {
            continue;
        }
        if line.contains("=> not found") {
            bail!("a shared library is missing on the host: {line}");
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2
        // (0x...)", "linux-vdso.so.1 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.trim(),
            None => line,
        };
        let path = path.split(" (0x").next().unwrap_or(path).trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// The shared libraries `program` needs (empty for a static one).
pub fn libraries_of(program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // ldd exits 1 for a static executable, with that said on stdout or stderr.
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(anyhow!(
            "ldd {} failed ({}): {}",
            program.display(),
            out.status,
            err.trim()
        ));
    }
    parse_ldd(&text).with_context(|| format!("for {}", program.display()))
}

/// The host's soft limit on open files (the guest gets the same).
pub fn nofile_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_of_a_rust_test_binary() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd4b3f2000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e7c7a0000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0e7c6c1000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e7c4e0000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e7c84e000)
";
        let libs = parse_ldd(out).unwrap();
        let want: Vec<PathBuf> = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/lib64/ld-linux-x86-64.so.2",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(libs, want);
    }

    #[test]
    fn ldd_of_a_static_or_broken_binary() {
        assert!(parse_ldd("\tnot a dynamic executable\n")
            .unwrap()
            .is_empty());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        let e = parse_ldd("\tlibiperf.so.0 => not found\n").unwrap_err();
        assert!(e.to_string().contains("libiperf.so.0"), "{e}");
    }

    #[test]
    fn packages_of_programs() {
        assert_eq!(debian_package_of("redis-benchmark"), "redis-tools");
        assert_eq!(debian_package_of("iperf3"), "iperf3");
        assert_eq!(debian_package_of("frobnicate"), "frobnicate");
    }
}
