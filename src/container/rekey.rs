//! Changing a container's key slots in place, crash-safely, leaving no removed slot behind.
//!
//! 1. The new slot set is written to the *inactive* slot area with the next sequence number and
//!    synced. Readers take the valid area with the higher sequence, so a crash before or during
//!    this write leaves the old set in force (a torn area fails its checksum); after it, the new.
//! 2. The same bytes are then written over the *previously active* area and synced. Until this
//!    second write completes, the old area still holds the old slots, but it has the lower
//!    sequence; a crash during it tears that area and leaves the new one in force. Afterwards the
//!    two areas are identical, so no removed slot remains anywhere in the file: editing one
//!    area's checksum can no longer bring an old slot back.
//!
//! A rekey interrupted between the two steps leaves the new set in force and the old slots in
//! the other area; `qeltrix info` reports that, and `qeltrix rekey --scrub` (any rekey, in fact)
//! clears it. Key changes take an exclusive `flock` on the container, so concurrent rekeys run one
//! after the other and none loses the other's change. Block data, the footer and every other
//! header byte are never rewritten.
//!
//! In-place rekey needs a local file: it rewrites a few hundred bytes of the header under `flock`
//! and syncs them, which the [`crate::storage::Storage`] seam (objects committed whole) cannot
//! express. On an object store, a key change will rewrite the object whole instead.
//!
//! The container is opened once, with one slot unwrap: the data key that opens it is the one the
//! new slots wrap, so a passphrase costs one KDF, not two.

use crate::container::reader::Container;
use crate::core::crypto::{wrap_slot, Entropy, Key, Recipient};
use crate::core::format::{
    Header, KeySlot, SlotArea, HEADER_LEN, MAX_SLOTS, SLOT_AREA_A, SLOT_AREA_B, SLOT_AREA_LEN,
};
use crate::storage::ReadAt;
use crate::sys::test_hooks::{crash_point, crash_requested};
use crate::{Error, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One change to a container's key slots.
#[derive(Debug)]
#[non_exhaustive]
pub enum SlotChange {
    /// Add a slot for this key (passphrase slots use `iterations`).
    Add {
        /// The key that will open the new slot.
        key: Recipient,
        /// PBKDF2 iterations of a passphrase slot; ignored for other kinds.
        iterations: u32,
    },
    /// Remove the slot at this position (as `qeltrix rekey --list` numbers them).
    Remove(usize),
}

/// Applies `changes` to the container at `path`, opening it with `key`. Returns the new slot list.
/// With no changes, both areas are rewritten with the slots in force (a scrub).
pub fn rekey(path: &Path, key: &Key, changes: &[SlotChange], entropy: &dyn Entropy) -> Result<Vec<KeySlot>> {
    let io = |what: &str, e| Error::io(what, e).in_file(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io("opening for the key change", e))?;
    // Held until both areas are synced; a second rekey waits here, then reads what this one wrote.
    file.lock().map_err(|e| io("locking for the key change", e))?;
    crash_point("locked");
    // Opening checks the whole structure and the footer MAC with this key before anything changes;
    // it reads the locked descriptor, and its one slot unwrap (one passphrase KDF) gives the data
    // key the new slots wrap.
    let source = file
        .try_clone()
        .map_err(|e| io("opening for the key change", e))?;
    let (container, data_key) =
        Container::from_source_with_data_key(source, key).map_err(|e| e.in_file(path))?;
    let header = container.info().header.clone();
    let active = container.info().slots.clone();
    let cid = header.container_id;
    drop(container);

    let slots = changed_slots(path, &active, changes, &data_key, &cid, entropy)?;
    let area = SlotArea {
        sequence: active.sequence + 1,
        slots: slots.clone(),
    }
    .encode();
    let target = if active_area_offset(&header, &active) == SLOT_AREA_A {
        SLOT_AREA_B
    } else {
        SLOT_AREA_A
    };
    crash_point("before-write");
    if crash_requested("torn-write") {
        file.write_all_at(&area[..SLOT_AREA_LEN / 2], target as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| io("writing the key slots", e))?;
        crash_point("torn-write");
    }
    file.write_all_at(&area, target as u64)
        .map_err(|e| io("writing the key slots", e))?;
    crash_point("before-sync");
    file.sync_all().map_err(|e| io("syncing the key slots", e))?;
    crash_point("after-sync");

    // Step 2: the old area gets the same bytes, so the removed slots are gone from the file.
    let old = if target == SLOT_AREA_A {
        SLOT_AREA_B
    } else {
        SLOT_AREA_A
    };
    if crash_requested("torn-scrub") {
        file.write_all_at(&area[..SLOT_AREA_LEN / 2], old as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| io("clearing the old key slots", e))?;
        crash_point("torn-scrub");
    }
    let cleared = file.write_all_at(&area, old as u64).and_then(|()| {
        crash_point("before-scrub-sync");
        file.sync_all()
    });
    cleared.map_err(|source| Error::ScrubFailed { source }.in_file(path))?;
    Ok(slots)
}

/// The slot list after `changes`, new slots wrapping `data_key`.
fn changed_slots(
    path: &Path,
    active: &SlotArea,
    changes: &[SlotChange],
    data_key: &crate::core::crypto::DataKey,
    cid: &crate::core::format::ContainerId,
    entropy: &dyn Entropy,
) -> Result<Vec<KeySlot>> {
    let mut slots = active.slots.clone();
    for (n, change) in changes.iter().enumerate() {
        match change {
            SlotChange::Add { key: new, iterations } => {
                if slots.len() == MAX_SLOTS {
                    return Err(Error::InvalidArgument(format!(
                        "a container holds at most {MAX_SLOTS} key slots"
                    ))
                    .in_file(path));
                }
                let purpose = active.sequence as usize * 64 + n;
                let slot = wrap_slot(new, data_key, cid, *iterations, purpose, entropy)
                    .map_err(|e| e.in_file(path))?;
                slots.push(slot);
            }
            SlotChange::Remove(i) => {
                if *i >= slots.len() {
                    return Err(Error::InvalidArgument(format!(
                        "there is no slot #{i} ({} slots)",
                        slots.len()
                    ))
                    .in_file(path));
                }
                slots.remove(*i);
            }
        }
    }
    if slots.is_empty() {
        return Err(Error::InvalidArgument(
            "refusing to remove the last key slot: the data would be lost".into(),
        )
        .in_file(path));
    }

    Ok(slots)
}

/// Applies `changes` to the container at `path` in `storage`, an object store: S3 has no write
/// into an object, so the object is rewritten whole (streamed, in bounded memory) with the new
/// slot set in both areas, and the new object replaces the old one at once when its upload
/// completes. Readers see the old object or the new one, never a mix; block data is copied
/// byte for byte. An object changed by someone else meanwhile (its version moved) is not
/// replaced: the change is refused. Two key changes racing on one object are not serialized
/// (no lock exists on S3): run them one at a time.
pub fn rekey_in(
    storage: &dyn crate::storage::Storage,
    path: &Path,
    key: &Key,
    changes: &[SlotChange],
    entropy: &dyn Entropy,
) -> Result<Vec<KeySlot>> {
    let shown = storage.display(path);
    let io = |what: &str, e| Error::io(what, e).in_file(&shown);
    let before = storage
        .stat_now(path)
        .map_err(|e| io("opening for the key change", e))?;
    let object = storage
        .open(path)
        .map_err(|e| io("opening for the key change", e))?;
    let size = object.size().map_err(|e| io("opening for the key change", e))?;
    let (container, data_key) =
        Container::from_source_with_data_key(object, key).map_err(|e| e.in_file(&shown))?;
    let header = container.info().header.clone();
    let active = container.info().slots.clone();
    let slots = changed_slots(
        Path::new(&shown),
        &active,
        changes,
        &data_key,
        &header.container_id,
        entropy,
    )?;
    let area = SlotArea {
        sequence: active.sequence + 1,
        slots: slots.clone(),
    }
    .encode();
    let source = container.source();
    let mut out = storage.create(path, crate::storage::WriteOptions::overwrite(true))?;
    let mut chunk = vec![0u8; COPY_CHUNK];
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(COPY_CHUNK as u64) as usize;
        source
            .read_exact_at(&mut chunk[..n], at)
            .map_err(|e| io("reading for the key change", e))?;
        if at == 0 {
            // The first chunk holds the whole header: both areas get the new set.
            chunk[SLOT_AREA_A..SLOT_AREA_A + SLOT_AREA_LEN].copy_from_slice(&area);
            chunk[SLOT_AREA_B..SLOT_AREA_B + SLOT_AREA_LEN].copy_from_slice(&area);
        }
        out.write_all(&chunk[..n])
            .map_err(|e| io("writing the key change", e))?;
        at += n as u64;
    }
    let now = storage
        .stat_now(path)
        .map_err(|e| io("checking before the key change", e))?;
    if now.version != before.version {
        return Err(io(
            "replacing",
            std::io::Error::other("the object changed during the key change; nothing was replaced"),
        ));
    }
    out.commit()?;
    Ok(slots)
}

/// Bytes copied at a time by [`rekey_in`] (at least the header).
const COPY_CHUNK: usize = 8 << 20;
const _: () = assert!(COPY_CHUNK >= HEADER_LEN);

/// Which area is active: the one `Header::active_slots` picked.
fn active_area_offset(header: &Header, active: &SlotArea) -> usize {
    match SlotArea::decode(&header.slot_area_a) {
        Some(a) if a == *active => SLOT_AREA_A,
        _ => SLOT_AREA_B,
    }
}

const _: () = assert!(SLOT_AREA_B + SLOT_AREA_LEN <= HEADER_LEN);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::writer::PackOptions;
    use crate::core::crypto::{KeyFileKey, Passphrase, SystemEntropy, SLOT_KDF_RUNS};

    /// The container is opened and its data key unwrapped with one passphrase KDF: opening then
    /// unwrapping again ran it twice (a second or more, at real costs, for nothing).
    #[test]
    fn a_rekey_runs_the_passphrase_kdf_once() {
        let dir = tempfile::tempdir().unwrap();
        let (input, path) = (dir.path().join("in"), dir.path().join("c.qltx"));
        std::fs::write(&input, vec![5u8; 10_000]).unwrap();
        let pass = Key::Passphrase(Passphrase::new("correct horse"));
        let opts = PackOptions {
            kdf_iterations: 1000,
            ..PackOptions::default()
        };
        crate::pack(
            &input,
            &path,
            &[Recipient::try_from(&pass).unwrap()],
            &opts,
            false,
        )
        .unwrap();

        let file_key = Key::KeyFile(KeyFileKey::from_bytes([9; 32]));
        let add = [SlotChange::Add {
            key: Recipient::try_from(&file_key).unwrap(),
            iterations: 0,
        }];
        SLOT_KDF_RUNS.with(|runs| runs.set(0));
        let slots = rekey(&path, &pass, &add, &SystemEntropy).unwrap();
        assert_eq!(
            SLOT_KDF_RUNS.with(|runs| runs.get()),
            1,
            "one KDF for open and unwrap"
        );
        assert_eq!(slots.len(), 2);

        // The new slot wraps the right data key: the key file alone opens the container.
        let c = Container::open(&path, &file_key).unwrap();
        assert_eq!(c.read_block(0, true).unwrap(), vec![5u8; 10_000]);
    }
}
