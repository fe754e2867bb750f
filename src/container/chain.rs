//! Format version 4 (proposed, `docs/design/format-4.md`): a chain of patches over a base
//! generation, written after a container's current commit and read back from its commit record.
//!
//! A patch commit appends the written 4 KiB pages as sealed units, then a patch footer naming
//! them and the footer before it (by offset, size and MAC), then a trailer; syncs; and only then
//! writes the header's commit record. The record is the commit point, as in format 3: a crash
//! before it leaves the previous generation current, and the appended bytes are a torn tail that
//! no record names.
//!
//! Neither the reader nor the editor takes chains yet: this is the part of format 4 they will
//! call, tested on real files.

use crate::container::append::{append_generation, Appended, Planned, Tip};
use crate::container::reader::ContainerInfo;
use crate::core::codec::CompressPolicy;
use crate::core::crypto::{footer_mac_v2, verify_footer_mac_v2, ContainerKeys, DataKey, Entropy};
use crate::core::file_record::FileMeta;
use crate::core::format::{
    le_u32, le_u64, CommitRecord, PatchFooter, Trailer, UnitEntry, FOOTER_V2_HEAD_LEN, FOOTER_V3_MAGIC,
    HEADER_LEN, MAX_CHAIN_UNITS, MAX_DEPTH, MAX_UNITS, NONCE_BASE_USED, NONCE_LEN, PATCH_MAC_LEN,
    PATCH_MAGIC, SIGNATURE_AT, SIGNATURE_LEN, TRAILER_LEN,
};
use crate::core::overlay::{Overlay, Piece, UnitRef};
use crate::core::units::PatchKey;
use crate::storage::ReadAt;
use crate::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// One footer of a chain: its generation, where it is, and its MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// The generation whose commit wrote it.
    pub generation: u64,
    /// Container offset of the footer.
    pub offset: u64,
    /// Its length in bytes, MAC included.
    pub size: u64,
    /// Its MAC (its last 32 bytes).
    pub mac: [u8; 32],
}

impl Link {
    /// The container's bytes up to the end of the trailer after this footer.
    pub fn end(&self) -> u64 {
        self.offset + self.size + TRAILER_LEN as u64
    }
}

/// The patches over a base footer, oldest first, each checked: layout, MAC, and its link to
/// the footer before it.
#[derive(Clone, Debug)]
pub struct Chain {
    /// The base footer (a version-3 footer) the chain starts at.
    pub base: Link,
    /// The patches, oldest first, with where each footer is.
    pub patches: Vec<(Link, PatchFooter)>,
    /// The newest unit of each overridden page.
    pub overlay: Overlay,
    /// Plaintext length (the base's; patches never change it).
    pub size: u64,
}

impl Chain {
    /// A chain of no patches over `base`, for a plaintext of `size` bytes.
    pub fn over(base: Link, size: u64) -> Self {
        Chain {
            base,
            patches: Vec::new(),
            overlay: Overlay::default(),
            size,
        }
    }

    /// The newest footer: the last patch's, or the base's.
    pub fn tip(&self) -> Link {
        self.patches.last().map_or(self.base, |(link, _)| *link)
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.tip().generation
    }

    /// Checks, without the key, each current unit's bytes in `source` against the BLAKE3
    /// hash its entry gives: `verify --no-key` of a version-4 container. Returns the units
    /// checked.
    pub fn check_units_keyless(&self, source: &dyn ReadAt, progress: &dyn Fn(u64)) -> Result<u64> {
        let mut data = Vec::new();
        let mut checked = 0;
        for (page, at) in self.overlay.iter() {
            let (link, footer) = &self.patches[at.patch as usize];
            let entry = &footer.units[at.unit as usize];
            data.resize(entry.sealed_len() as usize, 0);
            read(source, &mut data, entry.offset, "a unit")?;
            if *blake3::hash(&data).as_bytes() != entry.unit_hash {
                return Err(Error::Corrupt {
                    what: format!(
                        "unit {} of the patch of generation {} (plaintext {}): BLAKE3 hash mismatch",
                        at.unit,
                        link.generation,
                        page * crate::core::format::UNIT
                    ),
                    block: None,
                    offset: Some(entry.offset),
                });
            }
            progress(data.len() as u64);
            checked += 1;
        }
        Ok(checked)
    }

    /// Units in the chain, superseded or not.
    pub fn units(&self) -> u64 {
        self.patches.iter().map(|(_, f)| f.units.len() as u64).sum()
    }

    /// True when one more patch of `pages` units fits the chain's limits.
    pub fn has_room(&self, pages: usize) -> bool {
        (1..=MAX_UNITS).contains(&pages)
            && (self.patches.len() as u64) < MAX_DEPTH
            && self.units() + pages as u64 <= MAX_CHAIN_UNITS
    }

    /// The bytes of the container the chain's current state uses past its base footer's
    /// trailer: every patch footer with its trailer, and the newest unit of each page.
    pub fn live_bytes(&self) -> u64 {
        let footers: u64 = self
            .patches
            .iter()
            .map(|(link, _)| link.size + TRAILER_LEN as u64)
            .sum();
        let units: u64 = self
            .overlay
            .iter()
            .map(|(_, at)| self.patches[at.patch as usize].1.units[at.unit as usize].sealed_len())
            .sum();
        footers + units
    }

    /// Fills in, in `buf` (plaintext from `offset`), the bytes the chain's units override,
    /// leaving the others as they are: for a reader that has decoded the base's bytes there.
    pub fn apply(
        &self,
        source: &dyn ReadAt,
        keys: &ContainerKeys,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        if self.overlay.is_empty() {
            return Ok(());
        }
        self.read_at(source, keys, offset, buf, &mut |_, _| Ok(()))
    }

    /// True when units override every byte of plaintext `offset .. offset + len`: a reader
    /// need not decode the base there.
    pub fn covers(&self, offset: u64, len: u64) -> bool {
        !self.overlay.is_empty()
            && self
                .overlay
                .pieces(offset, len)
                .iter()
                .all(|p| matches!(p, Piece::Unit { .. }))
    }

    /// True when a unit overrides some byte of plaintext `offset .. offset + len`.
    pub fn touches(&self, offset: u64, len: u64) -> bool {
        !self.overlay.is_empty()
            && self
                .overlay
                .pieces(offset, len)
                .iter()
                .any(|p| matches!(p, Piece::Unit { .. }))
    }

    /// Reads the chain whose newest footer the commit record `tip` names in `source`, and
    /// checks everything that needs no key: each patch footer's layout and generation, that it
    /// names its predecessor's MAC, and that the walk ends at a version-3 base footer of the
    /// chain's base generation. The plaintext size, which the units' ranges are checked
    /// against, is the base footer's (checked with the base footer itself by the reader, as
    /// for format 3). [`Chain::authenticate`] then checks the patch footers' MACs.
    pub fn walk(source: &dyn ReadAt, tip: CommitRecord) -> Result<Self> {
        let total = source_len(source)?;
        // First the links, newest first: (link, raw footer bytes).
        let mut raw: Vec<(Link, Vec<u8>)> = Vec::new();
        let (mut generation, mut offset, mut len) = (tip.generation, tip.footer_offset, tip.footer_size);
        let (base, size) = loop {
            let inside = offset
                .checked_add(len)
                .is_some_and(|end| offset >= HEADER_LEN as u64 && end <= total);
            if !inside || len < (FOOTER_V2_HEAD_LEN + PATCH_MAC_LEN) as u64 {
                return Err(Error::corrupt(format!(
                    "footer of generation {generation} at {offset} ({len} bytes) lies outside the container"
                )));
            }
            let mut head = [0u8; FOOTER_V2_HEAD_LEN];
            read(source, &mut head, offset, "a footer's head")?;
            let mut mac = [0u8; 32];
            read(
                source,
                &mut mac,
                offset + len - PATCH_MAC_LEN as u64,
                "a footer's MAC",
            )?;
            let link = Link {
                generation,
                offset,
                size: len,
                mac,
            };
            if let Some((newer, bytes)) = raw.last() {
                if bytes[32..64] != mac {
                    return Err(Error::corrupt(format!(
                        "the patch footer of generation {} names a footer at {offset} whose MAC differs",
                        newer.generation
                    )));
                }
            }
            if &head[0..8] == FOOTER_V3_MAGIC {
                let base_generation = le_u64(&head, 64);
                if base_generation != generation {
                    return Err(Error::corrupt(format!(
                        "the chain's base footer at {offset} is of generation {base_generation}, not {generation}"
                    )));
                }
                break (link, le_u64(&head, 16));
            }
            if &head[0..8] != PATCH_MAGIC {
                return Err(Error::corrupt(format!(
                    "footer of generation {generation} at {offset}: neither a base nor a patch footer"
                )));
            }
            // Each patch lies after its predecessor, and at most MAX_DEPTH patches are walked.
            if len > PatchFooter::encoded_len(MAX_UNITS) || raw.len() as u64 >= MAX_DEPTH || generation < 2 {
                return Err(Error::corrupt(format!(
                    "patch footer of generation {generation} at {offset}: {len} bytes, or a chain deeper \
                     than {MAX_DEPTH}"
                )));
            }
            let mut bytes = vec![0u8; len as usize];
            read(source, &mut bytes, offset, "a patch footer")?;
            let (prev_offset, prev_size) = (le_u64(&bytes, 16), le_u64(&bytes, 24));
            if prev_offset.checked_add(prev_size).is_none_or(|end| end > offset) {
                return Err(Error::corrupt(format!(
                    "patch footer of generation {generation} at {offset}: its predecessor does not lie before it"
                )));
            }
            raw.push((link, bytes));
            (generation, offset, len) = (generation - 1, prev_offset, prev_size);
        };
        // The units the chain holds, from each footer's count, before any is decoded.
        let units: u64 = raw.iter().map(|(_, b)| u64::from(le_u32(b, 72))).sum();
        if units > MAX_CHAIN_UNITS {
            return Err(Error::corrupt(format!(
                "the chain ending at generation {} holds {units} units (at most {MAX_CHAIN_UNITS})",
                tip.generation
            )));
        }
        // Then each patch decoded (its units checked against the size), oldest first.
        let mut patches = Vec::with_capacity(raw.len());
        for (link, bytes) in raw.into_iter().rev() {
            let footer = PatchFooter::decode(&bytes, link.offset, size, link.generation)?;
            if footer.base_generation != base.generation {
                return Err(Error::corrupt(format!(
                    "the patch footer of generation {} names base generation {}, but the chain's base is {}",
                    link.generation, footer.base_generation, base.generation
                )));
            }
            patches.push((link, footer));
        }
        let overlay = Overlay::new(patches.iter().map(|(_, f)| f));
        Ok(Chain {
            base,
            patches,
            overlay,
            size,
        })
    }

    /// Checks each patch footer's MAC (header bound fields `bound`, the container's `keys`):
    /// a decoded footer encodes back to exactly the bytes it was read from.
    pub fn authenticate(&self, bound: &[u8], keys: &ContainerKeys) -> Result<()> {
        for (link, footer) in &self.patches {
            if !verify_footer_mac_v2(keys, bound, &footer.encode_unsigned(), &link.mac) {
                return Err(Error::corrupt(format!(
                    "patch footer of generation {} at {}: MAC mismatch (changed, or another container's)",
                    link.generation, link.offset
                )));
            }
        }
        Ok(())
    }

    /// [`Chain::walk`], then [`Chain::authenticate`].
    pub fn read(source: &dyn ReadAt, bound: &[u8], keys: &ContainerKeys, tip: CommitRecord) -> Result<Self> {
        let chain = Self::walk(source, tip)?;
        chain.authenticate(bound, keys)?;
        Ok(chain)
    }

    /// The plaintext of unit `at`, read from `source` and opened (its hash, then its AEAD).
    pub fn read_unit(&self, source: &dyn ReadAt, keys: &ContainerKeys, at: UnitRef) -> Result<Vec<u8>> {
        let key = PatchKey::of(keys, &self.patches[at.patch as usize].1);
        self.open_unit(source, &key, at)
    }

    /// Unit `at`'s plaintext, opened with its patch's key `key`.
    fn open_unit(&self, source: &dyn ReadAt, key: &PatchKey, at: UnitRef) -> Result<Vec<u8>> {
        let entry: &UnitEntry = &self.patches[at.patch as usize].1.units[at.unit as usize];
        let mut data = vec![0u8; entry.sealed_len() as usize];
        read(source, &mut data, entry.offset, "a unit")?;
        key.open(at.unit, entry, &mut data)?;
        Ok(data)
    }

    /// Fills `buf` with plaintext from `offset` (within the plaintext): the units' bytes where a
    /// patch overrides a page, and `base(offset, buf)` elsewhere.
    pub fn read_at(
        &self,
        source: &dyn ReadAt,
        keys: &ContainerKeys,
        offset: u64,
        buf: &mut [u8],
        base: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(Error::InvalidArgument(format!(
                "a read of {} bytes at {offset}: past the plaintext's {} bytes",
                buf.len(),
                self.size
            )));
        }
        // Each patch's unit key is derived once per read, however many of its units it opens.
        let mut patch_keys: Vec<Option<PatchKey>> = self.patches.iter().map(|_| None).collect();
        let mut at = 0usize;
        for piece in self.overlay.pieces(offset, buf.len() as u64) {
            match piece {
                Piece::Unit { at: unit, skip, len } => {
                    let key = patch_keys[unit.patch as usize]
                        .get_or_insert_with(|| PatchKey::of(keys, &self.patches[unit.patch as usize].1));
                    let plain = self.open_unit(source, key, unit)?;
                    buf[at..at + len as usize].copy_from_slice(&plain[skip as usize..(skip + len) as usize]);
                    at += len as usize;
                }
                Piece::Base { offset, len } => {
                    base(offset, &mut buf[at..at + len as usize])?;
                    at += len as usize;
                }
            }
        }
        Ok(())
    }

    /// Folds the chain into a base commit: generation g + 1 appended after the newest patch as
    /// a version-3 footer, every block a unit overrides sealed again with the units applied, the
    /// others kept (their bytes are not touched). `info` is the base's structure (its footer is
    /// this chain's base), `base` reads the base's plaintext. What results is a version-3
    /// container: every reader of format 3 reads it. A failure before the commit record cuts
    /// only what it appended: the patches stay, and so does generation g.
    #[allow(clippy::too_many_arguments)]
    pub fn fold(
        &self,
        file: &File,
        info: &ContainerInfo,
        data_key: &DataKey,
        keys: &ContainerKeys,
        base: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
        meta: &FileMeta,
        policy: CompressPolicy,
        entropy: &(dyn Entropy + Sync),
        durable: bool,
    ) -> Result<Appended> {
        let is_base = info.trailer.footer_offset == self.base.offset && info.footer.mac == self.base.mac;
        if !is_base {
            return Err(Error::InvalidArgument(
                "folding a chain over another footer than its base".into(),
            ));
        }
        let plan: Vec<Planned> = info
            .footer
            .entries
            .iter()
            .map(|e| {
                let overridden = self
                    .overlay
                    .pieces(e.plain_offset, e.plain_size)
                    .iter()
                    .any(|p| matches!(p, Piece::Unit { .. }));
                if overridden {
                    Planned::Seal {
                        plain_offset: e.plain_offset,
                        plain_size: e.plain_size,
                    }
                } else {
                    Planned::Keep
                }
            })
            .collect();
        let tip = Tip {
            end: self.tip().end(),
            generation: self.generation(),
        };
        let mut read = |offset: u64, buf: &mut [u8]| self.read_at(file, keys, offset, buf, base);
        append_generation(
            file,
            info,
            Some(tip),
            data_key,
            &plan,
            &mut read,
            meta,
            policy,
            entropy,
            durable,
        )
    }

    /// Commits generation g + 1 as a patch of `pages` (plaintext offset, plaintext: offsets on
    /// 4 KiB boundaries, ascending, each 4096 bytes or ending at the plaintext's end) to `file`,
    /// whose current generation g is this chain's newest footer. `durable`: the commit record
    /// is synced too before this returns (the units and footer always are, before the record is
    /// written). Refused, with nothing written, when the chain already holds [`MAX_DEPTH`]
    /// patches or the pages are more than [`MAX_UNITS`] or out of shape: the caller then folds
    /// the chain into a base commit. `meta`'s mode and mtime are the file's as of g + 1 (its
    /// name stays the base's). Returns the chain at g + 1.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        file: &File,
        bound: &[u8],
        keys: &ContainerKeys,
        pages: &[(u64, &[u8])],
        meta: &FileMeta,
        entropy: &dyn Entropy,
        durable: bool,
    ) -> Result<Chain> {
        let tip = self.tip();
        let generation = tip.generation + 1;
        let base_generation = self.base.generation;
        if !self.has_room(pages.len()) {
            return Err(Error::InvalidArgument(format!(
                "a patch of {} pages at depth {} over {} units (1 … {MAX_UNITS} pages, at most \
                 {MAX_DEPTH} deep, {MAX_CHAIN_UNITS} units in all)",
                pages.len(),
                generation - base_generation,
                self.units()
            )));
        }
        let mut patch_salt = [0u8; 32];
        let context = |what: &str| format!("v4 patch {generation} {what}").into_bytes();
        entropy.fill(&context("salt"), &mut patch_salt);
        let mut nonce_base = [0u8; NONCE_LEN];
        entropy.fill(&context("nonce base"), &mut nonce_base[..NONCE_BASE_USED]);
        let key = PatchKey::new(keys, generation, &patch_salt, nonce_base);
        let from = tip.end();
        let mut bytes = Vec::new();
        let units = key.seal(from, pages, &mut bytes);
        let footer_offset = from + bytes.len() as u64;
        let footer = PatchFooter {
            generation,
            prev_offset: tip.offset,
            prev_size: tip.size,
            prev_mac: tip.mac,
            base_generation,
            patch_salt,
            nonce_base,
            mode: meta.mode,
            mtime_sec: meta.mtime_sec,
            mtime_nsec: meta.mtime_nsec,
            units,
        };
        let mut encoded = footer.encode_unsigned();
        let mac = footer_mac_v2(keys, bound, &encoded);
        encoded.extend_from_slice(&mac);
        // What the reader would refuse is never written.
        PatchFooter::decode(&encoded, footer_offset, self.size, generation)
            .map_err(|e| Error::InvalidArgument(format!("pages out of shape for a patch: {e}")))?;
        let link = Link {
            generation,
            offset: footer_offset,
            size: encoded.len() as u64,
            mac,
        };
        bytes.extend_from_slice(&encoded);
        let trailer = Trailer {
            footer_offset,
            footer_size: link.size,
        };
        bytes.extend_from_slice(&trailer.encode());
        let before_record = || -> Result<()> {
            file.write_all_at(&bytes, from)
                .map_err(|e| Error::io("appending a patch", e))?;
            // A torn tail longer than this commit (from an earlier, interrupted one) goes.
            file.set_len(link.end())
                .map_err(|e| Error::io("setting the container's length", e))?;
            // The units and footer reach the disk before the record that names them.
            file.sync_data().map_err(|e| Error::io("syncing the patch", e))
        };
        if let Err(e) = before_record() {
            // Nothing names what was appended: it goes at once, so a full disk gets its room back.
            let _ = file.set_len(from);
            return Err(e);
        }
        let record = CommitRecord {
            generation,
            footer_offset,
            footer_size: link.size,
        };
        file.write_all_at(&record.encode(), CommitRecord::slot_of(generation) as u64)
            .map_err(|e| Error::io("writing the commit record", e))?;
        // The new generation is not what a signer signed (as format 3's commit).
        file.write_all_at(&[0; SIGNATURE_LEN], SIGNATURE_AT as u64)
            .map_err(|e| Error::io("removing the signature", e))?;
        if durable {
            file.sync_data()
                .map_err(|e| Error::io("syncing the commit record", e))?;
        }
        let mut next = self.clone();
        next.patches.push((link, footer));
        next.overlay = Overlay::new(next.patches.iter().map(|(_, f)| f));
        Ok(next)
    }
}

fn source_len(source: &dyn ReadAt) -> Result<u64> {
    source
        .size()
        .map_err(|e| Error::io("reading the container's length", e))
}

fn read(source: &dyn ReadAt, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
    source.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Corrupt {
                what: format!("{what}: the container ends before it"),
                block: None,
                offset: Some(offset),
            }
        } else {
            Error::io(format!("reading {what}"), e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::ops::pack;
    use crate::container::reader::Container;
    use crate::container::writer::PackOptions;
    use crate::core::crypto::{derive_container_keys, KeyFileKey, SystemEntropy};
    use crate::core::format::{FormatVersion, Header, UNIT};
    use crate::{Key, Recipient};
    use std::path::{Path, PathBuf};

    /// A version-3 container of `size` bytes (16 KiB blocks) in `dir`, its plaintext, and what a
    /// chain over it needs.
    struct Base {
        path: PathBuf,
        plain: Vec<u8>,
        keys: ContainerKeys,
        bound: Vec<u8>,
        container: Container,
    }

    fn meta() -> FileMeta {
        FileMeta {
            name: b"c".to_vec(),
            mode: 0o640,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 7,
        }
    }

    fn key() -> Key {
        Key::KeyFile(KeyFileKey::from_bytes([4; 32]))
    }

    fn base(dir: &Path, size: usize) -> Base {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let plain: Vec<u8> = (0..size).map(|_| next(&mut state) as u8).collect();
        let input = dir.join("plain");
        std::fs::write(&input, &plain).unwrap();
        let path = dir.join("c.qltx");
        let opts = PackOptions {
            format: FormatVersion::V3,
            block_size: 16384,
            ..PackOptions::default()
        };
        pack(
            &input,
            &path,
            &[Recipient::try_from(&key()).unwrap()],
            &opts,
            false,
        )
        .unwrap();
        let container = Container::open(&path, &key()).unwrap();
        let info = container.info();
        let keys = derive_container_keys(
            container.data_key().clone(),
            info.header.cipher,
            info.header.container_id,
        );
        Base {
            path,
            plain,
            keys,
            bound: info.header.bound_fields(),
            container,
        }
    }

    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn chain_of(b: &Base) -> Chain {
        let info = b.container.info();
        let base = Link {
            generation: info.footer_v2.as_ref().unwrap().generation.unwrap(),
            offset: info.trailer.footer_offset,
            size: info.trailer.footer_size,
            mac: info.footer.mac,
        };
        Chain::over(base, b.plain.len() as u64)
    }

    fn tip_of(file: &dyn ReadAt) -> CommitRecord {
        let mut head = vec![0u8; HEADER_LEN];
        file.read_exact_at(&mut head, 0).unwrap();
        Header::decode(&head).unwrap().current_commit().unwrap()
    }

    fn reread(b: &Base, file: &dyn ReadAt) -> Result<Chain> {
        Chain::read(file, &b.bound, &b.keys, tip_of(file))
    }

    /// The whole plaintext through `chain`, the base read through the container.
    fn read_all(b: &Base, file: &dyn ReadAt, chain: &Chain) -> Result<Vec<u8>> {
        let mut out = vec![0u8; b.plain.len()];
        let mut base = |offset: u64, buf: &mut [u8]| b.container.read_at(offset, buf).map(drop);
        chain.read_at(file, &b.keys, 0, &mut out, &mut base)?;
        Ok(out)
    }

    /// Random pages of `model`, rewritten there and returned as a patch's pages.
    fn scribble(model: &mut [u8], state: &mut u64, count: usize) -> Vec<(u64, Vec<u8>)> {
        let pages = (model.len() as u64).div_ceil(UNIT);
        let mut picked: Vec<u64> = (0..count).map(|_| next(state) % pages).collect();
        picked.push(pages - 1);
        picked.sort_unstable();
        picked.dedup();
        picked
            .into_iter()
            .map(|p| {
                let range = (p * UNIT) as usize..((p + 1) * UNIT).min(model.len() as u64) as usize;
                for byte in &mut model[range.clone()] {
                    *byte = next(state) as u8;
                }
                (p * UNIT, model[range].to_vec())
            })
            .collect()
    }

    fn as_pages(pages: &[(u64, Vec<u8>)]) -> Vec<(u64, &[u8])> {
        pages.iter().map(|(o, p)| (*o, p.as_slice())).collect()
    }

    /// `chain.append` of `pages` to `file`, with the tests' keys and file record.
    fn commit(b: &Base, file: &File, chain: &Chain, pages: &[(u64, &[u8])], durable: bool) -> Chain {
        try_commit(b, file, chain, pages, durable).unwrap()
    }

    fn try_commit(
        b: &Base,
        file: &File,
        chain: &Chain,
        pages: &[(u64, &[u8])],
        durable: bool,
    ) -> Result<Chain> {
        chain.append(file, &b.bound, &b.keys, pages, &meta(), &SystemEntropy, durable)
    }

    fn open_rw(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }

    const SIZE: usize = 200_000 + 123;

    #[test]
    fn patches_read_back_as_the_model_from_the_commit_record() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(dir.path(), SIZE);
        let file = open_rw(&b.path);
        let (mut model, mut state) = (b.plain.clone(), 7u64);
        let mut chain = chain_of(&b);
        let base_generation = chain.generation();
        for round in 0..5 {
            let pages = scribble(&mut model, &mut state, 1 + round * 7);
            chain = commit(&b, &file, &chain, &as_pages(&pages), round % 2 == 0);
            assert_eq!(chain.generation(), base_generation + 1 + round as u64);
            let again = reread(&b, &file).unwrap();
            assert_eq!(again.tip(), chain.tip());
            assert_eq!(again.base, chain.base);
            assert_eq!(again.patches.len(), round + 1);
            assert!(read_all(&b, &file, &again).unwrap() == model, "round {round}");
            // A few unaligned reads across units and base bytes.
            for _ in 0..20 {
                let offset = next(&mut state) % SIZE as u64;
                let len = (next(&mut state) % 20_000).min(SIZE as u64 - offset) as usize;
                let mut buf = vec![0u8; len];
                let mut base = |o: u64, buf: &mut [u8]| b.container.read_at(o, buf).map(drop);
                again
                    .read_at(&file, &b.keys, offset, &mut buf, &mut base)
                    .unwrap();
                assert!(buf[..] == model[offset as usize..offset as usize + len]);
            }
        }
    }

    #[test]
    fn every_crash_point_of_a_patch_commit_reads_as_the_old_or_the_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(dir.path(), SIZE);
        let file = open_rw(&b.path);
        let (mut model, mut state) = (b.plain.clone(), 3u64);
        let pages = scribble(&mut model, &mut state, 5);
        let chain = commit(&b, &file, &chain_of(&b), &as_pages(&pages), true);
        let old_model = model.clone();
        let before = std::fs::read(&b.path).unwrap();
        let pages = scribble(&mut model, &mut state, 9);
        let next = commit(&b, &file, &chain, &as_pages(&pages), true);
        let after = std::fs::read(&b.path).unwrap();
        assert_eq!(after.len() as u64, next.tip().end());
        let from = chain.tip().end() as usize;
        assert_eq!(
            &after[HEADER_LEN..from],
            &before[HEADER_LEN..from],
            "nothing committed is written over"
        );
        let crash = dir.path().join("crash.qltx");
        // Before the record: any prefix of the appended bytes, the old header.
        for cut in (from..=after.len()).step_by(97).chain([after.len()]) {
            let mut bytes = after[..cut].to_vec();
            bytes[..HEADER_LEN].copy_from_slice(&before[..HEADER_LEN]);
            std::fs::write(&crash, &bytes).unwrap();
            let f = File::open(&crash).unwrap();
            let got = reread(&b, &f).unwrap();
            assert_eq!(got.generation(), chain.generation(), "cut {cut}");
            assert!(read_all(&b, &f, &got).unwrap() == old_model, "cut {cut}");
        }
        // A torn record: the older one stays current.
        let slot = CommitRecord::slot_of(next.generation());
        for torn in [slot + 3, slot + 30, slot + 63] {
            let mut bytes = after.clone();
            bytes[torn] ^= 0x40;
            std::fs::write(&crash, &bytes).unwrap();
            let f = File::open(&crash).unwrap();
            let got = reread(&b, &f).unwrap();
            assert_eq!(got.generation(), chain.generation());
            assert!(read_all(&b, &f, &got).unwrap() == old_model);
        }
        // The record written: the new generation.
        let got = reread(&b, &file).unwrap();
        assert_eq!(got.generation(), next.generation());
        assert!(read_all(&b, &file, &got).unwrap() == model);
    }

    #[test]
    fn a_changed_footer_or_unit_and_a_replayed_unit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(dir.path(), SIZE);
        let file = open_rw(&b.path);
        let (mut model, mut state) = (b.plain.clone(), 11u64);
        // Page 3 in both patches, so that the older unit can be replayed over the newer.
        let mut first = scribble(&mut model, &mut state, 4);
        first.retain(|(o, _)| *o != 3 * UNIT);
        first.insert(0, (3 * UNIT, vec![1; UNIT as usize]));
        first.sort_unstable_by_key(|(o, _)| *o);
        let one = commit(&b, &file, &chain_of(&b), &as_pages(&first), true);
        let second = vec![(3 * UNIT, vec![2u8; UNIT as usize])];
        let two = commit(&b, &file, &one, &as_pages(&second), true);
        let good = std::fs::read(&b.path).unwrap();
        let crash = dir.path().join("bad.qltx");
        let with = |change: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = good.clone();
            change(&mut bytes);
            std::fs::write(&crash, &bytes).unwrap();
            File::open(&crash).unwrap()
        };
        let tip = two.tip();
        // A byte of the newest patch footer, and of the older one (its MAC no longer matches,
        // or the newer footer's prev_mac no longer names it).
        for at in [
            tip.offset + 10,
            tip.offset + 100,
            one.tip().offset + 90,
            one.tip().end() - 40,
        ] {
            let f = with(&|bytes| bytes[at as usize] ^= 1);
            let e = reread(&b, &f).unwrap_err().to_string();
            assert!(e.contains("patch footer") || e.contains("MAC"), "{at}: {e}");
        }
        // A byte of a unit: the chain reads, the page does not.
        let newer = two.patches[1].1.units[0];
        let f = with(&|bytes| bytes[newer.offset as usize + 5] ^= 1);
        let chain = reread(&b, &f).unwrap();
        let e = read_all(&b, &f, &chain).unwrap_err().to_string();
        assert!(e.contains("unit 0 of generation") && e.contains("12288"), "{e}");
        // The older patch's unit for the same page copied over the newer one.
        let older = one.patches[0]
            .1
            .units
            .iter()
            .find(|u| u.plain_offset == 3 * UNIT)
            .copied()
            .unwrap();
        let f = with(&|bytes| {
            let unit = bytes[older.offset as usize..][..older.sealed_len() as usize].to_vec();
            bytes[newer.offset as usize..][..unit.len()].copy_from_slice(&unit);
        });
        let chain = reread(&b, &f).unwrap();
        assert!(read_all(&b, &f, &chain).is_err());
        // The commit record re-pointed at the older patch footer with the newer generation.
        let f = with(&|bytes| {
            let record = CommitRecord {
                generation: two.generation(),
                footer_offset: one.tip().offset,
                footer_size: one.tip().size,
            };
            let slot = CommitRecord::slot_of(record.generation);
            bytes[slot..slot + 64].copy_from_slice(&record.encode());
        });
        assert!(reread(&b, &f).is_err());
        // Without the key, the chain walks; with another key, its MACs fail.
        let walked = Chain::walk(&file, tip_of(&file)).unwrap();
        assert_eq!((walked.tip(), walked.patches.len()), (two.tip(), 2));
        let other = derive_container_keys(
            crate::core::crypto::DataKey::generate(&SystemEntropy),
            b.container.info().header.cipher,
            b.container.info().header.container_id,
        );
        let e = walked.authenticate(&b.bound, &other).unwrap_err().to_string();
        assert!(e.contains("MAC mismatch"), "{e}");
        walked.authenticate(&b.bound, &b.keys).unwrap();
        // Unchanged, it reads.
        let f = with(&|_| {});
        assert!(read_all(&b, &f, &reread(&b, &f).unwrap()).unwrap() == model_with(&model, 3, 2));
    }

    fn fold(
        b: &Base,
        file: &File,
        chain: &Chain,
        base: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<Appended> {
        let meta = FileMeta {
            name: b"f".to_vec(),
            mode: 0o600,
            mtime_sec: 1,
            mtime_nsec: 0,
        };
        let policy = CompressPolicy {
            mode: crate::CompressMode::Never,
            level: 1,
            codec: crate::core::compress::Codec::default(),
        };
        let data_key = b.container.data_key();
        let info = b.container.info();
        chain.fold(
            file,
            info,
            data_key,
            &b.keys,
            base,
            &meta,
            policy,
            &SystemEntropy,
            true,
        )
    }

    #[test]
    fn a_folded_chain_is_a_version_3_container_that_reads_as_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(dir.path(), SIZE);
        let file = open_rw(&b.path);
        let (mut model, mut state) = (b.plain.clone(), 5u64);
        let mut chain = chain_of(&b);
        for round in 0..3 {
            let pages = scribble(&mut model, &mut state, 3 + round);
            chain = commit(&b, &file, &chain, &as_pages(&pages), false);
        }
        // A failing fold (here its base reads fail) cuts only what it appended.
        let before = std::fs::read(&b.path).unwrap();
        let mut broken = |_: u64, _: &mut [u8]| Err(Error::corrupt("a test's failing read"));
        assert!(fold(&b, &file, &chain, &mut broken).is_err());
        assert!(std::fs::read(&b.path).unwrap() == before);
        assert!(read_all(&b, &file, &reread(&b, &file).unwrap()).unwrap() == model);

        let mut base = |o: u64, buf: &mut [u8]| b.container.read_at(o, buf).map(drop);
        let folded = fold(&b, &file, &chain, &mut base).unwrap();
        assert_eq!(folded.generation, chain.generation() + 1);
        assert!(folded.sealed > 0 && folded.sealed < b.container.block_count());
        // Read by the format-3 reader, from the file alone.
        let reopened = Container::open(&b.path, &key()).unwrap();
        assert_eq!(
            reopened.info().footer_v2.as_ref().unwrap().generation,
            Some(folded.generation)
        );
        let mut all = vec![0u8; SIZE];
        reopened.read_at(0, &mut all).unwrap();
        assert!(all == model);
        // And as the base of a new chain.
        let base_link = Link {
            generation: folded.generation,
            offset: folded.info.trailer.footer_offset,
            size: folded.info.trailer.footer_size,
            mac: folded.info.footer.mac,
        };
        let next = commit(
            &b,
            &file,
            &Chain::over(base_link, SIZE as u64),
            &[(0, &[7u8; 4096][..])],
            true,
        );
        let walked = reread(&b, &file).unwrap();
        assert_eq!((walked.base, walked.tip()), (base_link, next.tip()));
        model[..4096].fill(7);
        let mut out = vec![0u8; SIZE];
        let mut base = |o: u64, buf: &mut [u8]| reopened.read_at(o, buf).map(drop);
        walked.read_at(&file, &b.keys, 0, &mut out, &mut base).unwrap();
        assert!(out == model);
    }

    fn model_with(model: &[u8], page: usize, byte: u8) -> Vec<u8> {
        let mut m = model.to_vec();
        m[page * UNIT as usize..][..UNIT as usize].fill(byte);
        m
    }

    #[test]
    fn a_full_chain_or_pages_out_of_shape_are_refused_with_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(dir.path(), SIZE);
        let file = open_rw(&b.path);
        let page = vec![9u8; UNIT as usize];
        let last = SIZE as u64 / UNIT * UNIT;
        let short = vec![8u8; SIZE - last as usize];
        let mut chain = chain_of(&b);
        for bad in [
            vec![],
            vec![(UNIT, &page[..]), (0, &page[..])],
            vec![(UNIT, &page[..]), (UNIT, &page[..])],
            vec![(100, &page[..])],
            vec![(UNIT, &page[..100])],
            vec![(last, &page[..])],
            vec![(last + UNIT, &short[..])],
        ] {
            let len = file.metadata().unwrap().len();
            let e = try_commit(&b, &file, &chain, &bad, false);
            assert!(matches!(e, Err(Error::InvalidArgument(_))), "{bad:?}");
            assert_eq!(file.metadata().unwrap().len(), len);
        }
        chain = commit(&b, &file, &chain, &[(last, &short[..])], false);
        while chain.generation() - chain.base.generation < MAX_DEPTH {
            chain = commit(&b, &file, &chain, &[(0, &page[..])], false);
        }
        let len = file.metadata().unwrap().len();
        let e = try_commit(&b, &file, &chain, &[(0, &page[..])], false);
        assert!(matches!(e, Err(Error::InvalidArgument(_))));
        assert_eq!(file.metadata().unwrap().len(), len);
        let again = reread(&b, &file).unwrap();
        assert_eq!(again.patches.len() as u64, MAX_DEPTH);
        let mut past = [0u8; 2];
        let mut base = |o: u64, buf: &mut [u8]| b.container.read_at(o, buf).map(drop);
        let e = again.read_at(&file, &b.keys, SIZE as u64 - 1, &mut past, &mut base);
        assert!(matches!(e, Err(Error::InvalidArgument(_))));
        let mut model = b.plain.clone();
        model[..UNIT as usize].fill(9);
        model[last as usize..].fill(8);
        assert!(read_all(&b, &file, &again).unwrap() == model);
    }
}
