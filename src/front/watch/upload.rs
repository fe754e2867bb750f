//! The client of a server's upload API (`qeltrix serve --accept-uploads`, docs/UPLOAD.md): a
//! container is cut into chunks named by their BLAKE3 hash; the server says which it lacks, those
//! are sent, and a commit names the container's path and its chunks in order. After a cut
//! connection the client asks again, so only the chunks the server does not hold travel twice.

use crate::front::token::Token;
use crate::{Error, Result};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bytes per chunk.
pub const CHUNK: usize = 8 << 20;
/// Rounds of asking and sending before giving up on one container.
const ATTEMPTS: u32 = 8;
/// The header naming the container the chunks are for (`PATH_HEADER` of the server).
const PATH_HEADER: &str = "X-Qeltrix-Path";
/// What the header's path keeps as it is; the rest is percent-encoded.
const PATH_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');

/// A client of one server.
pub struct UploadClient {
    base: String,
    token: Option<Token>,
    agent: ureq::Agent,
    chunk: usize,
    /// Chunk bytes sent, for the log and the tests.
    sent: AtomicU64,
}

impl std::fmt::Debug for UploadClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// What one upload did.
#[derive(Clone, Copy, Debug)]
pub struct Uploaded {
    /// The container's size.
    pub size: u64,
    /// Chunk bytes sent for it (less than `size` when the server held some).
    pub sent: u64,
}

#[derive(Deserialize)]
struct Answer {
    chunks: Vec<ChunkAnswer>,
}

#[derive(Deserialize)]
struct ChunkAnswer {
    id: String,
    send: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Refusal {
    #[serde(default)]
    error: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    missing: Vec<String>,
}

/// Why a round stopped.
enum Round {
    Done,
    /// The connection failed, or the server lost chunks: ask again.
    Again(String),
}

impl UploadClient {
    /// A client of the server at `base` (`https://host[:port][/prefix]`), presenting `token`.
    pub fn new(base: &str, token: Option<Token>) -> Result<Self> {
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(Error::InvalidArgument(format!("{base}: not an http(s) URL")));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .user_agent(concat!("qeltrix/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(UploadClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
            chunk: CHUNK,
            sent: AtomicU64::new(0),
        })
    }

    /// Uses chunks of `bytes` (the tests make several chunks of a small container).
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk = bytes.max(1);
        self
    }

    /// How `path` is shown: its URL on the server.
    pub fn display(&self, path: &Path) -> String {
        format!("{}/{}", self.base, path.display())
    }

    /// Chunk bytes sent so far by this client.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn auth(&self) -> Option<String> {
        self.token
            .as_ref()
            .map(|t| format!("Bearer {}", String::from_utf8_lossy(t.secret())))
    }

    fn post(
        &self,
        what: &str,
        body: &serde_json::Value,
        for_path: Option<&str>,
    ) -> std::result::Result<(u16, Vec<u8>), String> {
        let mut req = self
            .agent
            .post(format!("{}/{what}", self.base))
            .header("Content-Type", "application/json");
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        if let Some(p) = for_path {
            req = req.header(PATH_HEADER, p);
        }
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let mut resp = req.send(&body[..]).map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        Ok((status, bytes))
    }

    /// Sends the container `file` to be stored at `path` on the server (replacing what is there
    /// when `overwrite`), resuming after cut connections.
    pub fn upload(&self, file: &Path, path: &Path, overwrite: bool) -> Result<Uploaded> {
        let shown = self.display(path);
        let in_file = |e: Error| e.in_file(&shown);
        let input =
            File::open(file).map_err(|e| Error::io("opening the spooled container", e).in_file(file))?;
        let size = input
            .metadata()
            .map_err(|e| Error::io("reading", e).in_file(file))?
            .len();
        // The chunks: (offset, length, id).
        let mut chunks = Vec::new();
        let mut buf = vec![0u8; self.chunk];
        let mut offset = 0u64;
        while offset < size || chunks.is_empty() {
            let len = (size - offset).min(self.chunk as u64) as usize;
            input
                .read_exact_at(&mut buf[..len], offset)
                .map_err(|e| Error::io("reading", e).in_file(file))?;
            chunks.push((offset, len, blake3::hash(&buf[..len]).to_hex().to_string()));
            offset += len as u64;
            if size == 0 {
                break;
            }
        }
        let sent_before = self.sent();
        let mut why = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let pause = Duration::from_millis(250 << attempt.min(5));
                tracing::info!(target: "qeltrix::watch", "{shown}: {why}; trying again in {pause:?}");
                std::thread::sleep(pause);
            }
            match self
                .round(&input, &chunks, &mut buf, path, overwrite)
                .map_err(in_file)?
            {
                Round::Done => {
                    return Ok(Uploaded {
                        size,
                        sent: self.sent() - sent_before,
                    })
                }
                Round::Again(reason) => why = reason,
            }
        }
        Err(in_file(Error::io(
            "uploading",
            io::Error::other(format!("gave up after {ATTEMPTS} attempts: {why}")),
        )))
    }

    /// One round: ask which chunks the server lacks, send those, commit.
    fn round(
        &self,
        input: &File,
        chunks: &[(u64, usize, String)],
        buf: &mut [u8],
        path: &Path,
        overwrite: bool,
    ) -> Result<Round> {
        let mut unique = HashSet::new();
        let asked: Vec<_> = chunks
            .iter()
            .filter(|(_, _, id)| unique.insert(id.clone()))
            .collect();
        let mut request_id = [0u8; 16];
        {
            use crate::crypto::Entropy;
            crate::crypto::SystemEntropy.fill(b"upload request id", &mut request_id);
        }
        let body = json!({
            "request_id": hex::encode(request_id),
            "chunks": asked.iter().map(|(_, len, id)| json!({"id": id, "size": len})).collect::<Vec<_>>(),
        });
        // The container the chunks are for: a server checking capability tokens checks the
        // token's `upload` right on it before it takes a chunk.
        let target = path.to_string_lossy().replace('\\', "/");
        let for_path = utf8_percent_encode(&target, PATH_ENCODE).to_string();
        let (status, bytes) = match self.post("upload", &body, Some(&for_path)) {
            Ok(r) => r,
            Err(e) => return Ok(Round::Again(e)),
        };
        if status >= 500 {
            return Ok(Round::Again(refusal_text(status, &bytes)));
        }
        if status != 200 {
            return Err(refused(status, &bytes));
        }
        let answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|e| Error::io("uploading", io::Error::other(format!("the server's answer: {e}"))))?;
        for a in &answer.chunks {
            if a.send == "OK" {
                let Some((offset, len, id)) = asked.iter().find(|c| c.2 == a.id) else {
                    continue;
                };
                input
                    .read_exact_at(&mut buf[..*len], *offset)
                    .map_err(|e| Error::io("reading the spooled container", e))?;
                let mut req = self
                    .agent
                    .put(format!("{}/chunks/{id}", self.base))
                    .header(PATH_HEADER, &for_path);
                if let Some(auth) = self.auth() {
                    req = req.header("Authorization", auth);
                }
                let mut resp = match req.send(&buf[..*len]) {
                    Ok(r) => r,
                    Err(e) => return Ok(Round::Again(format!("sending chunk {id}: {e}"))),
                };
                self.sent.fetch_add(*len as u64, Ordering::Relaxed);
                let status = resp.status().as_u16();
                let bytes = resp.body_mut().read_to_vec().unwrap_or_default();
                match status {
                    200 | 201 => {}
                    s if s >= 500 => return Ok(Round::Again(refusal_text(s, &bytes))),
                    s => return Err(refused(s, &bytes)),
                }
            } else if a.reason.as_deref() != Some("exists") {
                return Err(Error::io(
                    "uploading",
                    io::Error::other(format!(
                        "the server refused chunk {}: {}",
                        a.id,
                        a.reason.as_deref().unwrap_or("no reason given")
                    )),
                ));
            }
        }
        let commit = json!({
            "path": target,
            "chunks": chunks.iter().map(|c| c.2.as_str()).collect::<Vec<_>>(),
            "overwrite": overwrite,
        });
        let (status, bytes) = match self.post("commit", &commit, None) {
            Ok(r) => r,
            Err(e) => return Ok(Round::Again(e)),
        };
        match status {
            200 | 201 => Ok(Round::Done),
            409 if parse_refusal(&bytes).reason == "missing" => Ok(Round::Again(format!(
                "the server lacks {} chunk(s) at commit",
                parse_refusal(&bytes).missing.len()
            ))),
            s if s >= 500 => Ok(Round::Again(refusal_text(s, &bytes))),
            s => Err(refused(s, &bytes)),
        }
    }
}

fn parse_refusal(bytes: &[u8]) -> Refusal {
    serde_json::from_slice(bytes).unwrap_or_default()
}

fn refusal_text(status: u16, bytes: &[u8]) -> String {
    let r = parse_refusal(bytes);
    if r.error.is_empty() {
        format!("the server answered HTTP {status}")
    } else {
        format!("the server answered HTTP {status}: {} ({})", r.error, r.reason)
    }
}

fn refused(status: u16, bytes: &[u8]) -> Error {
    let kind = match status {
        401 | 403 => io::ErrorKind::PermissionDenied,
        409 => io::ErrorKind::AlreadyExists,
        _ => io::ErrorKind::Other,
    };
    Error::io("uploading", io::Error::new(kind, refusal_text(status, bytes)))
}
