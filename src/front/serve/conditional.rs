//! Conditional requests (RFC 9110 §13): `If-Match`, `If-Unmodified-Since`, `If-None-Match`,
//! `If-Modified-Since` and `If-Range`, evaluated in the order §13.2.2 prescribes.
//!
//! The validators are a strong `ETag` made from the container id (random per container, so two
//! containers never share one, and a rekey keeps the plaintext and the tag) and `Last-Modified`
//! from the packed file's modification time in a v2 file record (else the container file's), in
//! whole seconds as HTTP dates are.

use hyper::header::{self, HeaderMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The validators of one served file.
#[derive(Clone, Debug)]
pub struct Validators {
    /// The opaque part of the strong entity tag, without quotes.
    pub etag: String,
    /// Truncated to whole seconds.
    pub last_modified: SystemTime,
}

/// What the preconditions decide, before any Range processing.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Go on and serve the request.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

impl Validators {
    pub fn new(etag: String, modified: SystemTime) -> Self {
        // HTTP dates run from the epoch to the end of year 9999 (httpdate panics past it): a
        // file record may hold any time, so it is clamped into that range.
        const LAST_HTTP_SECOND: u64 = 253_402_300_799;
        let secs = modified
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .min(LAST_HTTP_SECOND);
        Validators {
            etag,
            last_modified: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    /// The `ETag` header value.
    pub fn etag_header(&self) -> String {
        format!("\"{}\"", self.etag)
    }

    /// The `Last-Modified` header value.
    pub fn last_modified_header(&self) -> String {
        httpdate::fmt_http_date(self.last_modified)
    }

    /// Evaluates the preconditions of a GET or HEAD request (§13.2.2 steps 1–4).
    pub fn evaluate(&self, headers: &HeaderMap) -> Precondition {
        if let Some(v) = headers.get(header::IF_MATCH) {
            if !self.matches(v.as_bytes(), true) {
                return Precondition::Failed;
            }
        } else if let Some(date) = date(headers, header::IF_UNMODIFIED_SINCE) {
            if self.last_modified > date {
                return Precondition::Failed;
            }
        }
        if let Some(v) = headers.get(header::IF_NONE_MATCH) {
            if self.matches(v.as_bytes(), false) {
                return Precondition::NotModified;
            }
        } else if let Some(date) = date(headers, header::IF_MODIFIED_SINCE) {
            if self.last_modified <= date {
                return Precondition::NotModified;
            }
        }
        Precondition::Proceed
    }

    /// Whether a `Range` header may be honoured: true without `If-Range`, otherwise only when its
    /// validator matches ours exactly (a strong ETag, or the exact `Last-Modified` date).
    pub fn range_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers.get(header::IF_RANGE) else {
            return true;
        };
        let v = v.as_bytes();
        if v.first() == Some(&b'"') || v.starts_with(b"W/") {
            return matches!(entity_tags(v).as_deref(), Some([Tag { weak: false, opaque }]) if *opaque == self.etag.as_bytes());
        }
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok())
            .is_some_and(|d| d == self.last_modified)
    }

    /// `*` or a list of entity tags containing ours (weak comparison unless `strong`).
    fn matches(&self, value: &[u8], strong: bool) -> bool {
        if value.trim_ascii() == b"*" {
            return true;
        }
        entity_tags(value).is_some_and(|tags| {
            tags.iter()
                .any(|t| t.opaque == self.etag.as_bytes() && !(strong && t.weak))
        })
    }
}

fn date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    let v = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(v).ok()
}

struct Tag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// Parses `#entity-tag` (`W/"x", "y"`); `None` if malformed.
fn entity_tags(mut v: &[u8]) -> Option<Vec<Tag<'_>>> {
    let mut tags = Vec::new();
    loop {
        while let [b' ' | b'\t' | b',', rest @ ..] = v {
            v = rest;
        }
        if v.is_empty() {
            return Some(tags);
        }
        let weak = v.starts_with(b"W/");
        if weak {
            v = &v[2..];
        }
        let rest = v.strip_prefix(b"\"")?;
        let close = rest.iter().position(|&b| b == b'"')?;
        tags.push(Tag {
            weak,
            opaque: &rest[..close],
        });
        v = &rest[close + 1..];
        match v.first() {
            None | Some(b' ' | b'\t' | b',') => {}
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn v() -> Validators {
        Validators::new(
            "abc".into(),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_900),
        )
    }

    fn h(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, val) in pairs {
            m.append(k.clone(), HeaderValue::from_str(val).unwrap());
        }
        m
    }

    const DATE: &str = "Tue, 14 Nov 2023 22:13:20 GMT"; // 1_700_000_000
    const BEFORE: &str = "Tue, 14 Nov 2023 22:13:19 GMT";

    /// A file record may say any time: before the epoch, or past year 9999, where httpdate
    /// panics. Both become a date HTTP can carry.
    #[test]
    fn times_outside_http_dates_are_clamped() {
        let before = Validators::new("a".into(), UNIX_EPOCH - Duration::from_secs(86_400));
        assert_eq!(before.last_modified_header(), "Thu, 01 Jan 1970 00:00:00 GMT");
        let far = Validators::new("a".into(), UNIX_EPOCH + Duration::from_secs(1 << 50));
        assert_eq!(far.last_modified_header(), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn last_modified_is_whole_seconds() {
        assert_eq!(v().last_modified_header(), DATE);
        assert_eq!(v().etag_header(), "\"abc\"");
    }

    #[test]
    fn if_none_match_weak_comparison_and_star() {
        use Precondition::*;
        assert_eq!(
            v().evaluate(&h(&[(header::IF_NONE_MATCH, "\"abc\"")])),
            NotModified
        );
        assert_eq!(
            v().evaluate(&h(&[(header::IF_NONE_MATCH, "\"x\", W/\"abc\"")])),
            NotModified
        );
        assert_eq!(v().evaluate(&h(&[(header::IF_NONE_MATCH, "*")])), NotModified);
        assert_eq!(v().evaluate(&h(&[(header::IF_NONE_MATCH, "\"abcd\"")])), Proceed);
        assert_eq!(v().evaluate(&h(&[(header::IF_NONE_MATCH, "garbage")])), Proceed);
    }

    #[test]
    fn if_modified_since_only_without_if_none_match() {
        use Precondition::*;
        assert_eq!(
            v().evaluate(&h(&[(header::IF_MODIFIED_SINCE, DATE)])),
            NotModified
        );
        assert_eq!(v().evaluate(&h(&[(header::IF_MODIFIED_SINCE, BEFORE)])), Proceed);
        assert_eq!(
            v().evaluate(&h(&[(header::IF_MODIFIED_SINCE, "not a date")])),
            Proceed
        );
        assert_eq!(
            v().evaluate(&h(&[
                (header::IF_NONE_MATCH, "\"other\""),
                (header::IF_MODIFIED_SINCE, DATE)
            ])),
            Proceed,
            "If-None-Match takes precedence"
        );
    }

    #[test]
    fn if_match_and_if_unmodified_since() {
        use Precondition::*;
        assert_eq!(v().evaluate(&h(&[(header::IF_MATCH, "\"abc\"")])), Proceed);
        assert_eq!(
            v().evaluate(&h(&[(header::IF_MATCH, "W/\"abc\"")])),
            Failed,
            "strong comparison"
        );
        assert_eq!(v().evaluate(&h(&[(header::IF_MATCH, "\"zzz\"")])), Failed);
        assert_eq!(v().evaluate(&h(&[(header::IF_UNMODIFIED_SINCE, BEFORE)])), Failed);
        assert_eq!(v().evaluate(&h(&[(header::IF_UNMODIFIED_SINCE, DATE)])), Proceed);
    }

    #[test]
    fn if_range_needs_an_exact_strong_validator() {
        assert!(v().range_allowed(&HeaderMap::new()));
        assert!(v().range_allowed(&h(&[(header::IF_RANGE, "\"abc\"")])));
        assert!(!v().range_allowed(&h(&[(header::IF_RANGE, "W/\"abc\"")])));
        assert!(!v().range_allowed(&h(&[(header::IF_RANGE, "\"old\"")])));
        assert!(v().range_allowed(&h(&[(header::IF_RANGE, DATE)])));
        assert!(!v().range_allowed(&h(&[(header::IF_RANGE, BEFORE)])));
        assert!(!v().range_allowed(&h(&[(header::IF_RANGE, "nonsense")])));
    }
}
