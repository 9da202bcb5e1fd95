//! ECDSA P-256 (SHA-256) and Ed25519 keys of a provider.
//!
//! Encodings stay with the RustCrypto crates under every provider (SPKI,
//! PKCS#8, DER signatures), so every provider reads and writes the same
//! bytes; only the arithmetic moves.

use super::CryptoProvider;
use super::provider::Imp;
use crate::error::{Error, Result};
use crate::verify::{MessageType, PublicKeyVerifier, SignatureFormat};

fn bad_digest() -> Error {
    Error::invalid("an ECDSA P-256 digest must be 32 bytes (SHA-256)")
}

/// A P-256 signing key. Secret state is zeroized on drop (ecdsa's
/// `SigningKey`; AWS-LC's `EC_KEY`, cleansed when freed).
pub(crate) enum P256Key {
    RustCrypto(Box<p256::ecdsa::SigningKey>),
    #[cfg(feature = "aws-lc-rs")]
    AwsLc {
        key: Box<aws_lc_rs::signature::EcdsaKeyPair>,
        public: p256::ecdsa::VerifyingKey,
    },
}

impl std::fmt::Debug for P256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("P256Key(<redacted>)")
    }
}

impl P256Key {
    /// From the 32-byte big-endian scalar; an error if it is not in
    /// `1..n`.
    pub(crate) fn from_scalar(provider: CryptoProvider, raw: &[u8]) -> Result<P256Key> {
        let bad = || Error::invalid("P-256 key material must be a 32-byte P-256 scalar");
        let sk = p256::ecdsa::SigningKey::from_slice(raw).map_err(|_| bad())?;
        match provider.imp {
            Imp::RustCrypto => Ok(P256Key::RustCrypto(Box::new(sk))),
            #[cfg(feature = "aws-lc-rs")]
            Imp::AwsLc => {
                use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
                let public = *sk.verifying_key();
                let point = public.to_sec1_point(false);
                // The scalar as p256 read it (a shorter slice is
                // zero-extended, as it always has been), so both providers
                // hold the same key.
                let scalar = zeroize::Zeroizing::new(<[u8; 32]>::from(sk.to_bytes()));
                let key = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    scalar.as_slice(),
                    point.as_bytes(),
                )
                .map_err(|_| bad())?;
                Ok(P256Key::AwsLc {
                    key: Box::new(key),
                    public,
                })
            }
        }
    }

    /// The public key.
    pub(crate) fn verifying_key(&self) -> p256::ecdsa::VerifyingKey {
        match self {
            P256Key::RustCrypto(k) => *k.verifying_key(),
            #[cfg(feature = "aws-lc-rs")]
            P256Key::AwsLc { public, .. } => *public,
        }
    }

    /// Signs a SHA-256 digest: raw `r || s`, low-S.
    pub(crate) fn sign_digest(&self, digest: &[u8]) -> Result<[u8; 64]> {
        if digest.len() != 32 {
            return Err(bad_digest());
        }
        let failed = || Error::invalid("the digest cannot be signed");
        let sig: p256::ecdsa::Signature = match self {
            P256Key::RustCrypto(k) => {
                use p256::ecdsa::signature::hazmat::PrehashSigner;
                k.sign_prehash(digest).map_err(|_| failed())?
            }
            #[cfg(feature = "aws-lc-rs")]
            P256Key::AwsLc { key, .. } => {
                use aws_lc_rs::digest::{Digest, SHA256};
                let d = Digest::import_less_safe(digest, &SHA256).map_err(|_| bad_digest())?;
                let sig = key.sign_digest(&d).map_err(|_| failed())?;
                p256::ecdsa::Signature::from_slice(sig.as_ref()).map_err(|_| failed())?
            }
        };
        // Low-S form, so signatures are canonical.
        Ok(sig.normalize_s().to_bytes().into())
    }
}

/// An Ed25519 signing key. Secret state is zeroized on drop (ed25519-dalek's
/// `SigningKey`; AWS-LC's key, cleansed when freed).
pub(crate) enum Ed25519Key {
    RustCrypto(Box<ed25519_dalek::SigningKey>),
    #[cfg(feature = "aws-lc-rs")]
    AwsLc {
        key: Box<aws_lc_rs::signature::Ed25519KeyPair>,
        public: ed25519_dalek::VerifyingKey,
    },
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ed25519Key(<redacted>)")
    }
}

impl Ed25519Key {
    /// From the 32-byte seed.
    pub(crate) fn from_seed(provider: CryptoProvider, seed: &[u8; 32]) -> Result<Ed25519Key> {
        let sk = ed25519_dalek::SigningKey::from_bytes(seed);
        match provider.imp {
            Imp::RustCrypto => Ok(Ed25519Key::RustCrypto(Box::new(sk))),
            #[cfg(feature = "aws-lc-rs")]
            Imp::AwsLc => {
                let key = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed)
                    .map_err(|_| Error::invalid("Ed25519 key material must be a 32-byte seed"))?;
                Ok(Ed25519Key::AwsLc {
                    key: Box::new(key),
                    public: sk.verifying_key(),
                })
            }
        }
    }

    /// The public key.
    pub(crate) fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        match self {
            Ed25519Key::RustCrypto(k) => k.verifying_key(),
            #[cfg(feature = "aws-lc-rs")]
            Ed25519Key::AwsLc { public, .. } => *public,
        }
    }

    /// The 64-byte RFC 8032 signature of `message` (deterministic: the same
    /// bytes under every provider).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        match self {
            Ed25519Key::RustCrypto(k) => {
                use ed25519_dalek::Signer;
                k.sign(message).to_bytes()
            }
            #[cfg(feature = "aws-lc-rs")]
            Ed25519Key::AwsLc { key, .. } => {
                let mut out = [0u8; 64];
                out.copy_from_slice(key.sign(message).as_ref());
                out
            }
        }
    }
}

/// A public key prepared for one provider's verification (the ring caches
/// one per key).
#[derive(Debug)]
pub(crate) struct Verifier {
    public: PublicKeyVerifier,
    #[cfg(feature = "aws-lc-rs")]
    aws_lc: AwsLcKey,
}

/// The key as AWS-LC holds it.
#[cfg(feature = "aws-lc-rs")]
#[derive(Debug)]
enum AwsLcKey {
    /// Not the AWS-LC provider.
    None,
    Parsed(aws_lc_rs::signature::ParsedPublicKey),
    /// A key AWS-LC refuses to parse (Ed25519 keys of small order may be):
    /// every signature is invalid, as under ed25519-dalek's strict rules.
    Refused,
}

impl Verifier {
    /// `public`, prepared for `provider`.
    pub(crate) fn new(provider: CryptoProvider, public: PublicKeyVerifier) -> Result<Verifier> {
        match provider.imp {
            Imp::RustCrypto => Ok(Verifier {
                public,
                #[cfg(feature = "aws-lc-rs")]
                aws_lc: AwsLcKey::None,
            }),
            #[cfg(feature = "aws-lc-rs")]
            Imp::AwsLc => {
                use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey};
                let parsed = match &public {
                    PublicKeyVerifier::P256(vk) => ParsedPublicKey::new(
                        &ECDSA_P256_SHA256_FIXED,
                        vk.to_sec1_point(false).as_bytes(),
                    ),
                    PublicKeyVerifier::Ed25519(vk) => ParsedPublicKey::new(&ED25519, vk.as_bytes()),
                };
                let aws_lc = match parsed {
                    Ok(k) => AwsLcKey::Parsed(k),
                    Err(_) => AwsLcKey::Refused,
                };
                Ok(Verifier { public, aws_lc })
            }
        }
    }

    /// The public key.
    pub(crate) fn public(&self) -> &PublicKeyVerifier {
        &self.public
    }

    /// As [`PublicKeyVerifier::verify`]: the same accept/reject decisions
    /// under every provider.
    pub(crate) fn verify(
        &self,
        message: &[u8],
        signature: &[u8],
        message_type: MessageType,
        format: SignatureFormat,
    ) -> Result<bool> {
        #[cfg(feature = "aws-lc-rs")]
        match &self.aws_lc {
            AwsLcKey::None => {}
            AwsLcKey::Parsed(k) => {
                return verify_aws_lc(
                    &self.public,
                    Some(k),
                    message,
                    signature,
                    message_type,
                    format,
                );
            }
            AwsLcKey::Refused => {
                return verify_aws_lc(&self.public, None, message, signature, message_type, format);
            }
        }
        self.public.verify(message, signature, message_type, format)
    }
}

/// Verification with AWS-LC; `parsed` is `None` for a key it refused (the
/// arguments are still checked, then the signature is invalid).
#[cfg(feature = "aws-lc-rs")]
fn verify_aws_lc(
    public: &PublicKeyVerifier,
    parsed: Option<&aws_lc_rs::signature::ParsedPublicKey>,
    message: &[u8],
    signature: &[u8],
    message_type: MessageType,
    format: SignatureFormat,
) -> Result<bool> {
    use aws_lc_rs::digest::{Digest, SHA256, digest};
    match public {
        PublicKeyVerifier::P256(_) => {
            let d = match message_type {
                MessageType::Raw => digest(&SHA256, message),
                MessageType::Digest => {
                    Digest::import_less_safe(message, &SHA256).map_err(|_| bad_digest())?
                }
            };
            // The signature encodings are parsed by the same code under
            // every provider (strict DER; r and s in 1..n).
            let sig = match format {
                SignatureFormat::Der => p256::ecdsa::Signature::from_der(signature),
                SignatureFormat::Raw => p256::ecdsa::Signature::from_slice(signature),
            };
            let (Ok(sig), Some(parsed)) = (sig, parsed) else {
                return Ok(false);
            };
            Ok(parsed.verify_digest_sig(&d, &sig.to_bytes()).is_ok())
        }
        PublicKeyVerifier::Ed25519(vk) => {
            if message_type == MessageType::Digest {
                return Err(Error::invalid(
                    "Ed25519 signs whole messages; MessageType::Digest is not supported",
                ));
            }
            // ed25519-dalek's strict verification refuses small-order
            // public keys; so does this one. AWS-LC checks S < L and
            // compares R byte for byte, so R must be canonical. (The one
            // difference left: a small-order R, which dalek refuses and
            // AWS-LC accepts if the equation holds; only the private key's
            // holder can make such a signature.)
            let Some(parsed) = parsed else {
                return Ok(false);
            };
            if signature.len() != 64 || vk.is_weak() {
                return Ok(false);
            }
            Ok(parsed.verify_sig(message, signature).is_ok())
        }
    }
}
