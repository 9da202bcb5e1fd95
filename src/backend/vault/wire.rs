//! Transit's wire details: key types, error answers, what to retry, and
//! the compact payload form of Transit ciphertexts.

use crate::backend::http::Reply;
use crate::key::{KeySpec, SymmetricAlgorithm};
use base64ct::{Base64, Encoding};

pub(super) fn valid_name_part(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The Transit key type of a spec, if Transit has one.
pub(super) fn transit_type(spec: KeySpec) -> Option<&'static str> {
    match spec {
        KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm) => Some("aes256-gcm96"),
        KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305) => Some("chacha20-poly1305"),
        KeySpec::EccNistP256 => Some("ecdsa-p256"),
        KeySpec::Ed25519 => Some("ed25519"),
        _ => None,
    }
}

/// The first message of a Vault error answer (`{"errors": [...]}`).
pub(super) fn message(reply: &Reply) -> String {
    serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| {
            v["errors"]
                .get(0)
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .map(|m| m.chars().take(200).collect())
        .unwrap_or_default()
}

/// Transit's answer worth retrying: throttled, sealed, standby, overloaded.
pub(super) fn later(reply: &Reply) -> Option<String> {
    matches!(reply.status, 412 | 429 | 500 | 502 | 503 | 504)
        .then(|| format!("HTTP {} {}", reply.status, message(reply)))
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
pub(super) const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// `vault:v<N>:<base64>` into `N` (u32 BE) || bytes.
pub(super) fn compact(text: &str) -> Option<Vec<u8>> {
    let rest = text.strip_prefix("vault:v")?;
    let (n, b64) = rest.split_once(':')?;
    let n: u32 = n.parse().ok().filter(|&n| n >= 1)?;
    let raw = Base64::decode_vec(b64).ok()?;
    let mut out = n.to_be_bytes().to_vec();
    out.extend_from_slice(&raw);
    Some(out)
}

/// The reverse of [`compact`], or `None` for a payload that cannot be one.
pub(super) fn expand(payload: &[u8]) -> Option<String> {
    let (n, raw) = payload.split_first_chunk::<4>()?;
    let n = u32::from_be_bytes(*n);
    (n >= 1 && !raw.is_empty()).then(|| format!("vault:v{n}:{}", Base64::encode_string(raw)))
}
