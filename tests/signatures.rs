//! Signed containers (`docs/FORMAT.md`, "Signatures"; `docs/CAPABILITIES.md`): `keygen
//! --ed25519`, `pack --sign`, `qeltrix sign`, `verify --signer`, `info`; through the real binary,
//! and a flip of every byte of a small signed container through the library.

mod common;

use common::*;
use qeltrix::crypto::{SeededEntropy, SignerKey};
use qeltrix::format::{FormatVersion, SIGNATURE_AT, SIGNATURE_LEN};
use qeltrix::sign::{check_signer, signature_status, SignatureStatus};
use qeltrix::ContainerInfo;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::sync::Arc;

/// A folder with data key `key`, signing keys `alice.key` and `bob.key`, and `plain.bin` (five
/// 4 KiB blocks and a bit). Returns the folder and Alice's and Bob's public signer strings.
fn setup() -> (Work, String, String) {
    let w = Work::with_key();
    let alice = w.ok("keygen --ed25519 -o alice.key").trim().to_string();
    let bob = w.ok("keygen --ed25519 -o bob.key").trim().to_string();
    w.write("plain.bin", &random_bytes(5 * 4 * KIB + 100, 3));
    (w, alice, bob)
}

/// `keygen --ed25519` writes a 0600 key file and prints the public signer string, which the file
/// names too; `-o -` prints the key and the signer goes to stderr.
#[test]
fn keygen_ed25519_writes_a_private_key_and_prints_its_signer() {
    let (w, alice, bob) = setup();
    assert!(
        alice.starts_with("qeltrix-ed25519:") && alice.len() == 16 + 64,
        "{alice}"
    );
    assert_ne!(alice, bob);
    let mode = fs::metadata(w.path("alice.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = String::from_utf8(w.read("alice.key")).unwrap();
    assert!(text.contains(&alice), "{text}");
    let out = w.cmd("keygen --ed25519 -o -").output().unwrap();
    assert_code(&out, 0, "keygen --ed25519 -o -");
    let key = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(key.contains("QELTRIX-ED25519-SIGNING-KEY:"), "{key}");
    assert!(stderr_of(&out).contains("qeltrix-ed25519:"));
    // Refused: both kinds at once; an existing file without --force.
    w.fails("keygen --ed25519 --x25519 -o x.key", 2);
    w.fails("keygen --ed25519 -o alice.key", 2);
}

/// `pack --sign` signs; `verify --signer` accepts the signer (as a string, a key file or a
/// file holding the string) with no key and no prompt, and with a key runs the keyed check too;
/// `info` names the signer, as text and JSON.
#[test]
fn a_signed_pack_verifies_against_its_signer_without_a_key() {
    let (w, alice, _) = setup();
    w.ok("pack -q --block-size 4 --key-file key --sign alice.key plain.bin c.qltx");
    let out = w.ok(&format!("verify --signer {alice} c.qltx"));
    assert!(
        out.contains(&format!("signed by {alice}")) && out.contains("without a key"),
        "{out}"
    );
    w.ok("verify --signer alice.key c.qltx");
    w.write("alice.pub", format!("{alice}\n").as_bytes());
    w.ok("verify --signer alice.pub c.qltx");
    let keyed = w.ok("verify --signer alice.pub --key-file key c.qltx");
    assert!(keyed.contains("authenticated"), "{keyed}");
    let info = w.ok("info c.qltx");
    assert!(
        info.contains(&format!("Signed by:      {alice} (signature valid)")),
        "{info}"
    );
    let json: serde_json::Value = serde_json::from_str(&w.ok("info --json c.qltx")).unwrap();
    assert_eq!(json["signature"], "valid");
    assert_eq!(json["signer"], alice.as_str());
    // The data still opens as usual.
    w.ok("unpack -q --key-file key c.qltx back.bin");
    assert_eq!(w.read("back.bin"), w.read("plain.bin"));
}

/// The refusals of `verify --signer`, each exit 3 with the reason: another signer, no signature,
/// a flipped signature byte, a signer's key swapped in the record.
#[test]
fn verify_signer_refuses_other_signers_unsigned_and_tampered_signatures() {
    let (w, alice, bob) = setup();
    w.ok("pack -q --block-size 4 --key-file key --sign alice.key plain.bin c.qltx");
    let e = w.fails(&format!("verify --signer {bob} c.qltx"), 3);
    assert!(e.contains(&format!("signed by {alice}, not by {bob}")), "{e}");

    w.ok("pack -q --block-size 4 --key-file key plain.bin unsigned.qltx");
    let e = w.fails(&format!("verify --signer {alice} unsigned.qltx"), 3);
    assert!(e.contains("not signed"), "{e}");
    let info = w.ok("info --json unsigned.qltx");
    assert!(info.contains("\"signature\": \"none\""), "{info}");

    let bytes = w.read("c.qltx");
    // A byte of the signature itself (record bytes 48..112).
    let mut flipped = bytes.clone();
    flipped[SIGNATURE_AT + 60] ^= 0x01;
    w.write("flipped.qltx", &flipped);
    let e = w.fails(&format!("verify --signer {alice} flipped.qltx"), 3);
    assert!(e.contains("does not match"), "{e}");
    let info = w.ok("info flipped.qltx");
    assert!(info.contains("Signature:      INVALID"), "{info}");
    // Bob's public key put in Alice's record: the signature is not Bob's.
    let bob_key = SignerKey::parse(&String::from_utf8(w.read("bob.key")).unwrap()).unwrap();
    let mut swapped = bytes.clone();
    swapped[SIGNATURE_AT + 16..SIGNATURE_AT + 48].copy_from_slice(bob_key.public().as_bytes());
    w.write("swapped.qltx", &swapped);
    let e = w.fails(&format!("verify --signer {bob} swapped.qltx"), 3);
    assert!(e.contains("does not match"), "{e}");
    // A damaged record never stops the data from opening.
    w.ok("unpack -q --key-file key flipped.qltx back.bin");
    // Malformed signers are usage errors.
    let e = w.fails("verify --signer qeltrix-ed25519:00 c.qltx", 2);
    assert!(e.contains("signer"), "{e}");
    w.fails("verify --signer no-such-file c.qltx", 2);
}

/// Blocks swapped under a valid signature: the signature (over the footer) still matches, and
/// `verify --signer` fails on the blocks, naming one.
#[test]
fn blocks_swapped_under_a_valid_signature_fail_verify_signer() {
    let (w, alice, _) = setup();
    w.ok("pack -q --block-size 4 --compress never --key-file key --sign alice.key plain.bin c.qltx");
    let info = ContainerInfo::read(&File::open(w.path("c.qltx")).unwrap()).unwrap();
    let (a, b) = (info.footer.entries[1], info.footer.entries[2]);
    assert_eq!(a.len, b.len);
    let bytes = w.read("c.qltx");
    let mut swapped = bytes.clone();
    let (ra, rb) = (
        a.offset as usize..(a.offset + a.len) as usize,
        b.offset as usize..(b.offset + b.len) as usize,
    );
    swapped[ra.clone()].copy_from_slice(&bytes[rb.clone()]);
    swapped[rb].copy_from_slice(&bytes[ra]);
    w.write("swapped.qltx", &swapped);
    let e = w.fails(&format!("verify --signer {alice} swapped.qltx"), 3);
    assert!(e.contains("block 1"), "{e}");
}

/// `qeltrix sign` signs an existing container in place, writing nothing but the signature
/// record; a key change keeps the signature; re-signing replaces the signer; a whole vault folder is signed at once; a format-1
/// container is refused with advice, and so is an object-store path.
#[test]
fn sign_adds_a_signature_in_place_touching_nothing_else() {
    let (w, alice, bob) = setup();
    w.ok("pack -q --block-size 4 --key-file key plain.bin c.qltx");
    let before = w.read("c.qltx");
    let out = w.ok("sign -k alice.key c.qltx");
    assert!(out.contains(&alice), "{out}");
    let after = w.read("c.qltx");
    assert_eq!(before.len(), after.len());
    let changed: Vec<usize> = (0..before.len()).filter(|&i| before[i] != after[i]).collect();
    assert!(!changed.is_empty());
    assert!(
        changed
            .iter()
            .all(|i| (SIGNATURE_AT..SIGNATURE_AT + SIGNATURE_LEN).contains(i)),
        "signing changed bytes outside the signature record"
    );
    w.ok(&format!("verify --signer {alice} c.qltx"));
    // A key change rewrites only the key-slot areas, which are not signed: still Alice's.
    w.write_key("key2", 8);
    w.ok("rekey -q c.qltx --key-file key --add-key-file key2");
    w.ok(&format!("verify --signer {alice} --key-file key2 c.qltx"));
    w.ok("sign -q -k bob.key c.qltx");
    w.ok(&format!("verify --signer {bob} c.qltx"));
    w.fails(&format!("verify --signer {alice} c.qltx"), 3);

    fs::create_dir(w.path("vault")).unwrap();
    w.ok("pack -q --key-file key plain.bin vault/a.qltx");
    w.ok("pack -q --key-file key plain.bin vault/b.qltx");
    let out = w.ok("sign -k alice.key vault");
    assert_eq!(out.matches("signed: ").count(), 2, "{out}");
    let out = w.ok(&format!("verify --signer {alice} vault"));
    assert!(out.contains("2 OK, 0 failed"), "{out}");

    w.ok("pack -q --format 1 --key-file key plain.bin v1.qltx");
    let e = w.fails("sign -k alice.key v1.qltx", 2);
    assert!(e.contains("format version 1") && e.contains("reencrypt"), "{e}");
    let e = w.fails("sign -k alice.key s3://bucket/c.qltx", 2);
    assert!(e.contains("object store"), "{e}");
    w.fails("sign -k key c.qltx", 2); // a data key file is not a signing key
}

/// `pack --sign` needs a container it can go back to: refused to stdout, and for format 1.
#[test]
fn pack_sign_is_refused_where_it_cannot_be_written() {
    let (w, _, _) = setup();
    let out = w
        .cmd("pack --key-file key --sign alice.key plain.bin -")
        .output()
        .unwrap();
    assert_code(&out, 2, "pack --sign to stdout");
    assert!(stderr_of(&out).contains("qeltrix sign"), "{}", stderr_of(&out));
    let e = w.fails(
        "pack -q --format 1 --key-file key --sign alice.key plain.bin v1.qltx",
        2,
    );
    assert!(e.contains("format version 1"), "{e}");
    assert!(!w.exists("v1.qltx"));
}

/// Keyless verification of a signed container detects a flip of any one bit in every byte the
/// signature and the keyless check cover: the signature record, the bound header fields, the
/// header totals, every block and the footer and trailer. (The key-slot areas are outside by
/// design: a key change must not void a signature; a slot flip is caught with the key.)
#[test]
fn a_flip_of_any_covered_byte_fails_the_signed_keyless_check() {
    let key = SignerKey::generate(&SeededEntropy([5; 32]));
    let public = key.public();
    let opts = qeltrix::PackOptions {
        signer: Some(key),
        entropy: Arc::new(SeededEntropy([6; 32])),
        ..in_version(
            opts(qeltrix::CipherId::Aes256Gcm, 4096, qeltrix::CompressMode::Never),
            FormatVersion::V2,
        )
    };
    let plain = random_bytes(2 * 4096 + 300, 9);
    let good = pack_seekable(&plain, &[key_file_key(1)], &opts);
    let check = |bytes: &Vec<u8>| -> qeltrix::Result<()> {
        let info = ContainerInfo::read(bytes)?;
        check_signer(bytes, &info, &public)?;
        qeltrix::ops::verify_keyless(bytes, &info, &|_| {}).map(drop)
    };
    check(&good).expect("the signed container passes");
    let info = ContainerInfo::read(&good).unwrap();
    assert!(matches!(signature_status(&good, &info).unwrap(), SignatureStatus::Valid(k) if k == public));

    let covered = (0..24)
        .chain(24..56)
        .chain(56..72)
        .chain(SIGNATURE_AT..SIGNATURE_AT + SIGNATURE_LEN)
        .chain(4096..good.len());
    let mut flips = 0;
    for at in covered {
        let mut bad = good.clone();
        bad[at] ^= 1 << (at % 8);
        assert!(check(&bad).is_err(), "a flip at byte {at} went unnoticed");
        flips += 1;
    }
    assert!(flips > 9000, "{flips}");
}

/// An edit in place (the read-write mount's commit) drops the signature rather than leaving one
/// that no longer matches, even one added while the editor had the file open; a compaction
/// (a new footer) drops it too.
#[test]
fn an_edit_in_place_or_a_compaction_drops_the_signature() {
    use qeltrix::edit::{EditOptions, Editor, MemoryBudget};
    let (w, alice, _) = setup();
    let path = w.path("big.qltx");
    let opts = Arc::new(EditOptions {
        pack: qeltrix::PackOptions {
            block_size: 4096,
            workers: 1,
            ..Default::default()
        },
        recipients: vec![qeltrix::Recipient::try_from(key_file_key(7)).unwrap()],
        scratch: w.path(""),
        budget: MemoryBudget::new(1 << 20),
        file_limit: 1 << 20,
        in_place_min: 16 << 10,
        in_place_format: qeltrix::format::FormatVersion::V3,
        slack_while_open: 1,
    });
    let meta = qeltrix::FileMeta {
        name: b"big.bin".to_vec(),
        mode: 0o644,
        mtime_sec: 0,
        mtime_nsec: 0,
    };
    let mut editor = Editor::new_file(opts, meta);
    editor.write_at(0, &random_bytes(64 * KIB, 4)).unwrap();
    editor.commit(&path, true).unwrap();
    w.ok("sign -q -k alice.key big.qltx");
    w.ok(&format!("verify --signer {alice} big.qltx"));
    editor.write_at(100, b"edited").unwrap();
    editor.commit(&path, true).unwrap();
    drop(editor);
    let info = ContainerInfo::read(&File::open(&path).unwrap()).unwrap();
    assert_eq!(info.version(), FormatVersion::V3, "edited in place");
    assert_eq!(
        info.header.signature, [0; SIGNATURE_LEN],
        "the edit dropped the signature"
    );
    let e = w.fails(&format!("verify --signer {alice} big.qltx"), 3);
    assert!(e.contains("not signed"), "{e}");
    // Signed again, then compacted to version 2: the new footer is unsigned.
    w.ok("sign -q -k alice.key big.qltx");
    w.ok("compact -q --key-file key big.qltx");
    let e = w.fails(&format!("verify --signer {alice} big.qltx"), 3);
    assert!(e.contains("not signed"), "{e}");
    w.ok("unpack -q --key-file key big.qltx back.bin");
    let mut back = vec![0u8; 6];
    File::open(w.path("back.bin"))
        .unwrap()
        .read_exact_at(&mut back, 100)
        .unwrap();
    assert_eq!(&back, b"edited");
}
