//! Ed25519 signer keys (`qeltrix keygen --ed25519`), their public strings, and the sign and
//! verify calls of signed containers. The primitive is ed25519-dalek's; this module only names
//! keys and reads and writes their text forms.

use super::Entropy;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const PUBLIC_PREFIX: &str = "qeltrix-ed25519:";
const SECRET_PREFIX: &str = "QELTRIX-ED25519-SIGNING-KEY:";

/// Length of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// What is wrong with a signer key file or a public signer string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignerFormatError {
    /// A signing key file without its secret line.
    #[error(
        "a signing key file has a {SECRET_PREFIX} line with 64 hex digits (from `qeltrix keygen --ed25519`)"
    )]
    SigningKey,
    /// A public signer string of the wrong form, or not a point of the curve.
    #[error("a signer is {PUBLIC_PREFIX} followed by 64 hex digits of an Ed25519 public key")]
    Public,
}

/// A signer's Ed25519 public key: checks signatures, never makes them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignerPublic([u8; 32]);

impl SignerPublic {
    /// The key from its 32 bytes, if they encode a point of the curve.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, SignerFormatError> {
        VerifyingKey::from_bytes(&bytes).map_err(|_| SignerFormatError::Public)?;
        Ok(SignerPublic(bytes))
    }

    /// The key's 32 bytes, as stored in a signature record.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// True when `signature` is this key's Ed25519 signature of `message`, by the strict rules
    /// (no malleable `s`, no small-order key or `R`).
    pub fn verifies(&self, message: &[u8], signature: &[u8; SIGNATURE_BYTES]) -> bool {
        VerifyingKey::from_bytes(&self.0)
            .and_then(|k| k.verify_strict(message, &Signature::from_bytes(signature)))
            .is_ok()
    }
}

impl fmt::Debug for SignerPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for SignerPublic {
    /// `qeltrix-ed25519:` followed by the public key in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex::encode(self.0))
    }
}

impl std::str::FromStr for SignerPublic {
    type Err = SignerFormatError;
    fn from_str(s: &str) -> Result<Self, SignerFormatError> {
        let mut k = [0u8; 32];
        match s.trim().strip_prefix(PUBLIC_PREFIX) {
            Some(h) if h.len() == 64 && hex::decode_to_slice(h, &mut k).is_ok() => Self::from_bytes(k),
            _ => Err(SignerFormatError::Public),
        }
    }
}

/// An Ed25519 signing key (the 32-byte seed): signs containers.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SignerKey([u8; 32]);

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey(public {})", self.public())
    }
}

impl SignerKey {
    /// A new random signing key from `entropy`.
    pub fn generate(entropy: &dyn Entropy) -> Self {
        let mut k = [0u8; 32];
        entropy.fill(b"ed25519 signer", &mut k);
        SignerKey(k)
    }

    /// The key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SignerKey(seed)
    }

    /// The key's 32-byte seed (for handing it to another Ed25519 implementation).
    pub fn seed(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public key that checks this key's signatures.
    pub fn public(&self) -> SignerPublic {
        SignerPublic(SigningKey::from_bytes(&self.0).verifying_key().to_bytes())
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_BYTES] {
        SigningKey::from_bytes(&self.0).sign(message).to_bytes()
    }

    /// The key file's text: a comment naming the public key, then the secret line.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "# qeltrix Ed25519 signing key\n# public: {}\n{SECRET_PREFIX}{}\n",
            self.public(),
            hex::encode(self.0)
        ))
    }

    /// Parses a signing key file: the first line starting with the secret prefix.
    pub fn parse(text: &str) -> Result<Self, SignerFormatError> {
        let mut k = [0u8; 32];
        let line = text.lines().find_map(|l| l.trim().strip_prefix(SECRET_PREFIX));
        match line {
            Some(h) if h.len() == 64 && hex::decode_to_slice(h, &mut k).is_ok() => Ok(SignerKey(k)),
            _ => Err(SignerFormatError::SigningKey),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededEntropy;

    #[test]
    fn a_key_file_round_trips_and_names_its_public_key() {
        let key = SignerKey::generate(&SeededEntropy([7; 32]));
        let text = key.to_file_text();
        let back = SignerKey::parse(&text).unwrap();
        assert_eq!(back.public(), key.public());
        assert!(text.contains(&key.public().to_string()));
        let public: SignerPublic = key.public().to_string().parse().unwrap();
        assert_eq!(public, key.public());
    }

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let key = SignerKey::generate(&SeededEntropy([1; 32]));
        let other = SignerKey::generate(&SeededEntropy([2; 32]));
        let sig = key.sign(b"message");
        assert!(key.public().verifies(b"message", &sig));
        assert!(!key.public().verifies(b"messagf", &sig));
        assert!(!other.public().verifies(b"message", &sig));
        let mut flipped = sig;
        flipped[10] ^= 1;
        assert!(!key.public().verifies(b"message", &flipped));
    }

    #[test]
    fn malformed_texts_are_refused() {
        assert_eq!(
            SignerKey::parse("QELTRIX-ED25519-SIGNING-KEY:00").err(),
            Some(SignerFormatError::SigningKey)
        );
        assert_eq!(SignerKey::parse("").err(), Some(SignerFormatError::SigningKey));
        for s in [
            "",
            "qeltrix-ed25519:",
            "qeltrix-x25519:00",
            &format!("qeltrix-ed25519:{}", "zz".repeat(32)),
        ] {
            assert_eq!(
                s.parse::<SignerPublic>().err(),
                Some(SignerFormatError::Public),
                "{s:?}"
            );
        }
    }
}
