//! The crate's one error type.

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

    /// The key's usage does not allow the requested operation.
    #[error("key {key_id} has usage {usage} and cannot be used for {action}")]
    WrongKeyUsage {
        /// The key that was asked.
        key_id: String,
        /// The key's usage.
        usage: String,
        /// The operation that was refused.
        action: String,
    },

    /// The key exists but its state forbids the operation (disabled, pending deletion).
    #[error("key {key_id} is {state}; {action} is not allowed in this state")]
    InvalidKeyState {
        /// The key that was asked.
        key_id: String,
        /// The key's current state.
        state: String,
        /// The operation that was refused.
        action: String,
    },

    /// The ciphertext names a key other than the one the caller required.
    #[error("the ciphertext was encrypted under key {found}, not the expected key {expected}")]
    IncorrectKey {
        /// The key the caller expected.
        expected: String,
        /// The key the ciphertext names.
        found: String,
    },

    /// An argument is invalid; the message names the argument and the rule it breaks.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The caller's principal is not allowed to perform the action on the key.
    #[error("access denied: {principal} may not perform {action} on {resource}")]
    AccessDenied {
        /// The caller.
        principal: String,
        /// The action that was denied.
        action: String,
        /// The key (or `*` for ring-wide actions).
        resource: String,
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
        key_id: String,
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

    /// A short, stable name of the variant, suitable for audit records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::DecryptionFailed => "DecryptionFailed",
            Error::KeyNotFound(_) => "KeyNotFound",
            Error::AliasNotFound(_) => "AliasNotFound",
            Error::AliasExists(_) => "AliasExists",
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
        }
    }
}
