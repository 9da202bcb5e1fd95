//! The ciphertext blob (docs/FORMAT.md, "Ciphertext blob").

use super::{MAGIC, Reader};
use crate::error::{Error, Result};
use crate::key::KeyId;

/// Type byte of a ciphertext blob.
pub(crate) const TYPE_BLOB: u8 = 0x01;
/// Format version 1 of ciphertext blobs (read only): the payload is the rest
/// of the blob and must be `nonce (12) || ciphertext || tag (16)`.
pub(crate) const VERSION_1: u8 = 0x01;
/// Format version 2, written by this crate: the backend's opaque payload,
/// length-prefixed (u16 BE, 1 to [`crate::backend::MAX_BACKEND_PAYLOAD`]).
pub(crate) const VERSION_2: u8 = 0x02;

pub(crate) use crate::limits::MAX_PLAINTEXT_LEN;

/// The parsed, not yet authenticated, header of a ciphertext blob.
#[derive(Debug)]
pub(crate) struct BlobHeader<'a> {
    pub suite: u8,
    pub key_id: KeyId,
    pub version: u32,
    /// The header bytes, bound as associated data.
    pub header: &'a [u8],
    /// The backend's payload (`nonce || ciphertext || tag` for the built-in
    /// backends; opaque in general), handed back to the backend.
    pub payload: &'a [u8],
}

/// Encodes a (version 2) blob header: the bytes bound as associated data.
/// The payload follows with [`append_payload`].
pub(crate) fn encode_header(suite: u8, key_id: &KeyId, version: u32) -> Result<Vec<u8>> {
    let id = key_id.as_str().as_bytes();
    let id_len = u8::try_from(id.len()).map_err(|_| Error::invalid("key id too long"))?;
    // Room for the payload that follows (a wrapped data key is 60 bytes
    // from the built-in backends): one allocation per blob.
    let mut h = Vec::with_capacity(10 + id.len() + 2 + 64);
    h.extend_from_slice(&MAGIC);
    h.push(TYPE_BLOB);
    h.push(VERSION_2);
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

/// Appends a backend payload to a version 2 header: `len (u16 BE) ||
/// payload`. A payload that is empty or longer than
/// [`crate::backend::MAX_BACKEND_PAYLOAD`] breaks the backend contract.
pub(crate) fn append_payload(out: &mut Vec<u8>, payload: &[u8]) -> Result<()> {
    if payload.is_empty() || payload.len() > crate::backend::MAX_BACKEND_PAYLOAD {
        return Err(Error::Unsupported(format!(
            "the backend returned a {}-byte payload; payloads are 1 to {} bytes",
            payload.len(),
            crate::backend::MAX_BACKEND_PAYLOAD
        )));
    }
    // Fits: MAX_BACKEND_PAYLOAD < 65536.
    out.reserve_exact(2 + payload.len());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Parses a blob of version 1 or 2.
pub(crate) fn parse(blob: &[u8]) -> Result<BlobHeader<'_>> {
    let mut r = Reader::new(blob);
    if r.array::<2>()? != MAGIC || r.u8()? != TYPE_BLOB {
        return Err(Error::DecryptionFailed);
    }
    let format = r.u8()?;
    if format != VERSION_1 && format != VERSION_2 {
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
    let payload = if format == VERSION_1 {
        let payload = r.rest();
        // nonce (12) + at least one byte + tag (16)
        if payload.len() < 12 + 1 + 16 || payload.len() > 12 + MAX_PLAINTEXT_LEN + 16 {
            return Err(Error::DecryptionFailed);
        }
        payload
    } else {
        let len = usize::from(r.u16()?);
        if len == 0 || len > crate::backend::MAX_BACKEND_PAYLOAD {
            return Err(Error::DecryptionFailed);
        }
        let payload = r.take(len)?;
        if !r.is_empty() {
            return Err(Error::DecryptionFailed);
        }
        payload
    };
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
