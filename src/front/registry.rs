//! The registry view of a vault (`serve`'s `/index.json`, `docs/CAPABILITIES.md`): each
//! container's path, size, ciphertext root and signer, optionally signed by the server's Ed25519
//! key, so that a client can fetch a container from any mirror or CDN and check it against the
//! index without trusting the mirror (`qeltrix verify --index`).

use crate::container::reader::ContainerInfo;
use crate::container::sign::{signature_status, SignatureStatus};
use crate::core::crypto::{SignerKey, SignerPublic};
use crate::vault::Vault;
use crate::{Error, Result};
use std::path::Path;

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

impl Index {
    /// Every container of `vault` whose URL path `allow` accepts (a folder is entered only if
    /// `allow` accepts its path with a final `/`). A container that cannot be read is left out
    /// and counted in the second value.
    pub fn of_vault(vault: &Vault, allow: &dyn Fn(&str, bool) -> bool) -> Result<(Index, usize)> {
        let mut index = Index::default();
        let mut skipped = 0;
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
                match entry(vault, &c.path, path) {
                    Ok(e) => index.entries.push(e),
                    Err(_) => skipped += 1,
                }
            }
        }
        index.entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((index, skipped))
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

fn entry(vault: &Vault, file: &Path, path: String) -> Result<IndexEntry> {
    let object = vault.storage().open(file).map_err(|e| Error::io("opening", e))?;
    let info = ContainerInfo::read(&object)?;
    let signer = match signature_status(&object, &info)? {
        SignatureStatus::Valid(k) => Some(k),
        _ => None,
    };
    Ok(IndexEntry {
        path,
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
