//! The proxy carries iperf3 (control and data connections) both ways, over loopback.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;
use test_kit::Outcome;

use common::{free_port, require_tools, wait_listening, ChildGuard, Proxy};

/// Runs one iperf3 test through a proxy in front of a one-off iperf3 server; returns the bytes
/// sent and received and the receiver's bits per second.
fn iperf3_through_proxy(reverse: bool) -> (u64, u64, f64) {
    let port = free_port();
    let mut server = ChildGuard::spawn(
        Command::new("iperf3")
            .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    assert!(
        wait_listening(port, Duration::from_secs(10)),
        "iperf3 server did not listen on {port}"
    );
    let proxy = Proxy::start(format!("127.0.0.1:{port}").parse().unwrap(), 2);
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", "127.0.0.1", "-p", &proxy.addr.port().to_string()])
        .args(["-t", "3", "-J", "--connect-timeout", "5000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if reverse {
        cmd.arg("-R");
    }
    let mut client = ChildGuard::spawn(&mut cmd);
    let out = client
        .wait_output(Duration::from_secs(60))
        .expect("iperf3 client finished within 60 s");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The one-off server ends by itself once the test is over.
    let server_out = server
        .wait_output(Duration::from_secs(15))
        .expect("iperf3 -s -1 exited after the test");
    let server_log = format!(
        "server ({}): {} {}",
        server_out.status,
        String::from_utf8_lossy(&server_out.stdout),
        String::from_utf8_lossy(&server_out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("iperf3 -J output is not JSON ({e}): {stdout} {stderr}; {server_log}")
    });
    assert!(
        json.get("error").is_none(),
        "iperf3 reported an error: {}; {server_log}",
        json["error"]
    );
    assert!(out.status.success(), "iperf3 client failed: {}", out.status);
    assert!(
        server_out.status.success(),
        "iperf3 server failed: {server_log}"
    );
    let end = &json["end"];
    let sent = end["sum_sent"]["bytes"]
        .as_u64()
        .expect("end.sum_sent.bytes");
    let received = end["sum_received"]["bytes"]
        .as_u64()
        .expect("end.sum_received.bytes");
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("end.sum_received.bits_per_second");
    assert!(
        sent > 0 && received > 0,
        "no bytes: sent {sent}, received {received}"
    );
    // The receiver counts what it read before the end of the test; at most what was in the
    // socket buffers along the way is missing.
    assert!(
        received <= sent && received >= sent / 2,
        "received {received} of {sent} bytes"
    );
    assert!(
        proxy.wait_idle(Duration::from_secs(10)),
        "proxy connections still open: {}",
        proxy.counters.active()
    );
    let c = &proxy.counters;
    let (up, down) = (
        c.to_upstream.load(std::sync::atomic::Ordering::Acquire),
        c.to_client.load(std::sync::atomic::Ordering::Acquire),
    );
    // iperf3 closes a data connection with unread bytes at the end of a test, which resets
    // it: the proxy may count that one data connection as ended by an error, nothing more.
    let errors = c.errors.load(std::sync::atomic::Ordering::Acquire);
    assert!(
        errors <= 1,
        "{errors} proxied connections ended with an error"
    );
    assert_eq!(
        c.connect_failures
            .load(std::sync::atomic::Ordering::Acquire),
        0
    );
    // The data went the way the test says, through the proxy.
    let data_way = if reverse { down } else { up };
    assert!(
        data_way >= received,
        "the proxy forwarded {data_way} bytes the data's way, iperf3 received {received}"
    );
    proxy.stop_clean();
    (sent, received, bps)
}

fn tools() -> Outcome {
    require_tools(&[("iperf3", "iperf3")])
}

/// Client → server data through the proxy.
fn proxy_carries_iperf3() -> Outcome {
    tools()?;
    let (sent, received, bps) = iperf3_through_proxy(false);
    eprintln!(
        "iperf3 through the proxy: sent {sent} bytes, received {received}: {:.2} Gbit/s",
        bps / 1e9
    );
    Ok(())
}

/// Server → client data (`-R`) through the proxy.
fn proxy_carries_iperf3_reverse() -> Outcome {
    tools()?;
    let (sent, received, bps) = iperf3_through_proxy(true);
    eprintln!(
        "iperf3 -R through the proxy: sent {sent} bytes, received {received}: {:.2} Gbit/s",
        bps / 1e9
    );
    Ok(())
}

test_kit::main!(proxy_carries_iperf3, proxy_carries_iperf3_reverse,);
