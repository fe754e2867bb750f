//! Commit probe: what one commit of 100 random 4 KiB writes costs, with the real code, for the
//! format-4 design (`docs/design/format-4.md`). No FUSE and no page reads: each case starts
//! from the plaintext in memory (as the mount's editor holds it) and times the commit alone,
//! sealing and I/O, until it is durable:
//!
//! - `gocryptfs-like`: each 4 KiB page sealed alone (AES-256-GCM, ring) and written in place as
//!   4 KiB + 16 + 16 bytes (gocryptfs's nonce and tag), then one `fsync`: what gocryptfs's
//!   write path and its `fsync` do, without FUSE;
//! - `v3 commit`: format 3's `append_generation` sealing the 64 KiB blocks the writes touched
//!   (the mount's block size) and its footer, two syncs;
//! - `v4 patch`: `Chain::append`, 100 sealed units and a patch footer, two syncs.
//!
//! Each works on its own 256 MiB container (or file) in `--dir`, made first from the same random
//! bytes. Rounds are interleaved (every case once per round, the order rotated), the table gives
//! the median round and ratios to `gocryptfs-like`.
//!
//! ```text
//! cargo run --release --example commit_probe -- [--rounds 30 (at most 64)] [--mib 256] [--dir /var/tmp]
//! ```

use qeltrix::append::{append_generation, Planned};
use qeltrix::chain::{Chain, Link};
use qeltrix::codec::CompressPolicy;
use qeltrix::compress::Codec;
use qeltrix::crypto::{AeadKey, ContainerKeys, KeyFileKey, SystemEntropy};
use qeltrix::format::{FormatVersion, UNIT};
use qeltrix::reader::unlock;
use qeltrix::{CipherId, CompressMode, ContainerInfo, FileMeta, Key, PackOptions, Recipient};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

const WRITES: usize = 100;
const BLOCK: u64 = 64 << 10;

struct Args {
    rounds: usize,
    mib: u64,
    dir: std::path::PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 30,
        mib: 256,
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => a.rounds = value.parse().expect("--rounds N"),
            "--mib" => a.mib = value.parse().expect("--mib N"),
            "--dir" => a.dir = value.into(),
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("opens")
}

fn info_of(file: &File) -> ContainerInfo {
    ContainerInfo::read(file).expect("a container")
}

fn meta() -> FileMeta {
    FileMeta {
        name: b"probe".to_vec(),
        mode: 0o600,
        mtime_sec: 1,
        mtime_nsec: 0,
    }
}

/// A commit of the pages in `pages` (4 KiB page numbers, sorted, distinct) of `plain`.
trait Case {
    fn name(&self) -> &'static str;
    fn commit(&mut self, plain: &[u8], pages: &[u64]);
}

struct Gocryptfs {
    file: File,
    key: AeadKey,
    nonce: u64,
}

impl Case for Gocryptfs {
    fn name(&self) -> &'static str {
        "gocryptfs-like"
    }
    fn commit(&mut self, plain: &[u8], pages: &[u64]) {
        for &p in pages {
            let mut sealed = plain[(p * UNIT) as usize..][..UNIT as usize].to_vec();
            self.nonce += 1;
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&self.nonce.to_le_bytes());
            self.key.seal(&nonce, &p.to_le_bytes(), &mut sealed);
            let mut block = nonce[..].to_vec();
            block.extend_from_slice(&[0; 4]);
            block.extend_from_slice(&sealed);
            self.file
                .write_all_at(&block, 18 + p * (UNIT + 32))
                .expect("writes");
        }
        self.file.sync_all().expect("syncs");
    }
}

struct V3 {
    file: File,
    data_key: qeltrix::crypto::DataKey,
}

impl Case for V3 {
    fn name(&self) -> &'static str {
        "v3 commit"
    }
    fn commit(&mut self, plain: &[u8], pages: &[u64]) {
        let info = info_of(&self.file);
        let touched: std::collections::BTreeSet<u64> = pages.iter().map(|p| p * UNIT / BLOCK).collect();
        let plan: Vec<Planned> = info
            .footer
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| match touched.contains(&(i as u64)) {
                true => Planned::Seal {
                    plain_offset: e.plain_offset,
                    plain_size: e.plain_size,
                },
                false => Planned::Keep,
            })
            .collect();
        let mut read = |offset: u64, buf: &mut [u8]| {
            buf.copy_from_slice(&plain[offset as usize..][..buf.len()]);
            Ok(())
        };
        let policy = CompressPolicy {
            mode: CompressMode::Never,
            level: 1,
            codec: Codec::default(),
        };
        append_generation(
            &self.file,
            &info,
            None,
            &self.data_key,
            &plan,
            &mut read,
            &meta(),
            policy,
            &SystemEntropy,
            true,
        )
        .expect("a v3 commit");
    }
}

struct V4 {
    file: File,
    keys: ContainerKeys,
    bound: Vec<u8>,
    chain: Chain,
    meta: FileMeta,
}

impl Case for V4 {
    fn name(&self) -> &'static str {
        "v4 patch"
    }
    fn commit(&mut self, plain: &[u8], pages: &[u64]) {
        let units: Vec<(u64, &[u8])> = pages
            .iter()
            .map(|&p| (p * UNIT, &plain[(p * UNIT) as usize..][..UNIT as usize]))
            .collect();
        self.chain = self
            .chain
            .append(
                &self.file,
                &self.bound,
                &self.keys,
                &units,
                &self.meta,
                &SystemEntropy,
                true,
            )
            .expect("a patch");
    }
}

fn main() {
    let a = args();
    // One patch per round, and a chain holds at most MAX_DEPTH before it is folded.
    assert!(
        (1..=qeltrix::format::MAX_DEPTH as usize).contains(&a.rounds),
        "--rounds 1 … {}",
        qeltrix::format::MAX_DEPTH
    );
    let size = a.mib << 20;
    let dir = tempfile::tempdir_in(&a.dir).expect("a temporary folder");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut plain: Vec<u8> = (0..size).map(|_| next(&mut state) as u8).collect();
    let input = dir.path().join("plain");
    std::fs::write(&input, &plain).expect("writes the input");
    let key = Key::KeyFile(KeyFileKey::from_bytes([3; 32]));
    let opts = PackOptions {
        format: FormatVersion::V3,
        block_size: BLOCK as u32,
        compress: CompressMode::Never,
        ..PackOptions::default()
    };
    let recipient = Recipient::try_from(&key).expect("a key file recipient");
    let mut containers = Vec::new();
    for name in ["v3.qltx", "v4.qltx"] {
        let path = dir.path().join(name);
        qeltrix::pack(&input, &path, std::slice::from_ref(&recipient), &opts, false).expect("packs");
        containers.push(open_rw(&path));
    }
    let v4_file = containers.pop().expect("two");
    let v3_file = containers.pop().expect("two");
    let info = info_of(&v4_file);
    let keys = unlock(&info.header, &info.slots, &key).expect("the key opens it");
    let v3_info = info_of(&v3_file);
    let data_key = unlock(&v3_info.header, &v3_info.slots, &key)
        .expect("the key opens it")
        .data_key;
    let base = Link {
        generation: info.footer_v2.as_ref().and_then(|f| f.generation).expect("v3"),
        offset: info.trailer.footer_offset,
        size: info.trailer.footer_size,
        mac: info.footer.mac,
    };
    // gocryptfs's file: a header, then each 4 KiB page as nonce, page, tag; written whole.
    let go = {
        let path = dir.path().join("gocryptfs-like");
        let len = (18 + size / UNIT * (UNIT + 32)) as usize;
        let mut bytes = plain.clone();
        bytes.extend_from_slice(&plain[..len - plain.len()]);
        std::fs::write(&path, &bytes).expect("writes the gocryptfs-like file");
        open_rw(&path)
    };
    go.sync_all().expect("syncs");
    std::fs::remove_file(&input).expect("removes the input");
    let (v3_sync, v4_sync) = (
        v3_file.try_clone().expect("clones"),
        v4_file.try_clone().expect("clones"),
    );
    let dir_sync = File::open(dir.path()).and_then(|d| d.sync_all());
    let mut cases: Vec<Box<dyn Case>> = vec![
        Box::new(Gocryptfs {
            file: go,
            key: AeadKey::new(CipherId::Aes256Gcm, &[9; 32]),
            nonce: 0,
        }),
        Box::new(V3 {
            file: v3_file,
            data_key,
        }),
        Box::new(V4 {
            file: v4_file,
            bound: info.header.bound_fields(),
            keys,
            chain: Chain::over(base, size),
            meta: meta(),
        }),
    ];
    // Nothing made above is left for the kernel to write back during the rounds.
    for f in [&v3_sync, &v4_sync] {
        f.sync_all().expect("syncs");
    }
    drop(dir_sync);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..a.rounds {
        let mut pages: Vec<u64> = (0..WRITES).map(|_| next(&mut state) % (size / UNIT)).collect();
        pages.sort_unstable();
        pages.dedup();
        for &p in &pages {
            let at = (p * UNIT) as usize;
            for b in &mut plain[at..at + 64] {
                *b = next(&mut state) as u8;
            }
        }
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let t = Instant::now();
            cases[i].commit(&plain, &pages);
            times[i].push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let medians: Vec<f64> = times.iter_mut().map(median).collect();
    println!(
        "commit of {WRITES} random 4 KiB writes to a {} MiB file, until durable: median of {} interleaved rounds ({})",
        a.mib,
        a.rounds,
        a.dir.display()
    );
    println!("| case | p50 (ms) | / gocryptfs-like |");
    println!("|---|---|---|");
    for (case, m) in cases.iter().zip(&medians) {
        println!("| {} | {m:.2} | {:.2}x |", case.name(), m / medians[0]);
    }
}
