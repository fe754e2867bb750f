//! An ordered worker pool: jobs run in parallel, results come out in submission order, and at
//! most `max_in_flight` jobs exist at once. Pack and unpack both stream through it, so memory is
//! bounded by workers × block size whatever the input length, and I/O on the calling thread
//! overlaps with the crypto on the workers.

use crate::Error;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

/// The `panic_handler` of every rayon pool the project builds. Without one, rayon aborts the
/// whole process when a job panics; jobs catch their own panics and turn them into an error for
/// their one request, so this is the last resort: say so and keep the pool (and the process) alive.
pub fn pool_panic_handler(payload: Box<dyn std::any::Any + Send>) {
    tracing::error!(
        "a worker job panicked (the pool goes on): {}",
        crate::error::panic_message(payload.as_ref())
    );
}

/// What a job of an [`OrderedPool`] or [`ordered_channel`] produces, and what stands in for it if
/// the job panics: the panic fails that one job (for callers submitting one job per block,
/// `job` is the block index), and the pool, its other jobs and the process go on.
pub trait JobOutput: Send + 'static {
    /// The output standing in for job `job` when it panicked with `payload`.
    fn panicked(job: u64, payload: &(dyn std::any::Any + Send)) -> Self;
}

impl<T: Send + 'static> JobOutput for crate::Result<T> {
    fn panicked(job: u64, payload: &(dyn std::any::Any + Send)) -> Self {
        Err(Error::panicked(Some(job), payload))
    }
}

/// Runs job number `seq`, turning a panic into its [`JobOutput::panicked`] value.
fn run_job<T: JobOutput>(seq: u64, job: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|payload| T::panicked(seq, payload.as_ref()))
}

/// A pool of worker threads that several [`OrderedPool`]s can share. Cloning shares it.
#[derive(Clone)]
pub struct WorkerPool(Arc<rayon::ThreadPool>);

impl WorkerPool {
    /// Starts `workers` threads (0: one per core).
    pub fn new(workers: usize) -> std::io::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("qeltrix-worker-{i}"))
            .panic_handler(pool_panic_handler)
            .build()
            .map_err(std::io::Error::other)?;
        Ok(WorkerPool(Arc::new(pool)))
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.0.current_num_threads()
    }
}

/// Jobs run in parallel on a [`WorkerPool`], their outputs returned in submission order, with
/// a bounded number in flight.
pub struct OrderedPool<T: JobOutput> {
    pool: WorkerPool,
    tx: Sender<(u64, T)>,
    rx: Receiver<(u64, T)>,
    next_submit: u64,
    next_out: u64,
    ready: BTreeMap<u64, T>,
    max_in_flight: usize,
}

impl<T: JobOutput> OrderedPool<T> {
    /// A pool of `workers` threads (0: one per core), allowing two jobs per worker in flight.
    pub fn new(workers: usize) -> std::io::Result<Self> {
        Ok(Self::on(&WorkerPool::new(workers)?))
    }

    /// An ordered queue of jobs running on a shared pool, with two jobs per worker in flight.
    pub fn on(pool: &WorkerPool) -> Self {
        let max_in_flight = pool.workers() * 2;
        let (tx, rx) = channel();
        OrderedPool {
            pool: pool.clone(),
            tx,
            rx,
            next_submit: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            max_in_flight,
        }
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.pool.workers()
    }

    fn in_flight(&self) -> usize {
        (self.next_submit - self.next_out) as usize
    }

    /// True when a new job would exceed the in-flight bound: take a result first.
    pub fn is_full(&self) -> bool {
        self.in_flight() >= self.max_in_flight
    }

    /// Queues a job. The caller keeps the bound by taking results while [`Self::is_full`].
    pub fn submit(&mut self, job: impl FnOnce() -> T + Send + 'static) {
        let seq = self.next_submit;
        self.next_submit += 1;
        let tx = self.tx.clone();
        self.pool.0.spawn(move || {
            // The receiver lives as long as the pool's owner; if the owner is gone the result is unwanted.
            let _ = tx.send((seq, run_job(seq, job)));
        });
    }

    /// The next result in order if it is ready now, without waiting.
    pub fn try_next_result(&mut self) -> Option<T> {
        while let Ok((seq, value)) = self.rx.try_recv() {
            self.ready.insert(seq, value);
        }
        let value = self.ready.remove(&self.next_out)?;
        self.next_out += 1;
        Some(value)
    }

    /// The next result in order, waiting for it if needed; `None` when nothing is in flight.
    pub fn next_result(&mut self) -> Option<T> {
        if self.in_flight() == 0 {
            return None;
        }
        while !self.ready.contains_key(&self.next_out) {
            let (seq, value) = self.rx.recv().expect("the pool holds a sender");
            self.ready.insert(seq, value);
        }
        self.next_out += 1;
        self.ready.remove(&(self.next_out - 1))
    }
}

/// The job end of an [`ordered_channel`].
pub struct OrderedSender<T> {
    pool: WorkerPool,
    queue: SyncSender<Receiver<T>>,
    next_seq: AtomicU64,
}

/// The result end of an [`ordered_channel`].
pub struct OrderedReceiver<T> {
    queue: Receiver<Receiver<T>>,
}

/// An ordered pipeline split across two threads: one submits jobs, the other takes their results
/// in submission order, each as soon as it is ready. At most two jobs per worker wait between the
/// two ends; `submit` blocks beyond that, which is how a slow consumer slows the producer.
pub fn ordered_channel<T: JobOutput>(pool: &WorkerPool) -> (OrderedSender<T>, OrderedReceiver<T>) {
    let (queue_tx, queue_rx) = sync_channel(pool.workers() * 2);
    (
        OrderedSender {
            pool: pool.clone(),
            queue: queue_tx,
            next_seq: AtomicU64::new(0),
        },
        OrderedReceiver { queue: queue_rx },
    )
}

impl<T: JobOutput> OrderedSender<T> {
    /// Queues a job. `false` when the receiver is gone (the consumer gave up): stop producing.
    pub fn submit(&self, job: impl FnOnce() -> T + Send + 'static) -> bool {
        let (tx, rx) = sync_channel(1);
        if self.queue.send(rx).is_err() {
            return false;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.pool.0.spawn(move || {
            // The receiver may have given up meanwhile; then the result is unwanted.
            let _ = tx.send(run_job(seq, job));
        });
        true
    }
}

impl<T> OrderedReceiver<T> {
    /// The next result in order, waiting for it; `None` once the sender is dropped and every
    /// result has been taken.
    pub fn recv(&self) -> Option<T> {
        self.queue.recv().ok()?.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    fn job(i: u64) -> Result<u64> {
        if i == 2 {
            panic!("bad block {i}");
        }
        Ok(i * 10)
    }

    /// A panicking job used to abort the process (rayon's default with no panic handler), and
    /// its result never came, so the consumer would have waited forever.
    #[test]
    fn a_panicking_job_fails_alone_in_an_ordered_pool() {
        let mut pool = OrderedPool::new(2).unwrap();
        let mut results = Vec::new();
        for i in 0..5u64 {
            while pool.is_full() {
                results.push(pool.next_result().unwrap());
            }
            pool.submit(move || job(i));
        }
        while let Some(r) = pool.next_result() {
            results.push(r);
        }
        check(results);
    }

    #[test]
    fn a_panicking_job_fails_alone_in_an_ordered_channel() {
        let (jobs, results) = ordered_channel(&WorkerPool::new(2).unwrap());
        let producer = std::thread::spawn(move || {
            for i in 0..5u64 {
                assert!(jobs.submit(move || job(i)));
            }
        });
        let mut got = Vec::new();
        while let Some(r) = results.recv() {
            got.push(r);
        }
        producer.join().unwrap();
        check(got);
    }

    fn check(results: Vec<Result<u64>>) {
        assert_eq!(results.len(), 5);
        for (i, r) in results.into_iter().enumerate() {
            match (i, r) {
                (2, Err(crate::Error::Internal { block, what })) => {
                    assert_eq!(block, Some(2));
                    assert!(what.contains("bad block 2"), "{what}");
                }
                (i, Ok(v)) => assert_eq!(v, i as u64 * 10),
                (i, r) => panic!("job {i}: {r:?}"),
            }
        }
    }
}
