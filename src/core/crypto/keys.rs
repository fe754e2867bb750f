//! Secret types and every derivation from them. Secrets zeroize on drop and print as `[redacted]`.

use super::{AeadKey, Entropy};
use crate::core::format::{CipherId, ContainerId, KeySlot, SlotKind, NONCE_LEN};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use lru::LruCache;
use sha2::Sha256;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// PBKDF2 iterations for new passphrase slots (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
pub const DEFAULT_KDF_ITERATIONS: u32 = 600_000;
/// The format's ceiling: no slot or keyring may ask for more (writers refuse to make one).
pub const MAX_KDF_ITERATIONS: u32 = 100_000_000;
/// Readers' default cap on the PBKDF2 iterations they will run for one slot or keyring. The count
/// comes from a header that nothing has authenticated yet, so an edited or planted container must
/// not be able to make `open` burn CPU: above this, a slot is refused without any work.
/// `--max-kdf-iterations` raises it for containers the user made with a higher cost.
pub const DEFAULT_MAX_KDF_ITERATIONS: u32 = 2_000_000;
/// Readers' default cap on the passphrase slots tried per container.
pub const DEFAULT_MAX_PASSPHRASE_SLOTS: usize = 4;
/// Below this, writers warn that a passphrase becomes cheap to guess.
pub const KDF_ITERATIONS_FLOOR: u32 = 100_000;
/// Failed (slot, passphrase) pairs remembered per passphrase, so a planted container read again
/// and again (a mount rescan, each HTTP request) costs its PBKDF2 once.
const REMEMBERED_FAILURES: usize = 4096;

const LABEL_META_KEY: &[u8] = b"qeltrix v1 metadata key";
const LABEL_FOOTER_MAC: &[u8] = b"qeltrix v1 footer mac key";
const LABEL_CDK: &[u8] = b"qeltrix v1 cdk";
const LABEL_KEY_FILE_KEK: &[u8] = b"qeltrix v1 key-file kek";

macro_rules! secret_debug {
    ($t:ty) => {
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($t), "([redacted])"))
            }
        }
    };
}

/// The container's random data key (the seeds' "master key"). Never written in the clear.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);
secret_debug!(DataKey);

impl DataKey {
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut k = [0u8; 32];
        entropy.fill(b"data key", &mut k);
        DataKey(k)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Key material that does not parse. The text names the expected form, never the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFormatError {
    /// A key file of `len` bytes that are neither 32 raw bytes nor 64 hex digits.
    #[error("a key file holds 32 raw bytes or 64 hex digits; this one has {len} bytes")]
    KeyFile { len: usize },
    /// An identity file without its secret line.
    #[error("no {IDENTITY_PREFIX} line with 64 hex digits")]
    Identity,
    /// A recipient string of the wrong form.
    #[error("a recipient is {RECIPIENT_PREFIX} followed by 64 hex digits")]
    Recipient,
}

/// A 32-byte key from a key file.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyFileKey([u8; 32]);
secret_debug!(KeyFileKey);

impl KeyFileKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyFileKey(bytes)
    }

    /// Parses a key file's contents: exactly 32 raw bytes, or 64 hex digits (surrounding
    /// whitespace allowed).
    pub fn parse(contents: &[u8]) -> Result<Self, KeyFormatError> {
        if contents.len() == 32 {
            let mut k = [0u8; 32];
            k.copy_from_slice(contents);
            return Ok(KeyFileKey(k));
        }
        let text = Zeroizing::new(String::from_utf8_lossy(contents).trim().to_string());
        let mut k = [0u8; 32];
        if text.len() == 64 && hex::decode_to_slice(text.as_bytes(), &mut k).is_ok() {
            return Ok(KeyFileKey(k));
        }
        k.zeroize();
        Err(KeyFormatError::KeyFile { len: contents.len() })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// How much key-derivation work a reader will do for one container (see
/// [`DEFAULT_MAX_KDF_ITERATIONS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfLimits {
    /// PBKDF2 iterations per slot (or keyring); a slot asking for more is refused unopened.
    pub max_iterations: u32,
    /// Passphrase slots tried per container; the rest are refused unopened.
    pub max_slots: usize,
}

impl Default for KdfLimits {
    fn default() -> Self {
        KdfLimits {
            max_iterations: DEFAULT_MAX_KDF_ITERATIONS,
            max_slots: DEFAULT_MAX_PASSPHRASE_SLOTS,
        }
    }
}

/// A passphrase, as UTF-8 bytes, with the KDF work its reader allows and the slots it is known
/// not to open (shared by its clones).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Passphrase {
    secret: String,
    #[zeroize(skip)]
    limits: KdfLimits,
    #[zeroize(skip)]
    failures: Arc<Mutex<LruCache<[u8; 32], ()>>>,
}
secret_debug!(Passphrase);

impl Passphrase {
    pub fn new(s: impl Into<String>) -> Self {
        Passphrase {
            secret: s.into(),
            limits: KdfLimits::default(),
            failures: Arc::new(Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED_FAILURES).expect("non-zero"),
            ))),
        }
    }

    /// The same passphrase with other reader limits.
    pub fn with_limits(mut self, limits: KdfLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> KdfLimits {
        self.limits
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    /// Refuses a KDF cost above this reader's limit, naming `what` asks for it.
    pub fn check_cost(&self, iterations: u32, what: &str) -> crate::Result<()> {
        if iterations > self.limits.max_iterations {
            return Err(crate::Error::KdfTooCostly {
                what: what.into(),
                iterations,
                limit: self.limits.max_iterations,
            });
        }
        Ok(())
    }

    /// How many (container, slot) pairs this passphrase is known not to open.
    #[doc(hidden)]
    pub fn remembered_failures(&self) -> usize {
        self.failures().len()
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, LruCache<[u8; 32], ()>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A vault key: random, kept wrapped in the vault's keyring, and wrapping each container's data
/// key in a keyring slot. One PBKDF2 unlocks it; every container then costs one HKDF.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct VaultKey([u8; 32]);
secret_debug!(VaultKey);

impl VaultKey {
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut k = [0u8; 32];
        entropy.fill(b"vault key", &mut k);
        VaultKey(k)
    }
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        VaultKey(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

const RECIPIENT_PREFIX: &str = "qeltrix-x25519:";
const IDENTITY_PREFIX: &str = "QELTRIX-X25519-IDENTITY:";

/// A recipient's X25519 public key. Holding it lets you encrypt to its owner, never decrypt.
#[derive(Clone, PartialEq, Eq)]
pub struct RecipientKey([u8; 32]);

impl fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for RecipientKey {
    /// `qeltrix-x25519:` followed by the public key in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{RECIPIENT_PREFIX}{}", hex::encode(self.0))
    }
}

impl std::str::FromStr for RecipientKey {
    type Err = KeyFormatError;
    fn from_str(s: &str) -> Result<Self, KeyFormatError> {
        let mut k = [0u8; 32];
        match s.trim().strip_prefix(RECIPIENT_PREFIX) {
            Some(h) if h.len() == 64 && hex::decode_to_slice(h, &mut k).is_ok() => Ok(RecipientKey(k)),
            _ => Err(KeyFormatError::Recipient),
        }
    }
}

/// An X25519 identity (private key): opens recipient slots made for its public key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IdentityKey([u8; 32]);
secret_debug!(IdentityKey);

impl IdentityKey {
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut k = [0u8; 32];
        entropy.fill(b"x25519 identity", &mut k);
        IdentityKey(k)
    }

    pub fn recipient(&self) -> RecipientKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        RecipientKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    /// The identity file's text: a comment naming the recipient, then the secret line.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "# qeltrix X25519 identity\n# recipient: {}\n{IDENTITY_PREFIX}{}\n",
            self.recipient(),
            hex::encode(self.0)
        ))
    }

    /// Parses an identity file: the first line starting with the identity prefix.
    pub fn parse(text: &str) -> Result<Self, KeyFormatError> {
        let mut k = [0u8; 32];
        let line = text.lines().find_map(|l| l.trim().strip_prefix(IDENTITY_PREFIX));
        match line {
            Some(h) if h.len() == 64 && hex::decode_to_slice(h, &mut k).is_ok() => Ok(IdentityKey(k)),
            _ => Err(KeyFormatError::Identity),
        }
    }
}

/// Something that opens (or, when packing, gets) a key slot.
#[derive(Clone, Debug)]
pub enum Key {
    Passphrase(Passphrase),
    KeyFile(KeyFileKey),
    /// Packing only: wraps to a public key, which cannot open anything.
    Recipient(RecipientKey),
    /// Opens recipient slots made for its public key (and, packing, wraps to it).
    Identity(IdentityKey),
    Vault(VaultKey),
    /// Opening: try each key in turn (e.g. a vault key, then the passphrase itself).
    FirstOf(Vec<Key>),
}

impl Key {
    /// The kind of slot this key makes or opens (`None` for `FirstOf`).
    pub fn slot_kind(&self) -> Option<SlotKind> {
        match self {
            Key::Passphrase(_) => Some(SlotKind::Passphrase),
            Key::KeyFile(_) => Some(SlotKind::KeyFile),
            Key::Recipient(_) | Key::Identity(_) => Some(SlotKind::Recipient),
            Key::Vault(_) => Some(SlotKind::Keyring),
            Key::FirstOf(_) => None,
        }
    }

    /// Every simple key inside (flattening `FirstOf`).
    pub fn alternatives(&self) -> Vec<&Key> {
        match self {
            Key::FirstOf(keys) => keys.iter().flat_map(|k| k.alternatives()).collect(),
            k => vec![k],
        }
    }

    /// The key-encryption key for opening `slot` (a slot of this key's kind).
    fn unwrap_kek(&self, slot: &KeySlot) -> Option<Zeroizing<[u8; 32]>> {
        let mut kek = Zeroizing::new([0u8; 32]);
        match self {
            Key::Passphrase(p) => {
                pbkdf2::pbkdf2_hmac::<Sha256>(p.as_bytes(), &slot.salt, slot.param, kek.as_mut())
            }
            Key::KeyFile(k) => hkdf_expand(k.as_bytes(), &slot.salt, &[LABEL_KEY_FILE_KEK], kek.as_mut()),
            Key::Vault(v) => hkdf_expand(v.as_bytes(), &slot.salt, &[LABEL_KEYRING_KEK], kek.as_mut()),
            Key::Identity(id) => {
                let secret = x25519_dalek::StaticSecret::from(id.0);
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(slot.salt));
                if !shared.was_contributory() {
                    return None;
                }
                x25519_kek(shared.as_bytes(), &slot.salt, &id.recipient().0, kek.as_mut());
            }
            Key::Recipient(_) | Key::FirstOf(_) => return None,
        }
        Some(kek)
    }
}

const LABEL_KEYRING_KEK: &[u8] = b"qeltrix v1 keyring kek";
const LABEL_X25519_KEK: &[u8] = b"qeltrix v1 x25519 kek";

/// KEK for a recipient slot: HKDF(shared secret, ephemeral public ‖ recipient public, label).
fn x25519_kek(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32], out: &mut [u8]) {
    let salt = [ephemeral.as_slice(), recipient.as_slice()].concat();
    hkdf_expand(shared, &salt, &[LABEL_X25519_KEK], out);
}

fn hkdf_expand(ikm: &[u8], salt: &[u8], info: &[&[u8]], out: &mut [u8]) {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand_multi_info(info, out)
        .expect("HKDF output of 32 bytes is always allowed");
}

fn slot_aad(container_id: &ContainerId, slot: &KeySlot) -> Vec<u8> {
    let mut aad = container_id.to_vec();
    aad.extend_from_slice(&slot.aad_fields());
    aad
}

/// Wraps `data_key` into a new slot for `key`. For a passphrase, `iterations` PBKDF2 rounds.
/// `slot_number` only names the purpose of the random values drawn.
pub fn wrap_slot(
    key: &Key,
    data_key: &DataKey,
    container_id: &ContainerId,
    iterations: u32,
    slot_number: usize,
    entropy: &dyn Entropy,
) -> crate::Result<KeySlot> {
    let kind = key
        .slot_kind()
        .ok_or_else(|| crate::Error::InvalidArgument("a choice of keys cannot be wrapped to".into()))?;
    if kind == SlotKind::Passphrase && !(1..=MAX_KDF_ITERATIONS).contains(&iterations) {
        // Such a slot could never be opened: unwrap_slot refuses its iteration count.
        return Err(crate::Error::InvalidArgument(format!(
            "KDF iterations must be between 1 and {MAX_KDF_ITERATIONS}"
        )));
    }
    let mut slot = KeySlot {
        kind,
        param: if kind == SlotKind::Passphrase {
            iterations
        } else {
            0
        },
        salt: [0; 32],
        nonce: [0; NONCE_LEN],
        wrapped: [0; 48],
    };
    entropy.fill(format!("slot {slot_number} nonce").as_bytes(), &mut slot.nonce);
    let kek = match key {
        Key::Recipient(_) | Key::Identity(_) => {
            let recipient = match key {
                Key::Identity(id) => id.recipient(),
                Key::Recipient(r) => r.clone(),
                _ => unreachable!("matched above"),
            };
            let mut e = Zeroizing::new([0u8; 32]);
            entropy.fill(format!("slot {slot_number} ephemeral").as_bytes(), e.as_mut());
            let ephemeral = x25519_dalek::StaticSecret::from(*e);
            slot.salt = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
            let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(recipient.0));
            if !shared.was_contributory() {
                return Err(crate::Error::InvalidArgument(format!(
                    "{recipient} is not a valid X25519 public key"
                )));
            }
            let mut kek = Zeroizing::new([0u8; 32]);
            x25519_kek(shared.as_bytes(), &slot.salt, &recipient.0, kek.as_mut());
            kek
        }
        _ => {
            entropy.fill(format!("slot {slot_number} salt").as_bytes(), &mut slot.salt);
            key.unwrap_kek(&slot).expect("symmetric keys always derive a KEK")
        }
    };
    let mut buf = data_key.as_bytes().to_vec();
    AeadKey::new(CipherId::Aes256Gcm, &kek).seal(&slot.nonce, &slot_aad(container_id, &slot), &mut buf);
    slot.wrapped.copy_from_slice(&buf);
    buf.zeroize();
    Ok(slot)
}

/// Tries to unwrap the data key from `slot` with `key` (each alternative of a `FirstOf` in turn).
/// `None` if the slot is of another kind, asks for an out-of-range iteration count (the format's,
/// or above the passphrase's [`KdfLimits`]), is one this passphrase already failed to open, or
/// does not authenticate (wrong key or edited slot).
pub fn unwrap_slot(key: &Key, slot: &KeySlot, container_id: &ContainerId) -> Option<DataKey> {
    key.alternatives().into_iter().find_map(|k| {
        if k.slot_kind() != Some(slot.kind) {
            return None;
        }
        let mut remembered = None;
        if let Key::Passphrase(p) = k {
            if !(1..=MAX_KDF_ITERATIONS.min(p.limits.max_iterations)).contains(&slot.param) {
                return None;
            }
            let id = slot_fingerprint(container_id, slot);
            if p.failures().get(&id).is_some() {
                return None;
            }
            remembered = Some((p, id));
        }
        let kek = k.unwrap_kek(slot)?;
        let mut buf = slot.wrapped.to_vec();
        let opened = AeadKey::new(CipherId::Aes256Gcm, &kek).open(
            &slot.nonce,
            &slot_aad(container_id, slot),
            &mut buf,
        );
        let result = opened.ok().map(|()| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&buf);
            DataKey(k)
        });
        buf.zeroize();
        if let (None, Some((p, id))) = (&result, remembered) {
            p.failures().put(id, ());
        }
        result
    })
}

/// Names a slot of a container: SHA-256 of the container id and the slot's bytes.
fn slot_fingerprint(container_id: &ContainerId, slot: &KeySlot) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(container_id);
    h.update(slot.encode());
    h.finalize().into()
}

/// The keys one container uses, all derived from its data key.
pub struct ContainerKeys {
    pub cipher: CipherId,
    pub container_id: ContainerId,
    pub data_key: DataKey,
    pub meta_key: AeadKey,
    footer_mac_key: Zeroizing<[u8; 32]>,
}

pub fn derive_container_keys(
    data_key: DataKey,
    cipher: CipherId,
    container_id: ContainerId,
) -> ContainerKeys {
    let mut meta = Zeroizing::new([0u8; 32]);
    hkdf_expand(
        data_key.as_bytes(),
        &container_id,
        &[LABEL_META_KEY],
        meta.as_mut(),
    );
    let mut mac = Zeroizing::new([0u8; 32]);
    hkdf_expand(
        data_key.as_bytes(),
        &container_id,
        &[LABEL_FOOTER_MAC],
        mac.as_mut(),
    );
    ContainerKeys {
        cipher,
        container_id,
        meta_key: AeadKey::new(cipher, &meta),
        data_key,
        footer_mac_key: mac,
    }
}

/// The block's content key: HKDF-SHA256(MK, salt, label ‖ container_id ‖ index ‖ content hash).
/// Binding the index and the hash means a block moved elsewhere, or with other content, gets a
/// different key and fails to authenticate.
pub fn derive_cdk(keys: &ContainerKeys, salt: &[u8; 32], index: u64, content_hash: &[u8; 32]) -> AeadKey {
    let mut cdk = Zeroizing::new([0u8; 32]);
    hkdf_expand(
        keys.data_key.as_bytes(),
        salt,
        &[LABEL_CDK, &keys.container_id, &index.to_le_bytes(), content_hash],
        cdk.as_mut(),
    );
    AeadKey::new(keys.cipher, &cdk)
}

fn footer_hmac(keys: &ContainerKeys, header_bound: &[u8], footer_unsigned: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(keys.footer_mac_key.as_ref())
        .expect("HMAC takes keys of any length");
    mac.update(header_bound);
    mac.update(footer_unsigned);
    mac
}

/// HMAC-SHA256 over the header's bound fields and the footer (without its MAC).
pub fn footer_mac(keys: &ContainerKeys, header_bound: &[u8], footer_unsigned: &[u8]) -> [u8; 32] {
    footer_hmac(keys, header_bound, footer_unsigned)
        .finalize()
        .into_bytes()
        .into()
}

/// Constant-time check of a footer MAC.
pub fn verify_footer_mac(
    keys: &ContainerKeys,
    header_bound: &[u8],
    footer_unsigned: &[u8],
    mac: &[u8; 32],
) -> bool {
    footer_hmac(keys, header_bound, footer_unsigned)
        .verify_slice(mac)
        .is_ok()
}
