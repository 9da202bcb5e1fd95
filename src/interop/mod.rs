//! Formats other implementations wrote: strongroom reads and writes them
//! beside its own, proven against the real implementations in CI.
//!
//! - `esdk`: AWS Encryption SDK messages (feature `esdk`).
//! - [`ssh`]: OpenSSH public keys and SSHSIG signatures (`ssh-keygen -Y`).
//! - `sigv4`: AWS Signature Version 4 request signing (feature `aws-kms`).

#[cfg(feature = "esdk")]
#[cfg_attr(docsrs, doc(cfg(feature = "esdk")))]
pub mod esdk;
#[cfg(feature = "aws-kms")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws-kms")))]
pub mod sigv4;
pub mod ssh;
