//! Seek latency benchmark: opens a container once (key derivation and footer MAC are timed
//! apart, not per read), then times N `Container::read_at` calls of a fixed length at random
//! offsets and prints the median, p99, mean and max in milliseconds, with the blocks each read
//! had to decrypt. Used by `scripts/bench.sh`; not a test.
//!
//! ```text
//! cargo run --release --example seek_latency -- C.qltx --key-file K --length 4096 --reads 1000
//! ```
//!
//! With `--cold`, the container's pages are dropped from the page cache (`posix_fadvise
//! DONTNEED`, outside the timed region) before every read, so each read also pays the disk.
//! The last line of output is a single `key=value` record for scripts.

use clap::Parser;
use qeltrix::crypto::KeyFileKey;
use qeltrix::{Container, Key};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Time random-offset read_at calls on one open container")]
struct Args {
    /// The container to read.
    container: PathBuf,
    /// 32-byte key file (raw or hex), as made by `qeltrix keygen`.
    #[arg(long)]
    key_file: PathBuf,
    /// Bytes per read.
    #[arg(long, default_value_t = 4096)]
    length: u64,
    /// Number of timed reads.
    #[arg(long, default_value_t = 1000)]
    reads: usize,
    /// Untimed reads first (warm caches, branch predictors, allocator).
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Seed for the offsets, so runs are repeatable.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Drop the container from the page cache before every read.
    #[arg(long)]
    cold: bool,
}

/// splitmix64: a tiny deterministic generator, good enough to spread offsets.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn drop_page_cache(file: &File) {
    // SAFETY: a plain syscall on a file descriptor we own; it reads no memory of ours.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        eprintln!("warning: posix_fadvise failed ({rc}); reads may come from the page cache");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let key = Key::KeyFile(KeyFileKey::parse(&std::fs::read(&args.key_file)?)?);

    let started = Instant::now();
    let container = Container::open(&args.container, &key)?;
    let open_time = started.elapsed();

    let size = container.len();
    if size == 0 || args.length == 0 || args.reads == 0 {
        return Err("need a non-empty container, --length > 0 and --reads > 0".into());
    }
    let length = args.length.min(size);
    let span = size - length + 1; // offsets such that the whole read is inside the file
    let cache_handle = File::open(&args.container)?;
    let mut rng = SplitMix(args.seed);
    let mut buf = vec![0u8; length as usize];
    let mut times = Vec::with_capacity(args.reads);
    let mut blocks_touched = 0u64;

    for i in 0..args.warmup + args.reads {
        let offset = rng.next() % span;
        if args.cold {
            drop_page_cache(&cache_handle);
        }
        let t = Instant::now();
        let n = container.read_at(offset, &mut buf)?;
        let elapsed = t.elapsed();
        if n as u64 != length {
            return Err(format!("short read at {offset}: {n} of {length} bytes").into());
        }
        if i >= args.warmup {
            times.push(elapsed);
            let first = container.block_of(offset).expect("offset is inside the file");
            let last = container
                .block_of(offset + length - 1)
                .expect("end is inside the file");
            blocks_touched += last - first + 1;
        }
    }

    times.sort_unstable();
    let total: Duration = times.iter().sum();
    let median = percentile(&times, 0.5);
    let p99 = percentile(&times, 0.99);
    let mean = total / times.len() as u32;
    let max = *times.last().expect("at least one read");
    let blocks_per_read = blocks_touched as f64 / times.len() as f64;
    let block_size = container.info().header.block_size;

    println!(
        "{}: {} bytes in {} blocks of {} KiB; opened in {:.3} ms",
        args.container.display(),
        size,
        container.block_count(),
        block_size / 1024,
        ms(open_time)
    );
    println!(
        "{} reads of {} bytes ({}): median {:.3} ms, p99 {:.3} ms, mean {:.3} ms, max {:.3} ms, {:.2} blocks/read",
        times.len(),
        length,
        if args.cold { "cold page cache" } else { "warm page cache" },
        ms(median),
        ms(p99),
        ms(mean),
        ms(max),
        blocks_per_read
    );
    println!(
        "length={} reads={} cold={} median_ms={:.4} p99_ms={:.4} mean_ms={:.4} max_ms={:.4} blocks_per_read={:.3} open_ms={:.3}",
        length,
        times.len(),
        args.cold as u8,
        ms(median),
        ms(p99),
        ms(mean),
        ms(max),
        blocks_per_read,
        ms(open_time)
    );
    Ok(())
}
