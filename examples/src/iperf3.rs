//! Just enough of the iperf3 server protocol (3.x, TCP, client sending) for `iperf3 -c` to drive
//! the sink.
//!
//! Every connection starts with the client's 37-byte cookie. The first connection with a new
//! cookie is a test's control connection: the server asks for the parameters (`PARAM_EXCHANGE`,
//! then a 4-byte big-endian length and JSON), asks for the data streams (`CREATE_STREAMS`);
//! each data stream connects and sends the same cookie; then `TEST_START`, `TEST_RUNNING`; the
//! client sends until it says `TEST_END`; the server says `EXCHANGE_RESULTS`, reads the
//! client's results, sends its own (per stream: id, bytes, start and end time), says
//! `DISPLAY_RESULTS`, and the client ends with `IPERF_DONE`. Stream ids are 1, 3, 4, 5, ...
//! in the order the streams arrive, as iperf3 numbers them.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zcrx::net::TcpStream;

use crate::proxy::context;
use crate::*;

const COOKIE: usize = 37;
const TEST_START: u8 = 1;
const TEST_RUNNING: u8 = 2;
const TEST_END: u8 = 4;
const PARAM_EXCHANGE: u8 = 9;
const CREATE_STREAMS: u8 = 10;
const CLIENT_TERMINATE: u8 = 12;
const EXCHANGE_RESULTS: u8 = 13;
const DISPLAY_RESULTS: u8 = 14;
const ACCESS_DENIED: u8 = (-1i8) as u8;
/// How long each step before the test may take.
const STEP: Duration = Duration::from_secs(10);

/// One test: its data streams' byte counters, in arrival order.
#[derive(Debug, Default)]
pub(super) struct Test {
    expected: usize,
    streams: Mutex<Vec<Arc<AtomicU64>>>,
}

/// Tests in their stream-creation phase or running, by cookie.
#[derive(Debug, Default)]
pub(super) struct Tests(Mutex<HashMap<[u8; COOKIE], Arc<Test>>>);

impl Tests {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; COOKIE], Arc<Test>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new data stream for the test with this cookie, if one is waiting for streams:
    /// its id and counter.
    fn join(&self, cookie: &[u8; COOKIE]) -> Option<(u32, Arc<AtomicU64>)> {
        let test = self.lock().get(cookie)?.clone();
        let mut streams = test.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.len() >= test.expected {
            return None;
        }
        let counter = Arc::new(AtomicU64::new(0));
        streams.push(counter.clone());
        let n = streams.len() as u32;
        Some((if n == 1 { 1 } else { n + 1 }, counter))
    }
}

/// Removes a test from the registry when its control connection ends, however it ends.
struct Registered<'a> {
    tests: &'a Tests,
    cookie: [u8; COOKIE],
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.tests.lock().remove(&self.cookie);
    }
}

/// Reads exact amounts from a stream, keeping what arrived beyond them.
struct Reader<'a> {
    stream: &'a TcpStream,
    pending: Vec<u8>,
}

impl Reader<'_> {
    async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.pending.len() < n {
            match self.stream.recv().await? {
                Some(buf) => self.pending.extend_from_slice(&buf),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the iperf3 client closed the connection",
                    ))
                }
            }
        }
        let rest = self.pending.split_off(n);
        Ok(std::mem::replace(&mut self.pending, rest))
    }

    async fn read_step(&mut self, n: usize, what: &str) -> io::Result<Vec<u8>> {
        match zcrx::time::timeout(STEP, self.read_exact(n)).await {
            Ok(r) => r.map_err(|e| context(e, format!("iperf3: reading {what}"))),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("iperf3: no {what} within {STEP:?}"),
            )),
        }
    }

    async fn read_json(&mut self, what: &str) -> io::Result<serde_json::Value> {
        let len = self.read_step(4, what).await?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        if len > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("iperf3: {what} of {len} bytes: not an iperf3 client?"),
            ));
        }
        let json = self.read_step(len, what).await?;
        serde_json::from_slice(&json).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("iperf3: {what} are not JSON ({e}): not an iperf3 client?"),
            )
        })
    }
}

/// `"key": true` (or a non-zero number) in iperf3's JSON.
fn json_flag(json: &serde_json::Value, key: &str) -> bool {
    match json.get(key) {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        _ => false,
    }
}

/// Serves one connection of an iperf3 client: a data stream or a test's control connection.
pub(super) async fn connection(stream: &TcpStream, tests: &Tests, live: &AtomicU64) -> SinkReport {
    let start = Instant::now();
    let peer = stream.peer_addr().ok();
    let mut rd = Reader {
        stream,
        pending: Vec::new(),
    };
    let cookie: [u8; COOKIE] = match rd.read_step(COOKIE, "the cookie").await {
        Ok(c) => c.try_into().expect("cookie size"),
        Err(e) => {
            let mut r = SinkReport::new(peer, SinkRole::Plain);
            r.error = Some(e);
            r.elapsed = start.elapsed();
            return r;
        }
    };
    if let Some((id, counter)) = tests.join(&cookie) {
        // A data stream: count everything after the cookie.
        let mut r = SinkReport::new(peer, SinkRole::Iperf3Data { stream: id });
        let first = std::mem::take(&mut rd.pending).len() as u64;
        counter.fetch_add(first, Ordering::Relaxed);
        live.fetch_add(first, Ordering::Relaxed);
        r.bytes = first;
        r.error = loop {
            match stream.recv().await {
                Ok(Some(buf)) => {
                    let n = buf.len() as u64;
                    r.bytes += n;
                    counter.fetch_add(n, Ordering::Relaxed);
                    live.fetch_add(n, Ordering::Relaxed);
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        r.elapsed = start.elapsed();
        return r;
    }
    let mut r = SinkReport::new(
        peer,
        SinkRole::Iperf3Test {
            streams: 0,
            bytes: 0,
            duration: Duration::ZERO,
        },
    );
    if let Err(e) = control(stream, &mut rd, cookie, tests, &mut r).await {
        r.error = Some(e);
    }
    r.elapsed = start.elapsed();
    r
}

async fn send_state(stream: &TcpStream, state: u8) -> io::Result<()> {
    stream
        .send_all(&[state])
        .await
        .map_err(|e| context(e, "iperf3: sending a state to the client".into()))
}

async fn control(
    stream: &TcpStream,
    rd: &mut Reader<'_>,
    cookie: [u8; COOKIE],
    tests: &Tests,
    report: &mut SinkReport,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    send_state(stream, PARAM_EXCHANGE).await?;
    let params = rd.read_json("the test parameters").await?;
    for unsupported in ["reverse", "bidirectional", "udp", "sctp"] {
        if json_flag(&params, unsupported) {
            let _ = send_state(stream, ACCESS_DENIED).await;
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "iperf3: the client asked for {unsupported}; the sink only receives TCP sent by the client"
                ),
            ));
        }
    }
    let parallel = params
        .get("parallel")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 128) as usize;
    let test = Arc::new(Test {
        expected: parallel,
        streams: Mutex::default(),
    });
    tests.lock().insert(cookie, test.clone());
    let _registered = Registered { tests, cookie };
    send_state(stream, CREATE_STREAMS).await?;
    let deadline = Instant::now() + STEP;
    while test.streams.lock().unwrap_or_else(|e| e.into_inner()).len() < parallel {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "iperf3: the {parallel} data stream(s) did not all connect within {STEP:?}"
                ),
            ));
        }
        zcrx::time::sleep(Duration::from_millis(2)).await;
    }
    send_state(stream, TEST_START).await?;
    send_state(stream, TEST_RUNNING).await?;
    let started = Instant::now();
    // The client sends nothing on the control connection until the end of the test.
    loop {
        let state = rd
            .read_exact(1)
            .await
            .map_err(|e| context(e, "iperf3: waiting for the end of the test".into()))?[0];
        match state {
            TEST_END => break,
            CLIENT_TERMINATE => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "iperf3: the client terminated the test",
                ))
            }
            _ => {}
        }
    }
    let duration = started.elapsed();
    let counts: Vec<u64> = test
        .streams
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    report.role = SinkRole::Iperf3Test {
        streams: counts.len() as u32,
        bytes: counts.iter().sum(),
        duration,
    };
    send_state(stream, EXCHANGE_RESULTS).await?;
    let _client_results = rd.read_json("the client's results").await?;
    let secs = duration.as_secs_f64();
    let streams: Vec<serde_json::Value> = counts
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            serde_json::json!({
                "id": if i == 0 { 1 } else { i + 2 },
                "bytes": bytes,
                "retransmits": -1,
                "jitter": 0,
                "errors": 0,
                "omitted_errors": 0,
                "packets": 0,
                "omitted_packets": 0,
                "start_time": 0,
                "end_time": secs,
            })
        })
        .collect();
    let results = serde_json::json!({
        "cpu_util_total": 0,
        "cpu_util_user": 0,
        "cpu_util_system": 0,
        "sender_has_retransmits": -1,
        "streams": streams,
    })
    .to_string();
    let mut msg = (results.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(results.as_bytes());
    stream
        .send_all(&msg)
        .await
        .map_err(|e| context(e, "iperf3: sending the results".into()))?;
    send_state(stream, DISPLAY_RESULTS).await?;
    // IPERF_DONE, or the client just closes.
    let _ = rd.read_step(1, "IPERF_DONE").await;
    Ok(())
}
