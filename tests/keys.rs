//! Key management end to end, through the real `qeltrix` binary on real files (and the library
//! where a thousand containers would make the CLI slow): vault init / pack / read, passphrase
//! rotation over 1,000 containers, crash-safe rekey killed with SIGKILL at every step, X25519
//! recipients, re-encryption, and the secret types' zeroize-on-drop and redacted Debug.
//!
//! Passphrases come from files or QELTRIX_PASSPHRASE, KDF iterations are 1,000, and every test
//! works in its own temporary folder (removed on drop, also when the test fails). Command lines
//! are written as one string split on whitespace; no argument here contains a space.

mod common;
use common::{assert_code, mode_of as mode, random_bytes, Work};
use qeltrix::crypto::{DataKey, IdentityKey, KeyFileKey, Passphrase, RecipientKey, SeededEntropy, VaultKey};
use qeltrix::format::{Header, SlotArea, HEADER_LEN, SLOT_AREA_A, SLOT_AREA_B, SLOT_AREA_LEN};
use qeltrix::{keyring, CompressMode, Container, Error, Key, PackOptions, Recipient};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

const PASSPHRASE_ENV: &str = "QELTRIX_PASSPHRASE";
const CRASH_ENV: &str = "QELTRIX_TEST_CRASH_AT";
const VAULT_PASS: &str = "correct horse vault";
const NEW_PASS: &str = "battery staple vault";
const WRONG_PASS: &str = "not the passphrase";
/// The vault passphrase from its file, and a small KDF cost.
const VP: &str = "--passphrase-file vault.pass --kdf-iterations 1000";
const NP: &str = "--passphrase-file new.pass --kdf-iterations 1000";

// ---------------------------------------------------------------- helpers

/// A temporary working folder (commands run in it) with the three passphrase files.
fn work() -> Work {
    let w = Work::new();
    w.write("vault.pass", format!("{VAULT_PASS}\n").as_bytes());
    w.write("new.pass", format!("{NEW_PASS}\n").as_bytes());
    w.write("wrong.pass", format!("{WRONG_PASS}\n").as_bytes());
    w
}

/// Writes `data`, `len` random bytes from `seed`, and returns them.
fn write_data(w: &Work, len: usize, seed: u64) -> Vec<u8> {
    let plain = random_bytes(len, seed);
    w.write("data", &plain);
    plain
}

/// The key and vault commands the tests below run in a working folder.
trait KeyCommands {
    fn with_env_passphrase(&self, passphrase: &str, line: &str, code: i32);
    fn keygen(&self, name: &str) -> Key;
    fn keygen_x25519(&self, name: &str) -> String;
    fn init_vault(&self, vault: &str);
    fn info(&self, container: &str) -> serde_json::Value;
    fn slot_types(&self, container: &str) -> Vec<String>;
    fn unpacks_to(&self, container: &str, keys: &str, expected: &[u8]);
}

impl KeyCommands for Work {
    /// Runs with `QELTRIX_PASSPHRASE=passphrase` and requires exit `code`.
    fn with_env_passphrase(&self, passphrase: &str, line: &str, code: i32) {
        let out = self.cmd(line).env(PASSPHRASE_ENV, passphrase).output().unwrap();
        assert_code(&out, code, line);
    }

    /// Makes a 32-byte key file with `qeltrix keygen`.
    fn keygen(&self, name: &str) -> Key {
        self.ok(&format!("keygen -o {name}"));
        Key::KeyFile(KeyFileKey::parse(&self.read(name)).unwrap())
    }

    /// Makes an X25519 identity; returns the recipient string printed on stdout.
    fn keygen_x25519(&self, name: &str) -> String {
        self.ok(&format!("keygen --x25519 -o {name}")).trim().to_string()
    }

    fn init_vault(&self, vault: &str) {
        self.ok(&format!("init {vault} {VP}"));
    }

    fn info(&self, container: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&format!("info {container} --json"))).unwrap()
    }

    /// The slot types `info` lists, in slot order.
    fn slot_types(&self, container: &str) -> Vec<String> {
        self.info(container)["key_slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// Unpacks with `keys` (key options) and requires the plaintext to be exactly `expected`.
    fn unpacks_to(&self, container: &str, keys: &str, expected: &[u8]) {
        let out = format!("{container}.out");
        self.ok(&format!("unpack {container} {out} -q --force {keys}"));
        assert!(self.read(&out) == expected, "{container}: plaintext differs");
        fs::remove_file(self.path(&out)).unwrap();
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s)
}

/// Opens with `key` and returns the whole plaintext, or the error.
fn plaintext(path: &Path, key: &Key) -> Result<Vec<u8>, Error> {
    let c = Container::open(path, key)?;
    c.seek_extract(0, c.len())
}

fn is_wrong_key(r: Result<Vec<u8>, Error>) -> bool {
    r.as_ref().is_err_and(|e| e.is_wrong_key())
}

// ---------------------------------------------------------------- vault: init, pack, read

#[test]
fn vault_init_pack_into_it_and_read_back() {
    let w = work();
    let plain = write_data(&w, 50_000, 1);
    w.init_vault("V");
    assert_eq!(mode(&keyring::keyring_path(&w.path("V"))), 0o600);
    let keyring_bytes = w.read("V/.qeltrix/keyring");

    // A second init refuses and leaves the keyring alone.
    let err = w.fails(&format!("init V {NP}"), 2);
    assert!(err.contains("already an initialised vault"), "{err}");
    assert_eq!(w.read("V/.qeltrix/keyring"), keyring_bytes);

    // Packed by a path inside the vault, by --vault from outside, and by a bare name with the
    // vault as the working folder: each gets one keyring slot and no passphrase slot.
    w.ok(&format!("pack data V/inside.qltx --block-size 4 -q {VP}"));
    fs::create_dir(w.path("elsewhere")).unwrap();
    w.ok(&format!(
        "pack data elsewhere/out.qltx --vault V --block-size 4 -q {VP}"
    ));
    let out = w
        .cmd("pack ../data bare.qltx --passphrase-file ../vault.pass -q")
        .current_dir(w.path("V"))
        .output()
        .unwrap();
    assert_code(&out, 0, "pack ../data bare.qltx (in the vault folder)");
    for c in ["V/inside.qltx", "elsewhere/out.qltx", "V/bare.qltx"] {
        assert_eq!(w.slot_types(c), ["keyring"], "{c}");
    }

    // Read back with the vault passphrase: found automatically inside the vault, named outside.
    w.unpacks_to("V/inside.qltx", "--passphrase-file vault.pass", &plain);
    w.unpacks_to("V/bare.qltx", "--passphrase-file vault.pass", &plain);
    w.unpacks_to(
        "elsewhere/out.qltx",
        "--vault V --passphrase-file vault.pass",
        &plain,
    );
    w.with_env_passphrase(VAULT_PASS, "unpack V/inside.qltx env.out -q", 0);
    assert!(w.read("env.out") == plain);
    w.ok("seek V/inside.qltx --offset 12345 --length 9000 -o range --passphrase-file vault.pass");
    assert_eq!(w.read("range"), &plain[12345..12345 + 9000]);
    let stdout = w.ok("verify elsewhere/out.qltx --vault V --passphrase-file vault.pass");
    assert!(stdout.starts_with("OK:"), "{stdout}");

    // The library reads it the same way: one unlock, then the vault key opens each container.
    let vault_key = Key::Vault(keyring::unlock(&w.path("V"), &pass(VAULT_PASS)).unwrap());
    assert!(plaintext(&w.path("V/inside.qltx"), &vault_key).unwrap() == plain);
}

#[test]
fn wrong_vault_passphrase_exits_3_and_writes_nothing() {
    let w = work();
    w.write("data", &random_bytes(20_000, 2));
    w.init_vault("V");
    fs::create_dir(w.path("out")).unwrap();
    w.ok("pack data V/c.qltx --passphrase-file vault.pass -q");
    w.ok("pack data out/c.qltx --vault V --passphrase-file vault.pass -q");

    let wrong = "--passphrase-file wrong.pass";
    let err = w.fails(&format!("unpack V/c.qltx x {wrong}"), 3);
    assert!(err.contains("V/c.qltx") && err.contains("vault"), "{err}");
    let err = w.fails(&format!("unpack out/c.qltx x --vault V {wrong}"), 3);
    assert!(
        err.contains("wrong key: the passphrase does not open vault V"),
        "{err}"
    );
    w.fails(&format!("seek V/c.qltx --offset 0 --length 10 -o x {wrong}"), 3);
    w.fails(&format!("verify V/c.qltx {wrong}"), 3);
    w.with_env_passphrase(WRONG_PASS, "unpack V/c.qltx x -q", 3);
    // Packing into the vault with a wrong passphrase fails before a container appears.
    w.fails(&format!("pack data V/new.qltx -q {wrong}"), 3);
    w.fails(&format!("pack data new.qltx --vault V -q {wrong}"), 3);
    // Without --vault, a container outside the vault does not open with the vault passphrase.
    w.fails("unpack out/c.qltx x --passphrase-file vault.pass", 3);

    for leftover in ["x", "V/new.qltx", "new.qltx"] {
        assert!(!w.exists(leftover), "{leftover} was left behind");
    }
    let in_vault = fs::read_dir(w.path("V")).unwrap().count();
    assert_eq!(in_vault, 2, "only .qeltrix and c.qltx: no temporary file left");

    // A folder that is not a vault is named as such.
    let err = w.fails("unpack out/c.qltx x --vault out --passphrase-file vault.pass", 1);
    assert!(err.contains("not an initialised vault"), "{err}");
    let err = w.fails(
        "passwd out --passphrase-file vault.pass --new-passphrase-file new.pass",
        1,
    );
    assert!(err.contains("not an initialised vault"), "{err}");
}

#[test]
fn missing_passphrases_and_bad_kdf_costs_are_usage_errors() {
    let w = work();
    w.write("data", b"hello");
    w.init_vault("V");
    // No passphrase anywhere, and stdin is not a terminal: say which one and how to give it.
    let err = w.fails("pack data V/c.qltx -q", 2);
    assert!(err.contains("Vault passphrase needed"), "{err}");
    assert!(!w.exists("V/c.qltx"));
    let err = w.fails("passwd V --passphrase-file vault.pass", 2);
    assert!(err.contains("--new-passphrase-file"), "{err}");
    let err = w.fails("init W", 2);
    assert!(err.contains("New vault passphrase needed"), "{err}");

    // Iteration counts that unlock would refuse are refused up front, so no vault is bricked.
    for bad in ["0", "100000001"] {
        let err = w.fails(
            &format!("init W --passphrase-file vault.pass --kdf-iterations {bad}"),
            2,
        );
        assert!(err.contains("KDF iterations"), "{err}");
        assert!(!w.exists("W/.qeltrix/keyring"));
        let line = format!(
            "passwd V --passphrase-file vault.pass --new-passphrase-file new.pass --kdf-iterations {bad}"
        );
        w.fails(&line, 2);
    }
    assert!(keyring::unlock(&w.path("V"), &pass(VAULT_PASS)).is_ok());
}

// ---------------------------------------------------------------- passwd over 1,000 containers

#[test]
fn passwd_on_a_vault_of_1000_containers_rewrites_only_the_keyring() {
    const LIB_CONTAINERS: usize = 1000;
    let w = work();
    w.init_vault("V");
    let vault_key = keyring::unlock(&w.path("V"), &pass(VAULT_PASS)).unwrap();
    let opts = PackOptions {
        block_size: 4096,
        compress: CompressMode::Never,
        workers: 1,
        ..PackOptions::default()
    };
    let contents = |i: usize| format!("container {i}: {}\n", "x".repeat(i % 7)).into_bytes();
    let name = |i: usize| format!("V/c{i:04}.qltx");
    let keys = [Recipient::Vault(vault_key.clone())];
    for i in 0..LIB_CONTAINERS {
        qeltrix::pack_reader(&mut &contents(i)[..], &w.path(&name(i)), &keys, &opts, false).unwrap();
    }
    // A handful through the CLI, as a user adds them.
    let cli_plain: Vec<Vec<u8>> = (0..3)
        .map(|i| random_bytes(10_000 + i * 3000, 10 + i as u64))
        .collect();
    for (i, p) in cli_plain.iter().enumerate() {
        w.write(&format!("in{i}"), p);
        w.ok(&format!("pack in{i} V/cli{i}.qltx --block-size 4 -q {VP}"));
    }
    let snapshot = || -> Vec<(String, [u8; 32])> {
        let mut files: Vec<_> = fs::read_dir(w.path("V"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    sha256(&fs::read(e.path()).unwrap()),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot();
    assert_eq!(before.len(), LIB_CONTAINERS + 3);
    let keyring_before = w.read("V/.qeltrix/keyring");

    w.ok("passwd V --passphrase-file vault.pass --new-passphrase-file new.pass --kdf-iterations 1000");

    assert_eq!(snapshot(), before, "passwd must not touch any container");
    assert_ne!(w.read("V/.qeltrix/keyring"), keyring_before);
    assert_eq!(mode(&keyring::keyring_path(&w.path("V"))), 0o600);
    let in_dot_folder = fs::read_dir(w.path("V/.qeltrix")).unwrap().count();
    assert_eq!(in_dot_folder, 1, "no temporary keyring left behind");

    // The new passphrase unlocks the same vault key; the old one is refused.
    // (That it is the same vault key shows below: it opens every container packed with it.)
    let unlocked = keyring::unlock(&w.path("V"), &pass(NEW_PASS)).unwrap();
    let old = keyring::unlock(&w.path("V"), &pass(VAULT_PASS)).unwrap_err();
    assert!(matches!(old.root(), Error::WrongKey { .. }), "{old}");

    // Every container, through the library with the key the new passphrase unlocked.
    let key = Key::Vault(unlocked);
    for i in 0..LIB_CONTAINERS {
        assert_eq!(
            plaintext(&w.path(&name(i)), &key).unwrap(),
            contents(i),
            "{}",
            name(i)
        );
    }
    for (i, p) in cli_plain.iter().enumerate() {
        assert!(plaintext(&w.path(&format!("V/cli{i}.qltx")), &key).unwrap() == *p);
    }

    // A sample through the CLI: the new passphrase reads them, the old one exits 3.
    for i in [0, 1, 499, 998, 999] {
        w.unpacks_to(&name(i), "--passphrase-file new.pass", &contents(i));
    }
    for (i, p) in cli_plain.iter().enumerate() {
        w.unpacks_to(&format!("V/cli{i}.qltx"), "--passphrase-file new.pass", p);
    }
    for c in [name(0), name(999), "V/cli0.qltx".to_string()] {
        let err = w.fails(&format!("unpack {c} old.out --passphrase-file vault.pass"), 3);
        assert!(err.contains(&c), "{err}");
        assert!(!w.exists("old.out"));
    }
    // A passwd with the old passphrase is refused and changes nothing.
    w.fails(
        "passwd V --passphrase-file vault.pass --new-passphrase-file wrong.pass",
        3,
    );
    assert!(keyring::unlock(&w.path("V"), &pass(NEW_PASS)).is_ok());
}

// ---------------------------------------------------------------- rekey

/// The two slot areas of a container file, decoded (`None` when empty or torn).
fn slot_areas(bytes: &[u8]) -> [Option<SlotArea>; 2] {
    let h = Header::decode(&bytes[..HEADER_LEN]).unwrap();
    [SlotArea::decode(&h.slot_area_a), SlotArea::decode(&h.slot_area_b)]
}

fn area_at(bytes: &[u8], offset: usize) -> Option<SlotArea> {
    let [a, b] = slot_areas(bytes);
    if offset == SLOT_AREA_A {
        a
    } else {
        b
    }
}

/// The active area's offset and contents, as readers choose it.
fn active_area(bytes: &[u8]) -> (usize, SlotArea) {
    let active = Header::decode(&bytes[..HEADER_LEN])
        .unwrap()
        .active_slots()
        .unwrap();
    let offset = if area_at(bytes, SLOT_AREA_A).as_ref() == Some(&active) {
        SLOT_AREA_A
    } else {
        SLOT_AREA_B
    };
    (offset, active)
}

fn other_area(offset: usize) -> usize {
    if offset == SLOT_AREA_A {
        SLOT_AREA_B
    } else {
        SLOT_AREA_A
    }
}

/// Every byte outside the slot area at `offset`: the rest of the header, blocks, footer, trailer.
fn outside_area(bytes: &[u8], offset: usize) -> Vec<u8> {
    [&bytes[..offset], &bytes[offset + SLOT_AREA_LEN..]].concat()
}

/// The crash hook's points, in the order rekey passes them: the write of the inactive area, then
/// the write of the same bytes over the previously active one (the scrub).
const CRASH_POINTS: [&str; 7] = [
    "locked",
    "before-write",
    "torn-write",
    "before-sync",
    "after-sync",
    "torn-scrub",
    "before-scrub-sync",
];

/// True for the points reached after the new area was synced, while the old one is rewritten.
fn in_scrub(point: &str) -> bool {
    matches!(point, "torn-scrub" | "before-scrub-sync")
}

/// One kind of slot change for the crash matrix.
struct Change {
    name: &'static str,
    template: &'static str,
    args: &'static str,
    /// Opens the container in the old state and in the new one.
    survivor: Key,
    survivor_args: &'static str,
    /// Opens only the new state (an added slot) or only the old one (a removed slot).
    decider: Key,
    decider_opens_new: bool,
    slots: (usize, usize),
}

#[test]
fn rekey_killed_at_each_step_leaves_the_old_or_the_new_slots() {
    let w = work();
    let plain = write_data(&w, 3 * 4096 + 1234, 3);
    let k0 = w.keygen("k0.key");
    let k1 = w.keygen("k1.key");
    let kn = w.keygen("kn.key");
    // one.qltx: k0 in area A (sequence 1), area B empty. two.qltx: k0 and k1 in both areas
    // (sequence 2). Each change writes area B first, then area A.
    w.ok("pack data one.qltx --key-file k0.key --block-size 4 -q");
    fs::copy(w.path("one.qltx"), w.path("two.qltx")).unwrap();
    w.ok("rekey two.qltx --key-file k0.key --add-key-file k1.key");

    let changes = [
        Change {
            name: "add key file",
            template: "one.qltx",
            args: "--key-file k0.key --add-key-file kn.key",
            survivor: k0.clone(),
            survivor_args: "--key-file k0.key",
            decider: kn,
            decider_opens_new: true,
            slots: (1, 2),
        },
        Change {
            name: "add passphrase",
            template: "one.qltx",
            args: "--key-file k0.key --add-passphrase --new-passphrase-file new.pass --kdf-iterations 1000",
            survivor: k0.clone(),
            survivor_args: "--key-file k0.key",
            decider: Key::Passphrase(pass(NEW_PASS)),
            decider_opens_new: true,
            slots: (1, 2),
        },
        Change {
            name: "remove slot",
            template: "two.qltx",
            args: "--key-file k1.key --remove-slot 0",
            survivor: k1,
            survivor_args: "--key-file k1.key",
            decider: k0,
            decider_opens_new: false,
            slots: (2, 1),
        },
    ];

    for change in &changes {
        for point in CRASH_POINTS {
            let case = format!("{} killed at {point}", change.name);
            fs::copy(w.path(change.template), w.path("c.qltx")).unwrap();
            let before = w.read("c.qltx");
            let (old_offset, old_area) = active_area(&before);
            let target = other_area(old_offset);

            let line = format!("rekey c.qltx {}", change.args);
            let out = w.cmd(&line).env(CRASH_ENV, point).output().unwrap();
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGKILL),
                "{case}: {:?}",
                out.status
            );

            let after = w.read("c.qltx");
            assert_eq!(after.len(), before.len(), "{case}");
            assert!(
                after[HEADER_LEN..] == before[HEADER_LEN..],
                "{case}: blocks or footer changed"
            );
            if !in_scrub(point) {
                assert!(
                    outside_area(&after, target) == outside_area(&before, target),
                    "{case}: a byte outside the inactive slot area changed"
                );
            }
            let (offset, area) = active_area(&after);
            let is_new = area.sequence == old_area.sequence + 1;
            match point {
                "locked" | "before-write" => assert!(after == before, "{case}"),
                "torn-write" => {
                    let torn = &after[target..target + SLOT_AREA_LEN];
                    assert!(
                        torn != &before[target..target + SLOT_AREA_LEN],
                        "{case}: nothing torn"
                    );
                    assert!(
                        area_at(&after, target).is_none(),
                        "{case}: a torn area must fail its checksum"
                    );
                }
                // Killed after write(2): the page cache holds the new area, so it may win.
                "before-sync" => {}
                _ => assert!(is_new, "{case}: the synced area must win"),
            }
            if matches!(point, "locked" | "before-write" | "torn-write") {
                assert!(!is_new, "{case}: the old area must stay in force");
            }
            if point == "torn-scrub" {
                assert!(
                    area_at(&after, old_offset).is_none(),
                    "{case}: the half-rewritten old area must fail its checksum"
                );
            }
            if is_new {
                assert_eq!(area.slots.len(), change.slots.1, "{case}");
                assert!(
                    offset == target || area_at(&after, target).as_ref() == Some(&area),
                    "{case}: the new area must be in force"
                );
            } else {
                assert_eq!((offset, &area), (old_offset, &old_area), "{case}");
                assert_eq!(area.slots.len(), change.slots.0, "{case}");
            }

            // Readable in either state, byte-identical; the deciding key agrees with the state.
            assert!(
                plaintext(&w.path("c.qltx"), &change.survivor).unwrap() == plain,
                "{case}"
            );
            w.unpacks_to("c.qltx", change.survivor_args, &plain);
            let decided = plaintext(&w.path("c.qltx"), &change.decider);
            if is_new == change.decider_opens_new {
                assert!(decided.unwrap() == plain, "{case}");
            } else {
                assert!(is_wrong_key(decided), "{case}: the deciding key must be refused");
            }

            // Interrupted before it took effect, the change can simply be run again; interrupted
            // after, a scrub finishes it. Either way both areas then hold the new set alone.
            let finish = if is_new {
                format!("rekey c.qltx {} --scrub", change.survivor_args)
            } else {
                line.clone()
            };
            w.ok(&finish);
            {
                let again = w.read("c.qltx");
                let (_, area) = active_area(&again);
                let [a, b] = slot_areas(&again);
                assert_eq!(a.as_ref(), Some(&area), "{case}: area A after finishing");
                assert_eq!(b.as_ref(), Some(&area), "{case}: area B after finishing");
                assert!(area.sequence > old_area.sequence, "{case}");
                assert_eq!(area.slots.len(), change.slots.1, "{case}");
                let decided = plaintext(&w.path("c.qltx"), &change.decider);
                assert_eq!(decided.is_ok(), change.decider_opens_new, "{case}");
                assert!(again[HEADER_LEN..] == before[HEADER_LEN..], "{case}");
            }
        }
    }
}

#[test]
fn ten_rekeys_in_a_row_leave_both_areas_equal_and_keep_working() {
    let w = work();
    let plain = write_data(&w, 5 * 4096, 4);
    let k0 = w.keygen("k0.key");
    let k1 = w.keygen("k1.key");
    w.ok("pack data c.qltx --key-file k0.key --block-size 4 -q");
    let original = w.read("c.qltx");
    let (offset, first) = active_area(&original);
    assert_eq!((offset, first.sequence), (SLOT_AREA_A, 1));

    for round in 1..=10u64 {
        let adding = round % 2 == 1;
        let change = if adding {
            "--add-key-file k1.key"
        } else {
            "--remove-slot 1"
        };
        let stdout = w.ok(&format!("rekey c.qltx --key-file k0.key {change}"));
        assert!(stdout.contains(&format!("sequence {}", round + 1)), "{stdout}");
        let bytes = w.read("c.qltx");
        let (_, area) = active_area(&bytes);
        let [a, b] = slot_areas(&bytes);
        assert!(
            a.as_ref() == Some(&area) && b.as_ref() == Some(&area),
            "round {round}: both areas must hold the new set"
        );
        assert_eq!(area.sequence, round + 1);
        assert_eq!(area.slots.len(), if adding { 2 } else { 1 });
        assert!(bytes[HEADER_LEN..] == original[HEADER_LEN..], "round {round}");
        assert!(
            bytes[..SLOT_AREA_A] == original[..SLOT_AREA_A],
            "round {round}: fixed header fields"
        );
        assert!(
            plaintext(&w.path("c.qltx"), &k0).unwrap() == plain,
            "round {round}"
        );
        assert_eq!(plaintext(&w.path("c.qltx"), &k1).is_ok(), adding, "round {round}");
    }
    w.unpacks_to("c.qltx", "--key-file k0.key", &plain);
    w.ok("verify c.qltx --key-file k0.key");
}

#[test]
fn rekey_refuses_what_would_lose_data_and_lists_without_a_key() {
    let w = work();
    let plain = write_data(&w, 9000, 5);
    w.keygen("k0.key");
    w.keygen("k1.key");
    w.ok("pack data c.qltx --key-file k0.key --block-size 4 -q");
    let before = w.read("c.qltx");

    let err = w.fails("rekey c.qltx --key-file k0.key --remove-slot 0", 2);
    assert!(err.contains("c.qltx") && err.contains("last key slot"), "{err}");
    let err = w.fails("rekey c.qltx --key-file k0.key --remove-slot 1", 2);
    assert!(err.contains("c.qltx") && err.contains("no slot #1"), "{err}");
    let err = w.fails("rekey c.qltx --key-file k0.key", 2);
    assert!(err.contains("nothing to do"), "{err}");
    let err = w.fails("rekey c.qltx --key-file k1.key --add-key-file k1.key", 3);
    assert!(err.contains("wrong key"), "{err}");
    let zero_cost = "--add-passphrase --new-passphrase-file new.pass --kdf-iterations 0";
    w.fails(&format!("rekey c.qltx --key-file k0.key {zero_cost}"), 2);
    assert!(w.read("c.qltx") == before, "refused rekeys change nothing");

    // Two slots: removing both at once is removing the last one too.
    w.ok("rekey c.qltx --key-file k0.key --add-key-file k1.key");
    let two = w.read("c.qltx");
    let err = w.fails(
        "rekey c.qltx --key-file k0.key --remove-slot 0 --remove-slot 1",
        2,
    );
    assert!(err.contains("last key slot"), "{err}");
    assert!(w.read("c.qltx") == two);

    // At most eight slots.
    for _ in 2..8 {
        w.ok("rekey c.qltx --key-file k0.key --add-key-file k1.key");
    }
    let full = w.read("c.qltx");
    let err = w.fails("rekey c.qltx --key-file k0.key --add-key-file k1.key", 2);
    assert!(err.contains("at most 8"), "{err}");
    assert!(w.read("c.qltx") == full);

    // --list needs no key: none given, none in the environment, no terminal.
    let stdout = w.ok("rekey c.qltx --list");
    assert!(stdout.contains("sequence 8"), "{stdout}");
    assert_eq!(stdout.matches("key-file").count(), 8, "{stdout}");
    assert!(stdout.contains("#7 key-file"), "{stdout}");
    w.unpacks_to("c.qltx", "--key-file k1.key", &plain);
}

#[test]
fn rekey_adds_passphrase_recipient_and_keyring_slots_that_each_open() {
    let w = work();
    let plain = write_data(&w, 7000, 6);
    w.keygen("k0.key");
    w.keygen("k1.key");
    let recipient = w.keygen_x25519("me.id");
    w.init_vault("V");
    w.ok("pack data c.qltx --key-file k0.key -q");
    let stdout = w.ok(&format!(
        "rekey c.qltx --key-file k0.key --add-passphrase --new-passphrase-file new.pass \
         --kdf-iterations 1000 --add-key-file k1.key --add-recipient {recipient}"
    ));
    assert!(
        stdout.contains("#1 passphrase (PBKDF2-HMAC-SHA256, 1000 iterations)"),
        "{stdout}"
    );
    w.ok("rekey c.qltx --key-file k1.key --add-keyring V --new-passphrase-file vault.pass");
    let expected = ["key-file", "passphrase", "key-file", "recipient", "keyring"];
    assert_eq!(w.slot_types("c.qltx"), expected);
    for keys in [
        "--key-file k0.key",
        "--passphrase-file new.pass",
        "--key-file k1.key",
        "--identity me.id",
        "--vault V --passphrase-file vault.pass",
    ] {
        w.unpacks_to("c.qltx", keys, &plain);
    }
    // Removing the first key-file slot: its key no longer opens the container.
    w.ok("rekey c.qltx --identity me.id --remove-slot 0");
    w.fails("unpack c.qltx x --key-file k0.key", 3);
    w.unpacks_to("c.qltx", "--key-file k1.key", &plain);
}

// ---------------------------------------------------------------- recipients

#[test]
fn a_recipient_only_container_opens_with_the_identity_and_nothing_the_packer_held() {
    let w = work();
    let plain = write_data(&w, 30_000, 7);
    let recipient = w.keygen_x25519("me.id");
    assert!(
        recipient.starts_with("qeltrix-x25519:") && recipient.len() == 15 + 64,
        "{recipient}"
    );
    assert_eq!(mode(&w.path("me.id")), 0o600);
    let identity = IdentityKey::parse(&fs::read_to_string(w.path("me.id")).unwrap()).unwrap();
    assert_eq!(
        identity.recipient().to_string(),
        recipient,
        "stdout names the file's recipient"
    );

    // The packer holds only the public string: no passphrase, no prompt.
    w.ok(&format!(
        "pack data c.qltx --recipient {recipient} --block-size 4 -q"
    ));
    assert_eq!(w.slot_types("c.qltx"), ["recipient"]);

    // Nothing the packer had opens it, and nothing is written.
    let err = w.fails("unpack c.qltx x", 2);
    assert!(err.contains("it needs --identity"), "{err}");
    w.write("recipient.txt", recipient.as_bytes());
    let err = w.fails("unpack c.qltx x --key-file recipient.txt", 2);
    assert!(err.contains("recipient.txt"), "{err}");
    w.fails("unpack c.qltx x --identity recipient.txt", 2);
    w.with_env_passphrase(&recipient, "unpack c.qltx x", 3);
    // Opening with the public key through the library does not even compile: a RecipientKey is
    // only a Recipient (the compile_fail example on `Recipient` proves it).
    let _public: RecipientKey = recipient.parse().unwrap();
    w.keygen_x25519("other.id");
    w.fails("unpack c.qltx x --identity other.id", 3);
    assert!(!w.exists("x"));

    // The identity opens it, through every reader.
    w.unpacks_to("c.qltx", "--identity me.id", &plain);
    w.ok("seek c.qltx --offset 5000 --length 100 -o r --identity me.id");
    assert_eq!(w.read("r"), &plain[5000..5100]);
    w.ok("verify c.qltx --identity me.id");
    assert!(plaintext(&w.path("c.qltx"), &Key::Identity(identity)).unwrap() == plain);
}

#[test]
fn each_of_three_recipients_opens_the_container() {
    let w = work();
    let plain = write_data(&w, 12_000, 8);
    let recipients: Vec<String> = (0..3)
        .map(|i| format!("--recipient {}", w.keygen_x25519(&format!("id{i}"))))
        .collect();
    w.ok(&format!("pack data c.qltx -q {}", recipients.join(" ")));
    assert_eq!(w.slot_types("c.qltx"), ["recipient"; 3]);
    for i in 0..3 {
        w.unpacks_to("c.qltx", &format!("--identity id{i}"), &plain);
    }
}

#[test]
fn bad_recipients_and_keygen_overwrites_are_usage_errors() {
    let w = work();
    w.write("data", b"some bytes");
    let good = w.keygen_x25519("id");
    let id_before = w.read("id");
    let zero_point = format!("qeltrix-x25519:{}", "00".repeat(32));
    for bad in [
        "qeltrix-x25519:zz",
        &good[15..],                    // no prefix
        &good[..good.len() - 1],        // 63 hex digits
        "age1qqqqqqqqqqqqqqqqqqqqqqqq", // another tool's format
        &zero_point,                    // not a usable public key
    ] {
        let err = w.fails(&format!("pack data c.qltx --recipient {bad} -q"), 2);
        assert!(
            err.contains("recipient") || err.contains("X25519"),
            "{bad}: {err}"
        );
        assert!(!err.contains("data:"), "the input file is not at fault: {err}");
        assert!(!w.exists("c.qltx"));
    }
    let err = w.fails("keygen --x25519 -o id", 2);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(w.read("id"), id_before);
    w.keygen("k.key");
    assert_eq!(mode(&w.path("k.key")), 0o600);
    w.fails("keygen -o k.key", 2);
}

#[test]
fn a_write_only_packer_inside_a_vault_needs_no_vault_passphrase() {
    let w = work();
    let plain = write_data(&w, 6000, 9);
    w.init_vault("V");
    let recipient = w.keygen_x25519("me.id");
    let out = w.run(&format!("pack data V/c.qltx --recipient {recipient} -q"));
    assert_code(&out, 0, "pack into a vault with only a recipient");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no keyring slot"));
    assert_eq!(w.slot_types("V/c.qltx"), ["recipient"]);
    w.unpacks_to("V/c.qltx", "--identity me.id", &plain);
    // With the vault passphrase at hand it also gets the keyring slot.
    w.with_env_passphrase(
        VAULT_PASS,
        &format!("pack data V/d.qltx --recipient {recipient} -q"),
        0,
    );
    assert_eq!(w.slot_types("V/d.qltx"), ["recipient", "keyring"]);
    w.unpacks_to("V/d.qltx", "--passphrase-file vault.pass", &plain);
}

// ---------------------------------------------------------------- reencrypt

#[test]
fn reencrypt_gives_a_new_container_with_the_same_plaintext() {
    let w = work();
    let plain = write_data(&w, 40_000, 10);
    w.keygen("old.key");
    w.keygen("new.key");
    w.ok("pack data in.qltx --key-file old.key --cipher chacha --block-size 8 -q");
    let input = w.read("in.qltx");

    // The same key reused: a new id, other bytes, the same plaintext and settings.
    w.ok("reencrypt in.qltx same.qltx --key-file old.key -q");
    let (a, b) = (w.info("in.qltx"), w.info("same.qltx"));
    assert_ne!(a["container_id"], b["container_id"]);
    for field in ["cipher", "block_size", "blocks", "original_size"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    let same = w.read("same.qltx");
    assert_ne!(sha256(&same), sha256(&input));
    let first_block = HEADER_LEN..HEADER_LEN + 1024;
    assert_ne!(
        same[first_block.clone()],
        input[first_block],
        "block data is sealed anew"
    );
    w.unpacks_to("same.qltx", "--key-file old.key", &plain);
    assert_eq!(w.read("in.qltx"), input, "the input is not touched");

    // A new key: only it opens the output; the input still opens with the old one only.
    w.ok("reencrypt in.qltx swapped.qltx --key-file old.key --new-key-file new.key -q");
    assert_eq!(w.slot_types("swapped.qltx"), ["key-file"]);
    w.unpacks_to("swapped.qltx", "--key-file new.key", &plain);
    w.fails("unpack swapped.qltx x --key-file old.key", 3);
    w.fails("unpack in.qltx x --key-file new.key", 3);
    w.unpacks_to("in.qltx", "--key-file old.key", &plain);

    // A new passphrase, and another cipher.
    w.ok(
        "reencrypt in.qltx pw.qltx --key-file old.key --new-passphrase-file new.pass --cipher aes -q \
          --kdf-iterations 1000",
    );
    assert_eq!(w.info("pw.qltx")["cipher"], "AES-256-GCM");
    assert_eq!(w.slot_types("pw.qltx"), ["passphrase"]);
    w.unpacks_to("pw.qltx", "--passphrase-file new.pass", &plain);

    // Failures leave nothing behind: a wrong key (exit 3), an existing output (exit 2).
    w.fails("reencrypt in.qltx x.qltx --key-file new.key -q", 3);
    assert!(!w.exists("x.qltx"));
    let swapped = w.read("swapped.qltx");
    w.fails("reencrypt in.qltx swapped.qltx --key-file old.key -q", 2);
    assert_eq!(w.read("swapped.qltx"), swapped);
}

#[test]
fn reencrypt_inside_a_vault_keeps_a_keyring_slot() {
    let w = work();
    let plain = write_data(&w, 10_000, 11);
    w.init_vault("V");
    w.ok("pack data V/a.qltx --passphrase-file vault.pass -q");
    w.ok("reencrypt V/a.qltx V/b.qltx --passphrase-file vault.pass -q");
    assert_eq!(w.slot_types("V/b.qltx"), ["keyring"]);
    w.unpacks_to("V/b.qltx", "--passphrase-file vault.pass", &plain);
}

// ---------------------------------------------------------------- secret types

fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}

#[test]
fn secret_types_zeroize_on_drop_and_print_redacted() {
    // Compile time: each secret type implements ZeroizeOnDrop.
    zeroize_on_drop::<DataKey>();
    zeroize_on_drop::<KeyFileKey>();
    zeroize_on_drop::<Passphrase>();
    zeroize_on_drop::<VaultKey>();
    zeroize_on_drop::<IdentityKey>();

    let entropy = SeededEntropy([0x5a; 32]);
    let data_key = DataKey::generate(&entropy);
    // The same purpose draws the same bytes from a seeded source: the key's bytes, to look for.
    let mut data_key_bytes = [0u8; 32];
    qeltrix::crypto::Entropy::fill(&entropy, b"data key", &mut data_key_bytes);
    let identity = IdentityKey::generate(&entropy);
    let identity_text = identity.to_file_text();
    let identity_hex = identity_text
        .lines()
        .find_map(|l| l.strip_prefix("QELTRIX-X25519-IDENTITY:"))
        .unwrap();
    let identity_bytes = hex::decode(identity_hex).unwrap();
    let cases: Vec<(String, Vec<u8>)> = vec![
        (format!("{data_key:?}"), data_key_bytes.to_vec()),
        (
            format!("{:?}", KeyFileKey::from_bytes([0xab; 32])),
            vec![0xab; 32],
        ),
        (format!("{:?}", VaultKey::from_bytes([0xcd; 32])), vec![0xcd; 32]),
        (format!("{identity:?}"), identity_bytes),
        (
            format!("{:?}", pass("hunter2 secret")),
            b"hunter2 secret".to_vec(),
        ),
        (
            format!(
                "{:?}",
                Key::FirstOf(vec![Key::Passphrase(pass("hunter2 secret"))])
            ),
            b"hunter2 secret".to_vec(),
        ),
    ];
    for (debug, secret) in cases {
        assert!(debug.contains("[redacted]"), "{debug}");
        assert!(!debug.contains(&hex::encode(&secret)), "{debug}");
        assert!(!debug.contains(&format!("{:?}", &secret[..4])), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
