//! Building test binaries with `cargo test --no-run` (the same profile as `cargo test`, so the
//! artefacts are shared with the host's runs) and finding them in cargo's JSON messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use serde_json as json;

/// A test executable cargo built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBinary {
    /// The package, e.g. `ifq`.
    pub package: String,
    /// The target, e.g. `zcrx_kernel` (the library's unit tests: the crate name).
    pub target: String,
    /// The target's kind: `test`, `lib`, `bin`, `bench`, `example`.
    pub kind: String,
    /// The executable.
    pub executable: PathBuf,
    /// The package's directory (where `cargo test` runs it).
    pub manifest_dir: PathBuf,
}

impl TestBinary {
    /// How `cargo test` would name it: `ifq --test zcrx_kernel`, `ifq --lib`.
    pub fn label(&self) -> String {
        match self.kind.as_str() {
            "lib" | "rlib" | "cdylib" | "dylib" | "staticlib" | "proc-macro" => {
                format!("{} --lib", self.package)
            }
            k => format!("{} --{k} {}", self.package, self.target),
        }
    }
}

/// The package name in a cargo package id: `path+file:///w/ifq#0.1.0` (name = last path
/// component), `path+file:///w/x#ifq@0.1.0`, `registry+https://...#serde@1.0.0`, or the old
/// form `ifq 0.1.0 (path+file:///w/ifq)`.
pub fn package_name(id: &str) -> String {
    if let Some((url, frag)) = id.rsplit_once('#') {
        if let Some((name, _ver)) = frag.split_once('@') {
            return name.to_string();
        }
        let path = url.split_once("://").map_or(url, |(_, p)| p);
        let path = path.split('?').next().unwrap_or(path);
        return path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(path)
            .to_string();
    }
    id.split_whitespace().next().unwrap_or(id).to_string()
}

/// The test executables in cargo's `--message-format=json` output (one JSON object a line;
/// other lines are ignored): artefacts built with the test profile flag that have an
/// executable.
pub fn test_binaries(messages: &str) -> Result<Vec<TestBinary>> {
    let mut out = Vec::new();
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let v = serde_json::from_str::<json::Value>(line)
            .with_context(|| format!("cargo message: {line}"))?;
        if v.get("reason").and_then(json::Value::as_str) != Some("compiler-artifact") {
            continue;
        }
        let Some(exe) = v.get("executable").and_then(json::Value::as_str) else {
            continue;
        };
        let is_test = v
            .get("profile")
            .and_then(|p| p.get("test"))
            .and_then(json::Value::as_bool)
            .unwrap_or(false);
        if !is_test {
            continue;
        }
        let target = v.get("target");
        let name = target
            .and_then(|t| t.get("name"))
            .and_then(json::Value::as_str)
            .unwrap_or("?");
        let kind = target
            .and_then(|t| t.get("kind"))
            .and_then(json::Value::as_array)
            .and_then(|k| k.first())
            .and_then(json::Value::as_str)
            .unwrap_or("test");
        let manifest = v
            .get("manifest_path")
            .and_then(json::Value::as_str)
            .map(PathBuf::from)
            .unwrap_or_default();
        let id = v
            .get("package_id")
            .and_then(json::Value::as_str)
            .unwrap_or("?");
        let b = TestBinary {
            package: package_name(id),
            target: name.to_string(),
            kind: kind.to_string(),
            executable: PathBuf::from(exe),
            manifest_dir: manifest.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        if !out.contains(&b) {
            out.push(b);
        }
    }
    Ok(out)
}

/// The binaries of `packages` (all if empty), failing if one of them has none.
pub fn select_packages(bins: Vec<TestBinary>, packages: &[String]) -> Result<Vec<TestBinary>> {
    if packages.is_empty() {
        return Ok(bins);
    }
    for p in packages {
        if !bins.iter().any(|b| &b.package == p) {
            let have: Vec<String> = bins.iter().map(TestBinary::label).collect();
            bail!(
                "no test binary of package {p} among those built ({})",
                have.join(", ")
            );
        }
    }
    Ok(bins
        .into_iter()
        .filter(|b| packages.contains(&b.package))
        .collect())
}

/// Runs `cargo test --no-run --message-format=json-render-diagnostics ARGS` in `workspace`
/// (diagnostics and progress go to stderr as usual) and returns the test executables.
pub fn build_tests(workspace: &Path, args: &[String]) -> Result<Vec<TestBinary>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("guest: cargo test --no-run {}", args.join(" "));
    let out = cmd.output().context("cannot run cargo")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "cargo test --no-run {} failed ({})",
            args.join(" "),
            out.status
        );
    }
    let mut bins = test_binaries(&text)?;
    // Cargo reports executables as they finish building, so the order changes from run to run;
    // tests that share the guest's devices must meet each other in the same order every time.
    bins.sort_by(|a, b| (&a.package, &a.target, &a.kind).cmp(&(&b.package, &b.target, &b.kind)));
    if bins.is_empty() {
        bail!(
            "cargo test --no-run {} built no test executable",
            args.join(" ")
        );
    }
    Ok(bins)
}

/// The workspace's target directory (`cargo metadata`: honours `CARGO_TARGET_DIR` and
/// `build.target-dir`).
pub fn target_dir(workspace: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed ({})", out.status);
    }
    let v = serde_json::from_slice::<json::Value>(&out.stdout)?;
    let dir = v
        .get("target_directory")
        .and_then(json::Value::as_str)
        .context("cargo metadata gave no target_directory")?;
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_ids() {
        assert_eq!(package_name("path+file:///work/main/ifq#0.1.0"), "ifq");
        assert_eq!(
            package_name("path+file:///work/main/x#examples@0.0.0"),
            "examples"
        );
        assert_eq!(
            package_name("registry+https://github.com/rust-lang/crates.io-index#anyhow@1.0.98"),
            "anyhow"
        );
        assert_eq!(
            package_name("ifq 0.1.0 (path+file:///work/main/ifq)"),
            "ifq"
        );
    }

    #[test]
    fn executables_from_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#libc@0.2.170","manifest_path":"/r/libc/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"libc","src_path":"/r/libc/src/lib.rs","edition":"2021","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"2","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/w/target/debug/deps/liblibc.rlib"],"executable":null,"fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/ifq#0.1.0","manifest_path":"/w/ifq/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"zcrx_kernel","src_path":"/w/ifq/tests/zcrx_kernel.rs","edition":"2021","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"2","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/w/target/debug/deps/zcrx_kernel-bc15de0e16e3cc02"],"executable":"/w/target/debug/deps/zcrx_kernel-bc15de0e16e3cc02","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/ifq#0.1.0","manifest_path":"/w/ifq/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"ifq","src_path":"/w/ifq/src/lib.rs","edition":"2021","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"2","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/w/target/debug/deps/ifq-ac6e"],"executable":"/w/target/debug/deps/ifq-ac6e","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/examples#0.0.0","manifest_path":"/w/examples/Cargo.toml","target":{"kind":["example"],"crate_types":["bin"],"name":"sink","src_path":"/w/examples/sink.rs","edition":"2021","doc":false,"doctest":false,"test":false},"profile":{"opt_level":"2","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/w/target/debug/examples/sink"],"executable":"/w/target/debug/examples/sink","fresh":true}
{"reason":"build-finished","success":true}
"#;
        let bins = test_binaries(msgs).unwrap();
        assert_eq!(bins.len(), 2);
        assert_eq!(bins[0].label(), "ifq --test zcrx_kernel");
        assert_eq!(
            bins[0].executable,
            Path::new("/w/target/debug/deps/zcrx_kernel-bc15de0e16e3cc02")
        );
        assert_eq!(bins[0].manifest_dir, Path::new("/w/ifq"));
        assert_eq!(bins[1].label(), "ifq --lib");
        let only = select_packages(bins.clone(), &["ifq".into()]).unwrap();
        assert_eq!(only, bins);
        assert_eq!(select_packages(bins.clone(), &[]).unwrap(), bins);
        let e = select_packages(bins, &["runtime".into()]).unwrap_err();
        assert!(e.to_string().contains("ifq --test zcrx_kernel"), "{e}");
    }
}
