//! Changing a container's key slots in place, crash-safely. The new slot set is written to the
//! *inactive* slot area with the next sequence number and synced; only then does it win, because
//! readers take the valid area with the higher sequence. A crash before or during the write leaves
//! the old area in force (a torn area fails its checksum); a crash after it leaves the new one.
//! Block data, the footer and every other header byte are never rewritten.

use crate::crypto::{wrap_slot, Entropy, Key};
use crate::format::{
    Header, KeySlot, SlotArea, HEADER_LEN, MAX_SLOTS, SLOT_AREA_A, SLOT_AREA_B, SLOT_AREA_LEN,
};
use crate::reader::{unlock_data_key, Container};
use crate::{Error, Result};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One change to a container's key slots.
#[derive(Debug)]
pub enum SlotChange {
    /// Add a slot for this key (passphrase slots use `iterations`).
    Add { key: Key, iterations: u32 },
    /// Remove the slot at this position (as `qeltrix rekey --list` numbers them).
    Remove(usize),
}

/// Test-only crash points: with `QELTRIX_TEST_CRASH_AT` set to one of these names, `rekey` kills
/// itself with SIGKILL there, so tests can check every intermediate state on disk.
const CRASH_ENV: &str = "QELTRIX_TEST_CRASH_AT";

fn crash_point(name: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == name) {
        // SAFETY: raise(2) with a valid signal number has no memory-safety preconditions.
        unsafe {
            libc::raise(libc::SIGKILL);
        }
    }
}

/// Applies `changes` to the container at `path`, opening it with `key`. Returns the new slot list.
pub fn rekey(path: &Path, key: &Key, changes: &[SlotChange], entropy: &dyn Entropy) -> Result<Vec<KeySlot>> {
    // Opening checks the whole structure and the footer MAC with this key before anything changes.
    let container = Container::open(path, key)?;
    let header = container.info().header.clone();
    let active = container.info().slots.clone();
    let cid = header.container_id;
    let data_key = unlock_data_key(&active, &cid, key).map_err(|e| e.in_file(path))?;
    drop(container);

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
                let slot = wrap_slot(new, &data_key, &cid, *iterations, purpose, entropy)
                    .map_err(|e| Error::InvalidArgument(e).in_file(path))?;
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
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("opening for the key change", e).in_file(path))?;
    let io = |what: &str, e| Error::io(what, e).in_file(path);
    crash_point("before-write");
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == "torn-write") {
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
    Ok(slots)
}

/// Which area is active: the one `Header::active_slots` picked.
fn active_area_offset(header: &Header, active: &SlotArea) -> usize {
    match SlotArea::decode(&header.slot_area_a) {
        Some(a) if a == *active => SLOT_AREA_A,
        _ => SLOT_AREA_B,
    }
}

const _: () = assert!(SLOT_AREA_B + SLOT_AREA_LEN <= HEADER_LEN);
