//! The registry view of a vault (`serve`'s `/index.json`, `docs/CAPABILITIES.md`): each
//! container's path, size, ciphertext root and signer, optionally signed by the server's Ed25519
//! key, so that a client can fetch a container from any mirror or CDN and check it against the
//! index without trusting the mirror (`qeltrix verify --index`).

use crate::container::reader::ContainerInfo;
use crate::container::sign::{signature_status, SignatureStatus};
use crate::core::crypto::{SignerKey, SignerPublic};
use crate::storage::Version;
use crate::vault::Vault;
use crate::{Error, Result};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const FORMAT: &str = "qeltrix index 1";

/// One container of the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Its path in the server's URLs (shown names: `/media/talk.mp4`).
    pub path: String,
    /// The container's length in bytes.
    pub size: u64,
    /// Its ciphertext root (`None` for format 1, which has none).
    pub root: Option<[u8; 32]>,
    /// The signer of a valid container signature, if any.
    pub signer: Option<SignerPublic>,
}

/// A vault's index: its containers, by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Index {
    /// Sorted by path.
    pub entries: Vec<IndexEntry>,
}

/// What an index keeps of each container between builds, by storage path and the version the
/// listing saw: a container unchanged since it was last read (same [`Version`]) is not opened
/// again, so a second `/index.json` costs the vault's listing only. Bounded: the least recently
/// used entries go first.
pub struct IndexCache(Mutex<LruCache<PathBuf, (Version, Known)>>);

/// How an index was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Built {
    /// Containers read (their header and footer) for it; the others came from the cache.
    pub read: usize,
    /// Containers left out because they could not be read.
    pub skipped: usize,
}

/// What a container's header and footer said.
#[derive(Clone)]
struct Known {
    size: u64,
    root: Option<[u8; 32]>,
    signer: Option<SignerPublic>,
}

impl IndexCache {
    /// Containers remembered, at most (about 150 bytes each).
    pub const ENTRIES: usize = 1 << 16;

    /// An empty cache.
    pub fn new() -> Self {
        IndexCache(Mutex::new(LruCache::new(
            NonZeroUsize::new(Self::ENTRIES).expect("not zero"),
        )))
    }

    fn get(&self, path: &Path, version: &Version) -> Option<Known> {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(path) {
            Some((v, known)) if v == version => Some(known.clone()),
            _ => None,
        }
    }

    fn put(&self, path: &Path, version: Version, known: Known) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache.put(path.to_path_buf(), (version, known));
    }
}

impl Default for IndexCache {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    /// Every container of `vault` whose URL path `allow` accepts (a folder is entered only if
    /// `allow` accepts its path with a final `/`). A container that cannot be read is left out
    /// and counted in the second value.
    pub fn of_vault(vault: &Vault, allow: &dyn Fn(&str, bool) -> bool) -> Result<(Index, usize)> {
        Index::of_vault_cached(vault, allow, &IndexCache::new()).map(|(index, built)| (index, built.skipped))
    }

    /// [`Index::of_vault`], reading only the containers `cache` does not hold at the version
    /// listed now, and keeping what it read there.
    pub fn of_vault_cached(
        vault: &Vault,
        allow: &dyn Fn(&str, bool) -> bool,
        cache: &IndexCache,
    ) -> Result<(Index, Built)> {
        let mut index = Index::default();
        let mut built = Built::default();
        let mut folders = vec![(std::path::PathBuf::new(), String::from("/"))];
        while let Some((dir, url)) = folders.pop() {
            let listing = vault
                .list(&dir)
                .map_err(|e| Error::io("listing", e).in_file(vault.display(&dir)))?;
            for f in listing.folders {
                let sub = format!("{url}{}/", f.name.to_string_lossy());
                if allow(&sub, true) {
                    folders.push((dir.join(&f.name), sub));
                }
            }
            for c in listing.containers {
                let path = format!("{url}{}", c.name.to_string_lossy());
                if !allow(&path, false) {
                    continue;
                }
                let known = match cache.get(&c.path, &c.entry.version) {
                    Some(known) => known,
                    None => match read(vault, &c.path) {
                        Ok(known) => {
                            built.read += 1;
                            cache.put(&c.path, c.entry.version.clone(), known.clone());
                            known
                        }
                        Err(_) => {
                            built.skipped += 1;
                            continue;
                        }
                    },
                };
                index.entries.push(IndexEntry {
                    path,
                    size: known.size,
                    root: known.root,
                    signer: known.signer,
                });
            }
        }
        index.entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((index, built))
    }

    /// What a signature covers: `"qeltrix index 1"` ‖ u64 count ‖ for each entry in path order:
    /// u32 path length ‖ path (UTF-8) ‖ u64 size ‖ u8 has root ‖ root (32, zero without) ‖ u8 has
    /// signer ‖ signer key (32, zero without).
    fn message(&self) -> Vec<u8> {
        let mut m = FORMAT.as_bytes().to_vec();
        m.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            m.extend_from_slice(&(e.path.len() as u32).to_le_bytes());
            m.extend_from_slice(e.path.as_bytes());
            m.extend_from_slice(&e.size.to_le_bytes());
            m.push(u8::from(e.root.is_some()));
            m.extend_from_slice(&e.root.unwrap_or([0; 32]));
            m.push(u8::from(e.signer.is_some()));
            m.extend_from_slice(e.signer.as_ref().map_or(&[0u8; 32], |s| s.as_bytes()));
        }
        m
    }

    /// The index as JSON, signed by `key` if given.
    pub fn to_json(&self, key: Option<&SignerKey>) -> String {
        let entries: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "path": e.path,
                    "size": e.size,
                    "root": e.root.map(hex::encode),
                    "signer": e.signer.map(|s| s.to_string()),
                })
            })
            .collect();
        let mut doc = serde_json::json!({ "format": FORMAT, "containers": entries });
        if let Some(key) = key {
            doc["signer"] = key.public().to_string().into();
            doc["signature"] = hex::encode(key.sign(&self.message())).into();
        }
        format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        )
    }

    /// Reads an index. With `expected`, it must be signed by that key and the signature must
    /// match; without, a signature is not checked (the caller trusts where it came from).
    pub fn parse(text: &str, expected: Option<&SignerPublic>) -> Result<Index> {
        let bad = |why: String| Error::Signature(format!("index: {why}"));
        let doc: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("index: not JSON: {e}")))?;
        if doc["format"] != FORMAT {
            return Err(Error::InvalidArgument(
                "index: not a qeltrix index (format)".into(),
            ));
        }
        let malformed = || Error::InvalidArgument("index: a malformed container entry".into());
        let entries = doc["containers"]
            .as_array()
            .ok_or_else(malformed)?
            .iter()
            .map(|e| {
                let root = match &e["root"] {
                    serde_json::Value::Null => None,
                    v => {
                        let mut r = [0u8; 32];
                        hex::decode_to_slice(v.as_str()?, &mut r).ok()?;
                        Some(r)
                    }
                };
                let signer = match &e["signer"] {
                    serde_json::Value::Null => None,
                    v => Some(v.as_str()?.parse().ok()?),
                };
                Some(IndexEntry {
                    path: e["path"].as_str()?.to_string(),
                    size: e["size"].as_u64()?,
                    root,
                    signer,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(malformed)?;
        let index = Index { entries };
        if let Some(expected) = expected {
            let signer: SignerPublic = doc["signer"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("not signed".into()))?;
            if signer != *expected {
                return Err(bad(format!("signed by {signer}, not by {expected}")));
            }
            let mut signature = [0u8; 64];
            doc["signature"]
                .as_str()
                .filter(|h| h.len() == 128 && hex::decode_to_slice(h, &mut signature).is_ok())
                .ok_or_else(|| bad("no signature".into()))?;
            if !signer.verifies(&index.message(), &signature) {
                return Err(bad(
                    "the signature does not match its content (a changed index)".into()
                ));
            }
        }
        Ok(index)
    }

    /// The entry naming a container with this root.
    pub fn by_root(&self, root: &[u8; 32]) -> Option<&IndexEntry> {
        self.entries.iter().find(|e| e.root.as_ref() == Some(root))
    }
}

/// A container's size, root and valid signer, from its header and footer (no key).
fn read(vault: &Vault, file: &Path) -> Result<Known> {
    let object = vault.storage().open(file).map_err(|e| Error::io("opening", e))?;
    let info = ContainerInfo::read(&object)?;
    let signer = match signature_status(&object, &info)? {
        SignatureStatus::Valid(k) => Some(k),
        _ => None,
    };
    Ok(Known {
        size: info.container_size,
        root: info.root(),
        signer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededEntropy;

    fn index() -> Index {
        Index {
            entries: vec![
                IndexEntry {
                    path: "/a.mp4".into(),
                    size: 10,
                    root: Some([1; 32]),
                    signer: Some(SignerKey::generate(&SeededEntropy([3; 32])).public()),
                },
                IndexEntry {
                    path: "/old.bin".into(),
                    size: 20,
                    root: None,
                    signer: None,
                },
            ],
        }
    }

    /// A vault folder's index built again through one cache reads only what changed: a
    /// container signed in place, one replaced; a broken one is left out every time.
    #[test]
    fn a_cached_index_reads_only_the_containers_that_changed() {
        use crate::crypto::KeyFileKey;
        let dir = tempfile::tempdir().unwrap();
        let plain = tempfile::tempdir().unwrap();
        let pack = |name: &str, len: usize| {
            let input = plain.path().join(name);
            std::fs::write(&input, vec![7u8; len]).unwrap();
            let key = crate::Recipient::KeyFile(KeyFileKey::from_bytes([1; 32]));
            let out = dir.path().join(crate::vault::naming::container_name(name));
            crate::pack(&input, &out, &[key], &crate::PackOptions::default(), true).unwrap();
        };
        pack("a", 1000);
        pack("b", 2000);
        std::fs::write(dir.path().join("broken.qltx"), b"not a container").unwrap();
        let vault = Vault::local(dir.path()).unwrap();
        let cache = IndexCache::new();
        let all = |_: &str, _: bool| true;
        let build = || Index::of_vault_cached(&vault, &all, &cache).unwrap();

        let (first, built) = build();
        assert_eq!(built, Built { read: 2, skipped: 1 });
        assert_eq!(
            first.entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            ["/a", "/b"]
        );
        let (again, built) = build();
        assert_eq!(again, first);
        assert_eq!(built, Built { read: 0, skipped: 1 });

        // Signed in place: the same file, a new version (its times set apart from the first,
        // as the clock's tick may not have moved).
        let a = dir.path().join("a.qltx");
        let key = SignerKey::generate(&SeededEntropy([5; 32]));
        crate::container::sign::sign_in_place(&a, &key).unwrap();
        let past = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(past)
            .unwrap();
        pack("b", 3000);
        let (changed, built) = build();
        assert_eq!(built, Built { read: 2, skipped: 1 });
        assert_eq!(changed.entries[0].signer, Some(key.public()));
        assert_eq!(changed.entries[0].root, first.entries[0].root);
        assert_ne!(changed.entries[1].root, first.entries[1].root);
        assert_eq!(build(), (changed, Built { read: 0, skipped: 1 }));
    }

    #[test]
    fn a_signed_index_round_trips_and_any_change_fails_it() {
        let key = SignerKey::generate(&SeededEntropy([1; 32]));
        let text = index().to_json(Some(&key));
        assert_eq!(Index::parse(&text, Some(&key.public())).unwrap(), index());
        assert_eq!(Index::parse(&text, None).unwrap(), index());
        let other = SignerKey::generate(&SeededEntropy([2; 32])).public();
        assert!(Index::parse(&text, Some(&other))
            .unwrap_err()
            .to_string()
            .contains("not by"));
        let changed = text.replace("\"size\": 10", "\"size\": 11");
        assert!(Index::parse(&changed, Some(&key.public()))
            .unwrap_err()
            .to_string()
            .contains("does not match"));
        let unsigned = index().to_json(None);
        assert!(Index::parse(&unsigned, Some(&key.public()))
            .unwrap_err()
            .to_string()
            .contains("not signed"));
        assert_eq!(index().by_root(&[1; 32]).unwrap().path, "/a.mp4");
    }
}
