//! rxbench's output into a pipe or file: one plain line per measurement, no escape codes, and
//! the paired-round summary with intervals.

use std::process::Command;

#[test]
fn piped_output_is_plain_and_has_intervals() {
    let out_dir = std::env::temp_dir().join(format!("rxbench-log-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_rxbench"))
        .args([
            "--contenders",
            "ours,tokio-ct",
            "--rounds",
            "2",
            "--warmup",
            "1",
        ])
        .args([
            "--seconds",
            "0.5",
            "--settle-ms",
            "100",
            "--fail-on-error",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .expect("run rxbench");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "rxbench failed:\n{stderr}\n{stdout}");
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!text.contains('\x1b'), "escape codes in {name}:\n{text:?}");
        assert!(
            !text.contains('\r'),
            "carriage returns in {name}:\n{text:?}"
        );
    }
    // 3 rounds (1 warm-up) x 2 contenders, one line each.
    let steps: Vec<&str> = stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(steps.len(), 6, "{stderr}");
    assert!(
        steps[0].starts_with("[1/6] OneFlow warm-up 1/1: "),
        "{}",
        steps[0]
    );
    assert!(steps.iter().all(|l| l.contains("GB/s")), "{stderr}");
    // The table: a ratio with its interval for ours, the baseline marked.
    let ours = stdout
        .lines()
        .find(|l| l.starts_with("| ours (buffer ring) |"))
        .unwrap_or_else(|| panic!("no row for ours:\n{stdout}"));
    assert!(ours.contains("x ["), "no interval: {ours}");
    assert!(stdout.contains("| baseline | baseline |"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap();
    let rows = json["results"].as_array().unwrap();
    let ours = rows.iter().find(|r| r["contender"] == "ours").unwrap();
    assert_eq!(ours["rounds"].as_array().unwrap().len(), 3);
    assert_eq!(ours["ratio"]["per_round"].as_array().unwrap().len(), 2);
    assert!(ours["ratio"]["lo"].as_f64().unwrap() <= ours["ratio"]["hi"].as_f64().unwrap());
    assert!(std::fs::read_to_string(out_dir.join("results.svg"))
        .unwrap()
        .contains("<svg"));
    let _ = std::fs::remove_dir_all(&out_dir);
}
