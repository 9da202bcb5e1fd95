//! The crate's one error type.

use crate::action::Action;
use crate::key::{KeyId, KeyState, KeyUsage};
use crate::principal::Principal;
use std::sync::Arc;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in strongroom.
///
/// Each variant says what the caller can do about it. None carries secret
/// bytes: plaintext, key material and PINs never appear in an error.
///
/// Every failure to decrypt or authenticate a ciphertext (wrong key, wrong
/// encryption context, a flipped bit, truncation, a malformed header) is the
/// single opaque variant [`Error::DecryptionFailed`], so errors cannot be used
/// as an oracle.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ciphertext could not be decrypted or authenticated. Deliberately
    /// says nothing more: check that the ciphertext is intact and that the
    /// encryption context is exactly the one used to encrypt.
    #[error(
        "decryption failed: the ciphertext is not authentic under this key and encryption context"
    )]
    DecryptionFailed,

    /// No key with this id (or version) exists in the ring.
    #[error("key not found: {0}")]
    KeyNotFound(String),

    /// No alias with this name exists.
    #[error("alias not found: {0}")]
    AliasNotFound(String),

    /// An alias with this name already exists; use `update_alias` to repoint it.
    #[error("alias already exists: {0}")]
    AliasExists(String),

    /// No secret with this name (or version or label) exists, or it was
    /// destroyed after its deletion window.
    #[error("secret not found: {0}")]
    SecretNotFound(String),

    /// A secret with this name already exists; put a new version instead.
    #[error("secret already exists: {0}")]
    SecretExists(String),

    /// The key's usage does not allow the requested operation.
    #[error("key {key_id} has usage {usage} and cannot be used for {action}")]
    WrongKeyUsage {
        /// The key that was asked.
        key_id: KeyId,
        /// The key's usage.
        usage: KeyUsage,
        /// The operation that was refused.
        action: Action,
    },

    /// The key exists but its state forbids the operation (disabled, pending
    /// deletion): enable it, or cancel the deletion first.
    #[error("key {key_id} is {state}; {action} is not allowed in this state")]
    InvalidKeyState {
        /// The key that was asked.
        key_id: KeyId,
        /// The key's current state.
        state: KeyState,
        /// The operation that was refused.
        action: Action,
    },

    /// The key's primary version may not encrypt any more (it reached its
    /// encryption limit, or is below the key's minimum encryption version):
    /// rotate the key.
    #[error("key {key_id} version {version} cannot encrypt: {reason}; rotate the key")]
    VersionCannotEncrypt {
        /// The key.
        key_id: KeyId,
        /// Its primary version.
        version: u32,
        /// Why: the limit or the floor.
        reason: String,
    },

    /// The ciphertext names a key other than the one the caller required.
    #[error("the ciphertext was encrypted under key {found}, not the expected key {expected}")]
    IncorrectKey {
        /// The key the caller expected.
        expected: KeyId,
        /// The key the ciphertext names.
        found: KeyId,
    },

    /// An argument is invalid; the message names the argument and the rule it breaks.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The caller's principal is not allowed to perform the action on the key.
    #[error(
        "access denied: {principal} may not perform {action} on {}",
        .key_id.as_ref().map_or("*", KeyId::as_str)
    )]
    AccessDenied {
        /// The caller.
        principal: Principal,
        /// The action that was denied.
        action: Action,
        /// The key, or `None` for a ring-wide action.
        key_id: Option<KeyId>,
    },

    /// The backend or key spec does not support this operation.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The ring or backend is misconfigured (wrong PIN, missing token, bad path...).
    #[error("configuration error: {0}")]
    Configuration(String),

    /// The random number generator failed.
    #[error("random number generator failure")]
    Random,

    /// A failure inside a backend or store that is none of the above.
    #[error("backend error: {0}")]
    Other(Arc<dyn std::error::Error + Send + Sync>),

    /// The ciphertext was made with a key version below the key's minimum
    /// decryption version: that version has been retired. Re-encrypt data
    /// before raising a floor.
    #[error("key {key_id} version {version} is retired: the minimum decryption version is {floor}")]
    VersionRetired {
        /// The key.
        key_id: KeyId,
        /// The version the ciphertext names.
        version: u32,
        /// The key's minimum decryption version.
        floor: u32,
    },

    /// A keystore file is damaged, truncated, tampered with, or belongs to
    /// another store. Nothing was changed; restore the file from a backup.
    #[error("keystore file {file} is unusable: {reason}")]
    CorruptStore {
        /// The file (path relative to the keystore directory).
        file: String,
        /// What is wrong.
        reason: String,
    },

    /// The root key or passphrase does not open this keystore. Nothing was
    /// changed.
    #[error("the root key or passphrase does not open this keystore")]
    WrongRootKey,

    /// An audit sink could not record the operation and the ring is
    /// fail-closed: the operation's result is withheld.
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(String),

    /// A concurrent change got there first (an alias was repointed between
    /// the authorization and the write, or a store revision moved). Nothing
    /// was changed; read again and retry.
    #[error("conflict: {0}")]
    Conflict(String),

    /// A backend, store or service was unreachable, timed out or throttled
    /// the request after the configured retries. Nothing was changed that
    /// the caller relies on; retrying later may succeed
    /// ([`Error::is_retryable`]).
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// The ciphertext names a version of a multi-region key that this
    /// replica does not hold yet: its newest version is older, so the
    /// primary has probably rotated since the replica was last synced. Call
    /// [`crate::Client::sync_replica`] from the primary region, then retry.
    ///
    /// A distinct error rather than [`Error::DecryptionFailed`] because it
    /// says nothing about the ciphertext's authenticity and nothing secret:
    /// only the replica's newest version number, which `DescribeKey` shows
    /// (the ciphertext itself has not been touched). It is reached only by a
    /// caller allowed to decrypt under the key.
    #[error(
        "key {key_id} is a multi-region replica whose newest version is {replica_latest}; \
         version {version} is not here: sync the replica from its primary region (sync_replica)"
    )]
    ReplicaVersionUnknown {
        /// The key.
        key_id: KeyId,
        /// The version the ciphertext names.
        version: u32,
        /// The newest version this replica holds.
        replica_latest: u32,
    },
}

/// What kind of failure an [`Error`] is, for a caller deciding what to do:
/// fix the input, get permission, wait and retry, or call an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The opaque decryption failure: the ciphertext is not authentic under
    /// this key and context.
    Decryption,
    /// A key, version or alias does not exist.
    NotFound,
    /// An alias (or key) with this name exists already.
    AlreadyExists,
    /// The key's state, usage, version or floors forbid the operation.
    KeyState,
    /// Access control refused the caller.
    Denied,
    /// The caller's input breaks a rule (bad argument, wrong expected key).
    InvalidInput,
    /// The backend or key spec cannot do this at all.
    Unsupported,
    /// The ring, a backend or a store is configured wrongly (including a
    /// wrong root key).
    Configuration,
    /// A transient failure: a concurrent change, an unreachable or
    /// throttling backend or store, an audit sink that could not record.
    /// Retrying may succeed.
    Transient,
    /// Stored data is damaged or tampered with: an operator must act.
    Corrupt,
    /// Anything else (an unexpected backend error, the random generator).
    Internal,
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// An alias no longer points at the key the caller was authorized on.
    pub(crate) fn alias_moved(alias: &crate::key::Alias) -> Self {
        Error::Conflict(format!(
            "alias {alias} was repointed concurrently; nothing was changed"
        ))
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::DecryptionFailed => ErrorKind::Decryption,
            Error::KeyNotFound(_)
            | Error::AliasNotFound(_)
            | Error::SecretNotFound(_)
            | Error::ReplicaVersionUnknown { .. } => ErrorKind::NotFound,
            Error::AliasExists(_) | Error::SecretExists(_) => ErrorKind::AlreadyExists,
            Error::WrongKeyUsage { .. }
            | Error::InvalidKeyState { .. }
            | Error::VersionCannotEncrypt { .. }
            | Error::VersionRetired { .. } => ErrorKind::KeyState,
            Error::AccessDenied { .. } => ErrorKind::Denied,
            Error::InvalidArgument(_) | Error::IncorrectKey { .. } => ErrorKind::InvalidInput,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Configuration(_) | Error::WrongRootKey => ErrorKind::Configuration,
            Error::Conflict(_) | Error::Unavailable(_) | Error::AuditUnavailable(_) => {
                ErrorKind::Transient
            }
            Error::CorruptStore { .. } => ErrorKind::Corrupt,
            Error::Random | Error::Other(_) => ErrorKind::Internal,
        }
    }

    /// True if the same call may succeed when retried later, unchanged: a
    /// concurrent change got there first ([`Error::Conflict`]), a backend or
    /// store was unreachable or throttled ([`Error::Unavailable`]), or an
    /// audit sink could not record ([`Error::AuditUnavailable`]). Never true
    /// for a denial, bad input or a decryption failure.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// A short, stable name of the variant, suitable for audit records and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Error::DecryptionFailed => "DecryptionFailed",
            Error::KeyNotFound(_) => "KeyNotFound",
            Error::AliasNotFound(_) => "AliasNotFound",
            Error::AliasExists(_) => "AliasExists",
            Error::SecretNotFound(_) => "SecretNotFound",
            Error::SecretExists(_) => "SecretExists",
            Error::WrongKeyUsage { .. } => "WrongKeyUsage",
            Error::InvalidKeyState { .. } => "InvalidKeyState",
            Error::IncorrectKey { .. } => "IncorrectKey",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::AccessDenied { .. } => "AccessDenied",
            Error::Unsupported(_) => "Unsupported",
            Error::Configuration(_) => "Configuration",
            Error::Random => "Random",
            Error::Other(_) => "Other",
            Error::VersionRetired { .. } => "VersionRetired",
            Error::AuditUnavailable(_) => "AuditUnavailable",
            Error::CorruptStore { .. } => "CorruptStore",
            Error::WrongRootKey => "WrongRootKey",
            Error::Conflict(_) => "Conflict",
            Error::Unavailable(_) => "Unavailable",
            Error::VersionCannotEncrypt { .. } => "VersionCannotEncrypt",
            Error::ReplicaVersionUnknown { .. } => "ReplicaVersionUnknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        let key = KeyId::parse("k-0123456789abcdef0123456789abcdef").ok();
        let denied = Error::AccessDenied {
            principal: Principal::user("bob").unwrap(),
            action: Action::Decrypt,
            key_id: key.clone(),
        };
        assert_eq!(denied.kind(), ErrorKind::Denied);
        assert!(!denied.is_retryable());
        assert!(
            denied
                .to_string()
                .contains("user:bob may not perform strongroom:Decrypt")
        );
        let ring_wide = Error::AccessDenied {
            principal: Principal::user("bob").unwrap(),
            action: Action::CreateKey,
            key_id: None,
        };
        assert!(ring_wide.to_string().ends_with("on *"));
        for e in [
            Error::Conflict("x".into()),
            Error::Unavailable("x".into()),
            Error::AuditUnavailable("x".into()),
        ] {
            assert!(e.is_retryable(), "{e}");
        }
        for e in [
            Error::DecryptionFailed,
            Error::InvalidArgument("x".into()),
            Error::WrongRootKey,
            Error::KeyNotFound("x".into()),
        ] {
            assert!(!e.is_retryable(), "{e}");
        }
        assert_eq!(Error::DecryptionFailed.name(), "DecryptionFailed");
    }
}
