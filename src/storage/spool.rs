//! A local file written on a thread of its own.
//!
//! The read-write mount streams a new file through the packer on the thread that answers the
//! kernel's write requests, and a write request is answered only when the packer has taken its
//! bytes. Copying sealed blocks into the page cache (`write(2)`) on that same thread was about
//! a third of the mount's CPU time in a 1 GiB copy, and the kernel sent the next request only
//! after it. A [`Spool`] hands full chunks to a writer thread instead, so the copy into the page
//! cache runs beside the next request and the next seals.
//!
//! The thread starts with the second full chunk: a small file (an untar's) is written on the
//! caller's thread through the page cache, header patch included, as a `BufWriter` would, and
//! costs no thread. Where the file system takes `O_DIRECT`, the thread writes whole chunks at
//! aligned offsets through a second descriptor opened with it, from aligned buffers: they go from
//! the buffer to the disk, with no copy into the page cache and no dirty pages for the final
//! `fsync` to write (the packer's output is not read again before it is published). The rest (the
//! first chunk, the header patch, the last partial chunk) goes through the page cache. Writes are
//! positioned, so [`Seek`] only moves where the next bytes go (the packer seeks back once, to
//! patch its header). Nothing is known to be in the file until [`Spool::into_file`] returns: it
//! waits for the thread and reports the first failed write.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Chunks written or waiting to be, beyond the one being filled: the memory a spool may hold is
/// `(DEPTH + 2) * chunk` bytes.
const DEPTH: usize = 2;

/// Alignment of direct writes: offsets, lengths and buffer addresses (the largest logical block
/// size of common disks).
const ALIGN: usize = 4096;

/// A chunk's buffer: room for `chunk` bytes from an [`ALIGN`]ed address. Allocated, not
/// zeroed: a small file's spool costs a `malloc`, not a 256 KiB `memset`.
struct Buf {
    /// `start` bytes of padding, then the data.
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buf {
    fn new(chunk: usize) -> Buf {
        let mut bytes: Vec<u8> = Vec::with_capacity(chunk + ALIGN);
        let start = bytes.as_ptr().align_offset(ALIGN).min(ALIGN);
        bytes.resize(start, 0);
        Buf { bytes, start, len: 0 }
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    fn room(&self, chunk: usize) -> usize {
        chunk - self.len
    }

    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.len += data.len();
    }

    fn clear(&mut self) {
        self.bytes.truncate(self.start);
        self.len = 0;
    }
}

/// The two ways into the file: through the page cache, and (where the file system allows)
/// direct, opened at the first write that could go direct.
struct Target {
    file: File,
    direct: Option<Option<File>>,
}

impl Target {
    fn new(file: File) -> Target {
        Target { file, direct: None }
    }

    /// Writes `buf` at `at`; `direct` lets a whole aligned chunk bypass the page cache.
    fn write(&mut self, buf: &Buf, at: u64, direct: bool) -> io::Result<()> {
        let data = buf.data();
        let go_direct = direct && at.is_multiple_of(ALIGN as u64) && data.len().is_multiple_of(ALIGN);
        if go_direct && self.direct.is_none() {
            // A second open file description (a `dup` would share the first one's flags).
            let direct = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
                .ok();
            self.direct = Some(direct);
        }
        if let Some(Some(direct)) = &self.direct {
            if go_direct {
                match direct.write_all_at(data, at) {
                    // Some file systems refuse direct writes only when they are made.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    result => return result,
                }
            }
        }
        self.file.write_all_at(data, at)
    }
}

/// A file written in chunks of `chunk` bytes, from the second chunk on by a thread of its own.
pub(crate) struct Spool {
    /// The file, while no thread writes it.
    file: Option<Target>,
    worker: Option<Worker>,
    /// Bytes not yet handed over, for the file from offset `at`.
    buf: Buf,
    at: u64,
    chunk: usize,
    /// Full chunks handed over so far: the thread starts with the second.
    full_chunks: u32,
    /// A write failed: the spool takes nothing more.
    failed: bool,
}

struct Worker {
    jobs: SyncSender<(u64, Buf)>,
    /// Written chunks' buffers, back for reuse (no allocation and page faults per chunk).
    spent: Receiver<Buf>,
    thread: JoinHandle<io::Result<Target>>,
}

impl Spool {
    /// A spool writing `file` from offset 0 in chunks of `chunk` bytes.
    pub(crate) fn new(file: File, chunk: usize) -> Spool {
        let chunk = chunk.max(1);
        Spool {
            file: Some(Target::new(file)),
            worker: None,
            buf: Buf::new(chunk),
            at: 0,
            chunk,
            full_chunks: 0,
            failed: false,
        }
    }

    /// Waits until every byte written is in the file; returns the file, or the first error.
    pub(crate) fn into_file(mut self) -> io::Result<File> {
        self.hand_over()?;
        self.finish()
    }

    fn finish(&mut self) -> io::Result<File> {
        if let Some(target) = self.file.take() {
            return Ok(target.file);
        }
        let Some(Worker { jobs, thread, .. }) = self.worker.take() else {
            return Err(io::Error::other("the spool's file was lost after a failed write"));
        };
        drop(jobs);
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the spool's writer thread panicked")))
            .map(|target| target.file)
    }

    fn check(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("an earlier write to this file failed"));
        }
        Ok(())
    }

    /// Hands the buffered bytes to the file (or its thread).
    fn hand_over(&mut self) -> io::Result<()> {
        self.check()?;
        if self.buf.len == 0 {
            return Ok(());
        }
        let at = self.at;
        self.at += self.buf.len as u64;
        if self.buf.len == self.chunk {
            self.full_chunks += 1;
        }
        if self.worker.is_none() && self.full_chunks < 2 {
            // The first chunk, or a small file's bytes and header patch: written here, through
            // the page cache. A direct write would wait for the disk on the caller's thread, and
            // the header patch would then read its page back from the disk.
            let target = self.file.as_mut().expect("no worker: the spool holds the file");
            let result = target.write(&self.buf, at, false);
            self.buf.clear();
            return result.inspect_err(|_| self.failed = true);
        }
        if self.worker.is_none() {
            self.start()?;
        }
        let worker = self.worker.as_ref().expect("started above");
        let next = worker.spent.try_recv().unwrap_or_else(|_| Buf::new(self.chunk));
        let full = std::mem::replace(&mut self.buf, next);
        if worker.jobs.send((at, full)).is_err() {
            // The thread ended at a failed write: its error is the answer.
            self.failed = true;
            return Err(self
                .finish()
                .err()
                .unwrap_or_else(|| io::Error::other("the spool's writer thread ended")));
        }
        Ok(())
    }

    fn start(&mut self) -> io::Result<()> {
        let mut target = self.file.take().expect("no worker: the spool holds the file");
        let (jobs, queue) = mpsc::sync_channel::<(u64, Buf)>(DEPTH);
        let (give_back, spent) = mpsc::sync_channel::<Buf>(DEPTH + 1);
        let thread = std::thread::Builder::new()
            .name("qeltrix-spool".into())
            .spawn(move || {
                for (at, mut chunk) in queue {
                    target.write(&chunk, at, true)?;
                    chunk.clear();
                    let _ = give_back.try_send(chunk);
                }
                Ok(target)
            });
        match thread {
            Ok(thread) => {
                self.worker = Some(Worker { jobs, spent, thread });
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

impl Write for Spool {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        let n = data.len().min(self.buf.room(self.chunk));
        self.buf.push(&data[..n]);
        if self.buf.len == self.chunk {
            self.hand_over()?;
        }
        Ok(n)
    }

    /// Hands the buffered bytes over; they are in the file once [`Spool::into_file`] returns.
    fn flush(&mut self) -> io::Result<()> {
        self.hand_over()
    }
}

impl Seek for Spool {
    /// Only [`SeekFrom::Start`] and [`SeekFrom::Current`]: a spool does not know the file's end.
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let here = self.at + self.buf.len as u64;
        let to = match to {
            SeekFrom::Start(n) => n,
            SeekFrom::Current(d) => here
                .checked_add_signed(d)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?,
            SeekFrom::End(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a spool cannot seek from the file's end",
                ))
            }
        };
        if to != here {
            self.hand_over()?;
            self.at = to;
        }
        Ok(to)
    }
}

impl Drop for Spool {
    /// Waits for the thread, if any: no write outlives the spool.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn read_write(path: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap()
    }

    /// Uneven writes over many chunks, a patch at the start (as the packer writes its header),
    /// then more at the end: the file holds what a plain file would.
    fn writes_like_a_file(chunk: usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut spool = Spool::new(read_write(&path), chunk);
        let mut model = Vec::new();
        for (i, n) in [10usize, 999, 1, 40_000, 37, 25_000, 0, 10_000]
            .into_iter()
            .enumerate()
        {
            let data = pattern(n, i as u8);
            spool.write_all(&data).unwrap();
            model.extend_from_slice(&data);
        }
        let end = spool.stream_position().unwrap();
        assert_eq!(end, model.len() as u64);
        spool.seek(SeekFrom::Start(5)).unwrap();
        spool.write_all(&[0xAA; 1500]).unwrap();
        model[5..1505].fill(0xAA);
        spool.seek(SeekFrom::Start(end)).unwrap();
        spool.write_all(&pattern(3333, 9)).unwrap();
        model.extend_from_slice(&pattern(3333, 9));
        assert!(spool.worker.is_some(), "many chunks: written on the thread");
        let mut file = spool.into_file().unwrap();
        let mut got = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut got).unwrap();
        assert!(got == model, "the file holds what was written (chunk {chunk})");
    }

    #[test]
    fn writes_seeks_and_patches_land_where_a_file_would_put_them() {
        // Unaligned chunks: every write through the page cache.
        writes_like_a_file(1000);
        // Aligned chunks: direct writes where the file system takes them, mixed with the
        // page cache for the patch and the tail.
        writes_like_a_file(8192);
    }

    #[test]
    fn a_small_file_is_written_without_a_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::new(read_write(&dir.path().join("f")), 1 << 20);
        spool.write_all(&pattern(5000, 1)).unwrap();
        spool.flush().unwrap();
        // The packer's header patch: back to the start, and on at the end.
        let end = spool.stream_position().unwrap();
        spool.seek(SeekFrom::Start(0)).unwrap();
        spool.write_all(&[7; 100]).unwrap();
        spool.seek(SeekFrom::Start(end)).unwrap();
        spool.write_all(&[8; 100]).unwrap();
        assert!(
            spool.worker.is_none(),
            "no thread for a file of less than two chunks"
        );
        let mut got = Vec::new();
        let mut file = spool.into_file().unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut got).unwrap();
        let mut model = pattern(5000, 1);
        model[..100].fill(7);
        model.extend_from_slice(&[8; 100]);
        assert!(got == model);
    }

    #[test]
    fn a_failed_write_on_the_thread_is_reported() {
        // A read-only descriptor: every positioned write fails (EBADF), on the thread too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap();
        let mut spool = Spool::new(File::open(&path).unwrap(), 100);
        assert!(
            spool.write_all(&[1; 100]).is_err(),
            "the first chunk, written here"
        );
        assert!(
            spool.write_all(&[1; 10]).is_err(),
            "nothing is taken after a failure"
        );
        assert!(spool.into_file().is_err());

        let mut spool = Spool::new(File::open(&path).unwrap(), 100);
        spool.full_chunks = 1; // as if the first chunk had been written: the rest goes to the thread
        let mut failed = false;
        for _ in 0..50 {
            if spool.write_all(&[2; 100]).is_err() {
                failed = true;
                break;
            }
        }
        assert!(
            failed || spool.into_file().is_err(),
            "the thread's failure reaches the caller"
        );
    }
}
