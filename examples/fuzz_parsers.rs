//! In-process fuzz driver, on the stable toolchain: feeds random bytes and mutations of valid
//! inputs (bit flips, byte overwrites, truncations, insertions, deletions, splices of two seeds,
//! boundary integers) to every parser in `qeltrix::fuzzing` for a given time, and counts panics.
//! Inputs that panicked are saved under `target/fuzz-crashes/TARGET-N.bin`.
//!
//! ```text
//! cargo run --release --example fuzz_parsers -- [SECONDS_PER_TARGET] [TARGET...] [--seed N]
//! cargo run --example fuzz_parsers -- --write-seeds fuzz/corpus   # seed corpora for cargo fuzz
//! ```
//! Exits 1 if any input panicked. `scripts/fuzz.sh` runs it; `docs/FUZZING.md` has the results.

use qeltrix::fuzzing::{seeds, TARGETS};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// xorshift64*: reproducible from `--seed`, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Little-endian integers that sit on parser boundaries.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xfff,
    0x1000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
];

/// One input: a seed changed by one to eight mutations, or (one time in sixteen) random bytes.
fn input(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(16) == 0 {
        let len = rng.below(2048);
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(8) {
        mutate(rng, &mut data, seeds);
    }
    data
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(8) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = rng.next() as u8;
        }
        2 => {
            // Truncate.
            data.truncate(rng.below(len + 1));
        }
        3 => {
            // Insert random bytes.
            let at = rng.below(len + 1);
            let n = 1 + rng.below(64);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            data.splice(at..at, bytes);
        }
        4 if len > 0 => {
            // Delete a range.
            let at = rng.below(len);
            let end = (at + 1 + rng.below(256)).min(len);
            data.drain(at..end);
        }
        5 => {
            // Splice: our head, another seed's tail.
            let other = &seeds[rng.below(seeds.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        6 if len > 0 => {
            // A boundary integer, 1 to 8 bytes wide, little-endian.
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let width = [1, 2, 4, 8][rng.below(4)];
            let at = rng.below(len);
            let bytes = v.to_le_bytes();
            let n = width.min(len - at);
            data[at..at + n].copy_from_slice(&bytes[..n]);
        }
        _ if len > 1 => {
            // Copy a chunk within the input.
            let (from, to) = (rng.below(len), rng.below(len));
            let n = (1 + rng.below(64)).min(len - from).min(len - to);
            let chunk = data[from..from + n].to_vec();
            data[to..to + n].copy_from_slice(&chunk);
        }
        _ => data.push(rng.next() as u8),
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    if let Some(i) = args.iter().position(|a| a == "--seed") {
        seed = args.get(i + 1).and_then(|s| s.parse().ok()).expect("--seed N");
        args.drain(i..i + 2);
    }
    // `--write-seeds DIR`: the seed inputs as files, DIR/TARGET/seed-N (a corpus for cargo fuzz).
    if let Some(i) = args.iter().position(|a| a == "--write-seeds") {
        let dir = std::path::PathBuf::from(args.get(i + 1).expect("--write-seeds DIR"));
        for (name, _) in TARGETS {
            let target_dir = dir.join(name);
            std::fs::create_dir_all(&target_dir).expect("creating the corpus folder");
            for (n, bytes) in seeds(name).iter().enumerate() {
                std::fs::write(target_dir.join(format!("seed-{n}")), bytes).expect("writing a seed");
            }
        }
        return;
    }
    let seconds: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(10);
    let wanted: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    for w in &wanted {
        assert!(TARGETS.iter().any(|(n, _)| n == w), "unknown target {w}");
    }

    // Panics are counted, not printed by the default hook for each input.
    let last_panic = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let last_panic = std::sync::Arc::clone(&last_panic);
        std::panic::set_hook(Box::new(move |info| {
            *last_panic.lock().unwrap_or_else(|p| p.into_inner()) = info.to_string();
        }));
    }
    let crash_dir = std::path::Path::new("target/fuzz-crashes");
    let mut total_panics = 0;
    println!(
        "{:<16} {:>12} {:>8} {:>14}",
        "target", "iterations", "panics", "slowest input"
    );
    for (name, run) in TARGETS {
        if !wanted.is_empty() && !wanted.contains(name) {
            continue;
        }
        let seeds = seeds(name);
        let mut rng = Rng(seed ^ name.len() as u64 ^ (name.as_bytes()[0] as u64) << 32);
        let (start, budget) = (Instant::now(), Duration::from_secs(seconds));
        let (mut iterations, mut panics, mut slowest) = (0u64, 0u64, Duration::ZERO);
        while start.elapsed() < budget {
            let data = input(&mut rng, &seeds);
            let t = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| run(&data)));
            slowest = slowest.max(t.elapsed());
            iterations += 1;
            if outcome.is_err() {
                panics += 1;
                let _ = std::fs::create_dir_all(crash_dir);
                let file = crash_dir.join(format!("{name}-{panics}.bin"));
                let _ = std::fs::write(&file, &data);
                eprintln!(
                    "{name}: panic on {} ({} bytes): {}",
                    file.display(),
                    data.len(),
                    last_panic.lock().unwrap_or_else(|p| p.into_inner())
                );
            }
        }
        total_panics += panics;
        println!("{name:<16} {iterations:>12} {panics:>8} {:>12.1?}", slowest);
    }
    println!("panics: {total_panics}");
    if total_panics > 0 {
        std::process::exit(1);
    }
}
