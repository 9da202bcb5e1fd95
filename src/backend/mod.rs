//! Custody of master-key material.
//!
//! A [`KeyBackend`] holds master keys and performs operations with them. It is
//! operation-shaped: nothing in the trait returns a master key's bytes, because
//! an HSM cannot and must not. The trait was drawn against PKCS#11
//! (non-extractable keys on a token); memory and file backends fit it too.
//!
//! Metadata (which keys exist, their versions and state) is not the backend's
//! business: that is the [`crate::store::MetadataStore`].

pub(crate) mod file;
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

#[cfg(any(feature = "vault", feature = "aws-kms"))]
mod http;
#[cfg(any(feature = "vault", feature = "aws-kms"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "vault", feature = "aws-kms"))))]
pub use http::RetryPolicy;

#[cfg(feature = "vault")]
#[cfg_attr(docsrs, doc(cfg(feature = "vault")))]
mod vault;
#[cfg(feature = "vault")]
#[cfg_attr(docsrs, doc(cfg(feature = "vault")))]
pub use vault::{VaultConfig, VaultTransitBackend};

#[cfg(feature = "aws-kms")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws-kms")))]
mod aws_kms;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use crate::store::PostgresBackend;
#[cfg(feature = "aws-kms")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws-kms")))]
pub use aws_kms::{AwsKmsBackend, AwsKmsConfig};

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

pub(crate) use crate::limits::MAX_BACKEND_PAYLOAD;

/// Holds master-key material and operates with it.
///
/// # Contract
/// - **Payloads are opaque.** `encrypt` returns whatever bytes the backend
///   wants stored (at most [`MAX_BACKEND_PAYLOAD`]); the ring stores them
///   length-prefixed in its ciphertexts and hands exactly those bytes back
///   to `decrypt` with the same `aad`. The built-in backends return
///   `nonce (12) || ciphertext || tag (16)` (docs/FORMAT.md, "Backend
///   payload") and say so with [`KeyBackend::raw_aead_payloads`]; a remote
///   custodian returns its own shape (an AWS KMS ciphertext blob, Vault
///   Transit's `vault:vN:...` text).
/// - `aad` must be bound: `decrypt` with other `aad` fails.
/// - Every authentication failure in `decrypt` is
///   [`crate::Error::DecryptionFailed`].
/// - Operations on material the backend does not hold return
///   [`crate::Error::KeyNotFound`]; destroying absent material is not an error.
/// - A transient failure (unreachable, timed out, throttled after the
///   backend's own bounded retries) is [`crate::Error::Unavailable`], which
///   callers may retry; nothing half-made may remain (a failed `generate`
///   leaves no material).
/// - Implementations are safe to call from many threads at once.
///
/// Optional abilities are narrow traits the backend hands out when it has
/// them: [`KeyBackend::signing`], [`KeyBackend::macs`], [`KeyBackend::hpke`],
/// [`KeyBackend::importing`], [`KeyBackend::exporting`].
///
/// # Remote custodians
///
/// `VaultTransitBackend` (feature `vault`) and `AwsKmsBackend` (feature
/// `aws-kms`) hold master keys in a service elsewhere: one remote key per
/// strongroom key version (the ring destroys single versions, which neither
/// service's own rotation can), `aad` bound by the service (Transit
/// `associated_data`, a KMS encryption context), payloads of the service's
/// own shape, and [`crate::Error::Unavailable`] after bounded retries.
pub trait KeyBackend: Send + Sync + Debug {
    /// A short name for logs and audit records (`"memory"`, `"pkcs11"`).
    fn name(&self) -> &str;

    /// True if this backend can hold keys of `spec`.
    fn supports(&self, spec: KeySpec) -> bool;

    /// Creates new material of `spec` under `id`. Fails if `id` already exists.
    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()>;

    /// Authenticated encryption of a small payload (at most 4096 + 64 bytes
    /// of plaintext) under symmetric material, binding `aad`. Returns the
    /// backend's opaque payload (at most [`MAX_BACKEND_PAYLOAD`] bytes).
    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>>;

    /// Reverses [`KeyBackend::encrypt`].
    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes>;

    /// Destroys the material irreversibly. Destroying material that is not
    /// there is not an error (destruction is idempotent).
    fn destroy(&self, id: &MaterialId) -> Result<()>;

    /// True if the backend holds material under `id`.
    fn contains(&self, id: &MaterialId) -> Result<bool>;

    /// True if the payloads of symmetric keys are `nonce (12) || ciphertext
    /// || tag (16)` of the key's AEAD (AES-256-GCM or ChaCha20-Poly1305)
    /// under `aad`, with a fresh random nonce. Formats that must produce
    /// that exact layout (the AWS Encryption SDK's raw AES keyring) need it.
    /// Default: false (opaque payloads).
    fn raw_aead_payloads(&self) -> bool {
        false
    }

    /// Signing with asymmetric material, if the backend can.
    fn signing(&self) -> Option<&dyn SigningBackend> {
        None
    }

    /// MACs with HMAC material, if the backend can.
    fn macs(&self) -> Option<&dyn MacBackend> {
        None
    }

    /// HPKE decryption with HPKE material, if the backend can.
    fn hpke(&self) -> Option<&dyn HpkeBackend> {
        None
    }

    /// Installing imported raw material, if the backend can.
    fn importing(&self) -> Option<&dyn ImportBackend> {
        None
    }

    /// Sealing material to another region's one-time key for a
    /// multi-region replica, if the backend can. Default: `None` (a
    /// PKCS#11 token's non-extractable keys, a remote custodian): keys held
    /// there cannot be replicated.
    fn exporting(&self) -> Option<&dyn ExportBackend> {
        None
    }
}

/// Replication of multi-region keys: an optional capability of a backend.
///
/// The only way material leaves a backend, and never in plaintext: the
/// backend seals one version's raw material (docs/FORMAT.md, "Key
/// material") to an [`ExportRecipient`], which only the ring can make (for
/// the one-time HPKE key another region's ring issued for this exchange,
/// after both rings authorized it). Holding the backend (for example through
/// [`crate::KeyRing::dangerous_backend`]) is therefore not enough to export
/// anything.
pub trait ExportBackend: Send + Sync {
    /// Seals the raw material of `id` with [`ExportRecipient::seal`].
    fn export_sealed(&self, id: &MaterialId, to: &ExportRecipient) -> Result<Vec<u8>>;
}

/// Whom an [`ExportBackend`] seals material to: another region's one-time
/// HPKE public key, bound to one import token, key and version
/// (docs/FORMAT.md, "Replica key material"). Made only inside the crate,
/// by [`crate::Client::replicate_key`] and [`crate::Client::sync_replica`].
pub struct ExportRecipient {
    public_key_der: Vec<u8>,
    info: Vec<u8>,
    aad: Vec<u8>,
}

impl ExportRecipient {
    pub(crate) fn new(public_key_der: Vec<u8>, info: Vec<u8>, aad: Vec<u8>) -> Self {
        ExportRecipient {
            public_key_der,
            info,
            aad,
        }
    }

    /// Seals `raw` (one version's material) to the recipient: HPKE base
    /// mode, P-256 / HKDF-SHA256 / AES-256-GCM, `enc || ct`.
    pub fn seal(&self, raw: &[u8]) -> Result<Vec<u8>> {
        crate::verify::hpke_seal_with_info(&self.public_key_der, &self.info, raw, &self.aad)
    }
}

impl Debug for ExportRecipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportRecipient").finish_non_exhaustive()
    }
}

/// Signing with asymmetric material: an optional capability of a backend.
pub trait SigningBackend: Send + Sync {
    /// Signs with private material. For ECDSA P-256 `data` is the SHA-256
    /// digest (32 bytes; hashing happens outside the backend, as with
    /// PKCS#11 `CKM_ECDSA`) and the result is the raw `r || s` (64 bytes);
    /// for Ed25519 `data` is the whole message and the result the 64-byte
    /// signature.
    fn sign(&self, id: &MaterialId, data: &[u8]) -> Result<Vec<u8>>;

    /// The public key of asymmetric material, as SubjectPublicKeyInfo DER.
    fn public_key(&self, id: &MaterialId) -> Result<Vec<u8>>;
}

/// MACs with HMAC material: an optional capability of a backend.
pub trait MacBackend: Send + Sync {
    /// Computes a MAC tag over `message`.
    fn mac(&self, id: &MaterialId, message: &[u8]) -> Result<Vec<u8>>;
}

/// HPKE decryption: an optional capability of a backend.
pub trait HpkeBackend: Send + Sync {
    /// Opens an HPKE (RFC 9180) base-mode ciphertext `enc || ct` sealed to
    /// the public key of HPKE material, with `info` and `aad`. Every failure
    /// is [`crate::Error::DecryptionFailed`].
    fn hpke_open(
        &self,
        id: &MaterialId,
        info: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes>;
}

/// Key import: an optional capability of a backend.
pub trait ImportBackend: Send + Sync {
    /// Installs imported raw material (docs/FORMAT.md, "Key material") of
    /// `spec` under `id`. Fails if `id` exists.
    fn import(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()>;
}

/// A capability the backend lacks, as a clear error.
pub(crate) fn lacks(backend: &dyn KeyBackend, what: &str, id: &MaterialId) -> crate::Error {
    crate::Error::Unsupported(format!(
        "backend {} cannot {what} with {id}",
        backend.name()
    ))
}
