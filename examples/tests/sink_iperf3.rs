//! The sink as an iperf3 server (`--iperf3`): a real `iperf3 -c` drives it over loopback, and
//! what the client prints as received is exactly what the sink counted.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;
use test_kit::Outcome;

use common::{require_tools, ChildGuard, Sink};
use examples::{SinkConfig, SinkReport, SinkRole, Verification};

fn iperf3_client(port: u16, args: &[&str]) -> (bool, serde_json::Value) {
    let mut client = ChildGuard::spawn(
        Command::new("iperf3")
            .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-J"])
            .args(["--connect-timeout", "5000"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let out = client
        .wait_output(Duration::from_secs(60))
        .expect("iperf3 client finished within 60 s");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 -J output is not JSON ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), json)
}

/// Collects the reports of one test: the control connection's and `streams` data streams'.
fn test_reports(sink: &Sink, streams: usize) -> (SinkReport, Vec<SinkReport>) {
    let mut control = None;
    let mut data = Vec::new();
    while control.is_none() || data.len() < streams {
        let r = sink.next_report();
        match r.role {
            SinkRole::Iperf3Test { .. } => {
                assert!(control.is_none(), "two control reports: {r}");
                control = Some(r);
            }
            SinkRole::Iperf3Data { .. } => data.push(r),
            SinkRole::Plain => panic!("a plain connection in iperf3 mode: {r}"),
        }
    }
    (control.unwrap(), data)
}

fn check_run(sink: &Sink, streams: usize) {
    let parallel = streams.to_string();
    let (ok, json) = iperf3_client(sink.addr.port(), &["-t", "2", "-P", &parallel]);
    assert!(
        json.get("error").is_none(),
        "iperf3 reported an error: {}",
        json["error"]
    );
    assert!(ok, "iperf3 client failed");
    let end = &json["end"];
    let sent = end["sum_sent"]["bytes"].as_u64().expect("sum_sent.bytes");
    let received = end["sum_received"]["bytes"]
        .as_u64()
        .expect("sum_received.bytes");
    let bps = end["sum_received"]["bits_per_second"].as_f64().unwrap();
    let (control, data) = test_reports(sink, streams);
    assert!(control.error.is_none(), "{control}");
    let SinkRole::Iperf3Test {
        streams: n, bytes, ..
    } = control.role
    else {
        unreachable!()
    };
    assert_eq!(n as usize, streams);
    // The client's receiver figures are the sink's.
    assert_eq!(
        received, bytes,
        "iperf3's received bytes vs the sink's count"
    );
    assert!(
        received > 0 && received <= sent,
        "received {received} of {sent}"
    );
    let mut ids: Vec<u32> = data
        .iter()
        .map(|r| match r.role {
            SinkRole::Iperf3Data { stream } => stream,
            _ => unreachable!(),
        })
        .collect();
    ids.sort_unstable();
    let want: Vec<u32> = (0..streams as u32)
        .map(|i| if i == 0 { 1 } else { i + 2 })
        .collect();
    assert_eq!(ids, want, "stream ids as iperf3 numbers them");
    let data_bytes: u64 = data.iter().map(|r| r.bytes).sum();
    assert!(
        data_bytes >= received,
        "streams counted {data_bytes}, reported {received}"
    );
    for r in &data {
        assert_eq!(r.verification, Verification::Off);
    }
    eprintln!(
        "iperf3 -P {streams} into the sink: sent {sent}, received {received}: {:.2} Gbit/s",
        bps / 1e9
    );
}

fn sink_pairs_with_iperf3_client() -> Outcome {
    require_tools(&[("iperf3", "iperf3")])?;
    let sink = Sink::start_with(2, SinkConfig::new(None, true));
    check_run(&sink, 1);
    check_run(&sink, 3);

    // Reverse mode is refused with an error the client reports; the sink goes on.
    // (iperf3 3.12 -J exits with status 0 even then; the JSON says it.)
    let (_, json) = iperf3_client(sink.addr.port(), &["-t", "1", "-R"]);
    assert!(json.get("error").is_some(), "-R must fail: {json}");
    let r = sink.next_report();
    assert!(
        matches!(r.role, SinkRole::Iperf3Test { streams: 0, .. })
            && r.error
                .as_ref()
                .is_some_and(|e| e.to_string().contains("reverse")),
        "{r}"
    );
    check_run(&sink, 2);
    sink.stop();
    Ok(())
}

/// iperf3 → the proxy → the sink: zero-copy receive at both hops.
fn iperf3_through_proxy_into_sink() -> Outcome {
    require_tools(&[("iperf3", "iperf3")])?;
    let sink = Sink::start_with(1, SinkConfig::new(None, true));
    let proxy = common::Proxy::start(sink.addr, 1);
    let (ok, json) = iperf3_client(proxy.addr.port(), &["-t", "2", "-P", "2"]);
    assert!(json.get("error").is_none(), "iperf3: {}", json["error"]);
    assert!(ok);
    let received = json["end"]["sum_received"]["bytes"].as_u64().unwrap();
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    let (control, data) = test_reports(&sink, 2);
    assert!(control.error.is_none(), "{control}");
    assert!(matches!(control.role, SinkRole::Iperf3Test { bytes, .. } if bytes == received));
    assert!(received > 0);
    assert_eq!(data.len(), 2);
    eprintln!(
        "iperf3 -P 2 through the proxy into the sink: {received} bytes, {:.2} Gbit/s",
        bps / 1e9
    );
    assert!(proxy.wait_idle(Duration::from_secs(10)));
    proxy.stop_clean();
    sink.stop();
    Ok(())
}

test_kit::main!(
    sink_pairs_with_iperf3_client,
    iperf3_through_proxy_into_sink,
);
