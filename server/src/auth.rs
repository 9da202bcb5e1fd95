//! SigV4 authentication: the access key table and the request check.
//!
//! Every request must carry `Authorization: AWS4-HMAC-SHA256 ...` and
//! `X-Amz-Date`; the signature must cover `host` and `x-amz-date`, be scoped
//! to this server's region and service `kms`, be made with the secret of a
//! known access key id, and be no more than five minutes off the server's
//! clock. Only then does an operation run, as the key's principal.

use crate::kms::KmsError;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use strongroom::Principal;
use strongroom::interop::sigv4::{Authorization, Credentials};

/// Allowed clock difference between client and server, seconds.
pub const MAX_SKEW_SECS: u64 = 5 * 60;

/// Access key id → secret and principal.
pub struct CredentialTable {
    entries: HashMap<String, (Credentials, Principal)>,
}

impl std::fmt::Debug for CredentialTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Access key ids only: secrets never appear.
        f.debug_struct("CredentialTable")
            .field("access_key_ids", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CredentialTable {
    /// Parses the credentials file: one `ACCESS_KEY_ID SECRET principal`
    /// per line (blank lines and `#` comments ignored). Errors name the
    /// line, never its secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, secret, principal] = fields.as_slice() else {
                return Err(format!(
                    "credentials line {}: expected `ACCESS_KEY_ID SECRET principal` (3 fields, got {})",
                    i + 1,
                    fields.len()
                ));
            };
            let principal: Principal = principal
                .parse()
                .map_err(|e| format!("credentials line {}: {e}", i + 1))?;
            if entries
                .insert(
                    (*id).to_string(),
                    (Credentials::new(*id, *secret), principal),
                )
                .is_some()
            {
                return Err(format!(
                    "credentials line {}: access key id {id} appears twice",
                    i + 1
                ));
            }
        }
        if entries.is_empty() {
            return Err("the credentials file has no entries".into());
        }
        Ok(CredentialTable { entries })
    }

    /// Number of access keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Unix seconds of `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (H. Hinnant), for years >= 1970.
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The access key id a request claims in its `Authorization` header, if it
/// has a well-formed one (not a secret; unverified).
pub fn claimed_access_key(req: &crate::http::Request) -> Option<&str> {
    let header = req.header("authorization")?;
    let credential = header.split("Credential=").nth(1)?;
    let id = credential.split('/').next()?;
    // Printable ASCII, bounded: it goes into the audit log as given.
    (!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(id)
}

/// Authenticates a request; returns the principal of its access key.
pub fn authenticate(
    table: &CredentialTable,
    region: &str,
    req: &crate::http::Request,
) -> Result<Principal, KmsError> {
    let denied = |ty: &'static str, msg: &str| KmsError::new(ty, msg);
    let header = req.header("authorization").ok_or_else(|| {
        denied(
            "MissingAuthenticationTokenException",
            "the request is not signed: an AWS SigV4 Authorization header is required",
        )
    })?;
    let auth = Authorization::parse(header).ok_or_else(|| {
        denied(
            "IncompleteSignatureException",
            "the Authorization header is not a well-formed AWS4-HMAC-SHA256 signature",
        )
    })?;
    let date_time = req.header("x-amz-date").ok_or_else(|| {
        denied(
            "IncompleteSignatureException",
            "the request has no X-Amz-Date header",
        )
    })?;
    for must in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == must) {
            return Err(denied(
                "IncompleteSignatureException",
                &format!("the signature must cover the {must} header"),
            ));
        }
    }
    if auth.service != "kms" || auth.region != region {
        return Err(denied(
            "InvalidSignatureException",
            &format!("credential should be scoped to region {region} and service kms"),
        ));
    }
    let signed_at = parse_amz_date(date_time).ok_or_else(|| {
        denied(
            "IncompleteSignatureException",
            "X-Amz-Date must be YYYYMMDDTHHMMSSZ",
        )
    })?;
    if now_secs().abs_diff(signed_at) > MAX_SKEW_SECS {
        return Err(denied(
            "InvalidSignatureException",
            "signature expired: the request time is more than 5 minutes from the server's time",
        ));
    }
    let Some((creds, principal)) = table.entries.get(&auth.access_key_id) else {
        return Err(denied(
            "UnrecognizedClientException",
            "the security token included in the request is invalid (unknown access key id)",
        ));
    };
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let ok = auth
        .verify(
            &req.method,
            &req.path,
            &req.query,
            &headers,
            &req.body,
            date_time,
            creds,
        )
        .unwrap_or(false);
    if !ok {
        return Err(denied(
            "InvalidSignatureException",
            "the request signature we calculated does not match the signature you provided",
        ));
    }
    Ok(principal.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        for t in [0u64, 951_782_400, 1_709_210_096, 4_102_444_799] {
            let s = strongroom::interop::sigv4::amz_date(t);
            assert_eq!(parse_amz_date(&s), Some(t), "{s}");
        }
        for bad in [
            "",
            "20150830T123600",
            "2015-8-30T12360Z",
            "20151330T123600Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn credential_file() {
        let t = CredentialTable::parse("# c\nAK1 s1 user:alice\n\nAK2 s2 service:app\n").unwrap();
        assert_eq!(t.len(), 2);
        let e = CredentialTable::parse("AK1 topsecret user:alice extra").unwrap_err();
        assert!(e.contains("line 1") && !e.contains("topsecret"), "{e}");
        let e = CredentialTable::parse("AK1 topsecret alice").unwrap_err();
        assert!(!e.contains("topsecret"), "{e}");
        assert!(CredentialTable::parse("A s user:a\nA t user:b").is_err());
        assert!(CredentialTable::parse("# nothing").is_err());
    }
}
