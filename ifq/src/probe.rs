//! Probe (in progress).
