//! Formats other implementations wrote: strongroom reads and writes them
//! beside its own, proven against the real implementations in CI.
//!
//! - `esdk`: AWS Encryption SDK messages (feature `esdk`).
//! - [`ssh`]: OpenSSH public keys and SSHSIG signatures (`ssh-keygen -Y`).

#[cfg(feature = "esdk")]
#[cfg_attr(docsrs, doc(cfg(feature = "esdk")))]
pub mod esdk;
pub mod ssh;
