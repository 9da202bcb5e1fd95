//! Custody of master-key material.
//!
//! A [`KeyBackend`] holds master keys and performs operations with them. It is
//! operation-shaped: nothing in the trait returns a master key's bytes, because
//! an HSM cannot and must not. The trait was drawn against PKCS#11
//! (non-extractable keys on a token); memory and file backends fit it too.
//!
//! Metadata (which keys exist, their versions and state) is not the backend's
//! business: that is the [`crate::store::MetadataStore`].

mod file;
pub(crate) mod material;
mod memory;

pub use file::FileBackend;
pub use memory::MemoryBackend;

#[cfg(feature = "pkcs11")]
#[cfg_attr(docsrs, doc(cfg(feature = "pkcs11")))]
mod pkcs11;
#[cfg(feature = "pkcs11")]
#[cfg_attr(docsrs, doc(cfg(feature = "pkcs11")))]
pub use pkcs11::{Pkcs11Backend, Pkcs11Config};

use crate::error::Result;
use crate::key::{KeyId, KeySpec};
use crate::secret::SecretBytes;
use std::fmt::{self, Debug};

/// Names one version of one key's material inside a backend.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MaterialId {
    /// The key.
    pub key_id: KeyId,
    /// The version, from 1.
    pub version: u32,
}

impl MaterialId {
    /// Names `version` of `key_id`.
    pub fn new(key_id: KeyId, version: u32) -> Self {
        MaterialId { key_id, version }
    }
}

impl Debug for MaterialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#v{}", self.key_id, self.version)
    }
}

impl fmt::Display for MaterialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#v{}", self.key_id, self.version)
    }
}

/// Holds master-key material and operates with it.
///
/// # Contract
/// - `encrypt` of a symmetric key returns `nonce (12) || ciphertext || tag (16)`
///   (docs/FORMAT.md, "backend payload"), with a fresh random nonce per call;
///   `decrypt` takes the same layout.
/// - Every authentication failure in `decrypt` is [`crate::Error::DecryptionFailed`].
/// - Operations on material the backend does not hold return
///   [`crate::Error::KeyNotFound`].
/// - Implementations are safe to call from many threads at once.
pub trait KeyBackend: Send + Sync + Debug {
    /// A short name for logs and audit records (`"memory"`, `"pkcs11"`).
    fn name(&self) -> &str;

    /// True if this backend can hold keys of `spec`.
    fn supports(&self, spec: KeySpec) -> bool;

    /// Creates new material of `spec` under `id`. Fails if `id` already exists.
    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()>;

    /// Authenticated encryption of a small payload (at most 4096 + 64 bytes)
    /// under symmetric material, binding `aad`.
    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;

    /// Reverses [`KeyBackend::encrypt`].
    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes>;

    /// Destroys the material irreversibly. Destroying material that is not
    /// there is not an error (destruction is idempotent).
    fn destroy(&self, id: &MaterialId) -> Result<()>;

    /// True if the backend holds material under `id`.
    fn contains(&self, id: &MaterialId) -> Result<bool>;

    // ---- optional capabilities: asymmetric and MAC keys -------------------
    // Defaulted to `Unsupported`, so a backend implements only what it can.

    /// Signs with private material. For ECDSA P-256 `data` is the SHA-256
    /// digest (32 bytes; hashing happens outside the backend, as with
    /// PKCS#11 `CKM_ECDSA`) and the result is the raw `r || s` (64 bytes);
    /// for Ed25519 `data` is the whole message and the result the 64-byte
    /// signature.
    fn sign(&self, id: &MaterialId, data: &[u8]) -> Result<Vec<u8>> {
        let _ = data;
        Err(crate::Error::Unsupported(format!(
            "backend {} cannot sign with {id}",
            self.name()
        )))
    }

    /// The public key of asymmetric material, as SubjectPublicKeyInfo DER.
    fn public_key(&self, id: &MaterialId) -> Result<Vec<u8>> {
        Err(crate::Error::Unsupported(format!(
            "backend {} has no public key for {id}",
            self.name()
        )))
    }

    /// Opens an HPKE (RFC 9180) base-mode ciphertext `enc || ct` sealed to
    /// the public key of HPKE material, with `info` and `aad`. Every failure
    /// is [`crate::Error::DecryptionFailed`].
    fn hpke_open(
        &self,
        id: &MaterialId,
        info: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes> {
        let _ = (info, aad, sealed);
        Err(crate::Error::Unsupported(format!(
            "backend {} cannot decrypt with {id}",
            self.name()
        )))
    }

    /// Installs imported raw material (docs/FORMAT.md, "Key material") of
    /// `spec` under `id`. Fails if `id` exists.
    fn import(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        let _ = (spec, raw);
        Err(crate::Error::Unsupported(format!(
            "backend {} cannot import material for {id}",
            self.name()
        )))
    }

    /// Computes a MAC tag over `message` with MAC material.
    fn mac(&self, id: &MaterialId, message: &[u8]) -> Result<Vec<u8>> {
        let _ = message;
        Err(crate::Error::Unsupported(format!(
            "backend {} cannot compute a MAC with {id}",
            self.name()
        )))
    }
}
