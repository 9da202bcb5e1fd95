//! The envelope message (docs/FORMAT.md, "Envelope message").

use super::{EncryptionContext, MAGIC, Reader};
use crate::crypto::{Cipher, NONCE_LEN, TAG_LEN, hkdf_sha256_pair};
use crate::error::{Error, Result};
use crate::key::SymmetricAlgorithm;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Type byte of an envelope message.
pub(crate) const TYPE_MESSAGE: u8 = 0x02;
/// Format version of envelope messages written by this crate.
pub(crate) const VERSION_1: u8 = 0x01;
/// Body layout byte: framed.
pub(crate) const LAYOUT_FRAMED: u8 = 0x02;
pub(crate) use crate::limits::DEFAULT_FRAME_LEN;
pub(crate) use crate::limits::MAX_FRAME_LEN;
/// Marker that starts the final frame.
const FINAL_MARKER: u32 = 0xFFFF_FFFF;
/// Length of the message id.
pub(crate) const MESSAGE_ID_LEN: usize = 32;

const LABEL_BODY_KEY: &[u8] = b"strongroom/v1 body key";
const LABEL_COMMIT: &[u8] = b"strongroom/v1 commitment";

/// Options for [`crate::Client::seal_with`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SealOptions {
    /// Plaintext bytes per frame, 1 to [`MAX_FRAME_LEN`]. Default 64 KiB.
    pub frame_len: u32,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            frame_len: DEFAULT_FRAME_LEN,
        }
    }
}

impl SealOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the frame length.
    pub fn frame_len(mut self, len: u32) -> Self {
        self.frame_len = len;
        self
    }
}

/// A parsed, not yet authenticated, message header.
pub(crate) struct MessageHeader<'a> {
    pub suite: SymmetricAlgorithm,
    pub frame_len: u32,
    pub message_id: [u8; MESSAGE_ID_LEN],
    pub context: EncryptionContext,
    pub wrapped_keys: Vec<&'a [u8]>,
    pub commitment: [u8; 32],
    /// Every header byte before the header tag.
    pub authenticated: &'a [u8],
    pub header_tag: [u8; TAG_LEN],
    pub body: &'a [u8],
}

/// Keys derived from a data key for one message.
pub(crate) struct Derived {
    pub cipher: Cipher,
    pub commitment: Zeroizing<[u8; 32]>,
}

/// HKDF-SHA256 with the message id as salt and the data key as input:
/// one output keys the body AEAD, the other is the key commitment.
pub(crate) fn derive(
    suite: SymmetricAlgorithm,
    message_id: &[u8; MESSAGE_ID_LEN],
    data_key: &[u8],
) -> Result<Derived> {
    let sid = [suite.suite_id()];
    let (body_key, commitment) = hkdf_sha256_pair(
        message_id,
        data_key,
        &[LABEL_BODY_KEY, &sid],
        &[LABEL_COMMIT, &sid],
    )?;
    Ok(Derived {
        cipher: Cipher::new(suite, &body_key),
        commitment,
    })
}

fn nonce_for(seq: u32) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[8..].copy_from_slice(&seq.to_be_bytes());
    n
}

fn frame_aad(message_id: &[u8; MESSAGE_ID_LEN], is_final: bool, seq: u32, len: u64) -> [u8; 45] {
    let mut aad = [0u8; 45];
    aad[..32].copy_from_slice(message_id);
    aad[32] = u8::from(is_final);
    aad[33..37].copy_from_slice(&seq.to_be_bytes());
    aad[37..45].copy_from_slice(&len.to_be_bytes());
    aad
}

/// Number of regular (full) frames for `len` bytes: the final frame carries
/// the last 0..=frame_len bytes.
fn regular_frames(len: usize, frame_len: usize) -> usize {
    if len == 0 { 0 } else { (len - 1) / frame_len }
}

/// Writes the header fields up to and including the commitment.
pub(crate) fn encode_header(
    suite: SymmetricAlgorithm,
    frame_len: u32,
    message_id: &[u8; MESSAGE_ID_LEN],
    context_bytes: &[u8],
    wrapped_keys: &[Vec<u8>],
    commitment: &[u8; 32],
) -> Result<Vec<u8>> {
    let ctx_len = u16::try_from(context_bytes.len())
        .map_err(|_| Error::invalid("encryption context too large"))?;
    let count = u8::try_from(wrapped_keys.len())
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| Error::invalid("a message needs 1 to 255 wrapped keys"))?;
    let mut h = Vec::with_capacity(128 + context_bytes.len() + wrapped_keys.len() * 128);
    h.extend_from_slice(&MAGIC);
    h.push(TYPE_MESSAGE);
    h.push(VERSION_1);
    h.push(suite.suite_id());
    h.push(LAYOUT_FRAMED);
    h.extend_from_slice(&frame_len.to_be_bytes());
    h.extend_from_slice(message_id);
    h.extend_from_slice(&ctx_len.to_be_bytes());
    h.extend_from_slice(context_bytes);
    h.push(count);
    for w in wrapped_keys {
        let len = u16::try_from(w.len()).map_err(|_| Error::invalid("wrapped key too large"))?;
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(w);
    }
    h.extend_from_slice(commitment);
    Ok(h)
}

/// Encrypts `data` after `header` (which already ends in the commitment):
/// appends the header tag and the framed body.
pub(crate) fn encrypt_body(
    header: Vec<u8>,
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    frame_len: u32,
    data: &[u8],
) -> Result<Vec<u8>> {
    let mut out = header;
    append_body(&mut out, 0, derived, message_id, frame_len, data)?;
    Ok(out)
}

/// Appends the header tag and the framed body to `out`, whose bytes from
/// `header_start` are the header. The buffer grows once, by exactly the
/// body's size.
pub(crate) fn append_body(
    out: &mut Vec<u8>,
    header_start: usize,
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    frame_len: u32,
    data: &[u8],
) -> Result<()> {
    check_frame_len(frame_len)?;
    let f = frame_len as usize;
    let n_regular = regular_frames(data.len(), f);
    if n_regular >= (FINAL_MARKER - 1) as usize {
        return Err(Error::invalid(
            "data too large for this frame length: use a larger frame length",
        ));
    }
    let final_len = data.len() - n_regular * f;
    let body = TAG_LEN + n_regular * (4 + f + TAG_LEN) + (4 + 4 + 4 + final_len + TAG_LEN);
    out.reserve_exact(body);
    let tag = header_tag(derived, &out[header_start..])?;
    out.extend_from_slice(&tag);
    let mut seq: u32 = 1;
    for chunk in data[..n_regular * f].chunks_exact(f) {
        seal_frame(derived, message_id, seq, false, chunk, out)?;
        seq += 1;
    }
    seal_frame(derived, message_id, seq, true, &data[n_regular * f..], out)
}

/// The one frame-length rule: 1 to [`MAX_FRAME_LEN`] bytes.
pub(crate) fn check_frame_len(frame_len: u32) -> Result<()> {
    if frame_len == 0 || frame_len > MAX_FRAME_LEN {
        return Err(Error::invalid(format!(
            "frame length must be 1 to {MAX_FRAME_LEN} bytes"
        )));
    }
    Ok(())
}

/// The header tag: AEAD of the empty string under the body key, nonce 0,
/// with every header byte before the tag as associated data.
pub(crate) fn header_tag(derived: &Derived, header: &[u8]) -> Result<[u8; TAG_LEN]> {
    let mut tag = Vec::with_capacity(TAG_LEN);
    derived
        .cipher
        .seal_append(&nonce_for(0), header, &[], &mut tag)?;
    tag.try_into()
        .map_err(|_| Error::invalid("AEAD produced a tag of the wrong length"))
}

/// Appends one frame (regular or final) holding `chunk` to `out`.
pub(crate) fn seal_frame(
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    seq: u32,
    is_final: bool,
    chunk: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    // Regular frames 1..=2^32-3, the final frame at most 2^32-2 (readers
    // enforce the same bounds).
    let max = if is_final {
        FINAL_MARKER - 1
    } else {
        FINAL_MARKER - 2
    };
    if seq == 0 || seq > max {
        return Err(Error::invalid("too many frames: use a larger frame length"));
    }
    let len = u32::try_from(chunk.len()).map_err(|_| Error::invalid("frame too large"))?;
    if is_final {
        out.extend_from_slice(&FINAL_MARKER.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.extend_from_slice(&seq.to_be_bytes());
    }
    let aad = frame_aad(message_id, is_final, seq, u64::from(len));
    derived
        .cipher
        .seal_append(&nonce_for(seq), &aad, chunk, out)
}

/// Decrypts one frame's `ciphertext || tag`, appending the plaintext to `out`.
pub(crate) fn open_frame(
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    seq: u32,
    is_final: bool,
    ct_and_tag: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let len = ct_and_tag
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(Error::DecryptionFailed)? as u64;
    let aad = frame_aad(message_id, is_final, seq, len);
    derived
        .cipher
        .open_append(&nonce_for(seq), &aad, ct_and_tag, out)
}

/// The final-frame marker.
pub(crate) const FINAL: u32 = FINAL_MARKER;

/// Tag length, for the streaming module.
pub(crate) const TAG_LEN_PUB: usize = TAG_LEN;

/// Largest wrapped-key entry a reader accepts: a version 2 ciphertext blob
/// with a 255-byte key id and the largest backend payload (a version 1 blob
/// is always shorter).
pub(crate) const MAX_WRAPPED_LEN: usize = 6 + 255 + 4 + 2 + crate::backend::MAX_BACKEND_PAYLOAD;

/// Parses the header. Malformed input is the opaque decryption error.
pub(crate) fn parse_header(msg: &[u8]) -> Result<MessageHeader<'_>> {
    let mut r = Reader::new(msg);
    if r.array::<2>()? != MAGIC || r.u8()? != TYPE_MESSAGE || r.u8()? != VERSION_1 {
        return Err(Error::DecryptionFailed);
    }
    let suite = SymmetricAlgorithm::from_suite_id(r.u8()?).ok_or(Error::DecryptionFailed)?;
    if r.u8()? != LAYOUT_FRAMED {
        return Err(Error::DecryptionFailed);
    }
    let frame_len = r.u32()?;
    check_frame_len(frame_len).map_err(|_| Error::DecryptionFailed)?;
    let message_id = r.array::<MESSAGE_ID_LEN>()?;
    let ctx_len = r.u16()? as usize;
    let context = EncryptionContext::from_canonical_bytes(r.take(ctx_len)?)
        .map_err(|_| Error::DecryptionFailed)?;
    let count = r.u8()?;
    if count == 0 {
        return Err(Error::DecryptionFailed);
    }
    let mut wrapped_keys = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = r.u16()? as usize;
        wrapped_keys.push(r.take(len)?);
    }
    let commitment = r.array::<32>()?;
    let authenticated = &msg[..r.pos()];
    let header_tag = r.array::<TAG_LEN>()?;
    let body = r.rest();
    Ok(MessageHeader {
        suite,
        frame_len,
        message_id,
        context,
        wrapped_keys,
        commitment,
        authenticated,
        header_tag,
        body,
    })
}

/// Recomputes the commitment from the data key (constant-time compare) and
/// verifies the header tag; returns the body cipher.
pub(crate) fn verify_header(h: &MessageHeader<'_>, data_key: &[u8]) -> Result<Derived> {
    let derived = derive(h.suite, &h.message_id, data_key)?;
    if !bool::from(derived.commitment.ct_eq(&h.commitment)) {
        return Err(Error::DecryptionFailed);
    }
    let mut scratch = Vec::new();
    derived
        .cipher
        .open_append(&nonce_for(0), h.authenticated, &h.header_tag, &mut scratch)?;
    Ok(derived)
}

/// Decrypts every frame of an in-memory body.
pub(crate) fn decrypt_frames(
    h: &MessageHeader<'_>,
    derived: &Derived,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    append_plaintext(h, derived, &mut out)?;
    Ok(out)
}

/// Appends the authenticated plaintext of every frame to `out`. Capacity is
/// reserved up front (the plaintext is never reallocated, and so never left
/// behind unzeroized); on any failure what was appended is zeroized and
/// removed, and the error is the opaque one.
pub(crate) fn append_plaintext(
    h: &MessageHeader<'_>,
    derived: &Derived,
    out: &mut Vec<u8>,
) -> Result<()> {
    let start = out.len();
    out.reserve_exact(h.body.len());
    let result = append_frames(h, derived, out);
    if result.is_err() {
        zeroize::Zeroize::zeroize(&mut out[start..]);
        out.truncate(start);
    }
    result
}

fn append_frames(h: &MessageHeader<'_>, derived: &Derived, out: &mut Vec<u8>) -> Result<()> {
    let f = h.frame_len as usize;
    let mut r = Reader::new(h.body);
    let mut expected: u32 = 1;
    loop {
        let marker = r.u32()?;
        if marker == FINAL_MARKER {
            let seq = r.u32()?;
            let len = r.u32()?;
            if seq != expected || len as usize > f {
                return Err(Error::DecryptionFailed);
            }
            let ct = r.take(len as usize + TAG_LEN)?;
            open_frame(derived, &h.message_id, seq, true, ct, out)?;
            break;
        }
        if marker != expected || expected >= FINAL_MARKER - 1 {
            return Err(Error::DecryptionFailed);
        }
        let ct = r.take(f + TAG_LEN)?;
        open_frame(derived, &h.message_id, marker, false, ct, out)?;
        expected += 1;
    }
    if !r.is_empty() {
        return Err(Error::DecryptionFailed);
    }
    Ok(())
}
