//! `POST /upload`: the client lists chunks (id and size) and learns which to send.
//!
//! Each chunk is answered in the order asked: `OK`, or `NOTOK` with the first reason that applies
//! of `bad_id` (not 64 lowercase hex digits), `exists` (staged already: do not send it),
//! `too_large` (over the largest chunk) and `quota` (the chunks staged, plus those answered `OK`
//! before it in this request, plus this one, would pass the staging quota). Nothing is reserved:
//! the quota is enforced again when the bytes arrive.
//!
//! The answer is remembered under the request's `request_id` (an LRU, bounded in count and
//! bytes): the same id with the same request gets the same answer again, even if what is staged
//! has changed meanwhile (a client retrying after a lost response sees what it was told); the
//! same id with a different request is refused (409 `request_id_reused`).

use super::{read_json, Answer, ChunkId, Refusal, Uploads, REMEMBERED_ANSWERS, REMEMBERED_ANSWER_BYTES};
use hyper::body::Incoming;
use hyper::StatusCode;
use lru::LruCache;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::num::NonZeroUsize;

/// Bytes of JSON a request may take per chunk it lists (a 64-digit id and a size take about
/// 100), plus a fixed allowance.
const JSON_BYTES_PER_CHUNK: usize = 256;
const JSON_BYTES_FIXED: usize = 64 * 1024;

/// An answer given, under its request id.
struct Remembered {
    /// BLAKE3 of the request as parsed and written back (so spacing does not matter).
    request: [u8; 32],
    answer: Value,
    /// What it costs to keep: its JSON length plus the request id's.
    bytes: usize,
}

/// Answers given recently, by request id.
pub(super) struct Answers {
    by_id: LruCache<String, Remembered>,
    bytes: usize,
}

impl Answers {
    pub fn new() -> Self {
        Answers {
            by_id: LruCache::new(NonZeroUsize::new(REMEMBERED_ANSWERS).expect("not zero")),
            bytes: 0,
        }
    }

    fn insert(&mut self, id: String, remembered: Remembered) {
        self.bytes += remembered.bytes;
        if let Some((_, old)) = self.by_id.push(id, remembered) {
            self.bytes -= old.bytes;
        }
        while self.bytes > REMEMBERED_ANSWER_BYTES {
            match self.by_id.pop_lru() {
                Some((_, old)) => self.bytes -= old.bytes,
                None => break,
            }
        }
    }
}

/// One chunk as asked about.
struct Asked<'a> {
    id: &'a str,
    size: u64,
}

pub(super) async fn negotiate(uploads: &Uploads, headers: &hyper::HeaderMap, body: Incoming) -> Answer {
    let max_chunks = uploads.opts.max_chunks_per_request;
    let limit = JSON_BYTES_FIXED.saturating_add(max_chunks.saturating_mul(JSON_BYTES_PER_CHUNK));
    let request = read_json(headers, body, limit).await?;
    let request_id = match request.get("request_id") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(Refusal::bad_json("\"request_id\" must be a string")),
    };
    let Some(Value::Array(list)) = request.get("chunks") else {
        return Err(Refusal::bad_json("\"chunks\" must be an array"));
    };
    if list.len() > max_chunks {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_chunks",
            format!(
                "request {request_id}: {} chunks asked about, at most {max_chunks} per request",
                list.len()
            ),
        ));
    }
    let asked = list
        .iter()
        .enumerate()
        .map(|(i, c)| parse_chunk(i, c))
        .collect::<Result<Vec<_>, _>>()?;

    let fingerprint = *blake3::hash(request.to_string().as_bytes()).as_bytes();
    {
        let mut answers = uploads.answers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = answers.by_id.get(&request_id) {
            if before.request != fingerprint {
                return Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "request_id_reused",
                    format!("request_id {request_id:?} was used before for a different request"),
                ));
            }
            let note = format!("request {request_id}: the same request again, the same answer");
            return Ok((StatusCode::OK, before.answer.clone(), note));
        }
    }

    let verdicts = decide(uploads, &asked);
    let oks = verdicts.iter().filter(|v| v.is_none()).count();
    let answer = json!({
        "request_id": request_id,
        "chunks": asked.iter().zip(&verdicts).map(|(a, v)| match v {
            None => json!({ "id": a.id, "send": "OK" }),
            Some(reason) => json!({ "id": a.id, "send": "NOTOK", "reason": reason }),
        }).collect::<Vec<_>>(),
    });
    let bytes = answer.to_string().len() + request_id.len();
    uploads.answers.lock().unwrap_or_else(|p| p.into_inner()).insert(
        request_id.clone(),
        Remembered {
            request: fingerprint,
            answer: answer.clone(),
            bytes,
        },
    );
    let note = format!(
        "request {request_id}: {} chunks asked about, {oks} to send",
        asked.len()
    );
    Ok((StatusCode::OK, answer, note))
}

/// `{"id": "...", "size": N}` or `{"id": "...", "size_in_KB": N}` (KiB).
fn parse_chunk(index: usize, chunk: &Value) -> Result<Asked<'_>, Refusal> {
    let Some(id) = chunk.get("id").and_then(Value::as_str) else {
        return Err(Refusal::bad_json(format!("chunk {index} has no \"id\" string")));
    };
    let number = |name: &str| match chunk.get(name) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            Refusal::bad_json(format!(
                "chunk {id}: \"{name}\" must be a whole number of bytes or KiB"
            ))
        }),
    };
    let size = match (number("size")?, number("size_in_KB")?) {
        (Some(bytes), _) => bytes,
        // Past u64 is past any limit: too large, not malformed.
        (None, Some(kib)) => kib.saturating_mul(1024),
        (None, None) => {
            return Err(Refusal::bad_json(format!(
                "chunk {id} has neither \"size\" nor \"size_in_KB\""
            )))
        }
    };
    Ok(Asked { id, size })
}

/// For each chunk, `None` (send it) or the reason not to.
fn decide(uploads: &Uploads, asked: &[Asked<'_>]) -> Vec<Option<&'static str>> {
    let staging = uploads.staging();
    let opts = &uploads.opts;
    let mut planned = 0u64;
    let mut oked = HashSet::new();
    asked
        .iter()
        .map(|a| {
            let Some(id) = ChunkId::parse(a.id) else {
                return Some("bad_id");
            };
            if staging.chunks.contains_key(&id) {
                return Some("exists");
            }
            if a.size > opts.max_chunk_size {
                return Some("too_large");
            }
            if oked.contains(&id) {
                return None; // listed twice: counted once
            }
            let after = staging.counted.saturating_add(planned).saturating_add(a.size);
            if after > opts.quota_bytes {
                return Some("quota");
            }
            planned += a.size;
            oked.insert(id);
            None
        })
        .collect()
}
