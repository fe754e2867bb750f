//! `POST /commit`: staged chunks, in order, become a container of the vault, after a keyless
//! check of the whole.
//!
//! The order of work, each step refusing before anything is created:
//!
//! 1. the path: relative, `/`-separated, no empty, `.`-leading (so no `..`, no `.qeltrix`) or
//!    backslash components, ending in `.qltx` (400 `bad_path`), and, on a server that checks
//!    capability tokens, one the token may upload (403 `forbidden`);
//! 2. every chunk staged (409 `missing`, with the list);
//! 3. nothing at the path, unless `overwrite` (409 `exists`);
//! 4. the chunks read as one container ([`Chain`]) pass the check behind `verify --no-key`: a
//!    format-v2 structure whose footer root matches its block hashes and file record, and every
//!    block whose BLAKE3 hash, length, prefix and metadata copy match the footer (422 `verify`,
//!    naming the block and offset). Version 1 has no keyless hashes, so it is refused;
//! 5. the chunks streamed in order into an [`ObjectWriter`](crate::storage::ObjectWriter) at the
//!    path, committed whole; then the chunks are removed.
//!
//! Commits run one at a time (the expiry sweep waits for them too), on a blocking thread that
//! holds the lock to its end, even if the client leaves.

use super::{read_json, working, Activity, Answer, ChunkId, Refusal, Uploads};
use crate::integrity_v2::check_blocks_keyless;
use crate::storage::{EntryKind, Object, ReadAt, WriteOptions};
use crate::vault::naming;
use crate::{ContainerInfo, Error};
use hyper::body::Incoming;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The largest `POST /commit` body: about 100,000 chunk ids.
pub const MAX_COMMIT_BODY: usize = 8 << 20;
/// Bytes copied at a time from the chunks into the container (one ranged read on an object
/// store).
const COPY_BUFFER: usize = 4 << 20;
/// The longest path accepted, in bytes.
const MAX_PATH_BYTES: usize = 4096;

pub(super) async fn commit(
    uploads: &Arc<Uploads>,
    headers: &hyper::HeaderMap,
    body: Incoming,
    connection: &Activity,
    allowed: &(dyn Fn(&Path) -> Result<(), Refusal> + Sync),
) -> Answer {
    let request = read_json(headers, body, MAX_COMMIT_BODY).await?;
    let Some(Value::String(path)) = request.get("path") else {
        return Err(Refusal::bad_json("\"path\" must be a string"));
    };
    let Some(Value::Array(list)) = request.get("chunks") else {
        return Err(Refusal::bad_json("\"chunks\" must be an array of chunk ids"));
    };
    let overwrite = match request.get("overwrite") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Refusal::bad_json("\"overwrite\" must be true or false")),
    };
    let target = container_path(path)?;
    allowed(&target)?;
    let mut ids = Vec::with_capacity(list.len());
    for item in list {
        let Some(text) = item.as_str() else {
            return Err(Refusal::bad_json(format!(
                "{path}: \"chunks\" must hold chunk id strings"
            )));
        };
        let Some(id) = ChunkId::parse(text) else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_id",
                format!(
                    "{path}: chunk id {:?} is not 64 lowercase hex digits",
                    text.chars().take(100).collect::<String>()
                ),
            ));
        };
        ids.push(id);
    }
    let lock = working(connection, Arc::clone(&uploads.commits).lock_owned()).await;
    let uploads = Arc::clone(uploads);
    let shown = path.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _one_at_a_time = lock;
        build(&uploads, &shown, &target, &ids, overwrite)
    });
    working(connection, task)
        .await
        .map_err(|e| Refusal::internal(format!("{path}: the commit task failed: {e}")))?
}

/// Checks a commit's path (step 1).
pub fn container_path(text: &str) -> Result<PathBuf, Refusal> {
    let bad = |why: &str| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_path",
            format!("path {:?}: {why}", text.chars().take(200).collect::<String>()),
        )
    };
    if text.len() > MAX_PATH_BYTES {
        return Err(bad("too long"));
    }
    if text.starts_with('/') {
        return Err(bad("must be relative to the vault"));
    }
    let mut path = PathBuf::new();
    for component in text.split('/') {
        if component.is_empty() {
            return Err(bad("has an empty component"));
        }
        if naming::is_hidden(component.as_bytes()) {
            return Err(bad("has a component starting with '.' (., .., hidden names)"));
        }
        if component.contains('\\') || component.chars().any(char::is_control) {
            return Err(bad("has a backslash or a control character"));
        }
        path.push(component);
    }
    let name = path.file_name().unwrap_or_default();
    if naming::plaintext_name(name).is_none() {
        return Err(bad("must end in .qltx (NAME.qltx)"));
    }
    Ok(path)
}

/// Steps 2 to 5, on a blocking thread, holding the commit lock.
fn build(uploads: &Uploads, shown: &str, target: &Path, ids: &[ChunkId], overwrite: bool) -> Answer {
    let storage = &uploads.storage;
    let storage_error = |what: &str, e: &dyn std::fmt::Display| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("{shown}: {what}: {e}"),
        )
    };

    let missing: Vec<String> = {
        let staging = uploads.staging();
        let mut seen = HashSet::new();
        ids.iter()
            .filter(|id| !staging.chunks.contains_key(id) && seen.insert(**id))
            .map(ChunkId::to_string)
            .collect()
    };
    if !missing.is_empty() {
        let mut refusal = Refusal::new(
            StatusCode::CONFLICT,
            "missing",
            format!(
                "{shown}: {} of its chunks are not staged (first: {})",
                missing.len(),
                missing[0]
            ),
        );
        refusal.extra = Some(("missing", json!(missing)));
        return Err(refusal);
    }
    let exists = || {
        Refusal::new(
            StatusCode::CONFLICT,
            "exists",
            format!("{shown} exists already (commit with \"overwrite\": true to replace it)"),
        )
    };
    match storage.stat_now(target) {
        Ok(entry) if entry.kind == EntryKind::Folder => {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "exists",
                format!("{shown} is a folder"),
            ))
        }
        Ok(_) if !overwrite => return Err(exists()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(storage_error("looking it up", &e)),
    }

    // Sizes from the staging index; each chunk is opened only when read (one open at a time,
    // however many chunks a container has).
    let sizes: Vec<u64> = {
        let staging = uploads.staging();
        ids.iter()
            .map(|id| staging.chunks.get(id).map_or(0, |c| c.size))
            .collect()
    };
    let open = |i: usize| {
        let id = ids[i];
        storage
            .open(&id.staged_path())
            .map_err(|e| io::Error::new(e.kind(), format!("opening chunk {id}: {e}")))
    };
    let chain = Chain::new(&sizes, open).map_err(|e| storage_error("adding up the chunks' sizes", &e))?;
    let root = verify(&chain).map_err(|e| {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "verify",
            format!("{shown}: the chunks in this order are not a container that verifies: {e}"),
        )
    })?;

    storage
        .make_parents(target)
        .map_err(|e| storage_error("making its folders", &e))?;
    let created = |e: Error| match e {
        Error::Exists { .. } => exists(),
        e => storage_error("writing it", &e),
    };
    let mut out = storage
        .create(target, WriteOptions::overwrite(overwrite))
        .map_err(created)?;
    let mut buf = vec![0u8; COPY_BUFFER.min(usize::try_from(chain.size).unwrap_or(usize::MAX))];
    let mut at = 0u64;
    while at < chain.size {
        let n = buf
            .len()
            .min(usize::try_from(chain.size - at).unwrap_or(usize::MAX));
        chain
            .read_exact_at(&mut buf[..n], at)
            .map_err(|e| storage_error(&format!("reading the chunks at offset {at}"), &e))?;
        out.write_all(&buf[..n])
            .map_err(|e| storage_error("writing it", &e))?;
        at += n as u64;
    }
    out.commit().map_err(created)?;

    let mut used: Vec<ChunkId> = ids.to_vec();
    used.sort_unstable_by_key(|id| id.0);
    used.dedup();
    for id in &used {
        match storage.remove(&id.staged_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // The container is in place; a chunk left behind only waits for the expiry.
            Err(e) => tracing::warn!(target: "qeltrix::serve", "uploads: removing the used chunk {id}: {e}"),
        }
    }
    uploads.forget(&used);
    let root = hex::encode(root);
    let note = format!(
        "committed {shown}: {} bytes from {} chunks, root {root}",
        chain.size,
        ids.len()
    );
    Ok((
        StatusCode::CREATED,
        json!({ "path": shown, "size": chain.size, "root": root }),
        note,
    ))
}

/// The keyless check of a whole container (step 4); its ciphertext root on success.
fn verify(source: &dyn ReadAt) -> crate::Result<[u8; 32]> {
    let info = ContainerInfo::read(source)?;
    let Some(footer) = info.footer_v2.as_ref() else {
        return Err(Error::InvalidArgument(
            "format version 1 has no keyless hashes, so the server cannot check it: pack with --format 2"
                .into(),
        ));
    };
    let size = info.container_size;
    check_blocks_keyless(footer, |entry, buf| {
        let at = entry.entry.offset;
        let len = entry.entry.len.min(size.saturating_sub(at));
        buf.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
        source
            .read_exact_at(buf, at)
            .map_err(|e| Error::io(format!("reading the block at offset {at}"), e))
    })?;
    Ok(footer.root)
}

/// Objects read one after another as one: the staged chunks of a container, in order. Each is
/// opened when first read (by `open`, with its index), and the last one opened is kept: the
/// check and the copy read front to back.
struct Chain<F> {
    /// Where each object starts.
    starts: Vec<u64>,
    size: u64,
    open: F,
    current: Mutex<Option<(usize, Object)>>,
}

impl<F: Fn(usize) -> io::Result<Object> + Send + Sync> Chain<F> {
    fn new(sizes: &[u64], open: F) -> io::Result<Self> {
        let mut starts = Vec::with_capacity(sizes.len());
        let mut size = 0u64;
        for len in sizes {
            starts.push(size);
            size = size
                .checked_add(*len)
                .ok_or_else(|| io::Error::other("the chunks add up to more than 2^64 bytes"))?;
        }
        Ok(Chain {
            starts,
            size,
            open,
            current: Mutex::new(None),
        })
    }

    fn read_part(&self, index: usize, buf: &mut [u8], at: u64) -> io::Result<()> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let object = match current.take() {
            Some((i, object)) if i == index => object,
            _ => (self.open)(index)?,
        };
        let read = object.read_exact_at(buf, at);
        *current = Some((index, object));
        read
    }
}

impl<F: Fn(usize) -> io::Result<Object> + Send + Sync> ReadAt for Chain<F> {
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.size) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if buf.is_empty() {
            return Ok(());
        }
        // The last part starting at or before `offset` (empty parts before it are skipped).
        let mut i = self.starts.partition_point(|start| *start <= offset) - 1;
        while !buf.is_empty() {
            let start = self.starts[i];
            let part_end = self.starts.get(i + 1).copied().unwrap_or(self.size);
            let n = usize::try_from(part_end - offset)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let (now, rest) = buf.split_at_mut(n);
            if !now.is_empty() {
                self.read_part(i, now, offset - start)?;
            }
            buf = rest;
            offset += n as u64;
            i += 1;
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for good in ["a.qltx", "docs/a.txt.qltx", "x y/z.mp4.qltx"] {
            assert!(container_path(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "../x.qltx",
            "a/../x.qltx",
            ".qeltrix/x.qltx",
            "a/.x.qltx",
            "/abs.qltx",
            "a//b.qltx",
            "a.txt",
            ".qltx",
            "a/",
            "a\\b.qltx",
            "a\nb.qltx",
        ] {
            assert_eq!(container_path(bad).unwrap_err().reason, "bad_path", "{bad:?}");
        }
    }

    #[test]
    fn chain_reads_across_parts() {
        let parts: [&[u8]; 4] = [b"abc", b"", b"de", b"fghij"];
        let opened = std::sync::atomic::AtomicUsize::new(0);
        let open = |i: usize| -> io::Result<Object> {
            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Box::new(parts[i].to_vec()))
        };
        let chain = Chain::new(&parts.map(|p| p.len() as u64), open).unwrap();
        assert_eq!(chain.size, 10);
        let mut whole = [0u8; 10];
        chain.read_exact_at(&mut whole, 0).unwrap();
        assert_eq!(&whole, b"abcdefghij");
        assert_eq!(
            opened.load(std::sync::atomic::Ordering::Relaxed),
            3,
            "empty parts are never opened"
        );
        for start in 0..10u64 {
            for len in 0..=(10 - start) as usize {
                let mut buf = vec![0u8; len];
                chain.read_exact_at(&mut buf, start).unwrap();
                assert_eq!(&buf[..], &b"abcdefghij"[start as usize..start as usize + len]);
            }
        }
        assert!(chain.read_exact_at(&mut [0u8; 2], 9).is_err());
        assert!(chain.read_exact_at(&mut [0u8; 1], u64::MAX).is_err());
    }
}
