//! ESDK message signatures: ECDSA P-384 over the header and body, with the
//! public key carried in the encryption context.

use super::format::*;
use crate::envelope::{EncryptionContext, Reader};
use crate::error::{Error, Result};
use crate::random::{RandomSource, random_array};
use sha2::Digest;
use zeroize::Zeroizing;

/// Length of a P-384 signature as the ESDK writes it (DER, fixed length).
const SIGNATURE_LEN: usize = 103;
/// Length of a compressed P-384 point.
const COMPRESSED_POINT_LEN: usize = 49;

/// Adapts the ring's [`RandomSource`] to the RNG traits of the signer.
struct RngAdapter<'a>(&'a dyn RandomSource);

impl rand_core::TryRng for RngAdapter<'_> {
    type Error = Error;
    fn try_next_u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(random_array(self.0)?))
    }
    fn try_next_u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(random_array(self.0)?))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<()> {
        self.0.fill(dst)
    }
}

impl rand_core::TryCryptoRng for RngAdapter<'_> {}

/// The per-message ECDSA P-384 signer of suites 0x0578 (and the hash of
/// every byte written so far).
pub(crate) struct Signer {
    key: p384::ecdsa::SigningKey,
    hash: sha2::Sha384,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh signing key from `rng`, and its public key as the context
    /// value (base64 of the compressed point).
    pub(crate) fn generate(rng: &dyn RandomSource) -> Result<(Signer, String)> {
        use base64ct::Encoding;
        for _ in 0..16 {
            let raw: Zeroizing<[u8; 48]> = Zeroizing::new(random_array(rng)?);
            if let Ok(key) = p384::ecdsa::SigningKey::from_slice(raw.as_slice()) {
                let point = key.verifying_key().to_sec1_point(true);
                let public = base64ct::Base64::encode_string(point.as_bytes());
                return Ok((
                    Signer {
                        key,
                        hash: sha2::Sha384::new(),
                    },
                    public,
                ));
            }
        }
        Err(Error::Random)
    }

    /// Adds message bytes to the signed hash.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
    }

    /// The footer: signature length (u16) ‖ DER signature of the hash, of
    /// the fixed length the reference SDK writes: as it does, `s` or
    /// `n − s` (both valid), whichever makes the DER 103 bytes; a fresh
    /// signature in the rare case neither does.
    pub(crate) fn footer(self, rng: &dyn RandomSource) -> Result<Vec<u8>> {
        use p384::ecdsa::signature::hazmat::RandomizedPrehashSigner;
        let digest = self.hash.finalize();
        let mut adapter = RngAdapter(rng);
        for _ in 0..64 {
            let sig: p384::ecdsa::Signature = self
                .key
                .sign_prehash_with_rng(&mut adapter, &digest)
                .map_err(|_| Error::Random)?;
            for candidate in [Some(sig), negate_s(&sig)].into_iter().flatten() {
                let der = candidate.to_der();
                let der = der.as_bytes();
                if der.len() == SIGNATURE_LEN {
                    let mut out = Vec::with_capacity(2 + der.len());
                    out.extend_from_slice(&(der.len() as u16).to_be_bytes());
                    out.extend_from_slice(der);
                    return Ok(out);
                }
            }
        }
        Err(Error::Random)
    }
}

/// The same signature with `s` replaced by `n − s` (also valid).
fn negate_s(sig: &p384::ecdsa::Signature) -> Option<p384::ecdsa::Signature> {
    use p384::elliptic_curve::ff::PrimeField;
    let (r, s) = sig.split_scalars();
    let r: p384::Scalar = *r.as_ref();
    let neg: p384::Scalar = -*s.as_ref();
    p384::ecdsa::Signature::from_scalars(r.to_repr(), neg.to_repr()).ok()
}

/// Verifies the footer `footer` (signature length ‖ DER signature, and
/// nothing after it) over `signed` (every message byte before the footer)
/// with the public key in `context`.
pub(crate) fn verify_footer(
    context: &EncryptionContext,
    signed: &[u8],
    footer: &[u8],
) -> Result<()> {
    let mut r = Reader::new(footer);
    let n = r.u16()? as usize;
    let sig = r.take(n)?;
    if !r.is_empty() {
        return Err(Error::DecryptionFailed);
    }
    let verifier = Verifier::from_context(context)?;
    let mut h = sha2::Sha384::new();
    h.update(signed);
    verifier.verify(h, sig)
}

/// The verifier of a signed message: its public key, from the context.
pub(crate) struct Verifier {
    key: p384::ecdsa::VerifyingKey,
}

impl Verifier {
    /// The key under `aws-crypto-public-key` (base64 of a compressed
    /// P-384 point); absent or malformed is the opaque error.
    pub(crate) fn from_context(context: &EncryptionContext) -> Result<Verifier> {
        use base64ct::Encoding;
        let b64 = context.get(PUBLIC_KEY_KEY).ok_or(Error::DecryptionFailed)?;
        let point = base64ct::Base64::decode_vec(b64).map_err(|_| Error::DecryptionFailed)?;
        if point.len() != COMPRESSED_POINT_LEN || !matches!(point[0], 0x02 | 0x03) {
            return Err(Error::DecryptionFailed);
        }
        let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&point)
            .map_err(|_| Error::DecryptionFailed)?;
        Ok(Verifier { key })
    }

    /// Verifies a DER signature over the hash `h`.
    pub(crate) fn verify(&self, h: sha2::Sha384, sig_der: &[u8]) -> Result<()> {
        use p384::ecdsa::signature::hazmat::PrehashVerifier;
        let sig = p384::ecdsa::Signature::from_der(sig_der).map_err(|_| Error::DecryptionFailed)?;
        let digest = h.finalize();
        self.key
            .verify_prehash(&digest, &sig)
            .map_err(|_| Error::DecryptionFailed)
    }
}
