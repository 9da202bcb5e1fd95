//! Keys: identifiers, aliases, specs, usages, states and metadata.

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::principal::Principal;
use crate::random::{RandomSource, random_array};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The identifier of a key in a ring: 36 characters, UUID form
/// (`1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633c`).
///
/// Any string of 1 to 255 characters of `[A-Za-z0-9_:-]` is accepted when
/// parsing (so ids from other stores round-trip), but the ring mints only the
/// UUID form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// Parses and validates a key id.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > 255 {
            return Err(Error::invalid("key id must be 1 to 255 characters long"));
        }
        if s.starts_with(Alias::PREFIX) {
            return Err(Error::invalid(format!("{s:?} is an alias, not a key id")));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b':')
        {
            return Err(Error::invalid(
                "key id may contain only A-Z a-z 0-9 and - _ :",
            ));
        }
        Ok(KeyId(s.to_owned()))
    }

    /// Mints a fresh random id (UUID version 4 layout).
    pub(crate) fn generate(rng: &dyn RandomSource) -> Result<Self> {
        let mut b: [u8; 16] = random_array(rng)?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = crate::hex::encode(&b);
        Ok(KeyId(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        KeyId::parse(&s)
    }
}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.0
    }
}

/// A friendly name for a key: `alias/` followed by 1 or more characters of
/// `[A-Za-z0-9:/_-]`, at most 256 characters in all. Names beginning with
/// `alias/strongroom/` are reserved for managed keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Alias(String);

impl Alias {
    /// The prefix every alias starts with.
    pub const PREFIX: &'static str = "alias/";
    /// The prefix reserved for managed keys.
    pub const RESERVED_PREFIX: &'static str = "alias/strongroom/";

    /// Parses and validates an alias name.
    pub fn parse(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix(Self::PREFIX) else {
            return Err(Error::invalid(format!(
                "alias {s:?} must start with \"alias/\""
            )));
        };
        if rest.is_empty() {
            return Err(Error::invalid("alias needs a name after \"alias/\""));
        }
        if s.len() > 256 {
            return Err(Error::invalid("alias must be at most 256 characters long"));
        }
        if !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b))
        {
            return Err(Error::invalid(
                "alias may contain only A-Z a-z 0-9 and : / _ - after \"alias/\"",
            ));
        }
        Ok(Alias(s.to_owned()))
    }

    /// Parses an alias a caller wants to create: also refuses the reserved prefix.
    pub(crate) fn parse_user(s: &str) -> Result<Self> {
        let a = Self::parse(s)?;
        if a.0.starts_with(Self::RESERVED_PREFIX) {
            return Err(Error::invalid(
                "aliases beginning with \"alias/strongroom/\" are reserved",
            ));
        }
        Ok(a)
    }

    /// The alias as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Alias({})", self.0)
    }
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Alias {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Alias::parse(&s)
    }
}

impl From<Alias> for String {
    fn from(a: Alias) -> String {
        a.0
    }
}

/// A symmetric authenticated-encryption algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum SymmetricAlgorithm {
    /// AES-256 in Galois/Counter Mode, 96-bit random nonces, 128-bit tags.
    #[default]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 8439), 96-bit random nonces, 128-bit tags.
    ChaCha20Poly1305,
}

impl SymmetricAlgorithm {
    /// The suite byte of this algorithm in ciphertext formats (docs/FORMAT.md).
    pub(crate) fn suite_id(self) -> u8 {
        match self {
            SymmetricAlgorithm::Aes256Gcm => 0x01,
            SymmetricAlgorithm::ChaCha20Poly1305 => 0x02,
        }
    }

    pub(crate) fn from_suite_id(id: u8) -> Option<Self> {
        match id {
            0x01 => Some(SymmetricAlgorithm::Aes256Gcm),
            0x02 => Some(SymmetricAlgorithm::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The algorithm's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SymmetricAlgorithm::Aes256Gcm => "AES_256_GCM",
            SymmetricAlgorithm::ChaCha20Poly1305 => "CHACHA20_POLY1305",
        }
    }
}

/// An HMAC algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HmacAlgorithm {
    /// HMAC-SHA-256, 32-byte keys and tags.
    Sha256,
    /// HMAC-SHA-384, 48-byte keys and tags.
    Sha384,
    /// HMAC-SHA-512, 64-byte keys and tags.
    Sha512,
}

impl HmacAlgorithm {
    /// Key and tag length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HmacAlgorithm::Sha256 => 32,
            HmacAlgorithm::Sha384 => 48,
            HmacAlgorithm::Sha512 => 64,
        }
    }
}

/// What kind of key material a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeySpec {
    /// A 256-bit symmetric key for authenticated encryption.
    Symmetric(SymmetricAlgorithm),
    /// An ECDSA key on NIST P-256, signing with SHA-256.
    EccNistP256,
    /// An Ed25519 key (RFC 8032, pure EdDSA).
    Ed25519,
    /// An HMAC key.
    Hmac(HmacAlgorithm),
    /// A public-key encryption key: HPKE (RFC 9180) base mode with
    /// DHKEM(P-256, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM.
    HpkeP256,
}

impl Default for KeySpec {
    /// AES-256-GCM.
    fn default() -> Self {
        KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm)
    }
}

impl KeySpec {
    /// The usages this spec can have; the first is the default.
    pub fn allowed_usages(self) -> &'static [KeyUsage] {
        match self {
            KeySpec::Symmetric(_) | KeySpec::HpkeP256 => &[KeyUsage::EncryptDecrypt],
            KeySpec::EccNistP256 | KeySpec::Ed25519 => &[KeyUsage::SignVerify],
            KeySpec::Hmac(_) => &[KeyUsage::GenerateVerifyMac],
        }
    }

    /// The algorithm, if this is a symmetric encryption spec.
    pub fn symmetric_algorithm(self) -> Option<SymmetricAlgorithm> {
        match self {
            KeySpec::Symmetric(alg) => Some(alg),
            _ => None,
        }
    }

    /// The spec's name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm) => "SYMMETRIC_AES_256_GCM",
            KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305) => {
                "SYMMETRIC_CHACHA20_POLY1305"
            }
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::Ed25519 => "ED25519",
            KeySpec::Hmac(HmacAlgorithm::Sha256) => "HMAC_256",
            KeySpec::Hmac(HmacAlgorithm::Sha384) => "HMAC_384",
            KeySpec::Hmac(HmacAlgorithm::Sha512) => "HMAC_512",
            KeySpec::HpkeP256 => "HPKE_P256_SHA256_AES256GCM",
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a key may be used for. Enforced on every operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyUsage {
    /// Encrypt, decrypt, data keys, seal and open.
    EncryptDecrypt,
    /// Sign and verify.
    SignVerify,
    /// Generate and verify MACs.
    GenerateVerifyMac,
}

impl KeyUsage {
    /// The usage's name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            KeyUsage::SignVerify => "SIGN_VERIFY",
            KeyUsage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
        }
    }
}

impl fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lifecycle state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Refuses every cryptographic operation until enabled again.
    Disabled,
    /// Refuses every cryptographic operation; destroyed at `deletion_date`.
    PendingDeletion {
        /// When the key's material will be destroyed.
        deletion_date: Timestamp,
    },
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyState::Enabled => f.write_str("Enabled"),
            KeyState::Disabled => f.write_str("Disabled"),
            KeyState::PendingDeletion { deletion_date } => {
                write!(f, "PendingDeletion (until {deletion_date})")
            }
        }
    }
}

/// Who manages a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum KeyManager {
    /// Created and fully controlled by the application.
    #[default]
    Customer,
    /// Created and rotated by the ring with a fixed policy.
    Managed,
}

/// Where a key's material came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub enum KeyOrigin {
    /// Generated by the backend.
    #[default]
    Generated,
    /// Imported by the application (bring your own key).
    Imported,
}

/// One version of a key's material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyVersionInfo {
    /// Version number, from 1.
    pub version: u32,
    /// When this version was created.
    pub created_at: Timestamp,
}

/// A key's record: everything the ring knows about a key except its
/// material and its access part (policy and grants, [`crate::policy::KeyAccess`]).
///
/// It is what [`crate::Client::describe_key`] returns, so a grantee allowed
/// `DescribeKey` learns nothing about other principals' rights: the key
/// policy is read only through [`crate::Client::get_key_policy`] and grants
/// only through [`crate::Client::list_grants`], each authorized on its own.
/// A store in another crate builds one with [`KeyRecord::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyRecord {
    /// The key's id.
    pub key_id: KeyId,
    /// What material the key holds.
    pub spec: KeySpec,
    /// What the key may be used for.
    pub usage: KeyUsage,
    /// Lifecycle state.
    pub state: KeyState,
    /// Customer or managed.
    pub manager: KeyManager,
    /// Free text, at most 8192 bytes.
    pub description: String,
    /// When the key was created.
    pub created_at: Timestamp,
    /// Who created it.
    pub created_by: Principal,
    /// The version that encrypts.
    pub primary_version: u32,
    /// Every version that still exists, oldest first.
    pub versions: Vec<KeyVersionInfo>,
    /// Tags (key to value).
    pub tags: BTreeMap<String, String>,
    /// Automatic rotation, if enabled.
    #[serde(default)]
    pub rotation: Option<RotationSchedule>,
    /// Every rotation so far, oldest first.
    #[serde(default)]
    pub rotations: Vec<RotationRecord>,
    /// Versions below this floor no longer decrypt (0 or 1: no floor).
    #[serde(default)]
    pub min_decrypt_version: u32,
    /// The primary version must be at least this (0 or 1: no floor).
    #[serde(default)]
    pub min_encrypt_version: u32,
    /// Where the material came from.
    #[serde(default)]
    pub origin: KeyOrigin,
    /// Encryptions reserved per version (version to count), by every ring
    /// that used the key, across restarts: the usage meter reserves blocks
    /// here before it encrypts, so this is an upper bound on the encryptions
    /// ever made under each version.
    #[serde(default, with = "version_pairs")]
    pub encryptions_reserved: BTreeMap<u32, u64>,
}

/// A version-keyed map as a list of `[version, value]` pairs: JSON object
/// keys are strings, which a flattened record cannot read back as numbers.
mod version_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(m: &BTreeMap<u32, u64>, s: S) -> Result<S::Ok, S::Error> {
        m.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, u64>, D::Error> {
        Ok(Vec::<(u32, u64)>::deserialize(d)?.into_iter().collect())
    }
}

impl KeyRecord {
    /// A new, enabled customer key with version 1 (created now) as its
    /// primary version, no tags, no rotation and no floors.
    pub fn new(
        key_id: KeyId,
        spec: KeySpec,
        usage: KeyUsage,
        created_by: Principal,
        created_at: Timestamp,
    ) -> Self {
        KeyRecord {
            key_id,
            spec,
            usage,
            state: KeyState::Enabled,
            manager: KeyManager::Customer,
            description: String::new(),
            created_at,
            created_by,
            primary_version: 1,
            versions: vec![KeyVersionInfo {
                version: 1,
                created_at,
            }],
            tags: BTreeMap::new(),
            rotation: None,
            rotations: Vec::new(),
            min_decrypt_version: 0,
            min_encrypt_version: 0,
            origin: KeyOrigin::Generated,
            encryptions_reserved: BTreeMap::new(),
        }
    }

    /// The newest version.
    pub fn latest_version(&self) -> u32 {
        self.versions.iter().map(|v| v.version).max().unwrap_or(0)
    }

    /// True if `version` exists for this key.
    pub fn has_version(&self, version: u32) -> bool {
        self.versions.iter().any(|v| v.version == version)
    }
}

/// How a caller names a key: its id (`KeyId`, or its text) or one of its
/// aliases (`alias/...`). Every `Client` operation on a key takes
/// `impl Into<KeyRef>`, so a `&str`, a `&String`, a `&KeyId` or an `&Alias`
/// all work; the text is parsed (and refused with
/// [`crate::Error::InvalidArgument`] if it is neither) when the call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRef<'a>(&'a str);

impl<'a> KeyRef<'a> {
    /// The text as given.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// True if it names an alias.
    pub fn is_alias(&self) -> bool {
        self.0.starts_with(Alias::PREFIX)
    }
}

impl<'a> From<&'a str> for KeyRef<'a> {
    fn from(s: &'a str) -> Self {
        KeyRef(s)
    }
}

impl<'a> From<&&'a str> for KeyRef<'a> {
    fn from(s: &&'a str) -> Self {
        KeyRef(s)
    }
}

impl<'a> From<&'a String> for KeyRef<'a> {
    fn from(s: &'a String) -> Self {
        KeyRef(s.as_str())
    }
}

impl<'a> From<&'a KeyId> for KeyRef<'a> {
    fn from(id: &'a KeyId) -> Self {
        KeyRef(id.as_str())
    }
}

impl<'a> From<&'a Alias> for KeyRef<'a> {
    fn from(a: &'a Alias) -> Self {
        KeyRef(a.as_str())
    }
}

impl fmt::Display for KeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// One entry of [`crate::Client::list_keys`]: the key's id and its aliases,
/// as KMS `ListKeys` returns ids only. Nothing about the key's policy, grants,
/// state or creator: those need `DescribeKey`, `GetKeyPolicy` or `ListGrants`
/// on the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyListEntry {
    /// The key's id.
    pub key_id: KeyId,
    /// The aliases pointing at it, in name order (at most
    /// [`crate::limits::MAX_PAGE_LIMIT`] are listed).
    pub aliases: Vec<Alias>,
}

/// Automatic rotation of a key: every `period_days`, checked on use and by
/// [`crate::KeyRing::run_maintenance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RotationSchedule {
    /// Days between rotations, 90 to 2560.
    pub period_days: u32,
    /// When the next automatic rotation is due.
    pub next_rotation: Timestamp,
}

/// Why a key was rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RotationKind {
    /// The rotation period elapsed.
    Automatic,
    /// A caller asked (`rotate_key_on_demand`).
    OnDemand,
    /// The primary version reached its encryption limit (2^32 random nonces
    /// for AES-GCM, NIST SP 800-38D).
    UsageLimit,
    /// The new version's material was imported (`import_key_version`).
    Imported,
}

/// One rotation of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RotationRecord {
    /// The version the rotation created.
    pub version: u32,
    /// When.
    pub rotated_at: Timestamp,
    /// Why.
    pub kind: RotationKind,
}

/// Options for [`crate::Client::create_key`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CreateKeyOptions {
    /// Free text, at most 8192 bytes.
    pub description: String,
    /// An alias to create for the new key.
    pub alias: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Usage; `None` picks the spec's default.
    pub usage: Option<KeyUsage>,
}

impl CreateKeyOptions {
    /// Empty options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// Sets an alias to create with the key.
    pub fn alias(mut self, a: impl Into<String>) -> Self {
        self.alias = Some(a.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.tags.insert(k.into(), v.into());
        self
    }

    /// Sets the usage.
    pub fn usage(mut self, u: KeyUsage) -> Self {
        self.usage = Some(u);
        self
    }
}

pub(crate) use crate::limits::MAX_TAGS;

/// Validates one tag.
pub(crate) fn validate_tag(k: &str, v: &str) -> Result<()> {
    if k.is_empty() || k.chars().count() > 128 {
        return Err(Error::invalid("tag key must be 1 to 128 characters long"));
    }
    if v.chars().count() > 256 {
        return Err(Error::invalid(
            "tag value must be at most 256 characters long",
        ));
    }
    if k.starts_with("strongroom:") {
        return Err(Error::invalid(
            "tag keys beginning with \"strongroom:\" are reserved",
        ));
    }
    if k.chars().chain(v.chars()).any(|c| c.is_control()) {
        return Err(Error::invalid("tags may not contain control characters"));
    }
    Ok(())
}

pub(crate) fn validate_description(d: &str) -> Result<()> {
    if d.len() > 8192 {
        return Err(Error::invalid("description must be at most 8192 bytes"));
    }
    Ok(())
}
