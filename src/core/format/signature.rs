//! The signature record of a signed container (header bytes 896..1024, versions 2 and 3) and the
//! message it signs (`docs/FORMAT.md`, "Signatures"). Layout only: the signing is
//! `crypto::SignerKey`'s, and `container::sign` reads and writes the bytes.

use super::{array, FormatVersion};

/// Header offset of the signature record.
pub const SIGNATURE_AT: usize = 896;
/// Length of the signature record.
pub const SIGNATURE_LEN: usize = 128;
const MAGIC: &[u8; 8] = b"QLTXSIG1";
/// The record's algorithm byte for Ed25519 (RFC 8032, pure, no pre-hash).
pub const ALG_ED25519: u8 = 1;
/// The signed message's first bytes (20 ASCII bytes, no terminator).
const DOMAIN: &[u8; 20] = b"qeltrix signature v1";

/// A decoded signature record: who signed, and the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureRecord {
    /// The signer's Ed25519 public key (not yet checked to be a curve point).
    pub public: [u8; 32],
    /// The Ed25519 signature of [`signed_message`].
    pub signature: [u8; 64],
}

impl SignatureRecord {
    /// The 128 record bytes: magic, algorithm, reserved, public key, signature, reserved.
    pub fn encode(&self) -> [u8; SIGNATURE_LEN] {
        let mut b = [0u8; SIGNATURE_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8] = ALG_ED25519;
        b[16..48].copy_from_slice(&self.public);
        b[48..112].copy_from_slice(&self.signature);
        b
    }

    /// The record in `b`: `Ok(None)` when all 128 bytes are zero (not signed), an error naming
    /// what is wrong when they are neither zero nor a record this build knows. A bad record never
    /// makes the container unreadable: only a signature check fails on it.
    pub fn decode(b: &[u8; SIGNATURE_LEN]) -> Result<Option<Self>, String> {
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if &b[0..8] != MAGIC {
            return Err(format!(
                "header bytes {SIGNATURE_AT}..{} hold no signature record (bad magic)",
                SIGNATURE_AT + SIGNATURE_LEN
            ));
        }
        if b[8] != ALG_ED25519 {
            return Err(format!("unknown signature algorithm {}", b[8]));
        }
        if b[9..16].iter().chain(&b[112..128]).any(|&x| x != 0) {
            return Err("reserved bytes of the signature record are not zero".into());
        }
        Ok(Some(SignatureRecord {
            public: array(b, 16),
            signature: array(b, 48),
        }))
    }
}

/// True for the versions that can be signed: those with a ciphertext root (2 and 3).
pub fn can_sign(version: FormatVersion) -> bool {
    version != FormatVersion::V1
}

/// The message a signer signs:
/// `"qeltrix signature v1" ‖ header[0..24] ‖ header[56..72] ‖ u8 algorithm ‖ public key (32) ‖
/// u64 footer_offset ‖ u64 footer_size ‖ root (32) ‖ BLAKE3(footer, all footer_size bytes)`.
/// `bound_fields` is [`Header::bound_fields`](super::Header::bound_fields) (40 bytes); `footer`
/// the current footer's bytes, MAC included, whose root is `root`.
pub fn signed_message(
    bound_fields: &[u8],
    public: &[u8; 32],
    footer_offset: u64,
    footer: &[u8],
    root: &[u8; 32],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + bound_fields.len() + 1 + 32 + 16 + 64);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(bound_fields);
    m.push(ALG_ED25519);
    m.extend_from_slice(public);
    m.extend_from_slice(&footer_offset.to_le_bytes());
    m.extend_from_slice(&(footer.len() as u64).to_le_bytes());
    m.extend_from_slice(root);
    m.extend_from_slice(blake3::hash(footer).as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_zero_bytes_mean_unsigned() {
        let r = SignatureRecord {
            public: [3; 32],
            signature: [4; 64],
        };
        assert_eq!(SignatureRecord::decode(&r.encode()).unwrap(), Some(r));
        assert_eq!(SignatureRecord::decode(&[0; SIGNATURE_LEN]).unwrap(), None);
    }

    #[test]
    fn a_damaged_record_is_named_not_trusted() {
        let good = SignatureRecord {
            public: [3; 32],
            signature: [4; 64],
        }
        .encode();
        for (at, what) in [(0, "magic"), (8, "algorithm"), (9, "reserved"), (127, "reserved")] {
            let mut b = good;
            b[at] ^= 0x40;
            let e = SignatureRecord::decode(&b).expect_err(what);
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn the_message_is_laid_out_as_documented() {
        let m = signed_message(&[1; 40], &[2; 32], 0x1122, b"footer", &[5; 32]);
        assert_eq!(m.len(), 20 + 40 + 1 + 32 + 8 + 8 + 32 + 32);
        assert_eq!(&m[..20], b"qeltrix signature v1");
        assert_eq!(m[60], ALG_ED25519);
        assert_eq!(&m[93..101], &0x1122u64.to_le_bytes());
        assert_eq!(&m[101..109], &6u64.to_le_bytes());
        assert_eq!(&m[141..], blake3::hash(b"footer").as_bytes());
    }
}
