//! `serve --cap-root`: every request but `/health` carries a capability token
//! (`Authorization: Bearer TOKEN`, or `?cap=TOKEN` so a media player or `<video src>` can use a
//! shared link), checked against the root key, then against the path and operation of the
//! request (`docs/CAPABILITIES.md`). The token itself never reaches the log: the request target
//! is logged with `cap=` redacted, and a refusal names the token by its short id.

use crate::capability::{CapRoot, Operation, Refusal, Verified};
use hyper::header::{self, HeaderMap};
use percent_encoding::percent_decode_str;
use std::time::SystemTime;

/// A token presented with a request, and where it came from.
pub struct Presented {
    /// The token's text.
    pub token: String,
    /// Came as `?cap=` (listing links then carry it on, so a shared folder link can be browsed).
    pub in_query: bool,
}

/// The token of a request: the `Authorization: Bearer` header first, then `?cap=`.
pub fn presented(headers: &HeaderMap, query: Option<&str>) -> Option<Presented> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some((scheme, token)) = value.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                return Some(Presented {
                    token: token.trim().to_string(),
                    in_query: false,
                });
            }
        }
    }
    let value = query?.split('&').find_map(|p| p.strip_prefix("cap="))?;
    let token = percent_decode_str(value).decode_utf8().ok()?.into_owned();
    (!token.is_empty()).then_some(Presented {
        token,
        in_query: true,
    })
}

/// `target` (a request's path and query) with the value of any `cap=` parameter replaced, for
/// the access log.
pub fn redact(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|p| match p.strip_prefix("cap=") {
            Some(_) => "cap=[redacted]".to_string(),
            None => p.to_string(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// A request's query without its `cap=` parameter (what path resolution and redirects see).
pub fn without_cap(query: Option<&str>) -> Option<String> {
    let rest: Vec<&str> = query?
        .split('&')
        .filter(|p| !p.starts_with("cap=") && !p.is_empty())
        .collect();
    (!rest.is_empty()).then(|| rest.join("&"))
}

/// The check of one request's token against the server's root and the request.
pub struct Grant<'a> {
    pub root: &'a CapRoot,
    pub token: &'a Verified,
}

impl Grant<'_> {
    /// Does the token allow `op` on the URL path `resource` (percent-decoded here)? A folder
    /// is named without its final `/` (`/media`; the root stays `/`), so that `--path /media`
    /// allows listing it and nothing in it, and `--path /media/` both.
    pub fn allows(&self, op: Operation, resource: &str) -> Result<(), Refusal> {
        let decoded = percent_decode_str(resource).decode_utf8_lossy();
        let name = match decoded.strip_suffix('/') {
            Some(folder) if !folder.is_empty() => folder,
            _ => &decoded,
        };
        self.root.authorize(self.token, op, name, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn the_token_comes_from_the_header_or_the_query() {
        let mut h = HeaderMap::new();
        assert!(presented(&h, None).is_none());
        let p = presented(&h, Some("format=json&cap=abc%3D")).unwrap();
        assert_eq!((p.token.as_str(), p.in_query), ("abc=", true));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer xyz"));
        let p = presented(&h, Some("cap=abc")).unwrap();
        assert_eq!((p.token.as_str(), p.in_query), ("xyz", false));
    }

    #[test]
    fn logs_never_see_the_token_and_resolution_never_sees_cap() {
        assert_eq!(
            redact("/a.mp4?cap=SECRET&format=json"),
            "/a.mp4?cap=[redacted]&format=json"
        );
        assert_eq!(redact("/a.mp4"), "/a.mp4");
        assert_eq!(
            without_cap(Some("cap=x&format=json")).as_deref(),
            Some("format=json")
        );
        assert_eq!(without_cap(Some("cap=x")), None);
    }
}
