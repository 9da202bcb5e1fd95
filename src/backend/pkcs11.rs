//! A PKCS#11 HSM backend (feature `pkcs11`), tested against SoftHSM2.
//!
//! Master keys are generated on the token as sensitive, non-extractable token
//! objects and never leave it; encryption and decryption of small payloads
//! (data keys, direct `encrypt` of up to 4 KiB) run on the token with
//! `CKM_AES_GCM`. Objects are found again after a restart by their label,
//! `<prefix><key id>#v<version>` (docs/FORMAT.md, "PKCS#11 backend").
//!
//! One PKCS#11 context per module per process (`C_Initialize` once), shared by
//! every backend instance; a pool of logged-in sessions lets parallel callers
//! work at once, and a session the token reports broken is dropped.

use super::{KeyBackend, MaterialId};
use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::key::{KeySpec, SymmetricAlgorithm};
use crate::random::{OsRandom, RandomSource, random_array};
use crate::secret::SecretBytes;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// DER OID of prime256v1 (secp256r1), the CKA_EC_PARAMS of P-256 keys.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER OID of id-Ed25519 (1.3.101.112).
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// How to reach a token.
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the token; the slot is found by it.
    pub token_label: String,
    /// The user PIN. Redacted in `Debug`, zeroized on drop.
    pub user_pin: SecretBytes,
    /// Prepended to every object label, to share a token between rings.
    pub label_prefix: String,
}

impl Pkcs11Config {
    /// A configuration with the default label prefix `strongroom/`.
    pub fn new(
        module: impl Into<PathBuf>,
        token_label: impl Into<String>,
        user_pin: SecretBytes,
    ) -> Self {
        Pkcs11Config {
            module: module.into(),
            token_label: token_label.into(),
            user_pin,
            label_prefix: "strongroom/".into(),
        }
    }

    /// Sets the label prefix.
    pub fn label_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.label_prefix = prefix.into();
        self
    }
}

impl fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("user_pin", &"<redacted>")
            .field("label_prefix", &self.label_prefix)
            .finish()
    }
}

/// One initialized context per module path, for the whole process.
fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        Error::Configuration(format!(
            "cannot load PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Error::Configuration(format!(
                "cannot initialize PKCS#11 module {}: {e}",
                module.display()
            )));
        }
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

fn other(e: CkError) -> Error {
    Error::Other(Arc::new(e))
}

/// True for errors after which a session must not be reused.
fn session_broken(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn,
            _
        )
    )
}

/// Master keys on a PKCS#11 token. See the module docs.
pub struct Pkcs11Backend {
    ctx: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    prefix: String,
    pool: Mutex<Vec<Session>>,
    handles: RwLock<HashMap<MaterialId, ObjectHandle>>,
    rng: Arc<dyn RandomSource>,
}

impl fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Backend")
            .field("slot", &self.slot)
            .field("label_prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Backend {
    /// Connects to the token: loads and initializes the module (once per
    /// process), finds the slot by token label, and logs in. A missing
    /// module or token, or a wrong PIN, is [`Error::Configuration`] (the PIN
    /// never appears in it).
    pub fn connect(config: &Pkcs11Config) -> Result<Self> {
        let ctx = context(&config.module)?;
        let slots = ctx.get_slots_with_initialized_token().map_err(other)?;
        let slot = slots
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .is_ok_and(|t| t.label() == config.token_label)
            })
            .ok_or_else(|| {
                Error::Configuration(format!(
                    "no initialized PKCS#11 token labelled {:?}",
                    config.token_label
                ))
            })?;
        let pin_text = std::str::from_utf8(config.user_pin.expose_secret())
            .map_err(|_| Error::Configuration("the PKCS#11 PIN must be UTF-8".into()))?;
        let backend = Pkcs11Backend {
            ctx,
            slot,
            pin: AuthPin::new(pin_text.into()),
            prefix: config.label_prefix.clone(),
            pool: Mutex::new(Vec::new()),
            handles: RwLock::new(HashMap::new()),
            rng: Arc::new(OsRandom),
        };
        // Log in now, so a wrong PIN fails here, clearly.
        let s = backend.open_session()?;
        backend.checkin(s);
        Ok(backend)
    }

    fn open_session(&self) -> Result<Session> {
        let s = self.ctx.open_rw_session(self.slot).map_err(other)?;
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(s),
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => Err(Error::Configuration(
                "the PKCS#11 user PIN was refused by the token".into(),
            )),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Error::Configuration(
                "the PKCS#11 user PIN is locked".into(),
            )),
            Err(e) => Err(other(e)),
        }
    }

    fn checkout(&self) -> Result<Session> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(s) => Ok(s),
            None => self.open_session(),
        }
    }

    fn checkin(&self, s: Session) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    /// Runs `f` on a pooled session; a session the token reports broken is
    /// dropped (and `f` retried once on a fresh one).
    fn with_session<T>(
        &self,
        f: impl Fn(&Session) -> std::result::Result<T, CkError>,
    ) -> std::result::Result<T, CkError> {
        for attempt in 0..2 {
            let s = match self.checkout() {
                Ok(s) => s,
                Err(_) if attempt == 0 => continue,
                Err(_) => {
                    return Err(CkError::Pkcs11(
                        RvError::SessionHandleInvalid,
                        cryptoki::context::Function::OpenSession,
                    ));
                }
            };
            match f(&s) {
                Err(e) if session_broken(&e) => {
                    drop(s);
                    if attempt == 1 {
                        return Err(e);
                    }
                }
                r => {
                    self.checkin(s);
                    return r;
                }
            }
        }
        Err(CkError::Pkcs11(
            RvError::SessionHandleInvalid,
            cryptoki::context::Function::OpenSession,
        ))
    }

    fn label(&self, id: &MaterialId) -> Vec<u8> {
        format!("{}{}#v{}", self.prefix, id.key_id, id.version).into_bytes()
    }

    fn find(&self, id: &MaterialId) -> Result<Option<ObjectHandle>> {
        if let Some(h) = self
            .handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(Some(*h));
        }
        let label = self.label(id);
        let found = self
            .with_session(|s| {
                s.find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::Label(label.clone()),
                ])
            })
            .map_err(other)?;
        let h = found.into_iter().next();
        if let Some(h) = h {
            self.handles
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), h);
        }
        Ok(h)
    }

    fn find_object(&self, id: &MaterialId, class: ObjectClass) -> Result<Option<ObjectHandle>> {
        let label = self.label(id);
        let found = self
            .with_session(|s| {
                s.find_objects(&[Attribute::Class(class), Attribute::Label(label.clone())])
            })
            .map_err(other)?;
        Ok(found.into_iter().next())
    }

    fn handle(&self, id: &MaterialId) -> Result<ObjectHandle> {
        self.find(id)?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))
    }

    /// True if the key object of `id` is sensitive and not extractable, and
    /// its value cannot be read from the token.
    pub fn is_non_extractable(&self, id: &MaterialId) -> Result<bool> {
        use cryptoki::object::{AttributeInfo, AttributeType};
        let h = self.handle(id)?;
        let (attrs, info) = self
            .with_session(|s| {
                let a =
                    s.get_attributes(h, &[AttributeType::Sensitive, AttributeType::Extractable])?;
                let i = s.get_attribute_info(h, &[AttributeType::Value])?;
                Ok((a, i))
            })
            .map_err(other)?;
        let sensitive = attrs
            .iter()
            .any(|a| matches!(a, Attribute::Sensitive(true)));
        let not_extractable = attrs
            .iter()
            .any(|a| matches!(a, Attribute::Extractable(false)));
        let value_hidden = matches!(
            info.as_slice(),
            [AttributeInfo::Sensitive | AttributeInfo::Unavailable]
        );
        Ok(sensitive && not_extractable && value_hidden)
    }
}

impl KeyBackend for Pkcs11Backend {
    fn name(&self) -> &str {
        "pkcs11"
    }

    fn supports(&self, spec: KeySpec) -> bool {
        matches!(
            spec,
            KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm)
                | KeySpec::EccNistP256
                | KeySpec::Ed25519
        )
    }

    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        if !self.supports(spec) {
            return Err(Error::Unsupported(format!(
                "the PKCS#11 backend cannot hold {spec} keys (AES-256-GCM, P-256 and Ed25519 only)"
            )));
        }
        if let Some(oid) = match spec {
            KeySpec::EccNistP256 => Some(P256_OID),
            KeySpec::Ed25519 => Some(ED25519_OID),
            _ => None,
        } {
            if self.find_object(id, ObjectClass::PRIVATE_KEY)?.is_some() {
                return Err(Error::invalid(format!(
                    "material {id} already exists on the token"
                )));
            }
            let label = self.label(id);
            let mech = if spec == KeySpec::Ed25519 {
                Mechanism::EccEdwardsKeyPairGen
            } else {
                Mechanism::EccKeyPairGen
            };
            self.with_session(|s| {
                s.generate_key_pair(
                    &mech,
                    &[
                        Attribute::Token(true),
                        Attribute::EcParams(oid.to_vec()),
                        Attribute::Verify(true),
                        Attribute::Label(label.clone()),
                        Attribute::Id(label.clone()),
                    ],
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Sign(true),
                        Attribute::Label(label.clone()),
                        Attribute::Id(label.clone()),
                    ],
                )
            })
            .map_err(other)?;
            return Ok(());
        }
        if self.find(id)?.is_some() {
            return Err(Error::invalid(format!(
                "material {id} already exists on the token"
            )));
        }
        let label = self.label(id);
        let h = self
            .with_session(|s| {
                s.generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::ValueLen(32.into()),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Label(label.clone()),
                        Attribute::Id(label.clone()),
                    ],
                )
            })
            .map_err(other)?;
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), h);
        Ok(())
    }

    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let h = self.handle(id)?;
        let nonce: [u8; NONCE_LEN] = random_array(self.rng.as_ref())?;
        let ct = self
            .with_session(|s| {
                let mut iv = nonce;
                s.encrypt(
                    &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into())?),
                    h,
                    plaintext,
                )
            })
            .map_err(other)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::DecryptionFailed);
        }
        let h = self.handle(id)?;
        let (nonce, ct) = payload.split_at(NONCE_LEN);
        let r = self.with_session(|s| {
            let mut iv = [0u8; NONCE_LEN];
            iv.copy_from_slice(nonce);
            s.decrypt(
                &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, 128.into())?),
                h,
                ct,
            )
        });
        match r {
            Ok(pt) => Ok(SecretBytes::new(pt)),
            // SoftHSM2 reports a failed GCM tag as CKR_GENERAL_ERROR; other
            // tokens use CKR_ENCRYPTED_DATA_INVALID / _LEN_RANGE.
            Err(CkError::Pkcs11(
                RvError::GeneralError
                | RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange,
                _,
            )) => Err(Error::DecryptionFailed),
            Err(e) => Err(other(e)),
        }
    }

    fn destroy(&self, id: &MaterialId) -> Result<()> {
        let label = self.label(id);
        self.with_session(|s| {
            for h in s.find_objects(&[Attribute::Label(label.clone())])? {
                s.destroy_object(h)?;
            }
            Ok(())
        })
        .map_err(other)?;
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    fn contains(&self, id: &MaterialId) -> Result<bool> {
        Ok(self.find(id)?.is_some() || self.find_object(id, ObjectClass::PRIVATE_KEY)?.is_some())
    }

    fn sign(&self, id: &MaterialId, data: &[u8]) -> Result<Vec<u8>> {
        use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
        use cryptoki::object::AttributeType;
        let h = self
            .find_object(id, ObjectClass::PRIVATE_KEY)?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let key_type = self
            .with_session(|s| s.get_attributes(h, &[AttributeType::KeyType]))
            .map_err(other)?;
        let edwards = key_type
            .iter()
            .any(|a| matches!(a, Attribute::KeyType(t) if *t == KeyType::EC_EDWARDS));
        if edwards {
            return self
                .with_session(|s| {
                    s.sign(
                        &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                        h,
                        data,
                    )
                })
                .map_err(other);
        }
        if data.len() != 32 {
            return Err(Error::invalid(
                "an ECDSA P-256 digest must be 32 bytes (SHA-256)",
            ));
        }
        // CKM_ECDSA on the SHA-256 digest computed by the caller; low-S
        // normalization as the memory backend does.
        let raw = self
            .with_session(|s| s.sign(&Mechanism::Ecdsa, h, data))
            .map_err(other)?;
        let sig = p256::ecdsa::Signature::from_slice(&raw)
            .map_err(|_| Error::invalid("the token returned a malformed ECDSA signature"))?;
        Ok(sig.normalize_s().to_bytes().to_vec())
    }

    fn public_key(&self, id: &MaterialId) -> Result<Vec<u8>> {
        use cryptoki::object::AttributeType;
        let h = self
            .find_object(id, ObjectClass::PUBLIC_KEY)?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let attrs = self
            .with_session(|s| {
                s.get_attributes(h, &[AttributeType::KeyType, AttributeType::EcPoint])
            })
            .map_err(other)?;
        let mut edwards = false;
        let mut point: Option<Vec<u8>> = None;
        for a in attrs {
            match a {
                Attribute::KeyType(t) => edwards = t == KeyType::EC_EDWARDS,
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        let bad = || Error::invalid("the token returned a malformed public key");
        let point = point.ok_or_else(bad)?;
        // CKA_EC_POINT is a DER OCTET STRING around the point.
        let raw = match point.as_slice() {
            [0x04, len, rest @ ..] if *len as usize == rest.len() => rest,
            other => other,
        };
        if edwards {
            use ed25519_dalek::pkcs8::EncodePublicKey;
            let bytes: [u8; 32] = raw.try_into().map_err(|_| bad())?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
            Ok(vk
                .to_public_key_der()
                .map_err(|_| bad())?
                .as_bytes()
                .to_vec())
        } else {
            use p256::pkcs8::EncodePublicKey;
            let pk = p256::PublicKey::from_sec1_bytes(raw).map_err(|_| bad())?;
            Ok(pk
                .to_public_key_der()
                .map_err(|_| bad())?
                .as_bytes()
                .to_vec())
        }
    }
}
