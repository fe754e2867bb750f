//! A shared-secret token (`--token-file` of serve, gateway and sink; `--to-token-file`): read from
//! the first line of a file, never printed (`Debug` is redacted), zeroized on drop.
//!
//! Checking a guess must not tell an attacker how much of it was right, so both sides are hashed
//! with SHA-256 and the digests compared in constant time (`subtle`): the time taken depends
//! neither on where the first difference is nor on the token's length.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The longest token, in bytes: a gateway's or sink's token line (1 KiB with its line end,
/// `gateway::limits::MAX_TOKEN_LINE`) must hold it.
pub const MAX_TOKEN_LEN: usize = 1022;
/// The longest HTTP bearer token (`serve --token-file`, `watch --token-file`), in bytes: a
/// capability token (`qeltrix cap`) fits, as for `capability::MAX_TOKEN_LEN`.
pub const MAX_BEARER_LEN: usize = 8192;

/// A shared secret; compared in constant time, redacted in `Debug`, zeroized on drop.
#[derive(Clone)]
pub struct Token {
    // Only the gateway presents a token to another server; serve only checks them.
    #[cfg_attr(not(any(feature = "gateway", feature = "watch")), allow(dead_code))]
    secret: Zeroizing<Vec<u8>>,
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl Token {
    /// A token from its text, at most [`MAX_TOKEN_LEN`] bytes; surrounding whitespace is not
    /// part of it.
    pub fn new(text: &str) -> Result<Self> {
        Token::up_to(text, MAX_TOKEN_LEN)
    }

    /// An HTTP bearer token from its text, at most [`MAX_BEARER_LEN`] bytes.
    pub fn bearer(text: &str) -> Result<Self> {
        Token::up_to(text, MAX_BEARER_LEN)
    }

    fn up_to(text: &str, max: usize) -> Result<Self> {
        let token = text.trim();
        if token.is_empty() {
            return Err(Error::InvalidArgument("the token is empty".into()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidArgument(
                "the token must be printable ASCII without spaces".into(),
            ));
        }
        if token.len() > max {
            return Err(Error::InvalidArgument(format!(
                "the token is longer than {max} bytes"
            )));
        }
        Ok(Token {
            secret: Zeroizing::new(token.as_bytes().to_vec()),
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// The token in the first line of a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Token::first_line_of(path, Token::new)
    }

    /// The HTTP bearer token in the first line of a file ([`Token::bearer`]).
    pub fn bearer_from_file(path: &Path) -> Result<Self> {
        Token::first_line_of(path, Token::bearer)
    }

    fn first_line_of(path: &Path, make: fn(&str) -> Result<Self>) -> Result<Self> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| Error::io("reading the token file", e).in_file(path))?,
        );
        make(text.lines().next().unwrap_or("")).map_err(|e| e.in_file(path))
    }

    /// True if `given` is this token, ASCII whitespace around it ignored (constant time).
    pub fn matches(&self, given: &[u8]) -> bool {
        let given: [u8; 32] = Sha256::digest(given.trim_ascii()).into();
        bool::from(given.ct_eq(&self.digest))
    }

    /// The token's bytes, to present to a server.
    #[cfg_attr(not(any(feature = "gateway", feature = "watch")), allow(dead_code))]
    pub(crate) fn secret(&self) -> &[u8] {
        &self.secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches_and_bad_tokens_are_refused() {
        let t = Token::new("s3cret-token\n").unwrap();
        assert!(t.matches(b"s3cret-token"));
        assert!(t.matches(b" s3cret-token\r"));
        assert!(!t.matches(b"s3cret-toke"));
        assert!(!t.matches(b"s3cret-token2"));
        assert!(!t.matches(b""));
        assert!(Token::new("  \n").is_err());
        assert!(Token::new("two words").is_err());
        assert!(Token::new(&"x".repeat(MAX_TOKEN_LEN + 1)).is_err());
        // A bearer token may be as long as a capability token; a gateway's line may not.
        assert!(Token::bearer(&"x".repeat(MAX_TOKEN_LEN + 1)).is_ok());
        assert!(Token::bearer(&"x".repeat(MAX_BEARER_LEN)).is_ok());
        assert!(Token::bearer(&"x".repeat(MAX_BEARER_LEN + 1)).is_err());
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
