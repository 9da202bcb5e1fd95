//! OpenSSH public keys and SSHSIG signatures (`ssh-keygen -Y sign`).
//!
//! A strongroom signing key (Ed25519 or ECDSA P-256) can stand in for an
//! SSH key that signs files, releases or git commits:
//!
//! - [`crate::Client::get_ssh_public_key`] exports its public key as one
//!   OpenSSH line (`ssh-ed25519 AAAA… comment` or `ecdsa-sha2-nistp256
//!   AAAA… comment`, the point uncompressed), ready for an
//!   `authorized_keys` or `allowed_signers` file; [`public_key_line`] does
//!   the same offline from the SubjectPublicKeyInfo DER of
//!   [`crate::Client::get_public_key`].
//! - [`crate::Client::sign_ssh`] (and [`crate::Client::sign_ssh_reader`]
//!   for large files) returns an armored SSHSIG signature
//!   (`-----BEGIN SSH SIGNATURE-----`) that `ssh-keygen -Y verify` and
//!   `ssh-keygen -Y check-novalidate` accept, and git accepts with
//!   `gpg.format = ssh`.
//! - [`verify_sshsig`] verifies an SSHSIG signature (ours, or one made by
//!   `ssh-keygen -Y sign`) offline, with only the public key line.
//!
//! The format is OpenSSH's `PROTOCOL.sshsig`: the key signs the blob
//! `"SSHSIG" ‖ string(namespace) ‖ string(reserved) ‖ string(hash_alg) ‖
//! string(H(message))`; the armored signature carries `"SSHSIG" ‖ uint32(1)
//! ‖ string(public key) ‖ string(namespace) ‖ string(reserved) ‖
//! string(hash_alg) ‖ string(signature)`. strongroom writes hash algorithm
//! `sha512` (ssh-keygen's default) with an empty reserved field, and reads
//! `sha256` and `sha512`. Ed25519 signs the blob itself (RFC 8032); ECDSA
//! P-256 signs its SHA-256 digest, and the signature is `mpint r, mpint s`
//! (RFC 5656). docs/FORMAT.md ("SSH") has the details.
//!
//! A namespace is required and says what a signature is for (`file`,
//! `git`, or `name@your.domain` for your own): a signature made for one
//! namespace does not verify for another. Namespaces are 1 to
//! [`SSH_MAX_NAMESPACE_LEN`] bytes of ASCII letters, digits and
//! `-._@+:/=`, which keeps them usable in an `allowed_signers` file.
//!
//! ```
//! use strongroom::{CreateKeyOptions, KeyRing, KeySpec, Principal};
//! use strongroom::interop::ssh::verify_sshsig;
//!
//! let ring = KeyRing::in_memory();
//! let app = ring.client(Principal::service("release")?);
//! app.create_key(KeySpec::Ed25519, CreateKeyOptions::new().alias("alias/release"))?;
//!
//! let public = app.get_ssh_public_key("alias/release", "release@example.com")?;
//! let signature = app.sign_ssh("alias/release", "file", b"release-1.0.tar.gz contents")?;
//! assert!(signature.starts_with("-----BEGIN SSH SIGNATURE-----\n"));
//! assert!(verify_sshsig(&public, "file", b"release-1.0.tar.gz contents", &signature)?);
//! assert!(!verify_sshsig(&public, "git", b"release-1.0.tar.gz contents", &signature)?);
//! # Ok::<(), strongroom::Error>(())
//! ```

use crate::error::{Error, Result};
pub use crate::limits::{
    SSH_MAX_COMMENT_LEN, SSH_MAX_NAMESPACE_LEN, SSH_MAX_PUBLIC_KEY_LINE_LEN, SSH_MAX_SIGNATURE_LEN,
};
use crate::verify::{MessageType, PublicKeyVerifier, SignatureFormat};
use base64ct::{Base64, Encoding};
use sha2::Digest;

const MAGIC: &[u8; 6] = b"SSHSIG";
const SIG_VERSION: u32 = 1;
const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";
/// Base64 characters per line of the armor, as OpenSSH writes it.
const ARMOR_LINE: usize = 70;
/// The hash algorithm strongroom writes (ssh-keygen's default).
const HASH_SHA512: &str = "sha512";
const HASH_SHA256: &str = "sha256";

const ED25519: &str = "ssh-ed25519";
const ECDSA_P256: &str = "ecdsa-sha2-nistp256";
const NISTP256: &str = "nistp256";

/// A public key SSH can name: the two signing key kinds of strongroom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SshKey {
    /// The 32-byte Ed25519 public key.
    Ed25519([u8; 32]),
    /// The 65-byte uncompressed SEC1 P-256 point.
    P256(Box<[u8; 65]>),
}

impl SshKey {
    /// From a verifier of the ring (or of an exported SPKI).
    pub(crate) fn from_verifier(v: &PublicKeyVerifier) -> Result<Self> {
        match v {
            PublicKeyVerifier::Ed25519(k) => Ok(SshKey::Ed25519(k.to_bytes())),
            PublicKeyVerifier::P256(k) => {
                let point = k.to_sec1_point(false);
                let bytes: [u8; 65] = point
                    .as_bytes()
                    .try_into()
                    .map_err(|_| Error::invalid("a P-256 point must be 65 bytes uncompressed"))?;
                Ok(SshKey::P256(Box::new(bytes)))
            }
        }
    }

    /// The SSH key type name.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            SshKey::Ed25519(_) => ED25519,
            SshKey::P256(_) => ECDSA_P256,
        }
    }

    /// The SSH wire encoding of the key (RFC 4253 / RFC 5656 / RFC 8709).
    fn blob(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(104);
        put_string(&mut out, self.type_name().as_bytes());
        match self {
            SshKey::Ed25519(k) => put_string(&mut out, k),
            SshKey::P256(q) => {
                put_string(&mut out, NISTP256.as_bytes());
                put_string(&mut out, &q[..]);
            }
        }
        out
    }

    /// The OpenSSH public key line, `type base64 [comment]`, no newline.
    pub(crate) fn line(&self, comment: &str) -> Result<String> {
        check_comment(comment)?;
        let mut line = format!(
            "{} {}",
            self.type_name(),
            Base64::encode_string(&self.blob())
        );
        if !comment.is_empty() {
            line.push(' ');
            line.push_str(comment);
        }
        Ok(line)
    }

    /// Parses the SSH wire encoding of an Ed25519 or P-256 key.
    fn from_blob(blob: &[u8]) -> Result<Self> {
        let unsupported =
            || Error::invalid("only ssh-ed25519 and ecdsa-sha2-nistp256 public keys are supported");
        let bad = || Error::invalid("malformed SSH public key");
        let mut r = Reader(blob);
        let kind = r.string().ok_or_else(bad)?;
        let key = match kind {
            b"ssh-ed25519" => {
                let k: [u8; 32] = r.string().ok_or_else(bad)?.try_into().map_err(|_| bad())?;
                ed25519_dalek::VerifyingKey::from_bytes(&k).map_err(|_| bad())?;
                SshKey::Ed25519(k)
            }
            b"ecdsa-sha2-nistp256" => {
                if r.string().ok_or_else(bad)? != NISTP256.as_bytes() {
                    return Err(bad());
                }
                let q: [u8; 65] = r.string().ok_or_else(bad)?.try_into().map_err(|_| bad())?;
                if q[0] != 0x04 {
                    return Err(bad());
                }
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&q).map_err(|_| bad())?;
                SshKey::P256(Box::new(q))
            }
            _ => return Err(unsupported()),
        };
        if !r.is_empty() {
            return Err(bad());
        }
        Ok(key)
    }

    /// Parses an OpenSSH public key line (`type base64 [comment]`).
    fn from_line(line: &str) -> Result<Self> {
        if line.len() > SSH_MAX_PUBLIC_KEY_LINE_LEN {
            return Err(Error::invalid(format!(
                "an SSH public key line is at most {SSH_MAX_PUBLIC_KEY_LINE_LEN} bytes"
            )));
        }
        let mut parts = line.split_ascii_whitespace();
        let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
            return Err(Error::invalid(
                "an SSH public key line is `type base64 [comment]`",
            ));
        };
        let blob = Base64::decode_vec(b64)
            .map_err(|_| Error::invalid("the SSH public key is not valid base64"))?;
        let key = SshKey::from_blob(&blob)?;
        if kind != key.type_name() {
            return Err(Error::invalid(format!(
                "the SSH public key line says {kind:.40} but the key is {}",
                key.type_name()
            )));
        }
        Ok(key)
    }

    fn verifier(&self) -> Result<PublicKeyVerifier> {
        let bad = || Error::invalid("malformed SSH public key");
        Ok(match self {
            SshKey::Ed25519(k) => PublicKeyVerifier::Ed25519(
                ed25519_dalek::VerifyingKey::from_bytes(k).map_err(|_| bad())?,
            ),
            SshKey::P256(q) => PublicKeyVerifier::P256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&q[..]).map_err(|_| bad())?,
            ),
        })
    }

    /// The SSH signature encoding of a signature strongroom's sign path
    /// returned: the 64-byte Ed25519 signature, or the raw `r ‖ s` (64
    /// bytes) of ECDSA P-256.
    pub(crate) fn signature_blob(&self, raw: &[u8]) -> Result<Vec<u8>> {
        let bad = || Error::invalid("the sign path returned a malformed signature");
        if raw.len() != 64 {
            return Err(bad());
        }
        let mut out = Vec::with_capacity(100);
        put_string(&mut out, self.type_name().as_bytes());
        match self {
            SshKey::Ed25519(_) => put_string(&mut out, raw),
            SshKey::P256(_) => {
                let mut rs = Vec::with_capacity(74);
                put_mpint(&mut rs, &raw[..32]);
                put_mpint(&mut rs, &raw[32..]);
                put_string(&mut out, &rs);
            }
        }
        Ok(out)
    }

    /// True if `sig_blob` (SSH signature encoding) is this key's valid
    /// signature of `signed`. Malformed signatures are invalid.
    pub(crate) fn verify(&self, signed: &[u8], sig_blob: &[u8]) -> Result<bool> {
        let Some(raw) = self.raw_signature(sig_blob) else {
            return Ok(false);
        };
        self.verifier()?
            .verify(signed, &raw, MessageType::Raw, SignatureFormat::Raw)
    }

    /// The SSH signature encoding back to 64 raw bytes, if well formed.
    fn raw_signature(&self, sig_blob: &[u8]) -> Option<[u8; 64]> {
        let mut r = Reader(sig_blob);
        if r.string()? != self.type_name().as_bytes() {
            return None;
        }
        let body = r.string()?;
        if !r.is_empty() {
            return None;
        }
        match self {
            SshKey::Ed25519(_) => body.try_into().ok(),
            SshKey::P256(_) => {
                let mut rs = Reader(body);
                let (sr, ss) = (rs.mpint32()?, rs.mpint32()?);
                if !rs.is_empty() {
                    return None;
                }
                let mut raw = [0u8; 64];
                raw[..32].copy_from_slice(&sr);
                raw[32..].copy_from_slice(&ss);
                Some(raw)
            }
        }
    }
}

/// The OpenSSH public key line of a signing key, offline, from its
/// SubjectPublicKeyInfo DER (the `der` of
/// [`crate::Client::get_public_key`]): `ssh-ed25519 AAAA… comment` or
/// `ecdsa-sha2-nistp256 AAAA… comment`. The comment (may be empty) is at
/// most [`SSH_MAX_COMMENT_LEN`] bytes without control characters.
///
/// The DER alone does not say what a P-256 key is for: an HPKE key's SPKI
/// would be encoded too. [`crate::Client::get_ssh_public_key`] checks the
/// key's spec.
pub fn public_key_line(spki_der: &[u8], comment: &str) -> Result<String> {
    SshKey::from_verifier(&PublicKeyVerifier::from_spki_der(spki_der)?)?.line(comment)
}

/// Verifies an armored SSHSIG signature (`-----BEGIN SSH SIGNATURE-----`,
/// as `ssh-keygen -Y sign` or [`crate::Client::sign_ssh`] writes it) of
/// `data` in `namespace` by the key of the OpenSSH `public_key_line`
/// (`ssh-ed25519 …` or `ecdsa-sha2-nistp256 …`).
///
/// `Ok(true)` only if the signature is well formed, version 1, made by
/// exactly this key, for exactly this namespace, with hash `sha256` or
/// `sha512`, and valid for `data`. Every other signature, including a
/// malformed or oversized one (over [`SSH_MAX_SIGNATURE_LEN`] bytes), is
/// `Ok(false)`. An invalid public key line or namespace is
/// [`Error::InvalidArgument`]. No input panics.
///
/// This is what `ssh-keygen -Y verify` checks for one trusted key; it does
/// not read `allowed_signers` files (principals, validity dates, CAs).
pub fn verify_sshsig(
    public_key_line: &str,
    namespace: &str,
    data: &[u8],
    armored: &str,
) -> Result<bool> {
    let key = SshKey::from_line(public_key_line)?;
    check_namespace(namespace)?;
    let Some(blob) = dearmor(armored) else {
        return Ok(false);
    };
    let Some(sig) = Sshsig::parse(&blob) else {
        return Ok(false);
    };
    if sig.public_key != key.blob() || sig.namespace != namespace.as_bytes() {
        return Ok(false);
    }
    let (hash_name, digest) = match sig.hash_algorithm {
        b"sha512" => (HASH_SHA512, sha2::Sha512::digest(data).to_vec()),
        b"sha256" => (HASH_SHA256, sha2::Sha256::digest(data).to_vec()),
        _ => return Ok(false),
    };
    let signed = signed_data_with(namespace, hash_name, &digest);
    key.verify(&signed, sig.signature)
}

/// The SHA-512 state of a message being signed in SSHSIG.
#[derive(Default)]
pub(crate) struct MessageHash(sha2::Sha512);

impl MessageHash {
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The SSHSIG signed-data blob for `namespace` (checked by the caller).
    pub(crate) fn signed_data(self, namespace: &str) -> Vec<u8> {
        signed_data_with(namespace, HASH_SHA512, &self.0.finalize())
    }
}

fn signed_data_with(namespace: &str, hash_algorithm: &str, digest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + 16 + namespace.len() + hash_algorithm.len() + 64);
    out.extend_from_slice(MAGIC);
    put_string(&mut out, namespace.as_bytes());
    put_string(&mut out, b""); // reserved
    put_string(&mut out, hash_algorithm.as_bytes());
    put_string(&mut out, digest);
    out
}

/// The armored SSHSIG signature (sha512, empty reserved field), wrapped
/// at 70 columns and ending in a newline, as ssh-keygen writes it.
pub(crate) fn armor(key: &SshKey, namespace: &str, signature_blob: &[u8]) -> String {
    let mut blob = Vec::with_capacity(200);
    blob.extend_from_slice(MAGIC);
    blob.extend_from_slice(&SIG_VERSION.to_be_bytes());
    put_string(&mut blob, &key.blob());
    put_string(&mut blob, namespace.as_bytes());
    put_string(&mut blob, b"");
    put_string(&mut blob, HASH_SHA512.as_bytes());
    put_string(&mut blob, signature_blob);
    let b64 = Base64::encode_string(&blob);
    let mut out = String::with_capacity(b64.len() + b64.len() / ARMOR_LINE + 64);
    out.push_str(BEGIN);
    out.push('\n');
    for line in b64.as_bytes().chunks(ARMOR_LINE) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// Namespaces: 1 to [`SSH_MAX_NAMESPACE_LEN`] bytes of ASCII letters,
/// digits and `-._@+:/=`.
pub(crate) fn check_namespace(namespace: &str) -> Result<()> {
    if namespace.is_empty() {
        return Err(Error::invalid(
            "an SSH signature namespace is required (SSHSIG forbids an empty one): \
             use e.g. \"file\", \"git\" or \"name@your.domain\"",
        ));
    }
    if namespace.len() > SSH_MAX_NAMESPACE_LEN {
        return Err(Error::invalid(format!(
            "an SSH signature namespace is at most {SSH_MAX_NAMESPACE_LEN} bytes"
        )));
    }
    if !namespace
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._@+:/=".contains(&b))
    {
        return Err(Error::invalid(
            "an SSH signature namespace is ASCII letters, digits and -._@+:/= only",
        ));
    }
    Ok(())
}

fn check_comment(comment: &str) -> Result<()> {
    if comment.len() > SSH_MAX_COMMENT_LEN {
        return Err(Error::invalid(format!(
            "an SSH public key comment is at most {SSH_MAX_COMMENT_LEN} bytes"
        )));
    }
    if comment.chars().any(char::is_control) {
        return Err(Error::invalid(
            "an SSH public key comment may not contain control characters (newlines, tabs...)",
        ));
    }
    Ok(())
}

/// A parsed SSHSIG blob, borrowing from the decoded bytes.
struct Sshsig<'a> {
    public_key: &'a [u8],
    namespace: &'a [u8],
    hash_algorithm: &'a [u8],
    signature: &'a [u8],
}

impl<'a> Sshsig<'a> {
    /// Parses a decoded SSHSIG blob; `None` for anything malformed, a
    /// version other than 1, or trailing bytes.
    fn parse(blob: &'a [u8]) -> Option<Self> {
        let mut r = Reader(blob);
        if r.take(MAGIC.len())? != MAGIC || r.u32()? != SIG_VERSION {
            return None;
        }
        let public_key = r.string()?;
        let namespace = r.string()?;
        let _reserved = r.string()?;
        let hash_algorithm = r.string()?;
        let signature = r.string()?;
        r.is_empty().then_some(Sshsig {
            public_key,
            namespace,
            hash_algorithm,
            signature,
        })
    }
}

/// The bytes inside the armor, as OpenSSH reads it: the header at the very
/// start followed by LF or CRLF, base64 (whitespace ignored), LF and the
/// footer; only whitespace may follow the footer.
fn dearmor(armored: &str) -> Option<Vec<u8>> {
    if armored.len() > SSH_MAX_SIGNATURE_LEN {
        return None;
    }
    let rest = armored.strip_prefix(BEGIN)?;
    let rest = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))?;
    let end = rest.find(&format!("\n{END}"))?;
    let (body, tail) = rest.split_at(end);
    if !tail[1 + END.len()..].trim().is_empty() {
        return None;
    }
    let b64: String = body
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n'))
        .collect();
    Base64::decode_vec(&b64).ok()
}

/// A bounds-checked reader of SSH wire encoding (RFC 4251 section 5).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }

    /// A non-negative mpint of at most 32 significant bytes, as 32 bytes
    /// big-endian (leading zero bytes are accepted, as OpenSSH does).
    fn mpint32(&mut self) -> Option<[u8; 32]> {
        let v = self.string()?;
        if v.first().is_some_and(|b| b & 0x80 != 0) {
            return None; // negative
        }
        let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
        let v = &v[start..];
        if v.len() > 32 {
            return None;
        }
        let mut out = [0u8; 32];
        out[32 - v.len()..].copy_from_slice(v);
        Some(out)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every string we write is far below 4 GiB (keys, namespaces of at
    // most SSH_MAX_NAMESPACE_LEN bytes, digests, signatures).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An unsigned big-endian integer as an SSH mpint: minimal, with a zero
/// byte in front when the top bit is set; zero is the empty string.
fn put_mpint(out: &mut Vec<u8>, unsigned_be: &[u8]) {
    let start = unsigned_be
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(unsigned_be.len());
    let v = &unsigned_be[start..];
    let mut m = Vec::with_capacity(v.len() + 1);
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        m.push(0);
    }
    m.extend_from_slice(v);
    put_string(out, &m);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpint_encoding_follows_rfc4251() {
        // RFC 4251 section 5 examples.
        let enc = |v: &[u8]| {
            let mut o = Vec::new();
            put_mpint(&mut o, v);
            o
        };
        assert_eq!(enc(&[0, 0]), [0, 0, 0, 0]);
        assert_eq!(
            enc(&[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]),
            [0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]
        );
        assert_eq!(enc(&[0x80]), [0, 0, 0, 2, 0x00, 0x80]);
        assert_eq!(enc(&[0, 0x80]), [0, 0, 0, 2, 0x00, 0x80]);
        // And back, padded to 32 bytes; negatives and oversize refused.
        let mut r = Reader(&[0, 0, 0, 2, 0x00, 0x80]);
        let mut want = [0u8; 32];
        want[31] = 0x80;
        assert_eq!(r.mpint32(), Some(want));
        assert_eq!(Reader(&[0, 0, 0, 1, 0x80]).mpint32(), None);
        let mut big = vec![0, 0, 0, 33, 1];
        big.extend_from_slice(&[0u8; 32]);
        assert_eq!(Reader(&big).mpint32(), None);
    }

    #[test]
    fn reader_is_bounds_checked() {
        assert_eq!(Reader(&[0, 0, 0, 5, 1, 2]).string(), None);
        assert_eq!(Reader(&[0xff, 0xff, 0xff, 0xff]).string(), None);
        assert_eq!(Reader(&[0, 0]).u32(), None);
    }

    #[test]
    fn armor_round_trips_and_wraps_at_70() {
        let key = SshKey::Ed25519([7u8; 32]);
        let a = armor(&key, "file", &[1u8; 83]);
        let lines: Vec<&str> = a.lines().collect();
        assert_eq!(lines[0], BEGIN);
        assert_eq!(*lines.last().unwrap(), END);
        assert!(
            lines[1..lines.len() - 1]
                .iter()
                .all(|l| l.len() <= ARMOR_LINE)
        );
        assert_eq!(lines[1].len(), ARMOR_LINE);
        let blob = dearmor(&a).unwrap();
        let sig = Sshsig::parse(&blob).unwrap();
        assert_eq!(sig.namespace, b"file");
        assert_eq!(sig.hash_algorithm, b"sha512");
        assert_eq!(sig.public_key, key.blob());
        // CRLF armor is read too; junk after the footer is not.
        assert!(dearmor(&a.replace('\n', "\r\n")).is_some());
        assert!(dearmor(&format!("{a}x")).is_none());
        assert!(dearmor(&format!(" {a}")).is_none());
    }
}
