//! What a key is: its spec (algorithm and size) and its usage.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A symmetric authenticated-encryption algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum SymmetricAlgorithm {
    /// AES-256 in Galois/Counter Mode, 96-bit random nonces, 128-bit tags.
    #[default]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439), 96-bit random nonces, 128-bit tags.
    ChaCha20Poly1305,
}

impl SymmetricAlgorithm {
    /// The suite byte of this algorithm in ciphertext formats (docs/FORMAT.md).
    pub(crate) fn suite_id(self) -> u8 {
        match self {
            SymmetricAlgorithm::Aes256Gcm => 0x01,
            SymmetricAlgorithm::ChaCha20Poly1305 => 0x02,
        }
    }

    pub(crate) fn from_suite_id(id: u8) -> Option<Self> {
        match id {
            0x01 => Some(SymmetricAlgorithm::Aes256Gcm),
            0x02 => Some(SymmetricAlgorithm::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The algorithm's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SymmetricAlgorithm::Aes256Gcm => "AES_256_GCM",
            SymmetricAlgorithm::ChaCha20Poly1305 => "CHACHA20_POLY1305",
        }
    }
}

/// An HMAC algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HmacAlgorithm {
    /// HMAC-SHA-256, 32-byte keys and tags.
    Sha256,
    /// HMAC-SHA-384, 48-byte keys and tags.
    Sha384,
    /// HMAC-SHA-512, 64-byte keys and tags.
    Sha512,
}

impl HmacAlgorithm {
    /// Key and tag length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HmacAlgorithm::Sha256 => 32,
            HmacAlgorithm::Sha384 => 48,
            HmacAlgorithm::Sha512 => 64,
        }
    }
}

/// What kind of key material a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeySpec {
    /// A 256-bit symmetric key for authenticated encryption.
    Symmetric(SymmetricAlgorithm),
    /// An ECDSA key on NIST P-256, signing with SHA-256.
    EccNistP256,
    /// An Ed25519 key (RFC 8032, pure EdDSA).
    Ed25519,
    /// An HMAC key.
    Hmac(HmacAlgorithm),
    /// A public-key encryption key: HPKE (RFC 9180) base mode with
    /// DHKEM(P-256, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM.
    HpkeP256,
}

impl Default for KeySpec {
    /// AES-256-GCM.
    fn default() -> Self {
        KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm)
    }
}

impl KeySpec {
    /// The usages this spec can have; the first is the default.
    pub fn allowed_usages(self) -> &'static [KeyUsage] {
        match self {
            KeySpec::Symmetric(_) | KeySpec::HpkeP256 => &[KeyUsage::EncryptDecrypt],
            KeySpec::EccNistP256 | KeySpec::Ed25519 => &[KeyUsage::SignVerify],
            KeySpec::Hmac(_) => &[KeyUsage::GenerateVerifyMac],
        }
    }

    /// The algorithm, if this is a symmetric encryption spec.
    pub fn symmetric_algorithm(self) -> Option<SymmetricAlgorithm> {
        match self {
            KeySpec::Symmetric(alg) => Some(alg),
            _ => None,
        }
    }

    /// The spec's name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm) => "SYMMETRIC_AES_256_GCM",
            KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305) => {
                "SYMMETRIC_CHACHA20_POLY1305"
            }
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::Ed25519 => "ED25519",
            KeySpec::Hmac(HmacAlgorithm::Sha256) => "HMAC_256",
            KeySpec::Hmac(HmacAlgorithm::Sha384) => "HMAC_384",
            KeySpec::Hmac(HmacAlgorithm::Sha512) => "HMAC_512",
            KeySpec::HpkeP256 => "HPKE_P256_SHA256_AES256GCM",
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a key may be used for. Enforced on every operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyUsage {
    /// Encrypt, decrypt, data keys, seal and open.
    EncryptDecrypt,
    /// Sign and verify.
    SignVerify,
    /// Generate and verify MACs.
    GenerateVerifyMac,
}

impl KeyUsage {
    /// The usage's name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            KeyUsage::SignVerify => "SIGN_VERIFY",
            KeyUsage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
        }
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
