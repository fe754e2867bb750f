//! The security review's key findings, each as the attack that worked: a removed slot brought
//! back by editing a checksum, a header that chooses an enormous KDF cost, concurrent `passwd` and
//! `rekey` runs that lost a change, a world-writable vault under `umask 000`, and a passphrase
//! left readable in a daemon's `/proc/PID/environ`.
//!
//! Real `qeltrix` processes on real files, each test in its own temporary folder.

mod common;
use common::{
    contains, daemon_pid, fuse_available, line_where, mode_of as mode, random_bytes, stderr_of as stderr,
    wait_for_output, Captured, DaemonMount, Reaped, Work,
};
use qeltrix::crypto::{KdfLimits, Passphrase};
use qeltrix::format::{
    Header, KeySlot, SlotArea, SlotKind, HEADER_LEN, SLOT_AREA_A, SLOT_AREA_B, SLOT_AREA_LEN,
};
use qeltrix::{keyring, Container, Error, Key};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Output, Stdio};

const PASSPHRASE_ENV: &str = "QELTRIX_PASSPHRASE";

fn areas(bytes: &[u8]) -> [Option<SlotArea>; 2] {
    let h = Header::decode(&bytes[..HEADER_LEN]).unwrap();
    [SlotArea::decode(&h.slot_area_a), SlotArea::decode(&h.slot_area_b)]
}

fn active(bytes: &[u8]) -> SlotArea {
    Header::decode(&bytes[..HEADER_LEN])
        .unwrap()
        .active_slots()
        .unwrap()
}

/// Flips one byte of the checksum (the area's last byte) of the area at `offset`.
fn break_checksum(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset + SLOT_AREA_LEN - 1] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------- 1. removed slots

/// The review's steps: pack with a key file and passphrase P, remove P's slot, flip a byte of
/// the active area's checksum. P must not open the container, and no byte of P's wrapped key or
/// salt may remain anywhere in the file; the same after every further rekey.
#[test]
fn a_removed_slot_leaves_no_byte_behind_and_cannot_be_revived() {
    let w = Work::new();
    let plain = random_bytes(3 * 4096 + 17, 1);
    w.write("data", &plain);
    w.write("p.pass", b"leaked passphrase\n");
    w.write("q.pass", b"second passphrase\n");
    w.ok("keygen -o k.key");
    w.ok(
        "pack data c.qltx --key-file k.key --passphrase-file p.pass --kdf-iterations 1000 --block-size 4 -q",
    );
    let packed = w.read("c.qltx");
    let p_slot: KeySlot = active(&packed).slots[1].clone();
    assert_eq!(p_slot.kind, SlotKind::Passphrase);

    w.ok("rekey c.qltx --key-file k.key --remove-slot 1");
    let after = w.read("c.qltx");
    assert!(
        !contains(&after, &p_slot.wrapped),
        "the removed slot's wrapped key is still in the file"
    );
    assert!(
        !contains(&after, &p_slot.salt),
        "the removed slot's salt is still in the file"
    );
    assert!(
        after[HEADER_LEN..] == packed[HEADER_LEN..],
        "block data must not be rewritten"
    );

    // The attack: whichever area's checksum is broken, the other holds only the key file's slot.
    for offset in [SLOT_AREA_A, SLOT_AREA_B] {
        w.write("attacked.qltx", &after);
        break_checksum(&w.path("attacked.qltx"), offset);
        let err = w.fails("unpack attacked.qltx out --passphrase-file p.pass", 3);
        assert!(
            err.contains("does not open") || err.contains("no passphrase slot"),
            "{err}"
        );
        assert!(!w.path("out").exists());
        w.ok("unpack attacked.qltx out --key-file k.key -q");
        assert!(w.read("out") == plain);
        fs::remove_file(w.path("out")).unwrap();
    }

    // Every later rekey keeps it so: add Q, remove Q, add Q again; no removed slot survives.
    let mut removed = vec![p_slot];
    w.ok("rekey c.qltx --key-file k.key --add-passphrase --new-passphrase-file q.pass --kdf-iterations 1000");
    let q_slot = active(&w.read("c.qltx")).slots[1].clone();
    w.ok("rekey c.qltx --key-file k.key --remove-slot 1");
    removed.push(q_slot);
    w.ok("rekey c.qltx --key-file k.key --add-passphrase --new-passphrase-file q.pass --kdf-iterations 1000");
    let bytes = w.read("c.qltx");
    for slot in &removed {
        assert!(
            !contains(&bytes, &slot.wrapped),
            "a removed slot's wrapped key came back"
        );
    }
    let [a, b] = areas(&bytes);
    assert_eq!(a, b, "both areas hold the slots in force");
    w.ok("unpack c.qltx out --passphrase-file q.pass -q");
    assert!(w.read("out") == plain);
}

/// A container whose inactive area still holds older slots (as earlier builds left them, or a
/// rekey killed between its two writes) is reported, still vulnerable until scrubbed, and
/// `rekey --scrub` clears it.
#[test]
fn a_stale_slot_area_is_reported_and_scrubbed() {
    let w = Work::new();
    w.write("data", &random_bytes(5000, 2));
    w.write("p.pass", b"leaked passphrase\n");
    w.ok("keygen -o k.key");
    w.ok("pack data c.qltx --key-file k.key --passphrase-file p.pass --kdf-iterations 1000 -q");
    let packed = w.read("c.qltx");
    let p_slot = active(&packed).slots[1].clone();
    w.ok("rekey c.qltx --key-file k.key --remove-slot 1");
    // What an earlier build left: area A still at sequence 1 with P's slot.
    let mut stale = w.read("c.qltx");
    stale[SLOT_AREA_A..SLOT_AREA_A + SLOT_AREA_LEN]
        .copy_from_slice(&packed[SLOT_AREA_A..SLOT_AREA_A + SLOT_AREA_LEN]);
    w.write("c.qltx", &stale);

    let listed = w.ok("rekey c.qltx --list");
    assert!(listed.contains("--scrub"), "{listed}");
    let info = w.ok("info c.qltx");
    assert!(info.contains("--scrub"), "{info}");
    w.fails("unpack c.qltx out --passphrase-file p.pass", 3);

    w.ok("rekey c.qltx --key-file k.key --scrub");
    let scrubbed = w.read("c.qltx");
    assert!(!contains(&scrubbed, &p_slot.wrapped));
    let listed = w.ok("rekey c.qltx --list");
    assert!(!listed.contains("--scrub"), "{listed}");
    break_checksum(&w.path("c.qltx"), SLOT_AREA_B);
    w.fails("unpack c.qltx out --passphrase-file p.pass", 3);
    assert!(!w.path("out").exists());
}

// ---------------------------------------------------------------- 2. KDF cost

/// Writes `slots` into both slot areas of the container at `path` (a planted header).
fn plant_slots(path: &Path, slots: Vec<KeySlot>) {
    let area = SlotArea { sequence: 99, slots }.encode();
    let mut bytes = fs::read(path).unwrap();
    bytes[SLOT_AREA_A..SLOT_AREA_A + SLOT_AREA_LEN].copy_from_slice(&area);
    bytes[SLOT_AREA_B..SLOT_AREA_B + SLOT_AREA_LEN].copy_from_slice(&area);
    fs::write(path, bytes).unwrap();
}

fn costly_slot(iterations: u32, fill: u8) -> KeySlot {
    KeySlot {
        kind: SlotKind::Passphrase,
        param: iterations,
        salt: [fill; 32],
        nonce: [fill; 12],
        wrapped: [fill; 48],
    }
}

/// Eight passphrase slots of 100,000,000 PBKDF2 iterations each (about two minutes of CPU) are
/// refused without being tried, by the CLI and by the library, with an error naming the cost and
/// the option that would allow it.
#[test]
fn a_header_asking_for_the_maximum_kdf_cost_is_refused_unopened() {
    let w = Work::new();
    w.write("data", &random_bytes(10_000, 3));
    w.write("p.pass", b"any passphrase\n");
    w.ok("keygen -o k.key");
    w.ok("pack data c.qltx --key-file k.key -q");
    plant_slots(
        &w.path("c.qltx"),
        (0..8)
            .map(|i| costly_slot(qeltrix::crypto::MAX_KDF_ITERATIONS, i))
            .collect(),
    );
    for command in [
        "unpack c.qltx out",
        "verify c.qltx",
        "seek c.qltx --offset 0 --length 9",
    ] {
        let err = w.fails(&format!("{command} --passphrase-file p.pass"), 3);
        assert!(err.contains("100000000 PBKDF2 iterations"), "{command}: {err}");
        assert!(err.contains("--max-kdf-iterations"), "{command}: {err}");
    }
    assert!(!w.path("out").exists());

    let err = Container::open(w.path("c.qltx"), &Key::Passphrase(Passphrase::new("any")))
        .err()
        .expect("refused");
    assert!(matches!(err.root(), Error::SlotsRefused { .. }), "{err}");
    assert!(err.to_string().contains("limit of 2000000"), "{err}");
}

/// The cap is the reader's to set: a slot above it is refused with a hint, and the same slot
/// opens once `--max-kdf-iterations` (or its environment variable) allows its cost. Packing below
/// the safe floor, or above the default cap, warns.
#[test]
fn max_kdf_iterations_is_the_readers_choice_and_writers_are_warned() {
    let w = Work::new();
    let plain = random_bytes(6000, 4);
    w.write("data", &plain);
    w.write("p.pass", b"the passphrase\n");
    let err = w.fails(
        "pack data low.qltx --passphrase-file p.pass --kdf-iterations 5000 -q",
        0,
    );
    assert!(err.contains("cheap to guess"), "{err}");
    let err = w.fails(
        "pack data ok.qltx --passphrase-file p.pass --kdf-iterations 600000 -q",
        0,
    );
    assert!(!err.contains("warning"), "{err}");

    let err = w.fails(
        "unpack low.qltx out --passphrase-file p.pass --max-kdf-iterations 4000",
        3,
    );
    assert!(
        err.contains("5000 PBKDF2 iterations") && err.contains("--max-kdf-iterations 5000"),
        "{err}"
    );
    assert!(!w.path("out").exists());
    w.ok("unpack low.qltx out --passphrase-file p.pass --max-kdf-iterations 5000 -q");
    assert!(w.read("out") == plain);
    let out = w
        .cmd("unpack low.qltx out2 --passphrase-file p.pass -q")
        .env("QELTRIX_MAX_KDF_ITERATIONS", "4999")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // The vault keyring obeys the same cap.
    w.ok("init V --passphrase-file p.pass --kdf-iterations 5000");
    let strict = Passphrase::new("the passphrase").with_limits(KdfLimits {
        max_iterations: 4000,
        ..KdfLimits::default()
    });
    let err = keyring::unlock(&w.path("V"), &strict).expect_err("refused");
    assert!(
        matches!(
            err.root(),
            qeltrix::Error::KdfTooCostly {
                iterations: 5000,
                limit: 4000,
                ..
            }
        ),
        "{err}"
    );
    assert!(keyring::unlock(&w.path("V"), &Passphrase::new("the passphrase")).is_ok());
}

/// At most four passphrase slots are tried per container, and a slot a passphrase failed to
/// open is remembered, so reading a planted container again costs no PBKDF2.
#[test]
fn passphrase_slots_tried_are_capped_and_failures_remembered() {
    let w = Work::new();
    let plain = random_bytes(7000, 5);
    w.write("data", &plain);
    let names = ["one", "two", "three", "four", "five"];
    for n in names {
        w.write(&format!("{n}.pass"), format!("passphrase {n}\n").as_bytes());
    }
    w.ok("pack data c.qltx --passphrase-file one.pass --kdf-iterations 1000 -q");
    for n in &names[1..] {
        w.ok(&format!(
            "rekey c.qltx --passphrase-file one.pass --add-passphrase --new-passphrase-file {n}.pass --kdf-iterations 1000"
        ));
    }
    w.ok("unpack c.qltx out --passphrase-file four.pass -q");
    assert!(w.read("out") == plain);
    let err = w.fails("unpack c.qltx out5 --passphrase-file five.pass", 3);
    assert!(err.contains("key slot #4 was not tried"), "{err}");

    let wrong = Passphrase::new("wrong");
    let key = Key::Passphrase(wrong.clone());
    for _ in 0..3 {
        assert!(matches!(
            Container::open(w.path("c.qltx"), &key)
                .err()
                .map(|e| e.root().is_auth_failure()),
            Some(true)
        ));
        assert_eq!(wrong.remembered_failures(), 4, "the four slots tried, once each");
    }
}

// ---------------------------------------------------------------- 4, 5. concurrent key changes

/// Two `passwd` runs at once from the same old passphrase: one wins, the other fails (exit 3)
/// because the old passphrase no longer opens the keyring, and the winner's passphrase is the one
/// in force. Before the lock, both could report success with the loser's passphrase in force.
#[test]
fn concurrent_passwd_runs_never_report_a_passphrase_that_is_not_in_force() {
    let w = Work::new();
    w.write("old.pass", b"old passphrase\n");
    w.write("a.pass", b"passphrase a\n");
    w.write("b.pass", b"passphrase b\n");
    for round in 0..8 {
        let vault = format!("V{round}");
        w.ok(&format!(
            "init {vault} --passphrase-file old.pass --kdf-iterations 100000"
        ));
        let passwd = |new: &str| {
            format!("passwd {vault} --passphrase-file old.pass --new-passphrase-file {new} --kdf-iterations 100000")
        };
        let (ra, rb) = w.race(&passwd("a.pass"), &passwd("b.pass"));
        let opens = |p: &str| keyring::unlock(&w.path(&vault), &Passphrase::new(p)).is_ok();
        let mut winners = 0;
        for (code, pass) in [(ra, "passphrase a"), (rb, "passphrase b")] {
            match code {
                Some(0) => {
                    winners += 1;
                    assert!(
                        opens(pass),
                        "round {round}: {pass} reported success but is not in force"
                    );
                }
                Some(3) => {}
                other => panic!("round {round}: passwd exited {other:?}"),
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one change can win");
        assert!(!opens("old passphrase"));
    }
}

/// Two rekeys at once, each adding a passphrase: both exit 0 and both passphrases open.
#[test]
fn concurrent_rekeys_keep_both_changes() {
    let w = Work::new();
    let plain = random_bytes(5000, 6);
    w.write("data", &plain);
    w.write("a.pass", b"passphrase a\n");
    w.write("b.pass", b"passphrase b\n");
    w.ok("keygen -o k.key");
    for round in 0..8 {
        let name = format!("c{round}.qltx");
        w.ok(&format!("pack data {name} --key-file k.key -q"));
        let rekey = |new: &str| {
            format!("rekey {name} --key-file k.key --add-passphrase --new-passphrase-file {new} --kdf-iterations 100000")
        };
        assert_eq!(
            w.race(&rekey("a.pass"), &rekey("b.pass")),
            (Some(0), Some(0)),
            "round {round}"
        );
        assert_eq!(
            active(&w.read(&name)).slots.len(),
            3,
            "round {round}: a slot was lost"
        );
        for p in ["passphrase a", "passphrase b"] {
            let c = Container::open(w.path(&name), &Key::Passphrase(Passphrase::new(p)));
            assert!(c.is_ok(), "round {round}: {p} does not open");
        }
    }
}

// ---------------------------------------------------------------- 14. modes under umask 000

/// Runs `cmd` with a umask of 000, so only the modes it asks for protect its files.
fn under_umask_000(mut cmd: std::process::Command) -> Output {
    // SAFETY: umask(2) is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn a_vault_made_under_umask_000_is_private() {
    let w = Work::new();
    w.write("p.pass", b"vault passphrase\n");
    let out = under_umask_000(w.std_cmd("init V --passphrase-file p.pass --kdf-iterations 100000"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&w.path("V")), 0o700, "vault folder");
    assert_eq!(mode(&w.path("V/.qeltrix")), 0o700, ".qeltrix");
    assert_eq!(mode(&w.path("V/.qeltrix/keyring")), 0o600, "keyring");
}

// ---------------------------------------------------------------- 12. environment

/// A serving daemon given its passphrase through QELTRIX_PASSPHRASE does not keep it in
/// `/proc/PID/environ`, where any process of the same user can read it.
#[test]
fn a_daemon_does_not_keep_the_passphrase_in_its_environment() {
    let w = Work::new();
    let secret = "environ-secret-7f3a91";
    w.write("p.pass", format!("{secret}\n").as_bytes());
    w.write("data", &random_bytes(3000, 7));
    w.ok("init V --passphrase-file p.pass --kdf-iterations 100000");
    w.ok("pack data V/data.qltx --passphrase-file p.pass -q");
    let mut server = Reaped(
        w.std_cmd("serve V --port 0")
            .env(PASSPHRASE_ENV, secret)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = Captured::start(server.0.stderr.take().unwrap());
    wait_for_output("serve to listen", &mut server.0, &log, |text| {
        line_where(text, |l| l.contains("http://127.0.0.1:"))
    });
    let environ = fs::read(format!("/proc/{}/environ", server.0.id())).unwrap();
    drop(server);
    assert!(
        !contains(&environ, secret.as_bytes()),
        "the passphrase is readable in /proc/PID/environ"
    );
    assert!(!contains(&environ, format!("{PASSPHRASE_ENV}=e").as_bytes()));
}

// ---------------------------------------------------------------- 16. stdout on a bad block

/// `unpack X -` with a bad block 40: stdout gets exactly the plaintext of blocks 0..40, every byte
/// of it authentic, then the command exits 3 naming block 40 (as the README documents). A file
/// output gets nothing at all.
#[test]
fn unpack_to_stdout_stops_at_the_bad_block_with_only_authentic_bytes() {
    let w = Work::new();
    let plain = random_bytes(64 * 4096 + 99, 8);
    w.write("data", &plain);
    w.ok("keygen -o k.key");
    w.ok("pack data c.qltx --key-file k.key --block-size 4 --compress never -q");
    let mut bytes = w.read("c.qltx");
    let block = common::layout(&bytes).blocks[40].clone();
    bytes[block.end - 20] ^= 1;
    w.write("c.qltx", &bytes);
    for workers in ["1", "2", "8"] {
        let out = w.run(&format!(
            "unpack c.qltx - --key-file k.key -q --workers {workers}"
        ));
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).contains("block 40"), "{}", stderr(&out));
        assert_eq!(
            out.stdout.len(),
            40 * 4096,
            "workers {workers}: stdout is the blocks before 40"
        );
        assert!(out.stdout[..] == plain[..40 * 4096]);
    }
    w.fails("unpack c.qltx out --key-file k.key -q", 3);
    assert!(!w.path("out").exists());
}

/// The mount's log, created under `umask 000`, is 0600: it names files and blocks of the vault.
#[test]
fn a_mount_log_made_under_umask_000_is_private() {
    if !fuse_available() {
        return;
    }
    let w = Work::new();
    fs::create_dir(w.path("V")).unwrap();
    fs::create_dir(w.path("mnt")).unwrap();
    w.write("data", b"mounted data");
    w.ok("keygen -o k.key");
    w.ok("pack data V/f.qltx --key-file k.key -q");
    let mnt = w.path("mnt").canonicalize().unwrap();
    let out = under_umask_000(w.std_cmd("mount V mnt --key-file k.key --daemon --log-file mount.log"));
    let err = stderr(&out);
    let _unmount = DaemonMount {
        mnt: mnt.clone(),
        pid: daemon_pid(&err),
    };
    assert!(out.status.success(), "{err}");
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"mounted data");
    assert_eq!(mode(&w.path("mount.log")), 0o600, "mount log");
    w.ok(&format!("umount {}", mnt.display()));
}
