//! Per-block compression policy. Deflate (raw, no zlib header) where it pays, raw where it
//! doesn't. `Auto` decides from a small sample so that incompressible data (video, archives,
//! already-encrypted files) never pays for a full deflate pass.

use flate2::{write::DeflateEncoder, Decompress, FlushDecompress, Status};
use std::io::Write;

/// When to compress a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CompressMode {
    /// Compress when a sample of the block shrinks by at least 10 %.
    #[default]
    Auto,
    /// Store every block uncompressed.
    Never,
    /// Compress every block (stored raw all the same if deflate would grow it).
    Always,
}

/// Bytes sampled by `Auto`: four 4 KiB windows spread across the block (about 1.5 % of a 1 MiB block).
const SAMPLE_WINDOW: usize = 4096;
const SAMPLE_WINDOWS: usize = 4;

/// Compresses `plain` if the mode and the data say it is worth it; `None` means store it raw.
pub fn maybe_compress(plain: &[u8], mode: CompressMode, level: u32) -> Option<Vec<u8>> {
    match mode {
        CompressMode::Never => return None,
        CompressMode::Auto if !sample_compresses(plain, level) => return None,
        _ => {}
    }
    let out = deflate(plain, level, plain.len() / 2);
    // Keep the block raw unless compression saves at least 1/32 of it: decompression then costs
    // more than the bytes it saves.
    (out.len() + plain.len() / 32 < plain.len()).then_some(out)
}

fn sample_compresses(plain: &[u8], level: u32) -> bool {
    let sample: Vec<u8> = if plain.len() <= SAMPLE_WINDOW * SAMPLE_WINDOWS {
        plain.to_vec()
    } else {
        let stride = (plain.len() - SAMPLE_WINDOW) / (SAMPLE_WINDOWS - 1);
        (0..SAMPLE_WINDOWS)
            .flat_map(|i| &plain[i * stride..i * stride + SAMPLE_WINDOW])
            .copied()
            .collect()
    };
    deflate(&sample, level, sample.len()).len() * 10 < sample.len() * 9
}

fn deflate(data: &[u8], level: u32, capacity_hint: usize) -> Vec<u8> {
    let mut enc = DeflateEncoder::new(Vec::with_capacity(capacity_hint), flate2::Compression::new(level));
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// Why a stored block does not inflate to its recorded size.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InflateError {
    /// The stream is not valid raw deflate.
    #[error("deflate stream is invalid: {0}")]
    Invalid(flate2::DecompressError),
    /// The stream inflates to more bytes than the block's plain size.
    #[error("deflate stream is longer than the block")]
    TooLong,
    /// The stored bytes end before the deflate stream does.
    #[error("deflate stream ends early")]
    EndsEarly,
    /// The stream inflates to a size other than the block's, or leaves stored bytes unread.
    #[error("deflate stream gives {produced} bytes from {consumed} of {stored} stored, expected {expected}")]
    WrongSize {
        /// Bytes the stream inflated to.
        produced: usize,
        /// Stored bytes consumed.
        consumed: u64,
        /// Stored bytes.
        stored: usize,
        /// The block's plain size.
        expected: usize,
    },
}

/// Inflates `stored` into exactly `plain_size` bytes; any other outcome is an error. The output
/// buffer is sized by `plain_size`, which the caller has checked against the block size, so a
/// hostile stream cannot make it allocate more.
pub fn inflate(stored: &[u8], plain_size: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::with_capacity(plain_size);
    let mut d = Decompress::new(false);
    loop {
        let before_in = d.total_in() as usize;
        let before_out = out.len();
        let status = d
            .decompress_vec(&stored[before_in..], &mut out, FlushDecompress::Finish)
            .map_err(InflateError::Invalid)?;
        match status {
            Status::StreamEnd => break,
            _ if out.len() == plain_size => return Err(InflateError::TooLong),
            _ if d.total_in() as usize == before_in && out.len() == before_out => {
                return Err(InflateError::EndsEarly)
            }
            _ => {}
        }
    }
    if out.len() != plain_size || (d.total_in() as usize) != stored.len() {
        return Err(InflateError::WrongSize {
            produced: out.len(),
            consumed: d.total_in(),
            stored: stored.len(),
            expected: plain_size,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_compresses_and_round_trips() {
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n".repeat(3000);
        let c = maybe_compress(&text, CompressMode::Auto, 1).expect("text compresses");
        assert!(c.len() < text.len() / 4);
        assert_eq!(inflate(&c, text.len()).unwrap(), text);
    }

    #[test]
    fn random_data_is_stored_raw_in_every_mode_but_never_grows() {
        let mut data = vec![0u8; 200_000];
        crate::core::crypto::SystemEntropy.fill_for_test(&mut data);
        assert!(maybe_compress(&data, CompressMode::Auto, 1).is_none());
        assert!(maybe_compress(&data, CompressMode::Always, 1).is_none());
        assert!(maybe_compress(&b"aaaa".repeat(1000), CompressMode::Never, 1).is_none());
    }

    #[test]
    fn inflate_rejects_wrong_sizes_and_garbage() {
        let text = b"abcabcabc".repeat(500);
        let c = maybe_compress(&text, CompressMode::Always, 6).unwrap();
        assert!(inflate(&c, text.len() - 1).is_err());
        assert!(inflate(&c, text.len() + 1).is_err());
        assert!(inflate(&c[..c.len() / 2], text.len()).is_err());
        assert!(inflate(&[0xff; 64], text.len()).is_err());
        let mut trailing = c.clone();
        trailing.push(0);
        assert!(inflate(&trailing, text.len()).is_err());
    }
}
