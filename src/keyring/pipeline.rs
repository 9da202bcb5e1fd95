//! The one pipeline every operation goes through, in this order:
//!
//! 0. validate the encryption context (before it can reach a decision or
//!    an audit record);
//! 1. resolve the alias / key id (or the key a ciphertext names) to its
//!    record;
//! 2. decide: the principal, the action, the key (its policy and grants) or
//!    the ring policy;
//! 3. due work (a deletion whose date has passed, a rotation that is due) and
//!    the key's state and usage for the action;
//! 4. the work itself (backend, formats), which sees a [`Call`];
//! 5. record one audit event with what the call learned.
//!
//! The work runs only after 1–3 passed, so no key material is touched for a
//! refused request. Operations enter through three typed doors on
//! [`Client`]: [`Client::on_key`] (a key the caller names),
//! [`Client::on_ring`] (no key) and [`Client::on_ciphertext`] (the key a
//! ciphertext names); none of them hands the work a missing key.

use super::{Client, Inner};
use crate::action::Action;
use crate::envelope::EncryptionContext;
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId, KeyRef, KeyState, RotationKind, SymmetricAlgorithm};
use crate::policy::{Decision, Reason};
use crate::principal::Principal;
use crate::store::KeyMetadata;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

/// What an operation acts on, before resolution.
enum Target<'a> {
    /// No key: ring-wide (CreateKey, ListKeys, GenerateRandom).
    Ring,
    /// A key id or alias from the caller.
    Ref(KeyRef<'a>),
    /// A key id read from a ciphertext (an error if the ciphertext is malformed).
    Id(Result<KeyId>),
}

/// One call through the pipeline, as the work sees it: who asks, for what,
/// with which context, and what it used (the key version, for the audit
/// record). Made per call and passed down explicitly.
pub(crate) struct Call<'a> {
    /// The caller.
    pub(crate) principal: &'a Principal,
    /// The action being performed.
    pub(crate) action: Action,
    /// The request's encryption context, if the operation has one.
    pub(crate) context: Option<&'a EncryptionContext>,
    version: Cell<Option<u32>>,
    cached: Cell<bool>,
    /// The key a ring-wide operation made (a replica), for its record.
    made: RefCell<Option<KeyId>>,
}

impl Call<'_> {
    /// Notes the key version the work used; it goes into the audit record.
    pub(crate) fn note_version(&self, version: u32) {
        self.version.set(Some(version));
    }

    /// The key version noted so far.
    pub(crate) fn version(&self) -> Option<u32> {
        self.version.get()
    }

    /// Notes that the work was served from the data-key cache.
    pub(crate) fn note_cached(&self) {
        self.cached.set(true);
    }

    /// Notes the key a ring-wide operation created; it goes into the audit
    /// record (an operation on a named key records that key already).
    pub(crate) fn note_key(&self, key_id: &KeyId) {
        *self.made.borrow_mut() = Some(key_id.clone());
    }
}

/// The random bytes an operation usually draws, asked of the OS at once
/// (more are drawn directly, fewer are wiped unused).
fn random_bytes(action: Action) -> usize {
    match action {
        // Data key (32) + the wrap's nonce (12) + a message id (32).
        Action::GenerateDataKey | Action::GenerateDataKeyWithoutPlaintext => 76,
        // A nonce.
        Action::Encrypt => 12,
        _ => 64,
    }
}

/// What the pipeline learned about one operation, for its event.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub key_id: Option<KeyId>,
    pub key_version: Option<u32>,
    pub grant_id: Option<String>,
    pub cached: bool,
}

impl Inner {
    /// Runs the pipeline for `target`; `party_of` names a grant whose
    /// grantee or retiring principal is also allowed (the rule of
    /// `RetireGrant`; an explicit Deny still wins).
    fn run<T>(
        &self,
        principal: &Principal,
        action: Action,
        target: Target<'_>,
        context: Option<&EncryptionContext>,
        party_of: Option<&str>,
        work: impl FnOnce(&Call<'_>, Option<&Arc<KeyMetadata>>) -> Result<T>,
    ) -> Result<T> {
        // The context is checked first, before the decision and before it
        // can reach an audit record: an oversized or malformed context is
        // refused and recorded without its contents.
        if let Some(Err(e)) = context.map(EncryptionContext::validate) {
            return self.record(principal, action, None, &Seen::default(), Err(e));
        }
        let call = Call {
            principal,
            action,
            context,
            version: Cell::new(None),
            cached: Cell::new(false),
            made: RefCell::new(None),
        };
        let mut seen = Seen::default();
        // One OS random call for the whole operation (crate::random): a
        // seal draws a data key, the wrap's nonce and a message id.
        let result = crate::random::with_batch(random_bytes(action), || {
            self.run_steps(&call, target, party_of, &mut seen, work)
        });
        seen.key_version = call.version.get();
        seen.cached = call.cached.get();
        if seen.key_id.is_none() {
            seen.key_id = call.made.take();
        }
        self.record(principal, action, context, &seen, result)
    }

    /// Steps 1–4, without recording.
    fn run_steps<T>(
        &self,
        call: &Call<'_>,
        target: Target<'_>,
        party_of: Option<&str>,
        seen: &mut Seen,
        work: impl FnOnce(&Call<'_>, Option<&Arc<KeyMetadata>>) -> Result<T>,
    ) -> Result<T> {
        let meta = match target {
            Target::Ring => None,
            Target::Ref(r) => Some(self.resolve(r)?),
            Target::Id(id) => Some(self.load(&id?)?),
        };
        seen.key_id = meta.as_ref().map(|m| m.key_id.clone());
        let mut decision =
            self.decide(call.principal, call.action, meta.as_deref(), call.context)?;
        if !decision.allowed
            && !decision.reason.is_explicit_deny()
            && let (Some(grant_id), Some(m)) = (party_of, &meta)
            && m.access.grants.values().flatten().any(|g| {
                g.grant_id == grant_id
                    && (&g.grantee == call.principal
                        || g.retiring_principal.as_ref() == Some(call.principal))
            })
        {
            decision = Decision {
                allowed: true,
                reason: Reason::Grant(grant_id.to_owned()),
            };
        }
        let decision = denial_error(call.principal, call.action, meta.as_deref(), decision)?;
        seen.grant_id = decision.grant_id().map(str::to_owned);
        // Due deletion (the key is gone) and due rotation (a new primary),
        // on the ring's clock.
        let meta = match meta {
            Some(m) => Some(self.apply_due(m, call.action)?),
            None => None,
        };
        if let Some(m) = &meta {
            check_usable(m, call.action)?;
        }
        work(call, meta.as_ref())
    }

    /// The access decision: key policy (or the ring policy for actions on
    /// no key), the caller's identity policies, and grants
    /// ([`crate::policy::decide_with`]). Fails (closed) if the caller's
    /// identity policies cannot be read.
    pub(crate) fn decide(
        &self,
        principal: &Principal,
        action: Action,
        key: Option<&KeyMetadata>,
        context: Option<&EncryptionContext>,
    ) -> Result<Decision> {
        if action == Action::CreateManagedKey && key.is_none() {
            // Not a policy's to decide: a service may ask for its own
            // managed key (the work checks it is its own), nobody else.
            return Ok(if super::managed::may_ask(principal) {
                Decision {
                    allowed: true,
                    reason: Reason::AllowStatement("ManagedKeyService".into()),
                }
            } else {
                Decision {
                    allowed: false,
                    reason: Reason::NoMatchingAllow,
                }
            });
        }
        self.decide_as(principal, action, key, context, None)
    }

    /// [`Inner::decide`] with, optionally, a key policy in place of the
    /// key's own (the lockout check of `PutKeyPolicy`).
    pub(crate) fn decide_as(
        &self,
        principal: &Principal,
        action: Action,
        key: Option<&KeyMetadata>,
        context: Option<&EncryptionContext>,
        policy_override: Option<&crate::policy::Policy>,
    ) -> Result<Decision> {
        let req = crate::policy::Request {
            principal,
            action,
            context,
            now: self.clock.now(),
        };
        let snap = self.identity_of(principal)?;
        // Which of the aliases the caller's policies name point at the key:
        // looked up only when a policy names an alias.
        let mut key_aliases = Vec::new();
        if let Some(k) = key {
            for a in snap.aliases.iter() {
                if self.store.resolve_alias(a)?.as_ref() == Some(&k.key_id) {
                    key_aliases.push(a.clone());
                }
            }
        }
        let identity = crate::policy::Identity {
            account: &self.account,
            policies: &snap.policies,
            key_aliases: &key_aliases,
        };
        let overridden;
        let key = match (key, policy_override) {
            (Some(k), Some(p)) => {
                overridden = crate::policy::KeyAccess {
                    policy: Some(p.clone()),
                    // Grants cannot allow administration: not needed.
                    grants: Default::default(),
                };
                Some((&k.record, &overridden))
            }
            (k, _) => k.map(|k| (&k.record, &k.access)),
        };
        Ok(crate::policy::decide_with(
            &self.ring_policy,
            key,
            &identity,
            &req,
        ))
    }

    /// [`Inner::decide`] as a result: the decision, or
    /// [`Error::AccessDenied`]. For a second key inside an operation's work
    /// (the destination of `ReEncrypt` or `UpdateAlias`).
    pub(crate) fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        key: Option<&KeyMetadata>,
        context: Option<&EncryptionContext>,
    ) -> Result<Decision> {
        let decision = self.decide(principal, action, key, context)?;
        denial_error(principal, action, key, decision)
    }

    /// The pipeline's due-work step: a key pending deletion whose date has
    /// passed is destroyed now (and the call fails with not-found); an enabled
    /// key whose rotation is due is rotated before a cryptographic action.
    pub(crate) fn apply_due(
        &self,
        meta: Arc<KeyMetadata>,
        action: Action,
    ) -> Result<Arc<KeyMetadata>> {
        let now = self.clock.now();
        if let KeyState::PendingDeletion { deletion_date } = meta.state
            && now >= deletion_date
        {
            self.delete_now(&meta)?;
            return Err(Error::KeyNotFound(meta.key_id.to_string()));
        }
        if action.is_cryptographic()
            && meta.state == KeyState::Enabled
            && meta.rotation.is_some_and(|r| now >= r.next_rotation)
        {
            return self.rotate_if_primary(&meta, RotationKind::Automatic);
        }
        Ok(meta)
    }

    pub(crate) fn load(&self, id: &KeyId) -> Result<Arc<KeyMetadata>> {
        self.store
            .get_key(id)?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))
    }

    /// A key by id or alias.
    pub(crate) fn resolve<'k>(&self, key_ref: impl Into<KeyRef<'k>>) -> Result<Arc<KeyMetadata>> {
        let key_ref = key_ref.into().as_str();
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
}

/// A refused decision as [`Error::AccessDenied`], naming the principal,
/// action and key, never the policy text.
fn denial_error(
    principal: &Principal,
    action: Action,
    key: Option<&KeyMetadata>,
    decision: Decision,
) -> Result<Decision> {
    if decision.allowed {
        Ok(decision)
    } else {
        Err(Error::AccessDenied {
            principal: principal.clone(),
            action,
            key_id: key.map(|k| k.key_id.clone()),
        })
    }
}

/// State and usage checks: cryptographic actions need an enabled key of the
/// right usage; management actions work in any state.
pub(crate) fn check_usable(meta: &KeyMetadata, action: Action) -> Result<()> {
    let Some(usage) = action.required_usage() else {
        return Ok(());
    };
    if meta.state != KeyState::Enabled {
        return Err(Error::InvalidKeyState {
            key_id: meta.key_id.clone(),
            state: meta.state,
            action,
        });
    }
    if meta.usage != usage {
        return Err(Error::WrongKeyUsage {
            key_id: meta.key_id.clone(),
            usage: meta.usage,
            action,
        });
    }
    Ok(())
}

/// The symmetric algorithm of an encryption key.
pub(crate) fn symmetric(meta: &KeyMetadata) -> Result<SymmetricAlgorithm> {
    meta.spec.symmetric_algorithm().ok_or_else(|| {
        Error::Unsupported(format!(
            "key {} ({}) is not a symmetric encryption key",
            meta.key_id, meta.spec
        ))
    })
}

/// The one check of a list call's page size.
pub(crate) fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 || limit > crate::limits::MAX_PAGE_LIMIT {
        return Err(Error::invalid(format!(
            "limit must be 1 to {}",
            crate::limits::MAX_PAGE_LIMIT
        )));
    }
    Ok(())
}

/// The key an operation resolved; every door below that names a key
/// resolves one or fails before the work runs.
fn resolved(meta: Option<&Arc<KeyMetadata>>) -> Result<&Arc<KeyMetadata>> {
    meta.ok_or_else(|| Error::KeyNotFound("(none)".into()))
}

impl Client {
    /// A door that names a key: runs the pipeline and hands the work the
    /// resolved key.
    fn keyed<T>(
        &self,
        action: Action,
        target: Target<'_>,
        context: Option<&EncryptionContext>,
        party_of: Option<&str>,
        work: impl FnOnce(&Call<'_>, &Arc<KeyMetadata>) -> Result<T>,
    ) -> Result<T> {
        self.inner().run(
            self.principal(),
            action,
            target,
            context,
            party_of,
            |call, m| work(call, resolved(m)?),
        )
    }

    /// The door for operations on a key the caller names (id or alias).
    pub(crate) fn on_key<'k, T>(
        &self,
        action: Action,
        key: impl Into<KeyRef<'k>>,
        context: Option<&EncryptionContext>,
        work: impl FnOnce(&Call<'_>, &Arc<KeyMetadata>) -> Result<T>,
    ) -> Result<T> {
        self.keyed(action, Target::Ref(key.into()), context, None, work)
    }

    /// The door for ring-wide operations (no key).
    pub(crate) fn on_ring<T>(
        &self,
        action: Action,
        context: Option<&EncryptionContext>,
        work: impl FnOnce(&Call<'_>) -> Result<T>,
    ) -> Result<T> {
        self.inner().run(
            self.principal(),
            action,
            Target::Ring,
            context,
            None,
            |call, _| work(call),
        )
    }

    /// The door for operations on the key a ciphertext names (`key_id` is
    /// the parse result: a malformed ciphertext fails, and is recorded,
    /// without a key).
    pub(crate) fn on_ciphertext<T>(
        &self,
        action: Action,
        key_id: Result<KeyId>,
        context: Option<&EncryptionContext>,
        work: impl FnOnce(&Call<'_>, &Arc<KeyMetadata>) -> Result<T>,
    ) -> Result<T> {
        self.keyed(action, Target::Id(key_id), context, None, work)
    }

    /// [`Client::on_key`] where the grantee or retiring principal of the
    /// grant `party_of` is allowed too (the rule of `RetireGrant`).
    pub(crate) fn on_key_as_grant_party<'k, T>(
        &self,
        action: Action,
        key: impl Into<KeyRef<'k>>,
        party_of: Option<&str>,
        work: impl FnOnce(&Call<'_>, &Arc<KeyMetadata>) -> Result<T>,
    ) -> Result<T> {
        self.keyed(action, Target::Ref(key.into()), None, party_of, work)
    }
}
