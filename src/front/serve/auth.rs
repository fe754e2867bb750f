//! The optional bearer token (`--token-file`): every request but `/health` must carry
//! `Authorization: Bearer <token>`.
//!
//! The comparison is [`Token::matches`]: SHA-256 of both sides compared in constant time.

use crate::front::token::Token;
use crate::Result;
use hyper::header::HeaderValue;
use std::path::Path;

/// The expected token.
#[derive(Debug)]
pub struct BearerToken(Token);

impl BearerToken {
    /// A token from its text; surrounding whitespace is not part of it.
    pub fn new(token: &str) -> Result<Self> {
        Token::bearer(token).map(BearerToken)
    }

    /// The token in the first line of a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Token::bearer_from_file(path).map(BearerToken)
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
        self.0.matches(token)
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
