//! The `http` example binary (hyper) driven by real clients from Debian's packages, on this
//! runtime (`--on zcrx`, on the backend `RUNTIME_TEST_RX` names) and on tokio (`--on tokio`):
//! curl byte-exact on large bodies both ways, wrk for a few seconds, and a graceful stop on
//! SIGTERM. The example is built first if it is missing or older than its sources (`cargo test
//! --test http` alone does not build the examples), or taken from `HTTP_EXAMPLE` if set; without
//! curl or wrk a test is reported as ignored, with the package to install (`.ci/deps` installs
//! them). In the Linux 7.x guest, on zcrx without a device:
//!
//! ```sh
//! cargo build -p examples --example http --profile test
//! cargo run -p guest -- test -p examples --test http --with curl --with wrk \
//!     --with target/debug/examples/http --env HTTP_EXAMPLE=/usr/bin/http --env RUNTIME_TEST_RX=zcrx-nodev
//! ```
//!
//! `benchmark_zcrx_vs_tokio` (ignored) measures requests per second of the two side by side:
//!
//! ```sh
//! cargo test --release -p examples --test http -- --ignored --nocapture benchmark
//! ```

#[path = "../common/mod.rs"]
mod common;

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use test_kit::Outcome;

use common::{free_port, require_tools, run_bounded, rx, rx_flags, ChildGuard};
use examples::Pattern;
mod benchmark;
mod cases;
mod clients;
mod server;

use benchmark::*;
use cases::*;
use clients::*;
use server::*;

test_kit::main!(
    curl_bodies_on_zcrx,
    curl_bodies_on_tokio,
    wrk_load_on_zcrx,
    wrk_load_on_tokio,
    #[ignore = "benchmark: cargo test --release -p examples --test http -- --ignored --nocapture benchmark"]
    benchmark_zcrx_vs_tokio,
);
