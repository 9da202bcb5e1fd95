//! Hazardous tools: correct only in tests. Never use them in production.
//!
//! [`InsecureSeededRandom`] makes a ring fully deterministic (key ids, key
//! material, nonces), which is how the frozen format vectors under
//! `tests/vectors/` are produced and checked.

use crate::error::Result;
use crate::random::RandomSource;
use sha2::{Digest, Sha256};
use std::sync::Mutex;

/// A deterministic byte generator seeded by the caller: SHA-256 in counter
/// mode over the seed. **Not secure**: anyone who knows the seed knows every
/// key the ring makes. For reproducible test vectors only.
#[derive(Debug)]
pub struct InsecureSeededRandom {
    seed: [u8; 32],
    state: Mutex<(u64, Vec<u8>)>,
}

impl InsecureSeededRandom {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        InsecureSeededRandom {
            seed,
            state: Mutex::new((0, Vec::new())),
        }
    }
}

impl RandomSource for InsecureSeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut written = 0;
        while written < buf.len() {
            if st.1.is_empty() {
                let mut h = Sha256::new();
                h.update(b"strongroom insecure seeded random");
                h.update(self.seed);
                h.update(st.0.to_be_bytes());
                st.0 += 1;
                st.1 = h.finalize().to_vec();
            }
            let take = (buf.len() - written).min(st.1.len());
            buf[written..written + take].copy_from_slice(&st.1[..take]);
            st.1.drain(..take);
            written += take;
        }
        Ok(())
    }
}
