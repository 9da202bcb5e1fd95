//! The [`KeyRing`] facade, its builder and the caller handle [`Client`].
//!
//! The one pipeline every operation goes through is in `pipeline.rs`;
//! the operations are grouped by family, one file each: `keys.rs` (keys,
//! aliases, tags), `crypto.rs` (direct encryption, data keys, random),
//! `messages.rs` (envelope messages, streamed too), `ranged.rs` (ranged
//! open), `rewrap.rs` (rewrap without re-encryption), `asymmetric.rs`
//! (signing, MACs, HPKE, data key pairs), `import.rs` (bring your own key), `access.rs` (policies and
//! grants), `lifecycle.rs` (enable, disable, deletion, maintenance),
//! `rotation.rs` (versions, floors), `replica.rs` (multi-region keys), `secrets.rs` (the secrets store), `ssh.rs` (OpenSSH keys, SSHSIG), `usage.rs` (the usage meter) and
//! `audit.rs` (the recording step).

use crate::backend::{KeyBackend, MemoryBackend};
use crate::clock::{Clock, SystemClock};

mod access;
mod asymmetric;
mod audit;
mod crypto;
mod dkcache;
#[cfg(feature = "esdk")]
mod esdk;
mod file;
pub mod identity;
mod import;
mod keys;
mod lifecycle;
pub mod managed;
mod messages;
mod options;
mod pipeline;
#[cfg(feature = "postgres")]
mod postgres;
mod ranged;
pub mod replica;
mod rewrap;
mod rotation;
pub mod secrets;
mod ssh;
mod usage;

use crate::crypto::CryptoProvider;
use crate::key::{Alias, KeyId};
use crate::principal::Principal;
use crate::random::RandomSource;
use crate::store::{MemoryStore, MetadataStore};
pub use access::GrantSelector;
pub use asymmetric::{DataKeyPair, DataKeyPairSpec, PublicKeyInfo};
pub use audit::{ACTION_DELETE_KEY, ACTION_ROTATE_KEY, SYSTEM_PRINCIPAL, VersionUsage};
pub use dkcache::DataKeyCacheLimits;
pub use import::ImportParameters;
pub use lifecycle::MaintenanceReport;
pub use messages::MessageInfo;
pub use options::{
    CreatedGrant, DEFAULT_PAGE_LIMIT, EnableRotationOptions, ExplainOptions, ListAliasesOptions,
    ListOptions, PutKeyPolicyOptions, ScheduleDeletionOptions, SignOptions, VersionFloors,
};
pub use replica::{ReplicaOptions, ReplicaStatus};
pub use rewrap::RewrapOptions;
pub use rotation::RotationStatus;
use std::fmt;
use std::sync::Arc;

pub(crate) use crate::limits::MAX_PAGE_LIMIT;
pub(crate) use crate::limits::MAX_RANDOM_LEN;

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
    /// The primitives of the ring's own cryptography (envelope messages,
    /// signature verification, the default backend).
    provider: CryptoProvider,
    /// Encryptions per key version since this ring started (metering).
    usage: usage::UsageMeter,
    /// Serializes rotations and deletions within this ring.
    rotation_lock: std::sync::Mutex<()>,
    /// Decides ring-wide actions (no key).
    ring_policy: crate::policy::Policy,
    /// Audit sinks, the failure policy, whether context values are recorded.
    audit: audit::AuditConfig,
    /// Pending key imports and cached verifiers.
    asym: asymmetric::AsymmetricState,
    /// Threads that seal and open the frames of one large message.
    threads: usize,
    /// The data-key cache, if the ring has one.
    dk_cache: Option<dkcache::DataKeyCache>,
    /// The ring's region, for multi-region keys ([`KeyRingBuilder::region`]).
    region: Option<String>,
    /// The ring's account ([`KeyRingBuilder::account`]).
    account: crate::principal::AccountId,
    /// Snapshots of principals' identity policies.
    identity: identity::IdentityCache,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("backend", &self.inner.backend.name())
            .field("crypto_provider", &self.inner.provider)
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

    /// A handle that performs operations as `principal`. A principal of the
    /// ring's own account is normalized to its form without an account
    /// (`account:<own id>/user:alice` acts, and is recorded, as
    /// `user:alice`).
    pub fn client(&self, principal: Principal) -> Client {
        Client {
            ring: self.clone(),
            principal: principal.normalized(&self.inner.account),
        }
    }

    /// The ring's account ([`KeyRingBuilder::account`]).
    pub fn account(&self) -> &crate::principal::AccountId {
        &self.inner.account
    }

    /// The ring's crypto provider ([`KeyRingBuilder::crypto_provider`]).
    pub fn crypto_provider(&self) -> CryptoProvider {
        self.inner.provider
    }

    /// The name of the ring's backend.
    pub fn backend_name(&self) -> &str {
        self.inner.backend.name()
    }

    /// The ring's region ([`KeyRingBuilder::region`]), if it has one.
    pub fn region(&self) -> Option<&str> {
        self.inner.region.as_deref()
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
/// store, system clock, the default crypto provider and its random
/// generator (the OS's).
#[derive(Default)]
pub struct KeyRingBuilder {
    backend: Option<Arc<dyn KeyBackend>>,
    store: Option<Arc<dyn MetadataStore>>,
    clock: Option<Arc<dyn Clock>>,
    rng: Option<Arc<dyn RandomSource>>,
    provider: Option<CryptoProvider>,
    encryption_limit: Option<u64>,
    ring_policy: Option<crate::policy::Policy>,
    audit_sinks: Vec<Arc<dyn crate::audit::AuditSink>>,
    audit_failure: crate::audit::FailurePolicy,
    audit_context_values: bool,
    threads: Option<usize>,
    dk_cache: Option<dkcache::DataKeyCacheLimits>,
    region: Option<String>,
    account: Option<crate::principal::AccountId>,
    identity_refresh: Option<std::time::Duration>,
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

    /// The crypto provider for every cryptographic operation of the ring:
    /// envelope messages (key derivation, key commitment and the body AEAD),
    /// signature verification, and, if no backend is given, the default
    /// memory backend's keys; its [`CryptoProvider::random`] is the default
    /// random source. Default [`CryptoProvider::default`] (pure Rust). A
    /// backend given with [`KeyRingBuilder::backend`] keeps its own (e.g.
    /// [`crate::backend::MemoryBackend::with_crypto_provider`]). Every
    /// provider reads and writes the same bytes, so rings with different
    /// providers open each other's messages.
    pub fn crypto_provider(mut self, provider: CryptoProvider) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Encryptions per key version after which the ring rotates the key
    /// (default [`crate::limits::DEFAULT_ENCRYPTION_LIMIT`], below the 2^32 random-nonce
    /// bound of NIST SP 800-38D). Lower it to test the guard.
    pub fn encryption_limit(mut self, limit: u64) -> Self {
        self.encryption_limit = Some(limit.max(1));
        self
    }

    /// The policy deciding ring-wide actions ([`crate::policy::Policy::RING_ACTIONS`]:
    /// `CreateKey`, `ImportKeyMaterial` and `GetParametersForImport` for new
    /// keys, `ListKeys`, `ListAliases` without a key, `GenerateRandom`,
    /// `ListSecrets`).
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

    /// Threads that encrypt and decrypt the frames of one large message
    /// ([`Client::seal`], [`Client::open`] and their variants) at once.
    /// Default: the available cores
    /// ([`std::thread::available_parallelism`]); `1` keeps every call on
    /// the caller's thread. Messages under 512 KiB always stay on the
    /// caller's thread. The output format does not depend on it.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// Turns on the data-key cache with these limits (off by default): a
    /// wrapped data key serves several [`Client::seal`] calls on the same
    /// key, version and context, and an unwrapped one several
    /// [`Client::open`] calls of messages sharing it, saving backend calls.
    /// Every call is still authorized and audited. See
    /// [`DataKeyCacheLimits`] for what bounds the reuse.
    pub fn data_key_cache(mut self, limits: DataKeyCacheLimits) -> Self {
        self.dk_cache = Some(limits);
        self
    }

    /// The ring's region: the name under which its multi-region keys live
    /// ([`crate::keyring::replica`]), for example `"eu-west-1"`: 1 to 64
    /// characters of `[a-z0-9-]`, different for every ring (and key store)
    /// that holds replicas of one key. Without a region the ring refuses to
    /// create, replicate or receive multi-region keys; every other operation
    /// works. A bad name is reported by the first multi-region operation.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The ring's account (default [`crate::principal::AccountId::DEFAULT`],
    /// `000000000000`). Principals written without an account, and key
    /// policy patterns without one, are in this account; principals of
    /// other accounts need both a key policy naming them (or their account)
    /// and an allow in their own identity policies
    /// ([`crate::policy::decide_with`]). Rings sharing a store should agree
    /// on it.
    pub fn account(mut self, account: crate::principal::AccountId) -> Self {
        self.account = Some(account);
        self
    }

    /// How old a snapshot of a principal's identity policies may get
    /// before the ring checks the store again (default one second;
    /// `Duration::ZERO` reads the store on every decision). Changes made
    /// through this ring are seen at once; this bounds how long a change
    /// made by another ring or process on the same store takes to apply.
    /// See [`crate::keyring::identity`].
    pub fn identity_policy_refresh(mut self, interval: std::time::Duration) -> Self {
        self.identity_refresh = Some(interval);
        self
    }

    /// Builds the ring.
    pub fn build(self) -> KeyRing {
        let provider = self.provider.unwrap_or_default();
        let rng: Arc<dyn RandomSource> = self.rng.unwrap_or_else(|| provider.random());
        let backend = self.backend.unwrap_or_else(|| {
            Arc::new(MemoryBackend::with_random(rng.clone()).with_crypto_provider(provider))
        });
        KeyRing {
            inner: Arc::new(Inner {
                backend,
                store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                rng,
                provider,
                usage: usage::UsageMeter::new(
                    self.encryption_limit
                        .unwrap_or(crate::limits::DEFAULT_ENCRYPTION_LIMIT),
                ),
                rotation_lock: std::sync::Mutex::new(()),
                ring_policy: self
                    .ring_policy
                    .unwrap_or_else(crate::policy::Policy::open_ring),
                asym: asymmetric::AsymmetricState::default(),
                dk_cache: self.dk_cache.map(dkcache::DataKeyCache::new),
                threads: self.threads.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
                }),
                audit: audit::AuditConfig::new(
                    self.audit_sinks,
                    self.audit_failure,
                    self.audit_context_values,
                ),
                region: self.region,
                account: self.account.unwrap_or_default(),
                identity: identity::IdentityCache::new(
                    self.identity_refresh.unwrap_or(identity::DEFAULT_REFRESH),
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

    /// The principal this client acts as.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}
