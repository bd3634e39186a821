//! Test tooling shared by the workspace's integration tests, benches and examples.
//!
//! Not published: it exists so that each model, generator and protocol the tests need is written
//! once.
//!
//! - [`harness`]: a libtest-compatible `main` for test files whose tests can only run on some
//!   machines (a 7.1+ kernel, root, a NIC, a tool). A test that cannot run returns [`Skip`] and is
//!   counted as *ignored*, with its reason, in libtest's summary, instead of passing silently.
//! - [`pattern`]: the byte streams the tests send and verify.
//! - [`netns`]: network namespaces and the kernel guest's virtio_net hub devices.
//! - `model` (feature `ifq`): the kernel's side of the two receive backends, for simulated
//!   queues.

pub mod harness;
#[cfg(feature = "ifq")]
pub mod model;
pub mod netns;
pub mod pattern;

pub use harness::{skip, Outcome, Skip};
pub use pattern::{Pattern, PatternVerifier};
