//! AWS KMS (or any service speaking the KMS JSON protocol) as the custodian
//! of master keys (feature `aws-kms`).
//!
//! # One KMS key per strongroom key *version*
//!
//! Version `n` of key `k` is the KMS key behind the alias
//! `alias/<prefix><k>/v<n>` (a `:` of the key id becomes `/`; the version is
//! always the last segment, so aliases do not collide). Rotating creates a
//! new KMS key, for the reason given for Transit (`backend::vault`): the ring
//! destroys single versions, which KMS's own rotation cannot. Destroying a
//! version schedules its KMS key for deletion (the configured window, 7 days
//! by default, the shortest KMS allows) and then deletes the alias; a key
//! pending deletion counts as absent.
//!
//! With [`AwsKmsConfig::adopt_key`], symmetric versions do not get keys of
//! their own: each version's alias points at that existing key, and
//! destroying a version deletes only its alias, never the adopted key.
//!
//! # Payloads and the encryption context
//!
//! Payloads are KMS ciphertext blobs, byte for byte. The ring's `aad` is
//! bound through the KMS encryption context, a string map:
//! `{"strongroom:material": "<key id>#v<n>", "strongroom:aad-sha256":
//! base64(SHA-256(aad))}`. The digest (rather than the `aad` itself) keeps
//! the context a fixed, small size whatever the caller's encryption context
//! is (KMS limits it); it binds the `aad` as strongly, since decryption with
//! other `aad` presents a different digest and KMS refuses. Whatever KMS
//! refuses as a ciphertext (`InvalidCiphertextException`,
//! `IncorrectKeyException`) is [`Error::DecryptionFailed`].
//!
//! # Nothing half-made
//!
//! `generate` first checks that the alias is free, then creates the key,
//! then the alias; if the alias cannot be made, the new key is scheduled
//! for deletion at once, so a failed `generate` leaves no usable material.
//! One case is beyond reach: a `CreateKey` whose answer is lost (timed out
//! after KMS acted) leaves a key without an alias; every key carries the
//! tag `strongroom:material = <key id>#v<n>` so an operator can find and
//! delete such keys.
//!
//! # Requests
//!
//! Every request is signed with AWS Signature Version 4
//! ([`crate::interop::sigv4`]) at the time of the configured clock. The
//! secret key never leaves the process: it only keys the HMAC. Refused
//! credentials or permissions are [`Error::Configuration`] and name the KMS
//! error code only.

mod config;
mod wire;

pub use config::AwsKmsConfig;

use super::http::{Transport, plain, sensitive};
use super::{KeyBackend, MAX_BACKEND_PAYLOAD, MaterialId, SigningBackend};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::interop::sigv4::{self, Credentials, Scope};
use crate::key::KeySpec;
use crate::limits::DELETION_WINDOW_DAYS;
use crate::secret::SecretBytes;
use base64ct::{Base64, Encoding};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use ureq::http::Method;
use wire::{AUTH_CODES, Fault, b64_field, fault, kms_spec, later, wipe};
use zeroize::Zeroizing;

/// Master keys held in AWS KMS; see the module docs.
pub struct AwsKmsBackend {
    url: String,
    host: String,
    region: String,
    credentials: Credentials,
    prefix: String,
    /// The adopted key's KeyId, resolved at connect.
    adopted: Option<String>,
    window: u32,
    clock: Arc<dyn Clock>,
    http: Transport,
}

impl fmt::Debug for AwsKmsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsBackend")
            .field("url", &self.url)
            .field("region", &self.region)
            .field("access_key_id", &self.credentials.access_key_id())
            .field("prefix", &self.prefix)
            .field("adopted", &self.adopted)
            .finish_non_exhaustive()
    }
}

impl AwsKmsBackend {
    /// Connects: checks the configuration and the credentials (one
    /// `ListKeys` call, or `DescribeKey` of the adopted key). Refused
    /// credentials are [`Error::Configuration`]; an unreachable endpoint is
    /// [`Error::Unavailable`] after the configured retries.
    pub fn connect(config: &AwsKmsConfig) -> Result<Self> {
        let endpoint = config.endpoint.trim_end_matches('/');
        let host = endpoint
            .strip_prefix("https://")
            .or_else(|| endpoint.strip_prefix("http://"))
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| {
                Error::Configuration(format!(
                    "KMS endpoint must be http(s)://host[:port] without a path, not {endpoint:?}"
                ))
            })?;
        let ok_region = !config.region.is_empty()
            && config
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let ok_prefix = config
            .alias_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'));
        if !ok_region || !ok_prefix || !DELETION_WINDOW_DAYS.contains(&config.pending_window_days) {
            return Err(Error::Configuration(
                "KMS region must be like us-east-1, the alias prefix may contain A-Z a-z 0-9 / _ -, \
                 and the deletion window is 7 to 30 days"
                    .into(),
            ));
        }
        let mut backend = AwsKmsBackend {
            url: format!("{endpoint}/"),
            host: host.to_owned(),
            region: config.region.clone(),
            credentials: config.credentials.clone(),
            prefix: config.alias_prefix.clone(),
            adopted: None,
            window: config.pending_window_days,
            clock: config.clock.clone(),
            http: Transport::new("AWS KMS", config.retry.clone())?,
        };
        match &config.adopt_key {
            Some(key) => {
                let meta = backend.describe(key)?.ok_or_else(|| {
                    Error::Configuration(format!("the adopted KMS key {key} does not exist"))
                })?;
                let usable = meta["KeyState"] == "Enabled"
                    && meta["KeySpec"] == "SYMMETRIC_DEFAULT"
                    && meta["KeyUsage"] == "ENCRYPT_DECRYPT";
                if !usable {
                    return Err(Error::Configuration(format!(
                        "the adopted KMS key {key} must be an enabled symmetric encryption key"
                    )));
                }
                backend.adopted = meta["KeyId"].as_str().map(str::to_owned);
            }
            None => {
                backend
                    .call("ListKeys", &json!({"Limit": 1}))?
                    .map_err(|f| f.into_error("ListKeys"))?;
            }
        }
        Ok(backend)
    }

    /// Requests sent to KMS so far (every attempt counts).
    pub fn remote_calls(&self) -> u64 {
        self.http.requests()
    }

    /// The alias of a material id.
    pub fn alias_name(&self, id: &MaterialId) -> String {
        format!(
            "alias/{}{}/v{}",
            self.prefix,
            id.key_id.as_str().replace(':', "/"),
            id.version
        )
    }

    /// One KMS action. Auth failures become [`Error::Configuration`]; other
    /// error answers are returned as a [`Fault`] for the caller to map.
    fn call(
        &self,
        action: &'static str,
        body: &Value,
    ) -> Result<std::result::Result<Value, Fault>> {
        let body = Zeroizing::new(serde_json::to_vec(body).map_err(|e| Error::Other(Arc::new(e)))?);
        let target = format!("TrentService.{action}");
        let headers = || {
            let date = sigv4::amz_date(self.clock.now().0);
            let scope = Scope {
                date_time: &date,
                region: &self.region,
                service: "kms",
            };
            let base = [
                ("host", self.host.as_str()),
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", target.as_str()),
            ];
            let added = sigv4::sign("POST", "/", "", &base, &body, &self.credentials, &scope)?;
            let mut h = vec![
                ("host", plain(&self.host)?),
                ("content-type", plain("application/x-amz-json-1.1")?),
                ("x-amz-target", plain(&target)?),
            ];
            for (name, value) in &added {
                let name = match name.as_str() {
                    "x-amz-date" => "x-amz-date",
                    "x-amz-security-token" => "x-amz-security-token",
                    _ => "authorization",
                };
                h.push((name, sensitive(value)?));
            }
            Ok(h)
        };
        let reply = self
            .http
            .send(Method::POST, &self.url, &headers, &body, &later)?;
        if reply.status == 200 {
            let v = serde_json::from_slice(&reply.body).map_err(|e| Error::Other(Arc::new(e)))?;
            return Ok(Ok(v));
        }
        let (code, message) = fault(&reply);
        if matches!(reply.status, 401 | 403) || AUTH_CODES.contains(&code.as_str()) {
            return Err(Error::Configuration(format!(
                "AWS KMS refused {action} ({}): check the access key, secret, region and key policy",
                if code.is_empty() {
                    format!("HTTP {}", reply.status)
                } else {
                    code
                }
            )));
        }
        Ok(Err(Fault { code, message }))
    }

    /// `DescribeKey`'s KeyMetadata, or `None` for an unknown key or alias.
    fn describe(&self, key: &str) -> Result<Option<Value>> {
        match self.call("DescribeKey", &json!({"KeyId": key}))? {
            Ok(v) => Ok(Some(v["KeyMetadata"].clone())),
            Err(f) if f.code == "NotFoundException" => Ok(None),
            Err(f) => Err(f.into_error("DescribeKey")),
        }
    }

    fn context(id: &MaterialId, aad: &[u8]) -> Value {
        json!({
            "strongroom:material": id.to_string(),
            "strongroom:aad-sha256": Base64::encode_string(&Sha256::digest(aad)),
        })
    }

    fn schedule_deletion(&self, key_id: &str) -> Result<()> {
        let req = json!({"KeyId": key_id, "PendingWindowInDays": self.window});
        match self.call("ScheduleKeyDeletion", &req)? {
            Ok(_) => Ok(()),
            Err(f)
                if matches!(
                    f.code.as_str(),
                    "NotFoundException" | "KMSInvalidStateException"
                ) =>
            {
                Ok(())
            }
            Err(f) => Err(f.into_error("ScheduleKeyDeletion")),
        }
    }
}

impl KeyBackend for AwsKmsBackend {
    fn name(&self) -> &str {
        "aws-kms"
    }

    /// AES-256-GCM keys (KMS symmetric keys are AES-256-GCM) and ECDSA
    /// P-256 signing keys.
    fn supports(&self, spec: KeySpec) -> bool {
        kms_spec(spec).is_some()
    }

    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        let (key_spec, usage) = kms_spec(spec).ok_or_else(|| {
            Error::Unsupported(format!("AWS KMS backend cannot hold {spec} keys"))
        })?;
        let alias = self.alias_name(id);
        if alias.len() > 256 {
            return Err(Error::invalid(format!(
                "KMS alias for {id} would exceed 256 characters"
            )));
        }
        if self.describe(&alias)?.is_some() {
            return Err(Error::invalid(format!("material {id} already exists")));
        }
        let (target, created) = match (&self.adopted, spec) {
            (Some(k), KeySpec::Symmetric(_)) => (k.clone(), false),
            _ => {
                let req = json!({
                    "KeySpec": key_spec,
                    "KeyUsage": usage,
                    "Description": format!("strongroom {id}"),
                    "Tags": [{"TagKey": "strongroom:material", "TagValue": id.to_string()}],
                });
                let v = self
                    .call("CreateKey", &req)?
                    .map_err(|f| f.into_error("CreateKey"))?;
                let key_id = v["KeyMetadata"]["KeyId"].as_str().ok_or_else(|| {
                    Fault {
                        code: "MalformedAnswer".into(),
                        message: "no KeyId".into(),
                    }
                    .into_error("CreateKey")
                })?;
                (key_id.to_owned(), true)
            }
        };
        let linked = self
            .call(
                "CreateAlias",
                &json!({"AliasName": alias, "TargetKeyId": target}),
            )
            .and_then(|r| {
                r.map_err(|f| match f.code.as_str() {
                    "AlreadyExistsException" => {
                        Error::invalid(format!("material {id} already exists"))
                    }
                    _ => f.into_error("CreateAlias"),
                })
            });
        if let Err(e) = linked {
            // Nothing half-made: the key without its alias goes away.
            if created {
                let _ = self.schedule_deletion(&target);
            }
            return Err(e);
        }
        Ok(())
    }

    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let pt = Zeroizing::new(Base64::encode_string(plaintext));
        let mut req = json!({
            "KeyId": self.alias_name(id),
            "Plaintext": pt.as_str(),
            "EncryptionContext": Self::context(id, aad),
        });
        let answer = self.call("Encrypt", &req);
        wipe(&mut req, "Plaintext");
        match answer? {
            Ok(mut v) => {
                let blob = b64_field(&mut v, "CiphertextBlob")
                    .filter(|b| !b.is_empty() && b.len() <= MAX_BACKEND_PAYLOAD)
                    .ok_or_else(|| {
                        Fault {
                            code: "MalformedAnswer".into(),
                            message: "bad CiphertextBlob".into(),
                        }
                        .into_error("Encrypt")
                    })?;
                Ok(blob.to_vec())
            }
            Err(f) if f.code == "NotFoundException" => Err(Error::KeyNotFound(id.to_string())),
            Err(f) => Err(f.into_error("Encrypt")),
        }
    }

    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        if payload.is_empty() || payload.len() > MAX_BACKEND_PAYLOAD {
            return Err(Error::DecryptionFailed);
        }
        let req = json!({
            "KeyId": self.alias_name(id),
            "CiphertextBlob": Base64::encode_string(payload),
            "EncryptionContext": Self::context(id, aad),
        });
        match self.call("Decrypt", &req)? {
            Ok(mut v) => {
                let pt = b64_field(&mut v, "Plaintext").ok_or(Error::DecryptionFailed)?;
                Ok(SecretBytes::from_slice(&pt))
            }
            Err(f) => Err(match f.code.as_str() {
                "NotFoundException" => Error::KeyNotFound(id.to_string()),
                "InvalidCiphertextException" | "IncorrectKeyException" => Error::DecryptionFailed,
                _ => f.into_error("Decrypt"),
            }),
        }
    }

    fn destroy(&self, id: &MaterialId) -> Result<()> {
        let alias = self.alias_name(id);
        let Some(meta) = self.describe(&alias)? else {
            return Ok(());
        };
        let key_id = meta["KeyId"].as_str().unwrap_or_default().to_owned();
        if self.adopted.as_deref() != Some(key_id.as_str()) && meta["KeyState"] != "PendingDeletion"
        {
            // First the key, then the alias: a failure in between leaves a
            // key pending deletion, which counts as absent, never a live
            // key without a name.
            self.schedule_deletion(&key_id)?;
        }
        match self.call("DeleteAlias", &json!({"AliasName": alias}))? {
            Ok(_) => Ok(()),
            Err(f) if f.code == "NotFoundException" => Ok(()),
            Err(f) => Err(f.into_error("DeleteAlias")),
        }
    }

    fn contains(&self, id: &MaterialId) -> Result<bool> {
        Ok(self.describe(&self.alias_name(id))?.is_some_and(|m| {
            !matches!(
                m["KeyState"].as_str(),
                Some("PendingDeletion" | "PendingReplicaDeletion")
            )
        }))
    }

    fn signing(&self) -> Option<&dyn SigningBackend> {
        Some(self)
    }
}

impl SigningBackend for AwsKmsBackend {
    fn sign(&self, id: &MaterialId, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() != 32 {
            return Err(Error::invalid("ECDSA P-256 signs a 32-byte SHA-256 digest"));
        }
        let req = json!({
            "KeyId": self.alias_name(id),
            "Message": Base64::encode_string(data),
            "MessageType": "DIGEST",
            "SigningAlgorithm": "ECDSA_SHA_256",
        });
        let v = match self.call("Sign", &req)? {
            Ok(v) => v,
            Err(f) if f.code == "NotFoundException" => {
                return Err(Error::KeyNotFound(id.to_string()));
            }
            Err(f) => return Err(f.into_error("Sign")),
        };
        let mut v = v;
        let der = b64_field(&mut v, "Signature").unwrap_or_default();
        let sig = p256::ecdsa::Signature::from_der(&der).map_err(|_| {
            Fault {
                code: "MalformedAnswer".into(),
                message: "signature is not DER ECDSA".into(),
            }
            .into_error("Sign")
        })?;
        Ok(sig.to_bytes().to_vec())
    }

    fn public_key(&self, id: &MaterialId) -> Result<Vec<u8>> {
        match self.call("GetPublicKey", &json!({"KeyId": self.alias_name(id)}))? {
            Ok(mut v) => b64_field(&mut v, "PublicKey")
                .map(|k| k.to_vec())
                .ok_or_else(|| {
                    Fault {
                        code: "MalformedAnswer".into(),
                        message: "no PublicKey".into(),
                    }
                    .into_error("GetPublicKey")
                }),
            Err(f) if f.code == "NotFoundException" => Err(Error::KeyNotFound(id.to_string())),
            Err(f) => Err(f.into_error("GetPublicKey")),
        }
    }
}
