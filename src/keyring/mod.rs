//! The [`KeyRing`] facade, the caller handle [`Client`], and the one pipeline
//! every operation goes through.

use crate::action::Action;
use crate::backend::{KeyBackend, MaterialId, MemoryBackend};
use crate::clock::{Clock, SystemClock};
use crate::envelope::blob::{self, BlobHeader};
use crate::envelope::message;

mod access;
mod asymmetric;
mod audit;
#[cfg(feature = "esdk")]
mod esdk;
mod file;
mod lifecycle;
mod rotation;
mod stream;

use crate::envelope::{
    DataKey, Decrypted, EncryptionContext, MAX_PLAINTEXT_LEN, Opened, SealOptions,
};
use crate::error::{Error, Result};
use crate::key::{
    Alias, CreateKeyOptions, KeyDescription, KeyId, KeyListEntry, KeyManager, KeyMetadata, KeySpec,
    KeyState, KeyUsage, KeyVersionInfo, MAX_TAGS, RotationKind, SymmetricAlgorithm,
    validate_description, validate_tag,
};
use crate::principal::Principal;
use crate::random::{OsRandom, RandomSource, random_array};
use crate::secret::SecretBytes;
use crate::store::{MemoryStore, MetadataStore};
pub use access::{GrantSelector, MAX_GRANTS_PER_KEY};
pub use asymmetric::{
    DataKeyPair, DataKeyPairSpec, IMPORT_PARAMETERS_TTL_SECS, ImportParameters,
    MAX_PENDING_IMPORTS, MAX_PENDING_IMPORTS_PER_PRINCIPAL, MAX_SIGN_MESSAGE_LEN, PublicKeyInfo,
};
pub use audit::{ACTION_DELETE_KEY, ACTION_ROTATE_KEY, SYSTEM_PRINCIPAL, VersionUsage};
pub use lifecycle::{DEFAULT_DELETION_WINDOW_DAYS, DELETION_WINDOW_DAYS, MaintenanceReport};
pub use rotation::{DEFAULT_ENCRYPTION_LIMIT, RotationStatus};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Largest request of [`Client::generate_random`].
pub const MAX_RANDOM_LEN: usize = 1024;
/// Largest page of the list calls.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// The ring: one value an application holds, cheap to clone, `Send + Sync`.
///
/// Operations are performed *as someone*: get a [`Client`] for the caller's
/// principal with [`KeyRing::client`].
///
/// ```
/// use strongroom::{KeyRing, Principal, KeySpec, CreateKeyOptions, EncryptionContext};
/// # fn main() -> Result<(), strongroom::Error> {
/// let ring = KeyRing::in_memory();
/// let alice = ring.client(Principal::user("alice")?);
/// let key = alice.create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/app"))?;
/// let ctx = EncryptionContext::new().with("tenant", "42");
/// let message = alice.seal("alias/app", b"hello", &ctx)?;
/// let opened = alice.open(&message, &ctx)?;
/// assert_eq!(opened.plaintext.expose_secret(), b"hello");
/// assert_eq!(opened.key_id, key);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn KeyBackend>,
    store: Arc<dyn MetadataStore>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn RandomSource>,
    /// Encryptions per key version since this ring started (metering).
    usage: rotation::UsageMeter,
    /// Serializes rotations and deletions within this ring.
    rotation_lock: std::sync::Mutex<()>,
    /// Decides ring-wide actions (no key).
    ring_policy: crate::policy::Policy,
    /// Audit sinks, the failure policy, whether context values are recorded.
    audit: audit::AuditConfig,
    /// Pending key imports and cached verifiers.
    asym: asymmetric::AsymmetricState,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("backend", &self.inner.backend.name())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A ring with the memory backend and memory store: no setup, nothing
    /// persisted.
    pub fn in_memory() -> KeyRing {
        KeyRing::builder().build()
    }

    /// A builder to choose backend, store, clock and random source.
    pub fn builder() -> KeyRingBuilder {
        KeyRingBuilder::default()
    }

    /// A handle that performs operations as `principal`.
    pub fn client(&self, principal: Principal) -> Client {
        Client {
            ring: self.clone(),
            principal,
        }
    }

    /// The name of the ring's backend.
    pub fn backend_name(&self) -> &str {
        self.inner.backend.name()
    }

    /// The ring's backend, for diagnostics and conformance tests.
    ///
    /// Dangerous: calls made directly on the backend bypass the pipeline
    /// (no access control, no state or usage checks, no audit record). Key
    /// material still never leaves the backend.
    pub fn dangerous_backend(&self) -> Arc<dyn KeyBackend> {
        self.inner.backend.clone()
    }
}

/// Builds a [`KeyRing`]. Every part has a default: memory backend, memory
/// store, system clock, OS random generator.
#[derive(Default)]
pub struct KeyRingBuilder {
    backend: Option<Arc<dyn KeyBackend>>,
    store: Option<Arc<dyn MetadataStore>>,
    clock: Option<Arc<dyn Clock>>,
    rng: Option<Arc<dyn RandomSource>>,
    encryption_limit: Option<u64>,
    ring_policy: Option<crate::policy::Policy>,
    audit_sinks: Vec<Arc<dyn crate::audit::AuditSink>>,
    audit_failure: crate::audit::FailurePolicy,
    audit_context_values: bool,
}

impl fmt::Debug for KeyRingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRingBuilder").finish_non_exhaustive()
    }
}

impl KeyRingBuilder {
    /// The backend that holds master-key material.
    pub fn backend(mut self, backend: Arc<dyn KeyBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The store that holds key metadata.
    pub fn store(mut self, store: Arc<dyn MetadataStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The random source for key ids, data keys and message ids (and, if no
    /// backend is given, for the default memory backend too).
    pub fn random(mut self, rng: Arc<dyn RandomSource>) -> Self {
        self.rng = Some(rng);
        self
    }

    /// Encryptions per key version after which the ring rotates the key
    /// (default [`DEFAULT_ENCRYPTION_LIMIT`], below the 2^32 random-nonce
    /// bound of NIST SP 800-38D). Lower it to test the guard.
    pub fn encryption_limit(mut self, limit: u64) -> Self {
        self.encryption_limit = Some(limit.max(1));
        self
    }

    /// The policy deciding ring-wide actions ([`crate::policy::Policy::RING_ACTIONS`]:
    /// `CreateKey`, `ImportKeyMaterial` and `GetParametersForImport` for new
    /// keys, `ListKeys`, `ListAliases` without a key, `GenerateRandom`).
    ///
    /// If no ring policy is chosen, the ring uses the open policy
    /// ([`crate::policy::Policy::open_ring`]): any principal may create keys
    /// (and owns what it creates) and list key ids and aliases. Choose it
    /// explicitly with [`KeyRingBuilder::open_ring_policy`], or restrict the
    /// ring-wide actions to named principals with
    /// [`KeyRingBuilder::ring_admins`]. No ring policy gives rights on an
    /// existing key: those come from the key's own policy and grants.
    pub fn ring_policy(mut self, policy: crate::policy::Policy) -> Self {
        self.ring_policy = Some(policy);
        self
    }

    /// Only `admins` may perform the ring-wide actions (create and import
    /// keys, list key ids and aliases, draw random bytes):
    /// [`crate::policy::Policy::ring_admins`].
    pub fn ring_admins(self, admins: impl IntoIterator<Item = Principal>) -> Self {
        self.ring_policy(crate::policy::Policy::ring_admins(admins))
    }

    /// Any principal may perform the ring-wide actions (the default, named):
    /// [`crate::policy::Policy::open_ring`]. Suits a ring whose callers are
    /// all parts of one application.
    pub fn open_ring_policy(self) -> Self {
        self.ring_policy(crate::policy::Policy::open_ring())
    }

    /// Adds an audit sink: every operation attempted on the ring is recorded
    /// there (see [`crate::audit`]). May be called several times.
    pub fn audit_sink(mut self, sink: Arc<dyn crate::audit::AuditSink>) -> Self {
        self.audit_sinks.push(sink);
        self
    }

    /// What happens when a sink fails: fail-closed (default) or fail-open.
    pub fn audit_failure_policy(mut self, policy: crate::audit::FailurePolicy) -> Self {
        self.audit_failure = policy;
        self
    }

    /// Also record encryption-context values in audit events (default: keys
    /// only). Contexts are not secret, but may be sensitive.
    pub fn audit_context_values(mut self, yes: bool) -> Self {
        self.audit_context_values = yes;
        self
    }

    /// Builds the ring.
    pub fn build(self) -> KeyRing {
        let rng: Arc<dyn RandomSource> = self.rng.unwrap_or_else(|| Arc::new(OsRandom));
        let backend = self
            .backend
            .unwrap_or_else(|| Arc::new(MemoryBackend::with_random(rng.clone())));
        KeyRing {
            inner: Arc::new(Inner {
                backend,
                store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                rng,
                usage: rotation::UsageMeter::new(
                    self.encryption_limit.unwrap_or(DEFAULT_ENCRYPTION_LIMIT),
                ),
                rotation_lock: std::sync::Mutex::new(()),
                ring_policy: self
                    .ring_policy
                    .unwrap_or_else(crate::policy::Policy::open_ring),
                asym: asymmetric::AsymmetricState::default(),
                audit: audit::AuditConfig::new(
                    self.audit_sinks,
                    self.audit_failure,
                    self.audit_context_values,
                ),
            }),
        }
    }
}

/// One page of a list call.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `marker` to get the next page; `None` on the last page.
    pub next_marker: Option<String>,
}

/// An alias and the key it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AliasEntry {
    /// The alias.
    pub alias: Alias,
    /// Its key.
    pub key_id: KeyId,
}

/// What an operation acts on, before resolution.
enum Target<'a> {
    /// No key: ring-wide (CreateKey, ListKeys, GenerateRandom).
    Ring,
    /// A key id or alias from the caller.
    Ref(&'a str),
    /// A key id read from a ciphertext (an error if the ciphertext is malformed).
    Id(Result<KeyId>),
}

/// How `open` checks the caller's context against the message's.
#[derive(Clone, Copy)]
pub(crate) enum ContextMatch {
    Exact,
    Contains,
}

impl Inner {
    /// The pipeline. Every public operation runs through here, in this order:
    /// 1. resolve the alias / key id to metadata;
    /// 2. authorize the principal for the action on the key;
    /// 3. check the key's state and usage for the action;
    /// 4. do the work (backend, formats).
    ///
    /// The work closure runs only after 1-3 passed, so no key material is
    /// touched for a refused request.
    fn run<T>(
        &self,
        principal: &Principal,
        action: Action,
        target: Target<'_>,
        context: Option<&EncryptionContext>,
        work: impl FnOnce(Option<&Arc<KeyMetadata>>) -> Result<T>,
    ) -> Result<T> {
        self.run_with(principal, action, target, context, None, work)
    }

    /// [`Inner::run`], where the caller may also be allowed as a party
    /// (grantee or retiring principal) of the grant `party_of` on the key:
    /// the rule of `RetireGrant`. An explicit Deny still wins.
    fn run_with<T>(
        &self,
        principal: &Principal,
        action: Action,
        target: Target<'_>,
        context: Option<&EncryptionContext>,
        party_of: Option<&str>,
        work: impl FnOnce(Option<&Arc<KeyMetadata>>) -> Result<T>,
    ) -> Result<T> {
        // The context is checked first, before the decision and before it
        // can reach an audit record: an oversized or malformed context is
        // refused and recorded without its contents.
        if let Some(Err(e)) = context.map(EncryptionContext::validate) {
            return self.record(principal, action, None, &audit::Seen::default(), Err(e));
        }
        let outer_version = audit::take_version();
        let mut seen = audit::Seen::default();
        let result = self.run_steps(
            principal, action, target, context, party_of, &mut seen, work,
        );
        seen.key_version = audit::take_version();
        audit::restore_version(outer_version);
        self.record(principal, action, context, &seen, result)
    }

    /// The steps of the pipeline, without recording.
    #[allow(clippy::too_many_arguments)]
    fn run_steps<T>(
        &self,
        principal: &Principal,
        action: Action,
        target: Target<'_>,
        context: Option<&EncryptionContext>,
        party_of: Option<&str>,
        seen: &mut audit::Seen,
        work: impl FnOnce(Option<&Arc<KeyMetadata>>) -> Result<T>,
    ) -> Result<T> {
        let meta = match target {
            Target::Ring => None,
            Target::Ref(r) => Some(self.resolve(r)?),
            Target::Id(id) => Some(self.load(&id?)?),
        };
        seen.key_id = meta.as_ref().map(|m| m.key_id.clone());
        let mut decision = self.decide(principal, action, meta.as_deref(), context);
        if !decision.allowed
            && !matches!(decision.reason, crate::policy::Reason::DenyStatement(_))
            && let (Some(grant_id), Some(m)) = (party_of, &meta)
            && m.grants.values().flatten().any(|g| {
                g.grant_id == grant_id
                    && (&g.grantee == principal || g.retiring_principal.as_ref() == Some(principal))
            })
        {
            decision = crate::policy::Decision {
                allowed: true,
                reason: crate::policy::Reason::Grant(grant_id.to_owned()),
            };
        }
        let decision = self.denial_error(principal, action, meta.as_deref(), decision)?;
        seen.grant_id = decision.grant_id().map(str::to_owned);
        // Due deletion (the key is gone) and due rotation (a new primary),
        // on the ring's clock.
        let meta = match meta {
            Some(m) => Some(self.apply_due(m, action)?),
            None => None,
        };
        if let Some(m) = &meta {
            check_usable(m, action)?;
        }
        work(meta.as_ref())
    }

    /// The access decision: key policy and grants, or the ring policy for
    /// ring-wide actions ([`crate::policy::decide`]).
    fn decide(
        &self,
        principal: &Principal,
        action: Action,
        key: Option<&KeyMetadata>,
        context: Option<&EncryptionContext>,
    ) -> crate::policy::Decision {
        let req = crate::policy::Request {
            principal,
            action,
            context,
            now: self.clock.now(),
        };
        crate::policy::decide(&self.ring_policy, key, &req)
    }

    /// A refused decision as [`Error::AccessDenied`], naming the principal,
    /// action and key, never the policy text.
    fn denial_error(
        &self,
        principal: &Principal,
        action: Action,
        key: Option<&KeyMetadata>,
        decision: crate::policy::Decision,
    ) -> Result<crate::policy::Decision> {
        if decision.allowed {
            Ok(decision)
        } else {
            Err(Error::AccessDenied {
                principal: principal.to_string(),
                action: action.to_string(),
                resource: key.map_or_else(|| "*".to_owned(), |k| k.key_id.to_string()),
            })
        }
    }

    /// [`Inner::decide`] as a result: the decision, or
    /// [`Error::AccessDenied`].
    fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        key: Option<&KeyMetadata>,
        context: Option<&EncryptionContext>,
    ) -> Result<crate::policy::Decision> {
        let decision = self.decide(principal, action, key, context);
        self.denial_error(principal, action, key, decision)
    }

    fn load(&self, id: &KeyId) -> Result<Arc<KeyMetadata>> {
        self.store
            .get_key(id)?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))
    }

    fn resolve(&self, key_ref: &str) -> Result<Arc<KeyMetadata>> {
        if key_ref.starts_with(Alias::PREFIX) {
            let alias = Alias::parse(key_ref)?;
            let id = self
                .store
                .resolve_alias(&alias)?
                .ok_or_else(|| Error::AliasNotFound(alias.to_string()))?;
            self.load(&id)
        } else {
            self.load(&KeyId::parse(key_ref)?)
        }
    }

    fn random_key(&self) -> Result<Zeroizing<[u8; 32]>> {
        Ok(Zeroizing::new(random_array(self.rng.as_ref())?))
    }

    /// Encrypts up to 4 KiB under the key's primary version into a blob.
    fn encrypt_blob(&self, meta: &KeyMetadata, plaintext: &[u8], ctx: &[u8]) -> Result<Vec<u8>> {
        let alg = symmetric(meta)?;
        let version = meta.primary_version;
        if version < meta.min_encrypt_version {
            return Err(Error::InvalidKeyState {
                key_id: meta.key_id.to_string(),
                state: format!(
                    "below its minimum encryption version {} (primary {version}); rotate the key",
                    meta.min_encrypt_version
                ),
                action: "encryption".into(),
            });
        }
        let mut out = blob::encode_header(alg.suite_id(), &meta.key_id, version)?;
        let aad = blob::aad(&out, ctx);
        let mref = MaterialId::new(meta.key_id.clone(), version);
        // Count first: a version at its hard limit refuses to encrypt.
        let count = self.usage.record(&mref, self.store.as_ref())?;
        audit::note_version(version);
        let payload = self.backend.encrypt(&mref, &aad, plaintext)?;
        out.extend_from_slice(&payload);
        if self.usage.should_rotate(count) {
            // The limit is reached: rotate so the next call uses a new version.
            self.rotate_if_primary(meta, RotationKind::UsageLimit)?;
        }
        Ok(out)
    }

    /// Decrypts a parsed blob with the key it names.
    fn decrypt_blob(
        &self,
        meta: &KeyMetadata,
        h: &BlobHeader<'_>,
        ctx: &[u8],
    ) -> Result<SecretBytes> {
        if !meta.has_version(h.version) {
            return Err(Error::KeyNotFound(format!(
                "{}#v{}",
                meta.key_id, h.version
            )));
        }
        if h.version < meta.min_decrypt_version {
            return Err(Error::VersionRetired {
                key_id: meta.key_id.to_string(),
                version: h.version,
                floor: meta.min_decrypt_version,
            });
        }
        audit::note_version(h.version);
        if symmetric(meta)?.suite_id() != h.suite {
            return Err(Error::DecryptionFailed);
        }
        let aad = blob::aad(h.header, ctx);
        self.backend.decrypt(
            &MaterialId::new(meta.key_id.clone(), h.version),
            &aad,
            h.payload,
        )
    }
}

/// The usage an action needs, if it is a cryptographic operation.
fn required_usage(action: Action) -> Option<KeyUsage> {
    match action {
        Action::Encrypt
        | Action::Decrypt
        | Action::ReEncryptFrom
        | Action::ReEncryptTo
        | Action::GenerateDataKey
        | Action::GenerateDataKeyWithoutPlaintext
        | Action::GenerateDataKeyPair
        | Action::GenerateDataKeyPairWithoutPlaintext => Some(KeyUsage::EncryptDecrypt),
        Action::Sign | Action::Verify => Some(KeyUsage::SignVerify),
        Action::GenerateMac | Action::VerifyMac => Some(KeyUsage::GenerateVerifyMac),
        _ => None,
    }
}

/// State and usage checks: cryptographic actions need an enabled key of the
/// right usage; management actions work in any state.
fn check_usable(meta: &KeyMetadata, action: Action) -> Result<()> {
    let Some(usage) = required_usage(action) else {
        return Ok(());
    };
    if meta.state != KeyState::Enabled {
        return Err(Error::InvalidKeyState {
            key_id: meta.key_id.to_string(),
            state: meta.state.to_string(),
            action: action.to_string(),
        });
    }
    if meta.usage != usage {
        return Err(Error::WrongKeyUsage {
            key_id: meta.key_id.to_string(),
            usage: meta.usage.to_string(),
            action: action.to_string(),
        });
    }
    Ok(())
}

/// The symmetric algorithm of an encryption key.
fn symmetric(meta: &KeyMetadata) -> Result<SymmetricAlgorithm> {
    meta.spec.symmetric_algorithm().ok_or_else(|| {
        Error::Unsupported(format!(
            "key {} ({}) is not a symmetric encryption key",
            meta.key_id, meta.spec
        ))
    })
}

fn need(meta: Option<&Arc<KeyMetadata>>) -> Result<&Arc<KeyMetadata>> {
    meta.ok_or_else(|| Error::KeyNotFound("(none)".into()))
}

fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return Err(Error::invalid(format!(
            "limit must be 1 to {MAX_PAGE_LIMIT}"
        )));
    }
    Ok(())
}

/// Performs operations on a [`KeyRing`] as one principal. Cheap to clone.
///
/// A client is a capability for its principal only: it gives no way back to
/// the ring (and so to other principals, or to the backend, which bypasses
/// access control). Code that must act as several principals is handed the
/// [`KeyRing`] itself, explicitly.
///
/// ```compile_fail
/// # let ring = strongroom::KeyRing::in_memory();
/// let c = ring.client(strongroom::Principal::user("alice").unwrap());
/// let _whole_ring = c.ring(); // no such method
/// ```
#[derive(Clone)]
pub struct Client {
    ring: KeyRing,
    principal: Principal,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("principal", &self.principal.to_string())
            .field("ring", &self.ring)
            .finish()
    }
}

impl Client {
    fn inner(&self) -> &Inner {
        &self.ring.inner
    }

    fn run<T>(
        &self,
        action: Action,
        target: Target<'_>,
        context: Option<&EncryptionContext>,
        work: impl FnOnce(Option<&Arc<KeyMetadata>>) -> Result<T>,
    ) -> Result<T> {
        self.inner()
            .run(&self.principal, action, target, context, work)
    }

    /// The principal this client acts as.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    // ---- keys -------------------------------------------------------------

    /// Creates a customer key of `spec` with one version and returns its id.
    ///
    /// Fails with [`Error::InvalidArgument`] for a bad alias, tag, description
    /// or usage, [`Error::AliasExists`] if the alias is taken (nothing is
    /// created then), [`Error::Unsupported`] if the backend cannot hold `spec`.
    pub fn create_key(&self, spec: KeySpec, options: CreateKeyOptions) -> Result<KeyId> {
        self.run(Action::CreateKey, Target::Ring, None, |_| {
            self.create_key_inner(spec, &options, None)
        })
    }

    /// Creates a key with generated material, or with `imported` raw
    /// material. Runs inside an already authorized pipeline step.
    pub(crate) fn create_key_inner(
        &self,
        spec: KeySpec,
        options: &CreateKeyOptions,
        imported: Option<&SecretBytes>,
    ) -> Result<KeyId> {
        {
            let inner = self.inner();
            validate_description(&options.description)?;
            if options.tags.len() > MAX_TAGS {
                return Err(Error::invalid(format!(
                    "a key may have at most {MAX_TAGS} tags"
                )));
            }
            for (k, v) in &options.tags {
                validate_tag(k, v)?;
            }
            let alias = options
                .alias
                .as_deref()
                .map(Alias::parse_user)
                .transpose()?;
            let usage = options.usage.unwrap_or(spec.allowed_usages()[0]);
            if !spec.allowed_usages().contains(&usage) {
                return Err(Error::invalid(format!(
                    "usage {usage} is not allowed for key spec {spec}"
                )));
            }
            if !inner.backend.supports(spec) {
                return Err(Error::Unsupported(format!(
                    "backend {} cannot hold {spec} keys",
                    inner.backend.name()
                )));
            }
            if let Some(a) = &alias
                && inner.store.resolve_alias(a)?.is_some()
            {
                return Err(Error::AliasExists(a.to_string()));
            }
            let now = inner.clock.now();
            let key_id = KeyId::generate(inner.rng.as_ref())?;
            let meta = KeyMetadata {
                key_id: key_id.clone(),
                spec,
                usage,
                state: KeyState::Enabled,
                manager: KeyManager::Customer,
                description: options.description.clone(),
                created_at: now,
                created_by: self.principal.clone(),
                primary_version: 1,
                versions: vec![KeyVersionInfo {
                    version: 1,
                    created_at: now,
                }],
                tags: options.tags.clone(),
                rotation: None,
                rotations: Vec::new(),
                min_decrypt_version: 0,
                min_encrypt_version: 0,
                origin: if imported.is_some() {
                    crate::key::KeyOrigin::Imported
                } else {
                    crate::key::KeyOrigin::Generated
                },
                policy: None,
                grants: BTreeMap::new(),
                encryptions_reserved: BTreeMap::new(),
            };
            let mref = MaterialId::new(key_id.clone(), 1);
            match imported {
                Some(raw) => inner.backend.import(&mref, spec, raw.expose_secret())?,
                None => inner.backend.generate(&mref, spec)?,
            }
            if let Err(e) = inner.store.insert_key(meta, alias.as_ref()) {
                // Roll back the material when the store certainly stored
                // nothing; after an I/O error the record may be on disk (a
                // failed directory fsync after the rename), so the material
                // stays: material without metadata is harmless, the reverse
                // is not.
                if matches!(e, Error::AliasExists(_) | Error::InvalidArgument(_)) {
                    let _ = inner.backend.destroy(&mref);
                }
                return Err(e);
            }
            Ok(key_id)
        }
    }

    /// A key's description, by id or alias: everything except its policy
    /// and grants (read those with [`Client::get_key_policy`] and
    /// [`Client::list_grants`]).
    pub fn describe_key(&self, key: &str) -> Result<KeyDescription> {
        self.run(Action::DescribeKey, Target::Ref(key), None, |m| {
            Ok(KeyDescription::from(need(m)?.as_ref()))
        })
    }

    /// Lists keys in id order, at most `limit` (1 to 1000) per page: their
    /// ids and aliases only, as KMS `ListKeys` does. Pass the previous
    /// page's `next_marker` to continue.
    pub fn list_keys(&self, limit: usize, marker: Option<&str>) -> Result<Page<KeyListEntry>> {
        self.run(Action::ListKeys, Target::Ring, None, |_| {
            check_limit(limit)?;
            let after = marker
                .map(|m| KeyId::parse(m).map_err(|_| Error::invalid("marker is not a key id")))
                .transpose()?;
            let store = &self.inner().store;
            let mut keys = store.list_keys(after.as_ref(), limit + 1)?;
            let next_marker = if keys.len() > limit {
                keys.truncate(limit);
                keys.last().map(|k| k.key_id.to_string())
            } else {
                None
            };
            let items = keys
                .iter()
                .map(|k| {
                    let aliases = store
                        .list_aliases(Some(&k.key_id), None, MAX_PAGE_LIMIT)?
                        .into_iter()
                        .map(|(a, _)| a)
                        .collect();
                    Ok(KeyListEntry {
                        key_id: k.key_id.clone(),
                        aliases,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Page { items, next_marker })
        })
    }

    // ---- aliases ----------------------------------------------------------

    /// Creates `alias` (`alias/...`) pointing at `key`. Needs `CreateAlias`
    /// on `key`.
    pub fn create_alias(&self, alias: &str, key: &str) -> Result<()> {
        let alias = Alias::parse_user(alias)?;
        self.run(Action::CreateAlias, Target::Ref(key), None, |m| {
            self.inner().store.create_alias(&alias, &need(m)?.key_id)
        })
    }

    /// Points an existing alias at another key. As in AWS KMS, needs
    /// `UpdateAlias` on the key the alias points at now *and* on `key`: a
    /// caller who owns only the new key cannot take over another
    /// principal's alias. The store repoints the alias only if it still
    /// names the key the caller was authorized on (else [`Error::Conflict`],
    /// nothing changed).
    pub fn update_alias(&self, alias: &str, key: &str) -> Result<()> {
        let parsed = Alias::parse_user(alias)?;
        self.run(
            Action::UpdateAlias,
            Target::Ref(parsed.as_str()),
            None,
            |m| {
                let current = need(m)?;
                let inner = self.inner();
                let dest = inner.resolve(key)?;
                inner.authorize(&self.principal, Action::UpdateAlias, Some(&dest), None)?;
                inner
                    .store
                    .update_alias(&parsed, &current.key_id, &dest.key_id)
            },
        )
    }

    /// Deletes an alias (the key stays). Needs `DeleteAlias` on the key the
    /// alias points at.
    pub fn delete_alias(&self, alias: &str) -> Result<()> {
        let parsed = Alias::parse(alias)?;
        self.run(
            Action::DeleteAlias,
            Target::Ref(parsed.as_str()),
            None,
            |m| self.inner().store.delete_alias(&parsed, &need(m)?.key_id),
        )
    }

    /// Lists aliases in name order, all of them or only those of `key`.
    pub fn list_aliases(
        &self,
        key: Option<&str>,
        limit: usize,
        marker: Option<&str>,
    ) -> Result<Page<AliasEntry>> {
        let target = key.map_or(Target::Ring, Target::Ref);
        self.run(Action::ListAliases, target, None, |m| {
            check_limit(limit)?;
            let after = marker
                .map(|m| Alias::parse(m).map_err(|_| Error::invalid("marker is not an alias")))
                .transpose()?;
            let key = m.map(|m| &m.key_id);
            let mut list = self
                .inner()
                .store
                .list_aliases(key, after.as_ref(), limit + 1)?;
            let next_marker = if list.len() > limit {
                list.truncate(limit);
                list.last().map(|(a, _)| a.to_string())
            } else {
                None
            };
            Ok(Page {
                items: list
                    .into_iter()
                    .map(|(alias, key_id)| AliasEntry { alias, key_id })
                    .collect(),
                next_marker,
            })
        })
    }

    // ---- tags -------------------------------------------------------------

    /// Adds or replaces tags on a key (at most 50 tags in all).
    pub fn tag_key(&self, key: &str, tags: &[(&str, &str)]) -> Result<()> {
        self.run(Action::TagResource, Target::Ref(key), None, |m| {
            for (k, v) in tags {
                validate_tag(k, v)?;
            }
            self.inner()
                .store
                .update_key(&need(m)?.key_id, &mut |meta| {
                    for (k, v) in tags {
                        meta.tags.insert((*k).to_owned(), (*v).to_owned());
                    }
                    if meta.tags.len() > MAX_TAGS {
                        return Err(Error::invalid(format!(
                            "a key may have at most {MAX_TAGS} tags"
                        )));
                    }
                    Ok(())
                })?;
            Ok(())
        })
    }

    /// Removes tags from a key; absent tag keys are ignored.
    pub fn untag_key(&self, key: &str, tag_keys: &[&str]) -> Result<()> {
        self.run(Action::UntagResource, Target::Ref(key), None, |m| {
            self.inner()
                .store
                .update_key(&need(m)?.key_id, &mut |meta| {
                    for k in tag_keys {
                        meta.tags.remove(*k);
                    }
                    Ok(())
                })?;
            Ok(())
        })
    }

    /// A key's tags.
    pub fn list_tags(&self, key: &str) -> Result<BTreeMap<String, String>> {
        self.run(Action::ListResourceTags, Target::Ref(key), None, |m| {
            Ok(need(m)?.tags.clone())
        })
    }

    // ---- direct encryption ------------------------------------------------

    /// Encrypts 1 to 4096 bytes directly under the key's primary version. The
    /// blob names the key id and version; `context` must be given again,
    /// exactly, to decrypt. For larger data use [`Client::seal`].
    pub fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        self.run(Action::Encrypt, Target::Ref(key), Some(context), |m| {
            if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT_LEN {
                return Err(Error::invalid(format!(
                    "plaintext must be 1 to {MAX_PLAINTEXT_LEN} bytes (got {}); use seal for larger data",
                    plaintext.len()
                )));
            }
            let ctx = context.canonical_bytes()?;
            self.inner().encrypt_blob(need(m)?, plaintext, &ctx)
        })
    }

    /// Decrypts a blob of [`Client::encrypt`] (or a data key's ciphertext). The
    /// key is read from the blob, as a KMS Decrypt does.
    pub fn decrypt(&self, ciphertext: &[u8], context: &EncryptionContext) -> Result<Decrypted> {
        self.decrypt_checked(ciphertext, context, None)
    }

    /// Like [`Client::decrypt`], but fails with [`Error::IncorrectKey`] unless
    /// the blob names `expected_key` (an id or alias).
    pub fn decrypt_with_key(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
        expected_key: &str,
    ) -> Result<Decrypted> {
        self.decrypt_checked(ciphertext, context, Some(expected_key))
    }

    fn decrypt_checked(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
        expected_key: Option<&str>,
    ) -> Result<Decrypted> {
        let parsed = blob::parse(ciphertext);
        let target = Target::Id(
            parsed
                .as_ref()
                .map(|h| h.key_id.clone())
                .map_err(Clone::clone),
        );
        self.run(Action::Decrypt, target, Some(context), |m| {
            let meta = need(m)?;
            let h = parsed?;
            if let Some(exp) = expected_key {
                let want = self.inner().resolve(exp)?;
                if want.key_id != meta.key_id {
                    return Err(Error::IncorrectKey {
                        expected: want.key_id.to_string(),
                        found: meta.key_id.to_string(),
                    });
                }
            }
            let ctx = context.canonical_bytes()?;
            let plaintext = self.inner().decrypt_blob(meta, &h, &ctx)?;
            Ok(Decrypted {
                plaintext,
                key_id: meta.key_id.clone(),
                key_version: h.version,
            })
        })
    }

    /// Decrypts under the source key and encrypts under `destination_key`
    /// (its primary version) in one call: the plaintext never reaches the
    /// caller. Needs `ReEncryptFrom` on the source and `ReEncryptTo` on the
    /// destination.
    pub fn re_encrypt(
        &self,
        ciphertext: &[u8],
        source_context: &EncryptionContext,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        let parsed = blob::parse(ciphertext);
        let target = Target::Id(
            parsed
                .as_ref()
                .map(|h| h.key_id.clone())
                .map_err(Clone::clone),
        );
        self.run(Action::ReEncryptFrom, target, Some(source_context), |m| {
            let h = parsed?;
            // The destination is authorized (and checked) before the source
            // material is touched; its own pipeline run below decides again
            // and records it.
            let dest = self.inner().resolve(destination_key)?;
            self.inner().authorize(
                &self.principal,
                Action::ReEncryptTo,
                Some(&dest),
                Some(destination_context),
            )?;
            check_usable(&dest, Action::ReEncryptTo)?;
            let src_ctx = source_context.canonical_bytes()?;
            let plaintext = self.inner().decrypt_blob(need(m)?, &h, &src_ctx)?;
            self.run(
                Action::ReEncryptTo,
                Target::Ref(destination_key),
                Some(destination_context),
                |d| {
                    let dst_ctx = destination_context.canonical_bytes()?;
                    self.inner()
                        .encrypt_blob(need(d)?, plaintext.expose_secret(), &dst_ctx)
                },
            )
        })
    }

    // ---- data keys --------------------------------------------------------

    /// A fresh 256-bit data key: its plaintext and its ciphertext under the
    /// key's primary version, bound to `context`.
    pub fn generate_data_key(&self, key: &str, context: &EncryptionContext) -> Result<DataKey> {
        self.run(
            Action::GenerateDataKey,
            Target::Ref(key),
            Some(context),
            |m| {
                let meta = need(m)?;
                let ctx = context.canonical_bytes()?;
                let dk = self.inner().random_key()?;
                let ciphertext = self.inner().encrypt_blob(meta, dk.as_slice(), &ctx)?;
                Ok(DataKey {
                    plaintext: SecretBytes::from_slice(dk.as_slice()),
                    ciphertext,
                    key_id: meta.key_id.clone(),
                    key_version: meta.primary_version,
                })
            },
        )
    }

    /// A fresh data key, returned only encrypted (for a component that will
    /// decrypt it later).
    pub fn generate_data_key_without_plaintext(
        &self,
        key: &str,
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        self.run(
            Action::GenerateDataKeyWithoutPlaintext,
            Target::Ref(key),
            Some(context),
            |m| {
                let ctx = context.canonical_bytes()?;
                let dk = self.inner().random_key()?;
                self.inner().encrypt_blob(need(m)?, dk.as_slice(), &ctx)
            },
        )
    }

    /// Decrypts a data key's ciphertext back into a [`DataKey`]. Fails with
    /// the opaque error if the blob does not hold a 32-byte key.
    pub fn decrypt_data_key(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        let d = self.decrypt(ciphertext, context)?;
        if d.plaintext.len() != 32 {
            return Err(Error::DecryptionFailed);
        }
        Ok(DataKey {
            plaintext: d.plaintext,
            ciphertext: ciphertext.to_vec(),
            key_id: d.key_id,
            key_version: d.key_version,
        })
    }

    // ---- envelope messages ------------------------------------------------

    /// Encrypts data of any size into a self-contained envelope message: a
    /// fresh data key wrapped by `key`, a key commitment, the context, and the
    /// data in 64 KiB frames. Authorized as `GenerateDataKey`.
    pub fn seal(&self, key: &str, data: &[u8], context: &EncryptionContext) -> Result<Vec<u8>> {
        self.seal_with(key, data, context, SealOptions::default())
    }

    /// [`Client::seal`] with options (frame length).
    pub fn seal_with(
        &self,
        key: &str,
        data: &[u8],
        context: &EncryptionContext,
        options: SealOptions,
    ) -> Result<Vec<u8>> {
        self.begin_message(key, context, options, |header, derived, message_id| {
            message::encrypt_body(header, &derived, &message_id, options.frame_len, data)
        })
    }

    /// Runs the pipeline for a new message (action `GenerateDataKey`): a fresh
    /// data key wrapped by `key`, a fresh message id, the derived body cipher
    /// and the header up to the commitment, handed to `then`.
    pub(crate) fn begin_message<T>(
        &self,
        key: &str,
        context: &EncryptionContext,
        options: SealOptions,
        then: impl FnOnce(Vec<u8>, message::Derived, [u8; message::MESSAGE_ID_LEN]) -> Result<T>,
    ) -> Result<T> {
        self.run(
            Action::GenerateDataKey,
            Target::Ref(key),
            Some(context),
            |m| {
                let meta = need(m)?;
                let inner = self.inner();
                if options.frame_len == 0 || options.frame_len > crate::MAX_FRAME_LEN {
                    return Err(Error::invalid(format!(
                        "frame length must be 1 to {} bytes",
                        crate::MAX_FRAME_LEN
                    )));
                }
                let ctx = context.canonical_bytes()?;
                let suite = symmetric(meta)?;
                let dk = inner.random_key()?;
                let wrapped = inner.encrypt_blob(meta, dk.as_slice(), &ctx)?;
                let message_id: [u8; message::MESSAGE_ID_LEN] = random_array(inner.rng.as_ref())?;
                let derived = message::derive(suite, &message_id, dk.as_slice())?;
                let header = message::encode_header(
                    suite,
                    options.frame_len,
                    &message_id,
                    &ctx,
                    &[wrapped],
                    &derived.commitment,
                )?;
                then(header, derived, message_id)
            },
        )
    }

    /// Opens an envelope message. `context` must equal the message's context
    /// exactly; every failure is [`Error::DecryptionFailed`].
    pub fn open(&self, message: &[u8], context: &EncryptionContext) -> Result<Opened> {
        self.open_inner(message, context, ContextMatch::Exact)
    }

    /// Opens an envelope message whose context contains every pair of
    /// `required` (and maybe more); the full context is returned in
    /// [`Opened::context`]. Use it when the reader knows only some pairs.
    pub fn open_requiring(&self, message: &[u8], required: &EncryptionContext) -> Result<Opened> {
        self.open_inner(message, required, ContextMatch::Contains)
    }

    fn open_inner(
        &self,
        msg: &[u8],
        context: &EncryptionContext,
        mode: ContextMatch,
    ) -> Result<Opened> {
        let header = message::parse_header(msg);
        self.with_message_key(header, context, mode, |h, derived, key_id, key_version| {
            let plaintext = message::decrypt_frames(h, &derived)?;
            Ok(Opened {
                plaintext: SecretBytes::from_zeroizing(plaintext),
                context: h.context.clone(),
                key_id,
                key_version,
            })
        })
    }

    /// Runs the pipeline for opening a message (action `Decrypt` on the key of
    /// the first wrapped key this ring holds): checks the caller's context,
    /// unwraps the data key, verifies commitment and header tag, then hands
    /// the body cipher to `then`.
    pub(crate) fn with_message_key<T>(
        &self,
        header: Result<message::MessageHeader<'_>>,
        context: &EncryptionContext,
        mode: ContextMatch,
        then: impl FnOnce(&message::MessageHeader<'_>, message::Derived, KeyId, u32) -> Result<T>,
    ) -> Result<T> {
        let inner = self.inner();
        // Pick the first wrapped key whose master key this ring holds.
        let chosen = header.as_ref().map_err(Clone::clone).and_then(|h| {
            h.wrapped_keys
                .iter()
                .filter_map(|w| blob::parse(w).ok())
                .find(|b| matches!(inner.store.get_key(&b.key_id), Ok(Some(_))))
                .ok_or(Error::DecryptionFailed)
        });
        let target = Target::Id(
            chosen
                .as_ref()
                .map(|b| b.key_id.clone())
                .map_err(Clone::clone),
        );
        // Authorize against the message's stored context: the data key is
        // bound to it, so a forged header context cannot open anything.
        let authz_context = header.as_ref().map(|h| h.context.clone()).ok();
        self.run(
            Action::Decrypt,
            target,
            Some(authz_context.as_ref().unwrap_or(context)),
            |m| {
                let h = header?;
                let wrapped = chosen?;
                let ok = match mode {
                    ContextMatch::Exact => h.context == *context,
                    ContextMatch::Contains => h.context.contains_all(context),
                };
                if !ok {
                    return Err(Error::DecryptionFailed);
                }
                let ctx = h
                    .context
                    .canonical_bytes()
                    .map_err(|_| Error::DecryptionFailed)?;
                let dk = match inner.decrypt_blob(need(m)?, &wrapped, &ctx) {
                    Ok(dk) if dk.len() == 32 => dk,
                    Ok(_) | Err(Error::DecryptionFailed) | Err(Error::KeyNotFound(_)) => {
                        return Err(Error::DecryptionFailed);
                    }
                    Err(e) => return Err(e),
                };
                let derived = message::verify_header(&h, dk.expose_secret())?;
                then(&h, derived, wrapped.key_id.clone(), wrapped.version)
            },
        )
    }

    // ---- randomness -------------------------------------------------------

    /// 1 to 1024 random bytes from the ring's generator.
    pub fn generate_random(&self, len: usize) -> Result<SecretBytes> {
        self.run(Action::GenerateRandom, Target::Ring, None, |_| {
            if len == 0 || len > MAX_RANDOM_LEN {
                return Err(Error::invalid(format!(
                    "random length must be 1 to {MAX_RANDOM_LEN} bytes"
                )));
            }
            let mut buf = vec![0u8; len];
            self.inner().rng.fill(&mut buf)?;
            Ok(SecretBytes::new(buf))
        })
    }
}
