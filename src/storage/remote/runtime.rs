//! The network runtime: the object store client is async (tokio), the storage seam is not. Every
//! remote call runs as a task on one small process-wide runtime, and the calling thread waits for
//! its result on a channel. That works from any thread, including a blocking-pool thread of
//! another runtime (serve's), where `Runtime::block_on` would panic.
//!
//! The runtime starts on first use, not before: a process that forks (`mount --daemon`) must do
//! so while it has one thread, so it makes no remote call before the fork.

use std::future::Future;
use std::io;
use std::sync::OnceLock;

/// Worker threads of the network runtime: requests are I/O-bound; two threads keep many
/// requests in flight and sign them without taking the cores from the decrypting workers.
const NET_THREADS: usize = 2;

fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(NET_THREADS)
        .thread_name("qeltrix-net")
        .enable_all()
        .build()?;
    // Another thread may have won the race: its runtime is kept, this one dropped.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Installs `ring` as rustls' process-wide crypto provider (once; an embedder that installed
/// one first keeps theirs).
pub(super) fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Runs `future` on the network runtime and waits for its output.
pub(super) fn run<F>(future: F) -> io::Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime()?.spawn(async move {
        let _ = tx.send(future.await);
    });
    // The task dropped its sender without sending: it panicked.
    rx.recv()
        .map_err(|_| io::Error::other("a network task failed unexpectedly"))
}

/// Starts `future` on the network runtime without waiting: its handle is awaited by
/// [`run`]ning a future that joins it.
pub(super) fn spawn<F>(future: F) -> io::Result<tokio::task::JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(runtime()?.spawn(future))
}
