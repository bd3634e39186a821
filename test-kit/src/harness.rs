//! A test harness that decides "ignored" when the test runs, not when it is compiled.
//!
//! libtest's `#[ignore]` is fixed at compile time, but whether a test can run here is known only
//! at run time: the kernel version (the same binaries run on the host and in the 7.x guest), root,
//! a NIC named by `ZCRX_IFNAME`, a program on `PATH`. A test file sets `harness = false` in its
//! manifest, its tests return [`Outcome`] (or `()`), and [`main!`](crate::main) lists them:
//!
//! ```ignore
//! fn needs_root() -> test_kit::Outcome {
//!     if !rustix::process::geteuid().is_root() {
//!         return Err(test_kit::skip("needs root"));
//!     }
//!     // ... assertions: a panic fails the test, as under libtest.
//!     Ok(())
//! }
//!
//! test_kit::main!(needs_root);
//! ```
//!
//! The output, the summary line (`test result: ok. 3 passed; 0 failed; 2 ignored; ...`) and the
//! command-line flags (filters, `--exact`, `--list`, `--test-threads`, `--nocapture`) are libtest's,
//! through `libtest-mimic`; an ignored test shows its reason: `test x ... ignored, needs root`.
//! `--ignored` and `--include-ignored` do not make a skipped test pass: it asks again and skips.

use std::fmt;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// Why a test did not run on this machine, and what would make it run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(String);

impl Skip {
    /// The reason, as shown after `ignored, ` in the test's line.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A test cannot run here: say why, and name what turns it on (a variable, a kernel, a package).
pub fn skip(reason: impl Into<String>) -> Skip {
    Skip(reason.into())
}

/// What a test returns: `Ok(())` when it ran (its assertions panic on failure), `Err(Skip)` when
/// it could not run here.
pub type Outcome = Result<(), Skip>;

/// A test function's return value, turned into libtest's result. Implemented for `()` (a test
/// that always runs) and [`Outcome`].
pub trait IntoOutcome {
    /// `Ok(())` if the test ran, `Err(skip)` if it did not.
    fn into_outcome(self) -> Outcome;
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Outcome {
        Ok(())
    }
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Outcome {
        self
    }
}

/// One test: `name` as libtest would print it, `test` its body. A panic fails it (libtest-mimic
/// catches it and prints the message), [`Skip`] counts it as ignored with the reason.
pub fn trial<R: IntoOutcome>(name: &str, test: impl FnOnce() -> R + Send + 'static) -> Trial {
    Trial::ignorable_test(name, move || -> Result<Completion, Failed> {
        match test().into_outcome() {
            Ok(()) => Ok(Completion::Completed),
            Err(skip) => Ok(Completion::ignored_with(skip.0)),
        }
    })
}

/// Runs `trials` with the process's command line and exits with libtest's exit code.
pub fn run(trials: Vec<Trial>) -> ! {
    let args = Arguments::from_args();
    libtest_mimic::run(&args, trials).exit()
}

/// The `main` of a `harness = false` test file: each argument is a test function (a path; the
/// test's name is the path as written). `#[ignore = "why"]` before one marks it ignored unless
/// run with `--ignored`, as libtest's attribute does (a measurement, say).
#[macro_export]
macro_rules! main {
    ($($(#[ignore = $why:literal])? $test:path),* $(,)?) => {
        fn main() {
            $crate::harness::run(vec![
                $($crate::harness::trial(stringify!($test), $test)
                    $(.with_ignored_flag({ let _why: &str = $why; true }))?),*
            ])
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_and_outcome_both_count() {
        assert_eq!(().into_outcome(), Ok(()));
        assert_eq!(
            Err::<(), _>(skip("no NIC")).into_outcome(),
            Err(skip("no NIC"))
        );
        assert_eq!(skip("needs root").reason(), "needs root");
    }
}
