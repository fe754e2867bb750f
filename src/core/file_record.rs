//! Format version 2, the file record: the packed file's name, mode and modification time,
//! sealed inside the footer so that `unpack` can restore them and `mount` and `serve` show them.
//!
//! ```text
//! stored    = nonce (12) ‖ AEAD(K_rec, nonce, plaintext, AAD = container_id ‖ "file record")
//! plaintext = u16 name_len ‖ name (name_len bytes) ‖ u32 mode ‖ i64 mtime_sec ‖ u32 mtime_nsec
//! K_rec     = HKDF-SHA256(MK, container_id, "qeltrix v2 file record key")
//! ```
//!
//! The name is the file's own name as given (bytes, at most 4096, no `/` and no NUL); the mode
//! holds the permission bits only (`0o7777`); `mtime_nsec` is below 10⁹.

use crate::core::crypto::{derive_file_record_key, ContainerKeys, Entropy};
use crate::core::format::{
    array, le_u16, le_u32, le_u64, FILE_RECORD_FIXED_PLAIN, FILE_RECORD_MAX_NAME, NONCE_LEN,
};
use crate::{Error, Result};

const AAD_LABEL: &[u8] = b"file record";

/// What a file record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// The file's name (its last path component), as bytes.
    pub name: Vec<u8>,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Modification time: seconds since the epoch (negative before 1970).
    pub mtime_sec: i64,
    /// Modification time: nanoseconds, below 10⁹.
    pub mtime_nsec: u32,
}

impl FileMeta {
    /// The name, mode and mtime of a file from its path and metadata. A name that breaks the
    /// record's rules (longer than 4096 bytes) is left out, keeping mode and mtime.
    #[cfg(unix)]
    pub fn from_file(path: &std::path::Path, md: &std::fs::Metadata) -> Self {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::MetadataExt;
        let name = path
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .filter(|n| n.len() <= FILE_RECORD_MAX_NAME)
            .unwrap_or_default();
        FileMeta {
            name,
            mode: md.mode() & 0o7777,
            mtime_sec: md.mtime(),
            mtime_nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        }
    }

    /// The modification time as a `SystemTime`. The record holds any i64 of seconds; the one
    /// time no `SystemTime` can hold (`i64::MIN` seconds) is given as the earliest it can.
    pub fn mtime(&self) -> std::time::SystemTime {
        use std::time::{Duration, UNIX_EPOCH};
        let secs = Duration::from_secs(self.mtime_sec.unsigned_abs());
        let base = if self.mtime_sec >= 0 {
            UNIX_EPOCH.checked_add(secs)
        } else {
            UNIX_EPOCH.checked_sub(secs)
        };
        let base = base.unwrap_or_else(|| UNIX_EPOCH - Duration::from_secs(i64::MAX as u64));
        base.checked_add(Duration::from_nanos(self.mtime_nsec as u64))
            .unwrap_or(base)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.name.len() > FILE_RECORD_MAX_NAME {
            return Err(format!(
                "name of {} bytes (at most {FILE_RECORD_MAX_NAME})",
                self.name.len()
            ));
        }
        if self.name.iter().any(|&b| b == b'/' || b == 0) {
            return Err("name holds a '/' or a NUL".into());
        }
        if self.mode & !0o7777 != 0 {
            return Err(format!("mode {:#o} has bits beyond 0o7777", self.mode));
        }
        if self.mtime_nsec >= 1_000_000_000 {
            return Err(format!(
                "mtime nanoseconds {} are not below 10^9",
                self.mtime_nsec
            ));
        }
        Ok(())
    }
}

fn aad(keys: &ContainerKeys) -> Vec<u8> {
    [&keys.container_id[..], AAD_LABEL].concat()
}

/// Seals `meta` as a container's file record. Panics if `meta` breaks the record's rules (use
/// [`FileMeta::from_file`], which keeps to them).
pub fn seal_file_record(keys: &ContainerKeys, meta: &FileMeta, entropy: &dyn Entropy) -> Vec<u8> {
    if let Err(e) = meta.check() {
        panic!("file record: {e}");
    }
    let mut nonce = [0u8; NONCE_LEN];
    entropy.fill(b"file record nonce", &mut nonce);
    let mut plain = Vec::with_capacity(FILE_RECORD_FIXED_PLAIN + meta.name.len());
    plain.extend_from_slice(&(meta.name.len() as u16).to_le_bytes());
    plain.extend_from_slice(&meta.name);
    plain.extend_from_slice(&meta.mode.to_le_bytes());
    plain.extend_from_slice(&meta.mtime_sec.to_le_bytes());
    plain.extend_from_slice(&meta.mtime_nsec.to_le_bytes());
    derive_file_record_key(keys).seal(&nonce, &aad(keys), &mut plain);
    [&nonce[..], &plain].concat()
}

/// Checks and opens a sealed file record (its length already bounded by the footer's decoder).
pub fn open_file_record(keys: &ContainerKeys, sealed: &[u8]) -> Result<FileMeta> {
    let bad = |what: String| Error::corrupt(format!("file record: {what}"));
    if sealed.len() < NONCE_LEN {
        return Err(bad(format!("{} bytes", sealed.len())));
    }
    let nonce: [u8; NONCE_LEN] = array(sealed, 0);
    let mut plain = sealed[NONCE_LEN..].to_vec();
    derive_file_record_key(keys)
        .open(&nonce, &aad(keys), &mut plain)
        .map_err(|_| bad("fails authentication".into()))?;
    if plain.len() < FILE_RECORD_FIXED_PLAIN {
        return Err(bad(format!("{} plaintext bytes", plain.len())));
    }
    let name_len = le_u16(&plain, 0) as usize;
    if plain.len() != FILE_RECORD_FIXED_PLAIN + name_len {
        return Err(bad(format!(
            "name length {name_len} does not match the record's {} bytes",
            plain.len()
        )));
    }
    let at = 2 + name_len;
    let meta = FileMeta {
        name: plain[2..at].to_vec(),
        mode: le_u32(&plain, at),
        mtime_sec: le_u64(&plain, at + 4) as i64,
        mtime_nsec: le_u32(&plain, at + 12),
    };
    meta.check().map_err(bad)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::{derive_container_keys, DataKey, SeededEntropy};
    use crate::core::format::{CipherId, FILE_RECORD_MAX_LEN, FILE_RECORD_MIN_LEN};

    fn keys(id: u8) -> ContainerKeys {
        derive_container_keys(
            DataKey::generate(&SeededEntropy([0x21; 32])),
            CipherId::ChaCha20Poly1305,
            [id; 16],
        )
    }

    fn meta(name: &[u8]) -> FileMeta {
        FileMeta {
            name: name.to_vec(),
            mode: 0o640,
            mtime_sec: -86_400,
            mtime_nsec: 999_999_999,
        }
    }

    #[test]
    fn a_record_round_trips_and_has_the_documented_lengths() {
        let k = keys(1);
        for (name, len) in [
            (&b""[..], FILE_RECORD_MIN_LEN),
            (&[b'a'; 4096][..], FILE_RECORD_MAX_LEN),
        ] {
            let sealed = seal_file_record(&k, &meta(name), &SeededEntropy([1; 32]));
            assert_eq!(sealed.len() as u32, len);
            assert_eq!(open_file_record(&k, &sealed).unwrap(), meta(name));
        }
    }

    #[test]
    fn every_flipped_byte_and_another_containers_key_fail() {
        let k = keys(1);
        let sealed = seal_file_record(&k, &meta(b"movie.mp4"), &SeededEntropy([1; 32]));
        for i in 0..sealed.len() {
            let mut b = sealed.clone();
            b[i] ^= 1;
            assert!(open_file_record(&k, &b).is_err(), "{i}");
        }
        assert!(open_file_record(&keys(2), &sealed).is_err());
        assert!(open_file_record(&k, &sealed[..sealed.len() - 1]).is_err());
    }

    #[test]
    fn fields_outside_the_rules_are_refused_after_authentication() {
        let k = keys(1);
        let forge = |plain: Vec<u8>| {
            let nonce = [3u8; NONCE_LEN];
            let mut p = plain;
            derive_file_record_key(&k).seal(&nonce, &aad(&k), &mut p);
            [&nonce[..], &p].concat()
        };
        let good = |name: &[u8], mode: u32, nsec: u32, extra: usize| {
            let mut p = (name.len() as u16 + extra as u16).to_le_bytes().to_vec();
            p.extend_from_slice(name);
            p.extend_from_slice(&mode.to_le_bytes());
            p.extend_from_slice(&0i64.to_le_bytes());
            p.extend_from_slice(&nsec.to_le_bytes());
            p
        };
        for (plain, what) in [
            (good(b"a/b", 0o644, 0, 0), "'/'"),
            (good(b"a\0b", 0o644, 0, 0), "NUL"),
            (good(b"ab", 0o100644, 0, 0), "mode"),
            (good(b"ab", 0o644, 1_000_000_000, 0), "nanoseconds"),
            (good(b"ab", 0o644, 0, 1), "name length"),
            (vec![0; 5], "plaintext bytes"),
        ] {
            let e = open_file_record(&k, &forge(plain)).unwrap_err().to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
    }

    #[test]
    fn extreme_mtimes_convert_without_panicking() {
        for sec in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let m = FileMeta {
                mtime_sec: sec,
                mtime_nsec: 999_999_999,
                ..meta(b"x")
            };
            let _ = m.mtime();
        }
    }

    #[test]
    fn mtime_converts_before_and_after_the_epoch() {
        let m = FileMeta {
            mtime_sec: 1,
            mtime_nsec: 5,
            ..meta(b"x")
        };
        assert_eq!(
            m.mtime().duration_since(std::time::UNIX_EPOCH).unwrap(),
            std::time::Duration::new(1, 5)
        );
        let m = meta(b"x");
        assert_eq!(
            std::time::UNIX_EPOCH.duration_since(m.mtime()).unwrap(),
            std::time::Duration::new(86_399, 1)
        );
    }
}
