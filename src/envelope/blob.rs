//! The ciphertext blob (docs/FORMAT.md, "Ciphertext blob").

use super::{MAGIC, Reader};
use crate::error::{Error, Result};
use crate::key::KeyId;

/// Type byte of a ciphertext blob.
pub(crate) const TYPE_BLOB: u8 = 0x01;
/// Format version of ciphertext blobs written by this crate.
pub(crate) const VERSION_1: u8 = 0x01;

/// Largest plaintext [`crate::Client::encrypt`] accepts.
pub const MAX_PLAINTEXT_LEN: usize = 4096;

/// The parsed, not yet authenticated, header of a ciphertext blob.
#[derive(Debug)]
pub(crate) struct BlobHeader<'a> {
    pub suite: u8,
    pub key_id: KeyId,
    pub version: u32,
    /// The header bytes, bound as associated data.
    pub header: &'a [u8],
    /// `nonce || ciphertext || tag`, handed to the backend.
    pub payload: &'a [u8],
}

/// Encodes a blob header.
pub(crate) fn encode_header(suite: u8, key_id: &KeyId, version: u32) -> Result<Vec<u8>> {
    let id = key_id.as_str().as_bytes();
    let id_len = u8::try_from(id.len()).map_err(|_| Error::invalid("key id too long"))?;
    let mut h = Vec::with_capacity(10 + id.len());
    h.extend_from_slice(&MAGIC);
    h.push(TYPE_BLOB);
    h.push(VERSION_1);
    h.push(suite);
    h.push(id_len);
    h.extend_from_slice(id);
    h.extend_from_slice(&version.to_be_bytes());
    Ok(h)
}

/// Parses a blob's header. Malformed input is the opaque decryption error.
/// The key a parsed blob names, or the parse error: the one way the ring
/// reads a key id out of a ciphertext.
pub(crate) fn key_id_of(parsed: &Result<BlobHeader<'_>>) -> Result<KeyId> {
    parsed
        .as_ref()
        .map(|h| h.key_id.clone())
        .map_err(Clone::clone)
}

pub(crate) fn parse(blob: &[u8]) -> Result<BlobHeader<'_>> {
    let mut r = Reader::new(blob);
    if r.array::<2>()? != MAGIC || r.u8()? != TYPE_BLOB || r.u8()? != VERSION_1 {
        return Err(Error::DecryptionFailed);
    }
    let suite = r.u8()?;
    let id_len = r.u8()? as usize;
    let id = r.take(id_len)?;
    let key_id = std::str::from_utf8(id)
        .ok()
        .and_then(|s| KeyId::parse(s).ok())
        .ok_or(Error::DecryptionFailed)?;
    let version = r.u32()?;
    let header_len = r.pos();
    let payload = r.rest();
    // nonce (12) + at least one byte + tag (16)
    if payload.len() < 12 + 1 + 16 || payload.len() > 12 + MAX_PLAINTEXT_LEN + 16 {
        return Err(Error::DecryptionFailed);
    }
    Ok(BlobHeader {
        suite,
        key_id,
        version,
        header: &blob[..header_len],
        payload,
    })
}

/// The associated data of a blob: its header, then the canonical context.
pub(crate) fn aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}
