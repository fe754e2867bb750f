//! What the watcher has stored: per inbox file, its size, mtime and a keyed hash of its content,
//! kept as JSON in the vault (`.qeltrix/watch-state.json`) or in a local file.
//!
//! The content hash is BLAKE3 keyed with a secret of this machine (`state.key` beside the local
//! state, or under `$XDG_STATE_HOME/qeltrix/`), never a plain hash: the state lies in a vault on
//! storage nobody has to trust, and a plain hash would let whoever reads it confirm a guess of a
//! file's content. Lose the secret and every file is packed once more: nothing worse.

use crate::storage::{LocalStorage, Storage, WriteOptions};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One stored file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Size in bytes when packed.
    pub size: u64,
    /// Modification time when packed, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Keyed BLAKE3 of the content packed, hex.
    pub hash: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// Relative path in the inbox (`/`-separated) → what was stored.
    files: BTreeMap<String, Record>,
}

/// Where the state lives: an object of a storage (the vault's `.qeltrix/`, or a local file).
#[derive(Clone, Debug)]
pub struct StateStore {
    storage: Arc<dyn Storage>,
    path: PathBuf,
}

/// The state file's path inside a vault.
pub const VAULT_STATE: &str = ".qeltrix/watch-state.json";

impl StateStore {
    /// The state in `storage` at `path`.
    pub fn new(storage: Arc<dyn Storage>, path: impl Into<PathBuf>) -> Self {
        StateStore {
            storage,
            path: path.into(),
        }
    }

    /// The state in a local file.
    pub fn local(file: &Path) -> Self {
        StateStore::new(Arc::new(LocalStorage::anywhere()), file)
    }

    /// Where it is, for messages.
    pub fn display(&self) -> String {
        self.storage.display(&self.path)
    }

    /// The records stored, empty if there is no state yet. A state that cannot be read is an
    /// error naming it (the watcher does not silently pack everything again).
    pub fn load(&self) -> Result<BTreeMap<String, Record>> {
        let object = match self.storage.open(&self.path) {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(Error::io("reading the watch state", e).in_file(self.display())),
        };
        let mut bytes = Vec::new();
        crate::storage::SequentialReader::new(object)
            .and_then(|mut r| r.read_to_end(&mut bytes))
            .map_err(|e| Error::io("reading the watch state", e).in_file(self.display()))?;
        let state: StateFile = serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidArgument(format!(
                "{}: not a watch state ({e}); move it away to start over",
                self.display()
            ))
        })?;
        Ok(state.files)
    }

    /// Replaces the stored state, all or nothing.
    pub fn save(&self, files: &BTreeMap<String, Record>) -> Result<()> {
        #[derive(Serialize)]
        struct Out<'a> {
            version: u32,
            files: &'a BTreeMap<String, Record>,
        }
        let bytes = serde_json::to_vec(&Out { version: 1, files })
            .map_err(|e| Error::InvalidArgument(format!("the watch state: {e}")))?;
        self.storage
            .make_parents(&self.path)
            .map_err(|e| Error::io("creating the folder of", e).in_file(self.display()))?;
        self.storage
            .put(&self.path, &bytes, WriteOptions::overwrite(true))
    }
}

/// The secret that keys content hashes: read from `file`, or made (32 random bytes, mode 0600).
pub fn hash_key(file: &Path) -> Result<[u8; 32]> {
    match std::fs::read(file) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            Error::InvalidArgument(format!("{}: not a watch hash key (32 bytes)", file.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            use crate::crypto::Entropy;
            crate::crypto::SystemEntropy.fill(b"watch hash key", &mut key);
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the folder", e).in_file(dir))?;
            }
            crate::storage::atomic::write_file(file, &key, false)?;
            Ok(key)
        }
        Err(e) => Err(Error::io("reading the watch hash key", e).in_file(file)),
    }
}
