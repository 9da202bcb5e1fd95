//! Vault / OpenBao Transit as the custodian of master keys (feature `vault`).
//!
//! # One Transit key per strongroom key *version*
//!
//! Version `n` of key `k` is the Transit key `<prefix><k>.v<n>` (a `:` of
//! the key id becomes `.`, which key ids never contain, so names do not
//! collide). Rotating a strongroom key creates a new Transit key rather than
//! calling Transit's `rotate`, because the ring destroys and re-creates
//! single versions (scheduled deletion, and the discard of a version left
//! by a crash between generate and commit) and Transit can only trim the
//! oldest versions of one key, never delete version `n` alone. Each Transit
//! key therefore stays at its version 1 unless an operator rotates it by
//! hand, which still works: payloads record the Transit version.
//!
//! # Payloads and the encryption context
//!
//! Symmetric keys are Transit `aes256-gcm96` or `chacha20-poly1305` keys,
//! both AEAD, and the ring's `aad` (blob or message header plus the
//! canonical encryption context) is passed as Transit's `associated_data`,
//! so Transit itself refuses other `aad`. The payload is the Transit
//! ciphertext `vault:v<N>:<base64>` stored compactly: `N` (u32 big-endian)
//! then the base64-decoded bytes (Transit's nonce, ciphertext and tag).
//! Whatever Transit refuses to decrypt (bad tag, wrong `aad`, bad length)
//! is [`Error::DecryptionFailed`].
//!
//! # Signing
//!
//! `ecdsa-p256` keys sign the SHA-256 digest strongroom computed
//! (`prehashed`, `marshaling_algorithm=jws`, which is raw `r || s`);
//! `ed25519` keys sign the message. Public keys are returned as SPKI DER.
//!
//! # The token
//!
//! The token is sent only as the `X-Vault-Token` header (marked sensitive),
//! zeroized on drop, and never appears in `Debug`, errors or logs. Request
//! and response bodies, which carry data keys in base64, are zeroized on
//! drop too (buffers inside the HTTP client are not).
//!
//! # Nothing half-made
//!
//! `generate` reads the key name first (existing material is an error),
//! then creates the key; creation is idempotent in Transit, so a retry
//! after a lost answer is harmless. If the answer is lost for good the call
//! fails with [`Error::Unavailable`] and the ring records nothing; the
//! Transit key may exist without a strongroom key pointing at it (its name
//! says which id and version it was for), and the ring discards such
//! material when a later rotation reaches that version.
//!
//! Transit creates a missing key when `encrypt` names it and the token may
//! `create` on that path; give the token `update` only on
//! `transit/encrypt/*` (README, "Vault / OpenBao Transit") so a destroyed
//! version can never come back empty.

mod config;
mod wire;

pub use config::VaultConfig;

use super::http::{Reply, Transport, plain, sensitive};
use super::{KeyBackend, MAX_BACKEND_PAYLOAD, MaterialId, SigningBackend};
use crate::error::{Error, Result};
use crate::key::KeySpec;
use crate::secret::SecretBytes;
use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use ureq::http::Method;
use wire::{ED25519_SPKI_PREFIX, compact, expand, later, message, transit_type, valid_name_part};
use zeroize::Zeroizing;

/// An error answer of Transit that is none of the mapped cases.
#[derive(Debug, thiserror::Error)]
#[error("Vault Transit answered {status} to {what}: {message}")]
struct TransitError {
    what: &'static str,
    status: u16,
    message: String,
}

/// Master keys held in Vault or OpenBao Transit; see the module docs.
pub struct VaultTransitBackend {
    /// `<address>/v1/<mount>`.
    base: String,
    token: SecretBytes,
    namespace: Option<String>,
    prefix: String,
    http: Transport,
    /// Transit key types seen, by key name (signing needs the type).
    types: RwLock<HashMap<String, String>>,
}

impl fmt::Debug for VaultTransitBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultTransitBackend")
            .field("base", &self.base)
            .field("namespace", &self.namespace)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl VaultTransitBackend {
    /// Connects: checks the configuration and that the server accepts the
    /// token (`auth/token/lookup-self`, allowed by Vault's default policy).
    /// A rejected token is [`Error::Configuration`]; an unreachable server
    /// is [`Error::Unavailable`] after the configured retries.
    pub fn connect(config: &VaultConfig) -> Result<Self> {
        let address = config.address.trim_end_matches('/');
        let rest = address
            .strip_prefix("https://")
            .or_else(|| address.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
            return Err(Error::Configuration(format!(
                "Vault address must be http(s)://host[:port] without a path, not {address:?}"
            )));
        }
        let mount_ok = !config.mount.is_empty()
            && config
                .mount
                .split('/')
                .all(|p| !p.is_empty() && valid_name_part(p));
        if !mount_ok || !valid_name_part(&config.key_prefix) {
            return Err(Error::Configuration(
                "Vault mount and key prefix may contain only A-Z a-z 0-9 - _ . (and / in the mount)"
                    .into(),
            ));
        }
        if config.token.is_empty() || std::str::from_utf8(config.token.expose_secret()).is_err() {
            return Err(Error::Configuration(
                "the Vault token must be non-empty text".into(),
            ));
        }
        let backend = VaultTransitBackend {
            base: format!("{address}/v1/{}", config.mount),
            token: SecretBytes::from_slice(config.token.expose_secret()),
            namespace: config.namespace.clone(),
            prefix: config.key_prefix.clone(),
            http: Transport::new("Vault", config.retry.clone())?,
            types: RwLock::new(HashMap::new()),
        };
        let url = format!("{address}/v1/auth/token/lookup-self");
        let reply = backend.call(Method::GET, &url, b"")?;
        match reply.status {
            200 => Ok(backend),
            s => Err(Error::Configuration(format!(
                "Vault refused the token (HTTP {s}): check the token and its policies"
            ))),
        }
    }

    /// Requests sent to the server so far (every attempt counts).
    pub fn remote_calls(&self) -> u64 {
        self.http.requests()
    }

    /// The Transit key name of a material id.
    pub fn transit_key_name(&self, id: &MaterialId) -> String {
        format!(
            "{}{}.v{}",
            self.prefix,
            id.key_id.as_str().replace(':', "."),
            id.version
        )
    }

    fn call(&self, method: Method, url: &str, body: &[u8]) -> Result<Reply> {
        let headers = || {
            let token = std::str::from_utf8(self.token.expose_secret())
                .map_err(|_| Error::Configuration("the Vault token must be text".into()))?;
            let mut h = vec![("X-Vault-Token", sensitive(token)?)];
            if let Some(ns) = &self.namespace {
                h.push(("X-Vault-Namespace", plain(ns)?));
            }
            if !body.is_empty() {
                h.push(("Content-Type", plain("application/json")?));
            }
            Ok(h)
        };
        let reply = self.http.send(method, url, &headers, body, &later)?;
        match reply.status {
            401 | 403 => Err(Error::Configuration(format!(
                "Vault denied the request ({}): check the token and its policy",
                message(&reply)
            ))),
            404 if message(&reply).contains("no handler for route") => Err(Error::Configuration(
                "no Transit engine at the configured mount".into(),
            )),
            _ => Ok(reply),
        }
    }

    /// `POST <base>/<path>` with a JSON body.
    fn post(&self, path: &str, body: &[u8]) -> Result<Reply> {
        self.call(Method::POST, &format!("{}/{path}", self.base), body)
    }

    fn unexpected(what: &'static str, reply: &Reply) -> Error {
        Error::Other(Arc::new(TransitError {
            what,
            status: reply.status,
            message: message(reply),
        }))
    }

    /// The key's description, or `None` if Transit has no such key.
    fn read_key(&self, name: &str) -> Result<Option<serde_json::Value>> {
        let reply = self.call(Method::GET, &format!("{}/keys/{name}", self.base), b"")?;
        match reply.status {
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&reply.body)
                    .map_err(|_| Self::unexpected("a key read (not JSON)", &reply))?;
                if let Some(t) = v["data"]["type"].as_str() {
                    let mut types = self.types.write().unwrap_or_else(|e| e.into_inner());
                    types.insert(name.to_owned(), t.to_owned());
                }
                Ok(Some(v["data"].clone()))
            }
            404 => Ok(None),
            _ => Err(Self::unexpected("a key read", &reply)),
        }
    }

    fn key_type(&self, id: &MaterialId) -> Result<(String, String)> {
        let name = self.transit_key_name(id);
        let known = self
            .types
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .cloned();
        let t = match known {
            Some(t) => t,
            None => self
                .read_key(&name)?
                .ok_or_else(|| Error::KeyNotFound(id.to_string()))?["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        Ok((name, t))
    }

    fn data_field(reply: &Reply, what: &'static str, field: &str) -> Result<Zeroizing<String>> {
        let mut v: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(|_| Self::unexpected(what, reply))?;
        // Taken out, so no copy stays behind in `v`.
        match v["data"][field].take() {
            serde_json::Value::String(s) => Ok(Zeroizing::new(s)),
            _ => Err(Self::unexpected(what, reply)),
        }
    }
}

impl KeyBackend for VaultTransitBackend {
    fn name(&self) -> &str {
        "vault-transit"
    }

    fn supports(&self, spec: KeySpec) -> bool {
        transit_type(spec).is_some()
    }

    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        let t = transit_type(spec)
            .ok_or_else(|| Error::Unsupported(format!("Vault Transit cannot hold {spec} keys")))?;
        let name = self.transit_key_name(id);
        if self.read_key(&name)?.is_some() {
            return Err(Error::invalid(format!("material {id} already exists")));
        }
        // Creating is idempotent in Transit, so a retried request after a
        // lost answer does no harm.
        let reply = self.post(
            &format!("keys/{name}"),
            format!(r#"{{"type":"{t}"}}"#).as_bytes(),
        )?;
        match reply.status {
            200 | 204 => {
                let mut types = self.types.write().unwrap_or_else(|e| e.into_inner());
                types.insert(name, t.to_owned());
                Ok(())
            }
            _ => Err(Self::unexpected("key creation", &reply)),
        }
    }

    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let pt = Zeroizing::new(Base64::encode_string(plaintext));
        let body = Zeroizing::new(format!(
            r#"{{"plaintext":"{}","associated_data":"{}"}}"#,
            pt.as_str(),
            Base64::encode_string(aad)
        ));
        let reply = self.post(
            &format!("encrypt/{}", self.transit_key_name(id)),
            body.as_bytes(),
        )?;
        match reply.status {
            200 => {
                let text = Self::data_field(&reply, "encrypt", "ciphertext")?;
                let payload = compact(&text).ok_or_else(|| Self::unexpected("encrypt", &reply))?;
                if payload.len() > MAX_BACKEND_PAYLOAD {
                    return Err(Self::unexpected("encrypt (payload too long)", &reply));
                }
                Ok(payload)
            }
            400 if message(&reply).contains("not found") => Err(Error::KeyNotFound(id.to_string())),
            _ => Err(Self::unexpected("encrypt", &reply)),
        }
    }

    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        let ct = expand(payload).ok_or(Error::DecryptionFailed)?;
        let body = format!(
            r#"{{"ciphertext":"{ct}","associated_data":"{}"}}"#,
            Base64::encode_string(aad)
        );
        let reply = self.post(
            &format!("decrypt/{}", self.transit_key_name(id)),
            body.as_bytes(),
        )?;
        match reply.status {
            200 => {
                let b64 = Self::data_field(&reply, "decrypt", "plaintext")?;
                let pt = Zeroizing::new(
                    Base64::decode_vec(&b64).map_err(|_| Self::unexpected("decrypt", &reply))?,
                );
                Ok(SecretBytes::from_slice(&pt))
            }
            400 if message(&reply).contains("key not found") => {
                Err(Error::KeyNotFound(id.to_string()))
            }
            400 => Err(Error::DecryptionFailed),
            _ => Err(Self::unexpected("decrypt", &reply)),
        }
    }

    fn destroy(&self, id: &MaterialId) -> Result<()> {
        let name = self.transit_key_name(id);
        let reply = self.post(
            &format!("keys/{name}/config"),
            br#"{"deletion_allowed":true}"#,
        )?;
        match reply.status {
            200 | 204 => {}
            400 | 404 => return Ok(()), // not there: destruction is idempotent
            _ => return Err(Self::unexpected("allowing deletion", &reply)),
        }
        let reply = self.call(Method::DELETE, &format!("{}/keys/{name}", self.base), b"")?;
        self.types
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        match reply.status {
            200 | 204 | 404 => Ok(()),
            400 if message(&reply).contains("not found") => Ok(()),
            _ => Err(Self::unexpected("key deletion", &reply)),
        }
    }

    fn contains(&self, id: &MaterialId) -> Result<bool> {
        Ok(self.read_key(&self.transit_key_name(id))?.is_some())
    }

    fn signing(&self) -> Option<&dyn SigningBackend> {
        Some(self)
    }
}

impl SigningBackend for VaultTransitBackend {
    fn sign(&self, id: &MaterialId, data: &[u8]) -> Result<Vec<u8>> {
        let (name, t) = self.key_type(id)?;
        let input = Base64::encode_string(data);
        let body = match t.as_str() {
            "ecdsa-p256" => {
                if data.len() != 32 {
                    return Err(Error::invalid("ECDSA P-256 signs a 32-byte SHA-256 digest"));
                }
                format!(
                    r#"{{"input":"{input}","prehashed":true,"hash_algorithm":"sha2-256","marshaling_algorithm":"jws"}}"#
                )
            }
            "ed25519" => format!(r#"{{"input":"{input}"}}"#),
            _ => {
                return Err(Error::Unsupported(format!(
                    "{id} is not a signing key in Transit"
                )));
            }
        };
        let reply = self.post(&format!("sign/{name}"), body.as_bytes())?;
        if reply.status != 200 {
            return Err(Self::unexpected("sign", &reply));
        }
        let text = Self::data_field(&reply, "sign", "signature")?;
        let b64 = text
            .strip_prefix("vault:v")
            .and_then(|r| r.split_once(':'))
            .map(|(_, s)| s)
            .ok_or_else(|| Self::unexpected("sign", &reply))?;
        let sig = if t == "ecdsa-p256" {
            Base64UrlUnpadded::decode_vec(b64)
        } else {
            Base64::decode_vec(b64)
        }
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or_else(|| Self::unexpected("sign (not a 64-byte signature)", &reply))?;
        Ok(sig)
    }

    fn public_key(&self, id: &MaterialId) -> Result<Vec<u8>> {
        let data = self
            .read_key(&self.transit_key_name(id))?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let latest = data["latest_version"].as_u64().unwrap_or(1).to_string();
        let pk = data["keys"][&latest]["public_key"]
            .as_str()
            .ok_or_else(|| Error::Unsupported(format!("{id} has no public key in Transit")))?;
        let bad = || {
            Error::Other(Arc::new(TransitError {
                what: "a public key read",
                status: 200,
                message: "unreadable public key".into(),
            }))
        };
        match data["type"].as_str() {
            Some("ecdsa-p256") => {
                let b64: String = pk.lines().filter(|l| !l.starts_with("-----")).collect();
                Base64::decode_vec(&b64).map_err(|_| bad())
            }
            Some("ed25519") => {
                let raw = Base64::decode_vec(pk)
                    .ok()
                    .filter(|r| r.len() == 32)
                    .ok_or_else(bad)?;
                Ok([&ED25519_SPKI_PREFIX[..], &raw].concat())
            }
            _ => Err(Error::Unsupported(format!(
                "{id} has no public key in Transit"
            ))),
        }
    }
}
