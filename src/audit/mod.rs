//! The audit trail: one [`AuditEvent`] for every operation attempted on the
//! ring — allowed, denied or failed — delivered to [`AuditSink`]s.
//!
//! Events never carry plaintext, key material, PINs or passphrases: only who
//! did what to which key and version, the outcome, the encryption-context
//! keys (values only if the ring is configured to record them), the grant
//! that allowed it, and a request id.
//!
//! Sinks: [`MemorySink`] (tests), [`JsonlFileSink`] (a hash-chained JSON
//! Lines log with signed digests, verifiable offline by [`verify_log`]), and
//! `TracingSink` behind the `tracing` feature.
//!
//! ## One event per call
//! Every public `Client` call runs the pipeline once and records one event,
//! except calls made of two operations, which record one event per
//! operation: `re_encrypt` (`ReEncryptFrom` on the source key, then
//! `ReEncryptTo` on the destination key), `rewrap_message` (the same two)
//! and `re_encrypt_message` (`Decrypt`, then `GenerateDataKey`).
//! `decrypt_data_key`, `open_range` and `open_range_reader` are one
//! `Decrypt` each (the reader's reads are not audited).
//!
//! ## When a sink fails
//! Fail-closed (the default, [`FailurePolicy::Closed`]): if any sink cannot
//! record the event, the call returns [`crate::Error::AuditUnavailable`]
//! instead of its result, so no plaintext, ciphertext or key id leaves the
//! ring unaudited. A state change the operation already committed (a key
//! created, a policy put) stays committed. Fail-open records what it can
//! and returns the result.
//!
//! [`JsonlFileSink`] hands every event to the operating system (no
//! user-space buffer) before `record` returns, and reports a failed write on
//! that call, so under fail-closed a returned result's event is in the file
//! and survives the process crashing. It is on disk only after the next
//! fsync ([`FsyncPolicy`]): with the default batched fsync, an OS crash or
//! power loss can still lose the events since the last fsync. Use
//! [`FsyncPolicy::EveryEvent`] to close that window. A crash between an
//! operation's state change and its event (a key created, not yet
//! recorded) leaves the change without an event.

mod file;
mod tail;
mod verify;

pub use file::{FsyncPolicy, JsonlFileSink, JsonlOptions};
pub use verify::{Anchor, VerifyError, VerifyReport, verify_log};

/// Names used in events the ring records for its own housekeeping.
pub use crate::keyring::{ACTION_DELETE_KEY, ACTION_ROTATE_KEY, SYSTEM_PRINCIPAL};

use crate::clock::Timestamp;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::sync::Mutex;

/// How an attempted operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result")]
#[non_exhaustive]
pub enum Outcome {
    /// Allowed and completed.
    Allowed,
    /// Refused by access control.
    Denied {
        /// Why, without policy text: the action and key that were refused.
        reason: String,
    },
    /// Allowed (or not yet decided) but failed.
    Failed {
        /// The error kind ([`crate::Error::kind`]).
        error: String,
    },
}

/// One operation attempted on the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// When, on the ring's clock.
    pub time: Timestamp,
    /// A random id, unique per event.
    pub request_id: String,
    /// Who.
    pub principal: String,
    /// The action (`strongroom:Encrypt`).
    pub action: String,
    /// The key, when the operation had one and it could be read.
    pub key_id: Option<String>,
    /// The key version used, for cryptographic operations that reached the key.
    pub key_version: Option<u32>,
    /// How it ended.
    pub outcome: Outcome,
    /// The keys of the request's encryption context.
    pub context_keys: Vec<String>,
    /// The context values, only if the ring records them
    /// ([`crate::KeyRingBuilder::audit_context_values`]).
    pub context_values: Option<Vec<String>>,
    /// The grant that allowed the operation, if a grant did.
    pub grant_id: Option<String>,
    /// True when the data key came from the ring's data-key cache
    /// ([`crate::KeyRingBuilder::data_key_cache`]) instead of a backend
    /// call. Absent from the JSON form when false, so older records read
    /// and verify unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

/// Receives audit events. Implementations must be cheap and thread-safe;
/// an error means the event was not recorded.
pub trait AuditSink: Send + Sync + Debug {
    /// Records one event.
    fn record(&self, event: &AuditEvent) -> Result<()>;

    /// Makes every recorded event durable (and, for signed logs, signs it).
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// What the ring does when a sink cannot record an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// The operation fails with [`crate::Error::AuditUnavailable`]. Default.
    #[default]
    Closed,
    /// The operation's result is returned anyway.
    Open,
}

/// Keeps events in memory. For tests and diagnostics.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<AuditEvent>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event so far, oldest first.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets every event.
    pub fn clear(&self) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl AuditSink for MemorySink {
    fn record(&self, event: &AuditEvent) -> Result<()> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
        Ok(())
    }
}

/// Forwards events to the `tracing` crate (target `strongroom::audit`, level
/// INFO), one structured event each.
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingSink;

#[cfg(feature = "tracing")]
impl AuditSink for TracingSink {
    fn record(&self, e: &AuditEvent) -> Result<()> {
        let outcome = match &e.outcome {
            Outcome::Allowed => "allowed".to_owned(),
            Outcome::Denied { reason } => format!("denied: {reason}"),
            Outcome::Failed { error } => format!("failed: {error}"),
        };
        tracing::info!(
            target: "strongroom::audit",
            time = e.time.as_secs(),
            request_id = %e.request_id,
            principal = %e.principal,
            action = %e.action,
            key_id = e.key_id.as_deref().unwrap_or("-"),
            key_version = e.key_version.unwrap_or(0),
            outcome = %outcome,
            context_keys = ?e.context_keys,
            grant_id = e.grant_id.as_deref().unwrap_or("-"),
            "audit"
        );
        Ok(())
    }
}
