//! Access-control operations: key policies, grants, and explain.

use super::{Client, CreatedGrant, ExplainOptions, PutKeyPolicyOptions};
use crate::action::Action;
use crate::error::{Error, Result};
use crate::key::KeyRef;
use crate::policy::{Decision, Grant, GrantRequest, GrantToken, Policy, token_hash};
use crate::principal::Principal;
use crate::random::random_array;

pub(crate) use crate::limits::MAX_GRANTS_PER_KEY;

/// Which grant to retire.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum GrantSelector {
    /// By grant id.
    Id(String),
    /// By the token returned at creation.
    Token(GrantToken),
}

use crate::hex::encode as hex;

impl Client {
    /// Replaces the key's policy after validating it.
    ///
    /// Lockout safety: the change is refused unless the caller could still
    /// call `PutKeyPolicy` under the new policy (with its identity policies,
    /// as AWS KMS checks), so a key
    /// cannot be left with nobody able to change its policy by accident.
    /// [`PutKeyPolicyOptions::bypass_policy_lockout_safety_check`] skips that
    /// check.
    pub fn put_key_policy<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        policy: &Policy,
        options: PutKeyPolicyOptions,
    ) -> Result<()> {
        self.on_key(Action::PutKeyPolicy, key, None, |_, meta| {
            policy.validate()?;
            if !options.bypass_policy_lockout_safety_check
                && !self
                    .inner()
                    .decide_as(
                        self.principal(),
                        Action::PutKeyPolicy,
                        Some(meta),
                        None,
                        Some(policy),
                    )?
                    .allowed
            {
                return Err(Error::invalid(format!(
                    "the new policy would not let {} call PutKeyPolicy again (lockout); \
                     set PutKeyPolicyOptions::bypass_policy_lockout_safety_check to force it",
                    self.principal()
                )));
            }
            self.inner().store.put_policy(&meta.key_id, Some(policy))
        })
    }

    /// The key's policy (the default one if none was put).
    pub fn get_key_policy<'k>(&self, key: impl Into<KeyRef<'k>>) -> Result<Policy> {
        self.on_key(Action::GetKeyPolicy, key, None, |_, meta| {
            Ok(meta
                .access
                .policy
                .clone()
                .unwrap_or_else(|| Policy::default_for(&meta.created_by)))
        })
    }

    /// Creates a grant and returns its id and token. The grant allows its
    /// grantee the listed operations on this key, within its constraints,
    /// until it expires or is retired or revoked; it never overrides a Deny.
    pub fn create_grant<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        request: GrantRequest,
    ) -> Result<CreatedGrant> {
        self.on_key(Action::CreateGrant, key, None, |_, meta| {
            let inner = self.inner();
            if request.operations.is_empty() {
                return Err(Error::invalid("a grant needs at least one operation"));
            }
            if let Some(bad) = request.operations.iter().find(|a| !a.is_grantable()) {
                return Err(Error::invalid(format!(
                    "{bad} cannot be granted: grants allow cryptographic operations, DescribeKey and RetireGrant"
                )));
            }
            let now = inner.clock.now();
            if request.expires_at.is_some_and(|t| t <= now) {
                return Err(Error::invalid("grant expiry must be in the future"));
            }
            if let Some(c) = &request.constraints {
                for ctx in [&c.context_equals, &c.context_subset].into_iter().flatten() {
                    ctx.validate()?;
                }
            }
            if request.name.as_ref().is_some_and(|n| n.is_empty() || n.len() > 256) {
                return Err(Error::invalid("grant name must be 1 to 256 bytes"));
            }
            let grant_id = hex(&random_array::<16>(inner.rng.as_ref())?);
            let token = GrantToken(format!("srgt_{}", hex(&random_array::<32>(inner.rng.as_ref())?)));
            let mut ops = request.operations.clone();
            ops.sort();
            ops.dedup();
            // Principals of the ring's own account are stored without it,
            // as the decision looks them up.
            let own = &inner.account;
            let grant = Grant {
                grant_id: grant_id.clone(),
                name: request.name.clone(),
                grantee: request.grantee.clone().normalized(own),
                retiring_principal: request
                    .retiring_principal
                    .clone()
                    .map(|p| p.normalized(own)),
                operations: ops,
                constraints: request.constraints.clone(),
                expires_at: request.expires_at,
                created_at: now,
                created_by: self.principal().clone(),
                token_hash: token_hash(token.expose_secret()),
            };
            // Expired grants are dropped whenever grants change.
            inner
                .store
                .add_grant(&meta.key_id, &grant, MAX_GRANTS_PER_KEY, now)?;
            Ok(CreatedGrant {
                grant_id,
                grant_token: token,
            })
        })
    }

    /// The key's grants (expired ones included until they are cleaned up).
    pub fn list_grants<'k>(&self, key: impl Into<KeyRef<'k>>) -> Result<Vec<Grant>> {
        self.on_key(Action::ListGrants, key, None, |_, m| {
            Ok(self
                .inner()
                .store
                .list_grants(&m.key_id)?
                .unwrap_or_default())
        })
    }

    /// Retires a grant. Allowed to its grantee, its retiring principal, and
    /// anyone the key policy allows `RetireGrant`.
    pub fn retire_grant<'k>(&self, key: impl Into<KeyRef<'k>>, which: GrantSelector) -> Result<()> {
        let key: KeyRef<'k> = key.into();
        // Authorization has two parts: the policy (or a grant allowing
        // RetireGrant), or being the grantee or retiring principal of this
        // very grant. The grant is looked up first so the pipeline can apply
        // the second rule; the removal works on the freshest record.
        let matches = |g: &Grant| match &which {
            GrantSelector::Id(id) => &g.grant_id == id,
            GrantSelector::Token(t) => g.token_matches(t),
        };
        let party_of = self.inner().resolve(key).ok().and_then(|m| {
            m.access
                .grants
                .values()
                .flatten()
                .find(|g| matches(g))
                .map(|g| g.grant_id.clone())
        });
        self.on_key_as_grant_party(Action::RetireGrant, key, party_of.as_deref(), |_, meta| {
            let g = meta
                .access
                .grants
                .values()
                .flatten()
                .find(|g| matches(g))
                .ok_or_else(|| Error::invalid("no such grant on this key"))?;
            remove_grant(self, meta, &g.grant_id)
        })
    }

    /// Revokes a grant by id (a key administrator: needs `RevokeGrant`).
    pub fn revoke_grant<'k>(&self, key: impl Into<KeyRef<'k>>, grant_id: &str) -> Result<()> {
        self.on_key(Action::RevokeGrant, key, None, |_, meta| {
            if !meta
                .access
                .grants
                .values()
                .flatten()
                .any(|g| g.grant_id == grant_id)
            {
                return Err(Error::invalid("no such grant on this key"));
            }
            remove_grant(self, meta, grant_id)
        })
    }

    /// Explains, without doing anything, how a request by `principal` would be
    /// decided: allowed or not, and the statement or grant that decided
    /// ([`crate::policy::Reason`]: which statement of the key policy, which
    /// statement of which identity policy, and for a caller of another
    /// account both halves). Uses `principal`'s identity policies as the
    /// ring sees them. Needs `GetKeyPolicy` on the key (for ring-wide
    /// actions, nothing); and when the answer names an identity policy of a
    /// principal other than the caller, also `GetIdentityPolicy` on that
    /// principal (decided by the ring policy and audited, as
    /// [`Client::get_identity_policy`]): explaining is not a side door to
    /// another principal's policies.
    pub fn explain(
        &self,
        principal: &Principal,
        action: Action,
        options: ExplainOptions,
    ) -> Result<Decision> {
        let context = options.context.as_ref();
        let inner = self.inner();
        let principal = principal.clone().normalized(&inner.account);
        let decision = match options.key.as_deref() {
            None => inner.decide(&principal, action, None, context)?,
            Some(k) => self.on_key(Action::GetKeyPolicy, k, None, |_, m| {
                inner.decide(&principal, action, Some(m), context)
            })?,
        };
        if decision.reason.names_identity_policy() && &principal != self.principal() {
            let ctx = super::identity::management_context(&principal, None);
            self.on_ring(Action::GetIdentityPolicy, Some(&ctx), |_| Ok(()))?;
        }
        Ok(decision)
    }
}

fn remove_grant(c: &Client, meta: &crate::store::KeyMetadata, grant_id: &str) -> Result<()> {
    c.inner().store.remove_grant(&meta.key_id, grant_id)
}
