//! Grants: narrow, expiring permissions for one grantee on one key.

use super::Request;
use crate::action::Action;
use crate::clock::Timestamp;
use crate::envelope::EncryptionContext;
use crate::principal::Principal;
use serde::{Deserialize, Serialize};
use std::fmt;
use subtle::ConstantTimeEq;

/// Encryption-context constraints of a grant: the request's context must
/// equal `context_equals` and/or contain `context_subset`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GrantConstraints {
    /// The request's context must be exactly this.
    pub context_equals: Option<EncryptionContext>,
    /// The request's context must contain every pair of this.
    pub context_subset: Option<EncryptionContext>,
}

impl GrantConstraints {
    /// Requires the context to equal `ctx`.
    pub fn context_equals(ctx: EncryptionContext) -> Self {
        GrantConstraints {
            context_equals: Some(ctx),
            context_subset: None,
        }
    }

    /// Requires the context to contain `ctx`.
    pub fn context_subset(ctx: EncryptionContext) -> Self {
        GrantConstraints {
            context_equals: None,
            context_subset: Some(ctx),
        }
    }
}

/// A grant on a key. It only allows: it never overrides an explicit Deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Grant {
    /// The grant's id.
    pub grant_id: String,
    /// Optional name.
    pub name: Option<String>,
    /// Who it allows.
    pub grantee: Principal,
    /// Who (besides the grantee) may retire it.
    pub retiring_principal: Option<Principal>,
    /// The operations it allows.
    pub operations: Vec<Action>,
    /// Context constraints.
    pub constraints: Option<GrantConstraints>,
    /// When it stops allowing anything, on the ring's clock.
    pub expires_at: Option<Timestamp>,
    /// When it was made.
    pub created_at: Timestamp,
    /// Who made it.
    pub created_by: Principal,
    /// SHA-256 of the grant token (the token itself is never stored).
    pub(crate) token_hash: [u8; 32],
}

impl Grant {
    /// True if this grant allows `req` (the grantee is matched by the caller).
    pub(crate) fn allows(&self, req: &Request<'_>) -> bool {
        if !self.operations.contains(&req.action) {
            return false;
        }
        if self.expires_at.is_some_and(|t| req.now >= t) {
            return false;
        }
        match (&self.constraints, req.context) {
            (None, _) => true,
            (Some(c), Some(ctx)) => {
                c.context_equals.as_ref().is_none_or(|e| e == ctx)
                    && c.context_subset
                        .as_ref()
                        .is_none_or(|s| ctx.contains_all(s))
            }
            // Constrained grants allow context-free operations only.
            (Some(_), None) => matches!(req.action, Action::DescribeKey | Action::RetireGrant),
        }
    }

    /// Constant-time check of a presented token.
    pub(crate) fn token_matches(&self, token: &GrantToken) -> bool {
        let h = token_hash(&token.0);
        bool::from(h.ct_eq(&self.token_hash))
    }
}

pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A grant token: proof of a grant, accepted by `retire_grant`. Treat it as
/// a secret; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct GrantToken(pub(crate) String);

impl GrantToken {
    /// The token text, to hand to the grantee.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Wraps a token text received from elsewhere.
    pub fn from_string(s: String) -> Self {
        GrantToken(s)
    }
}

impl fmt::Debug for GrantToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GrantToken(<redacted>)")
    }
}

/// What [`crate::Client::create_grant`] should create.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GrantRequest {
    /// Who the grant allows.
    pub grantee: Principal,
    /// The operations (cryptographic operations, `DescribeKey`, `RetireGrant`).
    pub operations: Vec<Action>,
    /// Context constraints.
    pub constraints: Option<GrantConstraints>,
    /// Who besides the grantee may retire it.
    pub retiring_principal: Option<Principal>,
    /// Expiry, on the ring's clock.
    pub expires_at: Option<Timestamp>,
    /// Optional name.
    pub name: Option<String>,
}

impl GrantRequest {
    /// A grant of `operations` to `grantee`.
    pub fn new(grantee: Principal, operations: &[Action]) -> Self {
        GrantRequest {
            grantee,
            operations: operations.to_vec(),
            constraints: None,
            retiring_principal: None,
            expires_at: None,
            name: None,
        }
    }

    /// Adds context constraints.
    pub fn constraints(mut self, c: GrantConstraints) -> Self {
        self.constraints = Some(c);
        self
    }

    /// Sets the retiring principal.
    pub fn retiring_principal(mut self, p: Principal) -> Self {
        self.retiring_principal = Some(p);
        self
    }

    /// Sets the expiry.
    pub fn expires_at(mut self, t: Timestamp) -> Self {
        self.expires_at = Some(t);
        self
    }

    /// Sets the name.
    pub fn name(mut self, n: impl Into<String>) -> Self {
        self.name = Some(n.into());
        self
    }
}
