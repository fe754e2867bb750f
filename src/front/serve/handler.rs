//! One HTTP request in, one response out: authentication, path resolution, conditional
//! requests, ranges, and the headers that go with them. Everything that blocks (file system,
//! key derivation, decryption) runs on blocking threads, never on the async workers.

use super::body::{AccessLog, Segment, ServeBody, Streamer};
use super::conditional::Precondition;
use super::conn::Activity;
use super::containers::{OpenFailure, ServedFile};
use super::paths::{self, Target};
use super::range::{self, ByteRange, RangeRequest};
use super::{caps, upload, State};
use crate::capability::{Operation, Refusal};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

type Reply = Response<ServeBody>;

/// The registry view of a vault: its containers' paths, sizes, roots and signers.
const INDEX_PATH: &str = "/index.json";

/// What the blocking part of a request found.
enum Outcome {
    NotFound,
    /// A capability token that does not allow this request, and why.
    Forbidden(String),
    /// The vault's index (`/index.json`), and a note for the log.
    Index {
        text: String,
        note: String,
    },
    Redirect(String),
    Listing {
        text: String,
        json: bool,
    },
    ListingFailed(String),
    File(Arc<ServedFile>),
    OpenFailed(OpenFailure),
}

pub async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    remote: SocketAddr,
    connection: Arc<Activity>,
) -> Result<Reply, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    // A `?cap=` token never reaches the log.
    let mut log = AccessLog::new(
        remote,
        req.method(),
        &caps::redact(&target),
        req.headers().get(header::RANGE).map(|v| v.as_bytes()),
    );
    log.busy = Some(connection.busy());
    if state.uploads.is_some() && upload::is_upload_request(req.method(), req.uri().path()) {
        return Ok(upload::handle(req, state, log, &connection).await);
    }
    // A GET or HEAD body is never read; hyper discards it or closes the connection.
    let (req, _body) = req.into_parts();
    let is_head = req.method == Method::HEAD;
    if req.method != Method::GET && !is_head {
        let mut r = simple(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD\n",
            is_head,
            log,
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let path = req.uri.path().to_string();
    let raw_query = req.uri.query().map(str::to_string);
    // With capability tokens: the token's signature now (cheap), its caveats once the request's
    // target is known (on the blocking thread).
    let mut cap = None;
    let mut cap_refusal = None;
    if let Some(root) = &state.caps {
        match caps::presented(&req.headers, raw_query.as_deref()) {
            None => {
                cap_refusal = Some(
                    "a capability token is required (Authorization: Bearer TOKEN, or ?cap=TOKEN)".to_string(),
                )
            }
            Some(p) => match root.verify(&p.token) {
                Ok(verified) => {
                    // The log names the token by its id, never by its text.
                    log.note = Some(format!("cap {}", verified.id()));
                    cap = Some((verified, p))
                }
                Err(Refusal::Unauthenticated(why) | Refusal::Forbidden(why)) => cap_refusal = Some(why),
            },
        }
    }
    let query = match &state.caps {
        Some(_) => caps::without_cap(raw_query.as_deref()),
        None => raw_query.clone(),
    };
    let authorized = cap_refusal.is_none()
        && state
            .token
            .as_ref()
            .is_none_or(|token| token.accepts(req.headers.get(header::AUTHORIZATION)));
    if path == "/revocations.json" {
        // The revocation list in force is public: mirrors and clients may check against it.
        if let Some(text) = state.caps.as_ref().and_then(|c| c.revocations_text()) {
            let mut r = simple(StatusCode::OK, Bytes::from(text.to_string()), is_head, log);
            set(&mut r, header::CONTENT_TYPE, "application/json");
            return Ok(r);
        }
    }
    if path == paths::HEALTH_PATH {
        // Load balancers probe without the token: they get the status; the details (version,
        // cache, open containers, counters) only with it.
        let mut r = simple(StatusCode::OK, state.health_json(authorized), is_head, log);
        set(&mut r, header::CONTENT_TYPE, "application/json");
        return Ok(r);
    }
    if !authorized {
        let body = match cap_refusal {
            Some(why) => {
                log.note = Some(format!("capability refused: {why}"));
                format!("{why}\n")
            }
            None => {
                log.note = Some("missing or wrong bearer token".into());
                "a bearer token is required\n".to_string()
            }
        };
        let mut r = simple(StatusCode::UNAUTHORIZED, body, is_head, log);
        set(&mut r, header::WWW_AUTHENTICATE, "Bearer realm=\"qeltrix\"");
        return Ok(r);
    }
    if state.containers.is_none() {
        log.note = Some("upload-only server: no key".into());
        let mut r = simple(
            StatusCode::FORBIDDEN,
            "{\"error\":\"this server holds no key: uploads only\",\"reason\":\"no_key\"}\n",
            is_head,
            log,
        );
        set(&mut r, header::CONTENT_TYPE, "application/json");
        return Ok(r);
    }

    let finder = Arc::clone(&state);
    let found = tokio::task::spawn_blocking(move || {
        let grant = cap.as_ref().map(|(token, presented)| {
            let root = finder.caps.as_ref().expect("a token was verified against it");
            (caps::Grant { root, token }, presented)
        });
        let grant = grant.as_ref().map(|(g, p)| (g, *p));
        find(&finder, &path, query.as_deref(), raw_query.as_deref(), grant)
    })
    .await
    .unwrap_or_else(|e| Outcome::ListingFailed(format!("request task failed: {e}")));
    Ok(match found {
        Outcome::Forbidden(why) => {
            log.note = Some(format!("capability refused: {why}"));
            simple(StatusCode::FORBIDDEN, format!("{why}\n"), is_head, log)
        }
        Outcome::NotFound => simple(StatusCode::NOT_FOUND, "not found\n", is_head, log),
        Outcome::Index { text, note } => {
            log.note = Some(note);
            let mut r = simple(StatusCode::OK, text, is_head, log);
            set(&mut r, header::CONTENT_TYPE, "application/json");
            r
        }
        Outcome::Redirect(to) => {
            let mut r = simple(StatusCode::MOVED_PERMANENTLY, "", is_head, log);
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Outcome::Listing { text, json } => {
            let mut r = simple(StatusCode::OK, text, is_head, log);
            let kind = if json {
                "application/json"
            } else {
                "text/html; charset=utf-8"
            };
            set(&mut r, header::CONTENT_TYPE, kind);
            r
        }
        Outcome::ListingFailed(detail) => {
            log.note = Some(detail);
            simple(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the folder cannot be listed\n",
                is_head,
                log,
            )
        }
        Outcome::OpenFailed(failure) => {
            log.note = Some(failure.detail);
            simple(failure.status, format!("{}\n", failure.reason), is_head, log)
        }
        Outcome::File(file) => serve_file(&req.headers, file, &state, is_head, connection, log).await,
    })
}

/// Resolves `path` (with `query`, the `cap=` parameter removed; `raw_query` as sent, kept on a
/// redirect) and, with capability tokens, checks what it finds against the token: a folder
/// needs `list` on its URL and shows only the entries the token allows (files: `read`,
/// folders: `list`), a container needs `read`.
fn find(
    state: &State,
    path: &str,
    query: Option<&str>,
    raw_query: Option<&str>,
    grant: Option<(&caps::Grant<'_>, &caps::Presented)>,
) -> Outcome {
    let denied = |op: Operation, resource: &str| -> Option<Outcome> {
        let (grant, _) = grant?;
        grant.allows(op, resource).err().map(|r| match r {
            Refusal::Forbidden(why) | Refusal::Unauthenticated(why) => {
                Outcome::Forbidden(format!("cap {}: {why}", grant.token.id()))
            }
        })
    };
    if path == INDEX_PATH {
        if let paths::Root::Vault { vault } = &state.root {
            // Only what the token allows: folders it may list, containers it may read.
            let allow = |p: &str, folder: bool| {
                grant.is_none_or(|(g, _)| {
                    let op = if folder { Operation::List } else { Operation::Read };
                    g.allows(op, p).is_ok()
                })
            };
            return match crate::registry::Index::of_vault_cached(vault, &allow, &state.index_cache) {
                Ok((index, built)) => Outcome::Index {
                    text: index.to_json(state.index_key.as_ref()),
                    note: format!(
                        "index of {} containers ({} read, the rest unchanged since the last index), {} unreadable left out",
                        index.entries.len(),
                        built.read,
                        built.skipped
                    ),
                },
                Err(e) => Outcome::ListingFailed(format!("the index: {e}")),
            };
        }
    }
    match state.root.resolve(path, query) {
        Target::NotFound | Target::Health => Outcome::NotFound,
        Target::Redirect(to) => {
            if let Some(refused) = denied(Operation::List, &to) {
                return refused;
            }
            Outcome::Redirect(match raw_query {
                Some(q) => format!("{to}?{q}"),
                None => to,
            })
        }
        Target::Folder { dir, url, json } => {
            if let Some(refused) = denied(Operation::List, &url) {
                return refused;
            }
            let vault = state.root.vault();
            match paths::list(vault, &dir) {
                Ok(mut entries) => {
                    if let Some((grant, presented)) = grant {
                        entries.retain(|e| {
                            let op = if e.is_dir {
                                Operation::List
                            } else {
                                Operation::Read
                            };
                            grant.allows(op, &format!("{url}{}", e.href)).is_ok()
                        });
                        if presented.in_query {
                            // A shared link: the listing's links carry the token on.
                            let cap: String = percent_encoding::utf8_percent_encode(
                                &presented.token,
                                percent_encoding::NON_ALPHANUMERIC,
                            )
                            .collect();
                            for e in &mut entries {
                                e.href = format!("{}?cap={cap}", e.href);
                            }
                        }
                    }
                    Outcome::Listing {
                        text: if json {
                            paths::listing_json(&url, &entries)
                        } else {
                            paths::listing_html(&url, &entries)
                        },
                        json,
                    }
                }
                Err(e) => Outcome::ListingFailed(format!("{}: {e}", vault.display(&dir))),
            }
        }
        Target::Container { file, .. } => {
            if let Some(refused) = denied(Operation::Read, path) {
                return refused;
            }
            match state.containers.as_ref().map(|c| c.get(&file)) {
                Some(Ok(f)) => Outcome::File(f),
                Some(Err(failure)) => Outcome::OpenFailed(failure),
                None => Outcome::NotFound,
            }
        }
    }
}

async fn serve_file(
    headers: &HeaderMap,
    file: Arc<ServedFile>,
    state: &State,
    is_head: bool,
    connection: Arc<Activity>,
    mut log: AccessLog,
) -> Reply {
    let size = file.cached.len();
    let validators = &file.validators;
    let precondition = validators.evaluate(headers);
    let ranges = if precondition == Precondition::Proceed && validators.range_allowed(headers) {
        range::parse(headers.get(header::RANGE).map(|v| v.as_bytes()), size)
    } else {
        RangeRequest::Full
    };

    let mut builder = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, validators.etag_header())
        .header(header::LAST_MODIFIED, validators.last_modified_header());
    let (status, parts): (StatusCode, Vec<ByteRange>) = match (precondition, ranges) {
        (Precondition::NotModified, _) => {
            log.status = Some(StatusCode::NOT_MODIFIED);
            return finish(builder.status(StatusCode::NOT_MODIFIED), ServeBody::empty(log));
        }
        (Precondition::Failed, _) => {
            log.status = Some(StatusCode::PRECONDITION_FAILED);
            return finish(
                builder.status(StatusCode::PRECONDITION_FAILED),
                ServeBody::empty(log),
            );
        }
        (Precondition::Proceed, RangeRequest::Unsatisfiable) => {
            log.status = Some(StatusCode::RANGE_NOT_SATISFIABLE);
            builder = builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                .header(header::CONTENT_TYPE, "text/plain");
            let text = "range not satisfiable\n";
            let body = if is_head {
                ServeBody::empty(log)
            } else {
                ServeBody::once(text, log)
            };
            return finish(builder.header(header::CONTENT_LENGTH, text.len()), body);
        }
        (Precondition::Proceed, RangeRequest::Full) => (
            StatusCode::OK,
            if size == 0 {
                Vec::new()
            } else {
                vec![ByteRange { start: 0, end: size }]
            },
        ),
        (Precondition::Proceed, RangeRequest::Ranges(r)) if !amplifies(&file, &r) => {
            (StatusCode::PARTIAL_CONTENT, r)
        }
        // Too many blocks to decrypt for the bytes asked: ignore the Range header (RFC 9110
        // §14.3 allows it for many small ranges) and send the whole file, which decrypts no more
        // than it sends, at the client's pace.
        (Precondition::Proceed, RangeRequest::Ranges(_)) => {
            log.note = Some("sparse ranges: whole file sent instead".into());
            (StatusCode::OK, vec![ByteRange { start: 0, end: size }])
        }
    };

    let (segments, len) = if parts.len() > 1 {
        let boundary = boundary();
        builder = builder.header(
            header::CONTENT_TYPE,
            format!("multipart/byteranges; boundary={boundary}"),
        );
        multipart(&parts, size, file.content_type, &boundary)
    } else {
        builder = builder.header(header::CONTENT_TYPE, file.content_type);
        if let (StatusCode::PARTIAL_CONTENT, Some(r)) = (status, parts.first()) {
            builder = builder.header(header::CONTENT_RANGE, r.content_range(size));
        }
        let len = parts.first().map_or(0, ByteRange::len);
        (parts.iter().map(|r| Segment::Range(*r)).collect(), len)
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, len);
    log.status = Some(status);
    if is_head || parts.is_empty() {
        return finish(builder, ServeBody::empty(log));
    }

    let streamer = Streamer {
        readahead: state.readahead_blocks(file.block_size),
        file,
        limiter: Arc::clone(&state.limiter),
        budget: Arc::clone(&state.budget),
        budget_bytes: state.budget_bytes,
        stats: Arc::clone(&state.stats),
    };
    // A small random range of a v2 container: only its segments are decrypted.
    if let Some(read) = streamer.read_small(&parts).await {
        return match read {
            Ok(bytes) => finish(builder, ServeBody::once(bytes, log)),
            Err(e) => {
                log.note = Some(streamer.describe(&e));
                let reason = format!("bytes {}..{} cannot be read\n", parts[0].start, parts[0].end);
                simple(StatusCode::INTERNAL_SERVER_ERROR, reason, false, log)
            }
        };
    }
    streamer.start_readahead(&parts);
    // The first block is loaded before the status line goes out, so a container that fails right
    // there gets an honest error status instead of a cut 200.
    let first_index = streamer
        .file
        .cached
        .block_of(parts[0].start)
        .expect("a range starts inside the file");
    let first = match streamer.load(first_index).await {
        Ok(block) => block,
        Err(e) => {
            log.note = Some(streamer.describe(&e));
            let reason = format!("block {first_index} cannot be read\n");
            return simple(StatusCode::INTERNAL_SERVER_ERROR, reason, false, log);
        }
    };
    finish(
        builder,
        streamer.into_body(segments, len, Some((first_index, first)), connection, log),
    )
}

/// Bytes a request may decrypt beyond twice what it sends (at least two blocks: any single
/// range may start and end inside a block).
pub const RANGE_SLACK_BYTES: u64 = 8 << 20;

/// The range amplification rule: ranges are honoured only if the blocks they touch hold at
/// most `2 × bytes asked + max(RANGE_SLACK_BYTES, 2 × block size)` of plaintext. A single range
/// always passes; 64 one-byte ranges in 64 different 16 MiB blocks (1 GiB to decrypt for 64
/// bytes) do not.
fn amplifies(file: &ServedFile, ranges: &[ByteRange]) -> bool {
    if ranges.len() < 2 {
        return false;
    }
    let container = file.cached.container();
    let asked: u64 = ranges.iter().map(ByteRange::len).sum();
    let allowed = asked
        .saturating_mul(2)
        .saturating_add(RANGE_SLACK_BYTES.max(file.block_size.saturating_mul(2)));
    // Ranges are sorted and merged, so the blocks they touch come in order; a block shared by
    // two neighbouring ranges counts once. Each range's blocks are contiguous: their plaintext
    // is the span from the first block's start to the last block's end.
    let mut touched = 0u64;
    let mut covered_to = 0u64; // plaintext offset up to which blocks were already counted
    for r in ranges {
        let Some(blocks) =
            crate::core::ranges::blocks_cover(&container.info().footer.entries, r.start, r.len())
        else {
            continue;
        };
        let from = blocks.start.max(covered_to);
        touched = touched.saturating_add(blocks.end.saturating_sub(from));
        covered_to = covered_to.max(blocks.end);
    }
    touched > allowed
}

/// The segments of a `multipart/byteranges` body and its exact length.
fn multipart(parts: &[ByteRange], size: u64, content_type: &str, boundary: &str) -> (Vec<Segment>, u64) {
    let mut segments = Vec::with_capacity(parts.len() * 2 + 1);
    let mut len = 0u64;
    for (i, r) in parts.iter().enumerate() {
        let head = format!(
            "{}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
            if i == 0 { "" } else { "\r\n" },
            r.content_range(size)
        );
        len += head.len() as u64 + r.len();
        segments.push(Segment::Bytes(Bytes::from(head)));
        segments.push(Segment::Range(*r));
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    len += tail.len() as u64;
    segments.push(Segment::Bytes(Bytes::from(tail)));
    (segments, len)
}

/// A fresh multipart boundary: random, so it cannot be predicted into the content.
fn boundary() -> String {
    use crate::core::crypto::{Entropy, SystemEntropy};
    let mut r = [0u8; 12];
    SystemEntropy.fill(b"multipart boundary", &mut r);
    format!("qeltrix-{}", hex::encode(r))
}

/// A short text (or JSON) response; for HEAD, the same headers without the body.
fn simple(status: StatusCode, body: impl Into<Bytes>, is_head: bool, mut log: AccessLog) -> Reply {
    let body = body.into();
    log.status = Some(status);
    let len = body.len();
    let builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, len);
    if is_head {
        finish(builder, ServeBody::empty(log))
    } else {
        finish(builder, ServeBody::once(body, log))
    }
}

fn set(r: &mut Reply, name: header::HeaderName, value: &'static str) {
    r.headers_mut().insert(name, HeaderValue::from_static(value));
}

fn finish(builder: hyper::http::response::Builder, body: ServeBody) -> Reply {
    builder.body(body).expect("headers built from valid values")
}
