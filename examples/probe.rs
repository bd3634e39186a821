//! Probe (in progress).
fn main() {}
