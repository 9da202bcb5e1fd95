//! The AWS KMS JSON 1.1 operations, answered by a strongroom [`KeyRing`].
//!
//! Each request names its operation in `X-Amz-Target: TrentService.<Op>`;
//! its JSON body is read into the strongroom call as that principal's
//! [`Client`], and the answer is KMS's JSON. Errors are KMS's:
//! `{"__type": "...Exception", "message": "..."}`.

use base64ct::{Base64, Encoding};
use serde_json::{Map, Value, json};
use strongroom::envelope::{CiphertextInfo, inspect};
use strongroom::key::RotationKind;
use strongroom::key::{HmacAlgorithm, KeyManager, KeyOrigin, KeyState, KeyUsage};
use strongroom::keyring::{
    DataKeyPairSpec, EnableRotationOptions, GrantSelector, ListAliasesOptions, ListOptions,
    PutKeyPolicyOptions, ScheduleDeletionOptions, SignOptions,
};
use strongroom::policy::{GrantConstraints, GrantRequest, GrantToken, Policy};
use strongroom::verify::MessageType;
use strongroom::{
    Action, Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal,
};
use zeroize::{Zeroize, Zeroizing};

/// A KMS error: the exception name and a message (never a secret).
#[derive(Debug, Clone)]
pub struct KmsError {
    /// `NotFoundException`, ...
    pub type_name: &'static str,
    /// What went wrong.
    pub message: String,
    /// HTTP status (400 for client errors, 500 for internal ones).
    pub status: u16,
}

impl KmsError {
    /// A client error (400).
    pub fn new(type_name: &'static str, message: impl Into<String>) -> Self {
        KmsError {
            type_name,
            message: message.into(),
            status: 400,
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        KmsError::new("ValidationException", message)
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        json!({"__type": self.type_name, "message": self.message})
            .to_string()
            .into_bytes()
    }
}

/// The AWS exception for a strongroom error. Library errors carry no
/// secrets; internal ones are still reduced to a generic message (they may
/// name paths or backends), and the caller logs the detail.
pub fn map_error(e: &Error) -> KmsError {
    let msg = e.to_string();
    match e {
        Error::DecryptionFailed => KmsError::new("InvalidCiphertextException", msg),
        Error::KeyNotFound(_) | Error::AliasNotFound(_) => KmsError::new("NotFoundException", msg),
        Error::AliasExists(_) => KmsError::new("AlreadyExistsException", msg),
        Error::WrongKeyUsage { .. } => KmsError::new("InvalidKeyUsageException", msg),
        Error::InvalidKeyState {
            state: KeyState::Disabled,
            ..
        } => KmsError::new("DisabledException", msg),
        Error::InvalidKeyState { .. } | Error::VersionCannotEncrypt { .. } => {
            KmsError::new("KMSInvalidStateException", msg)
        }
        Error::VersionRetired { .. } => KmsError::new("InvalidCiphertextException", msg),
        Error::IncorrectKey { .. } => KmsError::new("IncorrectKeyException", msg),
        Error::InvalidArgument(_) => KmsError::validation(msg),
        Error::AccessDenied { .. } => KmsError::new("AccessDeniedException", msg),
        Error::Unsupported(_) => KmsError::new("UnsupportedOperationException", msg),
        Error::Conflict(_) => KmsError::new("ConflictException", msg),
        Error::Unavailable(_) => KmsError {
            status: 503,
            ..KmsError::new(
                "DependencyTimeoutException",
                "a dependency is unavailable; retry later",
            )
        },
        _ => KmsError {
            status: 500,
            ..KmsError::new("KMSInternalException", "internal error")
        },
    }
}

impl From<Error> for KmsError {
    fn from(e: Error) -> Self {
        map_error(&e)
    }
}

type R = Result<Value, KmsError>;

/// Region and account of the ARNs, and the ring.
#[derive(Clone)]
pub struct Service {
    /// The key ring.
    pub ring: KeyRing,
    /// `us-east-1`.
    pub region: String,
    /// Twelve digits.
    pub account: String,
}

/// The request body's fields, with typed accessors that fail as
/// `ValidationException` / `SerializationException`. Every string in it is
/// wiped on drop (a `Plaintext` is base64 of a secret).
struct Input(Map<String, Value>);

impl Drop for Input {
    fn drop(&mut self) {
        self.0.values_mut().for_each(wipe);
    }
}

/// Zeroizes every string value in `v`, recursively: the base64 plaintexts,
/// data keys and private keys of requests and answers. Object keys are
/// field names and encryption-context keys, which are not secret.
pub fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => m.values_mut().for_each(wipe),
        _ => {}
    }
}

/// Serializes an answer into a buffer allocated once at its exact size (no
/// reallocation leaves a partial copy behind), then wipes the value.
pub fn to_body(mut v: Value) -> Vec<u8> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing a `Value` to memory cannot fail (its keys are strings).
    let _ = serde_json::to_writer(&mut n, &v);
    let mut out = Vec::with_capacity(n.0);
    let _ = serde_json::to_writer(&mut out, &v);
    wipe(&mut v);
    out
}

impl Input {
    fn parse(body: &[u8]) -> Result<Input, KmsError> {
        if body.is_empty() {
            return Ok(Input(Map::new()));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(Input(m)),
            Ok(mut other) => {
                wipe(&mut other);
                Err(KmsError::new(
                    "SerializationException",
                    "the request body must be a JSON object",
                ))
            }
            Err(_) => Err(KmsError::new(
                "SerializationException",
                "the request body is not valid JSON",
            )),
        }
    }

    fn opt_str(&self, name: &str) -> Result<Option<&str>, KmsError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(KmsError::new(
                "SerializationException",
                format!("{name} must be a string"),
            )),
        }
    }

    fn str(&self, name: &str) -> Result<&str, KmsError> {
        self.opt_str(name)?
            .ok_or_else(|| KmsError::validation(format!("{name} is required")))
    }

    fn opt_u64(&self, name: &str) -> Result<Option<u64>, KmsError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                KmsError::new(
                    "SerializationException",
                    format!("{name} must be a non-negative integer"),
                )
            }),
        }
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, KmsError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(KmsError::new(
                "SerializationException",
                format!("{name} must be a boolean"),
            )),
        }
    }

    /// A base64 blob field, wiped on drop (it may be a plaintext).
    fn opt_blob(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KmsError> {
        let Some(s) = self.opt_str(name)? else {
            return Ok(None);
        };
        Base64::decode_vec(s)
            .map(|v| Some(Zeroizing::new(v)))
            .map_err(|_| {
                KmsError::new(
                    "SerializationException",
                    format!("{name} is not valid base64"),
                )
            })
    }

    fn blob(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        self.opt_blob(name)?
            .ok_or_else(|| KmsError::validation(format!("{name} is required")))
    }

    fn context(&self, name: &str) -> Result<EncryptionContext, KmsError> {
        let mut ctx = EncryptionContext::new();
        match self.0.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let v = v.as_str().ok_or_else(|| {
                        KmsError::new(
                            "SerializationException",
                            format!("{name} values must be strings"),
                        )
                    })?;
                    ctx.insert(k.clone(), v);
                }
                ctx.validate()?;
            }
            Some(_) => {
                return Err(KmsError::new(
                    "SerializationException",
                    format!("{name} must be an object of strings"),
                ));
            }
        }
        Ok(ctx)
    }

    fn str_list(&self, name: &str) -> Result<Vec<String>, KmsError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        KmsError::new(
                            "SerializationException",
                            format!("{name} must be a list of strings"),
                        )
                    })
                })
                .collect(),
            Some(_) => Err(KmsError::new(
                "SerializationException",
                format!("{name} must be a list of strings"),
            )),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    Base64::encode_string(bytes)
}

/// The operation name for logs and audit: as given when it is a known KMS
/// operation name shape (letters only, bounded), else `Unknown`.
pub fn op_name(op: &str) -> &str {
    if !op.is_empty() && op.len() <= 64 && op.bytes().all(|b| b.is_ascii_alphabetic()) {
        op
    } else {
        "Unknown"
    }
}

/// Parses a `Principal` given as strongroom's `kind:name`.
fn principal(s: &str, field: &str) -> Result<Principal, KmsError> {
    s.parse().map_err(|e: Error| {
        KmsError::validation(format!(
            "{field}: {e} (give a strongroom principal such as user:alice)"
        ))
    })
}

/// An [`Action`] from its KMS operation name (`Encrypt`); also accepts
/// `kms:Encrypt` and `strongroom:Encrypt`. The library has no `FromStr`
/// for `Action`; its serde form is the bare variant name.
fn action(s: &str) -> Result<Action, KmsError> {
    let bare = s
        .strip_prefix("kms:")
        .or_else(|| s.strip_prefix("strongroom:"))
        .unwrap_or(s);
    serde_json::from_value::<Action>(Value::String(bare.to_string()))
        .map_err(|_| KmsError::validation(format!("unknown operation {s:?}")))
}

impl Service {
    /// `arn:aws:kms:<region>:<account>:key/<id>`.
    fn arn(&self, key_id: &str) -> String {
        format!("arn:aws:kms:{}:{}:key/{key_id}", self.region, self.account)
    }

    /// A key reference from a KMS KeyId: bare id, key ARN, `alias/...` or
    /// alias ARN. ARNs of another region or account are not ours.
    fn key_ref(&self, s: &str) -> Result<String, KmsError> {
        if let Some(rest) = s.strip_prefix("arn:") {
            let prefix = format!("aws:kms:{}:{}:", self.region, self.account);
            let Some(resource) = rest.strip_prefix(&prefix) else {
                return Err(KmsError::new(
                    "NotFoundException",
                    format!("{s} is not an ARN of this region and account"),
                ));
            };
            if let Some(id) = resource.strip_prefix("key/") {
                return Ok(id.to_string());
            }
            if resource.starts_with("alias/") {
                return Ok(resource.to_string());
            }
            return Err(KmsError::validation(format!(
                "{s} is not a key or alias ARN"
            )));
        }
        if s.is_empty() {
            return Err(KmsError::validation("KeyId must not be empty"));
        }
        Ok(s.to_string())
    }

    /// The ARN of a key reference, for answers: the key's ARN when the
    /// caller may describe it (or named it by id), else the alias's ARN.
    fn arn_of(&self, c: &Client, k: &str) -> String {
        match c.describe_key(k) {
            Ok(r) => self.arn(r.key_id.as_str()),
            Err(_) if k.starts_with("alias/") => {
                format!("arn:aws:kms:{}:{}:{k}", self.region, self.account)
            }
            Err(_) => self.arn(k),
        }
    }

    fn key_id_of_blob(&self, blob: &[u8]) -> Option<String> {
        match inspect(blob) {
            Ok(CiphertextInfo::Blob { key_id, .. }) => Some(self.arn(key_id.as_str())),
            _ => None,
        }
    }

    /// Runs `op` for `principal`.
    pub fn call(&self, principal: Principal, op: &str, body: &[u8]) -> R {
        let c = self.ring.client(principal);
        let input = Input::parse(body)?;
        let i = &input;
        match op {
            "CreateKey" => self.create_key(&c, i),
            "DescribeKey" => self.describe(&c, &self.key_ref(i.str("KeyId")?)?),
            "ListKeys" => self.list_keys(&c, i),
            "EnableKey" => self.unit(c.enable_key(&self.key_ref(i.str("KeyId")?)?)),
            "DisableKey" => self.unit(c.disable_key(&self.key_ref(i.str("KeyId")?)?)),
            "ScheduleKeyDeletion" => self.schedule_deletion(&c, i),
            "CancelKeyDeletion" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                c.cancel_key_deletion(&k)?;
                let arn = self.arn_of(&c, &k);
                Ok(json!({"KeyId": arn}))
            }
            "CreateAlias" => {
                let k = self.key_ref(i.str("TargetKeyId")?)?;
                self.unit(c.create_alias(i.str("AliasName")?, &k))
            }
            "UpdateAlias" => {
                let k = self.key_ref(i.str("TargetKeyId")?)?;
                self.unit(c.update_alias(i.str("AliasName")?, &k))
            }
            "DeleteAlias" => self.unit(c.delete_alias(i.str("AliasName")?)),
            "ListAliases" => self.list_aliases(&c, i),
            "Encrypt" => self.encrypt(&c, i),
            "Decrypt" => self.decrypt(&c, i),
            "GenerateDataKey" => self.generate_data_key(&c, i, true),
            "GenerateDataKeyWithoutPlaintext" => self.generate_data_key(&c, i, false),
            "ReEncrypt" => self.re_encrypt(&c, i),
            "GenerateRandom" => {
                let n = i
                    .opt_u64("NumberOfBytes")?
                    .ok_or_else(|| KmsError::validation("NumberOfBytes is required"))?;
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                let bytes = c.generate_random(n)?;
                Ok(json!({"Plaintext": b64(bytes.expose_secret())}))
            }
            "CreateGrant" => self.create_grant(&c, i),
            "RevokeGrant" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                self.unit(c.revoke_grant(&k, i.str("GrantId")?))
            }
            "ListGrants" => self.list_grants(&c, i),
            "GetKeyPolicy" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                if let Some(name) = i.opt_str("PolicyName")?
                    && name != "default"
                {
                    return Err(KmsError::new(
                        "NotFoundException",
                        "the only policy name is \"default\"",
                    ));
                }
                let p = c.get_key_policy(&k)?;
                Ok(json!({"Policy": p.to_json(), "PolicyName": "default"}))
            }
            "PutKeyPolicy" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                if let Some(name) = i.opt_str("PolicyName")?
                    && name != "default"
                {
                    return Err(KmsError::validation("the only policy name is \"default\""));
                }
                let p = Policy::from_json(i.str("Policy")?).map_err(|e| {
                    KmsError::new("MalformedPolicyDocumentException", e.to_string())
                })?;
                let mut o = PutKeyPolicyOptions::default();
                if i.opt_bool("BypassPolicyLockoutSafetyCheck")? == Some(true) {
                    o = o.bypass_policy_lockout_safety_check();
                }
                self.unit(c.put_key_policy(&k, &p, o))
            }
            "EnableKeyRotation" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                let mut o = EnableRotationOptions::default();
                if let Some(d) = i.opt_u64("RotationPeriodInDays")? {
                    o = o.rotation_period_days(u32::try_from(d).unwrap_or(u32::MAX));
                }
                self.unit(c.enable_key_rotation(&k, o).map(|_| ()))
            }
            "DisableKeyRotation" => {
                self.unit(c.disable_key_rotation(&self.key_ref(i.str("KeyId")?)?))
            }
            "GetKeyRotationStatus" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                let s = c.get_key_rotation_status(&k)?;
                let arn = self.arn_of(&c, &k);
                let mut out = json!({
                    "KeyRotationEnabled": s.schedule.is_some(),
                    "KeyId": arn,
                });
                if let Some(sc) = s.schedule {
                    out["RotationPeriodInDays"] = json!(sc.period_days);
                    out["NextRotationDate"] = json!(sc.next_rotation.as_secs());
                }
                Ok(out)
            }
            "RotateKeyOnDemand" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                c.rotate_key_on_demand(&k)?;
                let arn = self.arn_of(&c, &k);
                Ok(json!({"KeyId": arn}))
            }
            "ListKeyRotations" => self.list_key_rotations(&c, i),
            "RetireGrant" => self.retire_grant(&c, i),
            "GenerateDataKeyPair" => self.generate_data_key_pair(&c, i, true),
            "GenerateDataKeyPairWithoutPlaintext" => self.generate_data_key_pair(&c, i, false),
            "GenerateMac" => self.generate_mac(&c, i),
            "VerifyMac" => self.verify_mac(&c, i),
            "Sign" => self.sign(&c, i),
            "Verify" => self.verify(&c, i),
            "GetPublicKey" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                let p = c.get_public_key(&k)?;
                let (spec, algs) = sign_spec(p.spec);
                Ok(json!({
                    "KeyId": self.arn(p.key_id.as_str()),
                    "PublicKey": b64(&p.der),
                    "KeySpec": spec,
                    "CustomerMasterKeySpec": spec,
                    "KeyUsage": usage_name(p.usage),
                    "SigningAlgorithms": algs,
                }))
            }
            "TagResource" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                let tags = tag_list(i)?;
                let pairs: Vec<(&str, &str)> =
                    tags.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                self.unit(c.tag_resource(&k, &pairs))
            }
            "UntagResource" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                let keys = i.str_list("TagKeys")?;
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                self.unit(c.untag_resource(&k, &keys))
            }
            "ListResourceTags" => {
                let k = self.key_ref(i.str("KeyId")?)?;
                let tags = c.list_resource_tags(&k)?;
                let list: Vec<Value> = tags
                    .iter()
                    .map(|(k, v)| json!({"TagKey": k, "TagValue": v}))
                    .collect();
                Ok(json!({"Tags": list, "Truncated": false}))
            }
            other => Err(KmsError::new(
                "UnsupportedOperationException",
                format!("operation {other:?} is not supported by this endpoint"),
            )),
        }
    }

    fn unit(&self, r: strongroom::Result<()>) -> R {
        r?;
        Ok(json!({}))
    }

    fn create_key(&self, c: &Client, i: &Input) -> R {
        let spec_name = match (i.opt_str("KeySpec")?, i.opt_str("CustomerMasterKeySpec")?) {
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => "SYMMETRIC_DEFAULT",
        };
        let spec = match spec_name {
            "SYMMETRIC_DEFAULT" | "SYMMETRIC_AES_256_GCM" => KeySpec::default(),
            "SYMMETRIC_CHACHA20_POLY1305" => {
                KeySpec::Symmetric(strongroom::key::SymmetricAlgorithm::ChaCha20Poly1305)
            }
            "ECC_NIST_P256" => KeySpec::EccNistP256,
            "ECC_NIST_EDWARDS25519" | "ED25519" => KeySpec::Ed25519,
            "HMAC_256" => KeySpec::Hmac(HmacAlgorithm::Sha256),
            "HMAC_384" => KeySpec::Hmac(HmacAlgorithm::Sha384),
            "HMAC_512" => KeySpec::Hmac(HmacAlgorithm::Sha512),
            other => {
                return Err(KmsError::validation(format!(
                    "KeySpec {other:?} is not supported (SYMMETRIC_DEFAULT, ECC_NIST_P256, \
                     ECC_NIST_EDWARDS25519, HMAC_256, HMAC_384, HMAC_512)"
                )));
            }
        };
        let mut o = CreateKeyOptions::new();
        if let Some(u) = i.opt_str("KeyUsage")? {
            o = o.usage(match u {
                "ENCRYPT_DECRYPT" => KeyUsage::EncryptDecrypt,
                "SIGN_VERIFY" => KeyUsage::SignVerify,
                "GENERATE_VERIFY_MAC" => KeyUsage::GenerateVerifyMac,
                other => {
                    return Err(KmsError::validation(format!(
                        "KeyUsage {other:?} is not supported"
                    )));
                }
            });
        }
        if let Some(d) = i.opt_str("Description")? {
            o = o.description(d);
        }
        for (k, v) in tag_list(i)? {
            o = o.tag(k, v);
        }
        if let Some(origin) = i.opt_str("Origin")?
            && origin != "AWS_KMS"
        {
            return Err(KmsError::new(
                "UnsupportedOperationException",
                "only Origin AWS_KMS is supported",
            ));
        }
        if i.opt_str("Policy")?.is_some() {
            return Err(KmsError::new(
                "UnsupportedOperationException",
                "a Policy at creation is not supported: call PutKeyPolicy after CreateKey",
            ));
        }
        let id = c.create_key(spec, o)?;
        self.describe(c, id.as_str())
    }

    fn describe(&self, c: &Client, key: &str) -> R {
        let r = c.describe_key(key)?;
        let id = r.key_id.as_str();
        let (state, enabled, deletion) = match r.state {
            KeyState::Enabled => ("Enabled", true, None),
            KeyState::Disabled => ("Disabled", false, None),
            KeyState::PendingDeletion { deletion_date } => {
                ("PendingDeletion", false, Some(deletion_date.as_secs()))
            }
            _ => ("Unavailable", false, None),
        };
        let (spec, signing) = sign_spec(r.spec);
        let mut m = json!({
            "AWSAccountId": self.account,
            "KeyId": id,
            "Arn": self.arn(id),
            "CreationDate": r.created_at.as_secs(),
            "Enabled": enabled,
            "Description": r.description,
            "KeyUsage": usage_name(r.usage),
            "KeyState": state,
            "Origin": if r.origin == KeyOrigin::Imported { "EXTERNAL" } else { "AWS_KMS" },
            "KeyManager": if r.manager == KeyManager::Customer { "CUSTOMER" } else { "AWS" },
            "KeySpec": spec,
            "CustomerMasterKeySpec": spec,
            "MultiRegion": false,
        });
        if let Some(d) = deletion {
            m["DeletionDate"] = json!(d);
        }
        match r.usage {
            KeyUsage::EncryptDecrypt => m["EncryptionAlgorithms"] = json!(["SYMMETRIC_DEFAULT"]),
            KeyUsage::SignVerify => m["SigningAlgorithms"] = json!(signing),
            KeyUsage::GenerateVerifyMac => {
                m["MacAlgorithms"] = json!([match r.spec {
                    KeySpec::Hmac(HmacAlgorithm::Sha384) => "HMAC_SHA_384",
                    KeySpec::Hmac(HmacAlgorithm::Sha512) => "HMAC_SHA_512",
                    _ => "HMAC_SHA_256",
                }])
            }
            _ => {}
        }
        Ok(json!({"KeyMetadata": m}))
    }

    fn list_keys(&self, c: &Client, i: &Input) -> R {
        let mut o = ListOptions::default();
        if let Some(l) = i.opt_u64("Limit")? {
            o = o.limit(usize::try_from(l).unwrap_or(usize::MAX));
        }
        if let Some(m) = i.opt_str("Marker")? {
            o = o.marker(m);
        }
        let page = c.list_keys(o)?;
        let keys: Vec<Value> = page
            .items
            .iter()
            .map(|k| json!({"KeyId": k.key_id.as_str(), "KeyArn": self.arn(k.key_id.as_str())}))
            .collect();
        let mut out = json!({"Keys": keys, "Truncated": page.next_marker.is_some()});
        if let Some(m) = page.next_marker {
            out["NextMarker"] = json!(m);
        }
        Ok(out)
    }

    fn list_aliases(&self, c: &Client, i: &Input) -> R {
        let mut o = ListAliasesOptions::default();
        if let Some(k) = i.opt_str("KeyId")? {
            o = o.key(self.key_ref(k)?);
        }
        if let Some(l) = i.opt_u64("Limit")? {
            o = o.limit(usize::try_from(l).unwrap_or(usize::MAX));
        }
        if let Some(m) = i.opt_str("Marker")? {
            o = o.marker(m);
        }
        let page = c.list_aliases(o)?;
        let list: Vec<Value> = page
            .items
            .iter()
            .map(|a| {
                json!({
                    "AliasName": a.alias.to_string(),
                    "AliasArn": format!("arn:aws:kms:{}:{}:{}", self.region, self.account, a.alias),
                    "TargetKeyId": a.key_id.as_str(),
                })
            })
            .collect();
        let mut out = json!({"Aliases": list, "Truncated": page.next_marker.is_some()});
        if let Some(m) = page.next_marker {
            out["NextMarker"] = json!(m);
        }
        Ok(out)
    }

    fn schedule_deletion(&self, c: &Client, i: &Input) -> R {
        let k = self.key_ref(i.str("KeyId")?)?;
        let mut o = ScheduleDeletionOptions::default();
        if let Some(d) = i.opt_u64("PendingWindowInDays")? {
            o = o.pending_window_days(u32::try_from(d).unwrap_or(u32::MAX));
        }
        let date = c.schedule_key_deletion(&k, o)?;
        let arn = self.arn_of(c, &k);
        Ok(json!({
            "KeyId": arn,
            "DeletionDate": date.as_secs(),
            "KeyState": "PendingDeletion",
            "PendingWindowInDays": o.pending_window_days.unwrap_or(30),
        }))
    }

    fn check_symmetric(i: &Input, field: &str) -> Result<(), KmsError> {
        match i.opt_str(field)? {
            None | Some("SYMMETRIC_DEFAULT") => Ok(()),
            Some(other) => Err(KmsError::validation(format!(
                "{field} {other:?} is not supported: only SYMMETRIC_DEFAULT"
            ))),
        }
    }

    fn encrypt(&self, c: &Client, i: &Input) -> R {
        Self::check_symmetric(i, "EncryptionAlgorithm")?;
        let k = self.key_ref(i.str("KeyId")?)?;
        let pt = i.blob("Plaintext")?;
        let ctx = i.context("EncryptionContext")?;
        let blob = c.encrypt(&k, &pt, &ctx)?;
        Ok(json!({
            "CiphertextBlob": b64(&blob),
            "KeyId": self.key_id_of_blob(&blob),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }))
    }

    fn decrypt(&self, c: &Client, i: &Input) -> R {
        Self::check_symmetric(i, "EncryptionAlgorithm")?;
        let blob = i.blob("CiphertextBlob")?;
        let ctx = i.context("EncryptionContext")?;
        let d = match i.opt_str("KeyId")? {
            Some(k) => c.decrypt_with_key(&blob, &ctx, &self.key_ref(k)?)?,
            None => c.decrypt(&blob, &ctx)?,
        };
        let pt = Zeroizing::new(b64(d.plaintext.expose_secret()));
        Ok(json!({
            "KeyId": self.arn(d.key_id.as_str()),
            "Plaintext": pt.as_str(),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }))
    }

    fn generate_data_key(&self, c: &Client, i: &Input, with_plaintext: bool) -> R {
        match (i.opt_str("KeySpec")?, i.opt_u64("NumberOfBytes")?) {
            (Some("AES_256"), None) | (None, Some(32)) => {}
            (None, None) => {
                return Err(KmsError::validation("KeySpec or NumberOfBytes is required"));
            }
            _ => {
                return Err(KmsError::validation(
                    "only 256-bit data keys are supported: KeySpec AES_256 or NumberOfBytes 32",
                ));
            }
        }
        let k = self.key_ref(i.str("KeyId")?)?;
        let ctx = i.context("EncryptionContext")?;
        if with_plaintext {
            let dk = c.generate_data_key(&k, &ctx)?;
            let pt = Zeroizing::new(b64(dk.plaintext().expose_secret()));
            Ok(json!({
                "CiphertextBlob": b64(dk.ciphertext()),
                "Plaintext": pt.as_str(),
                "KeyId": self.arn(dk.key_id().as_str()),
            }))
        } else {
            let blob = c.generate_data_key_without_plaintext(&k, &ctx)?;
            Ok(json!({
                "CiphertextBlob": b64(&blob),
                "KeyId": self.key_id_of_blob(&blob),
            }))
        }
    }

    fn re_encrypt(&self, c: &Client, i: &Input) -> R {
        Self::check_symmetric(i, "SourceEncryptionAlgorithm")?;
        Self::check_symmetric(i, "DestinationEncryptionAlgorithm")?;
        let blob = i.blob("CiphertextBlob")?;
        let src_ctx = i.context("SourceEncryptionContext")?;
        let dst = self.key_ref(i.str("DestinationKeyId")?)?;
        let dst_ctx = i.context("DestinationEncryptionContext")?;
        let source = self.key_id_of_blob(&blob);
        if let Some(want) = i.opt_str("SourceKeyId")? {
            let want = self.key_ref(want)?;
            let want_id = if want.starts_with("alias/") {
                c.describe_key(&want)?.key_id.to_string()
            } else {
                want
            };
            if source.as_deref() != Some(self.arn(&want_id).as_str()) {
                return Err(KmsError::new(
                    "IncorrectKeyException",
                    "the ciphertext was not encrypted under SourceKeyId",
                ));
            }
        }
        let out = c.re_encrypt(&blob, &src_ctx, &dst, &dst_ctx)?;
        Ok(json!({
            "CiphertextBlob": b64(&out),
            "SourceKeyId": source,
            "KeyId": self.key_id_of_blob(&out),
            "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "DestinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }))
    }

    fn create_grant(&self, c: &Client, i: &Input) -> R {
        let k = self.key_ref(i.str("KeyId")?)?;
        let grantee = principal(i.str("GranteePrincipal")?, "GranteePrincipal")?;
        let ops = i.str_list("Operations")?;
        if ops.is_empty() {
            return Err(KmsError::validation("Operations is required"));
        }
        let mut actions = Vec::new();
        for op in &ops {
            if op == "ReEncryptFrom" || op == "ReEncryptTo" || op == "ReEncrypt" {
                actions.push(if op == "ReEncryptTo" {
                    Action::ReEncryptTo
                } else {
                    Action::ReEncryptFrom
                });
                if op == "ReEncrypt" {
                    actions.push(Action::ReEncryptTo);
                }
            } else {
                actions.push(action(op)?);
            }
        }
        let mut req = GrantRequest::new(grantee, &actions);
        if let Some(r) = i.opt_str("RetiringPrincipal")? {
            req = req.retiring_principal(principal(r, "RetiringPrincipal")?);
        }
        if let Some(n) = i.opt_str("Name")? {
            req = req.name(n);
        }
        match i.0.get("Constraints") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                let sub = Input(m.clone());
                let eq = sub.0.contains_key("EncryptionContextEquals");
                let subset = sub.0.contains_key("EncryptionContextSubset");
                let mut gc = GrantConstraints::default();
                if eq {
                    gc.context_equals = Some(sub.context("EncryptionContextEquals")?);
                }
                if subset {
                    gc.context_subset = Some(sub.context("EncryptionContextSubset")?);
                }
                req = req.constraints(gc);
            }
            Some(_) => {
                return Err(KmsError::new(
                    "SerializationException",
                    "Constraints must be an object",
                ));
            }
        }
        let g = c.create_grant(&k, req)?;
        Ok(json!({"GrantId": g.grant_id, "GrantToken": g.grant_token.expose_secret()}))
    }

    fn list_grants(&self, c: &Client, i: &Input) -> R {
        let k = self.key_ref(i.str("KeyId")?)?;
        let grants = c.list_grants(&k)?;
        let arn = self.arn_of(c, &k);
        let list: Vec<Value> = grants
            .iter()
            .map(|g| {
                let mut v = json!({
                    "KeyId": arn,
                    "GrantId": g.grant_id,
                    "GranteePrincipal": g.grantee.to_string(),
                    "IssuingAccount": self.account,
                    "Operations": g.operations.iter().map(|a| a.as_str().trim_start_matches("strongroom:")).collect::<Vec<_>>(),
                    "CreationDate": g.created_at.as_secs(),
                });
                if let Some(n) = &g.name {
                    v["Name"] = json!(n);
                }
                if let Some(r) = &g.retiring_principal {
                    v["RetiringPrincipal"] = json!(r.to_string());
                }
                v
            })
            .collect();
        Ok(json!({"Grants": list, "Truncated": false}))
    }

    fn list_key_rotations(&self, c: &Client, i: &Input) -> R {
        let k = self.key_ref(i.str("KeyId")?)?;
        let limit = match i.opt_u64("Limit")? {
            None => 100,
            Some(l @ 1..=1000) => usize::try_from(l).unwrap_or(1000),
            Some(_) => return Err(KmsError::validation("Limit must be between 1 and 1000")),
        };
        // The marker is the index of the next rotation, as this endpoint
        // handed it out.
        let start = match i.opt_str("Marker")? {
            None => 0,
            Some(m) => m
                .parse::<usize>()
                .map_err(|_| KmsError::new("InvalidMarkerException", "Marker is not valid"))?,
        };
        let all = c.list_key_rotations(&k)?;
        let arn = self.arn_of(c, &k);
        if start > all.len() {
            return Err(KmsError::new(
                "InvalidMarkerException",
                "Marker is not valid",
            ));
        }
        let end = start.saturating_add(limit).min(all.len());
        let list: Vec<Value> = all[start..end]
            .iter()
            .map(|r| {
                json!({
                    "KeyId": arn,
                    "RotationDate": r.rotated_at.as_secs(),
                    "RotationType": match r.kind {
                        RotationKind::Automatic => "AUTOMATIC",
                        // Usage-limit and imported rotations were not asked
                        // for by the schedule: KMS's other type.
                        _ => "ON_DEMAND",
                    },
                })
            })
            .collect();
        let mut out = json!({"Rotations": list, "Truncated": end < all.len()});
        if end < all.len() {
            out["NextMarker"] = json!(end.to_string());
        }
        Ok(out)
    }

    fn retire_grant(&self, c: &Client, i: &Input) -> R {
        let which = match (i.opt_str("GrantToken")?, i.opt_str("GrantId")?) {
            (Some(t), _) => GrantSelector::Token(GrantToken::from_string(t.to_string())),
            (None, Some(id)) => GrantSelector::Id(id.to_string()),
            (None, None) => {
                return Err(KmsError::validation("GrantToken or GrantId is required"));
            }
        };
        // KMS finds the key of a grant token itself; strongroom's tokens do
        // not name their key, so this endpoint needs KeyId with either.
        let k = self.key_ref(i.opt_str("KeyId")?.ok_or_else(|| {
            KmsError::validation("KeyId is required (this endpoint looks grants up by key)")
        })?)?;
        match c.retire_grant(&k, which) {
            Err(Error::InvalidArgument(m)) if m.contains("no such grant") => Err(KmsError::new(
                "NotFoundException",
                "no such grant on this key",
            )),
            r => self.unit(r),
        }
    }

    fn generate_data_key_pair(&self, c: &Client, i: &Input, with_plaintext: bool) -> R {
        let spec_name = i.str("KeyPairSpec")?;
        let spec = match spec_name {
            "ECC_NIST_P256" => DataKeyPairSpec::EccNistP256,
            "ECC_NIST_EDWARDS25519" => DataKeyPairSpec::Ed25519,
            "RSA_2048" | "RSA_3072" | "RSA_4096" | "ECC_NIST_P384" | "ECC_NIST_P521"
            | "ECC_SECG_P256K1" | "SM2" => {
                return Err(KmsError::new(
                    "UnsupportedOperationException",
                    format!(
                        "KeyPairSpec {spec_name} is not supported (ECC_NIST_P256, ECC_NIST_EDWARDS25519)"
                    ),
                ));
            }
            other => {
                return Err(KmsError::validation(format!(
                    "KeyPairSpec {other:?} is not a KMS key pair spec"
                )));
            }
        };
        if i.0.contains_key("Recipient") {
            return Err(KmsError::new(
                "UnsupportedOperationException",
                "Recipient (Nitro Enclaves attestation) is not supported",
            ));
        }
        let k = self.key_ref(i.str("KeyId")?)?;
        let ctx = i.context("EncryptionContext")?;
        let pair = if with_plaintext {
            c.generate_data_key_pair(&k, spec, &ctx)?
        } else {
            c.generate_data_key_pair_without_plaintext(&k, spec, &ctx)?
        };
        let mut out = json!({
            "PrivateKeyCiphertextBlob": b64(&pair.private_key_ciphertext),
            "PublicKey": b64(&pair.public_key_der),
            "KeyId": self.arn(pair.key_id.as_str()),
            "KeyPairSpec": spec_name,
        });
        if let Some(sk) = &pair.private_key_plaintext {
            // Moved into the JSON value, which the caller wipes after
            // serializing (see `wipe`).
            out["PrivateKeyPlaintext"] = Value::String(b64(sk.expose_secret()));
        }
        Ok(out)
    }

    /// The key's MAC algorithm must be the one asked for, as KMS checks.
    fn check_mac_algorithm(c: &Client, k: &str, i: &Input) -> Result<&'static str, KmsError> {
        let want = i.str("MacAlgorithm")?;
        let name = match want {
            "HMAC_SHA_224" | "HMAC_SHA_256" | "HMAC_SHA_384" | "HMAC_SHA_512" => want,
            other => {
                return Err(KmsError::validation(format!(
                    "MacAlgorithm {other:?} is not a KMS MAC algorithm"
                )));
            }
        };
        let spec = c.describe_key(k)?.spec;
        let have = match spec {
            KeySpec::Hmac(HmacAlgorithm::Sha256) => "HMAC_SHA_256",
            KeySpec::Hmac(HmacAlgorithm::Sha384) => "HMAC_SHA_384",
            KeySpec::Hmac(HmacAlgorithm::Sha512) => "HMAC_SHA_512",
            // Not an HMAC key: the library refuses it with its usage error.
            _ => return Ok(mac_name(name)),
        };
        if have != name {
            return Err(KmsError::new(
                "InvalidKeyUsageException",
                format!("the key's MAC algorithm is {have}, not {name}"),
            ));
        }
        Ok(have)
    }

    fn generate_mac(&self, c: &Client, i: &Input) -> R {
        let k = self.key_ref(i.str("KeyId")?)?;
        let msg = i.blob("Message")?;
        let alg = Self::check_mac_algorithm(c, &k, i)?;
        let mac = c.generate_mac(&k, &msg)?;
        let arn = self.arn_of(c, &k);
        Ok(json!({"KeyId": arn, "Mac": b64(&mac), "MacAlgorithm": alg}))
    }

    fn verify_mac(&self, c: &Client, i: &Input) -> R {
        let k = self.key_ref(i.str("KeyId")?)?;
        let msg = i.blob("Message")?;
        let mac = i.blob("Mac")?;
        let alg = Self::check_mac_algorithm(c, &k, i)?;
        if !c.verify_mac(&k, &msg, &mac)? {
            // As KMS: a wrong MAC is an error, not `false`.
            return Err(KmsError::new(
                "KMSInvalidMacException",
                "the MAC is not valid for this message and key",
            ));
        }
        let arn = self.arn_of(c, &k);
        Ok(json!({"KeyId": arn, "MacValid": true, "MacAlgorithm": alg}))
    }

    fn sign_options(i: &Input) -> Result<SignOptions, KmsError> {
        let mut o = SignOptions::default();
        match i.opt_str("MessageType")? {
            None | Some("RAW") => {}
            Some("DIGEST") => o = o.message_type(MessageType::Digest),
            Some(other) => {
                return Err(KmsError::validation(format!(
                    "MessageType {other:?} is not supported (RAW, DIGEST)"
                )));
            }
        }
        match i.str("SigningAlgorithm")? {
            "ECDSA_SHA_256" | "ED25519_SHA_512" => Ok(o),
            other => Err(KmsError::validation(format!(
                "SigningAlgorithm {other:?} is not supported (ECDSA_SHA_256, ED25519_SHA_512)"
            ))),
        }
    }

    fn sign(&self, c: &Client, i: &Input) -> R {
        let k = self.key_ref(i.str("KeyId")?)?;
        let o = Self::sign_options(i)?;
        let msg = i.blob("Message")?;
        let sig = c.sign(&k, &msg, o)?;
        let arn = self.arn_of(c, &k);
        Ok(json!({
            "KeyId": arn,
            "Signature": b64(&sig),
            "SigningAlgorithm": i.str("SigningAlgorithm")?,
        }))
    }

    fn verify(&self, c: &Client, i: &Input) -> R {
        let k = self.key_ref(i.str("KeyId")?)?;
        let o = Self::sign_options(i)?;
        let msg = i.blob("Message")?;
        let sig = i.blob("Signature")?;
        if !c.verify(&k, &msg, &sig, o)? {
            // As KMS: a wrong signature is an error, not `false`.
            return Err(KmsError::new(
                "KMSInvalidSignatureException",
                "the signature is not valid for this message and key",
            ));
        }
        let arn = self.arn_of(c, &k);
        Ok(json!({
            "KeyId": arn,
            "SignatureValid": true,
            "SigningAlgorithm": i.str("SigningAlgorithm")?,
        }))
    }
}

fn tag_list(i: &Input) -> Result<Vec<(String, String)>, KmsError> {
    let bad = || {
        KmsError::new(
            "SerializationException",
            "Tags must be a list of {TagKey, TagValue}",
        )
    };
    match i.0.get("Tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                let k = t.get("TagKey").and_then(Value::as_str).ok_or_else(bad)?;
                let v = t.get("TagValue").and_then(Value::as_str).ok_or_else(bad)?;
                Ok((k.to_string(), v.to_string()))
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// The static name of a checked MAC algorithm.
fn mac_name(s: &str) -> &'static str {
    match s {
        "HMAC_SHA_224" => "HMAC_SHA_224",
        "HMAC_SHA_384" => "HMAC_SHA_384",
        "HMAC_SHA_512" => "HMAC_SHA_512",
        _ => "HMAC_SHA_256",
    }
}

fn usage_name(u: KeyUsage) -> &'static str {
    match u {
        KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
        KeyUsage::SignVerify => "SIGN_VERIFY",
        KeyUsage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
        _ => "UNKNOWN",
    }
}

/// KMS's name of a spec, and its signing algorithms (empty if it does not sign).
fn sign_spec(s: KeySpec) -> (&'static str, Vec<&'static str>) {
    match s {
        KeySpec::Symmetric(_) => ("SYMMETRIC_DEFAULT", vec![]),
        KeySpec::EccNistP256 => ("ECC_NIST_P256", vec!["ECDSA_SHA_256"]),
        KeySpec::Ed25519 => ("ECC_NIST_EDWARDS25519", vec!["ED25519_SHA_512"]),
        other => (other.as_str(), vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_clears_every_string_value() {
        let mut v = json!({
            "Plaintext": "c2VjcmV0",
            "Nested": ["a", {"PrivateKeyPlaintext": "MIGH"}],
            "Number": 5,
        });
        wipe(&mut v);
        assert_eq!(
            v,
            json!({"Plaintext": "", "Nested": ["", {"PrivateKeyPlaintext": ""}], "Number": 5})
        );
    }

    #[test]
    fn to_body_is_the_json_in_an_exact_buffer() {
        let v = json!({"Plaintext": "c2VjcmV0", "KeyId": "arn:aws:kms:x", "List": [1, "two"]});
        let expected = serde_json::to_vec(&v).unwrap();
        let body = to_body(v);
        assert_eq!(body, expected);
        assert_eq!(body.capacity(), body.len(), "the buffer was reallocated");
    }
}
