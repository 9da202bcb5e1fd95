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
//!
//! # GCM IVs
//!
//! The backend draws a random 96-bit IV and passes it in `CK_GCM_PARAMS.pIv`,
//! but a token may replace it: tokens in FIPS mode (several network HSMs)
//! generate the IV themselves and write it back into that buffer. The blob
//! therefore carries the IV *read back from the parameter after `C_Encrypt`*,
//! never the software copy, and output that is not exactly plaintext + tag
//! is refused. A token that uses an IV it does not return would make blobs
//! that can never be decrypted; [`Pkcs11Backend::connect`] catches that with
//! an encrypt/decrypt self-test under a throwaway session key.
//!
//! # Object identity
//!
//! Objects are found by label, so a label must name exactly one object of
//! the expected class: a duplicate is a hard error, never a silent choice.
//! Before a key object is used it must be sensitive, not extractable, never
//! have been extractable, and have been generated on the token (`CKA_LOCAL`);
//! a key that fails any of these is refused. Validated handles are cached per
//! backend instance, so objects added to the token later are seen (and
//! checked) by the next instance.

use super::{ImportBackend, KeyBackend, MaterialId, SigningBackend};
use crate::crypto::NONCE_LEN;
use crate::error::{Error, Result};
use crate::random::{OsRandom, RandomSource, random_array};
use crate::secret::SecretBytes;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

mod ops;
mod util;
use util::*;

/// DER OID of prime256v1 (secp256r1), the CKA_EC_PARAMS of P-256 keys.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER OID of id-Ed25519 (1.3.101.112).
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// How to reach a token. Build it with [`Pkcs11Config::new`] and the
/// setters; fields may be added (it is `#[non_exhaustive]`).
#[non_exhaustive]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the token; the slot is found by it.
    pub token_label: String,
    /// The user PIN. Redacted in `Debug`, zeroized on drop.
    pub user_pin: SecretBytes,
    /// Prepended to every object label, to share a token between rings.
    pub label_prefix: String,
    /// Accept key objects that were not generated on the token, and allow
    /// importing material (key import, multi-region replicas). Off by
    /// default; see [`Pkcs11Config::allow_imported_material`].
    pub allow_imported_material: bool,
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
            allow_imported_material: false,
        }
    }

    /// Lets this backend import material ([`crate::backend::ImportBackend`]:
    /// `import_key_version`, and replicas of multi-region keys) and use
    /// imported key objects.
    ///
    /// An imported object is created with `C_CreateObject` (sensitive, not
    /// extractable, a token object), so the token marks it `CKA_LOCAL`
    /// false, and (SoftHSM2 for private keys, as the standard allows)
    /// `CKA_NEVER_EXTRACTABLE` false: its value did exist outside the token.
    /// By default the backend refuses every key object that is not
    /// `CKA_LOCAL` and `CKA_NEVER_EXTRACTABLE`: it is how a key planted on
    /// the token under one of the ring's labels (by someone who holds the
    /// PIN, with a value they know) is told apart from one the token
    /// generated. With this on, those two checks are dropped for every
    /// object under this backend's label prefix (the token cannot tell a
    /// planted object from an imported one); `CKA_SENSITIVE` true and
    /// `CKA_EXTRACTABLE` false are still required. Turn it on only for a
    /// prefix that holds imported keys or replicas.
    pub fn allow_imported_material(mut self, allow: bool) -> Self {
        self.allow_imported_material = allow;
        self
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
            .field("allow_imported_material", &self.allow_imported_material)
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

/// Master keys on a PKCS#11 token. See the module docs.
pub struct Pkcs11Backend {
    ctx: Pkcs11,
    slot: Slot,
    /// Which login this backend's PIN is checked against (module, slot).
    login: (PathBuf, u64),
    /// Keyed hash of the PIN (see `logins`).
    pin_tag: [u8; 32],
    pin: AuthPin,
    prefix: String,
    pool: Mutex<Vec<Session>>,
    /// Validated secret-key handles (see the module docs).
    handles: RwLock<HashMap<MaterialId, ObjectHandle>>,
    /// Validated private-key handles, with "is Ed25519".
    signers: RwLock<HashMap<MaterialId, (ObjectHandle, bool)>>,
    rng: Arc<dyn RandomSource>,
    /// [`Pkcs11Config::allow_imported_material`].
    allow_imported: bool,
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
    /// process), finds the slot by token label, logs in, and runs an AES-GCM
    /// encrypt/decrypt self-test under a throwaway session key. A missing
    /// module or token, or a wrong PIN, is [`Error::Configuration`] (the PIN
    /// never appears in it); so is a token whose GCM blobs do not decrypt
    /// (for example one that generates IVs but does not return them).
    ///
    /// PKCS#11 login state belongs to the whole process: while any session
    /// of the process is logged in, the token answers a second login with
    /// "already logged in" without checking its PIN. strongroom then checks
    /// the PIN itself against the one its own earlier login used (kept in
    /// memory only as a keyed hash) and refuses a different one. A login
    /// made by other code in the process, outside strongroom, cannot be
    /// checked that way and is accepted as the token accepts it.
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
            login: (config.module.clone(), slot.id()),
            pin_tag: logins::tag(pin_text.as_bytes()),
            pin: AuthPin::new(pin_text.into()),
            prefix: config.label_prefix.clone(),
            pool: Mutex::new(Vec::new()),
            handles: RwLock::new(HashMap::new()),
            signers: RwLock::new(HashMap::new()),
            rng: Arc::new(OsRandom),
            allow_imported: config.allow_imported_material,
        };
        // Log in now, so a wrong PIN fails here, clearly.
        let s = backend.open_session()?;
        let tested = backend.self_test(&s);
        backend.checkin(s);
        tested?;
        Ok(backend)
    }

    /// Encrypts and decrypts a random message under a fresh session (not
    /// token) AES-256 key, through the same code path as
    /// [`KeyBackend::encrypt`]/[`KeyBackend::decrypt`], and destroys the key.
    ///
    /// This is what catches a token that generates GCM IVs itself but does
    /// not write them back into `CK_GCM_PARAMS.pIv`: every blob it made
    /// would carry the wrong IV and could never be decrypted, silently. Such
    /// a token is refused at connect time, before any data is encrypted.
    fn self_test(&self, s: &Session) -> Result<()> {
        let key = s
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ],
            )
            .map_err(|e| {
                Error::Configuration(format!(
                    "the PKCS#11 token cannot generate the AES-256 session key of the \
                     AES-GCM self-test: {e}"
                ))
            })?;
        let result = self.self_test_with(s, key);
        // A session object dies with its session anyway; destroying it now
        // keeps pooled sessions clean.
        let _ = s.destroy_object(key);
        result
    }

    fn self_test_with(&self, s: &Session, key: ObjectHandle) -> Result<()> {
        const AAD: &[u8] = b"strongroom pkcs11 self-test";
        let message: [u8; 32] = random_array(self.rng.as_ref())?;
        let nonce: [u8; NONCE_LEN] = random_array(self.rng.as_ref())?;
        let (iv, ct) = gcm_encrypt_raw(s, key, nonce, AAD, &message).map_err(|e| {
            Error::Configuration(format!(
                "the PKCS#11 token failed the AES-GCM self-test: encryption failed: {e}"
            ))
        })?;
        let blob = gcm_blob(&iv, message.len(), &ct).map_err(|e| {
            Error::Configuration(format!(
                "the PKCS#11 token failed the AES-GCM self-test: {e}"
            ))
        })?;
        let failed = || {
            Error::Configuration(
                "the PKCS#11 token failed the AES-GCM self-test: it cannot decrypt what it \
                 just encrypted. If the token generates GCM IVs itself it must return them \
                 in CK_GCM_PARAMS.pIv; refusing to use it, as its blobs could never be \
                 decrypted"
                    .into(),
            )
        };
        let back = gcm_decrypt_raw(s, key, AAD, &blob).map_err(|e| match decrypt_error(e) {
            Error::DecryptionFailed => failed(),
            e => e,
        })?;
        let back = SecretBytes::new(back);
        if back.expose_secret() != message.as_slice() {
            return Err(failed());
        }
        Ok(())
    }

    fn open_session(&self) -> Result<Session> {
        let s = self.ctx.open_rw_session(self.slot).map_err(other)?;
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) => {
                logins::remember(&self.login, self.pin_tag);
                Ok(s)
            }
            // PKCS#11 login state belongs to the whole process: when another
            // session is logged in, the token answers "already logged in"
            // without looking at the PIN. Check it against the PIN of the
            // login this process made.
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                if logins::matches(&self.login, &self.pin_tag) {
                    Ok(s)
                } else {
                    Err(Error::Configuration(
                        "the PKCS#11 user PIN was refused: this process is already logged \
                         in to the token with a different PIN"
                            .into(),
                    ))
                }
            }
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

    fn label_text(&self, id: &MaterialId) -> String {
        format!("{}{}#v{}", self.prefix, id.key_id, id.version)
    }

    /// The one object of `class` labelled for `id`, if any. Two or more is a
    /// hard error: picking one would let whoever can create objects on the
    /// token choose which key the ring uses.
    fn find_unique(&self, id: &MaterialId, class: ObjectClass) -> Result<Option<ObjectHandle>> {
        let label = self.label(id);
        let found = self
            .with_session(|s| {
                s.find_objects(&[Attribute::Class(class), Attribute::Label(label.clone())])
            })
            .map_err(other)?;
        match found.as_slice() {
            [] => Ok(None),
            [h] => Ok(Some(*h)),
            many => Err(Error::Configuration(format!(
                "the PKCS#11 token holds {} {} objects labelled {:?}; refusing to choose one \
                 (remove the objects that strongroom did not create)",
                many.len(),
                class_name(class),
                self.label_text(id)
            ))),
        }
    }

    /// Reads the attributes of key object `h` and refuses it unless it
    /// meets the rules of the module docs. Returns the attributes read.
    fn check_key(
        &self,
        id: &MaterialId,
        class: ObjectClass,
        h: ObjectHandle,
    ) -> Result<Vec<Attribute>> {
        use cryptoki::object::AttributeType;
        let attrs = self
            .with_session(|s| {
                s.get_attributes(
                    h,
                    &[
                        AttributeType::KeyType,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::NeverExtractable,
                        AttributeType::Local,
                    ],
                )
            })
            .map_err(other)?;
        let problems = key_attribute_problems(&attrs, self.allow_imported);
        if !problems.is_empty() {
            return Err(Error::Configuration(format!(
                "the PKCS#11 {} labelled {:?} is refused: {}",
                class_name(class),
                self.label_text(id),
                problems.join(", ")
            )));
        }
        Ok(attrs)
    }

    /// The validated AES key of `id`, if any.
    fn find(&self, id: &MaterialId) -> Result<Option<ObjectHandle>> {
        if let Some(h) = self
            .handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(Some(*h));
        }
        let Some(h) = self.find_unique(id, ObjectClass::SECRET_KEY)? else {
            return Ok(None);
        };
        let attrs = self.check_key(id, ObjectClass::SECRET_KEY, h)?;
        if !attrs
            .iter()
            .any(|a| matches!(a, Attribute::KeyType(t) if *t == KeyType::AES))
        {
            return Err(Error::Configuration(format!(
                "the PKCS#11 secret key labelled {:?} is not an AES key",
                self.label_text(id)
            )));
        }
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), h);
        Ok(Some(h))
    }

    /// The validated private key of `id`, if any, and whether it is Ed25519.
    fn find_signer(&self, id: &MaterialId) -> Result<Option<(ObjectHandle, bool)>> {
        if let Some(found) = self
            .signers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Ok(Some(*found));
        }
        let Some(h) = self.find_unique(id, ObjectClass::PRIVATE_KEY)? else {
            return Ok(None);
        };
        let attrs = self.check_key(id, ObjectClass::PRIVATE_KEY, h)?;
        let edwards = attrs
            .iter()
            .any(|a| matches!(a, Attribute::KeyType(t) if *t == KeyType::EC_EDWARDS));
        self.signers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), (h, edwards));
        Ok(Some((h, edwards)))
    }

    /// True if any object at all carries the label of `id`.
    fn label_taken(&self, id: &MaterialId) -> Result<bool> {
        let label = self.label(id);
        let found = self
            .with_session(|s| s.find_objects(&[Attribute::Label(label.clone())]))
            .map_err(other)?;
        Ok(!found.is_empty())
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

mod logins;

#[cfg(test)]
mod tests;
