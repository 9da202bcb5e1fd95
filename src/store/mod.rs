//! Persistence of key metadata: keys, versions, states, tags and aliases.
//!
//! Custody of material is the backend's concern ([`crate::backend`]); this is
//! everything else the ring knows. [`MemoryStore`] is the embedded default.

mod file;
pub(crate) mod keystore;
mod memory;

pub use file::FileStore;
pub use keystore::{
    Argon2Params, Durability, KeystoreOptions, RealStorage, RootKey, Storage, export_backup,
    restore_backup, rotate_root_key,
};
pub use memory::MemoryStore;

use crate::error::Result;
use crate::key::{Alias, KeyId, KeyMetadata};
use std::fmt::Debug;
use std::sync::Arc;

/// Stores key metadata and aliases.
///
/// Every method is atomic: a failed call changes nothing. `update_key` runs
/// its closure under the store's write lock, so read-modify-write sequences
/// (rotation, state changes) never interleave.
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
}
