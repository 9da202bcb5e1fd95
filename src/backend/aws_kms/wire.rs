//! The KMS JSON protocol's details: error answers, what to retry, what is
//! an authentication failure, base64 fields, key specs.

use crate::backend::http::Reply;
use crate::error::Error;
use crate::key::{KeySpec, SymmetricAlgorithm};
use base64ct::{Base64, Encoding};
use serde_json::Value;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A KMS error answer that is none of the mapped cases.
#[derive(Debug, thiserror::Error)]
#[error("AWS KMS refused {op}: {code}: {message}")]
pub(super) struct KmsError {
    pub(super) op: &'static str,
    pub(super) code: String,
    pub(super) message: String,
}

/// The error code and message of a failed answer (JSON `__type`, or the
/// `<Code>` of an XML error document).
pub(super) fn fault(reply: &Reply) -> (String, String) {
    if let Ok(v) = serde_json::from_slice::<Value>(&reply.body) {
        let code = v["__type"].as_str().unwrap_or_default();
        let code = code.rsplit('#').next().unwrap_or(code).to_owned();
        let msg = v["message"]
            .as_str()
            .or(v["Message"].as_str())
            .unwrap_or_default();
        return (code, msg.chars().take(200).collect());
    }
    let text = String::from_utf8_lossy(&reply.body);
    let code = text
        .split_once("<Code>")
        .and_then(|(_, r)| r.split_once("</Code>"))
        .map_or(String::new(), |(c, _)| c.to_owned());
    (code, String::new())
}

/// Answers worth retrying: server errors and throttling.
pub(super) fn later(reply: &Reply) -> Option<String> {
    if reply.status == 200 {
        return None;
    }
    let (code, _) = fault(reply);
    let transient = reply.status >= 500
        || reply.status == 429
        || matches!(
            code.as_str(),
            "ThrottlingException"
                | "Throttling"
                | "RequestLimitExceeded"
                | "DependencyTimeoutException"
                | "KMSInternalException"
                | "ServiceUnavailable"
        );
    transient.then(|| format!("HTTP {} {code}", reply.status))
}

pub(super) const AUTH_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredTokenException",
    "AccessDeniedException",
];

/// Takes a base64 field out of an answer (so no copy stays in `v`) and
/// decodes it; the text is zeroized.
pub(super) fn b64_field(v: &mut Value, field: &str) -> Option<Zeroizing<Vec<u8>>> {
    match v[field].take() {
        Value::String(s) => {
            let s = Zeroizing::new(s);
            Base64::decode_vec(&s).ok().map(Zeroizing::new)
        }
        _ => None,
    }
}

/// Wipes the base64 plaintext of a request once it is serialized.
pub(super) fn wipe(req: &mut Value, field: &str) {
    if let Value::String(s) = &mut req[field] {
        zeroize::Zeroize::zeroize(s);
    }
}

/// An error answer of KMS: its code and message.
#[derive(Debug)]
pub(super) struct Fault {
    pub(super) code: String,
    pub(super) message: String,
}

impl Fault {
    pub(super) fn into_error(self, op: &'static str) -> Error {
        Error::Other(Arc::new(KmsError {
            op,
            code: self.code,
            message: self.message,
        }))
    }
}

pub(super) fn kms_spec(spec: KeySpec) -> Option<(&'static str, &'static str)> {
    match spec {
        KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm) => {
            Some(("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"))
        }
        KeySpec::EccNistP256 => Some(("ECC_NIST_P256", "SIGN_VERIFY")),
        _ => None,
    }
}
