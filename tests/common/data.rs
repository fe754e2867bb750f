//! Deterministic test data: one generator (SplitMix64) behind every random byte the tests use,
//! compressible text, and unique names.

use std::sync::atomic::{AtomicU64, Ordering};

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

/// SplitMix64: a tiny deterministic generator, so every test input is reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    /// The generator with its raw state set to `state` (no seed mixing), for data that was pinned
    /// with that seeding.
    pub fn from_state(state: u64) -> Self {
        Rng(state)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Fills `buf` 8 bytes (one `next_u64`, little-endian) at a time; a short tail takes the
    /// first bytes of one more value. Filling in multiples of 8 continues one stream exactly.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Deterministic, incompressible test bytes as a stream (stream `seed` from position 0): the same
/// bytes as [`random_bytes`] with that seed, for tests that produce or check data piecewise.
pub struct Data(Rng);

impl Data {
    pub fn new(seed: u64) -> Self {
        Data(Rng::new(seed))
    }

    /// The next bytes of the stream; lengths are multiples of 8 apart from the last chunk.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill(buf)
    }

    /// `len` bytes of stream `seed`: the same as `random_bytes(len, seed)`.
    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        random_bytes(len, seed)
    }
}

/// Incompressible bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    Rng::new(seed).fill(&mut out);
    out
}

/// Log-like text that deflate shrinks several times over, different for every seed.
pub fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "block", "cipher", "footer", "index", "seek", "stream", "vault", "nonce", "salt", "trailer",
        "header", "offset",
    ];
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 64);
    let mut line = 0u64;
    while out.len() < len {
        line += 1;
        out.extend_from_slice(format!("{line:08} ").as_bytes());
        for _ in 0..6 {
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
            out.push(b' ');
        }
        out.push(b'\n');
    }
    out.truncate(len);
    out
}

/// Which kind of plaintext a test packs.
#[derive(Clone, Copy, Debug)]
pub enum DataKind {
    Text,
    Random,
    /// Alternating 3000-byte runs of text and random bytes, so blocks differ in compressibility.
    Mixed,
}

pub fn data(kind: DataKind, len: usize, seed: u64) -> Vec<u8> {
    match kind {
        DataKind::Text => text_bytes(len, seed),
        DataKind::Random => random_bytes(len, seed),
        DataKind::Mixed => striped(len, seed, 3000, 2),
    }
}

/// Runs of `run` bytes: the first of every `period` runs text, the others random (with runs
/// longer than a block, whole blocks are compressible or not).
pub fn striped(len: usize, seed: u64, run: usize, period: usize) -> Vec<u8> {
    let (text, random) = (text_bytes(len, seed), random_bytes(len, seed + 1));
    (0..len)
        .map(|i| {
            if (i / run).is_multiple_of(period) {
                text[i]
            } else {
                random[i]
            }
        })
        .collect()
}

/// A number never returned before in this test process: unique file names without a clock.
pub fn unique_suffix() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
