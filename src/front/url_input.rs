//! URL ingest for `qeltrix pack URL OUT`: an `http://` or `https://` download as a plain `Read`,
//! streamed into the packer like stdin, never buffered whole. The length comes from
//! `Content-Length` when the server sends it (for the progress bar), and a body that ends short of
//! it is an error, so a cut download never becomes a complete-looking container.
//!
//! The client is `ureq`: blocking (the packer is a blocking pipeline), rustls on `ring` (the AEAD
//! library the crate already uses), no OpenSSL and no async runtime.

use crate::{Error, Result};
use std::io::Read;
use std::time::Duration;

/// True when `s` is a URL `pack` downloads rather than a path.
pub fn is_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// An open download: the body as a reader, and its length when the server announced it.
#[non_exhaustive]
pub struct Download {
    /// The response body.
    pub body: Box<dyn Read + Send>,
    /// The body's length in bytes, when the server sent `Content-Length`.
    pub len: Option<u64>,
}

/// Starts downloading `url`. HTTP error statuses (4xx, 5xx) are errors naming the status.
pub fn open_url(url: &str) -> Result<Download> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .user_agent(concat!("qeltrix/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => Error::io(
            format!("downloading {url}"),
            std::io::Error::other(format!("the server answered HTTP {code}")),
        ),
        ureq::Error::Io(io) => Error::io(format!("downloading {url}"), io),
        e => Error::io(format!("downloading {url}"), std::io::Error::other(e)),
    })?;
    let len = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    Ok(Download {
        body: Box::new(response.into_body().into_reader()),
        len,
    })
}

/// The file name a URL's path ends in (`https://h/a/b.iso?x` → `b.iso`), if any.
pub fn file_name(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let path = rest.split(['?', '#']).next()?;
    let (_, path) = path.split_once('/')?;
    let name = path.rsplit('/').next()?;
    let ok = !name.is_empty() && name != "." && name != ".." && !name.contains('\\');
    ok.then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_urls_and_names() {
        assert!(is_url("http://x/y") && is_url("HTTPS://x") && !is_url("./http:/x") && !is_url("-"));
        assert_eq!(file_name("https://h/a/b.iso?x=1#f").as_deref(), Some("b.iso"));
        assert_eq!(file_name("http://h/").as_deref(), None);
        assert_eq!(file_name("http://h").as_deref(), None);
        assert_eq!(file_name("http://h/a/..").as_deref(), None);
    }
}
