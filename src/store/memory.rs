//! In-memory metadata store.

use super::MetadataStore;
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId, KeyMetadata};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
struct State {
    // Hash map for O(1) lookups on the hot path; an ordered set for paging.
    keys: HashMap<KeyId, Arc<KeyMetadata>>,
    order: BTreeSet<KeyId>,
    aliases: BTreeMap<Alias, KeyId>,
}

/// Keeps metadata in process memory; lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: RwLock<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn after_bound<T>(after: Option<&T>) -> Bound<&T> {
    match after {
        Some(a) => Bound::Excluded(a),
        None => Bound::Unbounded,
    }
}

impl MetadataStore for MemoryStore {
    fn insert_key(&self, meta: KeyMetadata, alias: Option<&Alias>) -> Result<()> {
        let mut st = self.write();
        if st.keys.contains_key(&meta.key_id) {
            return Err(Error::invalid(format!(
                "key {} already exists",
                meta.key_id
            )));
        }
        if let Some(a) = alias {
            if st.aliases.contains_key(a) {
                return Err(Error::AliasExists(a.to_string()));
            }
            st.aliases.insert(a.clone(), meta.key_id.clone());
        }
        st.order.insert(meta.key_id.clone());
        st.keys.insert(meta.key_id.clone(), Arc::new(meta));
        Ok(())
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyMetadata>>> {
        Ok(self.read().keys.get(id).cloned())
    }

    fn update_key(
        &self,
        id: &KeyId,
        f: &mut dyn FnMut(&mut KeyMetadata) -> Result<()>,
    ) -> Result<Arc<KeyMetadata>> {
        let mut st = self.write();
        let cur = st
            .keys
            .get(id)
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let mut next = KeyMetadata::clone(cur);
        f(&mut next)?;
        let next = Arc::new(next);
        st.keys.insert(id.clone(), next.clone());
        Ok(next)
    }

    fn remove_key(&self, id: &KeyId) -> Result<()> {
        let mut st = self.write();
        st.keys.remove(id);
        st.order.remove(id);
        st.aliases.retain(|_, k| k != id);
        Ok(())
    }

    fn list_keys(&self, after: Option<&KeyId>, limit: usize) -> Result<Vec<Arc<KeyMetadata>>> {
        let st = self.read();
        Ok(st
            .order
            .range((after_bound(after), Bound::Unbounded))
            .take(limit)
            .filter_map(|id| st.keys.get(id).cloned())
            .collect())
    }

    fn resolve_alias(&self, alias: &Alias) -> Result<Option<KeyId>> {
        Ok(self.read().aliases.get(alias).cloned())
    }

    fn create_alias(&self, alias: &Alias, key: &KeyId) -> Result<()> {
        let mut st = self.write();
        if st.aliases.contains_key(alias) {
            return Err(Error::AliasExists(alias.to_string()));
        }
        if !st.keys.contains_key(key) {
            return Err(Error::KeyNotFound(key.to_string()));
        }
        st.aliases.insert(alias.clone(), key.clone());
        Ok(())
    }

    fn update_alias(&self, alias: &Alias, from: &KeyId, to: &KeyId) -> Result<()> {
        let mut st = self.write();
        if !st.keys.contains_key(to) {
            return Err(Error::KeyNotFound(to.to_string()));
        }
        match st.aliases.get_mut(alias) {
            Some(k) if k == from => {
                *k = to.clone();
                Ok(())
            }
            Some(_) => Err(Error::alias_moved(alias)),
            None => Err(Error::AliasNotFound(alias.to_string())),
        }
    }

    fn delete_alias(&self, alias: &Alias, expected: &KeyId) -> Result<()> {
        let mut st = self.write();
        match st.aliases.get(alias) {
            Some(k) if k == expected => {
                st.aliases.remove(alias);
                Ok(())
            }
            Some(_) => Err(Error::alias_moved(alias)),
            None => Err(Error::AliasNotFound(alias.to_string())),
        }
    }

    fn list_aliases(
        &self,
        key: Option<&KeyId>,
        after: Option<&Alias>,
        limit: usize,
    ) -> Result<Vec<(Alias, KeyId)>> {
        let st = self.read();
        Ok(st
            .aliases
            .range((after_bound(after), Bound::Unbounded))
            .filter(|(_, k)| key.is_none_or(|want| *k == want))
            .take(limit)
            .map(|(a, k)| (a.clone(), k.clone()))
            .collect())
    }
}
