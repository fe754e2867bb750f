//! Format version 2, keyless integrity (`docs/FORMAT.md`, "Version 2"): the BLAKE3
//! hash of each stored block, the root over them, and the check behind `verify --no-key`. Nothing
//! calls it yet.
//!
//! ```text
//! block_hash_i = BLAKE3(stored block i: prefix ‖ sealed metadata ‖ sealed payload)
//! root         = BLAKE3("qeltrix v2 root" ‖ u64le(n) ‖ block_hash_0 ‖ … ‖ block_hash_{n−1}
//!                       ‖ u32le(r) ‖ sealed file record (r bytes; r = 0 without one))
//! ```
//!
//! The root's input is a plain prefix, not BLAKE3's `derive_key` mode: the encoding is injective
//! (a fixed 15-byte string, the count, exactly n 32-byte hashes, then the record's length and
//! bytes), no other BLAKE3 input of
//! the format is ever compared with a root, and anyone can recompute the root with a stock
//! `b3sum` over bytes they assemble (`docs/FORMAT.md`, "Footer (version 2)").
//!
//! Without a key this proves that the blocks are the ones the footer describes, in order, whole,
//! that the footer's metadata copies are the blocks' own, and that the sealed file record is the
//! one the root names. It cannot tell a forger who
//! rewrote blocks, hashes and root together: the footer MAC (with the key) or a signature over
//! the root does.

use crate::core::format::{
    array, BlockPrefix, FooterEntryV2, FooterV2, BLOCK_HEAD_LEN, BLOCK_PREFIX_LEN, META_LEN,
};
use crate::{Error, Result};

/// The domain string that starts the root's input.
pub const ROOT_DOMAIN: &[u8] = b"qeltrix v2 root";

/// The v2 hash of a stored block (prefix, sealed metadata and sealed payload): BLAKE3.
pub fn block_hash_v2(stored_block: &[u8]) -> [u8; 32] {
    *blake3::hash(stored_block).as_bytes()
}

/// The root over the block hashes, in block order, and the sealed file record (empty without
/// one): `BLAKE3(ROOT_DOMAIN ‖ u64le(n) ‖ hashes ‖ u32le(record length) ‖ record)`.
pub fn root_v2<'a, I>(hashes: I, record: &[u8]) -> [u8; 32]
where
    I: IntoIterator<Item = &'a [u8; 32]>,
    I::IntoIter: ExactSizeIterator,
{
    let hashes = hashes.into_iter();
    let mut h = blake3::Hasher::new();
    h.update(ROOT_DOMAIN);
    h.update(&(hashes.len() as u64).to_le_bytes());
    for block_hash in hashes {
        h.update(block_hash);
    }
    h.update(&(record.len() as u32).to_le_bytes());
    h.update(record);
    *h.finalize().as_bytes()
}

/// The domain string that starts a version-3 root's input.
pub const ROOT_DOMAIN_V3: &[u8] = b"qeltrix v3 root";

/// A version-3 root: `BLAKE3("qeltrix v3 root" ‖ u64le(generation) ‖ u64le(n) ‖
/// (u64le(gen_i) ‖ block_hash_i)… ‖ u32le(record length) ‖ record)`, so each block version is
/// named with the commit that wrote it.
pub fn root_v3(generation: u64, entries: &[FooterEntryV2], record: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(ROOT_DOMAIN_V3);
    h.update(&generation.to_le_bytes());
    h.update(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        h.update(&e.generation.to_le_bytes());
        h.update(&e.block_hash);
    }
    h.update(&(record.len() as u32).to_le_bytes());
    h.update(record);
    *h.finalize().as_bytes()
}

/// The root a footer's entries and file record give (and, in v3, its generations).
pub fn footer_root(footer: &FooterV2) -> [u8; 32] {
    let record = footer.file_record.as_deref().unwrap_or(&[]);
    match footer.generation {
        None => root_v2(footer.entries.iter().map(|e| &e.block_hash), record),
        Some(g) => root_v3(g, &footer.entries, record),
    }
}

/// Checks the footer's root against its entries' block hashes and its file record. A mismatch
/// means the root, a block hash or the record in the footer was changed; which one cannot be
/// told without the blocks.
pub fn check_root(footer: &FooterV2, footer_offset: u64) -> Result<()> {
    if footer_root(footer) != footer.root {
        return Err(Error::Corrupt {
            what: format!(
                "{} footer: the root does not match the entries' block hashes and file record",
                if footer.generation.is_some() { "v3" } else { "v2" }
            ),
            block: None,
            offset: Some(footer_offset),
        });
    }
    Ok(())
}

/// Checks stored block `index` (`block`, as read from the container at the entry's offset)
/// against its footer entry, without a key: its length, its BLAKE3 hash, its clear prefix (index
/// and payload length) and that its sealed metadata is the footer's copy. Errors name the block
/// and its container offset.
pub fn check_block_keyless(index: u64, entry: &FooterEntryV2, block: &[u8]) -> Result<()> {
    let offset = entry.entry.offset;
    let bad = |what: String| Error::corrupt_block(index, offset, what);
    if block.len() as u64 != entry.entry.len {
        return Err(bad(format!(
            "block is {} bytes but the footer says {} (truncated or cut)",
            block.len(),
            entry.entry.len
        )));
    }
    if block_hash_v2(block) != entry.block_hash {
        return Err(bad(
            "block hash does not match the footer (the block was modified, moved or replaced)".into(),
        ));
    }
    let prefix = BlockPrefix::decode(&array(block, 0), offset).map_err(|e| match e {
        Error::Corrupt { what, .. } => bad(what),
        e => e,
    })?;
    if prefix.index != index {
        return Err(bad(format!("block prefix says it is block {}", prefix.index)));
    }
    if BLOCK_HEAD_LEN as u64 + prefix.payload_len as u64 != entry.entry.len {
        return Err(bad(format!(
            "block prefix's payload length {} does not match the footer's block length {}",
            prefix.payload_len, entry.entry.len
        )));
    }
    if block[BLOCK_PREFIX_LEN..BLOCK_PREFIX_LEN + META_LEN] != entry.sealed_meta {
        return Err(bad(
            "the footer's copy of the sealed metadata differs from the block's".into(),
        ));
    }
    Ok(())
}

/// The core of `verify --no-key`: decodes the v2 footer `footer_bytes` found at `footer_offset`
/// in a container of `block_size` (the header's, readable without a key), checks its root, then
/// every block in order with [`check_block_keyless`]. `read_block` fills the buffer with the
/// stored bytes of the block an entry describes (`entry.offset`, `entry.len`; fewer if the file
/// ends first); the buffer is reused from block to block. The first failure is returned: a
/// block's names its index and container offset. Returns the footer on success.
pub fn verify_keyless<F>(
    footer_bytes: &[u8],
    footer_offset: u64,
    block_size: u32,
    read_block: F,
) -> Result<FooterV2>
where
    F: FnMut(&FooterEntryV2, &mut Vec<u8>) -> Result<()>,
{
    let footer = FooterV2::decode(footer_bytes, footer_offset, block_size)?;
    check_root(&footer, footer_offset)?;
    check_blocks_keyless(&footer, read_block)?;
    Ok(footer)
}

/// The per-block part of [`verify_keyless`], for a footer already decoded and root-checked
/// (`ContainerInfo::read` does both): every block in order through [`check_block_keyless`],
/// `read_block` filling a reused buffer as there.
pub fn check_blocks_keyless<F>(footer: &FooterV2, mut read_block: F) -> Result<()>
where
    F: FnMut(&FooterEntryV2, &mut Vec<u8>) -> Result<()>,
{
    let mut buf = Vec::new();
    for (i, e) in footer.entries.iter().enumerate() {
        buf.clear();
        read_block(e, &mut buf)?;
        check_block_keyless(i as u64, e, &buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::{
        derive_container_keys, footer_mac_v2, verify_footer_mac_v2, ContainerKeys, DataKey, SeededEntropy,
    };
    use crate::core::format::{CipherId, FooterEntry, FOOTER_V2_ENTRY_LEN, FOOTER_V2_HEAD_LEN, HEADER_LEN};

    const BS: u32 = 4096;
    const BOUND: &[u8] = b"the header's 40 bound bytes, for a test";

    /// A synthetic v2 container: header bytes, blocks with valid prefixes (payloads are not
    /// real ciphertext: nothing here needs a key but the MAC), an optional file record, the
    /// footer (MAC'd) and its offset.
    struct Fixture {
        file: Vec<u8>,
        footer: FooterV2,
        footer_offset: u64,
        keys: ContainerKeys,
    }

    fn fixture(plain_sizes: &[u32], record: Option<u32>) -> Fixture {
        let keys = derive_container_keys(
            DataKey::generate(&SeededEntropy([0x31; 32])),
            CipherId::Aes256Gcm,
            [7; 16],
        );
        let mut file = vec![0u8; HEADER_LEN];
        let mut entries = Vec::new();
        let mut plain = 0;
        for (i, &ps) in plain_sizes.iter().enumerate() {
            let payload_len = ps + 16;
            let offset = file.len() as u64;
            file.extend_from_slice(
                &BlockPrefix {
                    index: i as u64,
                    payload_len,
                }
                .encode(),
            );
            let body = (BLOCK_PREFIX_LEN..BLOCK_HEAD_LEN + payload_len as usize)
                .map(|k| (k as u8).wrapping_mul(31) ^ (i as u8 + 1));
            file.extend(body);
            let block = &file[offset as usize..];
            entries.push(FooterEntryV2 {
                entry: FooterEntry {
                    offset,
                    len: block.len() as u64,
                    plain_offset: plain,
                    plain_size: ps as u64,
                },
                block_hash: block_hash_v2(block),
                sealed_meta: array(block, BLOCK_PREFIX_LEN),
                generation: 0,
            });
            plain += ps as u64;
        }
        let mut footer = FooterV2 {
            original_size: plain,
            root: [0; 32],
            file_record: record.map(|len| vec![0x5a; len as usize]),
            entries,
            mac: [0; 32],
            generation: None,
        };
        footer.root = footer_root(&footer);
        footer.mac = footer_mac_v2(&keys, BOUND, &footer.encode_unsigned());
        let footer_offset = file.len() as u64;
        file.extend_from_slice(&footer.encode());
        Fixture {
            file,
            footer,
            footer_offset,
            keys,
        }
    }

    impl Fixture {
        fn footer_bytes(&self) -> &[u8] {
            &self.file[self.footer_offset as usize..]
        }

        /// Keyless verification of `footer` against the blocks of `file`.
        fn verify(&self, file: &[u8], footer: &[u8]) -> Result<FooterV2> {
            verify_keyless(footer, self.footer_offset, BS, |e, buf| {
                let start = (e.entry.offset as usize).min(file.len());
                let end = ((e.entry.offset + e.entry.len) as usize).min(file.len());
                buf.extend_from_slice(&file[start..end]);
                Ok(())
            })
        }

        /// The keyed check a reader adds: the MAC over the bound header bytes and the footer.
        fn mac_ok(&self, footer: &[u8]) -> bool {
            let mac = array(footer, footer.len() - 32);
            verify_footer_mac_v2(&self.keys, BOUND, FooterV2::unsigned_part(footer), &mac)
        }
    }

    fn corrupt(r: Result<FooterV2>) -> (String, Option<u64>, Option<u64>) {
        match r {
            Err(Error::Corrupt { what, block, offset }) => (what, block, offset),
            r => panic!("expected a corrupt container, got {r:?}"),
        }
    }

    #[test]
    fn the_root_is_blake3_of_the_domain_the_count_and_the_hashes() {
        let hashes = [[1u8; 32], [2; 32], [3; 32]];
        let mut input = b"qeltrix v2 root".to_vec();
        input.extend_from_slice(&3u64.to_le_bytes());
        for h in &hashes {
            input.extend_from_slice(h);
        }
        input.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(root_v2(&hashes, &[]), *blake3::hash(&input).as_bytes());
        // Order, count and the record matter.
        assert_ne!(
            root_v2(&[hashes[1], hashes[0], hashes[2]], &[]),
            root_v2(&hashes, &[])
        );
        assert_ne!(root_v2(&hashes[..2], &[]), root_v2(&hashes, &[]));
        assert_ne!(root_v2(&hashes, &[0; 46]), root_v2(&hashes, &[]));
        assert_eq!(block_hash_v2(b"abc"), *blake3::hash(b"abc").as_bytes());
    }

    #[test]
    fn the_root_over_zero_blocks_is_the_hash_of_the_domain_and_a_zero_count() {
        let none: [[u8; 32]; 0] = [];
        let mut input = b"qeltrix v2 root".to_vec();
        input.extend_from_slice(&0u64.to_le_bytes());
        input.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(root_v2(&none, &[]), *blake3::hash(&input).as_bytes());
        let f = fixture(&[], None);
        assert_eq!(f.footer_offset, HEADER_LEN as u64);
        let mut calls = 0;
        verify_keyless(f.footer_bytes(), f.footer_offset, BS, |_, _| {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 0);
        assert!(f.mac_ok(f.footer_bytes()));
    }

    #[test]
    fn an_intact_container_verifies_with_and_without_a_record() {
        for record in [None, Some(46), Some(300)] {
            let f = fixture(&[100, 4096, 7], record);
            assert_eq!(f.verify(&f.file, f.footer_bytes()).unwrap(), f.footer);
            assert!(f.mac_ok(f.footer_bytes()));
        }
    }

    /// Every byte of the footer flipped: decode, the root or a block check refuses it without a
    /// key, except in the MAC itself; the MAC (with the key) refuses every one.
    #[test]
    fn every_flipped_footer_byte_is_detected() {
        let f = fixture(&[100, 200], Some(50));
        let fb = f.footer_bytes().to_vec();
        let mac_at = fb.len() - 32;
        for pos in 0..fb.len() {
            let mut b = fb.clone();
            b[pos] ^= 0x01;
            assert!(!f.mac_ok(&b), "MAC missed byte {pos}");
            let r = f.verify(&f.file, &b);
            if pos >= mac_at {
                assert!(r.is_ok(), "byte {pos} of the MAC needs the key");
                continue;
            }
            let (what, block, _) = corrupt(r);
            let entries_end = FOOTER_V2_HEAD_LEN + 2 * FOOTER_V2_ENTRY_LEN;
            let in_entry = pos
                .checked_sub(FOOTER_V2_HEAD_LEN)
                .filter(|_| pos < entries_end)
                .map(|k| (k / FOOTER_V2_ENTRY_LEN, k % FOOTER_V2_ENTRY_LEN));
            match (pos, in_entry) {
                // The root, an entry's block hash or the file record: the root check.
                (24..56, _) | (_, Some((_, 32..64))) => {
                    assert!(what.contains("root"), "{pos}: {what}");
                    assert_eq!(block, None);
                }
                _ if pos >= entries_end => {
                    assert!(what.contains("root"), "{pos}: {what}");
                    assert_eq!(block, None);
                }
                // An entry's metadata copy: the block check, naming the entry.
                (_, Some((i, 64..))) => {
                    assert!(what.contains("copy of the sealed metadata"), "{pos}: {what}");
                    assert_eq!(block, Some(i as u64), "{pos}");
                }
                // Everything else: the structure.
                _ => assert!(what.starts_with("v2 footer"), "{pos}: {what}"),
            }
        }
    }

    #[test]
    fn every_flipped_block_byte_names_its_block() {
        let f = fixture(&[100, 200], None);
        for (i, e) in f.footer.entries.iter().enumerate() {
            for pos in e.entry.offset..e.entry.offset + e.entry.len {
                let mut file = f.file.clone();
                file[pos as usize] ^= 0x80;
                let (what, block, offset) = corrupt(f.verify(&file, f.footer_bytes()));
                assert_eq!((block, offset), (Some(i as u64), Some(e.entry.offset)), "{pos}");
                assert!(what.contains("block hash"), "{pos}: {what}");
            }
        }
    }

    #[test]
    fn a_truncated_container_names_the_first_short_block() {
        let f = fixture(&[100, 200, 300], None);
        for (i, e) in f.footer.entries.iter().enumerate() {
            for cut in [
                e.entry.offset,
                e.entry.offset + 1,
                e.entry.offset + e.entry.len - 1,
            ] {
                let (what, block, offset) = corrupt(f.verify(&f.file[..cut as usize], f.footer_bytes()));
                assert_eq!((block, offset), (Some(i as u64), Some(e.entry.offset)), "{cut}");
                assert!(what.contains("truncated"), "{what}");
            }
        }
        // A footer cut short is refused by decode.
        let fb = f.footer_bytes();
        for cut in [0, 8, fb.len() - 1] {
            assert!(corrupt(f.verify(&f.file, &fb[..cut])).0.starts_with("v2 footer"));
        }
    }

    #[test]
    fn swapped_blocks_and_swapped_entries_are_detected() {
        // Two blocks of the same length swapped in the file, the footer intact: block 0's hash.
        let f = fixture(&[100, 100, 100], None);
        let (a, b) = (&f.footer.entries[0].entry, &f.footer.entries[1].entry);
        let mut file = f.file.clone();
        let first = file[a.offset as usize..(a.offset + a.len) as usize].to_vec();
        file.copy_within(b.offset as usize..(b.offset + b.len) as usize, a.offset as usize);
        file[b.offset as usize..(b.offset + b.len) as usize].copy_from_slice(&first);
        let (what, block, _) = corrupt(f.verify(&file, f.footer_bytes()));
        assert_eq!(block, Some(0));
        assert!(what.contains("block hash"), "{what}");

        // The same swap with the footer's hashes and copies swapped too and the root redone: the
        // hashes now match, and the prefixes betray the move (a forger must also rewrite them,
        // which the per-block AEAD then refuses with the key).
        let mut g = f.footer.clone();
        g.entries.swap(0, 1);
        (g.entries[0].entry, g.entries[1].entry) = (g.entries[1].entry, g.entries[0].entry);
        g.root = footer_root(&g);
        let (what, block, _) = corrupt(f.verify(&file, &g.encode()));
        assert_eq!(block, Some(0));
        assert!(what.contains("prefix says it is block 1"), "{what}");
        assert!(!f.mac_ok(&g.encode()));

        // Whole entries swapped in the footer: their offsets no longer follow each other.
        let mut h = f.footer.clone();
        h.entries.swap(1, 2);
        h.root = footer_root(&h);
        let (what, block, _) = corrupt(f.verify(&f.file, &h.encode()));
        assert_eq!(block, Some(1));
        assert!(what.contains("block offset is not contiguous"), "{what}");
    }

    #[test]
    fn a_block_hash_that_does_not_match_names_the_block() {
        let f = fixture(&[100, 200, 300], None);
        let mut g = f.footer.clone();
        g.entries[2].block_hash = block_hash_v2(b"something else");
        // With the root recomputed, so the footer is self-consistent: the block check catches it.
        g.root = footer_root(&g);
        let (what, block, offset) = corrupt(f.verify(&f.file, &g.encode()));
        assert_eq!((block, offset), (Some(2), Some(g.entries[2].entry.offset)));
        assert!(what.contains("block hash does not match"), "{what}");
        // Without it, the root check catches it first.
        g.root = f.footer.root;
        assert!(corrupt(f.verify(&f.file, &g.encode())).0.contains("root"));
    }

    #[test]
    fn a_prefix_that_disagrees_with_the_footer_is_refused_even_when_hashes_match() {
        let f = fixture(&[100], None);
        let e = f.footer.entries[0];
        let mut block = f.file[e.entry.offset as usize..(e.entry.offset + e.entry.len) as usize].to_vec();
        let bad_len = BlockPrefix {
            index: 0,
            payload_len: 115,
        };
        block[..BLOCK_PREFIX_LEN].copy_from_slice(&bad_len.encode());
        let rehashed = FooterEntryV2 {
            block_hash: block_hash_v2(&block),
            ..e
        };
        let what = corrupt(check_block_keyless(0, &rehashed, &block).map(|_| f.footer.clone())).0;
        assert!(what.contains("payload length 115"), "{what}");
        block[0] ^= 1;
        let rehashed = FooterEntryV2 {
            block_hash: block_hash_v2(&block),
            ..e
        };
        let what = corrupt(check_block_keyless(0, &rehashed, &block).map(|_| f.footer.clone())).0;
        assert!(what.contains("magic"), "{what}");
    }

    #[test]
    fn a_read_error_is_passed_through() {
        let f = fixture(&[100], None);
        let r = verify_keyless(f.footer_bytes(), f.footer_offset, BS, |_, _| {
            Err(Error::Incomplete("gone".into()))
        });
        assert!(matches!(r, Err(Error::Incomplete(_))));
    }
}
