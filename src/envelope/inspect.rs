//! Reading which key and version a ciphertext needs, without decrypting.

use super::{EncryptionContext, blob, message};
use crate::error::Result;
use crate::key::KeyId;

/// What [`inspect`] learns from a ciphertext's header. Nothing here is
/// authenticated: use it to find data to re-encrypt, never to trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CiphertextInfo {
    /// A ciphertext blob (`encrypt`, data keys).
    Blob {
        /// The key that opens it.
        key_id: KeyId,
        /// The key version that opens it.
        key_version: u32,
    },
    /// An envelope message (`seal`, `seal_writer`).
    Message {
        /// Every (key, version) holding a wrapped copy of the data key;
        /// any one of them opens the message.
        wrapped_by: Vec<(KeyId, u32)>,
        /// The stored encryption context.
        context: EncryptionContext,
        /// Plaintext bytes per frame.
        frame_len: u32,
    },
}

/// Tells which key id and version a ciphertext blob or envelope message
/// needs, without any key: an application can find old data and move it to
/// the primary version (`re_encrypt` for blobs, open + seal for messages).
/// Malformed input is [`crate::Error::DecryptionFailed`].
pub fn inspect(ciphertext: &[u8]) -> Result<CiphertextInfo> {
    if let Ok(h) = blob::parse(ciphertext) {
        return Ok(CiphertextInfo::Blob {
            key_id: h.key_id,
            key_version: h.version,
        });
    }
    let h = message::parse_header(ciphertext)?;
    let wrapped_by = h
        .wrapped_keys
        .iter()
        .map(|w| blob::parse(w).map(|b| (b.key_id, b.version)))
        .collect::<Result<Vec<_>>>()?;
    Ok(CiphertextInfo::Message {
        wrapped_by,
        context: h.context,
        frame_len: h.frame_len,
    })
}
