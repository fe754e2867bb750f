//! Signed containers (`docs/FORMAT.md`, "Signatures"): what a container's signature says, the
//! check against an expected signer, and signing a local container in place.
//!
//! A signature covers the header's bound fields, the current footer (every block's hash, offset
//! and metadata copy, the sealed file record) and its ciphertext root, so checking it needs no
//! key and reads only the header and the footer. That the blocks are the ones the footer names
//! is the keyless check's part ([`crate::ops::verify_keyless`]): `verify --signer` runs both.

use crate::container::reader::ContainerInfo;
use crate::container::writer::sign_record;
use crate::core::crypto::{SignerKey, SignerPublic};
use crate::core::format::{can_sign, signed_message, SignatureRecord, SIGNATURE_AT, SIGNATURE_LEN};
use crate::storage::ReadAt;
use crate::{Error, Result};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What a container's signature record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureStatus {
    /// No signature record (all zero), or format version 1, which cannot be signed.
    Unsigned,
    /// Signed by this key, and the signature matches the header and the current footer.
    Valid(SignerPublic),
    /// A signature that proves nothing: why, and the key it names if it names a valid one.
    Invalid {
        /// The public key in the record, when it is a valid Ed25519 key.
        signer: Option<SignerPublic>,
        /// Why it fails: damaged record, bad key, or a signature that does not match.
        reason: String,
    },
}

impl SignatureStatus {
    /// The signer a valid signature names.
    pub fn signer(&self) -> Option<&SignerPublic> {
        match self {
            SignatureStatus::Valid(k) => Some(k),
            _ => None,
        }
    }
}

/// The current footer's bytes, MAC included (the structure was checked when `info` was read, so
/// their length is within the file).
fn footer_bytes(source: &dyn ReadAt, info: &ContainerInfo) -> Result<Vec<u8>> {
    let mut footer = vec![0u8; info.trailer.footer_size as usize];
    source
        .read_exact_at(&mut footer, info.trailer.footer_offset)
        .map_err(|e| Error::io("reading the footer", e))?;
    Ok(footer)
}

/// The signature status of the container `info` was read from (`source`). Reads the footer
/// again; errors are I/O errors only: a bad signature is [`SignatureStatus::Invalid`].
pub fn signature_status(source: &dyn ReadAt, info: &ContainerInfo) -> Result<SignatureStatus> {
    let (Some(root), true) = (info.root(), can_sign(info.version())) else {
        return Ok(SignatureStatus::Unsigned);
    };
    let record = match SignatureRecord::decode(&info.header.signature) {
        Ok(None) => return Ok(SignatureStatus::Unsigned),
        Ok(Some(r)) => r,
        Err(reason) => return Ok(SignatureStatus::Invalid { signer: None, reason }),
    };
    let Ok(signer) = SignerPublic::from_bytes(record.public) else {
        return Ok(SignatureStatus::Invalid {
            signer: None,
            reason: "the signature record's public key is not an Ed25519 key".into(),
        });
    };
    // A signature covers a footer's blocks; version 4's patches over them it does not cover,
    // and no signer signs a container that has some (writing a patch removes the signature).
    if info.patch_count() > 0 {
        return Ok(SignatureStatus::Invalid {
            signer: Some(signer),
            reason: "the container has patches written after its footer, which no signature covers".into(),
        });
    }
    let footer = footer_bytes(source, info)?;
    let message = signed_message(
        &info.header.bound_fields(),
        &record.public,
        info.trailer.footer_offset,
        &footer,
        &root,
    );
    Ok(if signer.verifies(&message, &record.signature) {
        SignatureStatus::Valid(signer)
    } else {
        SignatureStatus::Invalid {
            signer: Some(signer),
            reason: "the signature does not match the header and footer: the container was \
                     changed after it was signed, or the signature was forged"
                .into(),
        }
    })
}

/// Checks that the container is signed by `expected` and that the signature matches. The error
/// ([`Error::Signature`]) says whether it is unsigned, signed by another key, or not matching.
pub fn check_signer(source: &dyn ReadAt, info: &ContainerInfo, expected: &SignerPublic) -> Result<()> {
    match signature_status(source, info)? {
        SignatureStatus::Valid(k) if k == *expected => Ok(()),
        SignatureStatus::Valid(k) => Err(Error::Signature(format!("signed by {k}, not by {expected}"))),
        SignatureStatus::Unsigned if !can_sign(info.version()) => Err(Error::Signature(
            "format version 1 cannot be signed, so it is not signed by anyone".into(),
        )),
        SignatureStatus::Unsigned => Err(Error::Signature("the container is not signed".into())),
        SignatureStatus::Invalid { signer, reason } => Err(Error::Signature(match signer {
            Some(k) if k != *expected => format!("{reason} (and it names {k}, not {expected})"),
            _ => reason,
        })),
    }
}

/// Signs the local container at `path` in place with `key`, replacing any signature: writes the
/// 128-byte signature record in the header and syncs it. No block and no other header byte is
/// written, and no data key is needed. The container is checked first (structure and root), under
/// an exclusive `flock` (as a key change takes). Returns the signer's public key.
///
/// A crash during the write leaves the container readable (the record is never read to open it)
/// with a signature that fails its check: sign again.
pub fn sign_in_place(path: &Path, key: &SignerKey) -> Result<SignerPublic> {
    let io = |what: &str, e| Error::io(what, e).in_file(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io("opening for signing", e))?;
    file.lock().map_err(|e| io("locking for signing", e))?;
    let info = ContainerInfo::read(&file).map_err(|e| e.in_file(path))?;
    let Some(root) = info.root().filter(|_| can_sign(info.version())) else {
        return Err(Error::InvalidArgument(
            "format version 1 has no ciphertext root to sign; upgrade it with `qeltrix reencrypt` \
             (writes version 2), then sign the new container"
                .into(),
        )
        .in_file(path));
    };
    if info.patch_count() > 0 {
        return Err(Error::InvalidArgument(format!(
            "the container has {} patches from a read-write mount, which a signature would not \
             cover: run `qeltrix compact` on it first, then sign",
            info.patch_count()
        ))
        .in_file(path));
    }
    let footer = footer_bytes(&file, &info).map_err(|e| e.in_file(path))?;
    let record = sign_record(key, &info.header, info.trailer.footer_offset, &footer, &root);
    debug_assert_eq!(record.len(), SIGNATURE_LEN);
    file.write_all_at(&record, SIGNATURE_AT as u64)
        .map_err(|e| io("writing the signature", e))?;
    file.sync_data().map_err(|e| io("syncing the signature", e))?;
    Ok(key.public())
}
