//! Format version 4 (proposed, `docs/design/format-4.md`): sealing and opening the 4 KiB units
//! of one patch. Each patch has its own key (a fresh salt), each unit its own nonce (its index
//! in the patch), and its AAD binds the container, the generation, the index and the plaintext
//! range, so a unit replayed from an older patch or moved within one fails.

use super::crypto::{derive_unit_key, AeadKey, ContainerKeys};
use super::format::{unit_aad, unit_nonce, ContainerId, PatchFooter, UnitEntry, NONCE_LEN};
use crate::{Error, Result};

/// The key, nonce base and binding of one patch's units.
pub struct PatchKey {
    key: AeadKey,
    container_id: ContainerId,
    generation: u64,
    nonce_base: [u8; NONCE_LEN],
}

impl PatchKey {
    /// The unit key of generation `generation`'s patch with salt `patch_salt` and nonce base
    /// `nonce_base` (bytes 7..12 zero).
    pub fn new(
        keys: &ContainerKeys,
        generation: u64,
        patch_salt: &[u8; 32],
        nonce_base: [u8; NONCE_LEN],
    ) -> Self {
        PatchKey {
            key: derive_unit_key(keys, patch_salt, generation),
            container_id: keys.container_id,
            generation,
            nonce_base,
        }
    }

    /// The unit key of a decoded patch footer.
    pub fn of(keys: &ContainerKeys, footer: &PatchFooter) -> Self {
        Self::new(keys, footer.generation, &footer.patch_salt, footer.nonce_base)
    }

    /// Seals `pages` (plaintext offset, plaintext; offsets multiples of 4 KiB, ascending, each
    /// plaintext 1 … 4096 bytes) as units 0, 1, … laid back to back from container offset `at`,
    /// appends them to `out`, and returns their entries. A key seals one set of pages once.
    /// Pages out of that shape are sealed as given: the caller checks the entries (as
    /// `PatchFooter::decode` does) before writing anything.
    pub fn seal(&self, at: u64, pages: &[(u64, &[u8])], out: &mut Vec<u8>) -> Vec<UnitEntry> {
        let mut offset = at;
        pages
            .iter()
            .enumerate()
            .map(|(k, &(plain_offset, plain))| {
                let mut entry = UnitEntry {
                    plain_offset,
                    offset,
                    len: plain.len() as u32,
                    unit_hash: [0; 32],
                };
                let mut sealed = plain.to_vec();
                self.key.seal(
                    &unit_nonce(&self.nonce_base, k as u32),
                    &unit_aad(&self.container_id, self.generation, k as u32, &entry),
                    &mut sealed,
                );
                entry.unit_hash = *blake3::hash(&sealed).as_bytes();
                offset += sealed.len() as u64;
                out.extend_from_slice(&sealed);
                entry
            })
            .collect()
    }

    /// Opens unit `k` (`entry`) from `data`, its sealed bytes as read from the container: checks
    /// the entry's hash, then the AEAD, and leaves the plaintext in `data`.
    pub fn open(&self, k: u32, entry: &UnitEntry, data: &mut Vec<u8>) -> Result<()> {
        let bad = |what: &str| Error::Corrupt {
            what: format!(
                "unit {k} of generation {} (plaintext {} … {}): {what}",
                self.generation,
                entry.plain_offset,
                entry.plain_offset + u64::from(entry.len)
            ),
            block: None,
            offset: Some(entry.offset),
        };
        if data.len() as u64 != entry.sealed_len() {
            return Err(bad("short read"));
        }
        if blake3::hash(data).as_bytes() != &entry.unit_hash {
            return Err(bad("its bytes do not match the patch footer's hash"));
        }
        self.key
            .open(
                &unit_nonce(&self.nonce_base, k),
                &unit_aad(&self.container_id, self.generation, k, entry),
                data,
            )
            .map_err(|_| bad("authentication failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::{derive_container_keys, DataKey, SeededEntropy};
    use crate::core::format::{CipherId, TAG_LEN};

    fn keys() -> ContainerKeys {
        derive_container_keys(
            DataKey::generate(&SeededEntropy([3; 32])),
            CipherId::Aes256Gcm,
            [8; 16],
        )
    }

    const BASE: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0];

    fn sealed(key: &PatchKey) -> (Vec<UnitEntry>, Vec<u8>) {
        let (a, b) = (vec![0xa5; 4096], vec![0x5a; 100]);
        let mut out = Vec::new();
        let units = key.seal(10_000, &[(8192, &a), (40960, &b)], &mut out);
        (units, out)
    }

    fn unit_bytes(units: &[UnitEntry], out: &[u8], k: usize) -> Vec<u8> {
        let from = (units[k].offset - 10_000) as usize;
        out[from..from + units[k].sealed_len() as usize].to_vec()
    }

    #[test]
    fn units_are_laid_back_to_back_and_open_to_their_plaintext() {
        let keys = keys();
        let key = PatchKey::new(&keys, 4, &[9; 32], BASE);
        let (units, out) = sealed(&key);
        assert_eq!(out.len(), 4096 + 100 + 2 * TAG_LEN);
        assert_eq!((units[0].offset, units[1].offset), (10_000, 10_000 + 4112));
        assert_eq!((units[0].len, units[1].len), (4096, 100));
        let mut data = unit_bytes(&units, &out, 1);
        key.open(1, &units[1], &mut data).unwrap();
        assert_eq!(data, vec![0x5a; 100]);
        let mut data = unit_bytes(&units, &out, 0);
        key.open(0, &units[0], &mut data).unwrap();
        assert_eq!(data, vec![0xa5; 4096]);
        // The key a reader derives from the decoded footer opens them too.
        let footer = PatchFooter {
            generation: 4,
            prev_offset: 4096,
            prev_size: 200,
            prev_mac: [0; 32],
            base_generation: 3,
            patch_salt: [9; 32],
            nonce_base: BASE,
            mode: 0o600,
            mtime_sec: 0,
            mtime_nsec: 0,
            units: units.clone(),
        };
        let mut data = unit_bytes(&units, &out, 1);
        PatchKey::of(&keys, &footer)
            .open(1, &units[1], &mut data)
            .unwrap();
        assert_eq!(data, vec![0x5a; 100]);
    }

    #[test]
    fn a_changed_swapped_or_replayed_unit_is_refused() {
        let keys = keys();
        let key = PatchKey::new(&keys, 4, &[9; 32], BASE);
        let (units, out) = sealed(&key);
        let mut flipped = unit_bytes(&units, &out, 0);
        flipped[7] ^= 1;
        let e = key.open(0, &units[0], &mut flipped).unwrap_err().to_string();
        assert!(e.contains("unit 0 of generation 4") && e.contains("hash"), "{e}");
        // The entry's hash updated with the bytes (a footer forged without the MAC key) still
        // fails the AEAD.
        let mut forged = units[0];
        forged.unit_hash = *blake3::hash(&flipped).as_bytes();
        assert!(key.open(0, &forged, &mut flipped.clone()).is_err());
        // Unit 0's bytes presented as unit 1, or at another plaintext offset.
        let mut moved = units[0];
        moved.plain_offset = 12288;
        assert!(key.open(0, &moved, &mut unit_bytes(&units, &out, 0)).is_err());
        let mut as_one = units[0];
        as_one.offset = units[1].offset;
        assert!(key.open(1, &as_one, &mut unit_bytes(&units, &out, 0)).is_err());
        // The same pages sealed by an older generation's patch do not open as this one's.
        let older = PatchKey::new(&keys, 3, &[9; 32], BASE);
        let (old_units, old_out) = sealed(&older);
        assert!(key
            .open(0, &old_units[0], &mut unit_bytes(&old_units, &old_out, 0))
            .is_err());
        assert!(older
            .open(0, &old_units[0], &mut unit_bytes(&old_units, &old_out, 0))
            .is_ok());
        let mut short = unit_bytes(&units, &out, 1);
        short.pop();
        assert!(key.open(1, &units[1], &mut short).is_err());
    }
}
