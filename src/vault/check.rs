//! Does the key open this vault? Tried once at start, so a front end given the wrong key says so
//! before it mounts or listens, instead of failing every read afterwards.
//!
//! [`Registry::check_key`] opens every container the vault shows, a few at a time in parallel,
//! through the front end's own registry: what opened stays open and what failed is remembered,
//! so the first read does not open (or derive a key for) any of them again. The result states
//! the counts and the failures; what to make of them (refuse to start, warn) is the caller's
//! choice, and [`KeyCheck::require_any`] is the common one.
//!
//! ```no_run
//! use qeltrix::vault::Vault;
//! # fn demo(key: qeltrix::Key) -> qeltrix::Result<()> {
//! let vault = Vault::local("vault").map_err(|e| qeltrix::Error::io("opening", e))?;
//! let check = vault.check_key(key)?.require_any()?;   // Err(KeyOpensNone) if it opens none
//! println!("the key opens {} of {} containers", check.opened, check.containers);
//! # Ok(()) }
//! ```

use super::{Failure, Registry, Vault};
use crate::container::cache::BlockCache;
use crate::core::crypto::Key;
use crate::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// At most this many containers are opened at once by a check: enough to overlap the reads and
/// use the cores for key derivations, few enough not to swamp a slow disk.
const MAX_CHECK_THREADS: usize = 8;

/// What a key opened of a vault's containers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeyCheck {
    /// Containers tried: every container the vault shows whose structure could be read.
    pub containers: usize,
    /// Of those, how many the key opened.
    pub opened: usize,
    /// Why the others did not open, by path in the vault, in path order.
    pub failures: Vec<(PathBuf, Failure)>,
}

impl KeyCheck {
    /// True when the vault holds containers and the key opens none of them (an empty vault is
    /// not a wrong key).
    pub fn opens_none(&self) -> bool {
        self.containers > 0 && self.opened == 0
    }

    /// The check itself, or [`Error::KeyOpensNone`] when the key opens none of the containers.
    pub fn require_any(self) -> crate::Result<KeyCheck> {
        if self.opens_none() {
            return Err(Error::KeyOpensNone {
                containers: self.containers,
            });
        }
        Ok(self)
    }
}

impl<T: Send + Sync + 'static> Registry<T> {
    /// Opens every container of the vault now (see the [module](self) docs) and keeps the
    /// outcomes as [`Registry::get`] would. Containers whose structure cannot be read (damaged,
    /// not containers) are left out: a listing does not show them either. An error only if the
    /// vault's top folder cannot be listed.
    pub fn check_key(&self) -> crate::Result<KeyCheck> {
        let vault = self.vault();
        let paths = shown_containers(vault)
            .map_err(|e| Error::io("listing the vault", e).in_file(vault.display(Path::new(""))))?;
        let next = AtomicUsize::new(0);
        let opened = AtomicUsize::new(0);
        let failures = Mutex::new(Vec::new());
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, MAX_CHECK_THREADS)
            .min(paths.len());
        let work = || loop {
            let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return;
            };
            match self.get(path) {
                Ok(_) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                Err(f) => failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((path.clone(), f)),
            }
        };
        // Scoped: every thread has ended when this returns.
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
        let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
        failures.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(KeyCheck {
            containers: paths.len(),
            opened: opened.into_inner(),
            failures,
        })
    }
}

impl Vault {
    /// Tries `key` on every container of the vault with a registry of its own (see
    /// [`Registry::check_key`]). A front end that keeps a registry should check through it
    /// instead, so the containers opened here stay open for it.
    pub fn check_key(&self, key: Key) -> crate::Result<KeyCheck> {
        self.registry(key, Arc::new(BlockCache::new(0, 1)), |_| ())
            .check_key()
    }
}

/// Every container the vault shows, in every folder, whose structure reads (through the
/// vault's cached [`Vault::info`], so a listing after the check reads nothing again).
fn shown_containers(vault: &Vault) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut folders = vec![PathBuf::new()];
    let mut top = true;
    while let Some(dir) = folders.pop() {
        let listing = match vault.list(&dir) {
            Ok(l) => l,
            Err(e) if top => return Err(e),
            // A subfolder that cannot be listed is not shown by the front ends either.
            Err(_) => continue,
        };
        top = false;
        folders.extend(listing.folders.into_iter().map(|f| f.path));
        out.extend(
            listing
                .containers
                .into_iter()
                .filter(|c| vault.info(&c.path, &c.entry).is_ok())
                .map(|c| c.path),
        );
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyFileKey;

    fn key(byte: u8) -> Key {
        Key::KeyFile(KeyFileKey::from_bytes([byte; 32]))
    }

    fn pack(dir: &Path, name: &str, key: &Key) {
        let input = dir.join("plain.tmp");
        std::fs::write(&input, name.as_bytes()).unwrap();
        let out = dir.join(super::super::naming::container_name(name));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let recipients = [crate::Recipient::try_from(key).unwrap()];
        crate::pack(&input, &out, &recipients, &crate::PackOptions::default(), true).unwrap();
        std::fs::remove_file(input).unwrap();
    }

    #[test]
    fn counts_what_the_key_opens_in_every_folder_and_keeps_it_open() {
        let dir = tempfile::tempdir().unwrap();
        pack(dir.path(), "a", &key(1));
        pack(dir.path(), "sub/b", &key(1));
        pack(dir.path(), "sub/deeper/c", &key(2));
        std::fs::write(dir.path().join("broken.qltx"), b"not a container").unwrap();
        let vault = Vault::local(dir.path()).unwrap();
        let reg = vault.registry(key(1), Arc::new(BlockCache::new(1 << 20, 1)), |o| o.cached);
        let check = reg.check_key().unwrap();
        assert_eq!(
            (check.containers, check.opened),
            (3, 2),
            "broken.qltx is not shown"
        );
        assert_eq!(check.failures.len(), 1);
        let (path, failure) = &check.failures[0];
        assert_eq!(path, Path::new("sub/deeper/c.qltx"));
        assert!(failure.error.is_wrong_key(), "{failure}");
        assert!(!check.opens_none());
        assert_eq!(reg.open_count(), 3, "opened and failed are both kept");
        let again = reg.get(Path::new("sub/deeper/c.qltx")).err().unwrap();
        assert!(!again.fresh, "the failure is remembered, not met again");
        check.require_any().unwrap();

        let none = vault.check_key(key(9)).unwrap();
        assert!(none.opens_none());
        let e = none.require_any().unwrap_err();
        assert!(e.is_wrong_key() && e.is_auth_failure(), "{e}");
        assert!(e.to_string().contains("0 of 3 containers"), "{e}");
    }

    #[test]
    fn an_empty_vault_is_not_a_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let check = Vault::local(dir.path()).unwrap().check_key(key(1)).unwrap();
        assert_eq!((check.containers, check.opened), (0, 0));
        assert!(!check.opens_none());
        check.require_any().unwrap();
    }
}
