//! Asymmetric and MAC keys through the ring: signing, public keys, MACs,
//! data key pairs, HPKE decryption, and key import.
//!
//! Asymmetric and HMAC keys have one version and do not rotate (a new key
//! pair means new public keys for every verifier: create a new key and move
//! an alias instead).

use super::{Client, Inner, Target, need};
use crate::action::Action;
use crate::backend::MaterialId;
use crate::backend::material::Material;
use crate::clock::Timestamp;
use crate::envelope::EncryptionContext;
use crate::error::{Error, Result};
use crate::key::{CreateKeyOptions, KeyId, KeyMetadata, KeySpec, KeyUsage};
use crate::random::random_array;
use crate::secret::SecretBytes;
use crate::verify::{MessageType, PublicKeyVerifier, SignatureFormat, hpke_seal_with_info};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Largest message `sign` and `generate_mac` accept: 1 MiB.
pub const MAX_SIGN_MESSAGE_LEN: usize = 1 << 20;
/// How long import parameters stay valid, in seconds (24 hours).
pub const IMPORT_PARAMETERS_TTL_SECS: u64 = 24 * 3600;

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

/// Parameters to import key material: encrypt the material to
/// `public_key_der` with [`ImportParameters::wrap`] (offline, HPKE), then call
/// [`Client::import_key`] (or, for parameters from
/// [`Client::get_parameters_for_key_import`], [`Client::import_key_version`])
/// before `expires_at`.
///
/// The token works once, only for the principal that requested it (and only
/// for the key it was requested for), and is spent only when material
/// unwraps and validates. `Debug` redacts it.
#[derive(Clone)]
#[non_exhaustive]
pub struct ImportParameters {
    /// Names this import; bound into the wrapping.
    pub import_token: String,
    /// The spec the material must have.
    pub spec: KeySpec,
    /// The ring's one-time HPKE public key (SPKI DER).
    pub public_key_der: Vec<u8>,
    /// When the parameters expire, on the ring's clock.
    pub expires_at: Timestamp,
}

impl fmt::Debug for ImportParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportParameters")
            .field("import_token", &"<redacted>")
            .field("spec", &self.spec)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Most pending (requested, not yet used or expired) imports one principal
/// may hold on a ring.
pub const MAX_PENDING_IMPORTS_PER_PRINCIPAL: usize = 16;
/// Most pending imports a ring holds in all.
pub const MAX_PENDING_IMPORTS: usize = 1024;

/// One requested import: the one-time wrapping key and what it is bound to.
struct PendingImport {
    wrapping: Material,
    spec: KeySpec,
    expires_at: Timestamp,
    /// Only this principal may use the token.
    principal: crate::Principal,
    /// `Some`: only `import_key_version` of this key; `None`: only `import_key`.
    key: Option<KeyId>,
}

impl ImportParameters {
    /// Encrypts raw key material to these parameters (HPKE base mode,
    /// `info = "strongroom import v1" || token`, `aad` = the spec name). The
    /// raw encodings are those of docs/FORMAT.md, "Key material".
    pub fn wrap(&self, material: &[u8]) -> Result<Vec<u8>> {
        hpke_seal_with_info(
            &self.public_key_der,
            &import_info(&self.import_token),
            material,
            self.spec.as_str().as_bytes(),
        )
    }
}

fn import_info(token: &str) -> Vec<u8> {
    let mut i = b"strongroom import v1".to_vec();
    i.extend_from_slice(token.as_bytes());
    i
}

/// Pending imports and cached public-key verifiers of a ring.
#[derive(Default)]
pub(crate) struct AsymmetricState {
    imports: Mutex<HashMap<String, PendingImport>>,
    verifiers: RwLock<HashMap<MaterialId, Arc<PublicKeyVerifier>>>,
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
    fn verifier(&self, meta: &KeyMetadata) -> Result<Arc<PublicKeyVerifier>> {
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
        let v = Arc::new(PublicKeyVerifier::from_spki_der(
            &self.backend.public_key(&mref)?,
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
    /// Signs `message` (or, for ECDSA with [`MessageType::Digest`], a SHA-256
    /// digest) with a `SignVerify` key. ECDSA signatures are DER by default
    /// (low-S), raw `r || s` with [`SignatureFormat::Raw`]; Ed25519 signatures
    /// are 64 bytes. Messages up to 1 MiB.
    pub fn sign(
        &self,
        key: &str,
        message: &[u8],
        message_type: MessageType,
        format: SignatureFormat,
    ) -> Result<Vec<u8>> {
        self.run(Action::Sign, Target::Ref(key), None, |m| {
            let meta = need(m)?;
            if message.len() > MAX_SIGN_MESSAGE_LEN {
                return Err(Error::invalid(
                    "messages to sign are at most 1 MiB; sign a digest",
                ));
            }
            super::audit::note_version(meta.primary_version);
            match meta.spec {
                KeySpec::EccNistP256 => {
                    use sha2::Digest;
                    let digest: [u8; 32] = match message_type {
                        MessageType::Raw => sha2::Sha256::digest(message).into(),
                        MessageType::Digest => message.try_into().map_err(|_| {
                            Error::invalid("an ECDSA P-256 digest must be 32 bytes (SHA-256)")
                        })?,
                    };
                    let raw = self.inner().backend.sign(&primary(meta), &digest)?;
                    match format {
                        SignatureFormat::Raw => Ok(raw),
                        SignatureFormat::Der => Ok(p256::ecdsa::Signature::from_slice(&raw)
                            .map_err(|_| {
                                Error::invalid("the backend returned a malformed signature")
                            })?
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
                    self.inner().backend.sign(&primary(meta), message)
                }
                other => Err(Error::Unsupported(format!("{other} keys do not sign"))),
            }
        })
    }

    /// Verifies a signature with a `SignVerify` key of the ring. `Ok(false)`
    /// for a wrong or malformed signature. Offline verification needs only
    /// the public key: see [`PublicKeyVerifier`].
    pub fn verify(
        &self,
        key: &str,
        message: &[u8],
        signature: &[u8],
        message_type: MessageType,
        format: SignatureFormat,
    ) -> Result<bool> {
        self.run(Action::Verify, Target::Ref(key), None, |m| {
            let meta = need(m)?;
            super::audit::note_version(meta.primary_version);
            self.inner()
                .verifier(meta)?
                .verify(message, signature, message_type, format)
        })
    }

    /// The public key of an asymmetric key, as SPKI DER and PEM.
    pub fn get_public_key(&self, key: &str) -> Result<PublicKeyInfo> {
        self.run(Action::GetPublicKey, Target::Ref(key), None, |m| {
            let meta = need(m)?;
            let der = self.inner().backend.public_key(&primary(meta))?;
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
    pub fn generate_mac(&self, key: &str, message: &[u8]) -> Result<Vec<u8>> {
        self.run(Action::GenerateMac, Target::Ref(key), None, |m| {
            let meta = need(m)?;
            if message.len() > MAX_SIGN_MESSAGE_LEN {
                return Err(Error::invalid("messages to MAC are at most 1 MiB"));
            }
            super::audit::note_version(meta.primary_version);
            self.inner().backend.mac(&primary(meta), message)
        })
    }

    /// True if `tag` is the full-length HMAC of `message` (constant-time
    /// comparison). Truncated tags are refused.
    pub fn verify_mac(&self, key: &str, message: &[u8], tag: &[u8]) -> Result<bool> {
        self.run(Action::VerifyMac, Target::Ref(key), None, |m| {
            let meta = need(m)?;
            if message.len() > MAX_SIGN_MESSAGE_LEN {
                return Err(Error::invalid("messages to MAC are at most 1 MiB"));
            }
            super::audit::note_version(meta.primary_version);
            let expected = Zeroizing::new(self.inner().backend.mac(&primary(meta), message)?);
            Ok(expected.len() == tag.len() && bool::from(expected.ct_eq(tag)))
        })
    }

    /// Decrypts an HPKE ciphertext made offline with
    /// [`crate::verify::hpke_seal`] for this `HpkeP256` key, with the same
    /// `info` and `aad`. Every failure is [`Error::DecryptionFailed`].
    pub fn decrypt_hpke(
        &self,
        key: &str,
        ciphertext: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<SecretBytes> {
        self.run(Action::Decrypt, Target::Ref(key), None, |m| {
            let meta = need(m)?;
            if meta.spec != KeySpec::HpkeP256 {
                return Err(Error::Unsupported(format!(
                    "key {} ({}) is not an HPKE key",
                    meta.key_id, meta.spec
                )));
            }
            super::audit::note_version(meta.primary_version);
            self.inner()
                .backend
                .hpke_open(&primary(meta), info, aad, ciphertext)
        })
    }

    /// A fresh key pair for the application's own signing: the public key,
    /// the PKCS#8 private key encrypted under the symmetric `key` (bound to
    /// `context`), and the private key in plaintext.
    pub fn generate_data_key_pair(
        &self,
        key: &str,
        spec: DataKeyPairSpec,
        context: &EncryptionContext,
    ) -> Result<DataKeyPair> {
        self.data_key_pair(key, spec, context, true)
    }

    /// As [`Client::generate_data_key_pair`], without the plaintext private key.
    pub fn generate_data_key_pair_without_plaintext(
        &self,
        key: &str,
        spec: DataKeyPairSpec,
        context: &EncryptionContext,
    ) -> Result<DataKeyPair> {
        self.data_key_pair(key, spec, context, false)
    }

    fn data_key_pair(
        &self,
        key: &str,
        spec: DataKeyPairSpec,
        context: &EncryptionContext,
        with_plaintext: bool,
    ) -> Result<DataKeyPair> {
        let action = if with_plaintext {
            Action::GenerateDataKeyPair
        } else {
            Action::GenerateDataKeyPairWithoutPlaintext
        };
        self.run(action, Target::Ref(key), Some(context), |m| {
            let meta = need(m)?;
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
            let private_key_ciphertext = inner.encrypt_blob(meta, pkcs8.expose_secret(), &ctx)?;
            Ok(DataKeyPair {
                public_key_der,
                private_key_plaintext: with_plaintext.then_some(pkcs8),
                private_key_ciphertext,
                key_id: meta.key_id.clone(),
                key_version: meta.primary_version,
            })
        })
    }

    /// Parameters for importing key material of `spec` as a new key (bring
    /// your own key): a one-time HPKE public key of the ring, valid for 24
    /// hours on the ring's clock, and a token bound to this caller, usable
    /// once with [`Client::import_key`]. At most
    /// [`MAX_PENDING_IMPORTS_PER_PRINCIPAL`] pending imports per principal
    /// and [`MAX_PENDING_IMPORTS`] per ring.
    pub fn get_parameters_for_import(&self, spec: KeySpec) -> Result<ImportParameters> {
        self.run(Action::GetParametersForImport, Target::Ring, None, |_| {
            self.new_import(spec, None)
        })
    }

    /// Parameters for importing a new version of the symmetric key `key`
    /// (its spec), bound to this caller and to that key, usable once with
    /// [`Client::import_key_version`]. Needs `GetParametersForImport` on the key.
    pub fn get_parameters_for_key_import(&self, key: &str) -> Result<ImportParameters> {
        self.run(
            Action::GetParametersForImport,
            Target::Ref(key),
            None,
            |m| {
                let meta = need(m)?;
                if meta.spec.symmetric_algorithm().is_none() {
                    return Err(Error::Unsupported(format!(
                        "key {} ({}) has one version: import a new key instead",
                        meta.key_id, meta.spec
                    )));
                }
                self.new_import(meta.spec, Some(meta.key_id.clone()))
            },
        )
    }

    fn new_import(&self, spec: KeySpec, key: Option<KeyId>) -> Result<ImportParameters> {
        let inner = self.inner();
        if !inner.backend.supports(spec) {
            return Err(Error::Unsupported(format!(
                "backend {} cannot hold {spec} keys",
                inner.backend.name()
            )));
        }
        let now = inner.clock.now();
        let mut imports = inner.asym.imports.lock().unwrap_or_else(|e| e.into_inner());
        imports.retain(|_, p| p.expires_at > now);
        let mine = imports
            .values()
            .filter(|p| &p.principal == self.principal())
            .count();
        if mine >= MAX_PENDING_IMPORTS_PER_PRINCIPAL {
            return Err(Error::invalid(format!(
                "{} already has {MAX_PENDING_IMPORTS_PER_PRINCIPAL} pending imports: \
                 use or let expire some before requesting more",
                self.principal()
            )));
        }
        if imports.len() >= MAX_PENDING_IMPORTS {
            return Err(Error::invalid(format!(
                "the ring already has {MAX_PENDING_IMPORTS} pending imports; try again later"
            )));
        }
        let raw = Material::generate_raw(KeySpec::HpkeP256, inner.rng.as_ref())?;
        let wrapping = Material::from_raw(KeySpec::HpkeP256, &raw)?;
        let public_key_der = wrapping.public_key_der()?;
        let token: String = random_array::<16>(inner.rng.as_ref())?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let expires_at = Timestamp(now.as_secs() + IMPORT_PARAMETERS_TTL_SECS);
        imports.insert(
            token.clone(),
            PendingImport {
                wrapping,
                spec,
                expires_at,
                principal: self.principal().clone(),
                key,
            },
        );
        Ok(ImportParameters {
            import_token: token,
            spec,
            public_key_der,
            expires_at,
        })
    }

    /// Creates a new key from imported material wrapped with
    /// [`ImportParameters::wrap`]. The material is unwrapped and validated
    /// inside the ring and handed to the backend; it never appears in
    /// plaintext outside it. Needs `ImportKeyMaterial` and `CreateKey`.
    /// Expired, used, foreign or key-bound tokens, and material that does
    /// not unwrap or does not fit the spec, are refused (a refused unwrap
    /// leaves the token usable).
    pub fn import_key(
        &self,
        import_token: &str,
        wrapped_material: &[u8],
        options: CreateKeyOptions,
    ) -> Result<KeyId> {
        // Authorized first: an unauthorized caller neither spends the token
        // nor makes the ring unwrap anything.
        self.run(Action::ImportKeyMaterial, Target::Ring, None, |_| {
            self.inner()
                .authorize(self.principal(), Action::CreateKey, None, None)?;
            let (spec, raw) = self.unwrap_import(import_token, wrapped_material, None)?;
            self.create_key_inner(spec, &options, Some(&raw))
        })
    }

    /// Imports material wrapped with parameters from
    /// [`Client::get_parameters_for_key_import`] as a new, primary version
    /// of that symmetric key (bring your own key, rotated by the
    /// application). Older versions keep decrypting.
    pub fn import_key_version(
        &self,
        key: &str,
        import_token: &str,
        wrapped_material: &[u8],
    ) -> Result<u32> {
        self.run(Action::ImportKeyMaterial, Target::Ref(key), None, |m| {
            let meta = need(m)?;
            if meta.spec.symmetric_algorithm().is_none() {
                return Err(Error::Unsupported(format!(
                    "key {} ({}) has one version: import a new key instead",
                    meta.key_id, meta.spec
                )));
            }
            if matches!(meta.state, crate::KeyState::PendingDeletion { .. }) {
                return Err(Error::InvalidKeyState {
                    key_id: meta.key_id.to_string(),
                    state: meta.state.to_string(),
                    action: Action::ImportKeyMaterial.to_string(),
                });
            }
            let (spec, raw) =
                self.unwrap_import(import_token, wrapped_material, Some(&meta.key_id))?;
            if spec != meta.spec {
                return Err(Error::invalid(format!(
                    "the import parameters are for {spec} material, the key is {}",
                    meta.spec
                )));
            }
            Ok(self
                .inner()
                .rotate(meta, crate::RotationKind::Imported, None, Some(&raw))?
                .primary_version)
        })
    }

    /// Checks an import token (this caller's, for `key`, unexpired), unwraps
    /// and validates the material, and only then spends the token.
    fn unwrap_import(
        &self,
        import_token: &str,
        wrapped_material: &[u8],
        key: Option<&KeyId>,
    ) -> Result<(KeySpec, SecretBytes)> {
        let inner = self.inner();
        let now = inner.clock.now();
        let unknown =
            || Error::invalid("unknown, used or foreign import token: get new import parameters");
        // Held across the unwrap so that one token is spent at most once.
        let mut imports = inner.asym.imports.lock().unwrap_or_else(|e| e.into_inner());
        let pending = imports.get(import_token).ok_or_else(unknown)?;
        // Another principal's token is indistinguishable from an unknown one.
        if &pending.principal != self.principal() {
            return Err(unknown());
        }
        if pending.key.as_ref() != key {
            return Err(Error::invalid(match &pending.key {
                Some(k) => format!("these import parameters are for a new version of key {k}"),
                None => "these import parameters are for a new key (import_key)".to_owned(),
            }));
        }
        if now >= pending.expires_at {
            imports.remove(import_token);
            return Err(Error::invalid("the import parameters have expired"));
        }
        let spec = pending.spec;
        let raw = pending
            .wrapping
            .hpke_open(
                &import_info(import_token),
                spec.as_str().as_bytes(),
                wrapped_material,
            )
            .map_err(|_| {
                Error::invalid(
                    "the wrapped key material does not unwrap with these import parameters",
                )
            })?;
        Material::from_raw(spec, raw.expose_secret())?;
        imports.remove(import_token);
        Ok((spec, raw))
    }
}
