//! `qeltrix serve --accept-uploads`: a server that holds no key takes containers packed
//! elsewhere, in content-addressed chunks, and stores them in its vault (docs/UPLOAD.md).
//!
//! Three requests, all behind the bearer token:
//!
//! - `POST /upload` ([`negotiate`]): which of these chunks (BLAKE3 id, size) should be sent?
//!   Each is answered `OK` or `NOTOK` with a reason (already staged, too large, over the quota,
//!   a malformed id). A repeated `request_id` gets the answer it got before.
//! - `PUT /chunks/{id}` ([`chunks`]): a chunk's bytes, hashed while they stream into a staging
//!   object `.qeltrix/uploads/<id>` of the vault, which is committed only if their BLAKE3 is the
//!   id.
//! - `POST /commit` ([`commit`]): these staged chunks, in this order, are the container
//!   `path`. The concatenation is checked whole against its ciphertext root, without a key (the
//!   check behind `verify --no-key`), then written to `path`, all or nothing, and the chunks are
//!   removed.
//!
//! Every storage call runs on a blocking thread, never on the async workers; everything goes
//! through the vault's [`Storage`], so a local folder and an `s3://` prefix work the same. Staged
//! chunks not committed within [`UploadOptions::expiry`] are removed, at start and then
//! periodically. Errors are JSON, `{"error": "...", "reason": "<word>"}`.

mod chunks;
mod commit;
mod negotiate;

use super::body::{AccessLog, ServeBody};
use super::conn::Activity;
use super::State;
use crate::capability::Operation;
use crate::storage::{Entry, EntryKind, Storage};
use crate::vault::naming;
use bytes::{Bytes, BytesMut};
use http_body::Body;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// The staging folder, inside the served vault (hidden from every listing: a dot name).
pub const STAGING_DIR: &str = ".qeltrix/uploads";
/// Answers of `POST /upload` remembered for a repeated `request_id`, at most.
pub const REMEMBERED_ANSWERS: usize = 4096;
/// ... and at most this many bytes of them together.
pub const REMEMBERED_ANSWER_BYTES: usize = 64 << 20;

/// Limits of the upload API. `Default` gives the CLI's defaults.
#[derive(Clone, Debug)]
pub struct UploadOptions {
    /// Bytes all staged chunks (and those being received) may hold together.
    pub quota_bytes: u64,
    /// The largest chunk accepted, in bytes.
    pub max_chunk_size: u64,
    /// The most chunks one `POST /upload` may ask about.
    pub max_chunks_per_request: usize,
    /// A staged chunk not committed within this time is removed.
    pub expiry: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            quota_bytes: 10 << 30,
            max_chunk_size: 64 << 20,
            max_chunks_per_request: 10_000,
            expiry: Duration::from_secs(86_400),
        }
    }
}

/// A chunk's id: the BLAKE3 hash of its bytes, written as 64 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    /// Parses 64 lowercase hex digits; anything else (upper case included) is `None`, so one
    /// chunk has exactly one name.
    pub fn parse(text: &str) -> Option<ChunkId> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut id = [0u8; 32];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(ChunkId(id))
    }

    fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Where the chunk is staged in the vault.
    fn staged_path(&self) -> PathBuf {
        Path::new(STAGING_DIR).join(self.hex())
    }
}

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

/// A chunk in the staging folder.
#[derive(Clone, Copy, Debug)]
struct StagedChunk {
    size: u64,
    /// When it was staged (its object's modification time, for those found at start).
    since: SystemTime,
}

/// What is staged, and the bytes counted against the quota: those of the staged chunks plus
/// those of chunks being received.
#[derive(Default)]
struct Staging {
    chunks: HashMap<ChunkId, StagedChunk>,
    counted: u64,
}

/// The upload side of one server.
pub(crate) struct Uploads {
    storage: Arc<dyn Storage>,
    opts: UploadOptions,
    staging: Mutex<Staging>,
    answers: Mutex<negotiate::Answers>,
    /// Held by each commit and by each expiry sweep, from start to end (on its blocking thread).
    commits: Arc<tokio::sync::Mutex<()>>,
}

impl Uploads {
    /// Lists what is staged already (from an earlier run) and removes what has expired. Blocking.
    pub fn start(storage: Arc<dyn Storage>, opts: UploadOptions) -> crate::Result<Arc<Uploads>> {
        let mut staging = Staging::default();
        let listed = match storage.list(Path::new(STAGING_DIR)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(crate::Error::io("listing the staged uploads", e)
                    .in_file(storage.display(Path::new(STAGING_DIR))))
            }
        };
        for Entry {
            name,
            kind,
            size,
            modified,
            ..
        } in listed
        {
            let id = name.to_str().and_then(ChunkId::parse);
            if let (Some(id), EntryKind::Object) = (id, kind) {
                staging.chunks.insert(
                    id,
                    StagedChunk {
                        size,
                        since: modified,
                    },
                );
                staging.counted = staging.counted.saturating_add(size);
            }
        }
        let uploads = Arc::new(Uploads {
            storage,
            answers: Mutex::new(negotiate::Answers::new()),
            opts,
            staging: Mutex::new(staging),
            commits: Arc::default(),
        });
        let (count, bytes) = {
            let s = uploads.staging();
            (s.chunks.len(), s.counted)
        };
        info!(
            target: "qeltrix::serve",
            "uploads: {count} chunks staged ({bytes} bytes of a {} byte quota)",
            uploads.opts.quota_bytes
        );
        uploads.remove_expired(); // no request can run yet: no lock needed
        Ok(uploads)
    }

    fn staging(&self) -> MutexGuard<'_, Staging> {
        self.staging.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the staged chunks older than the expiry. Blocking (on a blocking thread, not an
    /// async worker); waits for a commit in progress, which may be using them.
    pub fn sweep(&self) {
        let _commits = self.commits.blocking_lock();
        self.remove_expired();
    }

    fn remove_expired(&self) {
        let now = SystemTime::now();
        let expired: Vec<(ChunkId, u64)> = self
            .staging()
            .chunks
            .iter()
            .filter(|(_, c)| now.duration_since(c.since).unwrap_or_default() >= self.opts.expiry)
            .map(|(id, c)| (*id, c.size))
            .collect();
        let mut removed = (0usize, 0u64);
        for (id, size) in expired {
            match self.storage.remove(&id.staged_path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(target: "qeltrix::serve", "uploads: removing the expired chunk {id}: {e}");
                    continue;
                }
            }
            self.forget(&[id]);
            removed = (removed.0 + 1, removed.1 + size);
        }
        if removed.0 > 0 {
            info!(
                target: "qeltrix::serve",
                "uploads: removed {} expired chunks ({} bytes) staged more than {} s ago",
                removed.0,
                removed.1,
                self.opts.expiry.as_secs()
            );
        }
    }

    /// Runs [`Uploads::sweep`] every quarter of the expiry (between 1 s and an hour), forever.
    pub async fn sweep_periodically(self: Arc<Self>) {
        let every = (self.opts.expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await; // the first tick is now: the start swept already
        loop {
            ticks.tick().await;
            let me = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || me.sweep()).await;
        }
    }

    /// Drops chunks from the staging index (their objects are gone).
    fn forget(&self, ids: &[ChunkId]) {
        let mut s = self.staging();
        for id in ids {
            if let Some(c) = s.chunks.remove(id) {
                s.counted = s.counted.saturating_sub(c.size);
            }
        }
    }

    /// `/health`'s view: staged chunks, bytes counted, the quota.
    pub fn health(&self) -> serde_json::Value {
        let s = self.staging();
        serde_json::json!({
            "staged_chunks": s.chunks.len(),
            "staged_bytes": s.counted,
            "quota_bytes": self.opts.quota_bytes,
        })
    }
}

/// True for the requests the upload API answers: `POST /upload`, `POST /commit` and
/// `PUT /chunks/…`. Everything else (a GET of `/upload` included) is left to the read side.
pub fn is_upload_request(method: &Method, path: &str) -> bool {
    match *method {
        Method::POST => path == "/upload" || path == "/commit",
        Method::PUT => path.starts_with("/chunks/"),
        _ => false,
    }
}

pub(super) type Reply = Response<ServeBody>;

/// An upload request refused: its status, the reason word and a sentence for a person (naming
/// the chunk or path), plus fields some refusals carry (`missing`).
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    reason: &'static str,
    error: String,
    extra: Option<(&'static str, serde_json::Value)>,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str, error: impl Into<String>) -> Self {
        Refusal {
            status,
            reason,
            error: error.into(),
            extra: None,
        }
    }

    fn bad_json(error: impl std::fmt::Display) -> Self {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body is not the expected JSON: {error}"),
        )
    }

    fn internal(error: impl Into<String>) -> Self {
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error)
    }

    fn reply(self, mut log: AccessLog) -> Reply {
        let mut body = serde_json::json!({ "error": self.error, "reason": self.reason });
        if let Some((name, value)) = self.extra {
            body[name] = value;
        }
        log.note = Some(format!("{}: {}", self.reason, self.error));
        let mut reply = json(self.status, &body, log);
        // A refusal may come before the request body was read (a missing token, a declared
        // length over the limit). hyper then closes the connection after the reply, so the
        // reply says so: a client that pooled the connection would otherwise send its next
        // request into a closed socket and see a disconnect instead of an answer.
        reply
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        reply
    }
}

/// A JSON response.
pub(super) fn json(status: StatusCode, value: &serde_json::Value, mut log: AccessLog) -> Reply {
    let body = Bytes::from(value.to_string() + "\n");
    log.status = Some(status);
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(ServeBody::once(body, log))
        .expect("headers built from valid values")
}

/// The header naming the container (`docs/a.txt.qltx`, as `POST /commit` names it) that a
/// `POST /upload` or `PUT /chunks/…` is for. A server that checks capability tokens requires it
/// and checks the token's `upload` right on it; a server with a bearer token ignores it.
pub const PATH_HEADER: &str = "x-qeltrix-path";

/// Who may upload what, as the request's credentials showed.
enum Access {
    /// The server's bearer token: anything.
    Any,
    /// A capability token: `upload` where it allows it.
    Cap(Box<crate::capability::Verified>),
}

impl Access {
    /// Refuses unless the access allows uploading the container at `target` (a checked
    /// container path). A token's caveats name the file as the server shows it: `/docs/a.txt`
    /// for the container `docs/a.txt.qltx`.
    fn check(&self, state: &State, target: &Path) -> Result<(), Refusal> {
        let Access::Cap(token) = self else {
            return Ok(());
        };
        let root = state
            .caps
            .as_ref()
            .expect("a capability token was verified against it");
        // A checked container path ends in NAME.qltx, so it has a plaintext name.
        let name = target
            .file_name()
            .and_then(naming::plaintext_name)
            .unwrap_or_default();
        let resource = format!("/{}", target.with_file_name(name).to_string_lossy());
        root.authorize(token, Operation::Upload, &resource, SystemTime::now())
            .map_err(|refusal| cap_refusal(refusal, Some(token)))
    }
}

/// A capability refusal as an upload refusal: 401 `unauthorized` (no token, a bad one) or 403
/// `forbidden`, naming the token by its id, never by its text.
fn cap_refusal(refusal: crate::capability::Refusal, token: Option<&crate::capability::Verified>) -> Refusal {
    use crate::capability::Refusal as Cap;
    let named = |why: String| match token {
        Some(t) => format!("cap {}: {why}", t.id()),
        None => why,
    };
    match refusal {
        Cap::Unauthenticated(why) => Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", named(why)),
        Cap::Forbidden(why) => Refusal::new(StatusCode::FORBIDDEN, "forbidden", named(why)),
    }
}

/// The request's credentials: the bearer token (`--token-file`), or with `--cap-root` a
/// capability token (`Authorization: Bearer`, or `?cap=`) whose signature is checked here; its
/// revocation and caveats are checked against the container path once it is known
/// ([`Access::check`]).
fn access(state: &State, req: &Request<Incoming>) -> Result<Access, Refusal> {
    if let Some(root) = &state.caps {
        let presented = super::caps::presented(req.headers(), req.uri().query()).ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a capability token is required (Authorization: Bearer TOKEN, or ?cap=TOKEN)",
            )
        })?;
        return root
            .verify(&presented.token)
            .map(|token| Access::Cap(Box::new(token)))
            .map_err(|refusal| cap_refusal(refusal, None));
    }
    let authorized = state
        .token
        .as_ref()
        .is_some_and(|token| token.accepts(req.headers().get(header::AUTHORIZATION)));
    if !authorized {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required (Authorization: Bearer TOKEN)",
        ));
    }
    Ok(Access::Any)
}

/// The container a `POST /upload` or `PUT /chunks/…` is for, from [`PATH_HEADER`], checked
/// against a capability token. A bearer token needs none.
fn check_header_path(state: &State, access: &Access, headers: &hyper::HeaderMap) -> Result<(), Refusal> {
    if let Access::Any = access {
        return Ok(());
    }
    let Some(value) = headers.get(PATH_HEADER) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "path_required",
            "X-Qeltrix-Path is required: a server that checks capability tokens needs the path \
             of the container (docs/a.txt.qltx) these chunks are for",
        ));
    };
    let text = value.to_str().map_err(|_| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "X-Qeltrix-Path is not printable ASCII (percent-encode the path)",
        )
    })?;
    let decoded = percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_path",
                "X-Qeltrix-Path does not decode to UTF-8",
            )
        })?;
    let target = commit::container_path(&decoded)?;
    access.check(state, &target)
}

/// Answers an upload request (see [`is_upload_request`]): with the server's bearer token, or
/// with a capability token that allows `upload` on the container's path.
pub(super) async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    log: AccessLog,
    connection: &Activity,
) -> Reply {
    let Some(uploads) = state.uploads.clone() else {
        return Refusal::new(StatusCode::NOT_FOUND, "not_found", "this server takes no uploads").reply(log);
    };
    let access = match access(&state, &req) {
        Ok(access) => access,
        Err(refusal) => {
            let unauthorized = refusal.status == StatusCode::UNAUTHORIZED;
            let mut r = refusal.reply(log);
            if unauthorized {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"qeltrix\""),
                );
            }
            return r;
        }
    };
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    let result = if let Some(id) = path.strip_prefix("/chunks/") {
        match check_header_path(&state, &access, &parts.headers) {
            Ok(()) => chunks::put(&uploads, id, &parts.headers, body, connection).await,
            Err(refusal) => Err(refusal),
        }
    } else if path == "/upload" {
        match check_header_path(&state, &access, &parts.headers) {
            Ok(()) => negotiate::negotiate(&uploads, &parts.headers, body).await,
            Err(refusal) => Err(refusal),
        }
    } else {
        let check = |target: &Path| access.check(&state, target);
        commit::commit(&uploads, &parts.headers, body, connection, &check).await
    };
    let cap_id = match &access {
        Access::Cap(token) => Some(token.id().to_string()),
        Access::Any => None,
    };
    match result {
        Ok((status, value, note)) => {
            let mut log = log;
            log.note = Some(match cap_id {
                Some(id) => format!("cap {id}: {note}"),
                None => note,
            });
            json(status, &value, log)
        }
        Err(refusal) => refusal.reply(log),
    }
}

/// What a handler answers: the status, the JSON body and a note for the access log.
type Answer = Result<(StatusCode, serde_json::Value, String), Refusal>;

/// Awaits work of the server's own (storage writes, a commit) while keeping the connection
/// from counting as idle: a large commit on an object store may take longer than the idle
/// timeout with no byte moving, and the client is not at fault.
async fn working<T>(connection: &Activity, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticks.tick() => connection.touch(),
        }
    }
}

/// The next piece of a request body (trailers are skipped); `None` at its end.
async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// The `Content-Length` a request declares, if any (and if it is a number).
fn content_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A whole JSON request body of at most `limit` bytes (413 `too_large` beyond).
async fn read_json(
    headers: &hyper::HeaderMap,
    mut body: Incoming,
    limit: usize,
) -> Result<serde_json::Value, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is over {limit} bytes"),
        )
    };
    if content_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut bytes = BytesMut::new();
    while let Some(piece) = next_data(&mut body).await {
        let piece = piece.map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("reading the request body: {e}"),
            )
        })?;
        if bytes.len() + piece.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&piece);
    }
    serde_json::from_slice(&bytes).map_err(Refusal::bad_json)
}
