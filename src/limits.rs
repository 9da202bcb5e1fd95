//! Every documented bound of the crate, in one place.
//!
//! Inputs beyond these bounds are refused with
//! [`crate::Error::InvalidArgument`] (or, for ciphertexts, the opaque
//! [`crate::Error::DecryptionFailed`]) before any work is done.

use std::ops::RangeInclusive;

// ---- data ---------------------------------------------------------------

/// Largest plaintext [`crate::Client::encrypt`] accepts (bytes); larger data
/// goes through [`crate::Client::seal`].
pub const MAX_PLAINTEXT_LEN: usize = 4096;
/// Largest canonical encoding of an encryption context (bytes).
pub const MAX_CONTEXT_BYTES: usize = 8192;
/// Default frame length of envelope messages (bytes).
pub const DEFAULT_FRAME_LEN: u32 = 64 * 1024;
/// Largest frame length of envelope messages (bytes, 16 MiB).
pub const MAX_FRAME_LEN: u32 = 1 << 24;
/// Largest message `sign` and `generate_mac` accept (bytes, 1 MiB).
pub const MAX_SIGN_MESSAGE_LEN: usize = 1 << 20;
/// Largest request of [`crate::Client::generate_random`] (bytes).
pub const MAX_RANDOM_LEN: usize = 1024;
/// Largest payload a backend may return from `KeyBackend::encrypt` (bytes).
pub const MAX_BACKEND_PAYLOAD: usize = 8192;

// ---- keys -----------------------------------------------------------------

/// Most tags one key may carry.
pub const MAX_TAGS: usize = 50;
/// Most grants one key may hold.
pub const MAX_GRANTS_PER_KEY: usize = 50_000;
/// Largest key policy document (bytes of JSON).
pub const MAX_POLICY_BYTES: usize = 32 * 1024;
/// Most identity policies attached to one principal
/// ([`crate::Client::put_identity_policy`]); each is at most
/// [`MAX_POLICY_BYTES`] of JSON.
pub const MAX_IDENTITY_POLICIES_PER_PRINCIPAL: usize = 10;
/// Largest page of the list calls.
pub const MAX_PAGE_LIMIT: usize = 1000;
/// Encryptions per key version after which the ring rotates the key by
/// default: 2^32 − 2^24. NIST SP 800-38D caps random 96-bit nonces at 2^32
/// invocations per key; the margin absorbs encryptions in flight while the
/// rotation happens.
pub const DEFAULT_ENCRYPTION_LIMIT: u64 = (1 << 32) - (1 << 24);
/// Allowed deletion windows (days).
pub const DELETION_WINDOW_DAYS: RangeInclusive<u32> = 7..=30;
/// Default deletion window (days).
pub const DEFAULT_DELETION_WINDOW_DAYS: u32 = 30;

// ---- import -----------------------------------------------------------------

/// How long import parameters stay valid (seconds, 24 hours).
pub const IMPORT_PARAMETERS_TTL_SECS: u64 = 24 * 3600;
/// Most pending (requested, not yet used or expired) imports one principal
/// may hold on a ring.
pub const MAX_PENDING_IMPORTS_PER_PRINCIPAL: usize = 16;
/// Most pending imports a ring holds in all.
pub const MAX_PENDING_IMPORTS: usize = 1024;

// ---- AWS Encryption SDK messages (feature `esdk`) ---------------------------

/// Frame length of ESDK messages unless told otherwise (bytes): 4096, the
/// ESDK's default.
#[cfg(feature = "esdk")]
#[cfg_attr(docsrs, doc(cfg(feature = "esdk")))]
pub const ESDK_DEFAULT_FRAME_LEN: u32 = 4096;
/// Largest frame length strongroom writes in ESDK messages (bytes):
/// 2^31 − 1, the largest the reference (Python) SDK reads. Messages with
/// frames up to 2^32 − 1 bytes (the format's limit) are read.
#[cfg(feature = "esdk")]
#[cfg_attr(docsrs, doc(cfg(feature = "esdk")))]
pub const ESDK_MAX_WRITE_FRAME_LEN: u32 = i32::MAX as u32;
/// Most encrypted data keys of one ESDK message that name the wrapping key
/// and are tried when opening it.
#[cfg(feature = "esdk")]
#[cfg_attr(docsrs, doc(cfg(feature = "esdk")))]
pub const ESDK_MAX_MATCHING_EDKS: usize = 16;

// ---- SSH (interop::ssh) -------------------------------------------------------

/// Longest SSHSIG namespace (bytes) accepted to sign or verify.
pub const SSH_MAX_NAMESPACE_LEN: usize = 256;
/// Longest comment of an exported OpenSSH public key line (bytes).
pub const SSH_MAX_COMMENT_LEN: usize = 1024;
/// Longest OpenSSH public key line [`crate::interop::ssh::verify_sshsig`]
/// reads (bytes).
pub const SSH_MAX_PUBLIC_KEY_LINE_LEN: usize = 8 * 1024;
/// Longest armored SSHSIG signature [`crate::interop::ssh::verify_sshsig`]
/// reads (bytes); longer ones are invalid. Ours are under 400 bytes.
pub const SSH_MAX_SIGNATURE_LEN: usize = 16 * 1024;
