//! Key material in software, shared by the memory backend (and any store that
//! persists material).
//!
//! Raw bytes exist only transiently (in zeroizing buffers) while material is
//! generated, imported, or loaded from and written to an encrypted store;
//! in between, material is held as ready primitive instances whose secret
//! state is zeroized on drop.
//!
//! Raw encodings ([`Material::generate_raw`] / [`Material::from_raw`]):
//! symmetric and HPKE keys: 32 bytes (HPKE: the P-256 scalar); P-256: the
//! 32-byte scalar; Ed25519: the 32-byte seed; HMAC: 32, 48 or 64 bytes.

use crate::crypto::{Cipher, CryptoProvider, Ed25519Key, NONCE_LEN, P256Key, TAG_LEN};
use crate::error::{Error, Result};
use crate::key::{HmacAlgorithm, KeySpec};
use crate::random::{RandomSource, random_array};
use crate::secret::SecretBytes;
use zeroize::Zeroizing;

/// The HPKE suite of [`KeySpec::HpkeP256`].
pub(crate) type HpkeKem = hpke::kem::DhP256HkdfSha256;
pub(crate) type HpkeKdf = hpke::kdf::HkdfSha256;
pub(crate) type HpkeAead = hpke::aead::AesGcm256;

/// Usable material of one key version.
pub(crate) enum Material {
    Symmetric(Cipher),
    /// Zeroized on drop (see [`P256Key`]).
    P256(P256Key),
    /// Zeroized on drop (see [`Ed25519Key`]).
    Ed25519(Ed25519Key),
    Hmac(HmacAlgorithm, Zeroizing<Vec<u8>>),
    /// The P-256 scalar; the HPKE private key is rebuilt per operation.
    Hpke(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Material::Symmetric(_) => "Symmetric",
            Material::P256(_) => "P256",
            Material::Ed25519(_) => "Ed25519",
            Material::Hmac(..) => "Hmac",
            Material::Hpke(_) => "Hpke",
        };
        write!(f, "Material::{kind}(<redacted>)")
    }
}

fn p256_scalar_ok(raw: &[u8]) -> bool {
    p256::ecdsa::SigningKey::from_slice(raw).is_ok()
}

impl Material {
    /// Fresh raw material for `spec`.
    pub(crate) fn generate_raw(
        spec: KeySpec,
        rng: &dyn RandomSource,
    ) -> Result<Zeroizing<Vec<u8>>> {
        match spec {
            KeySpec::Symmetric(_) | KeySpec::Ed25519 => {
                let k = Zeroizing::new(random_array::<32>(rng)?);
                Ok(Zeroizing::new(k.to_vec()))
            }
            KeySpec::EccNistP256 | KeySpec::HpkeP256 => {
                // Rejection sampling: a uniformly random 32-byte string is a
                // valid scalar except with probability ~2^-32.
                for _ in 0..64 {
                    let k = Zeroizing::new(random_array::<32>(rng)?);
                    if p256_scalar_ok(k.as_slice()) {
                        return Ok(Zeroizing::new(k.to_vec()));
                    }
                }
                Err(Error::Random)
            }
            KeySpec::Hmac(alg) => {
                let mut k = Zeroizing::new(vec![0u8; alg.output_len()]);
                rng.fill(&mut k)?;
                Ok(k)
            }
        }
    }

    /// Builds usable material from its raw encoding, with the default
    /// provider (checks an encoding; see [`Material::from_raw_with`]).
    pub(crate) fn from_raw(spec: KeySpec, raw: &[u8]) -> Result<Material> {
        Material::from_raw_with(CryptoProvider::default(), spec, raw)
    }

    /// Builds usable material from its raw encoding, for `provider`.
    pub(crate) fn from_raw_with(
        provider: CryptoProvider,
        spec: KeySpec,
        raw: &[u8],
    ) -> Result<Material> {
        let bad = |what: &str| Error::invalid(format!("{spec} key material must be {what}"));
        match spec {
            KeySpec::Symmetric(alg) => {
                let k: Zeroizing<[u8; 32]> =
                    Zeroizing::new(raw.try_into().map_err(|_| bad("32 bytes"))?);
                Ok(Material::Symmetric(provider.cipher(alg, &k)))
            }
            KeySpec::EccNistP256 => Ok(Material::P256(P256Key::from_scalar(provider, raw)?)),
            KeySpec::Ed25519 => {
                let seed: Zeroizing<[u8; 32]> =
                    Zeroizing::new(raw.try_into().map_err(|_| bad("a 32-byte seed"))?);
                Ok(Material::Ed25519(Ed25519Key::from_seed(provider, &seed)?))
            }
            KeySpec::Hmac(alg) => {
                if raw.len() != alg.output_len() {
                    return Err(bad(&format!("{} bytes", alg.output_len())));
                }
                Ok(Material::Hmac(alg, Zeroizing::new(raw.to_vec())))
            }
            KeySpec::HpkeP256 => {
                if !p256_scalar_ok(raw) {
                    return Err(bad("a 32-byte P-256 scalar"));
                }
                let k: [u8; 32] = raw.try_into().map_err(|_| bad("32 bytes"))?;
                Ok(Material::Hpke(Zeroizing::new(k)))
            }
        }
    }

    fn wrong(&self, what: &str) -> Error {
        Error::Unsupported(format!("{what} is not possible with {self:?} keys"))
    }

    /// `nonce || ciphertext || tag` with a fresh random nonce.
    pub(crate) fn encrypt(
        &self,
        rng: &dyn RandomSource,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let Material::Symmetric(cipher) = self else {
            return Err(self.wrong("symmetric encryption"));
        };
        let nonce: [u8; NONCE_LEN] = random_array(rng)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        cipher.seal_append(&nonce, aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Reverses [`Material::encrypt`].
    pub(crate) fn decrypt(&self, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        let Material::Symmetric(cipher) = self else {
            return Err(self.wrong("symmetric decryption"));
        };
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::DecryptionFailed);
        }
        let (nonce, rest) = payload.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::DecryptionFailed)?;
        let mut out = Vec::with_capacity(rest.len());
        cipher.open_append(&nonce, aad, rest, &mut out)?;
        Ok(SecretBytes::new(out))
    }

    /// P-256: `data` is a SHA-256 digest, returns raw `r || s`; Ed25519:
    /// `data` is the message, returns the 64-byte signature.
    pub(crate) fn sign(&self, data: &[u8]) -> Result<Vec<u8>> {
        match self {
            // Low-S form, so signatures are canonical.
            Material::P256(k) => Ok(k.sign_digest(data)?.to_vec()),
            Material::Ed25519(k) => Ok(k.sign(data).to_vec()),
            _ => Err(self.wrong("signing")),
        }
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub(crate) fn public_key_der(&self) -> Result<Vec<u8>> {
        use p256::pkcs8::EncodePublicKey;
        let enc =
            |e: &dyn std::fmt::Display| Error::invalid(format!("public key encoding failed: {e}"));
        match self {
            Material::P256(k) => Ok(k
                .verifying_key()
                .to_public_key_der()
                .map_err(|e| enc(&e))?
                .as_bytes()
                .to_vec()),
            Material::Ed25519(k) => {
                use ed25519_dalek::pkcs8::EncodePublicKey as _;
                Ok(k.verifying_key()
                    .to_public_key_der()
                    .map_err(|e| enc(&e))?
                    .as_bytes()
                    .to_vec())
            }
            Material::Hpke(sk) => {
                let k = p256::SecretKey::from_slice(sk.as_slice())
                    .map_err(|_| Error::invalid("bad HPKE key"))?;
                Ok(k.public_key()
                    .to_public_key_der()
                    .map_err(|e| enc(&e))?
                    .as_bytes()
                    .to_vec())
            }
            _ => Err(self.wrong("a public key")),
        }
    }

    /// HMAC tag of `message`.
    pub(crate) fn mac(&self, message: &[u8]) -> Result<Vec<u8>> {
        use hmac::{KeyInit, Mac};
        let Material::Hmac(alg, key) = self else {
            return Err(self.wrong("MAC"));
        };
        let bad = |_| Error::invalid("bad HMAC key length");
        Ok(match alg {
            HmacAlgorithm::Sha256 => {
                let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).map_err(bad)?;
                m.update(message);
                m.finalize().into_bytes().to_vec()
            }
            HmacAlgorithm::Sha384 => {
                let mut m = hmac::Hmac::<sha2::Sha384>::new_from_slice(key).map_err(bad)?;
                m.update(message);
                m.finalize().into_bytes().to_vec()
            }
            HmacAlgorithm::Sha512 => {
                let mut m = hmac::Hmac::<sha2::Sha512>::new_from_slice(key).map_err(bad)?;
                m.update(message);
                m.finalize().into_bytes().to_vec()
            }
        })
    }

    /// HPKE base-mode open of `enc || ciphertext`.
    pub(crate) fn hpke_open(&self, info: &[u8], aad: &[u8], sealed: &[u8]) -> Result<SecretBytes> {
        use hpke::{Deserializable, OpModeR};
        let Material::Hpke(sk) = self else {
            return Err(self.wrong("HPKE decryption"));
        };
        if sealed.len() < 65 + TAG_LEN {
            return Err(Error::DecryptionFailed);
        }
        let (enc, ct) = sealed.split_at(65);
        let enc = <HpkeKem as hpke::Kem>::EncappedKey::from_bytes(enc)
            .map_err(|_| Error::DecryptionFailed)?;
        let sk = <HpkeKem as hpke::Kem>::PrivateKey::from_bytes(sk.as_slice())
            .map_err(|_| Error::DecryptionFailed)?;
        let pt = hpke::single_shot_open::<HpkeAead, HpkeKdf, HpkeKem>(
            &OpModeR::Base,
            &sk,
            &enc,
            info,
            ct,
            aad,
        )
        .map_err(|_| Error::DecryptionFailed)?;
        Ok(SecretBytes::new(pt))
    }
}
