//! Where the keystore passphrase comes from: `--passphrase-file`, then the
//! environment variable `STRONGROOM_PASSPHRASE`, then a prompt on the
//! terminal without echo. Passphrases live in `Zeroizing<String>` and are
//! wiped when dropped; none is ever printed.

use crate::exit::CliError;
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

/// The environment variable holding the passphrase.
pub const ENV: &str = "STRONGROOM_PASSPHRASE";

/// Shortest passphrase `init` accepts.
pub const MIN_LEN: usize = 8;

/// The passphrase, from the first source that has one. `confirm` (for
/// `init`) asks twice when prompting and checks the minimum length.
pub fn obtain(
    file: Option<&Path>,
    keystore: &Path,
    confirm: bool,
) -> Result<Zeroizing<String>, CliError> {
    let pass = if let Some(path) = file {
        from_file(path)?
    } else if let Some(v) = std::env::var_os(ENV) {
        let v = Zeroizing::new(
            v.into_string()
                .map_err(|_| CliError::keystore(format!("{ENV} is not valid UTF-8")))?,
        );
        if v.is_empty() {
            return Err(CliError::keystore(format!("{ENV} is set but empty")));
        }
        v
    } else {
        prompt(keystore, confirm)?
    };
    if confirm && pass.chars().count() < MIN_LEN {
        return Err(CliError::keystore(format!(
            "the passphrase must be at least {MIN_LEN} characters"
        )));
    }
    Ok(pass)
}

/// The file's content, without one trailing newline. The file must be
/// readable by its owner only, as ssh requires of private keys.
fn from_file(path: &Path) -> Result<Zeroizing<String>, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        CliError::keystore(format!(
            "cannot read passphrase file {}: {e}",
            path.display()
        ))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CliError::keystore(format!(
            "passphrase file {} is accessible by group or others (mode {mode:03o}): chmod 600 it",
            path.display()
        )));
    }
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        CliError::keystore(format!(
            "cannot read passphrase file {}: {e}",
            path.display()
        ))
    })?);
    let mut text: &[u8] = &bytes;
    if let Some(t) = text.strip_suffix(b"\n") {
        text = t.strip_suffix(b"\r").unwrap_or(t);
    }
    let text = std::str::from_utf8(text).map_err(|_| {
        CliError::keystore(format!(
            "passphrase file {} is not valid UTF-8",
            path.display()
        ))
    })?;
    if text.is_empty() {
        return Err(CliError::keystore(format!(
            "passphrase file {} is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// Asks on the terminal, only if the user is at one (stdin or stderr is a
/// terminal): a script without a passphrase gets an error, never a hang.
fn prompt(keystore: &Path, confirm: bool) -> Result<Zeroizing<String>, CliError> {
    let none = || CliError::keystore(format!("no passphrase: set {ENV} or use --passphrase-file"));
    if !(std::io::stdin().is_terminal() || std::io::stderr().is_terminal()) {
        return Err(none());
    }
    let ask = |p: &str| {
        rpassword::prompt_password(p)
            .map(Zeroizing::new)
            .map_err(|_| none())
    };
    let first = ask(&format!("Passphrase for {}: ", keystore.display()))?;
    if first.is_empty() {
        return Err(CliError::keystore("empty passphrase"));
    }
    if confirm {
        let second = ask("Repeat the passphrase: ")?;
        if *first != *second {
            return Err(CliError::keystore("the passphrases do not match"));
        }
    }
    Ok(first)
}
