//! Containers for secret bytes: zeroized on drop, redacted in `Debug`.

use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Secret bytes of any length (plaintext, data keys, random bytes).
///
/// The buffer is zeroized when dropped, `Debug` prints only the length, and
/// there is no `Serialize`, `Display` or `Clone`: reading the bytes is the
/// explicit call [`SecretBytes::expose_secret`]. Equality is constant-time.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `bytes`; they will be zeroized on drop.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret buffer.
    pub fn from_slice(bytes: &[u8]) -> Self {
        SecretBytes::new(bytes.to_vec())
    }

    /// Reads the secret bytes. Every call site is a place where a secret leaves
    /// its container: keep the borrow short.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        SecretBytes(bytes)
    }

    /// Length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Consumes the container, returning the bytes in a zeroizing wrapper.
    pub fn into_zeroizing(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBytes")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for SecretBytes {}
