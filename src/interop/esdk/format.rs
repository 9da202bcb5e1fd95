//! The ESDK message format: header, header authentication, framed and
//! non-framed bodies, footer, key derivation and commitment, signatures.
//!
//! Everything here works on bytes already in memory and is reached through
//! the bounds-checked [`Reader`]; every malformed input is
//! [`Error::DecryptionFailed`].

use super::EsdkSuite;
use crate::crypto::{Cipher, NONCE_LEN, TAG_LEN};
use crate::envelope::{EncryptionContext, Reader};
use crate::error::{Error, Result};
use crate::key::SymmetricAlgorithm;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Marker that starts the final frame.
pub(crate) const FINAL_MARKER: u32 = 0xFFFF_FFFF;
/// Content type byte: non-framed body (read only).
const CONTENT_NON_FRAMED: u8 = 0x01;
/// Content type byte: framed body.
pub(crate) const CONTENT_FRAMED: u8 = 0x02;
/// Object type byte of version 1 headers ("customer authenticated encrypted data").
const V1_TYPE: u8 = 0x80;
/// Body AAD content string of a regular frame.
const FRAME_STRING: &[u8] = b"AWSKMSEncryptionClient Frame";
/// Body AAD content string of the final frame.
const FINAL_FRAME_STRING: &[u8] = b"AWSKMSEncryptionClient Final Frame";
/// Body AAD content string of a non-framed body.
pub(crate) const SINGLE_BLOCK_STRING: &[u8] = b"AWSKMSEncryptionClient Single Block";
/// HKDF info label of the data encryption key (committing suites).
const DERIVE_LABEL: &[u8] = b"DERIVEKEY";
/// HKDF info label of the commitment key (committing suites).
const COMMIT_LABEL: &[u8] = b"COMMITKEY";
/// Largest serialized encryption context the format can carry.
pub(crate) const MAX_ESDK_CONTEXT_LEN: usize = u16::MAX as usize;

/// The encryption-context key holding the signing public key.
pub(crate) const PUBLIC_KEY_KEY: &str = "aws-crypto-public-key";

/// One encrypted data key as it appears in a header.
#[derive(Clone, Copy)]
pub(crate) struct Edk<'a> {
    pub provider_id: &'a [u8],
    pub provider_info: &'a [u8],
    pub ciphertext: &'a [u8],
}

/// A parsed, not yet authenticated, header.
pub(crate) struct Header<'a> {
    pub suite: EsdkSuite,
    pub message_id: &'a [u8],
    pub context: EncryptionContext,
    pub edks: Vec<Edk<'a>>,
    pub framed: bool,
    pub frame_len: u32,
    pub commitment: Option<&'a [u8]>,
    /// The header bytes the header tag authenticates.
    pub authenticated: &'a [u8],
    pub auth_iv: [u8; NONCE_LEN],
    pub auth_tag: &'a [u8],
    /// Total header length, authentication included.
    pub len: usize,
}

// ---- encryption context -------------------------------------------------

/// The ESDK serialization of a context: the empty context is zero bytes;
/// otherwise `count u16`, then per pair in UTF-8 byte order of the keys
/// `key_len u16, key, value_len u16, value`.
pub(crate) fn serialize_context(ctx: &EncryptionContext) -> Result<Vec<u8>> {
    if ctx.is_empty() {
        return Ok(Vec::new());
    }
    let too_big = || Error::invalid("encryption context too large for an ESDK message");
    let count = u16::try_from(ctx.len()).map_err(|_| too_big())?;
    let mut out = Vec::with_capacity(2 + ctx.len() * 16);
    out.extend_from_slice(&count.to_be_bytes());
    // `EncryptionContext` iterates in `String` order, which is the order of
    // the UTF-8 bytes.
    for (k, v) in ctx.iter() {
        for s in [k, v] {
            let len = u16::try_from(s.len()).map_err(|_| too_big())?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    if out.len() > MAX_ESDK_CONTEXT_LEN {
        return Err(too_big());
    }
    Ok(out)
}

/// Parses an ESDK context. As the reference implementation does, pairs may
/// come in any order; duplicate keys, invalid UTF-8 and trailing bytes are
/// refused, and so are empty keys (strongroom contexts have none).
pub(crate) fn parse_context(bytes: &[u8]) -> Result<EncryptionContext> {
    let mut ctx = EncryptionContext::new();
    if bytes.is_empty() {
        return Ok(ctx);
    }
    let mut r = Reader::new(bytes);
    let count = r.u16()?;
    for _ in 0..count {
        let klen = r.u16()? as usize;
        let k = r.take(klen)?;
        let vlen = r.u16()? as usize;
        let v = r.take(vlen)?;
        let k = std::str::from_utf8(k).map_err(|_| Error::DecryptionFailed)?;
        let v = std::str::from_utf8(v).map_err(|_| Error::DecryptionFailed)?;
        if k.is_empty() || ctx.get(k).is_some() {
            return Err(Error::DecryptionFailed);
        }
        ctx.insert(k, v);
    }
    if !r.is_empty() {
        return Err(Error::DecryptionFailed);
    }
    Ok(ctx)
}

// ---- header -------------------------------------------------------------

/// Parses the header at the start of `buf` (the body follows at
/// [`Header::len`]).
pub(crate) fn parse_header(buf: &[u8]) -> Result<Header<'_>> {
    let mut r = Reader::new(buf);
    let version = r.u8()?;
    match version {
        0x02 => {}
        0x01 => {
            if r.u8()? != V1_TYPE {
                return Err(Error::DecryptionFailed);
            }
        }
        _ => return Err(Error::DecryptionFailed),
    }
    let suite = EsdkSuite::from_id(r.u16()?).ok_or(Error::DecryptionFailed)?;
    if suite.message_format_version() != version {
        return Err(Error::DecryptionFailed);
    }
    let message_id = r.take(suite.message_id_len())?;
    let ctx_len = r.u16()? as usize;
    let context = parse_context(r.take(ctx_len)?)?;
    let edk_count = r.u16()?;
    if edk_count == 0 {
        return Err(Error::DecryptionFailed);
    }
    let mut edks = Vec::with_capacity(usize::from(edk_count).min(64));
    for _ in 0..edk_count {
        let n = r.u16()? as usize;
        let provider_id = r.take(n)?;
        let n = r.u16()? as usize;
        let provider_info = r.take(n)?;
        let n = r.u16()? as usize;
        let ciphertext = r.take(n)?;
        edks.push(Edk {
            provider_id,
            provider_info,
            ciphertext,
        });
    }
    let framed = match r.u8()? {
        CONTENT_FRAMED => true,
        CONTENT_NON_FRAMED => false,
        _ => return Err(Error::DecryptionFailed),
    };
    if version == 0x01 {
        // Reserved (formerly content AAD length) and the IV length.
        if r.u32()? != 0 || usize::from(r.u8()?) != NONCE_LEN {
            return Err(Error::DecryptionFailed);
        }
    }
    let frame_len = r.u32()?;
    if framed == (frame_len == 0) {
        // Framed bodies need frames of at least one byte; non-framed ones
        // declare zero.
        return Err(Error::DecryptionFailed);
    }
    let commitment = if suite.is_committing() {
        Some(r.take(32)?)
    } else {
        None
    };
    let authenticated = buf.get(..r.pos()).ok_or(Error::DecryptionFailed)?;
    let auth_iv = if version == 0x01 {
        r.array::<NONCE_LEN>()?
    } else {
        [0u8; NONCE_LEN]
    };
    let auth_tag = r.take(TAG_LEN)?;
    Ok(Header {
        suite,
        message_id,
        context,
        edks,
        framed,
        frame_len,
        commitment,
        authenticated,
        auth_iv,
        auth_tag,
        len: r.pos(),
    })
}

/// An encrypted data key to write.
pub(crate) struct EdkOut {
    pub provider_id: Vec<u8>,
    pub provider_info: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

fn put_u16_bytes(out: &mut Vec<u8>, bytes: &[u8], what: &str) -> Result<()> {
    let n = u16::try_from(bytes.len())
        .map_err(|_| Error::invalid(format!("{what} longer than 65535 bytes")))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Writes a version 2 header body (everything the header tag authenticates).
pub(crate) fn encode_header_v2(
    suite: EsdkSuite,
    message_id: &[u8; 32],
    context_bytes: &[u8],
    edks: &[EdkOut],
    frame_len: u32,
    commitment: &[u8; 32],
) -> Result<Vec<u8>> {
    let count = u16::try_from(edks.len())
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| Error::invalid("an ESDK message needs 1 to 65535 encrypted data keys"))?;
    let mut h = Vec::with_capacity(128 + context_bytes.len() + edks.len() * 128);
    h.push(0x02);
    h.extend_from_slice(&suite.id().to_be_bytes());
    h.extend_from_slice(message_id);
    put_u16_bytes(&mut h, context_bytes, "encryption context")?;
    h.extend_from_slice(&count.to_be_bytes());
    for e in edks {
        put_u16_bytes(&mut h, &e.provider_id, "key provider id")?;
        put_u16_bytes(&mut h, &e.provider_info, "key provider info")?;
        put_u16_bytes(&mut h, &e.ciphertext, "encrypted data key")?;
    }
    h.push(CONTENT_FRAMED);
    h.extend_from_slice(&frame_len.to_be_bytes());
    h.extend_from_slice(commitment);
    Ok(h)
}

// ---- keys ---------------------------------------------------------------

/// The keys of one message, derived from its data key.
pub(crate) struct MessageKeys {
    pub cipher: Cipher,
    pub commitment: Option<Zeroizing<[u8; 32]>>,
}

/// Derives the data encryption key (and, for committing suites, the
/// commitment key) from the data key.
///
/// - 0x0478/0x0578: HKDF-SHA512, salt = message id, info = suite id (u16
///   BE) ‖ "DERIVEKEY" for the key, "COMMITKEY" for the commitment.
/// - 0x0178: HKDF-SHA256, no salt, info = suite id ‖ message id.
/// - 0x0378: HKDF-SHA384, no salt, info = suite id ‖ message id.
pub(crate) fn derive(suite: EsdkSuite, message_id: &[u8], data_key: &[u8]) -> Result<MessageKeys> {
    let id = suite.id().to_be_bytes();
    let mut key = Zeroizing::new([0u8; 32]);
    let bad = |_| Error::invalid("HKDF output length out of range");
    let commitment = match suite {
        EsdkSuite::AesGcmHkdfSha512Commit | EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384 => {
            let hk = hkdf::Hkdf::<sha2::Sha512>::new(Some(message_id), data_key);
            let mut c = Zeroizing::new([0u8; 32]);
            hk.expand_multi_info(&[&id, DERIVE_LABEL], key.as_mut_slice())
                .map_err(bad)?;
            hk.expand(COMMIT_LABEL, c.as_mut_slice()).map_err(bad)?;
            Some(c)
        }
        EsdkSuite::LegacyAesGcmHkdfSha256 => {
            hkdf::Hkdf::<sha2::Sha256>::new(None, data_key)
                .expand_multi_info(&[&id, message_id], key.as_mut_slice())
                .map_err(bad)?;
            None
        }
        EsdkSuite::LegacyAesGcmHkdfSha384EcdsaP384 => {
            hkdf::Hkdf::<sha2::Sha384>::new(None, data_key)
                .expand_multi_info(&[&id, message_id], key.as_mut_slice())
                .map_err(bad)?;
            None
        }
    };
    Ok(MessageKeys {
        cipher: Cipher::new(SymmetricAlgorithm::Aes256Gcm, &key),
        commitment,
    })
}

/// The header tag (version 2: IV of zeros, no IV written).
pub(crate) fn header_tag(cipher: &Cipher, header_body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(TAG_LEN);
    cipher.seal_append(&[0u8; NONCE_LEN], header_body, b"", &mut out)?;
    Ok(out)
}

/// Checks the commitment (constant time) and the header tag; returns the
/// body cipher.
pub(crate) fn verify_header(h: &Header<'_>, data_key: &[u8]) -> Result<Cipher> {
    let keys = derive(h.suite, h.message_id, data_key)?;
    match (&keys.commitment, h.commitment) {
        (Some(mine), Some(theirs)) => {
            if !bool::from(mine.as_slice().ct_eq(theirs)) {
                return Err(Error::DecryptionFailed);
            }
        }
        (None, None) => {}
        _ => return Err(Error::DecryptionFailed),
    }
    let mut empty = Vec::new();
    keys.cipher
        .open_append(&h.auth_iv, h.authenticated, h.auth_tag, &mut empty)?;
    Ok(keys.cipher)
}

// ---- body -----------------------------------------------------------------

/// The IV of frame `seq`: eight zero bytes, then `seq` (u32 BE).
pub(crate) fn frame_iv(seq: u32) -> [u8; NONCE_LEN] {
    let mut iv = [0u8; NONCE_LEN];
    iv[8..].copy_from_slice(&seq.to_be_bytes());
    iv
}

/// Body AAD: message id ‖ content string ‖ sequence number (u32) ‖ content
/// length (u64).
pub(crate) fn body_aad(message_id: &[u8], content: &[u8], seq: u32, len: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(message_id.len() + content.len() + 12);
    aad.extend_from_slice(message_id);
    aad.extend_from_slice(content);
    aad.extend_from_slice(&seq.to_be_bytes());
    aad.extend_from_slice(&len.to_be_bytes());
    aad
}

/// Appends one encrypted frame (regular or final) to `out`.
pub(crate) fn seal_frame(
    cipher: &Cipher,
    message_id: &[u8],
    seq: u32,
    is_final: bool,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let iv = frame_iv(seq);
    let content = if is_final {
        FINAL_FRAME_STRING
    } else {
        FRAME_STRING
    };
    if is_final {
        out.extend_from_slice(&FINAL_MARKER.to_be_bytes());
    }
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&iv);
    if is_final {
        let len =
            u32::try_from(plaintext.len()).map_err(|_| Error::invalid("final frame too long"))?;
        out.extend_from_slice(&len.to_be_bytes());
    }
    let aad = body_aad(message_id, content, seq, plaintext.len() as u64);
    cipher.seal_append(&iv, &aad, plaintext, out)
}

/// Decrypts one frame's `ciphertext ‖ tag` into `out`. Version 2 frames
/// must carry the deterministic IV of their sequence number; version 1
/// frames (written before deterministic IVs by old SDKs) may carry any.
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_frame(
    suite: EsdkSuite,
    cipher: &Cipher,
    message_id: &[u8],
    seq: u32,
    is_final: bool,
    iv: &[u8; NONCE_LEN],
    ct_and_tag: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    if suite.message_format_version() == 0x02 && !bool::from(iv.ct_eq(&frame_iv(seq))) {
        return Err(Error::DecryptionFailed);
    }
    let len = ct_and_tag
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(Error::DecryptionFailed)?;
    let content = if is_final {
        FINAL_FRAME_STRING
    } else {
        FRAME_STRING
    };
    let aad = body_aad(message_id, content, seq, len as u64);
    cipher.open_append(iv, &aad, ct_and_tag, out)
}

/// Encrypts `data` into frames of `frame_len`, appending to `out`: full
/// regular frames, then a final frame with the remaining 0..frame_len
/// bytes (as the reference SDK writes them).
pub(crate) fn encrypt_body(
    cipher: &Cipher,
    message_id: &[u8],
    frame_len: u32,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let f = frame_len as usize;
    let full = data.len() / f;
    if full >= FINAL_MARKER as usize {
        return Err(Error::invalid(
            "too many frames for an ESDK message: use a larger frame length",
        ));
    }
    out.reserve(data.len() + (full + 1) * (4 + NONCE_LEN + TAG_LEN) + 8);
    let mut seq = 1u32;
    let mut chunks = data.chunks_exact(f);
    for chunk in chunks.by_ref() {
        seal_frame(cipher, message_id, seq, false, chunk, out)?;
        seq += 1;
    }
    seal_frame(cipher, message_id, seq, true, chunks.remainder(), out)
}

/// Decrypts the body starting at `body` into `out`; returns the number of
/// body bytes consumed (the footer, if any, follows).
pub(crate) fn decrypt_body(
    h: &Header<'_>,
    cipher: &Cipher,
    body: &[u8],
    out: &mut Zeroizing<Vec<u8>>,
) -> Result<usize> {
    let mut r = Reader::new(body);
    if !h.framed {
        let iv = r.array::<NONCE_LEN>()?;
        let len = r.take(8)?;
        let len = u64::from_be_bytes(len.try_into().map_err(|_| Error::DecryptionFailed)?);
        let len = usize::try_from(len).map_err(|_| Error::DecryptionFailed)?;
        let ct = r.take(len.checked_add(TAG_LEN).ok_or(Error::DecryptionFailed)?)?;
        let aad = body_aad(h.message_id, SINGLE_BLOCK_STRING, 1, len as u64);
        cipher.open_append(&iv, &aad, ct, out)?;
        return Ok(r.pos());
    }
    let f = h.frame_len as usize;
    let mut expected = 1u32;
    loop {
        let marker = r.u32()?;
        if marker == FINAL_MARKER {
            let seq = r.u32()?;
            let iv = r.array::<NONCE_LEN>()?;
            let len = r.u32()? as usize;
            if seq != expected || len > f {
                return Err(Error::DecryptionFailed);
            }
            let ct = r.take(len + TAG_LEN)?;
            open_frame(h.suite, cipher, h.message_id, seq, true, &iv, ct, out)?;
            return Ok(r.pos());
        }
        if marker != expected {
            return Err(Error::DecryptionFailed);
        }
        let iv = r.array::<NONCE_LEN>()?;
        let ct = r.take(f.checked_add(TAG_LEN).ok_or(Error::DecryptionFailed)?)?;
        open_frame(h.suite, cipher, h.message_id, marker, false, &iv, ct, out)?;
        // `marker` < FINAL_MARKER here, so this cannot overflow.
        expected = marker + 1;
    }
}

// ---- signatures: see `signature.rs` ---------------------------------------

pub(crate) use super::signature::{Signer, Verifier, verify_footer};

/// Checks the context against the suite: a signed suite needs the public
/// key, an unsigned one must not carry it.
pub(crate) fn check_context_for_suite(h: &Header<'_>) -> Result<()> {
    if h.suite.is_signed() != h.context.get(PUBLIC_KEY_KEY).is_some() {
        return Err(Error::DecryptionFailed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    #[test]
    fn context_serialization_matches_the_esdk() {
        assert!(
            serialize_context(&EncryptionContext::new())
                .unwrap()
                .is_empty()
        );
        let ctx = EncryptionContext::new().with("b", "2").with("a", "1");
        let mut want = 2u16.to_be_bytes().to_vec();
        want.extend(pair("a", "1"));
        want.extend(pair("b", "2"));
        assert_eq!(serialize_context(&ctx).unwrap(), want);
        assert_eq!(parse_context(&want).unwrap(), ctx);
        // Unsorted pairs are read (the reference SDK does not sort-check);
        // duplicates, empty keys, bad UTF-8 and trailing bytes are not.
        let mut unsorted = 2u16.to_be_bytes().to_vec();
        unsorted.extend(pair("b", "2"));
        unsorted.extend(pair("a", "1"));
        assert_eq!(parse_context(&unsorted).unwrap(), ctx);
        let mut dup = 2u16.to_be_bytes().to_vec();
        dup.extend(pair("a", "1"));
        dup.extend(pair("a", "2"));
        assert!(parse_context(&dup).is_err());
        let mut empty_key = 1u16.to_be_bytes().to_vec();
        empty_key.extend(pair("", "1"));
        assert!(parse_context(&empty_key).is_err());
        let mut bad = 1u16.to_be_bytes().to_vec();
        bad.extend([0, 1, 0xff, 0, 0]);
        assert!(parse_context(&bad).is_err());
        let mut trailing = want.clone();
        trailing.push(0);
        assert!(parse_context(&trailing).is_err());
        // An explicit count of zero is the empty context.
        assert!(parse_context(&[0, 0]).unwrap().is_empty());
    }

    #[test]
    fn frame_ivs_and_body_aad() {
        assert_eq!(frame_iv(1), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(frame_iv(0x0102_0304)[8..], [1, 2, 3, 4]);
        let aad = body_aad(&[9; 32], FINAL_FRAME_STRING, 7, 300);
        assert_eq!(aad.len(), 32 + FINAL_FRAME_STRING.len() + 4 + 8);
        assert_eq!(&aad[aad.len() - 12..aad.len() - 8], &7u32.to_be_bytes());
        assert_eq!(&aad[aad.len() - 8..], &300u64.to_be_bytes());
    }
}
