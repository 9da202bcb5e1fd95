//! Exit codes and the one error type of the tool.
//!
//! Every failure ends the process with one of the codes below and one line
//! on stderr, `strongroom: <message>`. The codes are part of the interface
//! (README, "Command-line tool"): scripts may rely on them.

use std::fmt;
use std::path::Path;
use strongroom::ErrorKind;

/// Success.
pub const OK: u8 = 0;
/// Bad command line or bad input: unknown flag, malformed `--context`,
/// invalid argument, unsupported operation for this key, an output file
/// that exists (without `--force`), stdout output too large to buffer.
pub const USAGE: u8 = 1;
/// Access control refused the principal (`--as`).
pub const DENIED: u8 = 2;
/// A key or alias does not exist, already exists, or its state, usage or
/// version forbids the operation (disabled, pending deletion, ...).
pub const STATE: u8 = 3;
/// Not authentic: decryption failed (wrong context, truncated or tampered
/// ciphertext, not a message of this keystore), a signature does not
/// verify, or the audit log does not verify.
pub const NOT_AUTHENTIC: u8 = 4;
/// Keystore or passphrase: no passphrase, wrong passphrase, no keystore at
/// the path (or one already there for `init`), a damaged keystore.
pub const KEYSTORE: u8 = 5;
/// Transient: the keystore is busy (held by another process) or a
/// concurrent change got there first. Retrying may succeed.
pub const RETRY: u8 = 6;
/// Reading the input or writing the output failed (no such file, disk
/// full, permission denied).
pub const IO: u8 = 7;
/// An unexpected internal failure (a bug, or the random generator failed).
pub const INTERNAL: u8 = 8;

/// A failure: the exit code and the message printed on stderr. Never holds
/// a passphrase or plaintext.
#[derive(Debug)]
pub struct CliError {
    /// The process exit code.
    pub code: u8,
    /// One line for stderr.
    pub message: String,
}

impl CliError {
    /// An error with this code and message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }

    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }

    /// A keystore or passphrase error.
    pub fn keystore(message: impl Into<String>) -> Self {
        Self::new(KEYSTORE, message)
    }

    /// An I/O error on `path`, doing `what`.
    pub fn io(what: &str, path: &Path, e: std::io::Error) -> Self {
        Self::new(IO, format!("cannot {what} {}: {e}", path.display()))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The exit code of a library error, by its kind.
pub fn code_of(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidInput | ErrorKind::Unsupported => USAGE,
        ErrorKind::Denied => DENIED,
        ErrorKind::NotFound | ErrorKind::AlreadyExists | ErrorKind::KeyState => STATE,
        ErrorKind::Decryption => NOT_AUTHENTIC,
        ErrorKind::Configuration | ErrorKind::Corrupt => KEYSTORE,
        ErrorKind::Transient => RETRY,
        ErrorKind::Internal => INTERNAL,
        // `ErrorKind` is non-exhaustive: a kind added later is reported as
        // internal until it gets a code of its own.
        _ => INTERNAL,
    }
}

impl From<strongroom::Error> for CliError {
    fn from(e: strongroom::Error) -> Self {
        let code = match &e {
            // A keystore busy past its lock timeout is an I/O `TimedOut`
            // wrapped in `Other`: the caller can retry.
            strongroom::Error::Other(inner)
                if inner
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) =>
            {
                RETRY
            }
            _ => code_of(e.kind()),
        };
        CliError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_to_documented_codes() {
        let cases = [
            (strongroom::Error::DecryptionFailed, NOT_AUTHENTIC),
            (strongroom::Error::WrongRootKey, KEYSTORE),
            (strongroom::Error::KeyNotFound("k".into()), STATE),
            (strongroom::Error::AliasExists("alias/a".into()), STATE),
            (strongroom::Error::InvalidArgument("x".into()), USAGE),
            (strongroom::Error::Conflict("x".into()), RETRY),
            (strongroom::Error::Random, INTERNAL),
            (
                strongroom::Error::AccessDenied {
                    principal: "user:bob".parse().unwrap(),
                    action: strongroom::Action::Decrypt,
                    key_id: None,
                },
                DENIED,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(CliError::from(e.clone()).code, code, "{e}");
        }
        let busy = strongroom::Error::Other(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "held",
        )));
        assert_eq!(CliError::from(busy).code, RETRY);
    }
}
