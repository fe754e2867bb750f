//! Keys, key derivation, AEAD and MAC. Pure functions over bytes: no I/O and no knowledge of files.
//!
//! The hierarchy (see `docs/FORMAT.md` and `docs/KEYS.md`):
//! ```text
//! passphrase --PBKDF2--> KEK --\
//! key file  ---HKDF----> KEK ---+--AES-256-GCM unwrap--> data key (MK, random per container)
//!                                                          |-HKDF-> metadata key
//!                                                          |-HKDF-> footer MAC key
//!                                                          '-HKDF(salt, id, index, hash)-> CDK per block
//! ```

mod aead;
mod entropy;
mod keys;
mod signer;

pub use aead::{AeadKey, AuthFailed};
pub use entropy::{Entropy, SeededEntropy, SystemEntropy};
#[cfg(test)]
pub(crate) use keys::SLOT_KDF_RUNS;
pub use keys::{
    derive_cdk, derive_cdk_v2, derive_container_keys, derive_file_record_key, derive_unit_key, footer_mac,
    footer_mac_v2, unwrap_slot, verify_footer_mac, verify_footer_mac_v2, wrap_slot, ContainerKeys, DataKey,
    IdentityKey, KdfLimits, Key, KeyFileKey, KeyFormatError, Passphrase, Recipient, RecipientKey, VaultKey,
    DEFAULT_KDF_ITERATIONS, DEFAULT_MAX_KDF_ITERATIONS, DEFAULT_MAX_PASSPHRASE_SLOTS, KDF_ITERATIONS_FLOOR,
    MAX_KDF_ITERATIONS,
};
pub use signer::{SignerFormatError, SignerKey, SignerPublic, SIGNATURE_BYTES};
