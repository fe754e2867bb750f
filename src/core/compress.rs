//! Per-block compression policy. Deflate (raw, no zlib header) where it pays, raw where it
//! doesn't. `Auto` decides from a small sample so that incompressible data (video, archives,
//! already-encrypted files) never pays for a full deflate pass.
//!
//! Format v2 adds zstd (compression id 2: one frame, no dictionary, checksum off): a v2 writer
//! compresses with [`maybe_compress_zstd`], under the same sampling and the same 1/32 rule, and a
//! reader decodes with [`unzstd`]. The v1 deflate path ([`maybe_compress`], [`inflate`]) is
//! unchanged, byte for byte.

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

/// Which compressor a format-v2 writer uses. Version 1 only knows deflate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Codec {
    /// zstd (compression id 2): what `--compress auto` picks.
    #[default]
    Zstd,
    /// Raw deflate (compression id 1), as the original format wrote it.
    Deflate,
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
    let sample = sample(plain);
    deflate(&sample, level, sample.len()).len() * 10 < sample.len() * 9
}

/// The bytes `Auto` looks at: the whole block if small, else four windows spread across it.
fn sample(plain: &[u8]) -> Vec<u8> {
    if plain.len() <= SAMPLE_WINDOW * SAMPLE_WINDOWS {
        plain.to_vec()
    } else {
        let stride = (plain.len() - SAMPLE_WINDOW) / (SAMPLE_WINDOWS - 1);
        (0..SAMPLE_WINDOWS)
            .flat_map(|i| &plain[i * stride..i * stride + SAMPLE_WINDOW])
            .copied()
            .collect()
    }
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

/// zstd level for a `--level` of 0 to 9 (the deflate scale, which v1 keeps).
///
/// | `--level` | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |
/// |---|---|---|---|---|---|---|---|---|---|---|
/// | zstd | 1 | 1 | 3 | 4 | 5 | 7 | 9 | 11 | 12 | 13 |
///
/// Measured on 16 MiB of log-like text in 1 MiB blocks, one thread
/// (`measure_zstd_levels_against_deflate`; numbers in docs/FORMAT-V2-MEASUREMENTS.md): every `--level`
/// gets a zstd level that compresses about as fast as deflate at the same `--level` (release:
/// 269 against 241–285 MB/s at 1, 27–37 against 29–32 at 6, 10–11 against 12–13 at 9), smaller at
/// 1–5 and about as small above (ratio 5.84 against 5.85 at 6, 6.25 against 6.42 at 9). The default `--level 1` is zstd 1, the fastest ordinary level (ratio 5.0 against
/// deflate 1's 3.3, at the same or better speed); zstd 3 (`--level 2`) was as fast on this text and
/// 6 % smaller, but is usually slower on less regular data. Deflate level 0 means "store"; zstd has
/// no such level and `--compress never` already says it, so 0 maps to 1 like 1. The scale stops at
/// 13 (about deflate 9's speed, 10–12 MB/s): zstd 15 and up (the optimal parsers) fell to 2–3 MB/s
/// for a few percent more.
pub fn zstd_level(level: u32) -> i32 {
    const LEVELS: [i32; 10] = [1, 1, 3, 4, 5, 7, 9, 11, 12, 13];
    LEVELS[level.min(9) as usize]
}

/// Level of the zstd pass over the `Auto` sample: the fastest, whatever the block's level. It only
/// asks whether the data compresses at all, which does not depend on the level.
const SAMPLE_ZSTD_LEVEL: i32 = 1;

/// Format v2: compresses `plain` with zstd if the mode and the data say it is worth it; `None`
/// means store it raw. `Auto` samples as v1 does (with zstd's fastest level), so incompressible
/// data pays only for the sample; the block is kept raw unless zstd saves at least 1/32 of it, so
/// `stored_size` is always below `plain_size`.
pub fn maybe_compress_zstd(plain: &[u8], mode: CompressMode, level: u32) -> Option<Vec<u8>> {
    match mode {
        CompressMode::Never => return None,
        CompressMode::Auto => {
            let sample = sample(plain);
            let shrunk = zstd_frame(&sample, SAMPLE_ZSTD_LEVEL, sample.len()).map_or(usize::MAX, |c| c.len());
            if shrunk.saturating_mul(10) >= sample.len() * 9 {
                return None;
            }
        }
        CompressMode::Always => {}
    }
    let out = zstd_frame(plain, zstd_level(level), plain.len())?;
    (out.len() + plain.len() / 32 < plain.len()).then_some(out)
}

/// One zstd frame of `data` (content size recorded, no checksum, no dictionary), or `None` if it
/// does not fit in `limit` bytes: the output buffer never grows past `limit`.
fn zstd_frame(data: &[u8], level: i32, limit: usize) -> Option<Vec<u8>> {
    use std::cell::RefCell;
    use zstd::zstd_safe::CParameter;
    // One compression context per thread, kept: making one per block (two with the sample)
    // showed in pack's profile. Its parameters are set on every call, so no call sees another's.
    thread_local! {
        static CONTEXT: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    }
    CONTEXT.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Compressor::new(level).ok()?);
        }
        let c = cell.as_mut()?;
        c.set_compression_level(level).ok()?;
        c.set_parameter(CParameter::ChecksumFlag(false)).ok()?;
        c.set_parameter(CParameter::ContentSizeFlag(true)).ok()?;
        c.set_parameter(CParameter::DictIdFlag(false)).ok()?;
        let mut out = Vec::with_capacity(limit);
        // Fails with "destination too small" when the frame would exceed `limit`: store raw then.
        c.compress_to_buffer(data, &mut out).ok()?;
        Some(out)
    })
}

/// Why a stored block is not exactly one zstd frame of its recorded size.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnzstdError {
    /// The frame header breaks format v2's rules (magic, checksum, dictionary, content size).
    #[error("zstd frame header: {0}")]
    Header(&'static str),
    /// The frame's length is not the stored length: cut short, or bytes after it.
    #[error("zstd frame is {frame} bytes of {stored} stored")]
    Length {
        /// Length of the frame as its block headers give it (0 if they run past the data).
        frame: usize,
        /// Stored bytes.
        stored: usize,
    },
    /// The decoder refused the frame, or it decodes to more bytes than the block's plain size.
    #[error("zstd frame is invalid: {0}")]
    Invalid(String),
    /// The frame decodes to fewer bytes than the block's plain size.
    #[error("zstd frame gives {produced} bytes, expected {expected}")]
    WrongSize {
        /// Bytes the frame decoded to.
        produced: usize,
        /// The block's plain size.
        expected: usize,
    },
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decodes `stored`, exactly one zstd frame, into exactly `plain_size` bytes; anything else is an
/// error. The output buffer is allocated once at `plain_size` (which the caller has checked against
/// the block size) and the decoder writes only into it, so a frame declaring or producing more
/// cannot make it allocate more. No checksum: integrity is the AEAD's, which has already
/// authenticated `stored`; this only has to be robust (no panic, bounded output) on any input.
pub fn unzstd(stored: &[u8], plain_size: usize) -> Result<Vec<u8>, UnzstdError> {
    use zstd::zstd_safe;
    if stored.len() < 5 || stored[..4] != ZSTD_MAGIC {
        return Err(UnzstdError::Header("not a zstd frame"));
    }
    let descriptor = stored[4];
    if descriptor & 0x04 != 0 {
        return Err(UnzstdError::Header("checksum flag set"));
    }
    if descriptor & 0x03 != 0 {
        return Err(UnzstdError::Header("dictionary id present"));
    }
    match zstd_safe::get_frame_content_size(stored) {
        Ok(Some(n)) if n == plain_size as u64 => {}
        Ok(Some(_)) => return Err(UnzstdError::Header("content size is not the block's plain size")),
        Ok(None) => {}
        Err(_) => return Err(UnzstdError::Header("unreadable")),
    }
    let frame = zstd_safe::find_frame_compressed_size(stored).unwrap_or(0);
    if frame != stored.len() {
        return Err(UnzstdError::Length {
            frame,
            stored: stored.len(),
        });
    }
    let mut out = Vec::with_capacity(plain_size);
    let mut d = zstd::bulk::Decompressor::new().map_err(|e| UnzstdError::Invalid(e.to_string()))?;
    d.decompress_to_buffer(stored, &mut out)
        .map_err(|e| UnzstdError::Invalid(e.to_string()))?;
    if out.len() != plain_size {
        return Err(UnzstdError::WrongSize {
            produced: out.len(),
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

    fn text(len: usize, seed: u64) -> Vec<u8> {
        // Log-like text, as tests/common/data.rs makes it: numbered lines of words.
        const WORDS: [&str; 12] = [
            "block", "cipher", "footer", "index", "seek", "stream", "vault", "nonce", "salt", "trailer",
            "header", "offset",
        ];
        let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut out = Vec::with_capacity(len + 128);
        let mut line = 0u64;
        while out.len() < len {
            line += 1;
            out.extend_from_slice(format!("{line:08} ").as_bytes());
            for _ in 0..6 {
                out.extend_from_slice(WORDS[(next() % 12) as usize].as_bytes());
                out.push(b' ');
            }
            out.push(b'\n');
        }
        out.truncate(len);
        out
    }

    /// A zstd frame header: magic, descriptor, then `rest` (window/content size fields).
    fn frame_head(descriptor: u8, rest: &[u8]) -> Vec<u8> {
        [&ZSTD_MAGIC[..], &[descriptor], rest].concat()
    }

    /// `count` RLE blocks of 128 KiB of `b'x'` each (the last one flagged last).
    fn rle_blocks(count: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..count {
            let header = (128 * 1024u32) << 3 | 1 << 1 | u32::from(i + 1 == count);
            v.extend_from_slice(&header.to_le_bytes()[..3]);
            v.push(b'x');
        }
        v
    }

    #[test]
    fn zstd_levels_map_the_deflate_scale() {
        let mapped: Vec<i32> = (0..=10).map(zstd_level).collect();
        assert_eq!(mapped, [1, 1, 3, 4, 5, 7, 9, 11, 12, 13, 13]);
    }

    #[test]
    fn zstd_text_round_trips_at_every_level() {
        let plain = text(300_000, 1);
        for level in 0..=9 {
            let c = maybe_compress_zstd(&plain, CompressMode::Auto, level).expect("text compresses");
            assert!(c.len() < plain.len() / 3, "level {level}: {} bytes", c.len());
            assert_eq!(c[..4], ZSTD_MAGIC);
            assert_eq!(unzstd(&c, plain.len()).unwrap(), plain);
        }
        // A one-byte block is stored raw: no frame is shorter than its byte.
        assert!(maybe_compress_zstd(b"a", CompressMode::Always, 1).is_none());
    }

    #[test]
    fn zstd_stores_random_data_raw_and_never_on_never() {
        let mut data = vec![0u8; 200_000];
        crate::core::crypto::SystemEntropy.fill_for_test(&mut data);
        assert!(maybe_compress_zstd(&data, CompressMode::Auto, 1).is_none());
        assert!(maybe_compress_zstd(&data, CompressMode::Always, 9).is_none());
        assert!(maybe_compress_zstd(&b"aaaa".repeat(1000), CompressMode::Never, 1).is_none());
        // Mostly random with one compressible window: the sample says no, so Auto stores raw.
        data[..4096].fill(b'a');
        assert!(maybe_compress_zstd(&data, CompressMode::Auto, 1).is_none());
    }

    #[test]
    fn unzstd_refuses_wrong_sizes_truncation_and_trailing_bytes() {
        let plain = text(50_000, 2);
        let c = maybe_compress_zstd(&plain, CompressMode::Always, 1).unwrap();
        assert!(unzstd(&c, plain.len() - 1).is_err());
        assert!(unzstd(&c, plain.len() + 1).is_err());
        for cut in [0, 3, 4, 5, 9, c.len() / 2, c.len() - 1] {
            assert!(unzstd(&c[..cut], plain.len()).is_err(), "cut at {cut}");
        }
        for tail in [&[0u8][..], &[0xff; 7], &c[..]] {
            let trailing = [&c[..], tail].concat();
            assert!(matches!(
                unzstd(&trailing, plain.len()),
                Err(UnzstdError::Length { .. })
            ));
        }
        assert!(unzstd(&[0xff; 64], plain.len()).is_err());
        // A skippable frame (magic 0x184D2A50) is not a zstd frame here.
        assert!(unzstd(&[0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0], 1).is_err());
    }

    #[test]
    fn unzstd_refuses_checksum_dictionary_and_a_frame_one_byte_too_long() {
        let plain = text(20_000, 3);
        // The same frame with a checksum: refused by the header rule.
        let mut with_sum = zstd::bulk::Compressor::new(1).unwrap();
        with_sum
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .unwrap();
        let c = with_sum.compress(&plain).unwrap();
        assert!(matches!(unzstd(&c, plain.len()), Err(UnzstdError::Header(_))));
        // A frame without a content size that decodes to plain_size + 1: the decoder stops at the
        // buffer's end.
        let c = zstd_frame(&plain, 1, plain.len()).unwrap();
        let mut no_size = zstd::bulk::Compressor::new(1).unwrap();
        no_size
            .set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(false))
            .unwrap();
        let no_size_frame = no_size.compress(&plain).unwrap();
        assert!(zstd::zstd_safe::get_frame_content_size(&no_size_frame)
            .unwrap()
            .is_none());
        assert_eq!(unzstd(&no_size_frame, plain.len()).unwrap(), plain);
        assert!(unzstd(&no_size_frame, plain.len() - 1).is_err());
        assert!(matches!(
            unzstd(&no_size_frame, plain.len() + 1),
            Err(UnzstdError::WrongSize { .. })
        ));
        // With a content size of plain_size + 1 declared and produced.
        let longer = [&plain[..], b"x"].concat();
        let c_longer = zstd_frame(&longer, 1, longer.len()).unwrap();
        assert!(unzstd(&c_longer, plain.len()).is_err());
        assert!(unzstd(&c, plain.len()).is_ok());
        // A dictionary id in the descriptor is refused.
        let mut dict = c.clone();
        dict[4] |= 0x01;
        assert!(matches!(unzstd(&dict, plain.len()), Err(UnzstdError::Header(_))));
    }

    #[test]
    fn unzstd_output_is_bounded_by_plain_size_whatever_the_frame_says() {
        // Declares 2^50 bytes (single segment, 8-byte content size): refused from the header; an
        // allocation of that size would abort the test.
        let huge = [frame_head(0xe0, &(1u64 << 50).to_le_bytes()), rle_blocks(4)].concat();
        assert!(unzstd(&huge, 1 << 20).is_err());
        // No content size, 128 KiB window, 1024 RLE blocks: 128 MiB from 4 KiB. Decoding stops at
        // the 1 MiB buffer.
        let bomb = [frame_head(0x00, &[7 << 3]), rle_blocks(1024)].concat();
        assert_eq!(
            zstd::zstd_safe::find_frame_compressed_size(&bomb).unwrap(),
            bomb.len()
        );
        assert!(matches!(unzstd(&bomb, 1 << 20), Err(UnzstdError::Invalid(_))));
        // The same construction at exactly plain_size decodes: the frames above are well formed.
        let exact = [frame_head(0x00, &[7 << 3]), rle_blocks(8)].concat();
        assert_eq!(unzstd(&exact, 1 << 20).unwrap(), vec![b'x'; 1 << 20]);
    }

    #[test]
    fn unzstd_survives_every_byte_flip_with_bounded_output() {
        // No checksum: a flip zstd cannot see decodes to other bytes of the right size; in a
        // container the AEAD has refused such a payload before the decoder runs. Here: no panic,
        // and any success is exactly plain_size bytes.
        let plain = text(3000, 4);
        let c = maybe_compress_zstd(&plain, CompressMode::Always, 1).unwrap();
        let mut undetected = 0;
        for i in 0..c.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = c.clone();
                bad[i] ^= mask;
                if let Ok(out) = unzstd(&bad, plain.len()) {
                    assert_eq!(out.len(), plain.len());
                    undetected += 1;
                }
            }
        }
        assert!(
            undetected < c.len() * 3,
            "the header and block structure catch some flips"
        );
    }

    /// Speed and ratio of zstd at each mapped level against deflate 1, 6 and 9, on 16 MiB of
    /// log-like text in 1 MiB blocks, one thread:
    /// `cargo test --release --lib measure_zstd -- --ignored --nocapture`. The numbers are in
    /// docs/FORMAT-V2-MEASUREMENTS.md, "zstd against deflate".
    #[test]
    #[ignore]
    fn measure_zstd_levels_against_deflate() {
        use std::time::Instant;
        const MIB: usize = 1 << 20;
        let plain = text(16 * MIB, 7);
        let report = |name: &str, c: &dyn Fn(&[u8]) -> Vec<u8>, d: &dyn Fn(&[u8], usize) -> Vec<u8>| {
            let t = Instant::now();
            let packed: Vec<Vec<u8>> = plain.chunks(MIB).map(c).collect();
            let ct = t.elapsed().as_secs_f64();
            let t = Instant::now();
            for (p, chunk) in packed.iter().zip(plain.chunks(MIB)) {
                assert_eq!(d(p, chunk.len()), chunk);
            }
            let dt = t.elapsed().as_secs_f64();
            let stored: usize = packed.iter().map(Vec::len).sum();
            println!(
                "{name:>14}: ratio {:.2}, compress {:.0} MB/s, decompress {:.0} MB/s",
                plain.len() as f64 / stored as f64,
                plain.len() as f64 / 1e6 / ct,
                plain.len() as f64 / 1e6 / dt,
            );
        };
        report("deflate 1", &|b| deflate(b, 1, b.len()), &|s, n| {
            inflate(s, n).unwrap()
        });
        report("deflate 6", &|b| deflate(b, 6, b.len()), &|s, n| {
            inflate(s, n).unwrap()
        });
        report("deflate 9", &|b| deflate(b, 9, b.len()), &|s, n| {
            inflate(s, n).unwrap()
        });
        for level in 1u32..=9 {
            let z = zstd_level(level);
            report(
                &format!("zstd {z} (--level {level})"),
                &|b| zstd_frame(b, z, b.len()).unwrap(),
                &|s, n| unzstd(s, n).unwrap(),
            );
        }
    }
}
