//! `PUT /chunks/{id}`: a chunk's bytes, streamed into its staging object and kept only if their
//! BLAKE3 hash is the id.
//!
//! The body is read on the async side and handed piece by piece (a bounded channel: a few
//! pieces in memory at most) to a blocking thread that counts the bytes against the quota,
//! hashes them and writes them into an uncommitted [`ObjectWriter`](crate::storage::ObjectWriter).
//! At the end the hash decides: the object is committed, or dropped and so never appears. A
//! client that goes away mid-body closes the channel, and the writer is dropped the same way.

use super::{content_length, next_data, working, Activity, Answer, ChunkId, Refusal, StagedChunk, Uploads};
use crate::storage::WriteOptions;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::StatusCode;
use serde_json::json;
use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;

/// Pieces of a body in flight between the reader and the writing thread.
const PIECES_IN_FLIGHT: usize = 8;

/// What the async side hands the writing thread.
enum Piece {
    Data(Bytes),
    /// The body ended whole: check the hash and commit.
    End,
}

/// Why staging a chunk failed on the writing thread.
enum StageError {
    /// The body stopped before its end (the client left, or the reader refused it).
    Aborted,
    Quota {
        counted: u64,
    },
    Mismatch {
        actual: String,
    },
    Storage(String),
}

pub(super) async fn put(
    uploads: &Arc<Uploads>,
    raw_id: &str,
    headers: &hyper::HeaderMap,
    mut body: Incoming,
    connection: &Activity,
) -> Answer {
    let Some(id) = ChunkId::parse(raw_id) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_id",
            format!(
                "chunk id {:?} is not 64 lowercase hex digits (the BLAKE3 hash of its bytes)",
                raw_id.chars().take(100).collect::<String>()
            ),
        ));
    };
    let stored = |status: StatusCode, size: u64, note: String| {
        Ok((status, json!({ "id": id.to_string(), "size": size }), note))
    };
    let staged = uploads.staging().chunks.get(&id).copied();
    if let Some(staged) = staged {
        // The bytes are not needed (the server has them, and the id is their hash), but they
        // are read and dropped: a connection closed with a body unread is reset, and the client
        // would lose the answer.
        discard(&mut body, uploads.opts.max_chunk_size).await;
        return stored(StatusCode::OK, staged.size, format!("chunk {id}: staged already"));
    }
    let max = uploads.opts.max_chunk_size;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("chunk {id}: over the largest chunk this server takes ({max} bytes)"),
        )
    };
    if let Some(declared) = content_length(headers) {
        if declared > max {
            discard(&mut body, REFUSED_BODY_READ).await;
            return Err(too_large());
        }
        let counted = uploads.staging().counted;
        if counted.saturating_add(declared) > uploads.opts.quota_bytes {
            discard(&mut body, REFUSED_BODY_READ).await;
            return Err(quota(id, counted, uploads.opts.quota_bytes));
        }
    }

    let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
    let writer = {
        let uploads = Arc::clone(uploads);
        tokio::task::spawn_blocking(move || stage(&uploads, id, rx))
    };
    let mut received = 0u64;
    let mut refused = None;
    while let Some(piece) = next_data(&mut body).await {
        let data = match piece {
            Ok(data) => data,
            Err(e) => {
                refused = Some(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("chunk {id}: reading the body: {e}"),
                ));
                break;
            }
        };
        received += data.len() as u64;
        if received > max {
            refused = Some(too_large());
            break;
        }
        if working(connection, tx.send(Piece::Data(data))).await.is_err() {
            break; // the writing thread stopped: its result says why
        }
    }
    if refused.is_none() {
        let _ = tx.send(Piece::End).await;
    }
    drop(tx);
    let result = working(connection, writer)
        .await
        .map_err(|e| Refusal::internal(format!("chunk {id}: the writing task failed: {e}")))?;
    if let Some(refusal) = refused {
        return Err(refusal);
    }
    match result {
        Ok((size, true)) => stored(
            StatusCode::CREATED,
            size,
            format!("chunk {id}: staged {size} bytes"),
        ),
        Ok((size, false)) => stored(StatusCode::OK, size, format!("chunk {id}: staged already")),
        Err(StageError::Aborted) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("chunk {id}: the body ended early"),
        )),
        Err(StageError::Quota { counted }) => Err(quota(id, counted, uploads.opts.quota_bytes)),
        Err(StageError::Mismatch { actual }) => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "hash_mismatch",
            format!("chunk {id}: the bytes sent hash to {actual}, not to the id; nothing was stored"),
        )),
        Err(StageError::Storage(e)) => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("chunk {id}: {e}"),
        )),
    }
}

/// Of a body refused before it is read, the bytes read and dropped so that a client still
/// sending a modest body gets the answer instead of a reset connection (a larger one is cut).
const REFUSED_BODY_READ: u64 = 1 << 20;

/// Reads and drops up to `limit` bytes of `body`, or all of it.
async fn discard(body: &mut Incoming, limit: u64) {
    let mut read = 0u64;
    while read <= limit {
        match next_data(body).await {
            Some(Ok(data)) => read += data.len() as u64,
            _ => return,
        }
    }
}

fn quota(id: ChunkId, counted: u64, quota: u64) -> Refusal {
    Refusal::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "quota",
        format!("chunk {id}: the staging quota ({quota} bytes, {counted} in use) would be exceeded"),
    )
}

/// Bytes counted against the quota for a chunk being received; given back on drop unless the
/// chunk was staged.
struct Reservation<'a> {
    uploads: &'a Uploads,
    bytes: u64,
}

impl Reservation<'_> {
    fn grow(&mut self, n: u64) -> Result<(), StageError> {
        let mut s = self.uploads.staging();
        let after = s.counted.saturating_add(n);
        if after > self.uploads.opts.quota_bytes {
            return Err(StageError::Quota {
                counted: s.counted - self.bytes,
            });
        }
        s.counted = after;
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut s = self.uploads.staging();
        s.counted = s.counted.saturating_sub(self.bytes);
    }
}

/// The writing thread: counts, hashes and writes the pieces, then commits the staging object
/// if the hash is the id. Returns the size and whether the chunk is new.
fn stage(uploads: &Uploads, id: ChunkId, mut rx: mpsc::Receiver<Piece>) -> Result<(u64, bool), StageError> {
    let storage = &uploads.storage;
    let path = id.staged_path();
    let failed = |e: &dyn std::fmt::Display| StageError::Storage(format!("{}: {e}", storage.display(&path)));
    let mut reservation = Reservation { uploads, bytes: 0 };
    storage.make_parents(&path).map_err(|e| failed(&e))?;
    let mut out = storage
        .create(&path, WriteOptions::overwrite(true))
        .map_err(|e| failed(&e))?;
    let mut hasher = blake3::Hasher::new();
    loop {
        match rx.blocking_recv() {
            None => return Err(StageError::Aborted),
            Some(Piece::Data(data)) => {
                reservation.grow(data.len() as u64)?;
                hasher.update(&data);
                out.write_all(&data).map_err(|e| failed(&e))?;
            }
            Some(Piece::End) => break,
        }
    }
    let actual = hasher.finalize();
    if actual.as_bytes() != &id.0 {
        // `out` is dropped uncommitted: nothing appears.
        return Err(StageError::Mismatch {
            actual: actual.to_hex().to_string(),
        });
    }
    out.commit().map_err(|e| failed(&e))?;
    let size = reservation.bytes;
    let mut s = uploads.staging();
    let fresh = !s.chunks.contains_key(&id);
    if fresh {
        s.chunks.insert(
            id,
            StagedChunk {
                size,
                since: SystemTime::now(),
            },
        );
    }
    drop(s);
    if fresh {
        reservation.bytes = 0; // counted now as a staged chunk
    }
    Ok((size, fresh))
}
