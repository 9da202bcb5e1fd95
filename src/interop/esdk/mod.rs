//! AWS Encryption SDK (ESDK) messages, read and written by the ring.
//!
//! strongroom writes message format version 2 with the committing suites
//! [`EsdkSuite::AesGcmHkdfSha512Commit`] (`0x0478`) and
//! [`EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384`] (`0x0578`, the ESDK
//! default), framed; it reads those and, for legacy data, version 1
//! messages of suites `0x0178` and `0x0378` (framed or not). The data key
//! is wrapped as the ESDK's **raw AES keyring** wraps it, by a strongroom
//! AES-256-GCM key whose material never leaves its backend:
//!
//! - provider id = the key namespace, provider info = key name ‖ tag
//!   length in bits (u32 BE, 128) ‖ IV length (u32 BE, 12) ‖ IV;
//! - encrypted data key = ciphertext ‖ tag; associated data = the ESDK
//!   serialization of the whole encryption context (the empty context is
//!   zero bytes).
//!
//! Another SDK holding the same 32 key bytes (imported into strongroom with
//! [`crate::Client::import_key`]) under the same namespace and name opens
//! what strongroom writes and writes what strongroom opens. The namespace
//! and name come from [`EsdkOptions`], else from the key's tags
//! [`TAG_KEY_NAMESPACE`] and [`TAG_KEY_NAME`], else
//! [`DEFAULT_KEY_NAMESPACE`] and the key id.
//!
//! The calls are [`crate::Client::esdk_seal`], [`crate::Client::esdk_open`]
//! and the streaming [`crate::Client::esdk_seal_writer`] /
//! [`crate::Client::esdk_open_reader`]. Each runs through the ring's
//! pipeline: sealing is authorized as `GenerateDataKey` and opening as
//! `Decrypt` on the wrapping key, and both are audited. docs/FORMAT.md
//! ("AWS Encryption SDK messages") lists what is read and written.
//!
//! ```
//! use strongroom::interop::esdk::EsdkOptions;
//! use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};
//! # fn main() -> Result<(), strongroom::Error> {
//! let ring = KeyRing::in_memory();
//! let app = ring.client(Principal::service("billing")?);
//! app.create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/esdk"))?;
//! let ctx = EncryptionContext::new().with("tenant", "acme");
//! let opts = EsdkOptions::new().key_namespace("billing").key_name("invoices");
//! let message = app.esdk_seal_with("alias/esdk", b"invoice #1", &ctx, opts.clone())?;
//! let opened = app.esdk_open_with("alias/esdk", &message, &ctx, opts)?;
//! assert_eq!(opened.plaintext.expose_secret(), b"invoice #1");
//! # Ok(()) }
//! ```

pub(crate) mod format;
mod signature;
mod stream;

pub(crate) use stream::read_header;
pub use stream::{EsdkReader, EsdkWriter};

use crate::envelope::EncryptionContext;
use crate::error::{Error, Result};
use crate::key::KeyId;
use crate::secret::SecretBytes;

pub use crate::limits::{ESDK_DEFAULT_FRAME_LEN, ESDK_MAX_MATCHING_EDKS, ESDK_MAX_WRITE_FRAME_LEN};
/// Key namespace (ESDK provider id) used when neither the call nor the
/// key's tags name one.
pub const DEFAULT_KEY_NAMESPACE: &str = "strongroom";
/// Tag of a key giving its ESDK key namespace (provider id).
pub const TAG_KEY_NAMESPACE: &str = "esdk:key-namespace";
/// Tag of a key giving its ESDK key name (the start of the provider info).
pub const TAG_KEY_NAME: &str = "esdk:key-name";
/// Prefix of the encryption-context keys the ESDK reserves; refused in a
/// caller's context when sealing.
pub const RESERVED_CONTEXT_PREFIX: &str = "aws-crypto-";
/// The ESDK algorithm suites strongroom knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EsdkSuite {
    /// `0x0478`: AES-256-GCM, HKDF-SHA512, key commitment. Format v2; read
    /// and written.
    AesGcmHkdfSha512Commit,
    /// `0x0578`: as `0x0478`, plus an ECDSA P-384 signature (SHA-384) in a
    /// footer. Format v2; read and written; the ESDK's default suite.
    AesGcmHkdfSha512CommitEcdsaP384,
    /// `0x0178`: AES-256-GCM, HKDF-SHA256, no commitment. Format v1; read
    /// only.
    LegacyAesGcmHkdfSha256,
    /// `0x0378`: AES-256-GCM, HKDF-SHA384, ECDSA P-384, no commitment.
    /// Format v1; read only.
    LegacyAesGcmHkdfSha384EcdsaP384,
}

impl EsdkSuite {
    /// The suite's two-byte id.
    pub fn id(self) -> u16 {
        match self {
            EsdkSuite::AesGcmHkdfSha512Commit => 0x0478,
            EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384 => 0x0578,
            EsdkSuite::LegacyAesGcmHkdfSha256 => 0x0178,
            EsdkSuite::LegacyAesGcmHkdfSha384EcdsaP384 => 0x0378,
        }
    }

    /// The suite with this id, if strongroom knows it.
    pub fn from_id(id: u16) -> Option<EsdkSuite> {
        Some(match id {
            0x0478 => EsdkSuite::AesGcmHkdfSha512Commit,
            0x0578 => EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384,
            0x0178 => EsdkSuite::LegacyAesGcmHkdfSha256,
            0x0378 => EsdkSuite::LegacyAesGcmHkdfSha384EcdsaP384,
            _ => return None,
        })
    }

    /// True if messages of this suite end in an ECDSA signature.
    pub fn is_signed(self) -> bool {
        matches!(
            self,
            EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384 | EsdkSuite::LegacyAesGcmHkdfSha384EcdsaP384
        )
    }

    /// True if the header commits to the data key.
    pub fn is_committing(self) -> bool {
        self.message_format_version() == 2
    }

    /// The message format version of this suite (1 or 2).
    pub fn message_format_version(self) -> u8 {
        match self {
            EsdkSuite::AesGcmHkdfSha512Commit | EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384 => 2,
            _ => 1,
        }
    }

    pub(crate) fn message_id_len(self) -> usize {
        if self.message_format_version() == 2 {
            32
        } else {
            16
        }
    }
}

/// Options of the ESDK calls: suite and frame length (sealing), key
/// namespace and name (both directions).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EsdkOptions {
    /// The suite to write (default `0x0578`, as the ESDK). Ignored when
    /// opening: the message names its suite.
    pub suite: EsdkSuite,
    /// Plaintext bytes per frame, 1 to [`ESDK_MAX_WRITE_FRAME_LEN`]
    /// (default [`ESDK_DEFAULT_FRAME_LEN`]).
    pub frame_len: u32,
    /// The key namespace (ESDK provider id); `None` = the key's
    /// [`TAG_KEY_NAMESPACE`] tag, else [`DEFAULT_KEY_NAMESPACE`].
    pub key_namespace: Option<String>,
    /// The key name; `None` = the key's [`TAG_KEY_NAME`] tag, else the key id.
    pub key_name: Option<String>,
}

impl Default for EsdkOptions {
    fn default() -> Self {
        EsdkOptions {
            suite: EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384,
            frame_len: ESDK_DEFAULT_FRAME_LEN,
            key_namespace: None,
            key_name: None,
        }
    }
}

impl EsdkOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the suite to write.
    pub fn suite(mut self, suite: EsdkSuite) -> Self {
        self.suite = suite;
        self
    }

    /// Sets the frame length.
    pub fn frame_len(mut self, len: u32) -> Self {
        self.frame_len = len;
        self
    }

    /// Sets the key namespace (ESDK provider id).
    pub fn key_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.key_namespace = Some(namespace.into());
        self
    }

    /// Sets the key name.
    pub fn key_name(mut self, name: impl Into<String>) -> Self {
        self.key_name = Some(name.into());
        self
    }
}

/// An opened ESDK message.
#[derive(Debug)]
#[non_exhaustive]
pub struct EsdkOpened {
    /// The plaintext.
    pub plaintext: SecretBytes,
    /// The message's whole encryption context (for signed suites it
    /// includes `aws-crypto-public-key`).
    pub context: EncryptionContext,
    /// The strongroom key that unwrapped the data key.
    pub key_id: KeyId,
    /// The version of that key that unwrapped it.
    pub key_version: u32,
    /// The message's suite.
    pub suite: EsdkSuite,
    /// The message's frame length (0 for a non-framed v1 body).
    pub frame_len: u32,
}

/// Refuses a caller's context that uses a reserved (`aws-crypto-`) key.
pub(crate) fn check_caller_context(ctx: &EncryptionContext) -> Result<()> {
    if let Some((k, _)) = ctx
        .iter()
        .find(|(k, _)| k.starts_with(RESERVED_CONTEXT_PREFIX))
    {
        return Err(Error::invalid(format!(
            "encryption context key {k:?} is reserved by the AWS Encryption SDK \
             (keys beginning with {RESERVED_CONTEXT_PREFIX:?})"
        )));
    }
    Ok(())
}

/// The raw AES keyring's provider info: key name ‖ tag bits (u32) ‖ IV
/// length (u32) ‖ IV.
pub(crate) fn provider_info(key_name: &[u8], iv: &[u8; 12]) -> Vec<u8> {
    let mut info = Vec::with_capacity(key_name.len() + 20);
    info.extend_from_slice(key_name);
    info.extend_from_slice(&128u32.to_be_bytes());
    info.extend_from_slice(&12u32.to_be_bytes());
    info.extend_from_slice(iv);
    info
}

/// The IV of a provider info written for `key_name`, if it is exactly that
/// shape.
pub(crate) fn parse_provider_info(info: &[u8], key_name: &[u8]) -> Option<[u8; 12]> {
    let rest = info.strip_prefix(key_name)?;
    if rest.len() != 20 || rest[..4] != 128u32.to_be_bytes() || rest[4..8] != 12u32.to_be_bytes() {
        return None;
    }
    rest[8..].try_into().ok()
}
