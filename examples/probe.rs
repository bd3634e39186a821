//! Prints what this machine can do for zero-copy receive: kernel, io_uring opcodes and features,
//! whether zcrx works on each interface queue (and why not), and which backend would be used.
//!
//! ```text
//! cargo run --example probe                          # every interface, queue 0
//! cargo run --example probe -- --ifname eth1 --queue 0 --queue 3
//! ```
//!
//! Trying zcrx needs CAP_NET_ADMIN (run as root); on a capable NIC it briefly binds each probed
//! queue, so on a production machine name the queues you mean to use.

use clap::Parser;
use examples::cli;
use zcrx_ifq::probe::{probe_with, ProbeOptions};

/// Probe zero-copy receive support.
#[derive(Debug, Parser)]
#[command(about = "Probe io_uring zero-copy receive (zcrx) and buffer-ring support")]
struct Args {
    /// Interface to try zcrx on (repeatable; default: every interface in /sys/class/net).
    #[arg(long = "ifname", value_name = "IF")]
    ifnames: Vec<String>,
    /// Receive queue to try on each interface (repeatable; default: 0).
    #[arg(long = "queue", value_name = "Q")]
    queues: Vec<u32>,
}

fn main() {
    let args = Args::parse();
    cli::init_tracing();
    let options = ProbeOptions {
        interfaces: (!args.ifnames.is_empty()).then_some(args.ifnames),
        queues: if args.queues.is_empty() {
            vec![0]
        } else {
            args.queues
        },
    };
    println!("{}", probe_with(&options));
}
