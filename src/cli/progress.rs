//! Progress bars and human-readable sizes. Bars go to stderr, and only when it is a terminal.

use indicatif::{ProgressBar, ProgressStyle};
use qeltrix::PackSummary;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

/// A byte-counting bar (or a spinner when the total is unknown); hidden when `quiet` or when
/// stderr is not a terminal.
pub fn bar(total: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec} {msg}")
                .expect("valid template"),
        ),
    };
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// `1.50 MiB` style sizes.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// Throughput in MB/s (10^6 bytes per second, as `dd` and the benchmarks print it).
pub fn speed(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    format!("{:.0} MB/s", bytes as f64 / secs / 1e6)
}

/// The summary `pack` and `reencrypt` print on stderr.
pub fn print_pack_summary(input: &Path, output: &Path, s: &PackSummary, started: Instant) {
    let overhead = s.container_size as i128 - s.original_size as i128;
    let pct = if s.original_size > 0 {
        format!(" ({:+.2}%)", overhead as f64 * 100.0 / s.original_size as f64)
    } else {
        String::new()
    };
    eprintln!(
        "Packed {} -> {}\n  blocks:    {} ({} compressed)\n  original:  {}\n  container: {}\n  overhead:  {}{}{pct}\n  speed:     {} in {:.2} s",
        input.display(),
        output.display(),
        s.blocks,
        s.compressed_blocks,
        size(s.original_size),
        size(s.container_size),
        if overhead < 0 { "-" } else { "+" },
        size(overhead.unsigned_abs() as u64),
        speed(s.original_size, started.elapsed()),
        started.elapsed().as_secs_f64(),
    );
}
