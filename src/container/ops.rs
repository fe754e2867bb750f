//! File-to-file operations, over the storage seam: each has a core taking a [`Storage`]
//! (`pack_in`, `unpack_in`, `unpack_container_in`, `reencrypt_in`) and the path-taking form that
//! runs it on the local disk ([`LocalStorage::anywhere`]). Every output is an [`ObjectWriter`]
//! committed whole (on the local disk, through [`AtomicOutput`]), so a wrong key, a corrupt block,
//! a signal or a crash never leaves a partial file behind.

use crate::container::reader::{Container, ContainerInfo};
use crate::container::writer::{PackOptions, PackSummary, StreamPacker};
pub use crate::storage::atomic::{AtomicOutput, EarlyWriteback};
use crate::storage::{LocalStorage, ReadAt, Storage, WriteOptions};
use crate::{Error, Key, Recipient, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

/// Packs `input` into a new container file `output`.
pub fn pack(
    input: &Path,
    output: &Path,
    keys: &[Recipient],
    opts: &PackOptions,
    overwrite: bool,
) -> Result<PackSummary> {
    let mut file = File::open(input).map_err(|e| Error::io("opening the input", e).in_file(input))?;
    pack_reader(&mut file, output, keys, opts, overwrite)
}

/// Packs everything `input` yields into a new container file `output` (the stdin path).
pub fn pack_reader(
    input: &mut dyn Read,
    output: &Path,
    keys: &[Recipient],
    opts: &PackOptions,
    overwrite: bool,
) -> Result<PackSummary> {
    pack_in(&LocalStorage::anywhere(), input, output, keys, opts, overwrite)
}

/// Packs everything `input` yields into a new container at `output` in `storage`, all or nothing.
/// Where the storage's writer can seek (a local file), the header's totals are filled in at the
/// end; otherwise the container is a stream, which every reader opens just the same.
pub fn pack_in(
    storage: &dyn Storage,
    input: &mut dyn Read,
    output: &Path,
    keys: &[Recipient],
    opts: &PackOptions,
    overwrite: bool,
) -> Result<PackSummary> {
    pack_with(storage, output, keys, opts, overwrite, |packer| {
        packer.pack_from(input).map(drop)
    })
}

/// A packer whatever its output, as [`pack_with`] hands it to its `fill`: plaintext goes in with
/// `write`, or `pack_from` a reader; `flush_block` seals a partial block now.
pub trait Packer: Write {
    /// Reads `input` to its end into the container; see [`StreamPacker::pack_from`].
    fn pack_from(&mut self, input: &mut dyn Read) -> Result<u64>;
    /// Seals the partial block and writes what is sealed; see [`StreamPacker::flush_block`].
    fn flush_block(&mut self) -> Result<()>;
}

impl<W: Write> Packer for StreamPacker<W> {
    fn pack_from(&mut self, input: &mut dyn Read) -> Result<u64> {
        StreamPacker::pack_from(self, input)
    }
    fn flush_block(&mut self) -> Result<()> {
        StreamPacker::flush_block(self)
    }
}

/// Creates the container `output` in `storage`, all or nothing, filled by `fill` (which writes
/// the plaintext into the packer it is given, in as many pieces as it likes); then finishes and
/// commits it. An error from `fill` leaves nothing behind.
pub fn pack_with(
    storage: &dyn Storage,
    output: &Path,
    keys: &[Recipient],
    opts: &PackOptions,
    overwrite: bool,
    fill: impl FnOnce(&mut dyn Packer) -> Result<()>,
) -> Result<PackSummary> {
    let mut out = storage.create(output, WriteOptions::overwrite(overwrite))?;
    let summary = match out.seekable() {
        Some(seekable) => {
            let mut packer = StreamPacker::new_seekable(seekable, keys, opts)?;
            fill(&mut packer)?;
            packer.finish()?.1
        }
        None => {
            let mut packer = StreamPacker::new(&mut *out, keys, opts)?;
            fill(&mut packer)?;
            packer.finish()?.1
        }
    };
    out.commit().map_err(|e| e.in_file(storage.display(output)))?;
    Ok(summary)
}

/// How to unpack.
#[derive(Clone, Copy, Debug)]
pub struct UnpackOptions {
    /// Recompute each block's SHA-256 (the AEAD is checked regardless).
    pub verify: bool,
    /// Decrypting threads (0: one per core).
    pub workers: usize,
    /// Replace an existing output; otherwise an existing output is [`Error::Exists`](crate::Error::Exists).
    pub overwrite: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            verify: true,
            workers: 0,
            overwrite: false,
        }
    }
}

/// Decrypts the container `input` into the file `output`, in parallel, all or nothing.
pub fn unpack(input: &Path, output: &Path, key: &Key, opts: &UnpackOptions) -> Result<u64> {
    unpack_in(&LocalStorage::anywhere(), input, output, key, opts)
}

/// Decrypts the container `input` in `storage` into `output` in the same storage, in parallel,
/// all or nothing.
pub fn unpack_in(
    storage: &dyn Storage,
    input: &Path,
    output: &Path,
    key: &Key,
    opts: &UnpackOptions,
) -> Result<u64> {
    let container = Arc::new(Container::open_in(storage, input, key)?);
    let name = storage.display(input);
    unpack_container_in(storage, &container, name.as_ref(), output, opts, &|_| {})
}

/// Decrypts an open container into the file `output`; `progress` gets each block's byte count.
/// `input` names the container in errors.
pub fn unpack_container<S: ReadAt + 'static>(
    container: &Arc<Container<S>>,
    input: &Path,
    output: &Path,
    opts: &UnpackOptions,
    progress: &dyn Fn(u64),
) -> Result<u64> {
    unpack_container_in(
        &LocalStorage::anywhere(),
        container,
        input,
        output,
        opts,
        progress,
    )
}

/// Decrypts an open container (from any source) into `output` in `storage`, all or nothing;
/// `progress` gets each block's byte count, `input` names the container in errors.
pub fn unpack_container_in<S: ReadAt + 'static>(
    storage: &dyn Storage,
    container: &Arc<Container<S>>,
    input: &Path,
    output: &Path,
    opts: &UnpackOptions,
    progress: &dyn Fn(u64),
) -> Result<u64> {
    // Plaintext is the user's file: its mode follows the umask, as cp's and gpg's do (containers
    // and keys stay 0600). A v2 file record restores the packed file's permission bits (still
    // minus the umask; never set-id or sticky bits) and its modification time.
    let meta = container.file_meta().map_err(|e| e.in_file(input))?;
    let options = WriteOptions {
        overwrite: opts.overwrite,
        mode: meta.as_ref().map_or(0o666, |m| m.mode & 0o777),
    };
    let mut out = storage.create(output, options)?;
    let n = container
        .unpack_to(&mut out, opts.verify, opts.workers, progress)
        .map_err(|e| e.in_file(input))?;
    out.flush()
        .map_err(|e| Error::io("writing the output", e).in_file(storage.display(output)))?;
    if let Some(meta) = &meta {
        out.set_modified(meta.mtime())
            .map_err(|e| Error::io("setting the modification time", e).in_file(storage.display(output)))?;
    }
    out.commit().map_err(|e| e.in_file(storage.display(output)))?;
    Ok(n)
}

/// Checks every stored byte of a format-2 or 3 container without any key: the trailer, footer
/// and root (already checked when `info` was read), then each block's hash, prefix and metadata
/// copy, one block at a time (memory: one block). It proves the container is intact as written,
/// not who wrote it nor that the plaintext is right (that needs the key). `progress` gets each
/// block's stored length. Returns the number of blocks. Format 1 has no keyless hashes: an
/// [`Error::InvalidArgument`] saying so.
pub fn verify_keyless(source: &dyn ReadAt, info: &ContainerInfo, progress: &dyn Fn(u64)) -> Result<u64> {
    let Some(footer) = info.footer_v2.as_ref() else {
        return Err(Error::InvalidArgument(
            "format version 1 has no keyless hashes, so it cannot be checked without a key; verify \
             it with its key, or upgrade it with `qeltrix reencrypt` (writes version 2)"
                .into(),
        ));
    };
    crate::integrity_v2::check_blocks_keyless(footer, |entry, buf| {
        // What the file holds of the block (the check names a short one by index and offset).
        let at = entry.entry.offset;
        let len = entry.entry.len.min(info.container_size.saturating_sub(at));
        buf.resize(len as usize, 0);
        source
            .read_exact_at(buf, at)
            .map_err(|e| Error::io(format!("reading the block at offset {at}"), e))?;
        progress(len);
        Ok(())
    })?;
    // Version 4: the current units, each against its entry's hash.
    if let Some(chain) = &info.chain {
        chain.check_units_keyless(source, progress)?;
    }
    Ok(footer.entries.len() as u64)
}

/// Re-encrypts `input` into `output` under a new random data key and fresh block keys, with key
/// slots for `new_keys`, packed with `opts` (format, cipher, block size, compression). Streams
/// block by block: memory stays bounded whatever the container's size. The input's file record
/// is kept unless `opts.file_meta` gives one; with the default format (2) a version 1 input is
/// upgraded.
pub fn reencrypt(
    input: &Path,
    output: &Path,
    open_key: &Key,
    new_keys: &[Recipient],
    opts: &PackOptions,
    overwrite: bool,
) -> Result<PackSummary> {
    reencrypt_in(
        &LocalStorage::anywhere(),
        input,
        output,
        open_key,
        new_keys,
        opts,
        overwrite,
    )
}

/// [`reencrypt`], with `input` and `output` in `storage`.
pub fn reencrypt_in(
    storage: &dyn Storage,
    input: &Path,
    output: &Path,
    open_key: &Key,
    new_keys: &[Recipient],
    opts: &PackOptions,
    overwrite: bool,
) -> Result<PackSummary> {
    let from = (storage, input);
    reencrypt_between(from, (storage, output), open_key, new_keys, opts, overwrite)
}

/// [`reencrypt`] from one storage to another (an object store to the local disk, say): each is
/// a storage and a path in it.
pub fn reencrypt_between(
    (storage, input): (&dyn Storage, &Path),
    (out_storage, output): (&dyn Storage, &Path),
    open_key: &Key,
    new_keys: &[Recipient],
    opts: &PackOptions,
    overwrite: bool,
) -> Result<PackSummary> {
    let container = Container::open_in(storage, input, open_key)?;
    // The input's file record (name, mode, mtime) goes along unless the caller gives another.
    let kept;
    let opts = match (&opts.file_meta, container.file_meta()) {
        (None, Ok(Some(meta))) => {
            kept = PackOptions {
                file_meta: Some(meta),
                ..opts.clone()
            };
            &kept
        }
        (_, Err(e)) => return Err(e.in_file(storage.display(input))),
        _ => opts,
    };
    pack_with(out_storage, output, new_keys, opts, overwrite, |packer| {
        container
            .write_range(0, container.len(), packer)
            .map(drop)
            .map_err(|e| e.in_file(storage.display(input)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::repair::repair_in;
    use crate::core::crypto::KeyFileKey;
    use crate::core::format::{Header, HEADER_LEN};
    use crate::storage::{Entry, Object, ObjectWriter};
    use std::io;

    /// A storage whose writers can only append (as an upload would): the local disk underneath.
    #[derive(Debug)]
    struct AppendOnly(LocalStorage);

    struct Appender(Box<dyn ObjectWriter>);

    impl Write for Appender {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
    }

    impl ObjectWriter for Appender {
        fn commit(self: Box<Self>) -> Result<()> {
            self.0.commit()
        }
    }

    impl Storage for AppendOnly {
        fn open(&self, path: &Path) -> io::Result<Object> {
            self.0.open(path)
        }
        fn stat(&self, path: &Path) -> io::Result<Entry> {
            self.0.stat(path)
        }
        fn list(&self, path: &Path) -> io::Result<Vec<Entry>> {
            self.0.list(path)
        }
        fn create(&self, path: &Path, options: WriteOptions) -> Result<Box<dyn ObjectWriter>> {
            Ok(Box::new(Appender(self.0.create(path, options)?)))
        }
        fn display(&self, path: &Path) -> String {
            self.0.display(path)
        }
    }

    fn key() -> Key {
        Key::KeyFile(KeyFileKey::from_bytes([8; 32]))
    }

    fn opts() -> PackOptions {
        PackOptions {
            block_size: 4096,
            ..PackOptions::default()
        }
    }

    fn header(storage: &dyn Storage, path: &str) -> Header {
        let mut head = vec![0u8; HEADER_LEN];
        storage
            .open(Path::new(path))
            .unwrap()
            .read_exact_at(&mut head, 0)
            .unwrap();
        Header::decode(&head).unwrap()
    }

    #[test]
    fn pack_unpack_reencrypt_and_repair_run_inside_a_storage() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path()).unwrap();
        let plain: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 253) as u8).collect();

        let summary = pack_in(
            &storage,
            &mut &plain[..],
            Path::new("a.qltx"),
            &[crate::Recipient::try_from(key()).unwrap()],
            &opts(),
            false,
        )
        .unwrap();
        assert_eq!(summary.original_size, plain.len() as u64);
        assert!(
            header(&storage, "a.qltx").is_patched(),
            "a local file gets its header patched"
        );

        unpack_in(
            &storage,
            Path::new("a.qltx"),
            Path::new("a.out"),
            &key(),
            &UnpackOptions::default(),
        )
        .unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.out")).unwrap(), plain);

        let new_key = Key::KeyFile(KeyFileKey::from_bytes([9; 32]));
        reencrypt_in(
            &storage,
            Path::new("a.qltx"),
            Path::new("b.qltx"),
            &key(),
            &[crate::Recipient::try_from(&new_key).unwrap()],
            &opts(),
            false,
        )
        .unwrap();
        let b = Container::open_in(&storage, Path::new("b.qltx"), &new_key).unwrap();
        assert_eq!(b.seek_extract(0, u64::MAX).unwrap(), plain);

        // A cut container: repair keeps the whole blocks, inside the storage.
        let bytes = std::fs::read(dir.path().join("a.qltx")).unwrap();
        std::fs::write(dir.path().join("cut.qltx"), &bytes[..bytes.len() - 100]).unwrap();
        let report = repair_in(
            &storage,
            Path::new("cut.qltx"),
            Path::new("fixed.qltx"),
            &key(),
            false,
        )
        .unwrap();
        assert!(!report.already_complete);
        assert!(report.blocks > 0);
        let fixed = Container::open_in(&storage, Path::new("fixed.qltx"), &key()).unwrap();
        assert_eq!(
            fixed.seek_extract(0, u64::MAX).unwrap(),
            plain[..report.plain_bytes as usize]
        );

        // Outside the root is out of reach.
        assert!(unpack_in(
            &storage,
            Path::new("../a.qltx"),
            Path::new("x"),
            &key(),
            &UnpackOptions::default()
        )
        .is_err());
    }

    #[test]
    fn an_append_only_storage_gets_a_stream_container_and_repair_refuses_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let storage = AppendOnly(LocalStorage::new(dir.path()).unwrap());
        let plain = vec![3u8; 10_000];
        pack_in(
            &storage,
            &mut &plain[..],
            Path::new("s.qltx"),
            &[crate::Recipient::try_from(key()).unwrap()],
            &opts(),
            false,
        )
        .unwrap();
        assert!(
            !header(&storage, "s.qltx").is_patched(),
            "no seek: the header stays a stream's"
        );
        let c = Container::open_in(&storage, Path::new("s.qltx"), &key()).unwrap();
        assert_eq!(c.seek_extract(0, u64::MAX).unwrap(), plain);

        let bytes = std::fs::read(dir.path().join("s.qltx")).unwrap();
        std::fs::write(dir.path().join("cut.qltx"), &bytes[..bytes.len() - 100]).unwrap();
        let err = repair_in(
            &storage,
            Path::new("cut.qltx"),
            Path::new("fixed.qltx"),
            &key(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("writes the header last"), "{err}");
        assert!(!dir.path().join("fixed.qltx").exists(), "nothing left behind");
    }
}
