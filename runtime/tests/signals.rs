//! Ctrl-C and SIGTERM as the graceful shutdown: real signals sent to this process (or to a child
//! copy of this test binary, where the default action must end it).

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use rustix::process::{getpid, kill_process, Signal};
use zcrx::net::{TcpListener, TcpStream};
use zcrx::Runtime;

/// Signals reach every armed runtime of the process: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Set in a child copy of this binary: which scenario `child` runs.
const CHILD: &str = "ZCRX_SIGNALS_CHILD";

fn raise_soon(sig: Signal, after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        kill_process(getpid(), sig).expect("kill");
    });
}

#[test]
fn sigterm_stops_accepting_and_lets_connections_finish() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = Runtime::builder()
        .shutdown_on_signals(true)
        .shutdown_grace(Duration::from_secs(5))
        .build()
        .unwrap();
    let signal = rt.shutdown_signal();
    let received = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        // A client that is mid-stream when the signal comes, and finishes afterwards.
        let (accepted_tx, accepted_rx) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(&[7u8; 100_000]).unwrap();
            accepted_rx.recv().unwrap();
            kill_process(getpid(), Signal::TERM).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            s.write_all(&[7u8; 100_000]).unwrap();
        });
        let (stream, _) = listener.accept().await?;
        accepted_tx.send(()).unwrap();
        let conn = zcrx::spawn(async move {
            zcrx::shutdown_requested().await;
            // The shutdown was requested, the connection still delivers everything.
            let mut n = 0;
            while let Ok(Some(buf)) = stream.recv().await {
                n += buf.len();
            }
            n
        });
        let next = listener.accept().await;
        assert_eq!(
            next.err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionAborted),
            "after SIGTERM the listener stops accepting"
        );
        client.join().unwrap();
        Ok::<_, io::Error>(conn.await.unwrap())
    });
    assert_eq!(received.unwrap(), 200_000);
    assert!(signal.is_triggered());
    let report = rt.shutdown();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn start_returns_after_ctrl_c() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    raise_soon(Signal::INT, Duration::from_millis(100));
    let accepted = zcrx::start(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let mut accepted = 0;
        loop {
            match listener.accept().await {
                Ok(_) => accepted += 1,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => break,
                Err(e) => return Err(e),
            }
        }
        Ok::<_, io::Error>(accepted)
    });
    assert_eq!(accepted.unwrap(), 0);
}

#[test]
fn start_hands_back_the_futures_error() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let r: Result<(), io::Error> = zcrx::start(async {
        TcpStream::connect("127.0.0.1:1").await?;
        Ok(())
    });
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
}

/// Runs `scenario` in a child copy of this binary and returns how it ended.
fn run_child(scenario: &str) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(CHILD, scenario)
        .status()
        .unwrap()
}

#[test]
fn a_second_ctrl_c_ends_the_process_at_once() {
    let status = run_child("ignores-shutdown");
    assert_eq!(status.signal(), Some(libc_sigint()), "{status:?}");
}

#[test]
fn without_an_armed_runtime_the_signal_keeps_its_default_action() {
    let status = run_child("disarmed");
    assert_eq!(status.signal(), Some(libc_sigterm()), "{status:?}");
}

fn libc_sigint() -> i32 {
    Signal::INT.as_raw()
}

fn libc_sigterm() -> i32 {
    Signal::TERM.as_raw()
}

/// The child's side; a no-op in the parent's own run.
#[test]
fn child() {
    let Ok(scenario) = std::env::var(CHILD) else {
        return;
    };
    match scenario.as_str() {
        // A program that ignores the shutdown: the first Ctrl-C triggers it, the second must
        // end the process by SIGINT.
        "ignores-shutdown" => {
            let _ = zcrx::start(async {
                kill_process(getpid(), Signal::INT).unwrap();
                zcrx::shutdown_requested().await;
                kill_process(getpid(), Signal::INT).unwrap();
                loop {
                    zcrx::time::sleep(Duration::from_millis(10)).await;
                }
                #[allow(unreachable_code)]
                Ok::<(), io::Error>(())
            });
            unreachable!("the second SIGINT must end the process");
        }
        // Armed once, then the runtime is gone: SIGTERM must end the process as by default.
        "disarmed" => {
            let rt = Runtime::builder()
                .shutdown_on_signals(true)
                .build()
                .unwrap();
            drop(rt);
            kill_process(getpid(), Signal::TERM).unwrap();
            std::thread::sleep(Duration::from_secs(10));
            unreachable!("SIGTERM must end the process");
        }
        other => panic!("unknown scenario {other}"),
    }
}
