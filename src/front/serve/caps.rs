//! `serve --cap-root`: every request but `/health` carries a capability token
//! (`Authorization: Bearer TOKEN`, or `?cap=TOKEN` so a media player or `<video src>` can use a
//! shared link), checked against the root key, then against the path and operation of the
//! request (`docs/CAPABILITIES.md`). The token itself never reaches the log: the request target
//! is logged with `cap=` redacted, and a refusal names the token by its short id.

use crate::capability::{CapRoot, Operation, Refusal, Verified};
use crate::storage::Storage;
use crate::{Error, Result};
use hyper::header::{self, HeaderMap};
use percent_encoding::percent_decode_str;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// Where the signed revocation list lives (a local file or an object, through the storage
/// seam), and how often to reload it.
#[derive(Clone)]
pub struct RevocationSource {
    /// The storage holding the list.
    pub storage: Arc<dyn Storage>,
    /// Its path in `storage`.
    pub path: PathBuf,
    /// Reload period (SIGHUP reloads at once).
    pub every: Duration,
}

impl std::fmt::Debug for RevocationSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RevocationSource({}, every {:?})", self.display(), self.every)
    }
}

/// The longest revocation list read, in bytes.
const MAX_LIST_BYTES: u64 = 16 << 20;

impl RevocationSource {
    /// How the list is named in messages.
    pub fn display(&self) -> String {
        self.storage.display(&self.path)
    }

    /// The list's text, read whole.
    pub fn read(&self) -> Result<String> {
        let object = self
            .storage
            .open(&self.path)
            .map_err(|e| Error::io("opening", e).in_file(self.display()))?;
        let len = crate::storage::ReadAt::size(&object)
            .map_err(|e| Error::io("reading", e).in_file(self.display()))?;
        if len > MAX_LIST_BYTES {
            return Err(Error::InvalidArgument(format!(
                "{}: a revocation list of {len} bytes is over the {MAX_LIST_BYTES}-byte limit",
                self.display()
            )));
        }
        let mut bytes = vec![0u8; len as usize];
        crate::storage::ReadAt::read_exact_at(&object, &mut bytes, 0)
            .map_err(|e| Error::io("reading", e).in_file(self.display()))?;
        String::from_utf8(bytes)
            .map_err(|_| Error::InvalidArgument(format!("{}: not UTF-8 text", self.display())))
    }
}

/// Reloads the revocation list every period and whenever SIGHUP asks, until aborted. A list
/// that fails (unreadable, badly signed, older than the one in force) is logged and the list in
/// force stays.
pub(super) async fn reload_periodically(state: Arc<super::State>) {
    let (Some(source), Some(_)) = (state.revocations.clone(), state.caps.as_ref()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(source.every) => {}
            _ = state.reload.notified() => {}
        }
        let state = Arc::clone(&state);
        let reading = source.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let caps = state.caps.as_ref().expect("checked above");
            reading.read().and_then(|text| caps.load_revocations(&text))
        })
        .await;
        match loaded {
            Ok(Ok(sequence)) => {
                info!(target: "qeltrix::serve", "revocations: loaded sequence {sequence} from {}", source.display())
            }
            Ok(Err(e)) => warn!(target: "qeltrix::serve", "revocations: {}: {e}", source.display()),
            Err(e) => warn!(target: "qeltrix::serve", "revocations: the reload task failed: {e}"),
        }
    }
}

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
