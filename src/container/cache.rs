//! The block cache: decrypted blocks shared by every reader in the process (mount, serve), bounded
//! in bytes, least recently used out first. Concurrent readers of one block decrypt it once: the
//! first one loads it, the others wait for that result. Readahead decrypts the next blocks of a
//! sequential reader on a worker pool, so a streaming reader finds them ready.
//!
//! ```no_run
//! use qeltrix::cache::{BlockCache, CachedContainer};
//! use std::sync::Arc;
//! # fn demo(container: qeltrix::Container) -> qeltrix::Result<()> {
//! let cache = Arc::new(BlockCache::new(256 << 20, 2));
//! let file = CachedContainer::new(Arc::new(container), Arc::clone(&cache));
//! let mut buf = [0u8; 4096];
//! file.read_at(123_456, &mut buf)?;   // decrypts the block once, later reads hit the cache
//! file.readahead(file.block_of(123_456).unwrap() + 1, 4);
//! # Ok(()) }
//! ```

use crate::container::reader::Container;
use crate::storage::{Object, ReadAt};
use crate::{Error, Result};
use lru::LruCache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A decrypted block, shared without copying.
pub type Block = Arc<Vec<u8>>;

/// Cache key: which opened container (a process-unique handle id, never reused, so a replaced
/// container can never be served another's blocks) and which block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The process-unique handle of the opened container ([`CachedContainer::handle`]).
    pub handle: u64,
    /// The block's index in the container.
    pub block: u64,
}

/// A load in progress: `None` while loading, then `Some(the block, or None if the load failed)`.
#[derive(Default)]
struct Slot {
    state: Mutex<Option<Option<Block>>>,
    done: Condvar,
}

struct Inner {
    blocks: LruCache<BlockKey, Block>,
    bytes: usize,
    loading: HashMap<BlockKey, Arc<Slot>>,
}

/// The process-wide cache of decrypted blocks.
pub struct BlockCache {
    inner: Mutex<Inner>,
    capacity: usize,
    pool: rayon::ThreadPool,
}

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

impl BlockCache {
    /// A cache holding at most `capacity_bytes` of plaintext, with `workers` readahead threads
    /// (0: one per core).
    pub fn new(capacity_bytes: usize, workers: usize) -> Self {
        BlockCache {
            inner: Mutex::new(Inner {
                blocks: LruCache::unbounded(),
                bytes: 0,
                loading: HashMap::new(),
            }),
            capacity: capacity_bytes,
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .thread_name(|i| format!("qeltrix-readahead-{i}"))
                .panic_handler(crate::container::pipeline::pool_panic_handler)
                .build()
                .expect("starting readahead threads"),
        }
    }

    /// Bytes of plaintext held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The most bytes of plaintext the cache holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the LRU half-updated in a way that matters
        // more than losing the cache, so recover the guard rather than propagate the poison.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The block for `key` if it is cached (not if it is still loading): never waits.
    pub fn get(&self, key: BlockKey) -> Option<Block> {
        self.lock().blocks.get(&key).cloned()
    }

    /// True if the block is cached or being loaded.
    pub fn is_present(&self, key: BlockKey) -> bool {
        let inner = self.lock();
        inner.blocks.contains(&key) || inner.loading.contains_key(&key)
    }

    /// The block for `key`: from the cache, from a load already in progress, or by running `load`
    /// (once, however many threads ask at the same time). Failed loads are not cached. A `load`
    /// that panics fails this request with [`Error::Internal`] naming the block; threads waiting
    /// for it are woken and load the block themselves, and later requests try again.
    pub fn get_or_load(&self, key: BlockKey, load: impl FnOnce() -> Result<Vec<u8>>) -> Result<Block> {
        let load = || crate::error::catch_panic(Some(key.block), load);
        let slot = {
            let mut inner = self.lock();
            if let Some(block) = inner.blocks.get(&key) {
                return Ok(Arc::clone(block));
            }
            match inner.loading.get(&key) {
                Some(slot) => Some(Arc::clone(slot)),
                None => {
                    inner.loading.insert(key, Arc::new(Slot::default()));
                    None
                }
            }
        };
        if let Some(slot) = slot {
            // Another thread is decrypting this block: wait for it. If it failed, load ourselves
            // so that this caller gets the real error.
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            while state.is_none() {
                state = slot.done.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if let Some(Some(block)) = state.as_ref() {
                return Ok(Arc::clone(block));
            }
            drop(state);
            return load().map(Arc::new);
        }

        self.complete(key, load())
    }

    /// Claims the loading of each key that is neither cached nor being loaded, and returns those:
    /// readers asking for them meanwhile wait. Each claimed key must be completed, which the
    /// returned guards do (with a failure, if dropped unused).
    fn claim(self: &Arc<Self>, keys: impl IntoIterator<Item = BlockKey>) -> Vec<Claim> {
        let mut inner = self.lock();
        keys.into_iter()
            .filter(|k| {
                let free = !inner.blocks.contains(k) && !inner.loading.contains_key(k);
                if free {
                    inner.loading.insert(*k, Arc::new(Slot::default()));
                }
                free
            })
            .map(|key| Claim {
                cache: Arc::clone(self),
                key,
                done: false,
            })
            .collect()
    }

    /// Ends a load: caches the block if it loaded, and wakes whoever waits for it. Failed loads
    /// are not cached (a waiter then loads the block itself, to get the real error).
    fn complete(&self, key: BlockKey, result: Result<Vec<u8>>) -> Result<Block> {
        let result = result.map(Arc::new);
        let slot = {
            let mut inner = self.lock();
            let slot = inner
                .loading
                .remove(&key)
                .expect("the loader owns the loading entry");
            if let Ok(block) = &result {
                inner.bytes += block.len();
                inner.blocks.put(key, Arc::clone(block));
                while inner.bytes > self.capacity {
                    match inner.blocks.pop_lru() {
                        Some((_, old)) => inner.bytes -= old.len(),
                        None => break,
                    }
                }
            }
            slot
        };
        *slot.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(result.as_ref().ok().cloned());
        slot.done.notify_all();
        result
    }

    /// Drops every cached block of one container handle (when its file was replaced or removed).
    pub fn forget(&self, handle: u64) {
        let mut inner = self.lock();
        let stale: Vec<BlockKey> = inner
            .blocks
            .iter()
            .filter(|(k, _)| k.handle == handle)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(b) = inner.blocks.pop(&k) {
                inner.bytes -= b.len();
            }
        }
    }
}

/// A claimed load that must be completed: completes with a failure if dropped (so that a waiter
/// never waits forever, even if the loader panics).
struct Claim {
    cache: Arc<BlockCache>,
    key: BlockKey,
    done: bool,
}

impl Claim {
    fn complete(mut self, result: Result<Vec<u8>>) {
        self.done = true;
        let _ = self.cache.complete(self.key, result);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.cache.complete(
                self.key,
                Err(Error::InvalidArgument("block load abandoned".into())),
            );
        }
    }
}

/// Most stored bytes read with one `pread` when loading several blocks.
const MAX_COALESCED: u64 = 8 << 20;

/// Loads blocks `first..end` of `container` that are neither cached nor loading: consecutive
/// ones are read with one `pread` (one disk round trip instead of one per block), then decrypted
/// in parallel on the cache's pool, the first on the calling thread.
fn load_range<S: ReadAt + 'static>(
    container: &Arc<Container<S>>,
    cache: &Arc<BlockCache>,
    handle: u64,
    first: u64,
    end: u64,
) {
    let end = end.min(container.block_count());
    let claims = cache.claim((first..end).map(|block| BlockKey { handle, block }));
    let mut claims = claims.into_iter().peekable();
    while let Some(head) = claims.next() {
        // A run of consecutive claimed blocks, bounded in bytes.
        let mut run = vec![head];
        let start_offset = container.entry(run[0].key.block).map_or(0, |e| e.offset);
        while let Some(next) = claims.peek() {
            let prev = run.last().expect("run is not empty").key.block;
            let fits = container
                .entry(next.key.block)
                .is_some_and(|e| e.offset + e.len - start_offset <= MAX_COALESCED);
            if next.key.block != prev + 1 || !fits {
                break;
            }
            run.push(claims.next().expect("peeked"));
        }
        let (lo, hi) = (run[0].key.block, run.last().expect("run is not empty").key.block);
        let Ok(stored) = container.read_stored(lo, hi) else {
            // Dropping the claims fails them; readers then load each block themselves and get
            // the error for the block they need.
            continue;
        };
        let stored = Arc::new(stored);
        let mut run = run.into_iter();
        let inline = run.next().expect("run is not empty");
        for claim in run {
            let (container, stored) = (Arc::clone(container), Arc::clone(&stored));
            cache
                .pool
                .spawn(move || open_claimed(&container, claim, lo, &stored));
        }
        open_claimed(container, inline, lo, &stored);
    }
}

fn open_claimed<S: ReadAt>(container: &Container<S>, claim: Claim, first: u64, stored: &[u8]) {
    let index = claim.key.block;
    let result = crate::error::catch_panic(Some(index), || {
        injected_panic(claim.key);
        match container.stored_range(first, index) {
            Some(range) => container.open_stored(index, stored[range].to_vec(), false),
            None => Err(Error::InvalidArgument(format!(
                "block {index} is not in the range read"
            ))),
        }
    });
    claim.complete(result);
}

/// Blocks whose decryption panics, for the tests of panic handling (the cache's own unit tests:
/// nothing else can reach it). Handles are unique in the process, so tests cannot collide.
#[cfg(test)]
static PANIC_ON: Mutex<Vec<BlockKey>> = Mutex::new(Vec::new());

/// Panics if a test asked decrypting `key` to panic; nothing outside the cache's unit tests.
fn injected_panic(key: BlockKey) {
    #[cfg(test)]
    if PANIC_ON.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
        panic!("injected panic decrypting block {}", key.block);
    }
    let _ = key;
}

/// An open container reading through the shared cache: by default one opened through the
/// storage seam ([`Container::open_in`]), as the vault layer opens them.
pub struct CachedContainer<S: ReadAt + 'static = Object> {
    handle: u64,
    container: Arc<Container<S>>,
    cache: Arc<BlockCache>,
}

impl<S: ReadAt + 'static> CachedContainer<S> {
    /// Reads `container` through `cache`, under a new process-unique handle.
    pub fn new(container: Arc<Container<S>>, cache: Arc<BlockCache>) -> Self {
        CachedContainer {
            handle: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed),
            container,
            cache,
        }
    }

    /// The container read through the cache.
    pub fn container(&self) -> &Arc<Container<S>> {
        &self.container
    }

    /// The process-unique handle that keys this container's blocks in the cache.
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// Plaintext length in bytes.
    pub fn len(&self) -> u64 {
        self.container.len()
    }

    /// True when the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.container.is_empty()
    }

    /// The index of the block holding plaintext byte `offset`, or `None` past the end.
    pub fn block_of(&self, offset: u64) -> Option<u64> {
        self.container.block_of(offset)
    }

    /// One decrypted block, through the cache.
    pub fn block(&self, index: u64) -> Result<Block> {
        let key = BlockKey {
            handle: self.handle,
            block: index,
        };
        self.cache.get_or_load(key, || {
            injected_panic(key);
            self.container.read_block(index, false)
        })
    }

    /// One decrypted block if it is already cached; never decrypts or waits.
    pub fn cached_block(&self, index: u64) -> Option<Block> {
        self.cache.get(BlockKey {
            handle: self.handle,
            block: index,
        })
    }

    /// Reads plaintext at `offset` into `buf` through the cache; short only at the end of file.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        for slice in self.container.slices(offset, buf.len() as u64) {
            let block = self.block(slice.index)?;
            let part = crate::container::reader::block_part(&block, &slice)?;
            let at = slice.in_output as usize;
            buf[at..at + part.len()].copy_from_slice(part);
            done = at + part.len();
        }
        Ok(done)
    }

    /// Starts decrypting blocks `first..first+count` in the background, skipping those cached or
    /// already loading; consecutive ones are read together. Errors are left for the reader that
    /// asks for the block.
    pub fn readahead(&self, first: u64, count: u64) {
        let end = first.saturating_add(count).min(self.container.block_count());
        let any_missing = (first..end).any(|block| {
            !self.cache.is_present(BlockKey {
                handle: self.handle,
                block,
            })
        });
        if !any_missing {
            return;
        }
        let (container, cache, handle) = (Arc::clone(&self.container), Arc::clone(&self.cache), self.handle);
        self.cache
            .pool
            .spawn(move || load_range(&container, &cache, handle, first, end));
    }

    /// Loads blocks `first..=last` now, on this thread and the cache's pool, reading consecutive
    /// missing blocks together. Errors are left for [`CachedContainer::block`] / `read_at`.
    pub fn load(&self, first: u64, last: u64) {
        load_range(
            &self.container,
            &self.cache,
            self.handle,
            first,
            last.saturating_add(1),
        );
    }
}

impl<S: ReadAt + 'static> Drop for CachedContainer<S> {
    fn drop(&mut self) {
        self.cache.forget(self.handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn key(block: u64) -> BlockKey {
        BlockKey { handle: 1, block }
    }

    #[test]
    fn concurrent_requests_for_one_block_load_it_once() {
        let cache = Arc::new(BlockCache::new(1 << 20, 1));
        let (loads, asked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads, asked) = (Arc::clone(&cache), Arc::clone(&loads), Arc::clone(&asked));
                std::thread::spawn(move || {
                    asked.fetch_add(1, Ordering::SeqCst);
                    cache
                        .get_or_load(key(7), || {
                            loads.fetch_add(1, Ordering::SeqCst);
                            // Keep the load open until every thread has asked (with a safety deadline).
                            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                            while asked.load(Ordering::SeqCst) < 8 && std::time::Instant::now() < deadline {
                                std::thread::yield_now();
                            }
                            Ok(vec![7; 100])
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(*t.join().unwrap(), vec![7; 100]);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn stays_within_capacity_and_evicts_least_recently_used() {
        let cache = BlockCache::new(300, 1);
        for b in 0..3 {
            cache.get_or_load(key(b), || Ok(vec![b as u8; 100])).unwrap();
        }
        cache.get_or_load(key(0), || panic!("block 0 is cached")).unwrap();
        cache.get_or_load(key(3), || Ok(vec![3; 100])).unwrap();
        assert_eq!(cache.bytes(), 300);
        assert!(cache.is_present(key(0)), "recently used block kept");
        assert!(!cache.is_present(key(1)), "least recently used block evicted");
    }

    /// A container of six raw 4 KiB blocks of `(i * step % 251)` bytes in a new folder: the
    /// folder (keep it alive), the container's path, its plaintext and its key.
    fn six_blocks(step: u32, key_byte: u8) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>, crate::Key) {
        use crate::container::writer::PackOptions;
        use crate::core::crypto::KeyFileKey;
        let dir = tempfile::tempdir().unwrap();
        let plain: Vec<u8> = (0..6 * 4096u32).map(|i| (i * step % 251) as u8).collect();
        let (input, path) = (dir.path().join("in"), dir.path().join("c.qltx"));
        std::fs::write(&input, &plain).unwrap();
        let key = crate::Key::KeyFile(KeyFileKey::from_bytes([key_byte; 32]));
        let opts = PackOptions {
            block_size: 4096,
            compress: crate::CompressMode::Never,
            ..PackOptions::default()
        };
        let to = [crate::Recipient::try_from(&key).unwrap()];
        crate::pack(&input, &path, &to, &opts, false).unwrap();
        (dir, path, plain, key)
    }

    #[test]
    fn a_range_loads_together_and_a_bad_block_fails_alone() {
        let (_dir, path, plain, key) = six_blocks(7, 3);
        let mut bytes = std::fs::read(&path).unwrap();
        let bad = Container::open(&path, &key).unwrap().entry(3).unwrap().offset as usize;
        bytes[bad + crate::core::format::BLOCK_HEAD_LEN + 9] ^= 1;
        std::fs::write(&path, &bytes).unwrap();

        let cache = Arc::new(BlockCache::new(1 << 20, 2));
        let c = CachedContainer::new(
            Arc::new(Container::open(&path, &key).unwrap()),
            Arc::clone(&cache),
        );
        c.load(0, 5);
        for i in [0u64, 1, 2, 4, 5] {
            let at = i as usize * 4096;
            assert!(
                cache.is_present(BlockKey {
                    handle: c.handle(),
                    block: i
                }),
                "block {i} loaded"
            );
            assert_eq!(*c.block(i).unwrap(), plain[at..at + 4096], "block {i}");
        }
        match c.block(3).unwrap_err() {
            Error::Corrupt { block, .. } => assert_eq!(block, Some(3)),
            e => panic!("{e}"),
        }
        assert_eq!(cache.bytes(), 5 * 4096, "the bad block is not cached");
        let mut buf = vec![0u8; 4096 * 2];
        assert!(
            c.read_at(2 * 4096 + 100, &mut buf).is_err(),
            "a read across it fails"
        );
        assert_eq!(c.read_at(4 * 4096, &mut buf).unwrap(), 2 * 4096);
        assert_eq!(buf, plain[4 * 4096..]);
    }

    /// A panicking decryption fails the one block, on the calling thread and on the readahead
    /// pool alike: before rayon had a panic handler, the pool job aborted the whole process, and a
    /// loader panicking on the calling thread left the block "loading" forever, so the next
    /// request for it waited forever.
    #[test]
    fn a_panicking_block_load_fails_that_block_and_the_next_request_succeeds() {
        let (_dir, path, plain, key) = six_blocks(13, 4);
        let cache = Arc::new(BlockCache::new(1 << 20, 2));
        let c = CachedContainer::new(
            Arc::new(Container::open(&path, &key).unwrap()),
            Arc::clone(&cache),
        );
        let bad = BlockKey {
            handle: c.handle(),
            block: 3,
        };
        PANIC_ON.lock().unwrap().push(bad);

        // Blocks 1..=5 are decrypted on the pool: block 3's job panics there.
        c.load(0, 5);
        for i in [0u64, 1, 2, 4, 5] {
            let at = i as usize * 4096;
            assert_eq!(*c.block(i).unwrap(), plain[at..at + 4096], "block {i}");
        }
        // On the calling thread (which waits for the pool's load of it if still running, then
        // loads it itself): an error naming the block, not a panic.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.block(3)));
        match caught.expect("the panic is caught inside the cache").unwrap_err() {
            Error::Internal { block, what } => {
                assert_eq!(block, Some(3));
                assert!(what.contains("injected panic"), "{what}");
            }
            e => panic!("{e}"),
        }
        assert!(!cache.is_present(bad), "a panicked load leaves nothing loading");

        // The next request for the same block succeeds.
        PANIC_ON.lock().unwrap().retain(|k| *k != bad);
        assert_eq!(*c.block(3).unwrap(), plain[3 * 4096..4 * 4096]);
        let mut buf = vec![0u8; plain.len()];
        assert_eq!(c.read_at(0, &mut buf).unwrap(), plain.len());
        assert_eq!(buf, plain);
    }

    /// A thread waiting for a load that panics is woken, and the load is not left claimed.
    #[test]
    fn waiters_of_a_panicking_loader_are_woken() {
        let cache = Arc::new(BlockCache::new(1 << 20, 1));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let loader = {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                cache.get_or_load(key(9), move || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    panic!("loader bug");
                })
            })
        };
        started_rx.recv().unwrap();
        assert!(cache.is_present(key(9)), "loading");
        let waiter = {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || cache.get_or_load(key(9), || Ok(vec![9; 10])))
        };
        go_tx.send(()).unwrap();
        let failed = loader.join().expect("the loader thread does not panic");
        assert!(
            matches!(failed, Err(Error::Internal { block: Some(9), .. })),
            "{failed:?}"
        );
        // Whether the waiter queued before or after the panic, it gets the block.
        assert_eq!(*waiter.join().unwrap().unwrap(), vec![9; 10]);
        assert_eq!(
            *cache.get_or_load(key(9), || Ok(vec![9; 10])).unwrap(),
            vec![9; 10]
        );
    }

    #[test]
    fn failed_loads_are_not_cached_and_forget_drops_a_handle() {
        let cache = BlockCache::new(1000, 1);
        assert!(cache.get_or_load(key(1), || Err(Error::corrupt("bad"))).is_err());
        assert!(!cache.is_present(key(1)));
        cache.get_or_load(key(1), || Ok(vec![1; 10])).unwrap();
        cache.forget(1);
        assert!(!cache.is_present(key(1)));
        assert_eq!(cache.bytes(), 0);
    }
}
