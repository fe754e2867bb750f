//! Where random bytes come from. Production code uses the operating system's generator; the
//! format's test vector injects [`SeededEntropy`] so that a container can be reproduced byte for
//! byte. Each request names its purpose (`context`), so a seeded source gives the same bytes to
//! the same block whatever order the worker threads run in.

use hkdf::Hkdf;
use sha2::Sha256;

pub trait Entropy: Send + Sync {
    /// Fills `out` with random bytes for the purpose named by `context`.
    fn fill(&self, context: &[u8], out: &mut [u8]);
}

/// The operating system's CSPRNG (through `ring`).
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&self, _context: &[u8], out: &mut [u8]) {
        use ring::rand::SecureRandom;
        // getrandom(2) does not fail once the kernel's pool is initialised; a failure here means
        // the system cannot produce keys at all, and continuing would be worse than stopping.
        ring::rand::SystemRandom::new()
            .fill(out)
            .expect("the operating system's random number generator failed");
    }
}

/// Deterministic bytes from a seed: HKDF-SHA256(seed, info = context). For test vectors only —
/// a container made with it has predictable keys.
#[doc(hidden)]
pub struct SeededEntropy(pub [u8; 32]);

impl Entropy for SeededEntropy {
    fn fill(&self, context: &[u8], out: &mut [u8]) {
        Hkdf::<Sha256>::new(Some(b"qeltrix test entropy"), &self.0)
            .expand(context, out)
            .expect("test entropy requests are short");
    }
}

#[cfg(test)]
impl SystemEntropy {
    pub fn fill_for_test(&self, out: &mut [u8]) {
        self.fill(b"test", out)
    }
}
