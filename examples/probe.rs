//! Prints what this machine can do for zero-copy receive: kernel, io_uring opcodes and features,
//! whether zcrx works on each interface queue (and why not), and which backend would be used.
//!
//! ```text
//! cargo run --example probe                          # every interface, queue 0
//! cargo run --example probe -- --ifname eth1 --queue 0 --queue 3
//! cargo run --example probe -- eth1:3          # also: what zcrx on eth1 queue 3 still needs
//! cargo run --example probe -- --apply eth1:3  # and set what netlink can (restored on exit)
//! ```
//!
//! Trying zcrx needs CAP_NET_ADMIN (run as root); on a capable NIC it briefly binds each probed
//! queue, so on a production machine name the queues you mean to use.

use clap::Parser;
use examples::cli;
use zcrx_ifq::nic;
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
    /// Check this queue step by step: what zcrx needs there, and the command for each step.
    #[arg(value_name = "IFNAME:QUEUE")]
    target: Option<String>,
    /// Apply the ring settings the check finds missing, then restore them on exit (Enter).
    #[arg(long, requires = "target")]
    apply: bool,
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
    let Some(target) = args.target else {
        println!("{}", probe_with(&options));
        return;
    };
    let Some((ifname, queue)) = target
        .rsplit_once(':')
        .and_then(|(i, q)| Some((i.to_owned(), q.parse::<u32>().ok()?)))
    else {
        eprintln!("'{target}' is not IFNAME:QUEUE (e.g. eth1:3)");
        std::process::exit(2);
    };
    if let Err(e) = check_queue(&ifname, queue, args.apply) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn check_queue(ifname: &str, queue: u32, apply: bool) -> Result<(), nic::NicError> {
    let state = nic::read(ifname)?;
    print_state(&state);
    let check = nic::check(&state, queue)?;
    println!("{check}");
    let irq = nic::QueueIrq::of(&state, queue)?;
    match (irq.irq, irq.cpus.as_slice()) {
        (Some(n), []) => println!("interrupts: IRQ {n}, its CPUs unreadable"),
        (Some(n), cpus) => println!(
            "interrupts: IRQ {n} on CPU {}: serve queue {queue} from a thread pinned there",
            cpus.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        (None, _) => println!("interrupts: the driver does not say which IRQ serves queue {queue}"),
    }
    if apply {
        let applied = nic::apply(ifname, queue)?;
        println!("applied: {:?}", applied.changes());
        println!("{}", nic::check(&nic::read(ifname)?, queue)?);
        println!("press Enter to restore the old settings and exit");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        applied.restore()?;
        println!("restored");
    }
    Ok(())
}

fn print_state(s: &nic::NicState) {
    let show = |r: &dyn std::fmt::Debug| format!("{r:?}");
    println!(
        "{} (ifindex {}, driver {})",
        s.ifname,
        s.ifindex,
        s.driver.as_deref().unwrap_or("none: virtual")
    );
    println!("  rings:    {}", show(&s.rings));
    println!("  channels: {}", show(&s.channels));
    println!("  rss:      {}", show(&s.rss));
    println!("  ntuple:   {}", show(&s.ntuple));
    match &s.rx_queues {
        nic::Read::Value(qs) => {
            for q in qs {
                println!(
                    "  rx queue {}: napi {:?}, irq {:?}, napi thread {:?}, io_uring {}, dmabuf {:?}",
                    q.id, q.napi_id, q.irq, q.napi_pid, q.io_uring, q.dmabuf
                );
            }
        }
        other => println!("  rx queues: {other:?}"),
    }
}
