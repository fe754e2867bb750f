//! The `Range` request header (RFC 9110 §14): which byte ranges of a representation a client
//! asked for, and whether they can be served.
//!
//! The rules that matter to a client:
//! - a header we cannot parse, or in a unit other than `bytes`, is ignored and the whole file is
//!   served with 200, as RFC 9110 §14.2 requires;
//! - a syntactically valid header none of whose ranges overlaps the file is unsatisfiable: 416;
//! - ranges are clipped to the file, and overlapping or adjacent ranges are merged (sorted by
//!   start), which §14.3 allows and which keeps a hostile `bytes=0-,0-,0-,…` from multiplying the
//!   work; a header with more than [`MAX_RANGES`] ranges is ignored.
//!
//! ```ignore
//! // (crate-internal: `serve::range` is private; the same cases are unit tests below)
//! use qeltrix::serve::range::{parse, ByteRange, RangeRequest};
//! assert_eq!(parse(Some(b"bytes=-100"), 1000), RangeRequest::Ranges(vec![ByteRange { start: 900, end: 1000 }]));
//! assert_eq!(parse(Some(b"bytes=2000-"), 1000), RangeRequest::Unsatisfiable);
//! assert_eq!(parse(Some(b"bytes=oops"), 1000), RangeRequest::Full);
//! ```

/// More ranges than this in one header and the header is ignored (the whole file is served).
pub const MAX_RANGES: usize = 64;

/// A half-open byte range `start..end` of the plaintext, never empty once parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// The `Content-Range` value for this range of a file of `size` bytes.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{size}", self.start, self.end - 1)
    }
}

/// What to answer a request with, as far as its `Range` header goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable `Range` header: the whole file, 200.
    Full,
    /// One or more satisfiable ranges, clipped, sorted and merged: 206.
    Ranges(Vec<ByteRange>),
    /// A valid header with no range inside the file: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header for a file of `size` bytes.
pub fn parse(header: Option<&[u8]>, size: u64) -> RangeRequest {
    let Some(specs) = header.and_then(parse_specs) else {
        return RangeRequest::Full;
    };
    if specs.len() > MAX_RANGES || size == 0 {
        // An empty file has no byte to select; RFC 9110 lets a server ignore Range, and a 200
        // with an empty body is the useful answer.
        return RangeRequest::Full;
    }
    let mut ranges: Vec<ByteRange> = specs
        .into_iter()
        .filter_map(|spec| match spec {
            Spec::From { first, last } if first < size => Some(ByteRange {
                start: first,
                end: last.map_or(size, |l| l.saturating_add(1).min(size)),
            }),
            Spec::Suffix(n) if n > 0 => Some(ByteRange {
                start: size.saturating_sub(n),
                end: size,
            }),
            _ => None,
        })
        .collect();
    if ranges.is_empty() {
        return RangeRequest::Unsatisfiable;
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(prev) if r.start <= prev.end => prev.end = prev.end.max(r.end),
            _ => merged.push(r),
        }
    }
    RangeRequest::Ranges(merged)
}

#[derive(Debug, PartialEq, Eq)]
enum Spec {
    /// `first-[last]`
    From { first: u64, last: Option<u64> },
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// `bytes=spec, spec, …` → the specs, or `None` if the header is not a valid bytes range set.
fn parse_specs(header: &[u8]) -> Option<Vec<Spec>> {
    let text = std::str::from_utf8(header).ok()?;
    let (unit, set) = text.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // HTTP list syntax allows empty elements ("0-1,,5-6"); they carry nothing.
    for item in set.split(',').map(|s| s.trim_matches([' ', '\t'])) {
        if item.is_empty() {
            continue;
        }
        let (first, last) = item.split_once('-')?;
        let spec = if first.is_empty() {
            Spec::Suffix(digits(last)?)
        } else {
            let first = digits(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(digits(last)?)
            };
            if last.is_some_and(|l| l < first) {
                return None;
            }
            Spec::From { first, last }
        };
        specs.push(spec);
        if specs.len() > MAX_RANGES {
            break;
        }
    }
    (!specs.is_empty()).then_some(specs)
}

/// A run of ASCII digits as a number; a number too large for u64 saturates, since it is still a
/// valid position (one past any file we have).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn the_module_examples_hold() {
        assert_eq!(
            parse(Some(b"bytes=-100"), 1000),
            RangeRequest::Ranges(vec![r(900, 1000)])
        );
        assert_eq!(parse(Some(b"bytes=2000-"), 1000), RangeRequest::Unsatisfiable);
        assert_eq!(parse(Some(b"bytes=oops"), 1000), RangeRequest::Full);
    }

    fn ranges(h: &str, size: u64) -> RangeRequest {
        parse(Some(h.as_bytes()), size)
    }

    #[test]
    fn the_three_forms() {
        assert_eq!(ranges("bytes=0-99", 1000), RangeRequest::Ranges(vec![r(0, 100)]));
        assert_eq!(
            ranges("bytes=500-", 1000),
            RangeRequest::Ranges(vec![r(500, 1000)])
        );
        assert_eq!(ranges("bytes=-1", 1000), RangeRequest::Ranges(vec![r(999, 1000)]));
        assert_eq!(
            ranges("bytes=999-999", 1000),
            RangeRequest::Ranges(vec![r(999, 1000)])
        );
    }

    #[test]
    fn clipped_to_the_file() {
        assert_eq!(
            ranges("bytes=900-5000", 1000),
            RangeRequest::Ranges(vec![r(900, 1000)])
        );
        assert_eq!(
            ranges("bytes=-5000", 1000),
            RangeRequest::Ranges(vec![r(0, 1000)])
        );
        assert_eq!(
            ranges("bytes=10-99999999999999999999999", 1000),
            RangeRequest::Ranges(vec![r(10, 1000)])
        );
    }

    #[test]
    fn several_ranges_are_sorted_and_overlaps_merged() {
        assert_eq!(
            ranges("bytes=500-599, 0-99", 1000),
            RangeRequest::Ranges(vec![r(0, 100), r(500, 600)])
        );
        assert_eq!(
            ranges("bytes=0-99,50-149,150-199,-10", 1000),
            RangeRequest::Ranges(vec![r(0, 200), r(990, 1000)])
        );
        assert_eq!(
            ranges("bytes=0-,0-,0-", 1000),
            RangeRequest::Ranges(vec![r(0, 1000)])
        );
    }

    #[test]
    fn unsatisfiable_only_when_no_range_overlaps() {
        assert_eq!(ranges("bytes=1000-", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(ranges("bytes=1000-2000", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(ranges("bytes=-0", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(
            ranges("bytes=2000-3000,0-0", 1000),
            RangeRequest::Ranges(vec![r(0, 1)]),
            "one satisfiable range is enough"
        );
        assert_eq!(
            ranges("bytes=99999999999999999999999-", 1000),
            RangeRequest::Unsatisfiable
        );
    }

    #[test]
    fn malformed_or_foreign_headers_are_ignored() {
        for h in [
            "bytes=5-1",
            "bytes=abc",
            "bytes=1-2-3",
            "bytes=-",
            "bytes=",
            "bytes=,",
            "bytes 0-1",
            "items=0-1",
            "bytes=0x10-20",
            "bytes=+1-2",
            "bytes=1 -2",
            "bytes=--1",
        ] {
            assert_eq!(ranges(h, 1000), RangeRequest::Full, "{h:?}");
        }
        assert_eq!(parse(None, 1000), RangeRequest::Full);
        assert_eq!(parse(Some(b"bytes=\xff-1"), 1000), RangeRequest::Full);
    }

    #[test]
    fn unit_is_case_insensitive_and_list_whitespace_allowed() {
        assert_eq!(
            ranges("Bytes=0-0 ,\t2-2,,", 10),
            RangeRequest::Ranges(vec![r(0, 1), r(2, 3)])
        );
    }

    #[test]
    fn too_many_ranges_or_an_empty_file_serve_everything() {
        let many: Vec<String> = (0..=MAX_RANGES as u64)
            .map(|i| format!("{}-{}", i * 10, i * 10))
            .collect();
        assert_eq!(
            ranges(&format!("bytes={}", many.join(",")), 100_000),
            RangeRequest::Full
        );
        let ok: Vec<String> = (0..MAX_RANGES as u64)
            .map(|i| format!("{}-{}", i * 10, i * 10))
            .collect();
        assert!(
            matches!(ranges(&format!("bytes={}", ok.join(",")), 100_000), RangeRequest::Ranges(v) if v.len() == MAX_RANGES)
        );
        assert_eq!(ranges("bytes=0-", 0), RangeRequest::Full);
    }

    #[test]
    fn content_range_is_inclusive() {
        assert_eq!(r(0, 100).content_range(1000), "bytes 0-99/1000");
    }
}
