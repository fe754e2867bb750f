//! An ordered worker pool: jobs run in parallel, results come out in submission order, and at
//! most `max_in_flight` jobs exist at once. Pack and unpack both stream through it, so memory is
//! bounded by workers × block size whatever the input length, and I/O on the calling thread
//! overlaps with the crypto on the workers.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

pub struct OrderedPool<T: Send + 'static> {
    pool: Arc<rayon::ThreadPool>,
    tx: Sender<(u64, T)>,
    rx: Receiver<(u64, T)>,
    next_submit: u64,
    next_out: u64,
    ready: BTreeMap<u64, T>,
    max_in_flight: usize,
}

impl<T: Send + 'static> OrderedPool<T> {
    /// A pool of `workers` threads (0: one per core), allowing two jobs per worker in flight.
    pub fn new(workers: usize) -> std::io::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("qeltrix-worker-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        let max_in_flight = pool.current_num_threads() * 2;
        let (tx, rx) = channel();
        Ok(OrderedPool {
            pool: Arc::new(pool),
            tx,
            rx,
            next_submit: 0,
            next_out: 0,
            ready: BTreeMap::new(),
            max_in_flight,
        })
    }

    pub fn workers(&self) -> usize {
        self.pool.current_num_threads()
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
        self.pool.spawn(move || {
            // The receiver lives as long as the pool's owner; if the owner is gone the result is unwanted.
            let _ = tx.send((seq, job()));
        });
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
