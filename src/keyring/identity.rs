//! Identity policies: attach, read, detach and list them
//! ([`Client::put_identity_policy`] and its siblings), and the snapshot the
//! pipeline decides with.
//!
//! A principal's identity policies are kept in one record of the store's
//! generic record facility ([`crate::store::MetadataStore::get_record`]):
//! kind [`IDENTITY_RECORD_KIND`], named by the principal's text as the ring
//! sees it (without an account for the ring's own account; see
//! docs/FORMAT.md, "Identity policy record"). Changes are compare-and-set on
//! the record's revision, so two rings (or processes) sharing a store never
//! lose each other's changes, and every ring sees them.
//!
//! The decision on every call needs the caller's identity policies (an
//! explicit Deny there wins), so the ring keeps a snapshot per principal and
//! re-reads the record only when the snapshot is older than
//! [`crate::KeyRingBuilder::identity_policy_refresh`] (default one second):
//! changes made through this ring are seen at once, changes made by another
//! ring on the same store within that interval. A store without the record
//! facility holds no identity policies: callers are decided by key policies
//! and grants alone.

use super::{Client, Inner};
use crate::action::Action;
use crate::envelope::EncryptionContext;
use crate::error::{Error, Result};
use crate::key::Alias;
use crate::limits::MAX_IDENTITY_POLICIES_PER_PRINCIPAL;
use crate::policy::{AttachedPolicy, IdentityPolicy, validate_policy_name};
use crate::principal::Principal;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The record kind holding one principal's identity policies.
pub const IDENTITY_RECORD_KIND: &str = "identity-policy";
/// Encryption-context key of the identity-policy management calls: the
/// principal whose policies are managed (recorded in audit events, and
/// usable in ring-policy conditions).
pub const CONTEXT_IDENTITY_PRINCIPAL: &str = "strongroom:identity-principal";
/// Encryption-context key of the identity-policy management calls: the
/// policy's name (absent for `ListIdentityPolicies`).
pub const CONTEXT_IDENTITY_POLICY: &str = "strongroom:identity-policy";

/// Default age after which a snapshot is checked against the store.
pub(crate) const DEFAULT_REFRESH: Duration = Duration::from_secs(1);
/// Most principals whose snapshots a ring keeps; past it the cache starts
/// over.
const MAX_CACHED_PRINCIPALS: usize = 10_000;
/// Attempts of one read-modify-write before giving up with the conflict.
const CAS_ATTEMPTS: usize = 8;

/// The stored form of a principal's policies.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredPolicies {
    /// Format version: 1.
    v: u32,
    /// Attached policies, in name order.
    policies: Vec<AttachedPolicy>,
}

/// One principal's identity policies as last read.
#[derive(Debug)]
pub(crate) struct Snapshot {
    checked: Instant,
    revision: Option<u64>,
    /// In name order.
    pub(crate) policies: Arc<[AttachedPolicy]>,
    /// Distinct aliases the policies name as resources.
    pub(crate) aliases: Arc<[Alias]>,
}

/// The per-principal snapshots of a ring.
#[derive(Debug)]
pub(crate) struct IdentityCache {
    refresh: Duration,
    entries: RwLock<HashMap<Principal, Arc<Snapshot>>>,
    /// Per-thread snapshots of `entries` (a decision reads no lock and
    /// writes no shared counter); every change of `entries` invalidates.
    local: crate::sync::LocalCache<Principal, Arc<Snapshot>>,
}

impl IdentityCache {
    pub(crate) fn new(refresh: Duration) -> Self {
        IdentityCache {
            refresh,
            entries: RwLock::new(HashMap::new()),
            local: crate::sync::LocalCache::new(),
        }
    }

    fn forget(&self, principal: &Principal) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(principal);
        self.local.invalidate();
    }
}

fn decode(principal: &Principal, bytes: &[u8]) -> Result<Vec<AttachedPolicy>> {
    let stored: StoredPolicies =
        serde_json::from_slice(bytes).map_err(|e| Error::CorruptStore {
            file: format!("{IDENTITY_RECORD_KIND}/{principal}"),
            reason: format!("bad identity policy record: {e}"),
        })?;
    if stored.v != 1 {
        return Err(Error::CorruptStore {
            file: format!("{IDENTITY_RECORD_KIND}/{principal}"),
            reason: format!("unknown identity policy record version {}", stored.v),
        });
    }
    Ok(stored.policies)
}

fn encode(policies: Vec<AttachedPolicy>) -> Result<Vec<u8>> {
    serde_json::to_vec(&StoredPolicies { v: 1, policies }).map_err(|e| Error::Other(Arc::new(e)))
}

impl Inner {
    /// The principal's record, or `None` (also for a store without the
    /// record facility).
    fn identity_record(&self, principal: &Principal) -> Result<Option<crate::store::StoredRecord>> {
        match self
            .store
            .get_record(IDENTITY_RECORD_KIND, &principal.to_string())
        {
            Err(Error::Unsupported(_)) => Ok(None),
            r => r,
        }
    }

    /// The caller's identity policies for a decision: the snapshot if it is
    /// fresh enough, else the store's record (parsed again only if its
    /// revision changed). A store error fails the decision (closed).
    pub(crate) fn identity_of(&self, principal: &Principal) -> Result<Arc<Snapshot>> {
        let cache = &self.identity;
        let old = cache.local.get(
            principal,
            || {
                Ok::<_, Error>(
                    cache
                        .entries
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(principal)
                        .cloned(),
                )
            },
            |s| {
                Arc::new(Snapshot {
                    checked: s.checked,
                    revision: s.revision,
                    policies: Arc::from(s.policies.to_vec()),
                    aliases: Arc::from(s.aliases.to_vec()),
                })
            },
        )?;
        if let Some(s) = &old
            && s.checked.elapsed() < cache.refresh
        {
            return Ok(s.clone());
        }
        let rec = self.identity_record(principal)?;
        let revision = rec.as_ref().map(|r| r.revision);
        let snap = match (&old, rec) {
            (Some(s), _) if s.revision == revision => Snapshot {
                checked: Instant::now(),
                revision,
                policies: s.policies.clone(),
                aliases: s.aliases.clone(),
            },
            (_, None) => Snapshot {
                checked: Instant::now(),
                revision,
                policies: Arc::from(Vec::new()),
                aliases: Arc::from(Vec::new()),
            },
            (_, Some(r)) => {
                let policies = decode(principal, &r.bytes)?;
                let mut aliases: Vec<Alias> = policies
                    .iter()
                    .flat_map(|p| p.policy.aliases())
                    .cloned()
                    .collect();
                aliases.sort();
                aliases.dedup();
                Snapshot {
                    checked: Instant::now(),
                    revision,
                    policies: Arc::from(policies),
                    aliases: Arc::from(aliases),
                }
            }
        };
        let snap = Arc::new(snap);
        let mut entries = cache.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_CACHED_PRINCIPALS && !entries.contains_key(principal) {
            entries.clear();
        }
        entries.insert(principal.clone(), snap.clone());
        drop(entries);
        cache.local.invalidate();
        Ok(snap)
    }

    /// Read-modify-write of a principal's policies, compare-and-set on the
    /// record's revision, retried on a lost race. `change` gets the current
    /// list and returns the new one (`None`: leave the record as it is).
    fn change_identity(
        &self,
        principal: &Principal,
        change: impl Fn(Vec<AttachedPolicy>) -> Result<Option<Vec<AttachedPolicy>>>,
    ) -> Result<()> {
        let name = principal.to_string();
        let mut last = None;
        for _ in 0..CAS_ATTEMPTS {
            let rec = self.store.get_record(IDENTITY_RECORD_KIND, &name)?;
            let current = match &rec {
                Some(r) => decode(principal, &r.bytes)?,
                None => Vec::new(),
            };
            let Some(new) = change(current)? else {
                return Ok(());
            };
            let result = match (&rec, new.is_empty()) {
                (Some(r), true) => {
                    self.store
                        .delete_record(IDENTITY_RECORD_KIND, &name, r.revision)
                }
                (None, true) => Ok(()),
                (r, false) => self
                    .store
                    .put_record_if(
                        IDENTITY_RECORD_KIND,
                        &name,
                        r.as_ref().map(|r| r.revision),
                        &encode(new)?,
                    )
                    .map(drop),
            };
            match result {
                Err(Error::Conflict(m)) => last = Some(m),
                r => {
                    self.identity.forget(principal);
                    return r;
                }
            }
        }
        Err(Error::Conflict(last.unwrap_or_else(|| {
            "identity policies changed concurrently".into()
        })))
    }
}

/// The context recorded for a management call.
pub(crate) fn management_context(principal: &Principal, name: Option<&str>) -> EncryptionContext {
    let ctx = EncryptionContext::new().with(CONTEXT_IDENTITY_PRINCIPAL, principal.to_string());
    match name {
        Some(n) => ctx.with(CONTEXT_IDENTITY_POLICY, n),
        None => ctx,
    }
}

impl Client {
    /// The principal as this ring stores it (without the ring's own account).
    fn normalize(&self, principal: &Principal) -> Principal {
        principal.clone().normalized(&self.inner().account)
    }

    /// Attaches `policy` to `principal` under `name`, replacing a policy of
    /// that name. `principal` may be of any account (a principal of another
    /// account needs an identity policy allowing it before it can use keys
    /// whose policies name it).
    ///
    /// Decided by the ring policy (`PutIdentityPolicy`, which the open ring
    /// policy does not allow: build the ring with
    /// [`crate::KeyRingBuilder::ring_admins`] or a ring policy naming who
    /// administers identities) and audited with the principal and policy
    /// name as context. At most
    /// [`MAX_IDENTITY_POLICIES_PER_PRINCIPAL`] policies per principal, each
    /// at most [`crate::limits::MAX_POLICY_BYTES`] of JSON.
    pub fn put_identity_policy(
        &self,
        principal: &Principal,
        name: &str,
        policy: &IdentityPolicy,
    ) -> Result<()> {
        let target = self.normalize(principal);
        let ctx = management_context(&target, Some(name));
        self.on_ring(Action::PutIdentityPolicy, Some(&ctx), |_| {
            validate_policy_name(name)?;
            policy.validate()?;
            let attached = AttachedPolicy::new(name, policy.clone())?;
            self.inner().change_identity(&target, |mut list| {
                match list.binary_search_by(|p| p.name.as_str().cmp(name)) {
                    Ok(i) => list[i] = attached.clone(),
                    Err(i) => {
                        if list.len() >= MAX_IDENTITY_POLICIES_PER_PRINCIPAL {
                            return Err(Error::invalid(format!(
                                "a principal may have at most \
                                 {MAX_IDENTITY_POLICIES_PER_PRINCIPAL} identity policies"
                            )));
                        }
                        list.insert(i, attached.clone());
                    }
                }
                Ok(Some(list))
            })
        })
    }

    /// The identity policy `name` of `principal` (`GetIdentityPolicy`).
    pub fn get_identity_policy(&self, principal: &Principal, name: &str) -> Result<IdentityPolicy> {
        let target = self.normalize(principal);
        let ctx = management_context(&target, Some(name));
        self.on_ring(Action::GetIdentityPolicy, Some(&ctx), |_| {
            validate_policy_name(name)?;
            let rec = self.inner().identity_record(&target)?;
            let list = match rec {
                Some(r) => decode(&target, &r.bytes)?,
                None => Vec::new(),
            };
            list.into_iter()
                .find(|p| p.name == name)
                .map(|p| p.policy)
                .ok_or_else(|| {
                    Error::invalid(format!("{target} has no identity policy named {name:?}"))
                })
        })
    }

    /// Detaches (deletes) the identity policy `name` of `principal`
    /// (`DeleteIdentityPolicy`). An error if there is none of that name.
    pub fn delete_identity_policy(&self, principal: &Principal, name: &str) -> Result<()> {
        let target = self.normalize(principal);
        let ctx = management_context(&target, Some(name));
        self.on_ring(Action::DeleteIdentityPolicy, Some(&ctx), |_| {
            validate_policy_name(name)?;
            self.inner().change_identity(&target, |mut list| {
                let before = list.len();
                list.retain(|p| p.name != name);
                if list.len() == before {
                    return Err(Error::invalid(format!(
                        "{target} has no identity policy named {name:?}"
                    )));
                }
                Ok(Some(list))
            })
        })
    }

    /// The names of `principal`'s identity policies, in name order
    /// (`ListIdentityPolicies`).
    pub fn list_identity_policies(&self, principal: &Principal) -> Result<Vec<String>> {
        let target = self.normalize(principal);
        let ctx = management_context(&target, None);
        self.on_ring(Action::ListIdentityPolicies, Some(&ctx), |_| {
            Ok(match self.inner().identity_record(&target)? {
                Some(r) => decode(&target, &r.bytes)?
                    .into_iter()
                    .map(|p| p.name)
                    .collect(),
                None => Vec::new(),
            })
        })
    }
}
