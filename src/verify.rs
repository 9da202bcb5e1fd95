//! Offline public-key operations: verify signatures and encrypt to HPKE keys
//! with only an exported public key, no ring.

use crate::backend::material::{HpkeAead, HpkeKdf, HpkeKem};
use crate::error::{Error, Result};

/// Whether a signing input is the message or its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MessageType {
    /// The whole message (hashed with SHA-256 for ECDSA).
    #[default]
    Raw,
    /// A SHA-256 digest the caller computed (ECDSA P-256 only; 32 bytes).
    Digest,
}

/// How an ECDSA signature is encoded. Ed25519 signatures are always the
/// 64-byte RFC 8032 encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SignatureFormat {
    /// ASN.1 DER `SEQUENCE { r, s }`, as KMS returns it. Default.
    #[default]
    Der,
    /// Fixed-size `r || s` (IEEE P1363), 64 bytes.
    Raw,
}

/// A public key that verifies signatures offline.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PublicKeyVerifier {
    /// ECDSA P-256 with SHA-256.
    P256(p256::ecdsa::VerifyingKey),
    /// Ed25519, verified strictly (RFC 8032 with canonical encodings, no
    /// small-order keys).
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PublicKeyVerifier {
    /// From SubjectPublicKeyInfo DER (what `get_public_key` returns).
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        use p256::pkcs8::DecodePublicKey;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKeyVerifier::P256(k));
        }
        if let Ok(k) = <ed25519_dalek::VerifyingKey as ed25519_dalek::pkcs8::DecodePublicKey>::from_public_key_der(der) {
            return Ok(PublicKeyVerifier::Ed25519(k));
        }
        Err(Error::invalid(
            "not a P-256 or Ed25519 SubjectPublicKeyInfo (DER)",
        ))
    }

    /// From a PEM `PUBLIC KEY` block.
    pub fn from_pem(pem: &str) -> Result<Self> {
        use p256::pkcs8::DecodePublicKey;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(PublicKeyVerifier::P256(k));
        }
        if let Ok(k) = <ed25519_dalek::VerifyingKey as ed25519_dalek::pkcs8::DecodePublicKey>::from_public_key_pem(pem) {
            return Ok(PublicKeyVerifier::Ed25519(k));
        }
        Err(Error::invalid("not a P-256 or Ed25519 PUBLIC KEY PEM"))
    }

    /// [`PublicKeyVerifier::verify`] with `provider`'s primitives (the same
    /// decisions under every provider; the key is prepared per call, so a
    /// ring, which caches it, is faster for many signatures).
    pub fn verify_with(
        &self,
        provider: crate::crypto::CryptoProvider,
        message: &[u8],
        signature: &[u8],
        message_type: MessageType,
        format: SignatureFormat,
    ) -> Result<bool> {
        crate::crypto::Verifier::new(provider, self.clone())?.verify(
            message,
            signature,
            message_type,
            format,
        )
    }

    /// True if `signature` is valid for `message`. Malformed signatures are
    /// simply invalid; a digest of the wrong length, or a digest for an
    /// Ed25519 key, is an argument error.
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8],
        message_type: MessageType,
        format: SignatureFormat,
    ) -> Result<bool> {
        match self {
            PublicKeyVerifier::P256(vk) => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier;
                use sha2::Digest;
                let digest: [u8; 32] = match message_type {
                    MessageType::Raw => sha2::Sha256::digest(message).into(),
                    MessageType::Digest => message.try_into().map_err(|_| {
                        Error::invalid("an ECDSA P-256 digest must be 32 bytes (SHA-256)")
                    })?,
                };
                let sig = match format {
                    SignatureFormat::Der => p256::ecdsa::Signature::from_der(signature),
                    SignatureFormat::Raw => p256::ecdsa::Signature::from_slice(signature),
                };
                Ok(sig.is_ok_and(|s| vk.verify_prehash(&digest, &s).is_ok()))
            }
            PublicKeyVerifier::Ed25519(vk) => {
                if message_type == MessageType::Digest {
                    return Err(Error::invalid(
                        "Ed25519 signs whole messages; MessageType::Digest is not supported",
                    ));
                }
                let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
                    return Ok(false);
                };
                Ok(vk.verify_strict(message, &sig).is_ok())
            }
        }
    }
}

/// Encrypts `plaintext` to an HPKE public key of the ring (SPKI DER of a
/// [`crate::KeySpec::HpkeP256`] key, from `get_public_key`), offline: RFC
/// 9180 base mode, DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM,
/// with the application's `info` and associated data `aad`. Returns
/// `enc (65) || ciphertext || tag (16)` (docs/FORMAT.md, "HPKE ciphertext");
/// only the ring can open it (`Client::decrypt_hpke`, same `info` and `aad`).
pub fn hpke_seal(
    public_key_der: &[u8],
    info: &[u8],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>> {
    hpke_seal_with_info(public_key_der, info, plaintext, aad)
}

pub(crate) fn hpke_seal_with_info(
    public_key_der: &[u8],
    info: &[u8],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>> {
    use hpke::{Deserializable, OpModeS, Serializable};
    use p256::pkcs8::DecodePublicKey;
    let pk = p256::PublicKey::from_public_key_der(public_key_der)
        .map_err(|_| Error::invalid("not a P-256 SubjectPublicKeyInfo (DER)"))?;
    let point = p256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&pk, false);
    let pk = <HpkeKem as hpke::Kem>::PublicKey::from_bytes(point.as_bytes())
        .map_err(|_| Error::invalid("not a valid HPKE P-256 public key"))?;
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    let (enc, ct) = hpke::single_shot_seal_with_rng::<HpkeAead, HpkeKdf, HpkeKem>(
        &OpModeS::Base,
        &pk,
        info,
        plaintext,
        aad,
        &mut rng,
    )
    .map_err(|_| Error::invalid("HPKE encryption failed"))?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}
