//! Containers opened once for all the requests of a front end, and what listings learn about
//! them without the key.
//!
//! Opening a container costs a key derivation (PBKDF2 for a passphrase: a large fraction of a
//! second by design), so a [`Registry`] opens each one once and keeps it, together with its
//! handle in the shared block cache. A failure to open (wrong key, damaged file) is kept too, so
//! a client cannot make a server run the KDF again and again for a container the key does not
//! open; an I/O error is not, since it may pass. Both are keyed by the container's path and
//! [`Version`]: a container replaced in the storage is opened afresh on the next request, and the
//! old one's cached blocks are dropped once nothing uses it any more.
//!
//! The key-free [`Summary`] of each container (its plaintext size, for listings and `stat`) is
//! kept the same way, so an unchanged container's footer is read once, however often it is
//! listed.

use super::Vault;
use crate::container::cache::{BlockCache, CachedContainer};
use crate::container::reader::{Container, ContainerInfo};
use crate::core::crypto::Key;
use crate::storage::{Entry, Storage, Version};
use crate::Error;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many opened containers a registry keeps (each holds an open object and its index).
pub const MAX_OPEN: usize = 1024;

/// How many containers' summaries a vault keeps (a few dozen bytes each).
pub const MAX_INFOS: usize = 1 << 16;

/// Why a container did not open, or its structure could not be read.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Failure {
    /// The error, naming the container.
    pub error: Arc<Error>,
    /// True when this call met the error; false when it was remembered from an earlier one (a
    /// front end logs a failure once).
    pub fresh: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl Failure {
    fn fresh(error: Error) -> Self {
        Failure {
            error: Arc::new(error),
            fresh: true,
        }
    }
}

/// Whether a failure is kept until the container changes: a wrong key or damaged bytes stay
/// wrong; an I/O error (too many open files, a flaky disk) may pass.
fn kept(e: &Error) -> bool {
    !matches!(e.root(), Error::Io { .. })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing is left half-updated by a panic under these locks: recover rather than propagate.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a listing shows about a container, read without its key (see [`ContainerInfo`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Bytes of plaintext.
    pub plaintext_size: u64,
    /// Bytes of plaintext per block.
    pub block_size: u32,
    /// Blocks in the container.
    pub block_count: u64,
}

impl Summary {
    /// The summary of a container's unauthenticated `info`.
    pub fn of(info: &ContainerInfo) -> Self {
        Summary {
            plaintext_size: info.original_size(),
            block_size: info.header.block_size,
            block_count: info.block_count(),
        }
    }
}

type InfoOutcome = Result<Summary, Arc<Error>>;

/// The summaries of a vault's containers, by path and version.
pub(crate) struct InfoCache {
    entries: Mutex<LruCache<PathBuf, (Version, InfoOutcome)>>,
}

impl InfoCache {
    pub(crate) fn new(capacity: usize) -> Self {
        InfoCache {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("non-zero"),
            )),
        }
    }

    pub(crate) fn contains(&self, path: &Path, version: &Version) -> bool {
        lock(&self.entries).peek(path).is_some_and(|(v, _)| v == version)
    }

    pub(crate) fn get(
        &self,
        storage: &dyn Storage,
        path: &Path,
        version: &Version,
    ) -> Result<Summary, Failure> {
        if let Some((v, outcome)) = lock(&self.entries).get(path) {
            if v == version {
                return outcome.clone().map_err(|error| Failure { error, fresh: false });
            }
        }
        // Read outside the lock: a slow disk must not hold up the listing of other folders.
        let read = storage
            .open(path)
            .map_err(|e| Error::io("opening", e))
            .and_then(|object| ContainerInfo::read(&object))
            .map(|info| Summary::of(&info))
            .map_err(|e| e.in_file(storage.display(path)));
        match read {
            Ok(summary) => {
                lock(&self.entries).put(path.to_path_buf(), (version.clone(), Ok(summary)));
                Ok(summary)
            }
            Err(e) if !kept(&e) => Err(Failure::fresh(e)),
            Err(e) => {
                let failure = Failure::fresh(e);
                lock(&self.entries).put(
                    path.to_path_buf(),
                    (version.clone(), Err(Arc::clone(&failure.error))),
                );
                Err(failure)
            }
        }
    }
}

/// A container just opened by a [`Registry`], handed to its `build` function.
pub struct Opened {
    /// The container, reading through the shared block cache.
    pub cached: CachedContainer,
    /// Its path in the vault's storage.
    pub path: PathBuf,
    /// How the storage showed it when it was opened (size, times, version).
    pub entry: Entry,
    /// How its path is shown to a person (for log lines).
    pub display: String,
}

type Outcome<T> = Result<Arc<T>, Arc<Error>>;
type Slot<T> = Arc<Mutex<Option<(Version, Outcome<T>)>>>;

/// The containers of a vault opened with one key, each once: see the [module](self) docs. `T` is
/// what the front end keeps per opened container, made by its `build` function from an
/// [`Opened`] (the mount keeps the [`CachedContainer`]; `serve` adds its HTTP validators).
pub struct Registry<T> {
    vault: Vault,
    key: Key,
    cache: Arc<BlockCache>,
    build: Box<dyn Fn(Opened) -> T + Send + Sync>,
    slots: Mutex<LruCache<PathBuf, Slot<T>>>,
}

impl<T: Send + Sync + 'static> Registry<T> {
    pub(crate) fn new(
        vault: Vault,
        key: Key,
        cache: Arc<BlockCache>,
        build: Box<dyn Fn(Opened) -> T + Send + Sync>,
    ) -> Self {
        Registry {
            vault,
            key,
            cache,
            build,
            slots: Mutex::new(LruCache::new(NonZeroUsize::new(MAX_OPEN).expect("non-zero"))),
        }
    }

    /// The vault whose containers are opened.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The block cache every opened container reads through.
    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    /// The container at `path`, opened. Blocking: may open it and derive its key. Concurrent
    /// calls for one container wait for a single open. A failure kept from an earlier call (the
    /// container unchanged since) comes back without any attempt, with `fresh` false.
    pub fn get(&self, path: &Path) -> Result<Arc<T>, Failure> {
        self.get_inner(path, None)
    }

    /// The container at `path` as it was at `version` (from a listing): a container replaced
    /// since is not found, rather than opened in place of the one listed (the mount shows each
    /// version as its own inode, with the old one's size and pages).
    pub fn get_version(&self, path: &Path, version: &Version) -> Result<Arc<T>, Failure> {
        self.get_inner(path, Some(version))
    }

    /// The container at `path` as it was at `version`, if it is open already; never opens one
    /// nor waits for one being opened (for answers that must not block, such as a `stat`).
    pub fn peek_version(&self, path: &Path, version: &Version) -> Option<Arc<T>> {
        let slot = Arc::clone(lock(&self.slots).peek(path)?);
        let slot = slot.try_lock().ok()?;
        match slot.as_ref() {
            Some((v, Ok(opened))) if v == version => Some(Arc::clone(opened)),
            _ => None,
        }
    }

    fn get_inner(&self, path: &Path, expected: Option<&Version>) -> Result<Arc<T>, Failure> {
        let slot = self.slot(path);
        let mut slot = lock(&slot);
        if let (Some(expected), Some((version, outcome))) = (expected, slot.as_ref()) {
            if version == expected {
                return outcome.clone().map_err(|error| Failure { error, fresh: false });
            }
        }
        let not_found =
            |e: std::io::Error| Failure::fresh(Error::io("opening", e).in_file(self.vault.display(path)));
        let entry = match self.vault.stat(path) {
            Ok(entry) => entry,
            Err(e) => {
                // Gone (or unreadable): nothing of the old container is kept for it.
                *slot = None;
                return Err(not_found(e));
            }
        };
        if expected.is_some_and(|v| *v != entry.version) {
            return Err(not_found(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "replaced since it was listed",
            )));
        }
        if let Some((version, outcome)) = slot.as_ref() {
            if *version == entry.version {
                return outcome.clone().map_err(|error| Failure { error, fresh: false });
            }
        }
        let version = entry.version.clone();
        match self.open(path, entry) {
            Ok(opened) => {
                *slot = Some((version, Ok(Arc::clone(&opened))));
                Ok(opened)
            }
            Err(e) if !kept(&e) => Err(Failure::fresh(e)),
            Err(e) => {
                let failure = Failure::fresh(e);
                *slot = Some((version, Err(Arc::clone(&failure.error))));
                Err(failure)
            }
        }
    }

    /// Opens the container at `path` now and keeps it, returning the library's error (for a
    /// startup check: a wrong key is reported before a server listens).
    pub fn preload(&self, path: &Path) -> crate::Result<Arc<T>> {
        let entry = self
            .vault
            .stat(path)
            .map_err(|e| Error::io("opening", e).in_file(self.vault.display(path)))?;
        let version = entry.version.clone();
        let opened = self.open(path, entry)?;
        *lock(&self.slot(path)) = Some((version, Ok(Arc::clone(&opened))));
        Ok(opened)
    }

    /// How many containers the registry holds now (opened, or kept as failed).
    pub fn open_count(&self) -> usize {
        lock(&self.slots).len()
    }

    fn slot(&self, path: &Path) -> Slot<T> {
        let mut slots = lock(&self.slots);
        Arc::clone(slots.get_or_insert(path.to_path_buf(), Slot::default))
    }

    fn open(&self, path: &Path, entry: Entry) -> crate::Result<Arc<T>> {
        let container = Container::open_in(&**self.vault.storage(), path, &self.key)?;
        let opened = Opened {
            cached: CachedContainer::new(Arc::new(container), Arc::clone(&self.cache)),
            path: path.to_path_buf(),
            entry,
            display: self.vault.display(path),
        };
        Ok(Arc::new((self.build)(opened)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyFileKey;
    use crate::storage::{LocalStorage, Object, ObjectWriter, WriteOptions};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A local storage that counts the objects it opens.
    #[derive(Debug)]
    struct Counting {
        inner: LocalStorage,
        opens: AtomicUsize,
    }

    impl Storage for Counting {
        fn open(&self, path: &Path) -> std::io::Result<Object> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            self.inner.open(path)
        }
        fn stat(&self, path: &Path) -> std::io::Result<Entry> {
            self.inner.stat(path)
        }
        fn list(&self, path: &Path) -> std::io::Result<Vec<Entry>> {
            self.inner.list(path)
        }
        fn create(&self, path: &Path, options: WriteOptions) -> crate::Result<Box<dyn ObjectWriter>> {
            self.inner.create(path, options)
        }
        fn display(&self, path: &Path) -> String {
            self.inner.display(path)
        }
    }

    fn key(byte: u8) -> Key {
        Key::KeyFile(KeyFileKey::from_bytes([byte; 32]))
    }

    /// A vault folder with `a.bin.qltx` (10 000 bytes in 3 blocks, key 1) and `theirs.qltx` (key 2), seen
    /// through a counting storage.
    fn fixture() -> (tempfile::TempDir, Vault, Arc<Counting>) {
        let dir = tempfile::tempdir().unwrap();
        pack(dir.path(), "a.bin", &[7u8; 10_000], &key(1));
        pack(dir.path(), "theirs", &[8u8; 100], &key(2));
        let storage = Arc::new(Counting {
            inner: LocalStorage::new(dir.path()).unwrap(),
            opens: AtomicUsize::new(0),
        });
        let vault = Vault::new(Arc::clone(&storage) as Arc<dyn Storage>);
        (dir, vault, storage)
    }

    fn pack(dir: &Path, name: &str, bytes: &[u8], key: &Key) {
        let input = dir.join(format!("{name}.plain"));
        std::fs::write(&input, bytes).unwrap();
        let out = dir.join(super::super::naming::container_name(name));
        let opts = crate::PackOptions {
            block_size: 4096,
            ..crate::PackOptions::default()
        };
        crate::pack(
            &input,
            &out,
            &[crate::Recipient::try_from(key).unwrap()],
            &opts,
            true,
        )
        .unwrap();
        std::fs::remove_file(input).unwrap();
    }

    fn registry(vault: &Vault) -> Registry<CachedContainer> {
        vault.registry(key(1), Arc::new(BlockCache::new(1 << 20, 1)), |o| o.cached)
    }

    #[test]
    fn a_container_is_opened_once_and_reopened_when_replaced() {
        let (dir, vault, storage) = fixture();
        let reg = registry(&vault);
        let path = Path::new("a.bin.qltx");
        let first = reg.get(path).unwrap();
        assert_eq!(first.len(), 10_000);
        let mut buf = [0u8; 10];
        first.read_at(1500, &mut buf).unwrap();
        assert_eq!(buf, [7; 10]);
        let second = reg.get(path).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "the same opened container");
        assert_eq!(storage.opens.load(Ordering::SeqCst), 1, "opened once");
        assert_eq!(reg.open_count(), 1);

        // Replaced: a new version, opened afresh; the old one's blocks go with its last user.
        let cached_before = reg.cache().bytes();
        assert!(cached_before > 0);
        pack(dir.path(), "a.bin", &[9u8; 5000], &key(1));
        let third = reg.get(path).unwrap();
        assert!(!Arc::ptr_eq(&first, &third));
        assert_eq!(third.len(), 5000);
        assert_eq!(storage.opens.load(Ordering::SeqCst), 2);
        drop((first, second));
        assert_eq!(
            reg.cache().bytes(),
            0,
            "the replaced container's blocks are dropped"
        );

        // Asked for the version a listing saw: while the registry holds it, that one (without
        // looking at the storage); once the newer one replaced it, not found.
        let listed = vault.stat(path).unwrap().version;
        pack(dir.path(), "a.bin", &[3u8; 100], &key(1));
        let kept = reg.get_version(path, &listed).unwrap();
        assert!(Arc::ptr_eq(&kept, &third), "the listed version, still open");
        assert_eq!(reg.get(path).unwrap().len(), 100, "the current one");
        let e = reg.get_version(path, &listed).err().unwrap();
        assert!(
            matches!(e.error.root(), Error::Io { source: cause, .. } if cause.kind() == std::io::ErrorKind::NotFound),
            "{e}"
        );
        assert_eq!(kept.len(), 5000, "what was opened keeps reading what it opened");

        std::fs::remove_file(dir.path().join(path)).unwrap();
        assert!(reg.get(path).is_err(), "gone");
    }

    #[test]
    fn a_wrong_key_is_remembered_until_the_container_changes_and_io_errors_are_not() {
        let (dir, vault, storage) = fixture();
        let reg = registry(&vault);
        let path = Path::new("theirs.qltx");
        let first = reg.get(path).err().unwrap();
        assert!(first.fresh);
        assert!(first.error.is_wrong_key(), "{first}");
        assert!(first.to_string().contains("theirs.qltx"), "{first}");
        let again = reg.get(path).err().unwrap();
        assert!(!again.fresh, "remembered");
        assert_eq!(
            storage.opens.load(Ordering::SeqCst),
            1,
            "no second key derivation"
        );

        pack(dir.path(), "theirs", &[8u8; 100], &key(1));
        assert_eq!(
            reg.get(path).unwrap().len(),
            100,
            "changed: tried again, and opens"
        );

        // An I/O error (here: the object cannot be opened) is tried again every time.
        let locked = dir.path().join("a.bin.qltx");
        std::fs::remove_file(&locked).unwrap();
        std::fs::create_dir(&locked).unwrap();
        let before = storage.opens.load(Ordering::SeqCst);
        for _ in 0..2 {
            let e = reg.get(Path::new("a.bin.qltx")).err().unwrap();
            assert!(e.fresh && matches!(e.error.root(), Error::Io { .. }), "{e}");
        }
        assert_eq!(storage.opens.load(Ordering::SeqCst), before + 2);
    }

    #[test]
    fn preload_reports_the_error_itself() {
        let (_dir, vault, _) = fixture();
        let reg = registry(&vault);
        assert!(reg
            .preload(Path::new("theirs.qltx"))
            .err()
            .unwrap()
            .is_wrong_key());
        reg.preload(Path::new("a.bin.qltx")).unwrap();
        assert_eq!(reg.open_count(), 1);
    }

    #[test]
    fn summaries_are_read_once_per_version() {
        let (dir, vault, storage) = fixture();
        let listed = |name: &str| {
            let listing = vault.list(Path::new("")).unwrap();
            let item = listing.containers.into_iter().find(|c| c.name == name).unwrap();
            (item.path, item.entry)
        };
        let (path, entry) = listed("a.bin");
        assert!(!vault.has_info(&path, &entry.version));
        let summary = vault.info(&path, &entry).unwrap();
        assert_eq!(
            (summary.plaintext_size, summary.block_size, summary.block_count),
            (10_000, 4096, 3)
        );
        for _ in 0..3 {
            let (path, entry) = listed("a.bin");
            assert_eq!(vault.info(&path, &entry).unwrap(), summary);
        }
        assert_eq!(
            storage.opens.load(Ordering::SeqCst),
            1,
            "unchanged: not read again"
        );
        assert!(vault.has_info(&path, &entry.version));

        pack(dir.path(), "a.bin", &[1u8; 10], &key(1));
        let (path, entry) = listed("a.bin");
        assert_eq!(vault.info(&path, &entry).unwrap().plaintext_size, 10);
        assert_eq!(storage.opens.load(Ordering::SeqCst), 2, "a new version is read");

        // No key is needed, and a damaged container fails once, then from memory.
        std::fs::write(
            dir.path().join("broken.qltx"),
            b"not a container at all, not at all",
        )
        .unwrap();
        let (path, entry) = listed("broken");
        assert!(vault.info(&path, &entry).err().unwrap().fresh);
        assert!(!vault.info(&path, &entry).err().unwrap().fresh);
        assert_eq!(storage.opens.load(Ordering::SeqCst), 3);
        let (path, entry) = listed("theirs");
        assert_eq!(vault.info(&path, &entry).unwrap().plaintext_size, 100);
    }
}
