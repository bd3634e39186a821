//! The echo server against the real kernel over loopback.

mod common;

use common::{echo_roundtrip, echo_server, pattern};

/// 100 concurrent connections each echo 4 MiB of random data; every byte is verified.
#[test]
fn hundred_connections_echo_4mib_each() {
    let (addr, signal, server) = echo_server(common::builder().threads(2));
    let clients: Vec<_> = (0..100u64)
        .map(|i| {
            std::thread::spawn(move || {
                let data = pattern(i + 1, 4 << 20);
                let back = echo_roundtrip(addr, data.clone());
                assert_eq!(back.len(), data.len(), "connection {i}: length");
                assert!(back == data, "connection {i}: bytes differ");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    signal.trigger();
    server.join().unwrap();
}
