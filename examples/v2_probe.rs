//! Format v2 probe: measurements for the "Format v2" issue. It changes nothing in the format or
//! the library; it times the primitives v2 would use, on this machine, in one run:
//!
//! 1. Hash CPU: SHA-256 (the `sha2` crate, today's per-block content hash) against BLAKE3
//!    (`blake3::hash`, one thread: pack already hashes blocks on several threads at once, so a
//!    per-block `update_rayon` would only compete with the other blocks' workers).
//! 2. AEAD CPU through ring: AES-256-GCM and ChaCha20-Poly1305, seal and open, on 1 MiB, 64 KiB
//!    and 16 KiB buffers, plus the fixed per-read cost of deriving a block key (HKDF-SHA256, as
//!    `derive_cdk` does) and building the ring key.
//! 3. The segment cost model for a 4 KiB read in the middle of a 1 MiB block: open the whole block
//!    (v1) or one 64 KiB / 16 KiB segment (v2), and the tag bytes each segment size adds per GiB.
//! 4. Cold `pread` latency of 4 KiB, 16 KiB, 64 KiB and 1 MiB at random aligned offsets of a file
//!    of random bytes that the probe writes in a temporary folder and deletes afterwards.
//!
//! CPU cases run in interleaved rounds (every case once per round, the order rotated each
//! round) and report the median round. Time is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`),
//! so "GB/s per core" is not diluted by other processes on a shared machine; wall-clock figures
//! are printed beside it as a check. Buffers are refilled between timed batches and stay in cache.
//!
//! ```text
//! cargo run --release --example v2_probe
//! cargo run --release --example v2_probe -- --rounds 15 --mib-per-case 64 --disk-reads 100 \
//!     --file-gib 1 --dir /var/tmp [--no-disk] [--no-cpu]
//! ```
//!
//! Results and what follows from them: `docs/FORMAT-V2-MEASUREMENTS.md`.

use ring::aead::{Aad, Algorithm, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GIB: u64 = 1 << 30;
const TAG_LEN: usize = 16;
/// Calls per timed batch of the key-setup case.
const KEY_SETUP_BATCH: usize = 256;
/// The size of the application read the cost model is about.
const APP_READ: usize = 4 * KIB;
const BLOCK: usize = MIB;
const SEGMENTS: [usize; 2] = [64 * KIB, 16 * KIB];
const DISK_SIZES: [usize; 4] = [4 * KIB, 16 * KIB, 64 * KIB, MIB];

struct Options {
    rounds: usize,
    mib_per_case: usize,
    disk_reads: usize,
    pool_kib: usize,
    file_gib: u64,
    dir: Option<PathBuf>,
    cpu: bool,
    disk: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        rounds: 15,
        mib_per_case: 64,
        disk_reads: 100,
        pool_kib: 2048,
        file_gib: 1,
        dir: None,
        cpu: true,
        disk: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--rounds" => o.rounds = number(&value("--rounds")?)?,
            "--mib-per-case" => o.mib_per_case = number(&value("--mib-per-case")?)?,
            "--disk-reads" => o.disk_reads = number(&value("--disk-reads")?)?,
            "--pool-kib" => o.pool_kib = number(&value("--pool-kib")?)?,
            "--file-gib" => o.file_gib = number(&value("--file-gib")?)? as u64,
            "--dir" => o.dir = Some(PathBuf::from(value("--dir")?)),
            "--no-cpu" => o.cpu = false,
            "--no-disk" => o.disk = false,
            other => {
                return Err(format!(
                    "unknown argument {other:?} (see the top of examples/v2_probe.rs)"
                ))
            }
        }
    }
    if o.rounds == 0 || o.mib_per_case == 0 || o.disk_reads == 0 || o.file_gib == 0 {
        return Err("counts must be at least 1".into());
    }
    Ok(o)
}

fn number(s: &str) -> Result<usize, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

/// The CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec that we own and reads no other memory of ours.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// splitmix64: deterministic filler for buffers and offsets.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aes,
    ChaCha,
}

impl Cipher {
    fn algorithm(self) -> &'static Algorithm {
        match self {
            Cipher::Aes => &AES_256_GCM,
            Cipher::ChaCha => &CHACHA20_POLY1305,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cipher::Aes => "AES-256-GCM",
            Cipher::ChaCha => "ChaCha20-Poly1305",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Sha256,
    Blake3,
    Seal(Cipher),
    Open(Cipher),
    /// HKDF-SHA256 of a block key (the inputs `derive_cdk` uses) and the ring key built from it.
    KeySetup(Cipher),
}

impl Op {
    fn name(self) -> String {
        match self {
            Op::Sha256 => "SHA-256 (sha2)".into(),
            Op::Blake3 => "BLAKE3 (blake3::hash, 1 thread)".into(),
            Op::Seal(c) => format!("{} seal", c.name()),
            Op::Open(c) => format!("{} open", c.name()),
            Op::KeySetup(c) => format!("HKDF block key + {} key", c.name()),
        }
    }
}

/// One measured case: an operation on buffers of one size, with its per-round results.
struct Case {
    op: Op,
    size: usize,
    /// What every buffer is reset to before a batch: random plaintext, or for `Open` a sealed
    /// segment (ciphertext ‖ tag).
    pristine: Vec<u8>,
    pool: Vec<Vec<u8>>,
    key: Option<LessSafeKey>,
    /// Per round: CPU seconds per call, wall seconds per call.
    cpu_per_call: Vec<f64>,
    wall_per_call: Vec<f64>,
}

/// The additional data a v2 segment would bind: container id (16) ‖ block index (8) ‖ segment
/// index (8) ‖ last-segment flag (1). The same 33 bytes are used for every size.
const AAD: [u8; 33] = [7u8; 33];
const NONCE: [u8; 12] = [9u8; 12];

impl Case {
    fn new(op: Op, size: usize, pool_bytes: usize, rng: &mut SplitMix) -> Case {
        let mut key_bytes = [0u8; 32];
        rng.fill(&mut key_bytes);
        let key = match op {
            Op::Seal(c) | Op::Open(c) => Some(LessSafeKey::new(
                UnboundKey::new(c.algorithm(), &key_bytes).expect("32-byte key"),
            )),
            _ => None,
        };
        let mut pristine = vec![0u8; size];
        rng.fill(&mut pristine);
        if let (Op::Open(_), Some(k)) = (op, &key) {
            let tag = k
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(NONCE),
                    Aad::from(&AAD),
                    &mut pristine,
                )
                .expect("seal");
            pristine.extend_from_slice(tag.as_ref());
        }
        let count = match op {
            Op::KeySetup(_) => 0,
            _ => (pool_bytes / size).max(1),
        };
        Case {
            op,
            size,
            pool: vec![pristine.clone(); count],
            pristine,
            key,
            cpu_per_call: Vec::new(),
            wall_per_call: Vec::new(),
        }
    }

    /// Runs timed batches until about `target` bytes were processed (or, for key setup, a fixed
    /// number of batches) and records this round's per-call CPU and wall time.
    fn run_round(&mut self, target: usize) {
        let (batches, calls_per_batch) = match self.op {
            Op::KeySetup(_) => (8, KEY_SETUP_BATCH),
            _ => {
                let per_batch = self.pool.len() * self.size;
                (target.div_ceil(per_batch), self.pool.len())
            }
        };
        let mut cpu = Duration::ZERO;
        let mut wall = Duration::ZERO;
        for _ in 0..batches {
            if matches!(self.op, Op::Open(_)) {
                for buf in &mut self.pool {
                    buf.copy_from_slice(&self.pristine);
                }
            }
            let (c0, w0) = (thread_cpu(), Instant::now());
            self.batch();
            wall += w0.elapsed();
            cpu += thread_cpu() - c0;
        }
        let calls = (batches * calls_per_batch) as f64;
        self.cpu_per_call.push(cpu.as_secs_f64() / calls);
        self.wall_per_call.push(wall.as_secs_f64() / calls);
    }

    fn batch(&mut self) {
        match self.op {
            Op::Sha256 => {
                for buf in &self.pool {
                    black_box(Sha256::digest(black_box(buf)));
                }
            }
            Op::Blake3 => {
                for buf in &self.pool {
                    black_box(blake3::hash(black_box(buf)));
                }
            }
            Op::Seal(_) => {
                let key = self.key.as_ref().expect("key");
                for buf in &mut self.pool {
                    // Benchmark only: the same nonce over and over. Each real segment has its own.
                    let tag = key
                        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(NONCE), Aad::from(&AAD), buf)
                        .expect("seal");
                    black_box(tag.as_ref());
                }
            }
            Op::Open(_) => {
                let key = self.key.as_ref().expect("key");
                for buf in &mut self.pool {
                    let plain = key
                        .open_in_place(Nonce::assume_unique_for_key(NONCE), Aad::from(&AAD), buf)
                        .expect("the pristine segment authenticates");
                    black_box(plain);
                }
            }
            Op::KeySetup(c) => {
                let data_key = [1u8; 32];
                let salt = [2u8; 32];
                let (container_id, content_hash) = ([3u8; 16], [4u8; 32]);
                for i in 0..KEY_SETUP_BATCH as u64 {
                    let mut cdk = [0u8; 32];
                    hkdf::Hkdf::<Sha256>::new(Some(&salt), black_box(&data_key))
                        .expand_multi_info(
                            &[b"qeltrix v1 cdk", &container_id, &i.to_le_bytes(), &content_hash],
                            &mut cdk,
                        )
                        .expect("32-byte HKDF output");
                    let key = LessSafeKey::new(UnboundKey::new(c.algorithm(), &cdk).expect("32-byte key"));
                    black_box(key);
                }
            }
        }
    }

    fn median_cpu(&self) -> f64 {
        median(&self.cpu_per_call)
    }

    fn median_wall(&self) -> f64 {
        median(&self.wall_per_call)
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn size_name(size: usize) -> String {
    if size >= MIB && size.is_multiple_of(MIB) {
        format!("{} MiB", size / MIB)
    } else {
        format!("{} KiB", size / KIB)
    }
}

fn cpu_info() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let flags = field("flags");
    let flags: Vec<&str> = flags.split_whitespace().collect();
    let has = |f: &str| if flags.contains(&f) { "yes" } else { "no" };
    println!("cpu: {}", field("model name"));
    println!(
        "cores available: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "flags: aes {} · vaes {} · pclmulqdq {} · vpclmulqdq {} · sha_ni {} · avx2 {} · avx512f {}",
        has("aes"),
        has("vaes"),
        has("pclmulqdq"),
        has("vpclmulqdq"),
        has("sha_ni"),
        has("avx2"),
        has("avx512f")
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel: {}", kernel.trim());
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Returns, for the v1 block and each v2 segment size, the AES-256-GCM open plus key setup in µs.
fn cpu_phase(o: &Options) -> Vec<(usize, f64)> {
    let mut rng = SplitMix(0x5eed);
    let mut cases = Vec::new();
    for size in [MIB, 64 * KIB] {
        cases.push(Case::new(Op::Sha256, size, o.pool_kib * KIB, &mut rng));
        cases.push(Case::new(Op::Blake3, size, o.pool_kib * KIB, &mut rng));
    }
    for c in [Cipher::Aes, Cipher::ChaCha] {
        for size in [MIB, 64 * KIB, 16 * KIB] {
            cases.push(Case::new(Op::Seal(c), size, o.pool_kib * KIB, &mut rng));
            cases.push(Case::new(Op::Open(c), size, o.pool_kib * KIB, &mut rng));
        }
        cases.push(Case::new(Op::KeySetup(c), 0, o.pool_kib * KIB, &mut rng));
    }
    let target = o.mib_per_case * MIB;
    println!(
        "\n## CPU: {} rounds (+1 warm-up, discarded), ~{} MiB per case per round, order rotated each round",
        o.rounds, o.mib_per_case
    );
    println!("load average before: {}", loadavg());
    let started = Instant::now();
    for round in 0..=o.rounds {
        let n = cases.len();
        for k in 0..n {
            cases[(k + round) % n].run_round(target);
        }
        if round == 0 {
            for case in &mut cases {
                case.cpu_per_call.clear();
                case.wall_per_call.clear();
            }
        }
    }
    println!(
        "load average after: {} ({:.0} s)",
        loadavg(),
        started.elapsed().as_secs_f64()
    );

    let find = |op: Op, size: usize| {
        cases
            .iter()
            .find(|c| c.op == op && c.size == size)
            .expect("case measured")
    };

    println!("\nGB = 10^9 bytes; GB/s per core = bytes / thread CPU time; CPU s/GiB = thread CPU seconds per 2^30 bytes.");
    let header = "| operation | buffer | GB/s per core (CPU time) | GB/s (wall) | CPU s/GiB | µs per call |";
    let rule = "|---|---|---:|---:|---:|---:|";
    let row = |c: &Case| {
        let cpu = c.median_cpu();
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.3} | {:.1} |",
            c.op.name(),
            size_name(c.size),
            c.size as f64 / cpu / 1e9,
            c.size as f64 / c.median_wall() / 1e9,
            cpu * GIB as f64 / c.size as f64,
            cpu * 1e6
        );
    };

    println!("\n### 1. Content hash\n\n{header}\n{rule}");
    for size in [MIB, 64 * KIB] {
        row(find(Op::Sha256, size));
        row(find(Op::Blake3, size));
    }

    println!("\n### 2. AEAD seal (pack) and open (read), ring\n\n{header}\n{rule}");
    for c in [Cipher::Aes, Cipher::ChaCha] {
        for op in [Op::Seal(c), Op::Open(c)] {
            for size in [MIB, 64 * KIB, 16 * KIB] {
                row(find(op, size));
            }
        }
    }
    println!(
        "\nFixed cost per block read (any layout), median of {} rounds:\n",
        o.rounds
    );
    println!("| operation | µs per call (CPU) | µs per call (wall) |\n|---|---:|---:|");
    for c in [Cipher::Aes, Cipher::ChaCha] {
        let k = find(Op::KeySetup(c), 0);
        println!(
            "| {} | {:.2} | {:.2} |",
            k.op.name(),
            k.median_cpu() * 1e6,
            k.median_wall() * 1e6
        );
    }

    println!(
        "\n### 3. Segment cost model: CPU to authenticate a {} read in the middle of a {} block\n",
        size_name(APP_READ),
        size_name(BLOCK)
    );
    println!(
        "The read opens the one AEAD unit that holds it; the block key setup above is paid either way.\n"
    );
    println!("| layout | bytes opened | AES-256-GCM open µs | + key setup µs | ChaCha20-Poly1305 open µs | + key setup µs |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut auth_us = Vec::new();
    let units = [(format!("v1: whole {} block", size_name(BLOCK)), BLOCK)]
        .into_iter()
        .chain(
            SEGMENTS
                .iter()
                .map(|&s| (format!("v2: one {} segment", size_name(s)), s)),
        );
    for (name, size) in units {
        let aes = find(Op::Open(Cipher::Aes), size).median_cpu() * 1e6;
        let chacha = find(Op::Open(Cipher::ChaCha), size).median_cpu() * 1e6;
        let aes_key = find(Op::KeySetup(Cipher::Aes), 0).median_cpu() * 1e6;
        let chacha_key = find(Op::KeySetup(Cipher::ChaCha), 0).median_cpu() * 1e6;
        auth_us.push((size, aes + aes_key));
        println!(
            "| {name} | {} | {aes:.1} | {:.1} | {chacha:.1} | {:.1} |",
            size + TAG_LEN,
            aes + aes_key,
            chacha + chacha_key
        );
    }
    let sha = find(Op::Sha256, MIB).median_cpu() * 1e6;
    let b3 = find(Op::Blake3, MIB).median_cpu() * 1e6;
    println!(
        "\n(`read_at` opens with verify off. A verifying whole-block read adds the content hash of the block: SHA-256 {sha:.1} µs, BLAKE3 {b3:.1} µs per 1 MiB.)"
    );

    println!("\n### Pack CPU per GiB of incompressible input (content hash + seal, one core)\n");
    println!(
        "| hash | cipher | hash CPU s/GiB | seal CPU s/GiB | total CPU s/GiB |\n|---|---|---:|---:|---:|"
    );
    for c in [Cipher::Aes, Cipher::ChaCha] {
        let seal = find(Op::Seal(c), MIB).median_cpu() * GIB as f64 / MIB as f64;
        for h in [Op::Sha256, Op::Blake3] {
            let hash = find(h, MIB).median_cpu() * GIB as f64 / MIB as f64;
            println!(
                "| {} | {} | {hash:.3} | {seal:.3} | {:.3} |",
                h.name(),
                c.name(),
                hash + seal
            );
        }
    }
    let sha_gib = find(Op::Sha256, MIB).median_cpu() * GIB as f64 / MIB as f64;
    let b3_gib = find(Op::Blake3, MIB).median_cpu() * GIB as f64 / MIB as f64;
    println!(
        "\nBLAKE3 instead of SHA-256 on 1 MiB blocks saves {:.3} CPU s per GiB packed ({:.1}x less hash CPU).",
        sha_gib - b3_gib,
        sha_gib / b3_gib
    );
    auth_us
}

fn tag_overhead() {
    println!(
        "\n### Tag bytes per GiB of plaintext (16-byte tag per AEAD unit; nonces derived, not stored)\n"
    );
    println!("| unit | units per GiB | tag bytes per GiB | overhead |\n|---|---:|---:|---:|");
    for unit in [BLOCK, 64 * KIB, 16 * KIB] {
        let units = GIB / unit as u64;
        let bytes = units * TAG_LEN as u64;
        let shown = if bytes >= MIB as u64 {
            format!("{} MiB", bytes / MIB as u64)
        } else {
            format!("{} KiB", bytes / KIB as u64)
        };
        println!(
            "| {} | {units} | {shown} | {:.4} % |",
            size_name(unit),
            bytes as f64 / GIB as f64 * 100.0
        );
    }
}

/// Drops `file` from the page cache; an error here would make reads warm, so it is fatal.
fn fadvise(file: &File, advice: libc::c_int) {
    // SAFETY: a plain syscall on a file descriptor we own; it reads no memory of ours.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, advice) };
    assert_eq!(rc, 0, "posix_fadvise({advice}) failed");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn disk_phase(o: &Options) -> Result<Vec<(usize, f64)>, Box<dyn std::error::Error>> {
    let parent = o.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new().prefix("v2_probe.").tempdir_in(&parent)?;
    let path = dir.path().join("random.bin");
    let file_len = o.file_gib * GIB;
    println!("\n## Disk: cold pread latency");
    println!(
        "file: {} ({} GiB of random bytes, deleted at the end)",
        path.display(),
        o.file_gib
    );
    let mut rng = SplitMix(0xd15c);
    {
        let started = Instant::now();
        let mut file = File::create(&path)?;
        let mut chunk = vec![0u8; 4 * MIB];
        for _ in 0..file_len / chunk.len() as u64 {
            rng.fill(&mut chunk);
            file.write_all(&chunk)?;
        }
        file.sync_all()?;
        fadvise(&file, libc::POSIX_FADV_DONTNEED);
        println!("written and synced in {:.1} s", started.elapsed().as_secs_f64());
    }
    let dropped = if is_root() {
        match std::fs::write("/proc/sys/vm/drop_caches", "3") {
            Ok(()) => "yes (root): echo 3 > /proc/sys/vm/drop_caches once before the reads".to_string(),
            Err(e) => format!("no: writing /proc/sys/vm/drop_caches failed ({e})"),
        }
    } else {
        "no (not root)".to_string()
    };
    println!("drop_caches: {dropped}");
    println!(
        "before every timed read: posix_fadvise(DONTNEED) on the whole file (untimed); each size is read \
         through one fd with POSIX_FADV_RANDOM (no readahead) and one with the kernel's default readahead"
    );

    let no_readahead = File::open(&path)?;
    fadvise(&no_readahead, libc::POSIX_FADV_RANDOM);
    let default_readahead = File::open(&path)?;
    let fds = [
        ("no readahead", &no_readahead),
        ("default readahead", &default_readahead),
    ];
    let mut buf = vec![0u8; MIB];
    let mut read_at = |file: &File, size: usize, rng: &mut SplitMix| -> std::io::Result<f64> {
        let slots = file_len / size as u64;
        let offset = (rng.next() % slots) * size as u64;
        fadvise(file, libc::POSIX_FADV_DONTNEED);
        let started = Instant::now();
        file.read_exact_at(&mut buf[..size], offset)?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..8 {
        read_at(&no_readahead, 4 * KIB, &mut rng)?; // wake the device; untimed
    }
    // samples[fd][size]
    let series = fds.len() * DISK_SIZES.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); series];
    let started = Instant::now();
    for i in 0..o.disk_reads {
        for k in 0..series {
            let j = (k + i) % series;
            let (fd, size) = (j / DISK_SIZES.len(), j % DISK_SIZES.len());
            samples[j].push(read_at(fds[fd].1, DISK_SIZES[size], &mut rng)?);
        }
    }
    println!(
        "{} reads per size and fd, all series interleaved, offsets aligned to the read size, {:.1} s\n",
        o.disk_reads,
        started.elapsed().as_secs_f64()
    );
    println!(
        "| read | fd | p50 ms | p99 ms | mean ms | max ms | MB/s at p50 |\n|---|---|---:|---:|---:|---:|---:|"
    );
    let mut p50s = Vec::new();
    for (j, v) in samples.iter_mut().enumerate() {
        let (fd, size) = (j / DISK_SIZES.len(), DISK_SIZES[j % DISK_SIZES.len()]);
        v.sort_by(f64::total_cmp);
        let p50 = percentile(v, 0.50);
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} |",
            size_name(size),
            fds[fd].0,
            p50,
            percentile(v, 0.99),
            v.iter().sum::<f64>() / v.len() as f64,
            v[v.len() - 1],
            size as f64 / (p50 / 1e3) / 1e6
        );
        if fd == 0 {
            p50s.push((size, p50));
        }
    }
    drop((no_readahead, default_readahead));
    dir.close()?;
    println!("\ntemporary folder removed");
    Ok(p50s)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = parse_options().map_err(|e| format!("v2_probe: {e}"))?;
    println!("# Qeltrix Format v2 probe\n");
    cpu_info();
    tag_overhead();
    let auth_us = if o.cpu { cpu_phase(&o) } else { Vec::new() };
    if o.disk {
        let p50s = disk_phase(&o)?;
        println!(
            "\n### Cold {} app read: disk p50 of the unit read (no readahead) + AES-256-GCM open and key setup (CPU)\n",
            size_name(APP_READ)
        );
        println!("| layout | unit read from disk | disk p50 ms | authenticate ms | total ms |\n|---|---|---:|---:|---:|");
        let units = [
            ("v1", BLOCK),
            ("v2", 64 * KIB),
            ("v2", 16 * KIB),
            ("floor: 4 KiB, nothing to open", APP_READ),
        ];
        for (name, unit) in units {
            let disk = p50s.iter().find(|(s, _)| *s == unit).map_or(f64::NAN, |x| x.1);
            let auth = auth_us
                .iter()
                .find(|(s, _)| *s == unit)
                .map_or(0.0, |x| x.1 / 1e3);
            println!(
                "| {name} | {} | {disk:.3} | {auth:.3} | {:.3} |",
                size_name(unit),
                disk + auth
            );
        }
    }
    Ok(())
}
