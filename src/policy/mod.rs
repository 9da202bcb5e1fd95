//! Access control: key policies, grants, and the one decision function.
//!
//! Every operation of the ring is decided by [`decide`] before any key
//! material is touched: an explicit `Deny` statement beats everything; then a
//! matching `Allow` statement or a live grant allows; anything else is denied
//! (deny by default). Ring-wide actions ([`Policy::RING_ACTIONS`]:
//! `CreateKey`, `ListKeys`, `ListAliases` without a key, `GenerateRandom`,
//! `ListSecrets`, and `GetParametersForImport` / `ImportKeyMaterial` for a new key) are
//! decided by the ring policy ([`crate::KeyRingBuilder::ring_policy`]); every
//! other action by the key's policy and grants alone.
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
//! - `Principal`: `"*"`, a kind wildcard (`"user:*"`, `"service:*"`,
//!   `"role:*"`), a prefix wildcard (`"user:ops-*"`), or an exact principal;
//!   a string or a list. Principal names are case-sensitive.
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

pub use document::{
    Condition, ConditionValue, Effect, OneOrMany, Policy, PrincipalPattern, Statement,
};
pub(crate) use grant::token_hash;
pub use grant::{Grant, GrantConstraints, GrantRequest, GrantToken};

use crate::action::Action;
use crate::clock::Timestamp;
use crate::envelope::EncryptionContext;
use crate::key::KeyRecord;
use crate::principal::Principal;
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
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// An `Allow` statement (its Sid, or `#index` if it has none).
    AllowStatement(String),
    /// A `Deny` statement (its Sid, or `#index`).
    DenyStatement(String),
    /// A live grant (its id).
    Grant(String),
    /// Nothing allowed it: deny by default.
    NoMatchingAllow,
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
/// `key = None`, against the ring policy. The one decision function of the
/// crate: explicit Deny wins, then Allow statements, then live grants, else
/// deny.
pub fn decide(
    ring_policy: &Policy,
    key: Option<(&KeyRecord, &KeyAccess)>,
    req: &Request<'_>,
) -> Decision {
    let Some((meta, access)) = key else {
        return ring_policy.evaluate(req, None);
    };
    let by_policy = match &access.policy {
        Some(p) => p.evaluate(req, Some(meta)),
        // The default policy, [`Policy::default_for`], without building it:
        // one statement allowing the creator every action.
        None if req.principal == &meta.created_by => {
            Decision::allow(Reason::AllowStatement("KeyCreatorFullControl".into()))
        }
        None => Decision::deny(Reason::NoMatchingAllow),
    };
    if by_policy.allowed || matches!(by_policy.reason, Reason::DenyStatement(_)) {
        return by_policy;
    }
    if let Some(grants) = access.grants.get(req.principal) {
        for g in grants {
            if g.allows(req) {
                return Decision::allow(Reason::Grant(g.grant_id.clone()));
            }
        }
    }
    by_policy
}
