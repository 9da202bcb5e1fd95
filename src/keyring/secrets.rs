//! The secrets store: named secrets (Secrets Manager / Parameter Store) on
//! top of the ring's keys.
//!
//! A secret is a name (`db-password`, or a path such as
//! `/app/prod/db/password`), the key that protects it, and up to
//! [`MAX_SECRET_VERSIONS`] versions of its value (text or binary, 1 to
//! [`MAX_SECRET_LEN`] bytes), each with a random version id. The staging
//! labels [`StagingLabel::Current`], [`StagingLabel::Previous`] and
//! [`StagingLabel::Pending`] each mark at most one version.
//!
//! # Protection
//! Each value is an envelope message (docs/FORMAT.md, "Envelope message")
//! under the secret's key, with the encryption context
//! `{"strongroom:secret": <name>, "strongroom:secret-version": <version id>}`:
//! a value moved to another secret or version in the store does not open.
//! The whole secret is one record of the store's generic record facility
//! ([`crate::store::MetadataStore::get_record`], kind `"secret"`; its
//! format is in docs/FORMAT.md, "Secret record"), changed only by
//! compare-and-set, so concurrent writers never lose a version. The
//! in-memory store, the file keystore and the PostgreSQL store keep records
//! (on PostgreSQL each is one row of `strongroom_records`, authenticated
//! like the key rows; a store without the facility fails with
//! [`Error::Unsupported`]).
//!
//! The key is chosen when the secret is created: a customer key whose
//! policy (or grants) name the secret actions below, or by default
//! ([`Client::create_managed_secret`]) the secrets store's managed key
//! `alias/strongroom/secrets` ([`MANAGED_SECRETS_KEY`]), created on first
//! use. That key's fixed policy delegates the secret actions to the ring's
//! account, so access to secrets under it is decided by identity policies
//! (`crate::policy::IdentityPolicy`), as access to secrets under
//! `aws/secretsmanager` is decided by IAM; nobody may encrypt or decrypt
//! with it directly, disable, delete or re-police it.
//!
//! # Access
//! Every call goes through the ring's pipeline with its own action and is
//! audited as one event (never with the value; the secret's name is in the
//! event's context, shown when the ring records context values):
//!
//! | call | action | decided on |
//! |------|--------|------------|
//! | [`Client::create_secret`] | `CreateSecret` | the key named |
//! | [`Client::get_secret_value`] | `GetSecretValue` | the secret's key |
//! | [`Client::put_secret_value`] | `PutSecretValue` | the secret's key |
//! | [`Client::rotate_secret`] | `RotateSecret` | the secret's key |
//! | [`Client::describe_secret`] | `DescribeSecret` | the secret's key |
//! | [`Client::delete_secret`] | `DeleteSecret` | the secret's key |
//! | [`Client::restore_secret`] | `RestoreSecret` | the secret's key |
//! | [`Client::list_secrets`] | `ListSecrets` | the ring policy |
//! | [`Client::get_secrets_by_path`] | `ListSecrets`, then `GetSecretValue` per secret | ring policy, then each key |
//!
//! The decision's encryption context is `{"strongroom:secret": <name>}`, so
//! a grant constrained to that context is a grant on one secret. The value
//! actions (`CreateSecret`, `GetSecretValue`, `PutSecretValue`,
//! `RotateSecret`) are cryptographic: they need an enabled encryption key
//! and may be granted; `DescribeSecret` may be granted; deletion and
//! restore need the key policy. The sealing and opening underneath use the
//! key's material directly within the same call: there is no second
//! decision (`GenerateDataKey`, `Decrypt`) and no second event.
//!
//! # Deletion
//! [`Client::delete_secret`] schedules destruction after 7 to 30 days (on
//! the ring's clock); until then the secret can be described and restored,
//! but not read or changed. After the date, the first access (or
//! [`KeyRing::run_maintenance`](super::KeyRing::run_maintenance)) destroys
//! the record. Destroying the secret's key makes its values unreadable.

use super::pipeline::{Call, check_limit, symmetric};
use super::{Client, Inner, ListOptions, Page};
use crate::action::Action;
use crate::clock::Timestamp;
use crate::envelope::{EncryptionContext, blob, message};
use crate::error::{Error, Result};
use crate::key::{KeyId, KeyRef};
use crate::random::random_array;
use crate::secret::SecretBytes;
use crate::store::{KeyMetadata, StoredRecord};
use base64ct::{Base64, Encoding};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The largest secret value, in bytes (64 KiB).
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// The longest secret name, in bytes.
pub const MAX_SECRET_NAME_LEN: usize = 512;
/// Versions kept per secret: when a new version would exceed it, the
/// oldest version without a label is dropped.
pub const MAX_SECRET_VERSIONS: usize = 20;

/// The alias of the secrets store's managed key, the default key of
/// [`Client::create_managed_secret`]. Naming it in
/// [`Client::create_secret`] creates the key on first use.
pub const MANAGED_SECRETS_KEY: &str = "alias/strongroom/secrets";

impl Inner {
    /// The secrets store's managed key, created on first use with its fixed
    /// policy (see [`crate::keyring::managed::secrets_key_policy`]).
    pub(crate) fn ensure_secrets_key(&self) -> Result<KeyId> {
        let alias =
            crate::keyring::managed::managed_alias(crate::keyring::managed::SECRETS_SERVICE)?;
        let owner = crate::principal::Principal::service(crate::keyring::managed::SECRETS_SERVICE)?;
        let policy = crate::keyring::managed::secrets_key_policy(&self.account)?;
        self.ensure_managed_key(&alias, &owner, policy)
    }
}
/// The record kind of secrets in the store's generic record facility.
pub const SECRET_RECORD_KIND: &str = "secret";
/// The shortest deletion window, in days.
pub const MIN_SECRET_DELETION_DAYS: u32 = 7;
/// The longest deletion window, in days.
pub const MAX_SECRET_DELETION_DAYS: u32 = 30;

/// Encryption-context key naming the secret (decisions and sealing).
pub const CONTEXT_SECRET: &str = "strongroom:secret";
/// Encryption-context key naming the version (sealing only).
pub const CONTEXT_SECRET_VERSION: &str = "strongroom:secret-version";
/// Encryption-context key of a listing's path or prefix.
pub const CONTEXT_SECRET_PATH: &str = "strongroom:secret-path";

/// Format number of the stored secret record.
const RECORD_FORMAT: u32 = 1;
/// Compare-and-set attempts before a write gives up with a retryable
/// [`Error::Conflict`].
const MAX_CAS_ATTEMPTS: usize = 64;

/// A staging label: which version is current, the one before, and one
/// being rotated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StagingLabel {
    /// The version reads return by default.
    #[serde(rename = "CURRENT")]
    Current,
    /// The version that was current before the current one.
    #[serde(rename = "PREVIOUS")]
    Previous,
    /// A version created by a rotation, not yet tested and promoted.
    #[serde(rename = "PENDING")]
    Pending,
}

impl StagingLabel {
    /// The label's name: `CURRENT`, `PREVIOUS`, `PENDING`.
    pub fn as_str(self) -> &'static str {
        match self {
            StagingLabel::Current => "CURRENT",
            StagingLabel::Previous => "PREVIOUS",
            StagingLabel::Pending => "PENDING",
        }
    }
}

impl fmt::Display for StagingLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which version of a secret to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretVersion {
    /// The version carrying this label.
    Label(StagingLabel),
    /// The version with this id.
    Id(String),
}

impl SecretVersion {
    /// The current version.
    pub const CURRENT: SecretVersion = SecretVersion::Label(StagingLabel::Current);
}

/// A value to store.
#[derive(Clone, Copy)]
pub enum SecretInput<'a> {
    /// A text value (returned by [`SecretValue::expose_str`]).
    Text(&'a str),
    /// A binary value.
    Binary(&'a [u8]),
}

impl fmt::Debug for SecretInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretInput::Text(_) => f.write_str("SecretInput::Text(<redacted>)"),
            SecretInput::Binary(_) => f.write_str("SecretInput::Binary(<redacted>)"),
        }
    }
}

impl SecretInput<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            SecretInput::Text(s) => s.as_bytes(),
            SecretInput::Binary(b) => b,
        }
    }

    fn is_binary(&self) -> bool {
        matches!(self, SecretInput::Binary(_))
    }
}

/// One version of a secret, read. The value is zeroized on drop and
/// redacted from `Debug`.
#[non_exhaustive]
pub struct SecretValue {
    /// The secret's name.
    pub name: String,
    /// The version's id.
    pub version_id: String,
    /// The version's labels.
    pub labels: Vec<StagingLabel>,
    /// When the version was created (ring clock).
    pub created_at: Timestamp,
    value: SecretBytes,
    binary: bool,
}

impl SecretValue {
    /// The value's bytes.
    pub fn expose_bytes(&self) -> &[u8] {
        self.value.expose_secret()
    }

    /// The value as text, or `None` if it was stored as binary.
    pub fn expose_str(&self) -> Option<&str> {
        if self.binary {
            return None;
        }
        std::str::from_utf8(self.value.expose_secret()).ok()
    }

    /// True if the value was stored as binary.
    pub fn is_binary(&self) -> bool {
        self.binary
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretValue")
            .field("name", &self.name)
            .field("version_id", &self.version_id)
            .field("labels", &self.labels)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// One version of a secret, as described (no value).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecretVersionInfo {
    /// The version's id.
    pub version_id: String,
    /// Its labels.
    pub labels: Vec<StagingLabel>,
    /// When it was created.
    pub created_at: Timestamp,
    /// True if its value is binary.
    pub binary: bool,
}

/// A secret's metadata (no value).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecretDescription {
    /// The secret's name.
    pub name: String,
    /// The key that protects its values.
    pub key_id: KeyId,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it will be destroyed, if its deletion is scheduled.
    pub deletion_date: Option<Timestamp>,
    /// Its versions, oldest first.
    pub versions: Vec<SecretVersionInfo>,
}

/// Checks a secret name: 1 to [`MAX_SECRET_NAME_LEN`] bytes of ASCII
/// letters, digits and `/_+=.@-`; a name with a `/` is a path: it starts
/// with `/`, has no empty segment and does not end with `/`.
pub fn check_secret_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_SECRET_NAME_LEN {
        return Err(Error::invalid(format!(
            "a secret name must be 1 to {MAX_SECRET_NAME_LEN} bytes"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b))
    {
        return Err(Error::invalid(
            "a secret name may hold only ASCII letters, digits and /_+=.@-",
        ));
    }
    if name.contains('/') && (!name.starts_with('/') || name.ends_with('/') || name.contains("//"))
    {
        return Err(Error::invalid(
            "a secret path starts with '/', has no empty segment and does not end with '/'",
        ));
    }
    Ok(())
}

fn check_value(len: usize) -> Result<()> {
    if len == 0 || len > MAX_SECRET_LEN {
        return Err(Error::invalid(format!(
            "a secret value must be 1 to {MAX_SECRET_LEN} bytes (got {len})"
        )));
    }
    Ok(())
}

/// The decision context of a secret (empty for a bad name, which the work
/// then refuses).
fn name_context(name: &str) -> EncryptionContext {
    if check_secret_name(name).is_ok() {
        EncryptionContext::new().with(CONTEXT_SECRET, name)
    } else {
        EncryptionContext::new()
    }
}

/// The sealing context of one version.
fn version_context(name: &str, version_id: &str) -> EncryptionContext {
    EncryptionContext::new()
        .with(CONTEXT_SECRET, name)
        .with(CONTEXT_SECRET_VERSION, version_id)
}

// ---- the stored record -----------------------------------------------------

/// The stored record (docs/FORMAT.md, "Secret record").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    format: u32,
    name: String,
    key_id: KeyId,
    created_at: Timestamp,
    deletion_date: Option<Timestamp>,
    versions: Vec<StoredVersion>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredVersion {
    id: String,
    created_at: Timestamp,
    labels: Vec<StagingLabel>,
    binary: bool,
    /// The envelope message, standard base64.
    sealed: String,
}

/// Shows the metadata and the sealed value's length only (the value is
/// ciphertext, but a log has no use for it).
impl fmt::Debug for StoredVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredVersion")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("labels", &self.labels)
            .field("binary", &self.binary)
            .field("sealed_len", &self.sealed.len())
            .finish()
    }
}

fn corrupt(name: &str, reason: impl Into<String>) -> Error {
    Error::CorruptStore {
        file: format!("secret {name}"),
        reason: reason.into(),
    }
}

impl Record {
    fn decode(name: &str, bytes: &[u8]) -> Result<Record> {
        let r: Record = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(name, format!("bad secret record: {e}")))?;
        if r.format != RECORD_FORMAT {
            return Err(corrupt(name, "unknown secret record format"));
        }
        if r.name != name {
            return Err(corrupt(name, "the record names another secret"));
        }
        if r.versions.is_empty() || r.versions.len() > MAX_SECRET_VERSIONS {
            return Err(corrupt(name, "bad number of versions"));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut labels = std::collections::BTreeSet::new();
        for v in &r.versions {
            if crate::hex::decode_array::<16>(&v.id).is_none() || !ids.insert(v.id.as_str()) {
                return Err(corrupt(name, "bad or repeated version id"));
            }
            for l in &v.labels {
                if !labels.insert(*l) {
                    return Err(corrupt(name, "a label marks two versions"));
                }
            }
        }
        if !labels.contains(&StagingLabel::Current) {
            return Err(corrupt(name, "no CURRENT version"));
        }
        Ok(r)
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Other(Arc::new(e)))
    }

    fn select(&self, which: &SecretVersion) -> Result<&StoredVersion> {
        let found = match which {
            SecretVersion::Label(l) => self.versions.iter().find(|v| v.labels.contains(l)),
            SecretVersion::Id(id) => self.versions.iter().find(|v| &v.id == id),
        };
        found.ok_or_else(|| {
            let what = match which {
                SecretVersion::Label(l) => l.to_string(),
                SecretVersion::Id(id) => id.clone(),
            };
            Error::SecretNotFound(format!("{} (version {what})", self.name))
        })
    }

    /// Moves `label` to the version `id` (taking it off any other).
    fn set_label(&mut self, id: &str, label: StagingLabel) {
        for v in &mut self.versions {
            v.labels.retain(|l| *l != label);
            if v.id == id {
                v.labels.push(label);
                v.labels.sort();
            }
        }
    }

    /// Adds a version, then drops the oldest unlabelled versions beyond
    /// [`MAX_SECRET_VERSIONS`].
    fn add_version(&mut self, v: StoredVersion) {
        self.versions.push(v);
        while self.versions.len() > MAX_SECRET_VERSIONS {
            match self.versions.iter().position(|v| v.labels.is_empty()) {
                Some(i) => {
                    self.versions.remove(i);
                }
                None => break,
            }
        }
    }

    /// Makes version `id` CURRENT; the old CURRENT becomes PREVIOUS.
    fn promote(&mut self, id: &str) {
        let old = self
            .versions
            .iter()
            .find(|v| v.labels.contains(&StagingLabel::Current))
            .map(|v| v.id.clone());
        if let Some(old) = old
            && old != id
        {
            self.set_label(&old, StagingLabel::Previous);
        }
        self.set_label(id, StagingLabel::Current);
        for v in &mut self.versions {
            if v.id == id {
                v.labels.retain(|l| *l != StagingLabel::Pending);
            }
        }
    }

    fn describe(&self) -> SecretDescription {
        SecretDescription {
            name: self.name.clone(),
            key_id: self.key_id.clone(),
            created_at: self.created_at,
            deletion_date: self.deletion_date,
            versions: self
                .versions
                .iter()
                .map(|v| SecretVersionInfo {
                    version_id: v.id.clone(),
                    labels: v.labels.clone(),
                    created_at: v.created_at,
                    binary: v.binary,
                })
                .collect(),
        }
    }

    fn pending_deletion(&self) -> Result<()> {
        match self.deletion_date {
            Some(d) => Err(Error::invalid(format!(
                "secret {} is scheduled for deletion at {}; restore it first",
                self.name,
                d.as_secs()
            ))),
            None => Ok(()),
        }
    }
}

/// Whether a read may see a secret scheduled for deletion.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pending {
    Allowed,
    Refused,
}

impl Inner {
    /// The secret's record and revision; a record past its deletion date is
    /// destroyed now and reads as not found.
    fn load_secret(&self, name: &str, pending: Pending) -> Result<(Record, u64)> {
        check_secret_name(name)?;
        let stored = self
            .store
            .get_record(SECRET_RECORD_KIND, name)?
            .ok_or_else(|| Error::SecretNotFound(name.to_owned()))?;
        let rec = Record::decode(name, &stored.bytes)?;
        if let Some(d) = rec.deletion_date
            && self.clock.now() >= d
        {
            match self
                .store
                .delete_record(SECRET_RECORD_KIND, name, stored.revision)
            {
                Ok(()) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            return Err(Error::SecretNotFound(name.to_owned()));
        }
        if pending == Pending::Refused {
            rec.pending_deletion()?;
        }
        Ok((rec, stored.revision))
    }

    /// Read-modify-write of a secret by compare-and-set, retried on a lost
    /// race. `f` sees the freshest record (of the same key) and may refuse.
    fn update_secret(
        &self,
        name: &str,
        key_id: &KeyId,
        pending: Pending,
        mut f: impl FnMut(&mut Record) -> Result<()>,
    ) -> Result<Record> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (mut rec, rev) = self.load_secret(name, pending)?;
            if &rec.key_id != key_id {
                return Err(Error::Conflict(format!(
                    "secret {name} was replaced during the call"
                )));
            }
            f(&mut rec)?;
            match self
                .store
                .put_record_if(SECRET_RECORD_KIND, name, Some(rev), &rec.encode()?)
            {
                Ok(_) => return Ok(rec),
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!(
            "secret {name} changed {MAX_CAS_ATTEMPTS} times during the call; retry"
        )))
    }

    /// A new version of `name`: a fresh id and the value sealed under the
    /// key as an envelope message bound to the name and the id.
    fn seal_version(
        &self,
        call: &Call<'_>,
        meta: &KeyMetadata,
        name: &str,
        data: &[u8],
        binary: bool,
    ) -> Result<StoredVersion> {
        check_value(data.len())?;
        if !binary && std::str::from_utf8(data).is_err() {
            return Err(Error::invalid("a text secret value must be UTF-8"));
        }
        let id = crate::hex::encode(&random_array::<16>(self.rng.as_ref())?);
        let ctx = version_context(name, &id).canonical_bytes()?;
        let suite = symmetric(meta)?;
        let dk = self.random_key()?;
        let wrapped = self.encrypt_blob(call, meta, dk.as_slice(), &ctx)?;
        let message_id: [u8; message::MESSAGE_ID_LEN] = random_array(self.rng.as_ref())?;
        let derived = message::derive(self.provider, suite, &message_id, dk.as_slice())?;
        let frame_len = crate::limits::DEFAULT_FRAME_LEN;
        let header = message::encode_header(
            suite,
            frame_len,
            &message_id,
            &ctx,
            &[wrapped],
            &derived.commitment,
            0,
        )?;
        let sealed =
            message::encrypt_body(header, &derived, &message_id, frame_len, data, self.threads)?;
        Ok(StoredVersion {
            id,
            created_at: self.clock.now(),
            labels: Vec::new(),
            binary,
            sealed: Base64::encode_string(&sealed),
        })
    }

    /// Opens a version's value: the message must be bound to this secret
    /// and version and wrapped under the secret's key. Every failure is the
    /// opaque [`Error::DecryptionFailed`].
    fn open_version(
        &self,
        call: &Call<'_>,
        meta: &KeyMetadata,
        rec: &Record,
        v: &StoredVersion,
    ) -> Result<SecretValue> {
        let msg = Base64::decode_vec(&v.sealed).map_err(|_| Error::DecryptionFailed)?;
        let h = message::parse_header(&msg)?;
        let want = version_context(&rec.name, &v.id);
        if h.context != want {
            return Err(Error::DecryptionFailed);
        }
        let ctx = want.canonical_bytes()?;
        let wrapped = h
            .wrapped_keys
            .iter()
            .filter_map(|w| blob::parse(w).ok())
            .find(|b| b.key_id == meta.key_id)
            .ok_or(Error::DecryptionFailed)?;
        let dk = match self.decrypt_blob(call, meta, &wrapped, &ctx) {
            Ok(dk) if dk.len() == 32 => dk,
            Ok(_) | Err(Error::DecryptionFailed) | Err(Error::KeyNotFound(_)) => {
                return Err(Error::DecryptionFailed);
            }
            Err(e) => return Err(e),
        };
        let derived = message::verify_header(self.provider, &h, dk.expose_secret())?;
        let plaintext = message::decrypt_frames(&h, &derived, self.threads)?;
        if !v.binary && std::str::from_utf8(&plaintext).is_err() {
            return Err(Error::DecryptionFailed);
        }
        Ok(SecretValue {
            name: rec.name.clone(),
            version_id: v.id.clone(),
            labels: v.labels.clone(),
            created_at: v.created_at,
            value: SecretBytes::from_zeroizing(plaintext),
            binary: v.binary,
        })
    }

    /// Destroys every secret whose deletion date has passed; the names
    /// destroyed. A store without generic records has none.
    pub(crate) fn destroy_due_secrets(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        let now = self.clock.now();
        loop {
            let page = match self.store.list_records(
                SECRET_RECORD_KIND,
                "",
                after.as_deref(),
                crate::limits::MAX_PAGE_LIMIT,
            ) {
                Ok(p) => p,
                Err(Error::Unsupported(_)) => return Ok(out),
                Err(e) => return Err(e),
            };
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            for r in page {
                let rec = Record::decode(&r.name, &r.bytes)?;
                if rec.deletion_date.is_some_and(|d| now >= d) {
                    match self
                        .store
                        .delete_record(SECRET_RECORD_KIND, &r.name, r.revision)
                    {
                        Ok(()) => out.push(r.name),
                        Err(Error::Conflict(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` live secrets (not scheduled for deletion) whose names
    /// start with `prefix`, after `marker`, and whether more follow.
    fn list_live(
        &self,
        prefix: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Record>, bool)> {
        check_limit(limit)?;
        if let Some(m) = marker {
            check_secret_name(m).map_err(|_| Error::invalid("marker is not a secret name"))?;
        }
        let mut out = Vec::new();
        let mut after = marker.map(str::to_owned);
        loop {
            let page: Vec<StoredRecord> =
                self.store
                    .list_records(SECRET_RECORD_KIND, prefix, after.as_deref(), limit + 1)?;
            let exhausted = page.len() <= limit;
            let Some(last) = page.last() else {
                return Ok((out, false));
            };
            after = Some(last.name.clone());
            for r in page {
                let rec = Record::decode(&r.name, &r.bytes)?;
                if rec.deletion_date.is_none() {
                    if out.len() == limit {
                        return Ok((out, true));
                    }
                    out.push(rec);
                }
            }
            if exhausted {
                return Ok((out, false));
            }
        }
    }
}

/// The store calls of one page of a listing, as a page.
fn page_of<T>(items: Vec<T>, more: bool, last: Option<String>) -> Page<T> {
    Page {
        items,
        next_marker: if more { last } else { None },
    }
}

impl Client {
    /// Runs `work` in the pipeline on the key of secret `name` (loaded
    /// first; a missing secret fails and is recorded without a key).
    fn on_secret<T>(
        &self,
        action: Action,
        name: &str,
        pending: Pending,
        work: impl FnOnce(&Call<'_>, &Arc<KeyMetadata>, Record, u64) -> Result<T>,
    ) -> Result<T> {
        let ctx = name_context(name);
        let loaded = self.inner().load_secret(name, pending);
        let key_id = loaded
            .as_ref()
            .map(|(r, _)| r.key_id.clone())
            .map_err(Clone::clone);
        self.on_ciphertext(action, key_id, Some(&ctx), |call, meta| {
            let (rec, rev) = loaded?;
            work(call, meta, rec, rev)
        })
    }

    /// Creates a secret under the secrets store's managed key
    /// ([`MANAGED_SECRETS_KEY`], created on first use): the default key, as
    /// `aws/secretsmanager` is in AWS. Who may use such a secret is decided
    /// by identity policies alone (the key's fixed policy delegates the
    /// secret actions to the ring's account,
    /// [`crate::keyring::managed::secrets_key_policy`]): allow, for
    /// example, `strongroom:GetSecretValue` on `alias/strongroom/secrets`
    /// with a condition on `strongroom:secret`. Same as
    /// `create_secret(name, MANAGED_SECRETS_KEY, value)`.
    pub fn create_managed_secret(&self, name: &str, value: SecretInput<'_>) -> Result<String> {
        self.create_secret(name, MANAGED_SECRETS_KEY, value)
    }

    /// Creates secret `name` protected by `key` (an id or alias whose
    /// policy or grants allow `CreateSecret`), with `value` as its first,
    /// `CURRENT` version; returns the version id. [`Error::SecretExists`]
    /// if the name is taken (also while that secret is scheduled for
    /// deletion).
    pub fn create_secret<'k>(
        &self,
        name: &str,
        key: impl Into<KeyRef<'k>>,
        value: SecretInput<'_>,
    ) -> Result<String> {
        let key: KeyRef<'k> = key.into();
        if key.as_str() == MANAGED_SECRETS_KEY {
            self.inner().ensure_secrets_key()?;
        }
        let ctx = name_context(name);
        self.on_key(Action::CreateSecret, key, Some(&ctx), |call, meta| {
            let inner = self.inner();
            check_secret_name(name)?;
            check_value(value.bytes().len())?;
            let expected = match inner.load_secret(name, Pending::Allowed) {
                Ok(_) => return Err(Error::SecretExists(name.to_owned())),
                Err(Error::SecretNotFound(_)) => None,
                Err(e) => return Err(e),
            };
            let mut v = inner.seal_version(call, meta, name, value.bytes(), value.is_binary())?;
            v.labels.push(StagingLabel::Current);
            let id = v.id.clone();
            let rec = Record {
                format: RECORD_FORMAT,
                name: name.to_owned(),
                key_id: meta.key_id.clone(),
                created_at: inner.clock.now(),
                deletion_date: None,
                versions: vec![v],
            };
            match inner
                .store
                .put_record_if(SECRET_RECORD_KIND, name, expected, &rec.encode()?)
            {
                Ok(_) => Ok(id),
                Err(Error::Conflict(_)) => Err(Error::SecretExists(name.to_owned())),
                Err(e) => Err(e),
            }
        })
    }

    /// Reads one version of a secret (usually [`SecretVersion::CURRENT`]).
    pub fn get_secret_value(&self, name: &str, which: &SecretVersion) -> Result<SecretValue> {
        self.on_secret(
            Action::GetSecretValue,
            name,
            Pending::Refused,
            |call, meta, rec, _| {
                let v = rec.select(which)?;
                self.inner().open_version(call, meta, &rec, v)
            },
        )
    }

    /// Stores a new version of a secret's value and makes it `CURRENT`
    /// (the old `CURRENT` becomes `PREVIOUS`); returns its version id.
    /// Concurrent puts each add their version: none is lost (while at most
    /// [`MAX_SECRET_VERSIONS`] are kept).
    pub fn put_secret_value(&self, name: &str, value: SecretInput<'_>) -> Result<String> {
        self.on_secret(
            Action::PutSecretValue,
            name,
            Pending::Refused,
            |call, meta, rec, _| {
                let inner = self.inner();
                let v = inner.seal_version(call, meta, name, value.bytes(), value.is_binary())?;
                let id = v.id.clone();
                inner.update_secret(name, &rec.key_id, Pending::Refused, |r| {
                    r.add_version(v.clone());
                    r.promote(&id);
                    Ok(())
                })?;
                Ok(id)
            },
        )
    }

    /// Rotates a secret: `create` gets the current value and returns the
    /// new one, which is stored as a `PENDING` version; `test` checks it
    /// (e.g. logs in with it); then it becomes `CURRENT` in one
    /// compare-and-set (the old `CURRENT` becomes `PREVIOUS`). Returns the
    /// new version id.
    ///
    /// A failed `create` stores nothing. A failed `test` removes the
    /// `PENDING` version again and returns `test`'s error; `CURRENT` is
    /// untouched either way. (Should that removal itself fail, the version
    /// stays labelled `PENDING`, never `CURRENT`; the next rotation moves
    /// the label to its own version.) If another rotation takes the
    /// `PENDING` label in between, this one fails with [`Error::Conflict`].
    pub fn rotate_secret(
        &self,
        name: &str,
        create: impl FnOnce(&SecretValue) -> Result<Vec<u8>>,
        test: impl FnOnce(&[u8]) -> Result<()>,
    ) -> Result<String> {
        self.on_secret(
            Action::RotateSecret,
            name,
            Pending::Refused,
            |call, meta, rec, _| {
                let inner = self.inner();
                let current = rec.select(&SecretVersion::CURRENT)?;
                let binary = current.binary;
                let old = inner.open_version(call, meta, &rec, current)?;
                let new = Zeroizing::new(create(&old)?);
                drop(old);
                let v = inner.seal_version(call, meta, name, &new, binary)?;
                let id = v.id.clone();
                inner.update_secret(name, &rec.key_id, Pending::Refused, |r| {
                    r.add_version(v.clone());
                    r.set_label(&id, StagingLabel::Pending);
                    Ok(())
                })?;
                if let Err(e) = test(&new) {
                    let _ = inner.update_secret(name, &rec.key_id, Pending::Allowed, |r| {
                        r.versions.retain(|x| x.id != id);
                        Ok(())
                    });
                    return Err(e);
                }
                inner.update_secret(name, &rec.key_id, Pending::Refused, |r| {
                    let ours = r
                        .versions
                        .iter()
                        .any(|x| x.id == id && x.labels.contains(&StagingLabel::Pending));
                    if !ours {
                        return Err(Error::Conflict(format!(
                            "another rotation of secret {name} took the PENDING label"
                        )));
                    }
                    r.promote(&id);
                    Ok(())
                })?;
                Ok(id)
            },
        )
    }

    /// A secret's metadata: key, versions and labels, deletion date. Works
    /// while the secret is scheduled for deletion.
    pub fn describe_secret(&self, name: &str) -> Result<SecretDescription> {
        self.on_secret(
            Action::DescribeSecret,
            name,
            Pending::Allowed,
            |_, _, rec, _| Ok(rec.describe()),
        )
    }

    /// Schedules a secret's destruction after `window_days` (7 to 30) on the
    /// ring's clock; returns the date. Until then it can be restored with
    /// [`Client::restore_secret`] and is not readable.
    pub fn delete_secret(&self, name: &str, window_days: u32) -> Result<Timestamp> {
        self.on_secret(
            Action::DeleteSecret,
            name,
            Pending::Allowed,
            |_, _, rec, _| {
                if !(MIN_SECRET_DELETION_DAYS..=MAX_SECRET_DELETION_DAYS).contains(&window_days) {
                    return Err(Error::invalid(format!(
                        "the deletion window must be {MIN_SECRET_DELETION_DAYS} to \
                         {MAX_SECRET_DELETION_DAYS} days"
                    )));
                }
                let inner = self.inner();
                let date = inner.clock.now().plus_days(u64::from(window_days));
                inner.update_secret(name, &rec.key_id, Pending::Refused, |r| {
                    r.deletion_date = Some(date);
                    Ok(())
                })?;
                Ok(date)
            },
        )
    }

    /// Cancels a secret's scheduled deletion (before its date).
    pub fn restore_secret(&self, name: &str) -> Result<()> {
        self.on_secret(
            Action::RestoreSecret,
            name,
            Pending::Allowed,
            |_, _, rec, _| {
                self.inner()
                    .update_secret(name, &rec.key_id, Pending::Allowed, |r| {
                        if r.deletion_date.take().is_none() {
                            return Err(Error::invalid(format!(
                                "secret {name} is not scheduled for deletion"
                            )));
                        }
                        Ok(())
                    })
                    .map(drop)
            },
        )
    }

    /// One page of the secrets whose names start with `prefix` (any string;
    /// `""` for all), in name order, without values; secrets scheduled for
    /// deletion are left out. Decided by the ring policy (`ListSecrets`).
    pub fn list_secrets(
        &self,
        prefix: &str,
        options: ListOptions,
    ) -> Result<Page<SecretDescription>> {
        let ctx = EncryptionContext::new().with(CONTEXT_SECRET_PATH, prefix);
        let ctx = if ctx.validate().is_ok() {
            ctx
        } else {
            EncryptionContext::new()
        };
        self.on_ring(Action::ListSecrets, Some(&ctx), |_| {
            let (recs, more) =
                self.inner()
                    .list_live(prefix, options.marker.as_deref(), options.limit)?;
            let last = recs.last().map(|r| r.name.clone());
            Ok(page_of(
                recs.iter().map(Record::describe).collect(),
                more,
                last,
            ))
        })
    }

    /// One page of the `CURRENT` values of the secrets under `path` (`/`,
    /// or a path such as `/app/prod`, with or without the trailing `/`;
    /// recursive), in name order. The listing is decided by the ring policy
    /// (`ListSecrets`, one event naming the path); each value is then read
    /// as by [`Client::get_secret_value`] (one `GetSecretValue` decision and
    /// event per secret). The first secret the caller may not read fails
    /// the whole call.
    pub fn get_secrets_by_path(
        &self,
        path: &str,
        options: ListOptions,
    ) -> Result<Page<SecretValue>> {
        let prefix = if path == "/" {
            Some("/".to_owned())
        } else {
            let trimmed = path.strip_suffix('/').unwrap_or(path);
            check_secret_name(trimmed)
                .ok()
                .filter(|()| trimmed.starts_with('/'))
                .map(|()| format!("{trimmed}/"))
        };
        let ctx = match &prefix {
            Some(p) => EncryptionContext::new().with(CONTEXT_SECRET_PATH, p.as_str()),
            None => EncryptionContext::new(),
        };
        let names = self.on_ring(Action::ListSecrets, Some(&ctx), |_| {
            let prefix = prefix.as_deref().ok_or_else(|| {
                Error::invalid("a secret path starts with '/' and has no empty segment")
            })?;
            let (recs, more) =
                self.inner()
                    .list_live(prefix, options.marker.as_deref(), options.limit)?;
            let names: Vec<String> = recs.into_iter().map(|r| r.name).collect();
            let last = names.last().cloned();
            Ok(page_of(names, more, last))
        })?;
        let mut items = Vec::with_capacity(names.items.len());
        for n in &names.items {
            match self.get_secret_value(n, &SecretVersion::CURRENT) {
                Ok(v) => items.push(v),
                // Destroyed since it was listed.
                Err(Error::SecretNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Page {
            items,
            next_marker: names.next_marker,
        })
    }
}
