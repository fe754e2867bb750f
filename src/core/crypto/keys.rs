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
const LABEL_FOOTER_MAC_V2: &[u8] = b"qeltrix v2 footer mac key";
const LABEL_CDK: &[u8] = b"qeltrix v1 cdk";
const LABEL_FILE_RECORD: &[u8] = b"qeltrix v2 file record key";
const LABEL_CDK_V2: &[u8] = b"qeltrix v2 cdk";
const LABEL_UNIT_KEY: &[u8] = b"qeltrix v4 unit key";
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
    /// A new random data key from `entropy`.
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut k = [0u8; 32];
        entropy.fill(b"data key", &mut k);
        DataKey(k)
    }
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Key material that does not parse. The text names the expected form, never the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFormatError {
    /// A key file of `len` bytes that are neither 32 raw bytes nor 64 hex digits.
    #[error("a key file holds 32 raw bytes or 64 hex digits; this one has {len} bytes")]
    KeyFile {
        /// Length of the key file in bytes.
        len: usize,
    },
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
    /// A key file key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyFileKey(bytes)
    }

    /// A new random key.
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut k = [0u8; 32];
        entropy.fill(b"key file", &mut k);
        KeyFileKey(k)
    }

    /// The key file's text: 64 hex digits and a newline (what [`KeyFileKey::parse`] reads).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}\n", hex::encode(self.0)))
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

    /// The 32 key bytes.
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
    /// The passphrase `s`, with the default [`KdfLimits`].
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

    /// The KDF work a reader allows for this passphrase.
    pub fn limits(&self) -> KdfLimits {
        self.limits
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
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
    /// A new random vault key from `entropy`.
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut k = [0u8; 32];
        entropy.fill(b"vault key", &mut k);
        VaultKey(k)
    }
    /// The vault key with bytes `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        VaultKey(bytes)
    }
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
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
    /// A new random identity from `entropy`.
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut k = [0u8; 32];
        entropy.fill(b"x25519 identity", &mut k);
        IdentityKey(k)
    }

    /// The public key of this identity, for sealing recipient slots to it.
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

/// What opens a container: a secret that unwraps the data key from one of its key slots.
///
/// Opening takes a `Key`; packing takes [`Recipient`]s. A public X25519 recipient is only a
/// `Recipient`, so opening a container with one does not compile. Every simple `Key` can also
/// be packed to, through [`Recipient::try_from`] (an identity packs to its public key).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Key {
    /// Opens passphrase slots.
    Passphrase(Passphrase),
    /// Opens key-file slots.
    KeyFile(KeyFileKey),
    /// Opens recipient slots made for its public key.
    Identity(IdentityKey),
    /// Opens keyring slots of the vault this key belongs to.
    Vault(VaultKey),
    /// Try each key in turn (e.g. a vault key, then the passphrase itself).
    FirstOf(Vec<Key>),
}

/// What a container is packed to: each recipient gets one key slot. A recipient can only seal;
/// open with a [`Key`].
///
/// ```no_run
/// # use qeltrix::{Container, Key, Recipient, crypto::{IdentityKey, RecipientKey}};
/// # fn demo(public: RecipientKey, me: IdentityKey) -> qeltrix::Result<()> {
/// qeltrix::pack("talk.mp4".as_ref(), "talk.mp4.qltx".as_ref(), &[Recipient::X25519(public)],
///     &Default::default(), false)?;
/// let c = Container::open("talk.mp4.qltx", &Key::Identity(me))?; // the identity opens it
/// # Ok(()) }
/// ```
///
/// Opening with a recipient does not compile:
///
/// ```compile_fail
/// # use qeltrix::{Container, Recipient, crypto::RecipientKey};
/// # fn demo(public: RecipientKey) -> qeltrix::Result<()> {
/// let c = Container::open("talk.mp4.qltx", &Recipient::X25519(public))?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Recipient {
    /// A passphrase slot (PBKDF2, `PackOptions::kdf_iterations`).
    Passphrase(Passphrase),
    /// A key-file slot.
    KeyFile(KeyFileKey),
    /// A recipient slot for this X25519 public key: its identity opens it.
    X25519(RecipientKey),
    /// A keyring slot, opened by this vault key.
    Vault(VaultKey),
}

impl Recipient {
    /// The kind of slot this recipient gets.
    pub fn slot_kind(&self) -> SlotKind {
        match self {
            Recipient::Passphrase(_) => SlotKind::Passphrase,
            Recipient::KeyFile(_) => SlotKind::KeyFile,
            Recipient::X25519(_) => SlotKind::Recipient,
            Recipient::Vault(_) => SlotKind::Keyring,
        }
    }
}

impl From<RecipientKey> for Recipient {
    fn from(r: RecipientKey) -> Self {
        Recipient::X25519(r)
    }
}

impl TryFrom<&Key> for Recipient {
    type Error = crate::Error;
    /// The recipient a key opens: itself for the symmetric keys, the public key of an identity.
    /// A choice of keys (`FirstOf`) has no single recipient.
    fn try_from(key: &Key) -> crate::Result<Self> {
        Ok(match key {
            Key::Passphrase(p) => Recipient::Passphrase(p.clone()),
            Key::KeyFile(k) => Recipient::KeyFile(k.clone()),
            Key::Identity(id) => Recipient::X25519(id.recipient()),
            Key::Vault(v) => Recipient::Vault(v.clone()),
            Key::FirstOf(_) => {
                return Err(crate::Error::InvalidArgument(
                    "a choice of keys cannot be packed to".into(),
                ))
            }
        })
    }
}

impl TryFrom<Key> for Recipient {
    type Error = crate::Error;
    fn try_from(key: Key) -> crate::Result<Self> {
        Recipient::try_from(&key)
    }
}

impl Key {
    /// The kind of slot this key makes or opens (`None` for `FirstOf`).
    pub fn slot_kind(&self) -> Option<SlotKind> {
        match self {
            Key::Passphrase(_) => Some(SlotKind::Passphrase),
            Key::KeyFile(_) => Some(SlotKind::KeyFile),
            Key::Identity(_) => Some(SlotKind::Recipient),
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
                #[cfg(test)]
                SLOT_KDF_RUNS.with(|runs| runs.set(runs.get() + 1));
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
            Key::FirstOf(_) => return None,
        }
        Some(kek)
    }
}

#[cfg(test)]
thread_local! {
    /// Passphrase KDF runs unwrapping slots on this thread: tests count them, never time them.
    pub(crate) static SLOT_KDF_RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
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
    recipient: &Recipient,
    data_key: &DataKey,
    container_id: &ContainerId,
    iterations: u32,
    slot_number: usize,
    entropy: &dyn Entropy,
) -> crate::Result<KeySlot> {
    let kind = recipient.slot_kind();
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
    let symmetric = |key: Key, slot: &mut KeySlot| {
        entropy.fill(format!("slot {slot_number} salt").as_bytes(), &mut slot.salt);
        key.unwrap_kek(slot).expect("symmetric keys always derive a KEK")
    };
    let kek = match recipient {
        Recipient::X25519(recipient) => {
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
        Recipient::Passphrase(p) => symmetric(Key::Passphrase(p.clone()), &mut slot),
        Recipient::KeyFile(k) => symmetric(Key::KeyFile(k.clone()), &mut slot),
        Recipient::Vault(v) => symmetric(Key::Vault(v.clone()), &mut slot),
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
    /// The AEAD sealing blocks and metadata.
    pub cipher: CipherId,
    /// The container's random identifier.
    pub container_id: ContainerId,
    /// The container's data key, from which the other keys derive.
    pub data_key: DataKey,
    /// The key sealing each block's metadata.
    pub meta_key: AeadKey,
    footer_mac_key: Zeroizing<[u8; 32]>,
}

/// Derives the metadata key and footer MAC key of container `container_id` from its data key
/// (HKDF-SHA256, `docs/FORMAT.md`).
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

/// The content key of block `index` in a format-v2 container: v1's derivation under the label
/// `"qeltrix v2 cdk"` (so no key is shared between versions), with the block's BLAKE3 hash.
pub fn derive_cdk_v2(keys: &ContainerKeys, salt: &[u8; 32], index: u64, content_hash: &[u8; 32]) -> AeadKey {
    let mut cdk = Zeroizing::new([0u8; 32]);
    hkdf_expand(
        keys.data_key.as_bytes(),
        salt,
        &[
            LABEL_CDK_V2,
            &keys.container_id,
            &index.to_le_bytes(),
            content_hash,
        ],
        cdk.as_mut(),
    );
    AeadKey::new(keys.cipher, &cdk)
}

/// The key sealing the units of generation `generation`'s patch (format 4, proposed:
/// `docs/design/format-4.md`): `HKDF(MK, patch_salt, "qeltrix v4 unit key" ‖ container_id ‖
/// u64(generation))`. A fresh salt per patch gives each patch its own key.
pub fn derive_unit_key(keys: &ContainerKeys, patch_salt: &[u8; 32], generation: u64) -> AeadKey {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf_expand(
        keys.data_key.as_bytes(),
        patch_salt,
        &[LABEL_UNIT_KEY, &keys.container_id, &generation.to_le_bytes()],
        key.as_mut(),
    );
    AeadKey::new(keys.cipher, &key)
}

/// The key sealing a format-v2 container's file record:
/// `HKDF-SHA256(MK, container_id, "qeltrix v2 file record key")`.
pub fn derive_file_record_key(keys: &ContainerKeys) -> AeadKey {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf_expand(
        keys.data_key.as_bytes(),
        &keys.container_id,
        &[LABEL_FILE_RECORD],
        key.as_mut(),
    );
    AeadKey::new(keys.cipher, &key)
}

fn footer_hmac(keys: &ContainerKeys, header_bound: &[u8], footer_unsigned: &[u8]) -> Hmac<Sha256> {
    hmac_over(keys.footer_mac_key.as_ref(), header_bound, footer_unsigned)
}

fn hmac_over(key: &[u8], header_bound: &[u8], footer_unsigned: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
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

/// The footer MAC of a format-v2 container: v1's HMAC-SHA256 over the header's bound fields and
/// the footer before its MAC, under `HKDF(MK, container_id, "qeltrix v2 footer mac key")`, so
/// that no MAC key is shared between versions. The key is derived per call (one HKDF per footer
/// check), which keeps [`ContainerKeys`] as v1 has it.
fn footer_hmac_v2(keys: &ContainerKeys, header_bound: &[u8], footer_unsigned: &[u8]) -> Hmac<Sha256> {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf_expand(
        keys.data_key.as_bytes(),
        &keys.container_id,
        &[LABEL_FOOTER_MAC_V2],
        key.as_mut(),
    );
    hmac_over(key.as_ref(), header_bound, footer_unsigned)
}

/// The v2 footer MAC (see [`verify_footer_mac_v2`]).
pub fn footer_mac_v2(keys: &ContainerKeys, header_bound: &[u8], footer_unsigned: &[u8]) -> [u8; 32] {
    footer_hmac_v2(keys, header_bound, footer_unsigned)
        .finalize()
        .into_bytes()
        .into()
}

/// Constant-time check of a v2 footer MAC: HMAC-SHA256 under the v2 footer MAC key over the
/// header's bound fields and the footer bytes before the MAC.
pub fn verify_footer_mac_v2(
    keys: &ContainerKeys,
    header_bound: &[u8],
    footer_unsigned: &[u8],
    mac: &[u8; 32],
) -> bool {
    footer_hmac_v2(keys, header_bound, footer_unsigned)
        .verify_slice(mac)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::SeededEntropy;
    use crate::core::format::{SLOT_AAD_LEN, TAG_LEN};

    /// Low, so that every passphrase test stays fast.
    const ITER: u32 = 1000;
    const ID: ContainerId = [0x1d; 16];

    fn data_key() -> DataKey {
        DataKey([0x2d; 32])
    }

    fn entropy() -> SeededEntropy {
        SeededEntropy([5; 32])
    }

    fn pass(s: &str) -> Key {
        Key::Passphrase(Passphrase::new(s))
    }

    fn identity(seed: u8) -> IdentityKey {
        IdentityKey::generate(&SeededEntropy([seed; 32]))
    }

    fn wrap(recipient: &Recipient) -> KeySlot {
        wrap_slot(recipient, &data_key(), &ID, ITER, 0, &entropy()).expect("wraps")
    }

    /// The recipient a key opens.
    fn seal(key: &Key) -> Recipient {
        Recipient::try_from(key).expect("a simple key")
    }

    fn opens(key: &Key, slot: &KeySlot) -> bool {
        match unwrap_slot(key, slot, &ID) {
            Some(k) => {
                assert_eq!(
                    k.as_bytes(),
                    data_key().as_bytes(),
                    "an opened slot gives the data key"
                );
                true
            }
            None => false,
        }
    }

    /// One key of each kind that makes a slot, with a key of the same kind that must not open it.
    fn pairs() -> Vec<(Recipient, Key, Key)> {
        // (wrapping key, opening key, wrong key of the same kind)
        vec![
            (
                seal(&pass("correct horse")),
                pass("correct horse"),
                pass("correct horsE"),
            ),
            (
                Recipient::KeyFile(KeyFileKey::from_bytes([0x42; 32])),
                Key::KeyFile(KeyFileKey::from_bytes([0x42; 32])),
                Key::KeyFile(KeyFileKey::from_bytes([0x43; 32])),
            ),
            (
                Recipient::Vault(VaultKey::from_bytes([0x56; 32])),
                Key::Vault(VaultKey::from_bytes([0x56; 32])),
                Key::Vault(VaultKey::from_bytes([0x57; 32])),
            ),
            (
                Recipient::X25519(identity(1).recipient()),
                Key::Identity(identity(1)),
                Key::Identity(identity(2)),
            ),
            (
                seal(&Key::Identity(identity(3))),
                Key::Identity(identity(3)),
                Key::Identity(identity(4)),
            ),
        ]
    }

    #[test]
    fn a_slot_of_each_kind_round_trips() {
        for (wrapping, opening, _) in pairs() {
            let slot = wrap(&wrapping);
            assert_eq!(slot.kind, wrapping.slot_kind());
            assert!(opens(&opening, &slot), "{:?}", slot.kind);
        }
    }

    #[test]
    fn only_passphrase_slots_carry_an_iteration_count() {
        for (wrapping, _, _) in pairs() {
            let slot = wrap(&wrapping);
            let expected = if slot.kind == SlotKind::Passphrase {
                ITER
            } else {
                0
            };
            assert_eq!(slot.param, expected, "{:?}", slot.kind);
        }
    }

    #[test]
    fn the_wrong_key_of_the_same_kind_gives_none() {
        for (wrapping, _, wrong) in pairs() {
            let slot = wrap(&wrapping);
            assert!(!opens(&wrong, &slot), "{:?}", slot.kind);
        }
    }

    #[test]
    fn a_key_of_another_kind_with_the_same_bytes_gives_none() {
        let key_file = Key::KeyFile(KeyFileKey::from_bytes([0x42; 32]));
        let vault = Key::Vault(VaultKey::from_bytes([0x42; 32]));
        assert!(!opens(&vault, &wrap(&seal(&key_file))));
        assert!(!opens(&key_file, &wrap(&seal(&vault))));
        assert!(!opens(&pass("x"), &wrap(&seal(&key_file))));
    }

    #[test]
    fn changing_a_slot_kind_byte_is_caught_by_the_aad() {
        let mut slot = wrap(&Recipient::KeyFile(KeyFileKey::from_bytes([0x42; 32])));
        slot.kind = SlotKind::Keyring;
        assert!(!opens(&Key::Vault(VaultKey::from_bytes([0x42; 32])), &slot));
    }

    #[test]
    fn a_slot_made_for_a_public_key_opens_with_its_identity_only() {
        // Opening with the public key itself does not compile (see `Recipient`'s docs).
        let id = identity(1);
        let slot = wrap(&Recipient::X25519(id.recipient()));
        assert!(!opens(&Key::Identity(identity(2)), &slot));
        assert!(opens(&Key::Identity(id), &slot));
    }

    #[test]
    fn a_slot_bound_to_another_container_id_fails() {
        for (wrapping, opening, _) in pairs() {
            let slot = wrap(&wrapping);
            let mut other = ID;
            other[15] ^= 1;
            assert!(unwrap_slot(&opening, &slot, &other).is_none(), "{:?}", slot.kind);
        }
    }

    #[test]
    fn editing_any_byte_of_salt_nonce_or_wrapped_key_fails() {
        let key = Key::KeyFile(KeyFileKey::from_bytes([0x42; 32]));
        let good = wrap(&seal(&key));
        for i in 0..32 {
            let mut s = good.clone();
            s.salt[i] ^= 1;
            assert!(!opens(&key, &s), "salt {i}");
        }
        for i in 0..NONCE_LEN {
            let mut s = good.clone();
            s.nonce[i] ^= 1;
            assert!(!opens(&key, &s), "nonce {i}");
        }
        for i in 0..32 + TAG_LEN {
            let mut s = good.clone();
            s.wrapped[i] ^= 1;
            assert!(!opens(&key, &s), "wrapped {i}");
        }
        let mut s = good.clone();
        s.param = 1;
        assert!(!opens(&key, &s), "param");
    }

    #[test]
    fn an_edited_iteration_count_fails_even_with_the_right_passphrase() {
        let key = pass("pw");
        let mut slot = wrap(&seal(&key));
        slot.param = ITER + 1;
        assert!(!opens(&key, &slot));
    }

    #[test]
    fn first_of_tries_each_alternative_in_turn() {
        let slot = wrap(&Recipient::KeyFile(KeyFileKey::from_bytes([0x42; 32])));
        let choice = Key::FirstOf(vec![
            pass("not it"),
            Key::KeyFile(KeyFileKey::from_bytes([0x41; 32])),
            Key::FirstOf(vec![Key::KeyFile(KeyFileKey::from_bytes([0x42; 32]))]),
        ]);
        assert_eq!(choice.slot_kind(), None);
        assert_eq!(choice.alternatives().len(), 3, "nested choices are flattened");
        assert!(opens(&choice, &slot));
        assert!(!opens(&Key::FirstOf(vec![]), &slot));
    }

    #[test]
    fn a_choice_of_keys_cannot_be_wrapped_to() {
        let choice = Key::FirstOf(vec![pass("a")]);
        assert!(Recipient::try_from(&choice).is_err());
    }

    #[test]
    fn a_passphrase_slot_needs_1_to_100_million_iterations() {
        for iterations in [0, MAX_KDF_ITERATIONS + 1, u32::MAX] {
            let r = wrap_slot(&seal(&pass("pw")), &data_key(), &ID, iterations, 0, &entropy());
            assert!(r.is_err(), "{iterations}");
        }
        let key_file = Key::KeyFile(KeyFileKey::from_bytes([1; 32]));
        let slot = wrap_slot(&seal(&key_file), &data_key(), &ID, 0, 0, &entropy()).unwrap();
        assert!(opens(&key_file, &slot), "other kinds ignore the iteration count");
    }

    #[test]
    fn a_slot_above_the_readers_limit_is_refused_unopened_even_with_the_right_passphrase() {
        let slot = wrap(&seal(&pass("pw")));
        let strict = Passphrase::new("pw").with_limits(KdfLimits {
            max_iterations: ITER - 1,
            max_slots: 4,
        });
        assert!(unwrap_slot(&Key::Passphrase(strict.clone()), &slot, &ID).is_none());
        assert_eq!(strict.remembered_failures(), 0, "refused before any work");
        let enough = strict.with_limits(KdfLimits {
            max_iterations: ITER,
            max_slots: 4,
        });
        assert!(opens(&Key::Passphrase(enough), &slot));
    }

    #[test]
    fn a_slot_asking_for_zero_or_more_than_the_format_maximum_is_refused_unopened() {
        let unlimited = Passphrase::new("pw").with_limits(KdfLimits {
            max_iterations: u32::MAX,
            max_slots: 4,
        });
        for param in [0, MAX_KDF_ITERATIONS + 1] {
            let mut slot = wrap(&seal(&pass("pw")));
            slot.param = param;
            assert!(unwrap_slot(&Key::Passphrase(unlimited.clone()), &slot, &ID).is_none());
        }
        assert_eq!(unlimited.remembered_failures(), 0, "no PBKDF2 was run");
    }

    #[test]
    fn a_failed_passphrase_is_remembered_once_per_slot_and_shared_by_clones() {
        let slot = wrap(&seal(&pass("right")));
        let wrong = Passphrase::new("wrong");
        let key = Key::Passphrase(wrong.clone());
        assert!(!opens(&key, &slot));
        assert!(!opens(&key, &slot));
        assert_eq!(wrong.remembered_failures(), 1);
        let other_slot = wrap_slot(&seal(&pass("right")), &data_key(), &ID, ITER, 1, &entropy()).unwrap();
        assert!(!opens(&key, &other_slot));
        assert_eq!(wrong.remembered_failures(), 2);

        let right = Passphrase::new("right");
        assert!(opens(&Key::Passphrase(right.clone()), &slot));
        assert_eq!(right.remembered_failures(), 0, "a success is not a failure");
    }

    #[test]
    fn check_cost_allows_up_to_the_limit_and_refuses_above_it() {
        let p = Passphrase::new("pw");
        assert_eq!(p.limits(), KdfLimits::default());
        assert!(p.check_cost(DEFAULT_MAX_KDF_ITERATIONS, "slot 0").is_ok());
        let e = p
            .check_cost(DEFAULT_MAX_KDF_ITERATIONS + 1, "slot 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("slot 3") && e.contains("2000001"), "{e}");
        let low = p.with_limits(KdfLimits {
            max_iterations: 10,
            max_slots: 1,
        });
        assert!(low.check_cost(10, "keyring").is_ok());
        assert!(low.check_cost(11, "keyring").is_err());
        assert!(low.check_cost(MAX_KDF_ITERATIONS, "keyring").is_err());
    }

    #[test]
    fn the_default_kdf_limits_are_the_documented_numbers() {
        let d = KdfLimits::default();
        assert_eq!((d.max_iterations, d.max_slots), (2_000_000, 4));
        assert_eq!(MAX_KDF_ITERATIONS, 100_000_000);
        assert_eq!(DEFAULT_KDF_ITERATIONS, 600_000);
        const { assert!(KDF_ITERATIONS_FLOOR <= DEFAULT_KDF_ITERATIONS) };
        const { assert!(DEFAULT_KDF_ITERATIONS <= DEFAULT_MAX_KDF_ITERATIONS) };
    }

    #[test]
    fn a_key_file_of_32_raw_bytes_is_taken_as_is() {
        let raw: Vec<u8> = (0..32).collect();
        assert_eq!(
            KeyFileKey::parse(&raw).unwrap().as_bytes().as_slice(),
            raw.as_slice()
        );
        // Even when the 32 bytes happen to be text.
        let text = b"0123456789abcdef0123456789abcdef";
        assert_eq!(KeyFileKey::parse(text).unwrap().as_bytes(), text);
    }

    #[test]
    fn a_key_file_of_64_hex_digits_is_decoded_with_surrounding_whitespace_allowed() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        let lower = hex::encode(key);
        for text in [
            lower.clone(),
            lower.to_uppercase(),
            format!("{lower}\n"),
            format!("  {lower}\r\n"),
            format!("\t{lower} \n\n"),
        ] {
            assert_eq!(
                KeyFileKey::parse(text.as_bytes()).unwrap().as_bytes(),
                &key,
                "{text:?}"
            );
        }
    }

    #[test]
    fn other_key_file_contents_are_refused_without_echoing_them() {
        let hex64 = "ab".repeat(32);
        for bad in [
            Vec::new(),
            vec![7u8; 31],
            vec![7u8; 33],
            vec![7u8; 64],
            hex64.as_bytes()[..63].to_vec(),
            format!("{hex64}0").into_bytes(),
            format!("{}zz", &hex64[..62]).into_bytes(),
            format!("{} {}", &hex64[..32], &hex64[32..]).into_bytes(),
            format!("0x{hex64}").into_bytes(),
        ] {
            let e = KeyFileKey::parse(&bad)
                .err()
                .unwrap_or_else(|| panic!("accepted {bad:?}"))
                .to_string();
            assert!(!e.contains("abab"), "{e}");
            assert!(e.contains(&bad.len().to_string()), "{e}");
        }
    }

    #[test]
    fn a_recipient_prints_and_parses_back() {
        let r = identity(1).recipient();
        let text = r.to_string();
        assert!(text.starts_with("qeltrix-x25519:"));
        assert_eq!(text.len(), "qeltrix-x25519:".len() + 64);
        assert_eq!(text, format!("qeltrix-x25519:{}", hex::encode(r.0)));
        assert_eq!(text.parse::<RecipientKey>().unwrap(), r);
        assert_eq!(format!("  {text}\n").parse::<RecipientKey>().unwrap(), r);
        assert_eq!(format!("{r:?}"), text, "a public key may be printed");
    }

    #[test]
    fn malformed_recipients_are_refused() {
        let hex64 = hex::encode(identity(1).recipient().0);
        for bad in [
            hex64.clone(),
            format!("QELTRIX-X25519:{hex64}"),
            format!("qeltrix-x25519:{}", &hex64[..63]),
            format!("qeltrix-x25519:{hex64}00"),
            format!("qeltrix-x25519:{}gg", &hex64[..62]),
            "qeltrix-x25519:".to_string(),
            String::new(),
        ] {
            assert!(bad.parse::<RecipientKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_identity_file_round_trips_and_names_its_recipient() {
        let id = identity(9);
        let text = id.to_file_text();
        assert!(
            text.contains(&format!("# recipient: {}", id.recipient())),
            "{}",
            *text
        );
        let back = IdentityKey::parse(&text).unwrap();
        assert_eq!(back.0, id.0);
        assert_eq!(back.recipient(), id.recipient());
    }

    #[test]
    fn an_identity_line_is_found_among_other_lines() {
        let id = identity(9);
        let text = format!(
            "# mine\n\n   QELTRIX-X25519-IDENTITY:{}  \n# end\n",
            hex::encode(id.0)
        );
        assert_eq!(IdentityKey::parse(&text).unwrap().0, id.0);
    }

    #[test]
    fn identity_files_without_a_well_formed_identity_line_are_refused() {
        let hex64 = hex::encode(identity(9).0);
        for bad in [
            String::new(),
            "# only a comment\n".to_string(),
            format!("qeltrix-x25519:{hex64}\n"),
            format!("QELTRIX-X25519-IDENTITY:{}\n", &hex64[..62]),
            format!("QELTRIX-X25519-IDENTITY:{hex64}ff\n"),
            format!("QELTRIX-X25519-IDENTITY:{}xy\n", &hex64[..62]),
        ] {
            assert!(IdentityKey::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_identity_is_the_x25519_secret_of_its_recipient() {
        let id = identity(9);
        assert_eq!(
            id.recipient().0,
            x25519_dalek::x25519(id.0, x25519_dalek::X25519_BASEPOINT_BYTES)
        );
        assert_eq!(identity(9).0, id.0, "seeded generation is reproducible");
        assert_ne!(identity(10).0, id.0);
    }

    #[test]
    fn secrets_print_redacted() {
        let key = [0x42u8; 32];
        let printed = [
            format!("{:?}", DataKey(key)),
            format!("{:?}", KeyFileKey::from_bytes(key)),
            format!("{:?}", VaultKey::from_bytes(key)),
            format!("{:?}", IdentityKey(key)),
            format!("{:?}", Passphrase::new("hunter2-secret")),
            format!("{:?}", Key::KeyFile(KeyFileKey::from_bytes(key))),
            format!(
                "{:?}",
                Key::FirstOf(vec![
                    pass("hunter2-secret"),
                    Key::Vault(VaultKey::from_bytes(key))
                ])
            ),
        ];
        for p in printed {
            assert!(p.contains("[redacted]"), "{p}");
            for leak in ["4242", "66, 66", "hunter2", "BBBB"] {
                assert!(!p.contains(leak), "{p} shows {leak}");
            }
        }
        assert_eq!(format!("{:?}", DataKey(key)), "DataKey([redacted])");
    }

    #[test]
    fn data_key_generation_reproduces_the_format_md_test_vector() {
        let k = DataKey::generate(&SeededEntropy([0x11; 32]));
        assert_eq!(
            hex::encode(k.as_bytes()),
            "beded093c917a61d0a7de2e3e658b0a3dd3858cf4cd775f4691e20323d2cfe33"
        );
    }

    #[test]
    fn wrapping_with_seeded_entropy_is_reproducible() {
        for (wrapping, _, _) in pairs() {
            assert_eq!(wrap(&wrapping), wrap(&wrapping));
        }
        let a = wrap_slot(&seal(&pass("pw")), &data_key(), &ID, ITER, 0, &entropy()).unwrap();
        let b = wrap_slot(&seal(&pass("pw")), &data_key(), &ID, ITER, 1, &entropy()).unwrap();
        assert_ne!(a.salt, b.salt, "another slot number draws another salt");
        assert_ne!(a.nonce, b.nonce);
    }

    /// Opens `slot` with a KEK computed here from FORMAT.md alone.
    fn open_with_kek(kek: &[u8; 32], slot: &KeySlot) -> Option<[u8; 32]> {
        let mut aad = ID.to_vec();
        aad.extend_from_slice(&slot.encode()[..SLOT_AAD_LEN]);
        let mut buf = slot.wrapped.to_vec();
        AeadKey::new(CipherId::Aes256Gcm, kek)
            .open(&slot.nonce, &aad, &mut buf)
            .ok()?;
        buf.try_into().ok()
    }

    fn spec_hkdf(ikm: &[u8], salt: &[u8], info: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(Some(salt), ikm)
            .expand(info, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn slots_follow_the_kek_derivations_of_format_md() {
        let want = Some(*data_key().as_bytes());

        let slot = wrap(&seal(&pass("pw")));
        let mut kek = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"pw", &slot.salt, ITER, &mut kek);
        assert_eq!(open_with_kek(&kek, &slot), want, "passphrase");

        let slot = wrap(&Recipient::KeyFile(KeyFileKey::from_bytes([0x42; 32])));
        assert_eq!(
            open_with_kek(
                &spec_hkdf(&[0x42; 32], &slot.salt, b"qeltrix v1 key-file kek"),
                &slot
            ),
            want,
            "key file"
        );

        let slot = wrap(&Recipient::Vault(VaultKey::from_bytes([0x56; 32])));
        assert_eq!(
            open_with_kek(
                &spec_hkdf(&[0x56; 32], &slot.salt, b"qeltrix v1 keyring kek"),
                &slot
            ),
            want,
            "keyring"
        );

        let id = identity(1);
        let r = id.recipient().0;
        let slot = wrap(&Recipient::X25519(id.recipient()));
        let shared = x25519_dalek::x25519(id.0, slot.salt);
        let salt = [slot.salt.as_slice(), r.as_slice()].concat();
        assert_eq!(
            open_with_kek(&spec_hkdf(&shared, &salt, b"qeltrix v1 x25519 kek"), &slot),
            want,
            "recipient"
        );
    }

    #[test]
    fn an_x25519_exchange_giving_an_all_zero_secret_is_rejected() {
        // The identity point: every scalar multiple of it is zero.
        let low_order = RecipientKey([0; 32]);
        let r = wrap_slot(
            &Recipient::X25519(low_order),
            &data_key(),
            &ID,
            ITER,
            0,
            &entropy(),
        );
        assert!(r.is_err());
        let mut slot = wrap(&Recipient::X25519(identity(1).recipient()));
        slot.salt = [0; 32];
        assert!(!opens(&Key::Identity(identity(1)), &slot));
    }

    #[test]
    fn container_keys_are_deterministic_in_data_key_cipher_and_id() {
        let a = derive_container_keys(data_key(), CipherId::ChaCha20Poly1305, ID);
        let b = derive_container_keys(data_key(), CipherId::ChaCha20Poly1305, ID);
        assert_eq!(a.cipher, CipherId::ChaCha20Poly1305);
        assert_eq!(a.container_id, ID);
        assert_eq!(footer_mac(&a, b"h", b"f"), footer_mac(&b, b"h", b"f"));
        let mut data = b"metadata".to_vec();
        a.meta_key.seal(&[1; 12], b"aad", &mut data);
        b.meta_key.open(&[1; 12], b"aad", &mut data).unwrap();
        assert_eq!(data, b"metadata");

        let mut other_id = ID;
        other_id[0] ^= 1;
        let c = derive_container_keys(data_key(), CipherId::ChaCha20Poly1305, other_id);
        let d = derive_container_keys(DataKey([0x2e; 32]), CipherId::ChaCha20Poly1305, ID);
        assert_ne!(footer_mac(&a, b"h", b"f"), footer_mac(&c, b"h", b"f"));
        assert_ne!(footer_mac(&a, b"h", b"f"), footer_mac(&d, b"h", b"f"));
    }

    #[test]
    fn the_metadata_key_is_the_hkdf_of_format_md() {
        for cipher in [CipherId::Aes256Gcm, CipherId::ChaCha20Poly1305] {
            let keys = derive_container_keys(data_key(), cipher, ID);
            let spec = AeadKey::new(cipher, &spec_hkdf(&[0x2d; 32], &ID, b"qeltrix v1 metadata key"));
            let mut data = b"meta".to_vec();
            keys.meta_key.seal(&[2; 12], b"", &mut data);
            spec.open(&[2; 12], b"", &mut data).unwrap();
            assert_eq!(data, b"meta");
        }
    }

    #[test]
    fn the_footer_mac_is_the_hmac_of_format_md() {
        let keys = derive_container_keys(data_key(), CipherId::Aes256Gcm, ID);
        let mac_key = spec_hkdf(&[0x2d; 32], &ID, b"qeltrix v1 footer mac key");
        let mut spec = <Hmac<Sha256> as KeyInit>::new_from_slice(&mac_key).unwrap();
        spec.update(b"bound header fieldsfooter bytes");
        let expected: [u8; 32] = spec.finalize().into_bytes().into();
        assert_eq!(
            footer_mac(&keys, b"bound header fields", b"footer bytes"),
            expected
        );
    }

    #[test]
    fn the_v2_footer_mac_is_the_hmac_under_the_v2_label_and_differs_from_v1() {
        const H: &[u8] = b"bound header fields";
        const F: &[u8] = b"footer bytes";
        let keys = derive_container_keys(data_key(), CipherId::Aes256Gcm, ID);
        let mac_key = spec_hkdf(&[0x2d; 32], &ID, b"qeltrix v2 footer mac key");
        let mut spec = <Hmac<Sha256> as KeyInit>::new_from_slice(&mac_key).unwrap();
        spec.update(b"bound header fieldsfooter bytes");
        let expected: [u8; 32] = spec.finalize().into_bytes().into();
        let mac = footer_mac_v2(&keys, H, F);
        assert_eq!(mac, expected);
        assert_ne!(mac, footer_mac(&keys, H, F));
        assert!(verify_footer_mac_v2(&keys, H, F, &mac));
        // A v1 MAC does not pass as a v2 one, nor the other way round.
        let v1 = footer_mac(&keys, H, F);
        assert!(!verify_footer_mac_v2(&keys, H, F, &v1));
        assert!(!verify_footer_mac(&keys, H, F, &mac));
        let other = derive_container_keys(DataKey([0x2e; 32]), CipherId::Aes256Gcm, ID);
        assert!(!verify_footer_mac_v2(&other, H, F, &mac));
    }

    #[test]
    fn the_footer_mac_verifies_and_fails_on_any_flipped_byte() {
        let keys = derive_container_keys(data_key(), CipherId::Aes256Gcm, ID);
        let bound: Vec<u8> = (0..40).collect();
        let footer: Vec<u8> = (100..188).collect();
        let mac = footer_mac(&keys, &bound, &footer);
        assert!(verify_footer_mac(&keys, &bound, &footer, &mac));
        for i in 0..bound.len() {
            let mut b = bound.clone();
            b[i] ^= 1;
            assert!(!verify_footer_mac(&keys, &b, &footer, &mac), "bound byte {i}");
        }
        for i in 0..footer.len() {
            let mut f = footer.clone();
            f[i] ^= 0x80;
            assert!(!verify_footer_mac(&keys, &bound, &f, &mac), "footer byte {i}");
        }
        for i in 0..32 {
            let mut m = mac;
            m[i] ^= 1;
            assert!(!verify_footer_mac(&keys, &bound, &footer, &m), "mac byte {i}");
        }
        assert!(
            !verify_footer_mac(&keys, &bound, &footer[..87], &mac),
            "truncated footer"
        );
        let other = derive_container_keys(DataKey([0x2e; 32]), CipherId::Aes256Gcm, ID);
        assert!(
            !verify_footer_mac(&other, &bound, &footer, &mac),
            "another container's key"
        );
    }

    #[test]
    fn the_block_key_is_the_hkdf_of_format_md_and_binds_index_hash_salt_and_id() {
        let keys = derive_container_keys(data_key(), CipherId::ChaCha20Poly1305, ID);
        let (salt, hash) = ([0x5a; 32], [0x4a; 32]);
        let info = [&b"qeltrix v1 cdk"[..], &ID, &7u64.to_le_bytes(), &hash].concat();
        let spec = AeadKey::new(CipherId::ChaCha20Poly1305, &spec_hkdf(&[0x2d; 32], &salt, &info));
        let mut sealed = b"block".to_vec();
        spec.seal(&[3; 12], b"", &mut sealed);

        let mut data = sealed.clone();
        derive_cdk(&keys, &salt, 7, &hash)
            .open(&[3; 12], b"", &mut data)
            .unwrap();
        assert_eq!(data, b"block");

        let mut other_id = ID;
        other_id[3] ^= 1;
        let other_container = derive_container_keys(data_key(), CipherId::ChaCha20Poly1305, other_id);
        let mut other_hash = hash;
        other_hash[31] ^= 1;
        let mut other_salt = salt;
        other_salt[0] ^= 1;
        for (what, cdk) in [
            ("index", derive_cdk(&keys, &salt, 8, &hash)),
            ("hash", derive_cdk(&keys, &salt, 7, &other_hash)),
            ("salt", derive_cdk(&keys, &other_salt, 7, &hash)),
            ("container", derive_cdk(&other_container, &salt, 7, &hash)),
        ] {
            let mut data = sealed.clone();
            assert_eq!(
                cdk.open(&[3; 12], b"", &mut data),
                Err(super::super::AuthFailed),
                "{what}"
            );
        }
    }

    #[test]
    fn the_v2_block_key_is_the_hkdf_of_the_design_and_differs_from_v1() {
        let keys = derive_container_keys(data_key(), CipherId::Aes256Gcm, ID);
        let (salt, hash) = ([0x5a; 32], [0x4a; 32]);
        let info = [&b"qeltrix v2 cdk"[..], &ID, &7u64.to_le_bytes(), &hash].concat();
        let spec = AeadKey::new(CipherId::Aes256Gcm, &spec_hkdf(&[0x2d; 32], &salt, &info));
        let mut sealed = b"block".to_vec();
        spec.seal(&[3; 12], b"", &mut sealed);
        let mut data = sealed.clone();
        derive_cdk_v2(&keys, &salt, 7, &hash)
            .open(&[3; 12], b"", &mut data)
            .unwrap();
        assert_eq!(data, b"block");
        for (what, cdk) in [
            ("v1 label", derive_cdk(&keys, &salt, 7, &hash)),
            ("index", derive_cdk_v2(&keys, &salt, 8, &hash)),
        ] {
            let mut data = sealed.clone();
            assert_eq!(
                cdk.open(&[3; 12], b"", &mut data),
                Err(super::super::AuthFailed),
                "{what}"
            );
        }
    }

    #[test]
    fn a_unit_opens_only_under_its_own_patch_key_nonce_and_aad() {
        use crate::core::format::{unit_aad, unit_nonce, UnitEntry};
        let keys = derive_container_keys(data_key(), CipherId::ChaCha20Poly1305, ID);
        let salt = [0x6b; 32];
        let info = [&b"qeltrix v4 unit key"[..], &ID, &9u64.to_le_bytes()].concat();
        let spec = AeadKey::new(CipherId::ChaCha20Poly1305, &spec_hkdf(&[0x2d; 32], &salt, &info));
        let base = [7; 12];
        let unit = UnitEntry {
            plain_offset: 8192,
            offset: 5000,
            len: 4096,
            unit_hash: [0; 32],
        };
        let mut sealed = vec![0x42; 4096];
        spec.seal(&unit_nonce(&base, 3), &unit_aad(&ID, 9, 3, &unit), &mut sealed);
        let open = |key: &AeadKey, k: u32, generation: u64, unit: &UnitEntry| {
            let mut data = sealed.clone();
            key.open(
                &unit_nonce(&base, k),
                &unit_aad(&ID, generation, k, unit),
                &mut data,
            )
            .map(|()| data)
        };
        assert_eq!(
            open(&derive_unit_key(&keys, &salt, 9), 3, 9, &unit),
            Ok(vec![0x42; 4096])
        );
        let moved = UnitEntry {
            plain_offset: 12288,
            ..unit
        };
        for (what, key, k, generation, unit) in [
            (
                "older generation's key",
                derive_unit_key(&keys, &salt, 8),
                3,
                9,
                unit,
            ),
            (
                "another patch's salt",
                derive_unit_key(&keys, &[0x6c; 32], 9),
                3,
                9,
                unit,
            ),
            ("another position", derive_unit_key(&keys, &salt, 9), 4, 9, unit),
            (
                "another generation in the AAD",
                derive_unit_key(&keys, &salt, 9),
                3,
                8,
                unit,
            ),
            (
                "another plaintext offset",
                derive_unit_key(&keys, &salt, 9),
                3,
                9,
                moved,
            ),
        ] {
            assert_eq!(
                open(&key, k, generation, &unit),
                Err(super::super::AuthFailed),
                "{what}"
            );
        }
    }

    #[test]
    fn key_kinds_map_to_slot_kinds() {
        assert_eq!(pass("a").slot_kind(), Some(SlotKind::Passphrase));
        assert_eq!(
            Key::KeyFile(KeyFileKey::from_bytes([0; 32])).slot_kind(),
            Some(SlotKind::KeyFile)
        );
        assert_eq!(
            Key::Vault(VaultKey::from_bytes([0; 32])).slot_kind(),
            Some(SlotKind::Keyring)
        );
        assert_eq!(Key::Identity(identity(1)).slot_kind(), Some(SlotKind::Recipient));
        assert_eq!(
            Recipient::X25519(identity(1).recipient()).slot_kind(),
            SlotKind::Recipient
        );
    }
}
