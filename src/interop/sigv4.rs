//! AWS Signature Version 4 (feature `aws-kms`): signs the requests of
//! [`crate::backend::AwsKmsBackend`], and recomputes a signature for a
//! server that verifies them.
//!
//! Header signing only (the `Authorization` header, not presigned query
//! strings), SHA-256 payload hashes, paths normalized and encoded once per
//! segment as AWS does for every service but S3. Checked against AWS's
//! published test suite (tests/vectors/sigv4, `tests/sigv4.rs`).
//!
//! ```
//! use strongroom::interop::sigv4::{Credentials, Scope, sign};
//! let creds = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
//! let scope = Scope { date_time: "20150830T123600Z", region: "us-east-1", service: "service" };
//! let added = sign("GET", "/", "", &[("Host", "example.amazonaws.com")], b"", &creds, &scope).unwrap();
//! assert_eq!(added[0], ("x-amz-date".to_string(), "20150830T123600Z".to_string()));
//! assert!(added.last().unwrap().1.ends_with(
//!     "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"));
//! ```

use crate::error::{Error, Result};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use zeroize::Zeroizing;

/// The algorithm name in the string to sign and the `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// An access key: its id, the secret (zeroized on drop, never shown) and
/// an optional session token (signed as `x-amz-security-token`).
#[derive(Clone)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

impl Credentials {
    /// Long-term credentials.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: None,
        }
    }

    /// Adds the session token of temporary credentials.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(Zeroizing::new(token.into()));
        self
    }

    /// The access key id (not secret: it appears in every request).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// What a signature is bound to besides the request.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The request time, `YYYYMMDDTHHMMSSZ` (UTC; see [`amz_date`]).
    pub date_time: &'a str,
    /// The region, `us-east-1`.
    pub region: &'a str,
    /// The service, `kms`.
    pub service: &'a str,
}

impl Scope<'_> {
    fn date(&self) -> Result<&str> {
        let ok = self.date_time.len() == 16
            && self.date_time.as_bytes()[8] == b'T'
            && self.date_time.ends_with('Z');
        if !ok {
            return Err(Error::invalid("SigV4 date must be YYYYMMDDTHHMMSSZ"));
        }
        Ok(&self.date_time[..8])
    }

    /// `date/region/service/aws4_request`.
    pub fn credential_scope(&self) -> Result<String> {
        Ok(format!(
            "{}/{}/{}/aws4_request",
            self.date()?,
            self.region,
            self.service
        ))
    }
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time (seconds, UTC).
pub fn amz_date(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Lowercase hex SHA-256 of `data` (the payload hash).
pub fn sha256_hex(data: &[u8]) -> String {
    crate::hex::encode(&Sha256::digest(data))
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters stay, every
/// other byte is `%XY`; `/` stays when `keep_slash`.
fn uri_encode(s: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decoding (`+` stays `+`); malformed escapes are kept literally.
fn uri_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The canonical path: `.` and `..` segments and empty segments removed,
/// each segment encoded, a trailing slash kept.
fn canonical_path(path: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(
        &segs
            .iter()
            .map(|s| uri_encode(s.as_bytes(), false))
            .collect::<Vec<_>>()
            .join("/"),
    );
    if path.ends_with('/') && !segs.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical query string: pairs decoded, re-encoded, sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&uri_decode(k), false),
                uri_encode(&uri_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value trimmed, inner runs of spaces collapsed to one.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request over the headers named in `signed` (lowercase,
/// sorted, as in `SignedHeaders`); values of repeated headers are joined
/// with `,` in their order. Fails if a signed header is missing.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    signed: &[&str],
    payload_hash: &str,
) -> Result<String> {
    let mut lines = String::new();
    for name in signed {
        let values: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_value(v))
            .collect();
        if values.is_empty() {
            return Err(Error::invalid(format!("signed header {name} is missing")));
        }
        lines.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Ok(format!(
        "{method}\n{}\n{}\n{lines}\n{}\n{payload_hash}",
        canonical_path(path),
        canonical_query(query),
        signed.join(";")
    ))
}

/// The string to sign of a canonical request.
pub fn string_to_sign(canonical_request: &str, scope: &Scope<'_>) -> Result<String> {
    Ok(format!(
        "{ALGORITHM}\n{}\n{}\n{}",
        scope.date_time,
        scope.credential_scope()?,
        sha256_hex(canonical_request.as_bytes())
    ))
}

fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    // HMAC accepts keys of any length; new_from_slice cannot fail.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// The hex signature of `string_to_sign` under the key derived from the
/// secret for `scope`.
pub fn signature(creds: &Credentials, scope: &Scope<'_>, string_to_sign: &str) -> Result<String> {
    let secret = Zeroizing::new(format!("AWS4{}", creds.secret_access_key.as_str()));
    let k_date = hmac(secret.as_bytes(), scope.date()?.as_bytes());
    let k_region = hmac(&*k_date, scope.region.as_bytes());
    let k_service = hmac(&*k_region, scope.service.as_bytes());
    let k_signing = hmac(&*k_service, b"aws4_request");
    Ok(crate::hex::encode(&*hmac(
        &*k_signing,
        string_to_sign.as_bytes(),
    )))
}

/// Signs a request: returns the headers to add, in order: `x-amz-date`,
/// `x-amz-security-token` (with a session token) and `authorization`.
/// Every header in `headers` is signed (`host` must be among them), plus
/// the added date and token; the payload hash is that of `body`.
pub fn sign(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    creds: &Credentials,
    scope: &Scope<'_>,
) -> Result<Vec<(String, String)>> {
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        return Err(Error::invalid("a SigV4 request must have a host header"));
    }
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("x-amz-date", scope.date_time));
    if let Some(t) = &creds.session_token {
        all.push(("x-amz-security-token", t.as_str()));
    }
    let mut names: Vec<String> = all.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let signed: Vec<&str> = names.iter().map(String::as_str).collect();
    let creq = canonical_request(method, path, query, &all, &signed, &sha256_hex(body))?;
    let sig = signature(creds, scope, &string_to_sign(&creq, scope)?)?;
    let mut out = vec![("x-amz-date".to_string(), scope.date_time.to_string())];
    if let Some(t) = &creds.session_token {
        out.push(("x-amz-security-token".into(), t.as_str().into()));
    }
    out.push((
        "authorization".into(),
        format!(
            "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={sig}",
            creds.access_key_id,
            scope.credential_scope()?,
            signed.join(";")
        ),
    ));
    Ok(out)
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header, for a
/// server verifying a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id.
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    /// The region of the credential scope.
    pub region: String,
    /// The service of the credential scope.
    pub service: String,
    /// The signed header names, lowercase, as sent.
    pub signed_headers: Vec<String>,
    /// The hex signature.
    pub signature: String,
}

impl Authorization {
    /// Parses the header value; `None` if it is not a SigV4 header.
    pub fn parse(value: &str) -> Option<Self> {
        let rest = value.strip_prefix(ALGORITHM)?.trim_start();
        let (mut cred, mut signed, mut sig) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            match k {
                "Credential" => cred = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => sig = Some(v),
                _ => return None,
            }
        }
        let mut c = cred?.split('/');
        let (id, date, region, service, term) =
            (c.next()?, c.next()?, c.next()?, c.next()?, c.next()?);
        if term != "aws4_request" || c.next().is_some() {
            return None;
        }
        Some(Authorization {
            access_key_id: id.into(),
            date: date.into(),
            region: region.into(),
            service: service.into(),
            signed_headers: signed?.split(';').map(str::to_owned).collect(),
            signature: sig?.into(),
        })
    }

    /// True if the signature is right for this request under `creds` (the
    /// caller looked them up by [`Authorization::access_key_id`] and checks
    /// the date's freshness). Compares in constant time.
    #[allow(clippy::too_many_arguments)]
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        date_time: &str,
        creds: &Credentials,
    ) -> Result<bool> {
        use subtle::ConstantTimeEq;
        if !date_time.starts_with(&self.date) {
            return Ok(false);
        }
        let scope = Scope {
            date_time,
            region: &self.region,
            service: &self.service,
        };
        let signed: Vec<&str> = self.signed_headers.iter().map(String::as_str).collect();
        let creq = canonical_request(method, path, query, headers, &signed, &sha256_hex(body))?;
        let expected = signature(creds, &scope, &string_to_sign(&creq, &scope)?)?;
        Ok(expected.as_bytes().ct_eq(self.signature.as_bytes()).into())
    }
}
