//! Handles dropped on another thread: `cross_thread`.

use super::*;

/// Waits for a message by spinning (a blocking receive would add a futex wake-up per batch), and
/// yields now and then so the peer gets a core when the machine has fewer free cores than two.
pub(crate) fn spin_recv<T>(rx: &Receiver<T>) -> Option<T> {
    let mut spins = 0u32;
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Empty) => {
                spins += 1;
                if spins % 1024 == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            Err(TryRecvError::Disconnected) => return None,
        }
    }
}

/// The owner side of the cross-thread pipeline: fills a batch of handles, hands it to the
/// dropper (or drops it itself), and flushes before each batch. Two batch vectors circulate, so
/// at most two batches are out of the ring (`CHUNKS >= 2 * batch + 1` keeps the model fed).
pub(crate) struct CrossOwner {
    pub(crate) sim: BufRingSim,
    pub(crate) batch: usize,
    pub(crate) spare: Vec<Vec<RxBuf>>,
    pub(crate) to_dropper: Option<mpsc::Sender<Vec<RxBuf>>>,
    pub(crate) back: Option<Receiver<Vec<RxBuf>>>,
}

impl CrossOwner {
    pub(crate) fn take_vec(&mut self) -> Vec<RxBuf> {
        match self.spare.pop() {
            Some(v) => v,
            None => spin_recv(self.back.as_ref().expect("a dropper when no spare"))
                .expect("dropper alive"),
        }
    }

    pub(crate) fn one_batch(&mut self, n: usize) {
        let mut v = self.take_vec();
        self.sim.ring.flush();
        for _ in 0..n {
            let bid = self.sim.kernel.take(&self.sim.ring);
            let flags = recv_flags(bid, false);
            let c = self
                .sim
                .ring
                .complete(OWNER, CHUNK as i32, flags)
                .expect("complete");
            match c.event {
                RecvEvent::Data(buf) => {
                    touch(&buf);
                    v.push(buf);
                }
                _ => unreachable!("data"),
            }
        }
        match &self.to_dropper {
            Some(tx) => tx.send(v).expect("dropper alive"),
            None => {
                v.clear();
                self.spare.push(v);
            }
        }
    }

    /// Runs `chunks` chunks through the pipeline and waits until every handle has dropped and
    /// been flushed.
    pub(crate) fn run(&mut self, chunks: u64) -> Duration {
        let start = Instant::now();
        let mut left = chunks;
        while left > 0 {
            let n = left.min(self.batch as u64);
            self.one_batch(n as usize);
            left -= n;
        }
        while self.spare.len() < 2 {
            let v = spin_recv(self.back.as_ref().expect("dropper")).expect("dropper alive");
            self.spare.push(v);
        }
        self.sim.ring.flush();
        start.elapsed()
    }
}

pub(crate) fn cross_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_thread");
    g.throughput(Throughput::Elements(1));
    for batch in [32usize, 256] {
        // Same batching, dropped on the owner thread: the baseline.
        let mut owner = CrossOwner {
            sim: BufRingSim::new(16, false, 1),
            batch,
            spare: vec![Vec::with_capacity(batch), Vec::with_capacity(batch)],
            to_dropper: None,
            back: None,
        };
        g.bench_function(BenchmarkId::new("same_thread", batch), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(batch as u64);
                    owner.one_batch(n as usize);
                    left -= n;
                }
                owner.sim.ring.flush();
                start.elapsed()
            })
        });

        // Dropped on another thread, without and with a return waker installed (the runtime
        // installs one: the first drop after each flush then clones its `Arc`).
        for waker in [false, true] {
            std::thread::scope(|s| {
                let (to_dropper, from_owner) = mpsc::channel::<Vec<RxBuf>>();
                let (to_owner, back) = mpsc::channel::<Vec<RxBuf>>();
                s.spawn(move || {
                    while let Some(mut v) = spin_recv(&from_owner) {
                        v.clear(); // the drops under test
                        if to_owner.send(v).is_err() {
                            break;
                        }
                    }
                });
                let mut owner = CrossOwner {
                    sim: BufRingSim::new(16, false, 1),
                    batch,
                    spare: vec![Vec::with_capacity(batch), Vec::with_capacity(batch)],
                    to_dropper: Some(to_dropper),
                    back: Some(back),
                };
                let name = if waker {
                    assert!(owner.sim.ring.set_return_waker(|| {}));
                    "other_thread_waker"
                } else {
                    "other_thread"
                };
                g.bench_function(BenchmarkId::new(name, batch), |b| {
                    b.iter_custom(|iters| owner.run(iters))
                });
                let snap = owner.sim.ring.snapshot();
                assert_eq!(snap.counts.kernel, CHUNKS, "every chunk came back");
                // Dropping the owner closes the channel; the dropper exits.
            });
        }
    }
    g.finish();
}
