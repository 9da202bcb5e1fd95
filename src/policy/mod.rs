//! Access control: key policies, identity policies, grants, and the one
//! decision function.
//!
//! Every operation of the ring is decided by [`decide_with`] before any key
//! material is touched, as AWS KMS decides: an explicit `Deny` anywhere (the
//! key policy, or the caller's identity policies) beats everything; inside
//! the key's account a key-policy `Allow` naming the caller allows, and so
//! does an identity-policy `Allow` when the key policy delegates to the
//! account (`"Principal": "account:<id>"`); a caller of another account
//! needs both a key-policy `Allow` naming it (or its account) and an `Allow`
//! in its own identity policies; then a live grant allows; anything else is
//! denied (deny by default). Ring-wide actions ([`Policy::RING_ACTIONS`]:
//! `CreateKey`, `ListKeys`, `ListAliases` without a key, `GenerateRandom`,
//! `ListSecrets`, and `GetParametersForImport` / `ImportKeyMaterial` for a new key)
//! and the identity-policy management actions
//! ([`crate::Action::IDENTITY_POLICY_ACTIONS`]) are decided the same way with
//! the ring policy ([`crate::KeyRingBuilder::ring_policy`]) in place of a key
//! policy; every other action by the key's policy, the caller's identity
//! policies and the key's grants. [`Reason`] names what decided: which
//! statement of the key policy, which statement of which identity policy,
//! and for a caller of another account both halves.
//!
//! ## Accounts
//!
//! A ring belongs to one account ([`crate::KeyRingBuilder::account`], 12
//! digits, default `000000000000`). A principal is `kind:name` in the ring's
//! account, or `account:<id>/kind:name` in account `<id>`
//! ([`crate::Principal`]); the ring's own id is the same as none.
//!
//! ## Identity policies
//!
//! Named documents attached to a principal of any account
//! ([`crate::Client::put_identity_policy`]): the statement language of key
//! policies with `Resource` (key ids, `alias/...`, key id prefixes such as
//! `mrk-*`, or `*`) in place of `Principal` ([`IdentityPolicy`]). Only
//! `Resource: "*"` matches the ring-wide actions. At most
//! [`crate::limits::MAX_IDENTITY_POLICIES_PER_PRINCIPAL`] per principal.
//!
//! ## Policy documents
//!
//! JSON close to an AWS key policy:
//!
//! ```json
//! {
//!   "Version": "2026-01-01",
//!   "Statement": [
//!     { "Sid": "Admins", "Effect": "Allow", "Principal": "role:admin",
//!       "Action": "strongroom:*" },
//!     { "Sid": "BillingUse", "Effect": "Allow", "Principal": ["service:billing"],
//!       "Action": ["strongroom:Encrypt", "strongroom:Decrypt", "strongroom:GenerateDataKey*"],
//!       "Condition": { "StringEquals": { "strongroom:EncryptionContext:tenant": "acme" } } },
//!     { "Sid": "NoDeletion", "Effect": "Deny", "Principal": "*",
//!       "Action": "strongroom:ScheduleKeyDeletion" }
//!   ]
//! }
//! ```
//!
//! - `Principal`: `"*"` (everyone, of every account), a kind wildcard
//!   (`"user:*"`, `"service:*"`, `"role:*"`), a prefix wildcard
//!   (`"user:ops-*"`), or an exact principal, all in the ring's account;
//!   any of those in another account (`"account:444455556666/role:*"`);
//!   or a whole account (`"account:444455556666"`: in an `Allow` it
//!   delegates to that account's identity policies, in a `Deny` it denies
//!   all its principals) ([`PrincipalPattern`]); a string or a list.
//!   Principal names are case-sensitive.
//! - `Action`: action names ([`crate::Action::as_str`], e.g.
//!   `strongroom:Encrypt`) with `*` wildcards (`strongroom:*`,
//!   `strongroom:Generate*`); a string or a list. Matching is
//!   case-insensitive, as in AWS. A pattern that names no action is an error.
//! - `Condition` (all must hold), operators:
//!   - `StringEquals`: `strongroom:EncryptionContext:<key>` (the request's
//!     context value), `strongroom:KeyUsage`, `strongroom:KeySpec`; the value
//!     is a string or a list of accepted strings;
//!   - `EncryptionContextEquals` / `EncryptionContextSubset`: a map the
//!     request's context must equal / contain;
//!   - `EncryptionContextKeysPresent`: a list of keys the context must have;
//!   - `DateLessThan` / `DateGreaterThan`: `strongroom:CurrentTime`, in Unix
//!     seconds on the ring's clock.
//!
//! Unknown fields, operators, condition keys, principals or actions are
//! refused with [`crate::Error::InvalidArgument`] naming them; a policy is at
//! most [`crate::limits::MAX_POLICY_BYTES`] of JSON.

mod document;
mod grant;
mod identity;

pub use document::{
    Condition, ConditionValue, Effect, OneOrMany, Policy, PrincipalPattern, Statement,
};
pub(crate) use grant::token_hash;
pub use grant::{Grant, GrantConstraints, GrantRequest, GrantToken};
pub(crate) use identity::Resource;
pub use identity::{
    AttachedPolicy, IdentityPolicy, IdentityStatement, ResourcePattern, validate_policy_name,
};

use crate::action::Action;
use crate::clock::Timestamp;
use crate::envelope::EncryptionContext;
use crate::key::Alias;
use crate::key::KeyRecord;
use crate::principal::{AccountId, Principal};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A key's access part: its policy and its grants, kept apart from the key's
/// record ([`crate::key::KeyRecord`]) so that a store can read and change them on
/// their own (one grant without rewriting the others) and load them only for
/// the decision that needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyAccess {
    /// The key policy; `None` means the default policy (the creator has full
    /// control, [`Policy::default_for`]).
    #[serde(default)]
    pub policy: Option<Policy>,
    /// Live grants, indexed by grantee.
    #[serde(default)]
    pub grants: BTreeMap<Principal, Vec<Grant>>,
}

impl KeyAccess {
    /// An access part with `policy` and no grants.
    pub fn new(policy: Option<Policy>) -> Self {
        KeyAccess {
            policy,
            grants: BTreeMap::new(),
        }
    }

    /// Every grant, grantee by grantee.
    pub fn all_grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.values().flatten()
    }

    /// How many grants there are.
    pub fn grant_count(&self) -> usize {
        self.grants.values().map(Vec::len).sum()
    }

    /// Adds `grant` after dropping expired grants; refuses past `limit`.
    pub fn add_grant(&mut self, grant: Grant, limit: usize, now: Timestamp) -> crate::Result<()> {
        for list in self.grants.values_mut() {
            list.retain(|g| g.expires_at.is_none_or(|t| t > now));
        }
        self.grants.retain(|_, l| !l.is_empty());
        if self.grant_count() >= limit {
            return Err(crate::Error::InvalidArgument(format!(
                "a key may hold at most {limit} grants"
            )));
        }
        self.grants
            .entry(grant.grantee.clone())
            .or_default()
            .push(grant);
        Ok(())
    }

    /// Removes the grant `grant_id`; true if it was there.
    pub fn remove_grant(&mut self, grant_id: &str) -> bool {
        let before = self.grant_count();
        for list in self.grants.values_mut() {
            list.retain(|g| g.grant_id != grant_id);
        }
        self.grants.retain(|_, l| !l.is_empty());
        self.grant_count() != before
    }
}

/// One request to decide.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The caller.
    pub principal: &'a Principal,
    /// What it wants to do.
    pub action: Action,
    /// The request's encryption context, if the operation has one.
    pub context: Option<&'a EncryptionContext>,
    /// The time, on the ring's clock.
    pub now: Timestamp,
}

/// What decided a request.
///
/// Statements are named by their Sid, or `#index` if they have none;
/// identity policies by the name they are attached under. For ring-wide
/// actions (no key) the "key policy" of these variants is the ring policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// An `Allow` statement of the key policy (or of the ring policy, for
    /// ring-wide actions) naming the caller.
    AllowStatement(String),
    /// A `Deny` statement of the key policy (or ring policy).
    DenyStatement(String),
    /// A live grant (its id).
    Grant(String),
    /// Nothing allowed it: deny by default.
    NoMatchingAllow,
    /// A `Deny` statement of one of the caller's identity policies.
    IdentityDenyStatement {
        /// The identity policy's name.
        policy: String,
        /// The statement.
        statement: String,
    },
    /// Inside the key's account: an `Allow` of the caller's identity policy,
    /// effective because the key policy delegates to the account
    /// (`"Principal": "account:<id>"`).
    IdentityAllowStatement {
        /// The key-policy statement that delegates to the account.
        key_statement: String,
        /// The identity policy's name.
        policy: String,
        /// Its allowing statement.
        statement: String,
    },
    /// A caller of another account: the key policy names it (or its account)
    /// and its own identity policy allows; both halves.
    CrossAccountAllow {
        /// The key-policy statement naming the caller or its account.
        key_statement: String,
        /// The identity policy's name.
        policy: String,
        /// Its allowing statement.
        statement: String,
    },
    /// A caller of another account whom the key policy names (or whose
    /// account it names), but none of whose identity policies allows:
    /// denied.
    MissingIdentityAllow {
        /// The key-policy statement naming the caller or its account.
        key_statement: String,
    },
    /// An identity policy allows, but the key policy neither names the
    /// caller (another account) nor delegates to the caller's account:
    /// denied.
    MissingKeyPolicyAllow {
        /// The identity policy's name.
        policy: String,
        /// Its allowing statement.
        statement: String,
    },
}

impl Reason {
    /// True for an explicit `Deny` (of the key policy, the ring policy or an
    /// identity policy): nothing can override it.
    pub fn is_explicit_deny(&self) -> bool {
        matches!(
            self,
            Reason::DenyStatement(_) | Reason::IdentityDenyStatement { .. }
        )
    }

    /// True if the reason names a statement of an identity policy (its
    /// policy name and Sid).
    pub fn names_identity_policy(&self) -> bool {
        matches!(
            self,
            Reason::IdentityDenyStatement { .. }
                | Reason::IdentityAllowStatement { .. }
                | Reason::CrossAccountAllow { .. }
                | Reason::MissingKeyPolicyAllow { .. }
        )
    }
}

/// The identity side of a decision: the ring's account, the identity
/// policies attached to the caller, and which of the aliases those
/// policies name point at the key.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// The ring's own account ([`crate::KeyRingBuilder::account`]).
    pub account: &'a AccountId,
    /// The caller's identity policies, in the order they are weighed.
    pub policies: &'a [AttachedPolicy],
    /// Aliases that point at the key of the request (for `alias/...`
    /// resources).
    pub key_aliases: &'a [Alias],
}

/// The outcome of a decision, with what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// True if the request is allowed.
    pub allowed: bool,
    /// The statement or grant that decided, or the default deny.
    pub reason: Reason,
}

impl Decision {
    fn allow(reason: Reason) -> Self {
        Decision {
            allowed: true,
            reason,
        }
    }

    fn deny(reason: Reason) -> Self {
        Decision {
            allowed: false,
            reason,
        }
    }

    /// The grant id that allowed the request, if a grant did.
    pub fn grant_id(&self) -> Option<&str> {
        match &self.reason {
            Reason::Grant(id) => Some(id),
            _ => None,
        }
    }
}

/// Decides a request against a key (its policy and grants) or, with
/// `key = None`, against the ring policy, for a ring of the default account
/// and a caller without identity policies: explicit Deny wins, then Allow
/// statements, then live grants, else deny. [`decide_with`] with an empty
/// [`Identity`].
pub fn decide(
    ring_policy: &Policy,
    key: Option<(&KeyRecord, &KeyAccess)>,
    req: &Request<'_>,
) -> Decision {
    let account = AccountId::default_account();
    let identity = Identity {
        account: &account,
        policies: &[],
        key_aliases: &[],
    };
    decide_with(ring_policy, key, &identity, req)
}

/// The one decision function of the crate, as in AWS KMS:
///
/// 1. an explicit `Deny` anywhere wins: the key policy (or, with
///    `key = None`, the ring policy) first, then the caller's identity
///    policies;
/// 2. a caller of the ring's own account is allowed by a key-policy
///    `Allow` naming it (`*`, its kind, a prefix, the principal), or by an
///    identity-policy `Allow` when the key policy delegates to the account
///    (an `Allow` for `account:<own id>`);
/// 3. a caller of another account needs both halves: a key-policy `Allow`
///    naming it or its account, and an `Allow` in its own identity
///    policies;
/// 4. otherwise a live grant to the caller allows (whatever its account: a
///    grant alone suffices, as in AWS KMS);
/// 5. else deny.
///
/// Ring-wide actions (`key = None`) are decided the same way with the ring
/// policy in place of a key policy; identity statements match them only
/// through `Resource: "*"`.
pub fn decide_with(
    ring_policy: &Policy,
    key: Option<(&KeyRecord, &KeyAccess)>,
    identity: &Identity<'_>,
    req: &Request<'_>,
) -> Decision {
    let own = identity.account;
    let side = match key {
        None => ring_policy.evaluate_side(req, None, own),
        Some((meta, access)) => match &access.policy {
            Some(p) => p.evaluate_side(req, Some(meta), own),
            // The default policy, [`Policy::default_for`], without building
            // it: one statement allowing the creator every action.
            None => document::KeySide {
                direct: req
                    .principal
                    .same_in(&meta.created_by, own)
                    .then(|| "KeyCreatorFullControl".to_owned()),
                ..Default::default()
            },
        },
    };
    if let Some(sid) = side.deny {
        return Decision::deny(Reason::DenyStatement(sid));
    }
    let resource = match key {
        None => Resource::Ring,
        Some((meta, _)) => Resource::Key(&meta.key_id, identity.key_aliases),
    };
    let ident =
        identity::evaluate_identity(identity.policies, req, resource, key.map(|(meta, _)| meta));
    if let Some((policy, statement)) = ident.deny {
        return Decision::deny(Reason::IdentityDenyStatement { policy, statement });
    }
    let foreign = req.principal.account_or(own) != own;
    if !foreign {
        if let Some(sid) = side.direct {
            return Decision::allow(Reason::AllowStatement(sid));
        }
        if let (Some(key_statement), Some((policy, statement))) =
            (side.account.clone(), ident.allow.clone())
        {
            return Decision::allow(Reason::IdentityAllowStatement {
                key_statement,
                policy,
                statement,
            });
        }
    }
    // Another account: the key half is a statement naming the caller or its
    // account, either way.
    let key_half = if foreign {
        side.direct.or(side.account)
    } else {
        side.account
    };
    if foreign
        && let (Some(key_statement), Some((policy, statement))) =
            (key_half.clone(), ident.allow.clone())
    {
        return Decision::allow(Reason::CrossAccountAllow {
            key_statement,
            policy,
            statement,
        });
    }
    // Grants are indexed by the normalized grantee (no account for the
    // ring's own).
    let normalized;
    let grantee = if req.principal.account() == Some(own) {
        normalized = req.principal.clone().normalized(own);
        &normalized
    } else {
        req.principal
    };
    if let Some((_, access)) = key
        && let Some(grants) = access.grants.get(grantee)
    {
        for g in grants {
            if g.allows(req) {
                return Decision::allow(Reason::Grant(g.grant_id.clone()));
            }
        }
    }
    let reason = match (key_half, ident.allow) {
        (Some(key_statement), None) if foreign => Reason::MissingIdentityAllow { key_statement },
        (None, Some((policy, statement))) => Reason::MissingKeyPolicyAllow { policy, statement },
        _ => Reason::NoMatchingAllow,
    };
    Decision::deny(reason)
}
