//! rxbench (in progress).
fn main() {}
