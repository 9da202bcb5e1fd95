//! `strongroom audit verify`: checks the keystore's audit log offline (no
//! passphrase needed): the hash chain of every record, every signed
//! digest, and optionally an anchor kept from an earlier run.

use crate::exit::{self, CliError};
use crate::keystore::{AUDIT_DIR, existing};
use crate::output::{emit, emit_json};
use serde_json::json;
use std::path::Path;
use strongroom::audit::{Anchor, verify_log};

/// Verifies `<keystore>/audit/` with the public key from `--public-key`
/// (recommended: the one `init` printed, kept elsewhere) or, failing that,
/// the one in the keystore's CLI config.
pub fn verify(
    dir: &Path,
    public_key: Option<&str>,
    anchor: Option<&str>,
    json_out: bool,
) -> Result<(), CliError> {
    let config = existing(dir)?;
    let key = match public_key {
        Some(k) => crate::hex::decode32(k)
            .ok_or_else(|| CliError::usage("--public-key must be 64 hex characters"))?,
        None => config.audit_public_key,
    };
    let anchor = anchor
        .map(|a| a.parse::<Anchor>())
        .transpose()
        .map_err(|e| CliError::usage(e.to_string()))?;
    let report = verify_log(&dir.join(AUDIT_DIR), &key, anchor.as_ref())
        .map_err(|e| CliError::new(exit::NOT_AUTHENTIC, format!("audit log INVALID: {e}")))?;
    if report.log_id.is_none() {
        return Err(CliError::new(
            exit::NOT_AUTHENTIC,
            "audit log INVALID: there is no log (deleted?)",
        ));
    }
    let last = report.last_digest.map(|a| a.to_string());
    if json_out {
        return emit_json(&json!({
            "ok": true,
            "records": report.records,
            "digests": report.digests,
            "unsigned_tail": report.unsigned_tail,
            "anchor": last,
            "public_key_from": if public_key.is_some() { "argument" } else { "keystore" },
        }));
    }
    let mut text = format!(
        "audit log OK: {} records, {} signed digests, {} records after the last digest",
        report.records, report.digests, report.unsigned_tail
    );
    if let Some(a) = last {
        text.push_str(&format!(
            "\nanchor (keep it, pass it as --anchor next time): {a}"
        ));
    }
    if public_key.is_none() {
        text.push_str(
            "\nnote: checked with the public key stored in the keystore; pass the key \
             `init` printed (--public-key) to rule out a replaced log",
        );
    }
    emit(&text)
}
