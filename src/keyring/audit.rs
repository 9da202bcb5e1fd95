//! The pipeline's recording step: one audit event per operation, and the
//! last use of every key version.

use super::pipeline::Seen;
use super::{Client, Inner, KeyRing};
use crate::action::Action;
use crate::audit::{AuditEvent, AuditSink, FailurePolicy, Outcome};
use crate::backend::MaterialId;
use crate::clock::Timestamp;
use crate::envelope::EncryptionContext;
use crate::error::{Error, Result};
use crate::key::KeyRef;
use crate::principal::Principal;
use crate::random::random_array;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub(crate) struct AuditConfig {
    sinks: Vec<Arc<dyn AuditSink>>,
    failure: FailurePolicy,
    context_values: bool,
    /// Last successful use per key version.
    /// Last successful use per key version (Unix seconds); the map is
    /// write-locked only when a version is first used.
    last_used: RwLock<HashMap<MaterialId, std::sync::atomic::AtomicU64>>,
    /// Unique per ring (process-wide): the ring's key in each thread's
    /// memo of versions noted in the current second.
    id: u64,
    /// Request ids: a random 64-bit prefix per ring, drawn on first use,
    /// and a counter.
    id_prefix: std::sync::OnceLock<u64>,
    id_counter: std::sync::atomic::AtomicU64,
}

impl AuditConfig {
    pub(crate) fn new(
        sinks: Vec<Arc<dyn AuditSink>>,
        failure: FailurePolicy,
        context_values: bool,
    ) -> Self {
        AuditConfig {
            sinks,
            failure,
            context_values,
            last_used: RwLock::new(HashMap::new()),
            id: NEXT_AUDIT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            id_prefix: std::sync::OnceLock::new(),
            id_counter: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A request id unique within this ring (and, with its random prefix,
    /// across rings): 32 hex characters.
    fn next_request_id(&self, rng: &dyn crate::random::RandomSource) -> String {
        let prefix = *self
            .id_prefix
            .get_or_init(|| random_array::<8>(rng).map(u64::from_be_bytes).unwrap_or(0));
        let n = self
            .id_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{prefix:016x}{n:016x}")
    }
}

/// Last use of one key version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VersionUsage {
    /// The version.
    pub version: u32,
    /// When it last encrypted or decrypted something through this ring.
    pub last_used: Option<Timestamp>,
}

/// Versions a thread noted recently: (ring, version) -> key -> second.
type Noted = std::collections::HashMap<(u64, u32), std::collections::HashMap<crate::KeyId, u64>>;

/// Entries a thread keeps in [`NOTED`] before it starts over.
const NOTED_MAX: usize = 1024;

thread_local! {
    static NOTED: std::cell::RefCell<Noted> = std::cell::RefCell::new(Noted::new());
}

static NEXT_AUDIT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Inner {
    fn note_use(&self, key: &crate::KeyId, version: u32, now: Timestamp) {
        use std::sync::atomic::{AtomicU64, Ordering};
        // This thread noted this version in this second already: nothing
        // to write, and nothing shared to read (no lock word touched).
        let seen = NOTED.with(|n| {
            let mut n = n.borrow_mut();
            if n.len() >= NOTED_MAX && !n.contains_key(&(self.audit.id, version)) {
                n.clear();
            }
            let per_key = n.entry((self.audit.id, version)).or_default();
            if per_key.get(key) == Some(&now.as_secs()) {
                return true;
            }
            if per_key.len() >= NOTED_MAX {
                per_key.clear();
            }
            per_key.insert(key.clone(), now.as_secs());
            false
        });
        if seen {
            return;
        }
        let mref = MaterialId::new(key.clone(), version);
        if let Some(t) = self
            .audit
            .last_used
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&mref)
        {
            // Written only when the second changes: a shared cache line
            // that every encryption rewrote would make other cores miss.
            if t.load(Ordering::Relaxed) != now.as_secs() {
                t.store(now.as_secs(), Ordering::Relaxed);
            }
            return;
        }
        self.audit
            .last_used
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(mref)
            .or_insert_with(|| AtomicU64::new(0))
            .store(now.as_secs(), Ordering::Relaxed);
    }

    /// Records the event of one operation and returns its result, or, if a
    /// sink failed and the ring is fail-closed, the audit error instead.
    pub(crate) fn record<T>(
        &self,
        principal: &Principal,
        action: Action,
        context: Option<&EncryptionContext>,
        seen: &Seen,
        result: Result<T>,
    ) -> Result<T> {
        let now = self.clock.now();
        if result.is_ok()
            && let (Some(k), Some(v)) = (&seen.key_id, seen.key_version)
        {
            self.note_use(k, v, now);
        }
        // Any change to a key (policy, grants, state, rotation, deletion,
        // floors) drops its cached data keys.
        if let (Some(cache), Some(k)) = (&self.dk_cache, &seen.key_id)
            && !action.is_cryptographic()
            && result.is_ok()
        {
            cache.purge_key(k);
        }
        if self.audit.sinks.is_empty() {
            return result;
        }
        let outcome = outcome_of(&result);
        let event = AuditEvent {
            time: now,
            request_id: self.audit.next_request_id(self.rng.as_ref()),
            principal: principal.to_string(),
            action: action.as_str().to_owned(),
            key_id: seen.key_id.as_ref().map(|k| k.to_string()),
            key_version: seen.key_version,
            outcome,
            context_keys: context
                .map_or_else(Vec::new, |c| c.iter().map(|(k, _)| k.to_owned()).collect()),
            context_values: if self.audit.context_values {
                context.map(|c| c.iter().map(|(_, v)| v.to_owned()).collect())
            } else {
                None
            },
            grant_id: seen.grant_id.clone(),
            cached: seen.cached,
        };
        match (self.emit(&event), self.audit.failure) {
            (Err(e), FailurePolicy::Closed) => Err(e),
            _ => result,
        }
    }

    /// Records a change the ring made on its own (due deletion, automatic
    /// and usage-limit rotation), by [`SYSTEM_PRINCIPAL`], with its true
    /// outcome. `action` is [`ACTION_DELETE_KEY`] or [`ACTION_ROTATE_KEY`].
    /// Under the fail-closed policy a sink failure is returned (the change
    /// itself has happened; the caller reports it).
    pub(crate) fn record_system<T>(
        &self,
        action: &'static str,
        key_id: &crate::KeyId,
        key_version: Option<u32>,
        result: Result<T>,
    ) -> Result<T> {
        if let Some(cache) = &self.dk_cache {
            cache.purge_key(key_id);
        }
        if self.audit.sinks.is_empty() {
            return result;
        }
        let event = AuditEvent {
            time: self.clock.now(),
            request_id: self.audit.next_request_id(self.rng.as_ref()),
            principal: SYSTEM_PRINCIPAL.to_owned(),
            action: action.to_owned(),
            key_id: Some(key_id.to_string()),
            key_version,
            outcome: outcome_of(&result),
            context_keys: Vec::new(),
            context_values: None,
            grant_id: None,
            cached: false,
        };
        match (self.emit(&event), self.audit.failure) {
            (Err(e), FailurePolicy::Closed) => Err(e),
            _ => result,
        }
    }

    /// Hands one event to every sink; the first failure, if any.
    fn emit(&self, event: &AuditEvent) -> Result<()> {
        let mut failure = None;
        for sink in &self.audit.sinks {
            if let Err(e) = sink.record(event) {
                failure.get_or_insert(e);
            }
        }
        match failure {
            Some(e) => Err(Error::AuditUnavailable(e.to_string())),
            None => Ok(()),
        }
    }
}

/// The principal of events the ring records for its own housekeeping. No
/// caller can act as it: `system` is not a [`crate::principal::PrincipalKind`].
pub const SYSTEM_PRINCIPAL: &str = "system:strongroom";
/// Action name of the event recording a key's destruction after its
/// deletion window (every version's material destroyed, metadata removed).
pub const ACTION_DELETE_KEY: &str = "strongroom:DeleteKey";
/// Action name of the event recording an automatic or usage-limit rotation.
pub const ACTION_ROTATE_KEY: &str = "strongroom:RotateKey";

fn outcome_of<T>(result: &Result<T>) -> Outcome {
    match result {
        Ok(_) => Outcome::Allowed,
        // A denial anywhere in the operation (the pipeline's decision, or a
        // second key's decision inside the work, as for UpdateAlias or
        // ReEncrypt) is recorded as a denial.
        Err(Error::AccessDenied { action, key_id, .. }) => Outcome::Denied {
            reason: format!(
                "no permission for {action} on {}",
                key_id.as_ref().map_or("*", crate::KeyId::as_str)
            ),
        },
        Err(e) => Outcome::Failed {
            error: e.name().to_owned(),
        },
    }
}

impl KeyRing {
    /// Records a request that was refused before it became an operation of
    /// the ring, typically by the authentication of a server in front of it
    /// (a bad signature, an unknown access key, a stale timestamp): one
    /// event with outcome [`Outcome::Denied`], no key, the ring's clock and
    /// request id, handed to every sink.
    ///
    /// `claimed_principal` is whoever the request claimed to be, unverified
    /// (for example `unauthenticated:AKIA...`); `action` names what it
    /// asked for (for example `kms:Encrypt`); `reason` says why it was
    /// refused. None of them may hold a secret: they are written as given.
    /// Returns the sink's error if one failed to record the event
    /// (whatever the ring's [`FailurePolicy`]: the request is refused
    /// anyway, and the caller decides what to report).
    pub fn record_refused_request(
        &self,
        claimed_principal: &str,
        action: &str,
        reason: &str,
    ) -> Result<()> {
        let inner = &self.inner;
        if inner.audit.sinks.is_empty() {
            return Ok(());
        }
        inner.emit(&AuditEvent {
            time: inner.clock.now(),
            request_id: inner.audit.next_request_id(inner.rng.as_ref()),
            principal: claimed_principal.to_owned(),
            action: action.to_owned(),
            key_id: None,
            key_version: None,
            outcome: Outcome::Denied {
                reason: reason.to_owned(),
            },
            context_keys: Vec::new(),
            context_values: None,
            grant_id: None,
            cached: false,
        })
    }
}

impl Client {
    /// When each version of the key was last used (encrypt, decrypt, data
    /// keys, seal, open) through this ring, like KMS GetKeyLastUsage.
    pub fn get_key_last_usage<'k>(&self, key: impl Into<KeyRef<'k>>) -> Result<Vec<VersionUsage>> {
        self.on_key(Action::GetKeyLastUsage, key, None, |_, meta| {
            let map = self
                .inner()
                .audit
                .last_used
                .read()
                .unwrap_or_else(|e| e.into_inner());
            Ok(meta
                .versions
                .iter()
                .map(|v| VersionUsage {
                    version: v.version,
                    last_used: map
                        .get(&MaterialId::new(meta.key_id.clone(), v.version))
                        .map(|t| Timestamp(t.load(std::sync::atomic::Ordering::Relaxed))),
                })
                .collect())
        })
    }

    /// Flushes every audit sink (durability and, for signed logs, a digest).
    pub fn flush_audit(&self) -> Result<()> {
        for s in &self.inner().audit.sinks {
            s.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::KeyRing;
    use crate::audit::{MemorySink, Outcome};
    use std::sync::Arc;

    #[test]
    fn a_refused_request_is_one_denied_event_without_a_key() {
        let sink = Arc::new(MemorySink::new());
        let ring = KeyRing::builder().audit_sink(sink.clone()).build();
        ring.record_refused_request(
            "unauthenticated:AKIAEXAMPLE",
            "kms:Encrypt",
            "InvalidSignatureException",
        )
        .unwrap();
        let events = sink.events();
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(e.principal, "unauthenticated:AKIAEXAMPLE");
        assert_eq!(e.action, "kms:Encrypt");
        assert_eq!(e.key_id, None);
        assert_eq!(
            e.outcome,
            Outcome::Denied {
                reason: "InvalidSignatureException".into()
            }
        );
        assert_eq!(e.request_id.len(), 32);
        // Without a sink there is nothing to record, and no error.
        KeyRing::in_memory()
            .record_refused_request("unauthenticated:x", "kms:ListKeys", "stale")
            .unwrap();
    }
}
