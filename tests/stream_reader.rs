//! The sequential reader against damaged streams: every truncation, every single-bit flip, and
//! moved or dropped blocks either fail or yield exactly the original plaintext; none is accepted
//! as a complete stream with other bytes.

mod common;

use common::*;
use qeltrix::stream_reader::StreamReader;
use qeltrix::{ContainerInfo, Error, PackOptions, StreamPacker};
use std::io::Write;

fn small_container(data: &[u8]) -> Vec<u8> {
    let opts = PackOptions {
        block_size: 4096,
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut p = StreamPacker::new(&mut out, &recipients(&[key_file_key(7)]), &opts).unwrap();
    p.write_all(&data[..5000]).unwrap();
    p.flush_block().unwrap(); // a short block in the middle
    p.write_all(&data[5000..]).unwrap();
    p.finish().unwrap();
    out
}

/// Reads the whole stream: the plaintext if it ended with a verified footer.
fn read_all(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let mut r = StreamReader::open(bytes, &key_file_key(7))?;
    let mut plain = Vec::new();
    while let Some(block) = r.next_block(true)? {
        plain.extend_from_slice(&block);
    }
    Ok(plain)
}

#[test]
fn a_whole_stream_reads_back_and_the_reader_stops_at_the_trailer() {
    let data = Data::bytes(31, 14_000);
    let mut c = small_container(&data);
    let len = c.len();
    c.extend_from_slice(b"next message");
    let mut r = StreamReader::open(&c[..], &key_file_key(7)).unwrap();
    let mut plain = Vec::new();
    while let Some(block) = r.next_block(true).unwrap() {
        plain.extend_from_slice(&block);
    }
    assert_eq!(plain, data);
    assert!(r.is_finished());
    assert_eq!(r.container_offset(), len as u64);
    assert_eq!(
        r.entries(),
        &ContainerInfo::read(&c[..len].to_vec()).unwrap().footer.entries[..]
    );
    assert_eq!(r.next_block(true).unwrap(), None);
}

#[test]
fn every_truncation_fails_as_incomplete() {
    let data = Data::bytes(32, 14_000);
    let c = small_container(&data);
    for cut in 0..c.len() {
        match read_all(&c[..cut]) {
            Err(Error::Incomplete(_)) => {}
            Err(Error::NotAContainer(_)) if cut < 4096 => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn every_bit_flip_fails_or_changes_nothing() {
    let data = Data::bytes(33, 14_000);
    let c = small_container(&data);
    let mut failed = 0;
    for i in 0..c.len() {
        let mut bad = c.clone();
        bad[i] ^= 1 << (i % 8);
        match read_all(&bad) {
            Ok(plain) => assert_eq!(plain, data, "flip at {i} accepted with other plaintext"),
            Err(_) => failed += 1,
        }
    }
    // Only bytes no reader looks at (the unused slot area, reserved header bytes, unpatched
    // totals) may be flipped without an error.
    assert!(failed > c.len() - 3000, "{failed} of {} flips detected", c.len());
}

#[test]
fn swapped_or_dropped_blocks_are_named() {
    let data = Data::bytes(34, 14_000);
    let c = small_container(&data);
    let e = ContainerInfo::read(&c).unwrap().footer.entries;
    let (b1, b2) = (e[1], e[2]);
    let mut swapped = c[..b1.offset as usize].to_vec();
    swapped.extend_from_slice(&c[b2.offset as usize..(b2.offset + b2.len) as usize]);
    swapped.extend_from_slice(&c[b1.offset as usize..(b1.offset + b1.len) as usize]);
    swapped.extend_from_slice(&c[(b2.offset + b2.len) as usize..]);
    let err = read_all(&swapped).unwrap_err();
    assert!(matches!(err, Error::Corrupt { block: Some(1), .. }), "{err}");

    // The last block dropped, footer kept: the footer no longer matches what arrived.
    let last = *e.last().unwrap();
    let mut dropped = c[..last.offset as usize].to_vec();
    dropped.extend_from_slice(&c[(last.offset + last.len) as usize..]);
    assert!(matches!(read_all(&dropped).unwrap_err(), Error::Corrupt { .. }));
}

#[test]
fn the_wrong_key_fails_before_any_block() {
    let c = small_container(&Data::bytes(35, 9000));
    let err = StreamReader::open(&c[..], &key_file_key(8)).err().unwrap();
    assert!(err.is_wrong_key(), "{err}");
}
