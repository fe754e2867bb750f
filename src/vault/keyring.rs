//! The vault keyring: `VAULT/.qeltrix/keyring` holds one random vault key wrapped under the vault
//! passphrase. Containers in the vault get a keyring slot (their data key wrapped under the vault
//! key), so unlocking a vault costs one PBKDF2 however many containers it holds, and changing the
//! passphrase rewrites this one small file and no container.
//!
//! File layout (124 bytes, little-endian):
//! `magic "QLTXKEYR" (8) | version u16 = 1 | reserved (2) | PBKDF2 iterations u32 | vault id (16)
//!  | salt (32) | nonce (12) | wrapped vault key (32 + 16 tag)`, the wrap being AES-256-GCM under
//! PBKDF2-HMAC-SHA256(passphrase, salt, iterations) with bytes 0..76 as associated data.

use crate::core::crypto::{AeadKey, Entropy, Passphrase, VaultKey, MAX_KDF_ITERATIONS};
use crate::core::format::{array, le_u16, le_u32, CipherId, SlotKind};
use crate::{Error, Lock, Result};
use sha2::Sha256;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"QLTXKEYR";
const VERSION: u16 = 1;
const KEYRING_LEN: usize = 124;
const AAD_LEN: usize = 76;
/// Folder inside a vault that marks it as initialised.
pub const VAULT_DIR: &str = ".qeltrix";
const KEYRING_FILE: &str = "keyring";

/// Path of the keyring file of `vault`.
pub fn keyring_path(vault: &Path) -> PathBuf {
    vault.join(VAULT_DIR).join(KEYRING_FILE)
}

/// The initialised vault that contains `path` (the nearest ancestor with a keyring), if any.
pub fn find_vault(path: &Path) -> Option<PathBuf> {
    // A file not written yet is looked up by its folder; a bare name's folder is ".", not "".
    let abs = fs::canonicalize(path)
        .or_else(|_| match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => fs::canonicalize(p),
            _ => fs::canonicalize("."),
        })
        .ok()?;
    abs.ancestors()
        .find(|d| keyring_path(d).is_file())
        .map(Path::to_path_buf)
}

/// A keyring asking for another iteration count could never be unlocked: `decode` refuses it.
fn check_iterations(iterations: u32) -> Result<()> {
    if !(1..=MAX_KDF_ITERATIONS).contains(&iterations) {
        return Err(Error::InvalidArgument(format!(
            "KDF iterations must be between 1 and {MAX_KDF_ITERATIONS}"
        )));
    }
    Ok(())
}

fn encode(
    vault_key: &VaultKey,
    passphrase: &Passphrase,
    iterations: u32,
    vault_id: [u8; 16],
    entropy: &dyn Entropy,
) -> Vec<u8> {
    let mut b = vec![0u8; AAD_LEN];
    b[0..8].copy_from_slice(MAGIC);
    b[8..10].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&iterations.to_le_bytes());
    b[16..32].copy_from_slice(&vault_id);
    entropy.fill(b"keyring salt", &mut b[32..64]);
    entropy.fill(b"keyring nonce", &mut b[64..76]);
    let kek = kek(passphrase, &array(&b, 32), iterations);
    let mut wrapped = vault_key.as_bytes().to_vec();
    AeadKey::new(CipherId::Aes256Gcm, &kek).seal(&array(&b, 64), &b[..AAD_LEN], &mut wrapped);
    b.extend_from_slice(&wrapped);
    b
}

fn kek(passphrase: &Passphrase, salt: &[u8; 32], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(passphrase.as_bytes(), salt, iterations, k.as_mut());
    k
}

/// Decodes and unwraps a keyring file's bytes. Returns the vault key and the vault id. A
/// passphrase that does not open it is [`Error::WrongKey`] naming `vault`.
fn decode(b: &[u8], passphrase: &Passphrase, vault: &Path) -> Result<(VaultKey, [u8; 16])> {
    if b.len() != KEYRING_LEN || &b[0..8] != MAGIC {
        return Err(Error::corrupt("not a Qeltrix keyring (bad length or magic)"));
    }
    if le_u16(b, 8) != VERSION {
        return Err(Error::corrupt(format!(
            "unsupported keyring version {}",
            le_u16(b, 8)
        )));
    }
    let iterations = le_u32(b, 12);
    if !(1..=MAX_KDF_ITERATIONS).contains(&iterations) {
        return Err(Error::corrupt(format!(
            "keyring asks for {iterations} PBKDF2 iterations"
        )));
    }
    passphrase.check_cost(iterations, "the keyring")?;
    let kek = kek(passphrase, &array(b, 32), iterations);
    let mut wrapped = b[AAD_LEN..].to_vec();
    AeadKey::new(CipherId::Aes256Gcm, &kek)
        .open(&array(b, 64), &b[..AAD_LEN], &mut wrapped)
        .map_err(|_| Error::WrongKey {
            tried: vec![SlotKind::Passphrase],
            lock: Lock::Vault {
                vault: vault.to_path_buf(),
            },
        })?;
    let key = VaultKey::from_bytes(array(&wrapped, 0));
    zeroize::Zeroize::zeroize(&mut wrapped);
    Ok((key, array(b, 16)))
}

/// [`decode`] for the fuzz targets (`src/fuzzing.rs`); returns the vault id. Not an API.
#[doc(hidden)]
pub fn decode_for_fuzzing(bytes: &[u8], passphrase: &Passphrase) -> Result<[u8; 16]> {
    decode(bytes, passphrase, Path::new("fuzz")).map(|(_, id)| id)
}

/// Creates the keyring of a new vault. Refuses if `vault` already has one.
pub fn init(
    vault: &Path,
    passphrase: &Passphrase,
    iterations: u32,
    entropy: &dyn Entropy,
) -> Result<VaultKey> {
    check_iterations(iterations)?;
    let path = keyring_path(vault);
    if path.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} is already an initialised vault",
            vault.display()
        )));
    }
    // Private whatever the umask: a folder others can write lets them swap the keyring.
    use std::os::unix::fs::DirBuilderExt;
    let folder = |dir: &Path| {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io("creating the vault folder", e).in_file(dir))
    };
    folder(vault)?;
    let private = path.parent().expect("keyring path has a parent");
    folder(private)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(private, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("making the folder private", e).in_file(private))?;
    let key = VaultKey::generate(entropy);
    let mut id = [0u8; 16];
    entropy.fill(b"vault id", &mut id);
    // Never replaces: of two concurrent inits, the second fails instead of orphaning the first key.
    crate::storage::atomic::write_file(&path, &encode(&key, passphrase, iterations, id, entropy), false)
        .map_err(|e| match e.root() {
            Error::Exists { .. } => {
                Error::InvalidArgument(format!("{} is already an initialised vault", vault.display()))
            }
            _ => e,
        })?;
    Ok(key)
}

/// Unlocks the vault key with the vault passphrase. A wrong passphrase is [`Error::WrongKey`]
/// with [`Lock::Vault`] naming `vault`; a damaged keyring names the keyring file.
pub fn unlock(vault: &Path, passphrase: &Passphrase) -> Result<VaultKey> {
    let path = keyring_path(vault);
    decode(&read_keyring(&path)?, passphrase, vault)
        .map(|(k, _)| k)
        .map_err(|e| in_keyring(e, &path))
}

/// Names the keyring file in `e`, unless `e` already names the vault (a wrong passphrase).
fn in_keyring(e: Error, path: &Path) -> Error {
    match e {
        e @ Error::WrongKey { .. } => e,
        e => e.in_file(path),
    }
}

/// The keyring file's bytes; a missing file is reported as a folder that is not a vault.
fn read_keyring(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotAVault {
                keyring: path.to_path_buf(),
            }
        } else {
            Error::io("reading the keyring", e).in_file(path)
        }
    })
}

/// Re-wraps the vault key under a new passphrase: a new keyring file written beside the old one,
/// synced, renamed over it, and the folder synced. Containers are not touched.
pub fn change_passphrase(
    vault: &Path,
    old: &Passphrase,
    new: &Passphrase,
    iterations: u32,
    entropy: &dyn Entropy,
) -> Result<()> {
    check_iterations(iterations)?;
    let path = keyring_path(vault);
    // Held from reading the keyring to replacing it: a concurrent change waits, then finds the
    // new keyring, which its old passphrase no longer opens, and fails instead of overwriting.
    read_keyring(&path)?;
    let _lock = lock_keyring(vault)?;
    let (key, id) = decode(&read_keyring(&path)?, old, vault).map_err(|e| in_keyring(e, &path))?;
    write_atomically(&path, &encode(&key, new, iterations, id, entropy))
}

/// Takes the vault's exclusive key-change lock (a `flock` on the `.qeltrix` folder, which holds
/// the keyring; the keyring file itself is replaced by each change, so it cannot carry the lock).
/// Released when the returned handle is dropped.
fn lock_keyring(vault: &Path) -> Result<File> {
    let dir = vault.join(VAULT_DIR);
    let io = |what: &str, e| Error::io(what, e).in_file(&dir);
    let handle = File::open(&dir).map_err(|e| io("opening the vault's key folder", e))?;
    handle.lock().map_err(|e| io("locking the keyring", e))?;
    Ok(handle)
}

/// Writes `bytes` to `path` all or nothing, mode 0600 (see [`crate::storage::atomic`]).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::storage::atomic::write_file(path, bytes, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::SystemEntropy;

    #[test]
    fn init_unlock_and_change_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (Passphrase::new("old"), Passphrase::new("new"));
        let key = init(dir.path(), &old, 1000, &SystemEntropy).unwrap();
        assert_eq!(unlock(dir.path(), &old).unwrap().as_bytes(), key.as_bytes());
        let wrong = unlock(dir.path(), &new).unwrap_err();
        assert!(
            matches!(&wrong, Error::WrongKey { lock: Lock::Vault { vault }, .. } if vault == dir.path()),
            "{wrong:?}"
        );
        assert_eq!(
            wrong.to_string(),
            format!(
                "wrong key: the passphrase does not open vault {}",
                dir.path().display()
            )
        );
        change_passphrase(dir.path(), &old, &new, 1000, &SystemEntropy).unwrap();
        assert_eq!(unlock(dir.path(), &new).unwrap().as_bytes(), key.as_bytes());
        assert!(matches!(
            unlock(dir.path(), &old).unwrap_err().root(),
            Error::WrongKey { .. }
        ));
        assert!(
            init(dir.path(), &old, 1000, &SystemEntropy).is_err(),
            "no second init"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(keyring_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            find_vault(&dir.path().join("sub/file.qltx")),
            None,
            "parent must exist"
        );
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(
            find_vault(&dir.path().join("sub/file.qltx")).unwrap(),
            fs::canonicalize(dir.path()).unwrap()
        );
    }

    #[test]
    fn iteration_counts_that_could_never_unlock_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = Passphrase::new("pw");
        for bad in [0, MAX_KDF_ITERATIONS + 1] {
            let err = init(dir.path(), &p, bad, &SystemEntropy).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
            assert!(!keyring_path(dir.path()).exists());
        }
        init(dir.path(), &p, 10, &SystemEntropy).unwrap();
        let before = fs::read(keyring_path(dir.path())).unwrap();
        for bad in [0, MAX_KDF_ITERATIONS + 1] {
            let err = change_passphrase(dir.path(), &p, &p, bad, &SystemEntropy).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        }
        assert_eq!(fs::read(keyring_path(dir.path())).unwrap(), before);
    }

    #[test]
    fn any_flipped_byte_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = Passphrase::new("pw");
        init(dir.path(), &p, 10, &SystemEntropy).unwrap();
        let good = fs::read(keyring_path(dir.path())).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad, &p, dir.path()).is_err(), "flip at {i} accepted");
        }
        assert!(decode(&good[..100], &p, dir.path()).is_err());
    }
}
