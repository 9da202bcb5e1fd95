//! Asymmetric and MAC keys through the ring: signing, public keys, MACs,
//! data key pairs, HPKE decryption, and key import.
//!
//! Asymmetric and HMAC keys have one version and do not rotate (a new key
//! pair means new public keys for every verifier: create a new key and move
//! an alias instead).

use super::pipeline::Call;
use super::{Client, Inner, SignOptions};
use crate::action::Action;
use crate::backend::material::Material;
use crate::backend::{HpkeBackend, ImportBackend, MacBackend, MaterialId, SigningBackend, lacks};
use crate::crypto::Verifier;
use crate::envelope::EncryptionContext;
use crate::error::{Error, Result};
use crate::key::KeyRef;
use crate::key::{KeyId, KeySpec, KeyUsage};
use crate::random::random_array;
use crate::secret::SecretBytes;
use crate::store::KeyMetadata;
use crate::verify::{MessageType, PublicKeyVerifier, SignatureFormat};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub(crate) use crate::limits::MAX_SIGN_MESSAGE_LEN;

/// An exported public key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublicKeyInfo {
    /// The key.
    pub key_id: KeyId,
    /// Its spec.
    pub spec: KeySpec,
    /// Its usage.
    pub usage: KeyUsage,
    /// SubjectPublicKeyInfo, DER.
    pub der: Vec<u8>,
    /// The same, as a PEM `PUBLIC KEY` block.
    pub pem: String,
}

/// The kind of a data key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataKeyPairSpec {
    /// ECDSA P-256.
    EccNistP256,
    /// Ed25519.
    Ed25519,
}

/// A data key pair: the public key, the private key encrypted under a
/// symmetric ring key, and (unless asked not to) the private key itself.
pub struct DataKeyPair {
    /// SubjectPublicKeyInfo DER.
    pub public_key_der: Vec<u8>,
    /// The PKCS#8 DER private key, zeroized on drop; `None` for the
    /// without-plaintext variant.
    pub private_key_plaintext: Option<SecretBytes>,
    /// The PKCS#8 DER private key as a ciphertext blob: decrypt it with
    /// `decrypt` and the same context.
    pub private_key_ciphertext: Vec<u8>,
    /// The ring key that encrypted it.
    pub key_id: KeyId,
    /// And its version.
    pub key_version: u32,
}

impl fmt::Debug for DataKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeyPair")
            .field("public_key_der_len", &self.public_key_der.len())
            .field(
                "private_key_plaintext",
                &self.private_key_plaintext.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "private_key_ciphertext_len",
                &self.private_key_ciphertext.len(),
            )
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .finish()
    }
}

/// Pending imports and cached public-key verifiers of a ring.
#[derive(Default)]
pub(crate) struct AsymmetricState {
    pub(super) imports: Mutex<HashMap<String, super::import::PendingImport>>,
    verifiers: RwLock<HashMap<MaterialId, Arc<Verifier>>>,
}

impl fmt::Debug for AsymmetricState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsymmetricState(..)")
    }
}

fn pem_of(der: &[u8]) -> Result<String> {
    use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
    if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
        return k
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| Error::invalid("public key PEM encoding failed"));
    }
    let k = <ed25519_dalek::VerifyingKey as ed25519_dalek::pkcs8::DecodePublicKey>::from_public_key_der(der)
        .map_err(|_| Error::invalid("the backend returned an unknown public key"))?;
    ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_pem(&k, LineEnding::LF)
        .map_err(|_| Error::invalid("public key PEM encoding failed"))
}

fn enc_err<E>(_: E) -> Error {
    Error::invalid("key pair encoding failed")
}

impl Inner {
    /// The backend's signing capability, or a clear `Unsupported`.
    pub(crate) fn signing_backend(&self, id: &MaterialId) -> Result<&dyn SigningBackend> {
        let b = self.backend.as_ref();
        b.signing().ok_or_else(|| lacks(b, "sign", id))
    }

    /// The backend's MAC capability, or a clear `Unsupported`.
    pub(crate) fn mac_backend(&self, id: &MaterialId) -> Result<&dyn MacBackend> {
        let b = self.backend.as_ref();
        b.macs().ok_or_else(|| lacks(b, "compute a MAC", id))
    }

    /// The backend's HPKE capability, or a clear `Unsupported`.
    pub(crate) fn hpke_backend(&self, id: &MaterialId) -> Result<&dyn HpkeBackend> {
        let b = self.backend.as_ref();
        b.hpke().ok_or_else(|| lacks(b, "decrypt HPKE", id))
    }

    /// The backend's import capability, or a clear `Unsupported`.
    pub(crate) fn import_backend(&self, id: &MaterialId) -> Result<&dyn ImportBackend> {
        let b = self.backend.as_ref();
        b.importing().ok_or_else(|| lacks(b, "import material", id))
    }

    /// The key's public key, prepared for the ring's provider (cached).
    pub(super) fn verifier(&self, meta: &KeyMetadata) -> Result<Arc<Verifier>> {
        let mref = MaterialId::new(meta.key_id.clone(), meta.primary_version);
        if let Some(v) = self
            .asym
            .verifiers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&mref)
        {
            return Ok(v.clone());
        }
        let v = Arc::new(Verifier::new(
            self.provider,
            PublicKeyVerifier::from_spki_der(&self.signing_backend(&mref)?.public_key(&mref)?)?,
        )?);
        self.asym
            .verifiers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mref, v.clone());
        Ok(v)
    }
}

fn primary(meta: &KeyMetadata) -> MaterialId {
    MaterialId::new(meta.key_id.clone(), meta.primary_version)
}

impl Client {
    /// Signs `message` (or, for ECDSA with [`SignOptions::digest`], a SHA-256
    /// digest) with a `SignVerify` key. ECDSA signatures are DER by default
    /// (low-S), raw `r || s` with [`SignatureFormat::Raw`]; Ed25519 signatures
    /// are 64 bytes. Messages up to 1 MiB.
    pub fn sign<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        message: &[u8],
        options: SignOptions,
    ) -> Result<Vec<u8>> {
        let SignOptions {
            message_type,
            format,
        } = options;
        self.on_key(Action::Sign, key, None, |call, meta| {
            self.sign_in_call(call, meta, message, message_type, format)
        })
    }

    /// The work of [`Client::sign`] inside a `Sign` call of the pipeline;
    /// also the signing step of `sign_ssh` (keyring/ssh.rs).
    pub(super) fn sign_in_call(
        &self,
        call: &Call<'_>,
        meta: &KeyMetadata,
        message: &[u8],
        message_type: MessageType,
        format: SignatureFormat,
    ) -> Result<Vec<u8>> {
        if message.len() > MAX_SIGN_MESSAGE_LEN {
            return Err(Error::invalid(
                "messages to sign are at most 1 MiB; sign a digest",
            ));
        }
        call.note_version(meta.primary_version);
        match meta.spec {
            KeySpec::EccNistP256 => {
                use sha2::Digest;
                let digest: [u8; 32] = match message_type {
                    MessageType::Raw => sha2::Sha256::digest(message).into(),
                    MessageType::Digest => message.try_into().map_err(|_| {
                        Error::invalid("an ECDSA P-256 digest must be 32 bytes (SHA-256)")
                    })?,
                };
                let raw = self
                    .inner()
                    .signing_backend(&primary(meta))?
                    .sign(&primary(meta), &digest)?;
                match format {
                    SignatureFormat::Raw => Ok(raw),
                    SignatureFormat::Der => Ok(p256::ecdsa::Signature::from_slice(&raw)
                        .map_err(|_| Error::invalid("the backend returned a malformed signature"))?
                        .to_der()
                        .as_bytes()
                        .to_vec()),
                }
            }
            KeySpec::Ed25519 => {
                if message_type == MessageType::Digest {
                    return Err(Error::invalid(
                        "Ed25519 signs whole messages; MessageType::Digest is not supported",
                    ));
                }
                self.inner()
                    .signing_backend(&primary(meta))?
                    .sign(&primary(meta), message)
            }
            other => Err(Error::Unsupported(format!("{other} keys do not sign"))),
        }
    }

    /// Verifies a signature with a `SignVerify` key of the ring. `Ok(false)`
    /// for a wrong or malformed signature. Offline verification needs only
    /// the public key: see [`PublicKeyVerifier`].
    pub fn verify<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        message: &[u8],
        signature: &[u8],
        options: SignOptions,
    ) -> Result<bool> {
        let SignOptions {
            message_type,
            format,
        } = options;
        self.on_key(Action::Verify, key, None, |call, meta| {
            call.note_version(meta.primary_version);
            self.inner()
                .verifier(meta)?
                .verify(message, signature, message_type, format)
        })
    }

    /// The public key of an asymmetric key, as SPKI DER and PEM.
    pub fn get_public_key<'k>(&self, key: impl Into<KeyRef<'k>>) -> Result<PublicKeyInfo> {
        self.on_key(Action::GetPublicKey, key, None, |_, meta| {
            let der = self
                .inner()
                .signing_backend(&primary(meta))?
                .public_key(&primary(meta))?;
            Ok(PublicKeyInfo {
                key_id: meta.key_id.clone(),
                spec: meta.spec,
                usage: meta.usage,
                pem: pem_of(&der)?,
                der,
            })
        })
    }

    /// The HMAC tag of `message` (up to 1 MiB) under a `GenerateVerifyMac` key.
    pub fn generate_mac<'k>(&self, key: impl Into<KeyRef<'k>>, message: &[u8]) -> Result<Vec<u8>> {
        self.on_key(Action::GenerateMac, key, None, |call, meta| {
            if message.len() > MAX_SIGN_MESSAGE_LEN {
                return Err(Error::invalid("messages to MAC are at most 1 MiB"));
            }
            call.note_version(meta.primary_version);
            self.inner()
                .mac_backend(&primary(meta))?
                .mac(&primary(meta), message)
        })
    }

    /// True if `tag` is the full-length HMAC of `message` (constant-time
    /// comparison). Truncated tags are refused.
    pub fn verify_mac<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        message: &[u8],
        tag: &[u8],
    ) -> Result<bool> {
        self.on_key(Action::VerifyMac, key, None, |call, meta| {
            if message.len() > MAX_SIGN_MESSAGE_LEN {
                return Err(Error::invalid("messages to MAC are at most 1 MiB"));
            }
            call.note_version(meta.primary_version);
            let expected = Zeroizing::new(
                self.inner()
                    .mac_backend(&primary(meta))?
                    .mac(&primary(meta), message)?,
            );
            Ok(expected.len() == tag.len() && bool::from(expected.ct_eq(tag)))
        })
    }

    /// Decrypts an HPKE ciphertext made offline with
    /// [`crate::verify::hpke_seal`] for this `HpkeP256` key, with the same
    /// `info` and `aad`. Every failure is [`Error::DecryptionFailed`].
    pub fn decrypt_hpke<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        ciphertext: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<SecretBytes> {
        self.on_key(Action::Decrypt, key, None, |call, meta| {
            if meta.spec != KeySpec::HpkeP256 {
                return Err(Error::Unsupported(format!(
                    "key {} ({}) is not an HPKE key",
                    meta.key_id, meta.spec
                )));
            }
            call.note_version(meta.primary_version);
            let id = primary(meta);
            self.inner()
                .hpke_backend(&id)?
                .hpke_open(&id, info, aad, ciphertext)
        })
    }

    /// A fresh key pair for the application's own signing: the public key,
    /// the PKCS#8 private key encrypted under the symmetric `key` (bound to
    /// `context`), and the private key in plaintext.
    pub fn generate_data_key_pair<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        spec: DataKeyPairSpec,
        context: &EncryptionContext,
    ) -> Result<DataKeyPair> {
        self.data_key_pair(key.into(), spec, context, true)
    }

    /// As [`Client::generate_data_key_pair`], without the plaintext private key.
    pub fn generate_data_key_pair_without_plaintext<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        spec: DataKeyPairSpec,
        context: &EncryptionContext,
    ) -> Result<DataKeyPair> {
        self.data_key_pair(key.into(), spec, context, false)
    }

    fn data_key_pair(
        &self,
        key: KeyRef<'_>,
        spec: DataKeyPairSpec,
        context: &EncryptionContext,
        with_plaintext: bool,
    ) -> Result<DataKeyPair> {
        let action = if with_plaintext {
            Action::GenerateDataKeyPair
        } else {
            Action::GenerateDataKeyPairWithoutPlaintext
        };
        self.on_key(action, key, Some(context), |call, meta| {
            let inner = self.inner();
            let ctx = context.canonical_bytes()?;
            let seed = Zeroizing::new(random_array::<32>(inner.rng.as_ref())?);
            let (public_key_der, pkcs8) = match spec {
                DataKeyPairSpec::EccNistP256 => {
                    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
                    let raw = Material::generate_raw(KeySpec::EccNistP256, inner.rng.as_ref())?;
                    let sk = p256::ecdsa::SigningKey::from_slice(&raw)
                        .map_err(|_| Error::invalid("bad P-256 scalar"))?;
                    let pk = sk.verifying_key().to_public_key_der().map_err(enc_err)?;
                    let der = sk.to_pkcs8_der().map_err(enc_err)?;
                    (
                        pk.as_bytes().to_vec(),
                        SecretBytes::from_slice(der.as_bytes()),
                    )
                }
                DataKeyPairSpec::Ed25519 => {
                    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
                    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
                    let pk = sk.verifying_key().to_public_key_der().map_err(enc_err)?;
                    let der = sk.to_pkcs8_der().map_err(enc_err)?;
                    (
                        pk.as_bytes().to_vec(),
                        SecretBytes::from_slice(der.as_bytes()),
                    )
                }
            };
            let private_key_ciphertext =
                inner.encrypt_blob(call, meta, pkcs8.expose_secret(), &ctx)?;
            Ok(DataKeyPair {
                public_key_der,
                private_key_plaintext: with_plaintext.then_some(pkcs8),
                private_key_ciphertext,
                key_id: meta.key_id.clone(),
                key_version: meta.primary_version,
            })
        })
    }
}
