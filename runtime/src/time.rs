//! Timers: `sleep`, `timeout`, `interval`. Deadlines are kept by the driver; the loop waits in
//! `io_uring_enter` no longer than the next one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::context;

/// Completes at a deadline. See [`sleep`].
///
/// # Panics
/// Polled outside a runtime before its deadline: the deadline is kept by the runtime's driver,
/// and a future cannot return an error in place of `()`.
#[derive(Debug)]
pub struct Sleep {
    at: Instant,
    id: Option<u64>,
}

/// Waits for `d`. Making the [`Sleep`] works anywhere; polling it needs a runtime (see its
/// panics).
pub fn sleep(d: Duration) -> Sleep {
    sleep_until(Instant::now() + d)
}

/// Waits until `at`.
pub fn sleep_until(at: Instant) -> Sleep {
    Sleep { at, id: None }
}

impl Sleep {
    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.at
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            if let Some(id) = self.id.take() {
                context::with_driver(|d| d.cancel_timer(id));
            }
            return Poll::Ready(());
        }
        let at = self.at;
        match self.id {
            Some(id) => context::with_driver(|d| d.update_timer(id, cx.waker())),
            None => {
                self.id = Some(context::with_driver(|d| {
                    d.add_timer(at, cx.waker().clone())
                }))
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            if let Some(h) = context::try_current() {
                if let Ok(mut d) = h.driver.try_borrow_mut() {
                    d.cancel_timer(id);
                }
            }
        }
    }
}

/// A [`timeout`] elapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(_: Elapsed) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline elapsed")
    }
}

/// Runs `fut` for at most `d`; if it has not finished, drops it (cancelling its I/O) and
/// returns `Err(Elapsed)`.
///
/// # Panics
/// Polled outside a runtime while `fut` is pending, like [`Sleep`].
pub async fn timeout<F: Future>(d: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let mut sleep = std::pin::pin!(sleep(d));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// Ticks every `period`. See [`interval`].
#[derive(Debug)]
pub struct Interval {
    next: Instant,
    period: Duration,
}

/// Ticks at once, then every `period` (missed ticks are skipped, not bunched).
///
/// # Panics
/// If `period` is zero. [`Interval::tick`] panics when polled outside a runtime, like
/// [`Sleep`].
pub fn interval(period: Duration) -> Interval {
    assert!(!period.is_zero(), "interval period must be non-zero");
    Interval {
        next: Instant::now(),
        period,
    }
}

impl Interval {
    /// Waits for the next tick and returns its scheduled time.
    pub async fn tick(&mut self) -> Instant {
        let at = self.next;
        sleep_until(at).await;
        let now = Instant::now();
        self.next = at + self.period;
        if self.next <= now {
            // Fell behind: skip the missed ticks.
            let behind = (now - self.next).as_nanos() / self.period.as_nanos() + 1;
            self.next += self.period * behind as u32;
        }
        at
    }
}
