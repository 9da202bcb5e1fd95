//! Sources of randomness.
//!
//! The ring draws every random value (key ids, master keys, data keys, nonces,
//! message ids) from one [`RandomSource`]. The default is the operating
//! system's generator, [`OsRandom`].

use crate::error::{Error, Result};
use std::fmt::Debug;

/// A cryptographically secure random number generator.
///
/// Implementations must be safe to call from many threads at once.
pub trait RandomSource: Send + Sync + Debug {
    /// Fills `buf` with random bytes, or fails with [`Error::Random`].
    fn fill(&self, buf: &mut [u8]) -> Result<()>;
}

/// The operating system's random number generator (`getrandom`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<()> {
        getrandom::fill(buf).map_err(|_| Error::Random)
    }
}

pub(crate) fn random_array<const N: usize>(rng: &dyn RandomSource) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    rng.fill(&mut out)?;
    Ok(out)
}
