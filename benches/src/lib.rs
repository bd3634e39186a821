//! Benchmarks: criterion micro-benchmarks and the side-by-side `rxbench` harness (issue 4).
