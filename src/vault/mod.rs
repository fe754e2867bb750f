//! The vault layer: a folder of containers and its rules, the same for every front end.
//!
//! A [`Vault`] is a [`Storage`] (a local folder today, an object store later) seen through the
//! vault's rules: the [`naming`] rule says what is shown and under which name, [`Vault::list`]
//! lists a folder through the storage with those rules applied, [`Vault::info`] gives what a
//! listing says about a container without its key (cached by [`Version`]), and a [`Registry`]
//! opens each container once for all the requests of a front end. The mount and `serve` both
//! stand on it; nothing above reads the file system directly, so another backend plugs in below
//! with no change above.
//!
//! ```no_run
//! use qeltrix::vault::Vault;
//! let vault = Vault::local("vault")?;
//! for c in vault.list("".as_ref())?.containers {
//!     let size = vault.info(&c.path, &c.entry).map(|i| i.plaintext_size);
//!     println!("{:?} {size:?}", c.name);
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

mod check;
pub mod keyring;
pub mod naming;
mod registry;
mod scan;

pub use check::KeyCheck;
pub use registry::{Failure, Opened, Registry, Summary};
pub use scan::{Item, Listing};

use crate::container::cache::BlockCache;
use crate::core::crypto::Key;
use crate::storage::{Entry, LocalStorage, Storage, Version};
use registry::InfoCache;
use std::io;
use std::path::{Component, Path};
use std::sync::Arc;

/// A folder of containers on some storage, with the rules every front end shares.
#[derive(Clone)]
pub struct Vault {
    storage: Arc<dyn Storage>,
    infos: Arc<InfoCache>,
    /// Dot names are shown (the mount: a file system shows them); see [`naming`].
    dot_names: bool,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// The vault held by `storage` (its top is the vault's top folder).
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Vault {
            storage,
            infos: Arc::new(InfoCache::new(registry::MAX_INFOS)),
            dot_names: false,
        }
    }

    /// The same vault showing dot names (`.git`, `.profile`) as a file system does, all but
    /// the reserved ones ([`naming::is_reserved`]). The mount shows them; `serve` does not
    /// publish them, as web servers do not.
    pub fn with_dot_names(mut self) -> Self {
        self.dot_names = true;
        self
    }

    /// True when dot names are shown ([`Vault::with_dot_names`]).
    pub fn dot_names(&self) -> bool {
        self.dot_names
    }

    /// The local folder `root` as a vault (no link leads out of it).
    pub fn local(root: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Vault::new(Arc::new(LocalStorage::new(root)?)))
    }

    /// The storage holding the vault.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// How `path` (in the vault) is shown to a person: a local path, or a URL.
    pub fn display(&self, path: &Path) -> String {
        self.storage.display(path)
    }

    /// What is at `path` (`""` for the top). A path through a name the vault does not show
    /// (hidden, or with a backslash) is not found, like one that is not there.
    pub fn stat(&self, path: &Path) -> io::Result<Entry> {
        check_shown(path, self.dot_names)?;
        self.storage.stat(path)
    }

    /// What a listing says about the container at `path` as `entry` (from [`Vault::list`] or
    /// [`Vault::stat`]) saw it, read from its header and footer without the key. Kept by version:
    /// asked again while the version is the same, the container is not read again, and a damaged
    /// one fails again without a read ([`Failure::fresh`] is then false). I/O errors are not kept.
    pub fn info(&self, path: &Path, entry: &Entry) -> Result<Summary, Failure> {
        self.infos.get(&*self.storage, path, &entry.version)
    }

    /// Whether the info of `path` at `version` is cached (for tests and statistics).
    pub fn has_info(&self, path: &Path, version: &Version) -> bool {
        self.infos.contains(path, version)
    }

    /// A registry of this vault's containers opened with `key`, reading through `cache`; `build`
    /// makes what the front end keeps per opened container (see [`Registry`]).
    pub fn registry<T: Send + Sync + 'static>(
        &self,
        key: Key,
        cache: Arc<BlockCache>,
        build: impl Fn(Opened) -> T + Send + Sync + 'static,
    ) -> Registry<T> {
        Registry::new(self.clone(), key, cache, Box::new(build))
    }
}

/// `NotFound` unless every name along `path` is one the vault shows.
fn check_shown(path: &Path, dot_names: bool) -> io::Result<()> {
    let mut top = true;
    for c in path.components() {
        let shown = match c {
            Component::Normal(name) => {
                naming::is_shown_in(name, dot_names, std::mem::replace(&mut top, false))
            }
            Component::CurDir => true,
            _ => false,
        };
        if !shown {
            return Err(io::Error::new(io::ErrorKind::NotFound, "not shown by the vault"));
        }
    }
    Ok(())
}
