//! Options of [`Client`](super::Client) operations.
//!
//! One style for every operation: required inputs are positional (the key
//! first, then the data, then the encryption context); everything optional
//! goes in the operation's options struct, passed **by value as the last
//! argument** (before an output buffer or writer). Every options struct is
//! `#[non_exhaustive]`, implements `Default` (the documented defaults), and
//! has chainable setters named after its fields, so new options never break
//! callers:
//!
//! ```
//! # use strongroom::keyring::{ListOptions, ScheduleDeletionOptions};
//! let first_page = ListOptions::default().limit(50);
//! let week = ScheduleDeletionOptions::default().pending_window_days(7);
//! # let _ = (first_page, week);
//! ```
//!
//! Results with more than one part are named structs
//! ([`CreatedGrant`], [`Page`](super::Page)), never tuples.

use crate::envelope::EncryptionContext;
use crate::limits::MAX_PAGE_LIMIT;
use crate::policy::GrantToken;
use crate::verify::{MessageType, SignatureFormat};

/// The default page size of list operations (as AWS KMS).
pub const DEFAULT_PAGE_LIMIT: usize = 100;

/// Paging of a list operation: at most `limit` items (1 to
/// [`MAX_PAGE_LIMIT`], default [`DEFAULT_PAGE_LIMIT`]), after `marker` (the
/// `next_marker` of the previous [`Page`](super::Page)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    /// Items per page.
    pub limit: usize,
    /// Where the previous page ended; `None` for the first page.
    pub marker: Option<String>,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            limit: DEFAULT_PAGE_LIMIT,
            marker: None,
        }
    }
}

impl ListOptions {
    /// Sets the page size (checked by the operation: 1 to [`MAX_PAGE_LIMIT`]).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Continues after `marker` (a page's `next_marker`).
    pub fn marker(mut self, marker: impl Into<String>) -> Self {
        self.marker = Some(marker.into());
        self
    }

    /// Continues after `marker` if there is one (convenient in a paging loop).
    pub fn after(mut self, marker: Option<String>) -> Self {
        self.marker = marker;
        self
    }
}

/// Options of [`Client::list_aliases`](super::Client::list_aliases).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListAliasesOptions {
    /// Only the aliases of this key (id or alias); needs `ListAliases` on it.
    /// `None` lists every alias of the ring.
    pub key: Option<String>,
    /// Paging.
    pub paging: ListOptions,
}

impl ListAliasesOptions {
    /// Only the aliases of `key`.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.paging.limit = limit;
        self
    }

    /// Continues after `marker`.
    pub fn marker(mut self, marker: impl Into<String>) -> Self {
        self.paging.marker = Some(marker.into());
        self
    }

    /// Continues after `marker` if there is one.
    pub fn after(mut self, marker: Option<String>) -> Self {
        self.paging.marker = marker;
        self
    }
}

/// Options of [`Client::put_key_policy`](super::Client::put_key_policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutKeyPolicyOptions {
    /// Skips the lockout check (that the caller could still change the
    /// policy afterwards), as AWS KMS's `BypassPolicyLockoutSafetyCheck`.
    /// Default `false`.
    pub bypass_policy_lockout_safety_check: bool,
}

impl PutKeyPolicyOptions {
    /// Skips the lockout check.
    pub fn bypass_policy_lockout_safety_check(mut self) -> Self {
        self.bypass_policy_lockout_safety_check = true;
        self
    }
}

/// Options of [`Client::schedule_key_deletion`](super::Client::schedule_key_deletion).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleDeletionOptions {
    /// Days until the material is destroyed (7 to 30); `None` = 30.
    pub pending_window_days: Option<u32>,
}

impl ScheduleDeletionOptions {
    /// Sets the waiting period in days.
    pub fn pending_window_days(mut self, days: u32) -> Self {
        self.pending_window_days = Some(days);
        self
    }
}

/// Options of [`Client::enable_key_rotation`](super::Client::enable_key_rotation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnableRotationOptions {
    /// Days between automatic rotations (90 to 2560); `None` = 365.
    pub rotation_period_days: Option<u32>,
}

impl EnableRotationOptions {
    /// Sets the rotation period in days.
    pub fn rotation_period_days(mut self, days: u32) -> Self {
        self.rotation_period_days = Some(days);
        self
    }
}

/// Options of [`Client::update_key_version_floors`](super::Client::update_key_version_floors):
/// each floor left `None` stays as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VersionFloors {
    /// Ciphertexts of older versions are refused.
    pub min_decrypt: Option<u32>,
    /// The primary (encrypting) version must be at least this.
    pub min_encrypt: Option<u32>,
}

impl VersionFloors {
    /// Sets the minimum decryption version.
    pub fn min_decrypt(mut self, version: u32) -> Self {
        self.min_decrypt = Some(version);
        self
    }

    /// Sets the minimum encryption version.
    pub fn min_encrypt(mut self, version: u32) -> Self {
        self.min_encrypt = Some(version);
        self
    }
}

/// Options of [`Client::sign`](super::Client::sign) and
/// [`Client::verify`](super::Client::verify).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignOptions {
    /// Whether the message is the data itself (default) or its digest.
    pub message_type: MessageType,
    /// The signature encoding (default DER for ECDSA; Ed25519 is always raw).
    pub format: SignatureFormat,
}

impl SignOptions {
    /// The message is already a digest (ECDSA only).
    pub fn digest(mut self) -> Self {
        self.message_type = MessageType::Digest;
        self
    }

    /// Sets the message type.
    pub fn message_type(mut self, message_type: MessageType) -> Self {
        self.message_type = message_type;
        self
    }

    /// Sets the signature encoding.
    pub fn format(mut self, format: SignatureFormat) -> Self {
        self.format = format;
        self
    }
}

/// Options of [`Client::explain`](super::Client::explain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExplainOptions {
    /// The key the action is on (id or alias); `None` for ring actions.
    pub key: Option<String>,
    /// The encryption context of the request, for context conditions.
    pub context: Option<EncryptionContext>,
}

impl ExplainOptions {
    /// The key the action is on.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The request's encryption context.
    pub fn context(mut self, context: EncryptionContext) -> Self {
        self.context = Some(context);
        self
    }
}

/// A grant just created: its id (to list, revoke or retire it) and its
/// token (usable at once, before the grant is visible everywhere).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CreatedGrant {
    /// The grant id.
    pub grant_id: String,
    /// The grant token (redacted in `Debug`).
    pub grant_token: GrantToken,
}

const _: () = assert!(DEFAULT_PAGE_LIMIT <= MAX_PAGE_LIMIT);
