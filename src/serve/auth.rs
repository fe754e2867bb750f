//! The optional bearer token (`--token-file`): every request but `/health` must carry
//! `Authorization: Bearer <token>`.
//!
//! The comparison must not tell an attacker how much of a guess was right, so both sides are
//! hashed with SHA-256 and the digests compared in constant time (`subtle`): the time taken
//! depends neither on where the first difference is nor on the token's length.

use crate::{Error, Result};
use hyper::header::HeaderValue;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The expected token, kept only as its SHA-256.
pub struct BearerToken {
    digest: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken([redacted])")
    }
}

impl BearerToken {
    /// A token from its text; surrounding whitespace is not part of it.
    pub fn new(token: &str) -> Result<Self> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::InvalidArgument("the bearer token is empty".into()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidArgument(
                "the bearer token must be printable ASCII without spaces".into(),
            ));
        }
        Ok(BearerToken {
            digest: Zeroizing::new(Sha256::digest(token.as_bytes()).into()),
        })
    }

    /// The token in the first line of a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| Error::io("reading the token file", e).in_file(path))?,
        );
        BearerToken::new(text.lines().next().unwrap_or("")).map_err(|e| e.in_file(path))
    }

    /// True if an `Authorization` header carries this token (scheme name case-insensitive).
    pub fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        let Some(value) = header.map(HeaderValue::as_bytes) else {
            return false;
        };
        let Some((scheme, token)) = value.split_at_checked(6) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") || !token.starts_with(b" ") {
            return false;
        }
        let given: [u8; 32] = Sha256::digest(token.trim_ascii()).into();
        bool::from(given.ct_eq(&*self.digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(t: &BearerToken, h: &str) -> bool {
        t.accepts(Some(&HeaderValue::from_str(h).unwrap()))
    }

    #[test]
    fn only_the_exact_token_passes() {
        let t = BearerToken::new("s3cret-token\n").unwrap();
        assert!(accepts(&t, "Bearer s3cret-token"));
        assert!(accepts(&t, "bearer s3cret-token"));
        assert!(!accepts(&t, "Bearer s3cret-toke"));
        assert!(!accepts(&t, "Bearer s3cret-token2"));
        assert!(!accepts(&t, "Basic s3cret-token"));
        assert!(!accepts(&t, "Bearers3cret-token"));
        assert!(!accepts(&t, "Bearer"));
        assert!(!t.accepts(None));
    }

    #[test]
    fn empty_or_spaced_tokens_are_refused() {
        assert!(BearerToken::new("  \n").is_err());
        assert!(BearerToken::new("two words").is_err());
    }
}
