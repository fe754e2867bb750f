//! Where random bytes come from. Production code uses the operating system's generator; the
//! format's test vector injects [`SeededEntropy`] so that a container can be reproduced byte for
//! byte. Each request names its purpose (`context`), so a seeded source gives the same bytes to
//! the same block whatever order the worker threads run in.

use hkdf::Hkdf;
use sha2::Sha256;

/// A source of random bytes for keys, salts, nonces and container ids.
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
    /// Fills `out` for a test, under the purpose "test".
    pub fn fill_for_test(&self, out: &mut [u8]) {
        self.fill(b"test", out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(seed: u8, context: &[u8], len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        SeededEntropy([seed; 32]).fill(context, &mut out);
        out
    }

    #[test]
    fn seeded_entropy_gives_the_same_bytes_for_the_same_seed_and_purpose() {
        assert_eq!(seeded(1, b"data key", 32), seeded(1, b"data key", 32));
        let e = SeededEntropy([9; 32]);
        let (mut a, mut b) = ([0u8; 56], [0u8; 56]);
        e.fill(b"block \x05\0\0\0\0\0\0\0", &mut a);
        e.fill(b"slot 0 salt", &mut [0u8; 32]);
        e.fill(b"block \x05\0\0\0\0\0\0\0", &mut b);
        assert_eq!(a, b, "other requests in between do not change the answer");
    }

    #[test]
    fn seeded_entropy_differs_between_purposes_and_between_seeds() {
        let base = seeded(1, b"slot 0 salt", 32);
        assert_ne!(base, seeded(1, b"slot 1 salt", 32));
        assert_ne!(base, seeded(1, b"slot 0 nonce", 32));
        assert_ne!(base, seeded(2, b"slot 0 salt", 32));
        assert_ne!(base, vec![0u8; 32]);
    }

    #[test]
    fn seeded_entropy_is_hkdf_sha256_with_the_documented_salt() {
        let mut expected = [0u8; 40];
        Hkdf::<Sha256>::new(Some(b"qeltrix test entropy"), &[3; 32])
            .expand(b"purpose", &mut expected)
            .unwrap();
        assert_eq!(seeded(3, b"purpose", 40), expected);
    }

    #[test]
    fn seeded_entropy_reproduces_the_format_md_test_vector() {
        assert_eq!(
            hex::encode(seeded(0x11, b"container id", 16)),
            "b11bb30826e30b9ba68438976b721d50"
        );
        assert_eq!(
            hex::encode(seeded(0x11, b"data key", 32)),
            "beded093c917a61d0a7de2e3e658b0a3dd3858cf4cd775f4691e20323d2cfe33"
        );
    }

    #[test]
    fn system_entropy_fills_the_whole_buffer_with_fresh_bytes() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        SystemEntropy.fill(b"x", &mut a);
        SystemEntropy.fill(b"x", &mut b);
        assert_ne!(a, b, "two draws for the same purpose differ");
        assert_ne!(a, [0u8; 64]);
        // Each half is filled, not only the start (2^-256 chance of a false failure).
        assert_ne!(&a[32..], &[0u8; 32]);
        let mut c = [0u8; 64];
        SystemEntropy.fill_for_test(&mut c);
        assert_ne!(c, a);
    }

    #[test]
    fn system_entropy_handles_an_empty_buffer() {
        SystemEntropy.fill(b"nothing", &mut []);
    }
}
