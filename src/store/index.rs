//! The in-memory index of keys and aliases that every store keeps: the
//! whole state of a [`MemoryStore`](super::MemoryStore), and the cache of a
//! [`FileStore`](super::FileStore) (which adds the record generations it
//! reflects). One copy of the lookups, the paging and the checks that
//! precede a change, so the stores cannot drift apart.

use super::KeyMetadata;
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

/// Keys by id (hash map for the hot path), their order (for paging), and
/// aliases in name order.
#[derive(Debug, Default)]
pub(crate) struct Index {
    keys: HashMap<KeyId, Arc<KeyMetadata>>,
    order: BTreeSet<KeyId>,
    aliases: BTreeMap<Alias, KeyId>,
}

fn after_bound<T>(after: Option<&T>) -> Bound<&T> {
    after.map_or(Bound::Unbounded, Bound::Excluded)
}

impl Index {
    /// The key's metadata.
    pub(crate) fn get(&self, id: &KeyId) -> Option<&Arc<KeyMetadata>> {
        self.keys.get(id)
    }

    /// Inserts or replaces a key; returns the record it replaced (for the
    /// caller to drop outside its lock).
    pub(crate) fn put_key(&mut self, meta: Arc<KeyMetadata>) -> Option<Arc<KeyMetadata>> {
        self.order.insert(meta.key_id.clone());
        self.keys.insert(meta.key_id.clone(), meta)
    }

    /// Removes a key (its aliases stay in the index but no longer resolve;
    /// see [`Index::remove_key_and_aliases`]).
    pub(crate) fn drop_key(&mut self, id: &KeyId) -> Option<Arc<KeyMetadata>> {
        self.order.remove(id);
        self.keys.remove(id)
    }

    /// Removes a key and every alias pointing at it.
    pub(crate) fn remove_key_and_aliases(&mut self, id: &KeyId) -> Option<Arc<KeyMetadata>> {
        self.aliases.retain(|_, k| k != id);
        self.drop_key(id)
    }

    /// Points `alias` at `key`; returns the key it pointed at before.
    pub(crate) fn set_alias(&mut self, alias: Alias, key: KeyId) -> Option<KeyId> {
        self.aliases.insert(alias, key)
    }

    /// Removes an alias.
    pub(crate) fn remove_alias(&mut self, alias: &Alias) -> Option<KeyId> {
        self.aliases.remove(alias)
    }

    /// The key an alias points at, if both exist.
    pub(crate) fn target(&self, alias: &Alias) -> Option<&KeyId> {
        self.aliases
            .get(alias)
            .filter(|k| self.keys.contains_key(*k))
    }

    /// Checks that `meta` can be inserted with `alias`: the key is new and
    /// the alias free.
    pub(crate) fn check_new_key(&self, meta: &KeyMetadata, alias: Option<&Alias>) -> Result<()> {
        if self.keys.contains_key(&meta.key_id) {
            return Err(Error::invalid(format!(
                "key {} already exists",
                meta.key_id
            )));
        }
        if let Some(a) = alias
            && self.target(a).is_some()
        {
            return Err(Error::AliasExists(a.to_string()));
        }
        Ok(())
    }

    /// Checks an alias write: a new alias (`from = None`) must be free, an
    /// update must still point at `from` (compare-and-set); `to` must exist.
    pub(crate) fn check_alias_write(
        &self,
        alias: &Alias,
        to: &KeyId,
        from: Option<&KeyId>,
    ) -> Result<()> {
        match (self.target(alias), from) {
            (Some(_), None) => return Err(Error::AliasExists(alias.to_string())),
            (None, Some(_)) => return Err(Error::AliasNotFound(alias.to_string())),
            (Some(cur), Some(want)) if cur != want => return Err(Error::alias_moved(alias)),
            _ => {}
        }
        if !self.keys.contains_key(to) {
            return Err(Error::KeyNotFound(to.to_string()));
        }
        Ok(())
    }

    /// Checks an alias deletion: the alias exists and points at `expected`.
    pub(crate) fn check_alias_delete(&self, alias: &Alias, expected: &KeyId) -> Result<()> {
        match self.target(alias) {
            None => Err(Error::AliasNotFound(alias.to_string())),
            Some(cur) if cur != expected => Err(Error::alias_moved(alias)),
            Some(_) => Ok(()),
        }
    }

    /// Up to `limit` keys in id order after `after`.
    pub(crate) fn list_keys(&self, after: Option<&KeyId>, limit: usize) -> Vec<Arc<KeyMetadata>> {
        self.order
            .range((after_bound(after), Bound::Unbounded))
            .take(limit)
            .filter_map(|id| self.keys.get(id).cloned())
            .collect()
    }

    /// Up to `limit` aliases of existing keys in name order after `after`,
    /// only those of `key` if given.
    pub(crate) fn list_aliases(
        &self,
        key: Option<&KeyId>,
        after: Option<&Alias>,
        limit: usize,
    ) -> Vec<(Alias, KeyId)> {
        self.aliases
            .range((after_bound(after), Bound::Unbounded))
            .filter(|(_, k)| self.keys.contains_key(*k))
            .filter(|(_, k)| key.is_none_or(|want| *k == want))
            .take(limit)
            .map(|(a, k)| (a.clone(), k.clone()))
            .collect()
    }
}
