//! Examples live beside this file; run them with `cargo run --example NAME`.
//!
//! This library holds the parts of the examples that are worth testing on their own and that
//! the integration tests in `tests/` run in-process:
//!
//! - [`proxy_connection`] and [`serve_proxy`]: the zero-copy TCP proxy behind `--example proxy`.
//! - [`sink_connection`] and [`serve_sink`]: the counting, optionally verifying receive loop
//!   behind `--example sink`, which can also act as an iperf3 server ([`SinkConfig::iperf3`]).
//! - [`Pattern`] and [`PatternVerifier`]: the deterministic byte pattern the sink can verify.
//! - [`cli`]: argument parsers shared by the examples.

pub mod cli;
mod iperf3;
mod proxy;
mod sink;

pub use proxy::*;
pub use sink::*;
// One generator for the sink, its tests and the project's other tests.
pub use test_kit::pattern::{Mismatch, Pattern, PatternVerifier};
