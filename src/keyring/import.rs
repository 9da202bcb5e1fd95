//! Key import (bring your own key): one-time wrapping parameters bound to
//! their principal (and key), and the import of new keys and new versions.

use super::Client;
use crate::action::Action;
use crate::backend::material::Material;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::key::KeyRef;
use crate::key::{CreateKeyOptions, KeyId, KeySpec};
use crate::random::random_array;
use crate::secret::SecretBytes;
use crate::verify::hpke_seal_with_info;
use std::fmt;

pub(crate) use crate::limits::IMPORT_PARAMETERS_TTL_SECS;

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

pub(crate) use crate::limits::MAX_PENDING_IMPORTS;
pub(crate) use crate::limits::MAX_PENDING_IMPORTS_PER_PRINCIPAL;

/// One requested import: the one-time wrapping key and what it is bound to.
pub(super) struct PendingImport {
    wrapping: Material,
    spec: KeySpec,
    expires_at: Timestamp,
    /// Only this principal may use the token.
    principal: crate::Principal,
    /// `Some`: only `import_key_version` of this key (or, for a replica
    /// import, only that key's versions); `None`: only `import_key`.
    key: Option<KeyId>,
    /// What the token may import.
    purpose: ImportPurpose,
}

/// What a pending import's token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ImportPurpose {
    /// Caller-supplied material (`import_key`, `import_key_version`).
    Material,
    /// Versions of a multi-region key sent by its primary region
    /// (`replicate_key`, `sync_replica`).
    Replica,
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

impl Client {
    /// Parameters for importing key material of `spec` as a new key (bring
    /// your own key): a one-time HPKE public key of the ring, valid for 24
    /// hours on the ring's clock, and a token bound to this caller, usable
    /// once with [`Client::import_key`]. At most
    /// [`MAX_PENDING_IMPORTS_PER_PRINCIPAL`] pending imports per principal
    /// and [`MAX_PENDING_IMPORTS`] per ring.
    pub fn get_parameters_for_import(&self, spec: KeySpec) -> Result<ImportParameters> {
        self.on_ring(Action::GetParametersForImport, None, |_| {
            self.new_import(spec, None, ImportPurpose::Material)
        })
    }

    /// Parameters for importing a new version of the symmetric key `key`
    /// (its spec), bound to this caller and to that key, usable once with
    /// [`Client::import_key_version`]. Needs `GetParametersForImport` on the key.
    pub fn get_parameters_for_key_import<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
    ) -> Result<ImportParameters> {
        self.on_key(Action::GetParametersForImport, key, None, |_, meta| {
            if meta.spec.symmetric_algorithm().is_none() {
                return Err(Error::Unsupported(format!(
                    "key {} ({}) has one version: import a new key instead",
                    meta.key_id, meta.spec
                )));
            }
            super::replica::refuse_on_replica(meta, "import versions into")?;
            self.new_import(
                meta.spec,
                Some(meta.key_id.clone()),
                ImportPurpose::Material,
            )
        })
    }

    /// A one-time wrapping key and token for `spec`, bound to this caller,
    /// to `key` if given, and to `purpose`.
    pub(super) fn new_import(
        &self,
        spec: KeySpec,
        key: Option<KeyId>,
        purpose: ImportPurpose,
    ) -> Result<ImportParameters> {
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
        let token = crate::hex::encode(&random_array::<16>(inner.rng.as_ref())?);
        let expires_at = Timestamp(now.as_secs() + IMPORT_PARAMETERS_TTL_SECS);
        imports.insert(
            token.clone(),
            PendingImport {
                wrapping,
                spec,
                expires_at,
                principal: self.principal().clone(),
                key,
                purpose,
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
        self.on_ring(Action::ImportKeyMaterial, None, |_| {
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
    pub fn import_key_version<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        import_token: &str,
        wrapped_material: &[u8],
    ) -> Result<u32> {
        self.on_key(Action::ImportKeyMaterial, key, None, |_, meta| {
            if meta.spec.symmetric_algorithm().is_none() {
                return Err(Error::Unsupported(format!(
                    "key {} ({}) has one version: import a new key instead",
                    meta.key_id, meta.spec
                )));
            }
            if matches!(meta.state, crate::key::KeyState::PendingDeletion { .. }) {
                return Err(Error::InvalidKeyState {
                    key_id: meta.key_id.clone(),
                    state: meta.state,
                    action: Action::ImportKeyMaterial,
                });
            }
            super::replica::refuse_on_replica(meta, "import versions into")?;
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
                .rotate(meta, crate::key::RotationKind::Imported, None, Some(&raw))?
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
        // Another principal's token is indistinguishable from an unknown one,
        // and so is a replica exchange's token.
        if &pending.principal != self.principal() || pending.purpose != ImportPurpose::Material {
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

/// HPKE `info` of one version sealed for a replica (docs/FORMAT.md,
/// "Replica key material"): `"strongroom replica v1" || token`.
pub(super) fn replica_info(token: &str) -> Vec<u8> {
    let mut i = b"strongroom replica v1".to_vec();
    i.extend_from_slice(token.as_bytes());
    i
}

/// HPKE `aad` of one version sealed for a replica: the spec name, the key
/// id and the version, each length-prefixed, so a sealed version cannot be
/// replayed as another key's or another version's.
pub(super) fn replica_aad(spec: KeySpec, key_id: &KeyId, version: u32) -> Vec<u8> {
    let mut a = Vec::new();
    for part in [spec.as_str().as_bytes(), key_id.as_str().as_bytes()] {
        // Both are short (a spec name, a key id of at most 255 bytes).
        a.extend_from_slice(&(part.len() as u16).to_be_bytes());
        a.extend_from_slice(part);
    }
    a.extend_from_slice(&version.to_be_bytes());
    a
}

impl Client {
    /// Forgets a pending import (a replica exchange that failed), so it does
    /// not count against the pending-import limits until it expires.
    pub(super) fn drop_import(&self, import_token: &str) {
        self.inner()
            .asym
            .imports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(import_token);
    }

    /// Opens every sealed version of a replica exchange with its one-time
    /// key: all of them or none (the token stays usable if any fails), each
    /// validated against the spec. The token is spent only when all open.
    pub(super) fn unwrap_replica(
        &self,
        import_token: &str,
        key_id: &KeyId,
        sealed: &[(u32, Vec<u8>)],
    ) -> Result<Vec<(u32, SecretBytes)>> {
        let inner = self.inner();
        let now = inner.clock.now();
        let unknown = || Error::invalid("unknown, used or foreign replica token");
        let mut imports = inner.asym.imports.lock().unwrap_or_else(|e| e.into_inner());
        let pending = imports.get(import_token).ok_or_else(unknown)?;
        if &pending.principal != self.principal()
            || pending.purpose != ImportPurpose::Replica
            || pending.key.as_ref() != Some(key_id)
        {
            return Err(unknown());
        }
        if now >= pending.expires_at {
            imports.remove(import_token);
            return Err(Error::invalid(
                "the replica exchange's parameters have expired",
            ));
        }
        let spec = pending.spec;
        let info = replica_info(import_token);
        let mut out = Vec::with_capacity(sealed.len());
        for (version, wrapped) in sealed {
            let raw = pending
                .wrapping
                .hpke_open(&info, &replica_aad(spec, key_id, *version), wrapped)
                .map_err(|_| {
                    Error::invalid(format!(
                        "version {version} of {key_id} does not unwrap with this region's \
                         one-time key"
                    ))
                })?;
            Material::from_raw(spec, raw.expose_secret())?;
            out.push((*version, raw));
        }
        imports.remove(import_token);
        Ok(out)
    }
}
