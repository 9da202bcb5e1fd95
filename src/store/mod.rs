//! Persistence of key metadata: keys, versions, states, tags and aliases.
//!
//! Custody of material is the backend's concern ([`crate::backend`]); this is
//! everything else the ring knows. [`MemoryStore`] is the embedded default.

mod file;
mod index;
pub(crate) mod keystore;
mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;

pub use file::FileStore;
pub use keystore::{
    Argon2Params, Durability, KeystoreOptions, OpenMode, RealStorage, RootKey, Storage,
    export_backup, restore_backup, rotate_root_key,
};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresBackend, PostgresOptions, PostgresStore};

use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId, KeyRecord};
use crate::policy::{Grant, KeyAccess, Policy};
use crate::principal::Principal;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A key as a store keeps it: its record and its access part (policy and
/// grants), kept apart so that stores can serve and change each on its own.
///
/// Field access reads the record (`meta.key_id` is `meta.record.key_id`);
/// the access part is `meta.access`. Serialized as one flat JSON object (the
/// file keystore's record format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyMetadata {
    /// Identity, spec, versions, state, rotation.
    #[serde(flatten)]
    pub record: KeyRecord,
    /// Policy and grants.
    #[serde(flatten)]
    pub access: KeyAccess,
}

impl KeyMetadata {
    /// A key from its two parts.
    pub fn new(record: KeyRecord, access: KeyAccess) -> Self {
        KeyMetadata { record, access }
    }
}

impl Deref for KeyMetadata {
    type Target = KeyRecord;
    fn deref(&self) -> &KeyRecord {
        &self.record
    }
}

impl DerefMut for KeyMetadata {
    fn deref_mut(&mut self) -> &mut KeyRecord {
        &mut self.record
    }
}

/// One record of the generic record facility ([`MetadataStore::get_record`]
/// and its siblings): opaque bytes and the revision they were stored at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredRecord {
    /// The record's name (unique within its kind).
    pub name: String,
    /// The revision of this copy: pass it to [`MetadataStore::put_record_if`]
    /// or [`MetadataStore::delete_record`] to change exactly this copy.
    /// Revisions of one record only grow.
    pub revision: u64,
    /// The record's bytes, as the caller stored them.
    pub bytes: Vec<u8>,
}

impl StoredRecord {
    /// A record copy.
    pub fn new(name: String, revision: u64, bytes: Vec<u8>) -> Self {
        StoredRecord {
            name,
            revision,
            bytes,
        }
    }
}

/// The error of a store without the generic record facility.
fn records_unsupported() -> Error {
    Error::Unsupported(
        "this metadata store does not support generic records (secrets); \
         use the in-memory store, the file keystore or PostgreSQL"
            .into(),
    )
}

/// Stores key metadata and aliases.
///
/// # Contract
/// - Every method is atomic: a failed call changes nothing.
/// - `update_key` runs its closure on the freshest copy of the key under the
///   store's exclusion (a lock, or an optimistic revision check), so
///   read-modify-write sequences (rotation, state changes) never interleave.
///   **The closure may run more than once** (a store that retries a lost
///   revision race calls it again on the newer copy): it must be a pure
///   function of the copy it is given, doing its side effects (if any) in a
///   way that tolerates repetition. If it fails, nothing is stored.
/// - The narrow access operations (`put_policy`, `add_grant`,
///   `remove_grant`, `list_grants`, `get_access`) change or read only the
///   access part; their defaults go through `update_key` / `get_key`, and a
///   database store overrides them to write one grant without rewriting the
///   others.
/// - A transient failure (database unreachable, serialization conflict after
///   bounded retries) is [`crate::Error::Unavailable`] or
///   [`crate::Error::Conflict`]; both are retryable and change nothing.
pub trait MetadataStore: Send + Sync + Debug {
    /// Inserts a new key, and the alias if given, in one step. Fails with
    /// [`crate::Error::AliasExists`] (storing nothing) if the alias is taken.
    fn insert_key(&self, meta: KeyMetadata, alias: Option<&Alias>) -> Result<()>;

    /// The key's metadata, or `None`.
    fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyMetadata>>>;

    /// Applies `f` to the key's metadata atomically and returns the result.
    /// If `f` fails, nothing is changed. Fails with [`crate::Error::KeyNotFound`]
    /// if the key does not exist.
    fn update_key(
        &self,
        id: &KeyId,
        f: &mut dyn FnMut(&mut KeyMetadata) -> Result<()>,
    ) -> Result<Arc<KeyMetadata>>;

    /// Removes a key and every alias pointing at it.
    fn remove_key(&self, id: &KeyId) -> Result<()>;

    /// Up to `limit` keys in id order, starting after `after`.
    fn list_keys(&self, after: Option<&KeyId>, limit: usize) -> Result<Vec<Arc<KeyMetadata>>>;

    /// The key an alias points at, or `None`.
    fn resolve_alias(&self, alias: &Alias) -> Result<Option<KeyId>>;

    /// Creates an alias; [`crate::Error::AliasExists`] if it exists.
    fn create_alias(&self, alias: &Alias, key: &KeyId) -> Result<()>;

    /// Repoints an existing alias from `from` to `to`, as one compare-and-set
    /// under the store's lock: [`crate::Error::AliasNotFound`] if absent,
    /// [`crate::Error::Conflict`] (changing nothing) if the alias no longer
    /// points at `from`. The ring authorizes the caller on `from` and `to`
    /// before calling; the compare-and-set makes that decision hold.
    fn update_alias(&self, alias: &Alias, from: &KeyId, to: &KeyId) -> Result<()>;

    /// Deletes an alias that points at `expected`, as one compare-and-set:
    /// [`crate::Error::AliasNotFound`] if absent, [`crate::Error::Conflict`]
    /// (changing nothing) if it points elsewhere.
    fn delete_alias(&self, alias: &Alias, expected: &KeyId) -> Result<()>;

    /// Up to `limit` aliases in name order after `after`, only those of `key` if given.
    fn list_aliases(
        &self,
        key: Option<&KeyId>,
        after: Option<&Alias>,
        limit: usize,
    ) -> Result<Vec<(Alias, KeyId)>>;

    /// The aliases of each key of `keys`, in name order, at most
    /// `limit_per_key` each (keys without aliases are absent): what one page
    /// of `list_keys` shows. The default makes one
    /// [`MetadataStore::list_aliases`] call per key; a database store
    /// overrides it with one query.
    fn aliases_of(
        &self,
        keys: &[KeyId],
        limit_per_key: usize,
    ) -> Result<std::collections::HashMap<KeyId, Vec<Alias>>> {
        let mut out = std::collections::HashMap::new();
        for k in keys {
            let aliases: Vec<Alias> = self
                .list_aliases(Some(k), None, limit_per_key)?
                .into_iter()
                .map(|(a, _)| a)
                .collect();
            if !aliases.is_empty() {
                out.insert(k.clone(), aliases);
            }
        }
        Ok(out)
    }

    // ---- the access part: narrow operations ---------------------------------

    /// The key's access part (policy and every grant), or `None` if the key
    /// does not exist.
    fn get_access(&self, id: &KeyId) -> Result<Option<KeyAccess>> {
        Ok(self.get_key(id)?.map(|m| m.access.clone()))
    }

    /// The key's policy and only `principal`'s grants: what one decision
    /// needs. `None` if the key does not exist.
    fn access_for(&self, id: &KeyId, principal: &Principal) -> Result<Option<KeyAccess>> {
        Ok(self.get_key(id)?.map(|m| {
            let mut a = KeyAccess::new(m.access.policy.clone());
            if let Some(g) = m.access.grants.get(principal) {
                a.grants.insert(principal.clone(), g.clone());
            }
            a
        }))
    }

    /// Replaces the key's policy (`None`: the default policy).
    fn put_policy(&self, id: &KeyId, policy: Option<&Policy>) -> Result<()> {
        self.update_key(id, &mut |m| {
            m.access.policy = policy.cloned();
            Ok(())
        })
        .map(drop)
    }

    /// Adds a grant, dropping expired grants first; refuses (changing
    /// nothing) if the key would hold more than `limit` grants.
    fn add_grant(&self, id: &KeyId, grant: &Grant, limit: usize, now: Timestamp) -> Result<()> {
        self.update_key(id, &mut |m| m.access.add_grant(grant.clone(), limit, now))
            .map(drop)
    }

    /// Removes the grant `grant_id`; [`crate::Error::InvalidArgument`] if
    /// the key has no such grant (nothing changed).
    fn remove_grant(&self, id: &KeyId, grant_id: &str) -> Result<()> {
        self.update_key(id, &mut |m| {
            if m.access.remove_grant(grant_id) {
                Ok(())
            } else {
                Err(Error::InvalidArgument("no such grant on this key".into()))
            }
        })
        .map(drop)
    }

    /// Every grant of the key, or `None` if the key does not exist.
    fn list_grants(&self, id: &KeyId) -> Result<Option<Vec<Grant>>> {
        Ok(self
            .get_access(id)?
            .map(|a| a.all_grants().cloned().collect()))
    }

    // ---- generic records (the secrets store) --------------------------------
    //
    // Named, opaque records of a `kind` (e.g. "secret"), changed only by
    // compare-and-set on their revision. The defaults fail with
    // [`crate::Error::Unsupported`]: a store that does not keep records
    // says so instead of losing them. The memory store, the file keystore
    // and PostgreSQL keep them.

    /// The record `name` of `kind`, or `None`.
    fn get_record(&self, kind: &str, name: &str) -> Result<Option<StoredRecord>> {
        let _ = (kind, name);
        Err(records_unsupported())
    }

    /// Stores `bytes` as record `name` of `kind` if its current revision is
    /// `expected` (`None`: the record must not exist), and returns the new
    /// revision. [`crate::Error::Conflict`] (changing nothing) if another
    /// write got there first.
    fn put_record_if(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
        bytes: &[u8],
    ) -> Result<u64> {
        let _ = (kind, name, expected, bytes);
        Err(records_unsupported())
    }

    /// Removes record `name` of `kind` if its current revision is
    /// `expected`; [`crate::Error::Conflict`] (changing nothing) if it
    /// changed or is gone.
    fn delete_record(&self, kind: &str, name: &str, expected: u64) -> Result<()> {
        let _ = (kind, name, expected);
        Err(records_unsupported())
    }

    /// Up to `limit` records of `kind` whose names start with `prefix`, in
    /// name order, starting after `after`.
    fn list_records(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>> {
        let _ = (kind, prefix, after, limit);
        Err(records_unsupported())
    }
}

/// Checks a record kind and name of the generic facility: 1 to 64 and 1 to
/// 512 bytes, no NUL.
pub(crate) fn check_record_name(kind: &str, name: &str) -> Result<()> {
    if kind.is_empty() || kind.len() > 64 || kind.contains('\0') {
        return Err(Error::invalid("record kind must be 1 to 64 bytes, no NUL"));
    }
    if name.is_empty() || name.len() > 512 || name.contains('\0') {
        return Err(Error::invalid("record name must be 1 to 512 bytes, no NUL"));
    }
    Ok(())
}
