//! An ordered worker pool: jobs run in parallel, results come out in submission order, and at
//! most `max_in_flight` jobs exist at once. Pack and unpack both stream through it, so memory is
//! bounded by workers × block size whatever the input length, and I/O on the calling thread
//! overlaps with the crypto on the workers.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

/// A pool of worker threads that several [`OrderedPool`]s can share. Cloning shares it.
#[derive(Clone)]
pub struct WorkerPool(Arc<rayon::ThreadPool>);

impl WorkerPool {
    /// Starts `workers` threads (0: one per core).
    pub fn new(workers: usize) -> std::io::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("qeltrix-worker-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(WorkerPool(Arc::new(pool)))
    }

    pub fn workers(&self) -> usize {
        self.0.current_num_threads()
    }
}

pub struct OrderedPool<T: Send + 'static> {
    pool: WorkerPool,
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
            let _ = tx.send((seq, job()));
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
}

/// The result end of an [`ordered_channel`].
pub struct OrderedReceiver<T> {
    queue: Receiver<Receiver<T>>,
}

/// An ordered pipeline split across two threads: one submits jobs, the other takes their results
/// in submission order, each as soon as it is ready. At most two jobs per worker wait between the
/// two ends; `submit` blocks beyond that, which is how a slow consumer slows the producer.
pub fn ordered_channel<T: Send + 'static>(pool: &WorkerPool) -> (OrderedSender<T>, OrderedReceiver<T>) {
    let (queue_tx, queue_rx) = sync_channel(pool.workers() * 2);
    (
        OrderedSender {
            pool: pool.clone(),
            queue: queue_tx,
        },
        OrderedReceiver { queue: queue_rx },
    )
}

impl<T: Send + 'static> OrderedSender<T> {
    /// Queues a job. `false` when the receiver is gone (the consumer gave up): stop producing.
    pub fn submit(&self, job: impl FnOnce() -> T + Send + 'static) -> bool {
        let (tx, rx) = sync_channel(1);
        if self.queue.send(rx).is_err() {
            return false;
        }
        self.pool.0.spawn(move || {
            // The receiver may have given up meanwhile; then the result is unwanted.
            let _ = tx.send(job());
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
