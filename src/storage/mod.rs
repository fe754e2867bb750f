//! Where container bytes come from. The reader only needs positioned reads and a length, so a
//! local file today and an object store later plug in here with no change above.

pub mod atomic;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Positioned, shared reads: `&self`, so many threads read one source at once.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from `offset`; a short source is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Length of the source in bytes.
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start.checked_add(buf.len()).and_then(|end| self.get(start..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
    fn size(&self) -> io::Result<u64> {
        Ok(Vec::len(self) as u64)
    }
}
