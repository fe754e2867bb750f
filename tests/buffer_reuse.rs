//! The packer and `unpack_to` reuse block buffers from one block to the next. These tests pack
//! inputs that make a reused buffer differ from a fresh one (raw blocks after compressed ones,
//! short flushed blocks, a short last block) and check that every byte comes back.

mod common;

use common::{key_file_key, random_bytes, recipients, text_bytes};
use qeltrix::compress::CompressMode;
use qeltrix::{Container, Key, PackOptions, StreamPacker};
use std::io::{Cursor, Write};
use std::sync::Arc;

const BLOCK: usize = 16 * 1024;

fn key() -> Key {
    key_file_key(42)
}

fn opts(workers: usize) -> PackOptions {
    PackOptions {
        block_size: BLOCK as u32,
        compress: CompressMode::Auto,
        workers,
        ..PackOptions::default()
    }
}

/// Runs of raw and compressible blocks, with lengths that straddle block boundaries.
fn mixed_input() -> Vec<u8> {
    let mut data = Vec::new();
    for (i, len) in [BLOCK * 3 + 100, BLOCK * 2 - 7, BLOCK * 4, 5000, BLOCK + 1]
        .into_iter()
        .enumerate()
    {
        if i % 2 == 0 {
            data.extend(random_bytes(len, i as u64 + 1));
        } else {
            data.extend(text_bytes(len, i as u64));
        }
    }
    data
}

fn unpack_all(container: Vec<u8>, workers: usize) -> Vec<u8> {
    let c = Arc::new(Container::from_source(container, &key()).expect("container opens"));
    let mut out = Vec::new();
    let n = c.unpack_to(&mut out, true, workers, &|_| {}).expect("unpacks");
    assert_eq!(n, out.len() as u64);
    out
}

#[test]
fn pack_from_and_unpack_round_trip_mixed_blocks_with_any_worker_count() {
    let input = mixed_input();
    for workers in [1, 2, 3] {
        let mut packer = StreamPacker::new(Vec::new(), &recipients(&[key()]), &opts(workers)).unwrap();
        packer.pack_from(&mut Cursor::new(&input)).unwrap();
        let (container, summary) = packer.finish().unwrap();
        assert_eq!(summary.original_size, input.len() as u64);
        assert!(summary.compressed_blocks > 0 && summary.compressed_blocks < summary.blocks);
        assert_eq!(unpack_all(container, workers), input, "workers: {workers}");
    }
}

#[test]
fn short_flushed_blocks_between_full_ones_round_trip() {
    let input = mixed_input();
    let mut packer = StreamPacker::new(Vec::new(), &recipients(&[key()]), &opts(2)).unwrap();
    // Writes of odd sizes, with a flush (a short block) every few writes.
    let mut at = 0;
    for (i, step) in [1, 999, BLOCK, 3 * BLOCK + 5, 17, BLOCK - 1]
        .iter()
        .cycle()
        .enumerate()
    {
        if at == input.len() {
            break;
        }
        let end = (at + step).min(input.len());
        packer.write_all(&input[at..end]).unwrap();
        at = end;
        if i % 3 == 2 {
            packer.flush_block().unwrap();
        }
    }
    let (container, summary) = packer.finish().unwrap();
    assert!(
        summary.blocks as usize > input.len() / BLOCK + 1,
        "flushes made short blocks"
    );
    assert_eq!(unpack_all(container.clone(), 2), input);

    // Random access agrees too, across block boundaries.
    let c = Container::from_source(container, &key()).unwrap();
    for (offset, len) in [
        (0u64, 10u64),
        (BLOCK as u64 - 3, 9),
        (12345, 40000),
        (input.len() as u64 - 5, 5),
    ] {
        let got = c.seek_extract(offset, len).unwrap();
        assert_eq!(got, input[offset as usize..(offset + len) as usize]);
    }
}

/// A reader that hands out at most `chunk` bytes per call and is interrupted every third call,
/// then fails after `fail_after` bytes if asked to.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
    calls: usize,
    fail_after: Option<usize>,
    given: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(3) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        if self.fail_after.is_some_and(|limit| self.given >= limit) {
            return Err(std::io::Error::other("the source went away"));
        }
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.given += n;
        Ok(n)
    }
}

#[test]
fn pack_from_a_trickling_interrupted_reader_round_trips() {
    let input = mixed_input();
    let mut packer = StreamPacker::new(Vec::new(), &recipients(&[key()]), &opts(2)).unwrap();
    packer.write_all(&input[..100]).unwrap(); // a partial block already buffered
    let mut reader = Trickle {
        data: &input[100..],
        chunk: 1000,
        calls: 0,
        fail_after: None,
        given: 0,
    };
    assert_eq!(packer.pack_from(&mut reader).unwrap(), input.len() as u64 - 100);
    let (container, _) = packer.finish().unwrap();
    assert_eq!(unpack_all(container, 2), input);
}

#[test]
fn pack_from_reports_a_failing_reader_and_keeps_what_it_read() {
    let input = mixed_input();
    let mut packer = StreamPacker::new(Vec::new(), &recipients(&[key()]), &opts(2)).unwrap();
    let mut reader = Trickle {
        data: &input,
        chunk: 4096,
        calls: 0,
        fail_after: Some(BLOCK * 2 + 500),
        given: 0,
    };
    let err = packer.pack_from(&mut reader).unwrap_err();
    assert!(err.to_string().contains("reading the input"), "{err}");
    assert!(err.to_string().contains("the source went away"), "{err}");
    let read = reader.given;
    let (container, _) = packer.finish().unwrap();
    assert_eq!(unpack_all(container, 1), input[..read]);
}
