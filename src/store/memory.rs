//! In-memory metadata store.
//!
//! Readers (every operation's key lookup) take the state's read lock for a
//! hash lookup and an `Arc` clone. Writers are serialized by a separate
//! mutex that readers never take, and hold the state's write lock only to
//! publish: [`MetadataStore::update_key`] runs its closure on a private copy
//! of the record (for a rotation that includes generating the new version's
//! material), so no reader waits for that work, and a writer never holds the
//! state lock while it waits for another lock (the backend's).

use super::KeyMetadata;
use super::MetadataStore;
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId};
use crate::sync::WriterFirst;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
    /// Serializes changes: held for the whole of every write, so
    /// read-modify-write sequences (rotation) never interleave. Readers
    /// never take it.
    writer: Mutex<()>,
    state: WriterFirst<State>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read()
    }

    /// The state for a change; hold only while changing it (the caller
    /// holds the writer lock).
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write()
    }

    /// Serializes changes. A panic in an `update_key` closure poisons it
    /// without having changed anything (the closure works on a copy).
    fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
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
        let _w = self.writer();
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
        // Under the writer lock nobody else changes the record, so the copy
        // made here is still current when it is published; readers keep
        // seeing the previous record until then.
        let _w = self.writer();
        let cur = self
            .read()
            .keys
            .get(id)
            .cloned()
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let mut next = KeyMetadata::clone(&cur);
        drop(cur);
        f(&mut next)?;
        let next = Arc::new(next);
        let old = self.write().keys.insert(id.clone(), next.clone());
        // The replaced record is freed here, outside the state lock.
        drop(old);
        Ok(next)
    }

    fn remove_key(&self, id: &KeyId) -> Result<()> {
        let _w = self.writer();
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
        let _w = self.writer();
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
        let _w = self.writer();
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
        let _w = self.writer();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CreateKeyOptions, KeyRing, KeySpec, Principal};

    fn store_with_key() -> (Arc<MemoryStore>, crate::Client, KeyId) {
        let store = Arc::new(MemoryStore::new());
        let ring = KeyRing::builder().store(store.clone()).build();
        let c = ring.client(Principal::user("admin").unwrap());
        let id = c
            .create_key(
                KeySpec::default(),
                CreateKeyOptions::new()
                    .alias("alias/k")
                    .description("before"),
            )
            .unwrap();
        (store, c, id)
    }

    /// While an update's closure runs (a rotation generates material
    /// there), readers on other threads still get the previous record:
    /// they never wait for the closure.
    #[test]
    fn readers_proceed_while_an_update_runs() {
        let (store, c, id) = store_with_key();
        let updated = store
            .update_key(&id, &mut |m| {
                let seen = std::thread::scope(|s| {
                    s.spawn(|| c.describe_key("alias/k").unwrap().description)
                        .join()
                        .unwrap()
                });
                assert_eq!(seen, "before");
                m.description = "after".into();
                Ok(())
            })
            .unwrap();
        assert_eq!(updated.description, "after");
        assert_eq!(c.describe_key(id.as_str()).unwrap().description, "after");
    }

    /// A failing or panicking closure changes nothing, and the store keeps
    /// working.
    #[test]
    fn failed_updates_change_nothing() {
        let (store, c, id) = store_with_key();
        let err = store.update_key(&id, &mut |m| {
            m.description = "lost".into();
            Err(Error::invalid("no"))
        });
        assert!(err.is_err());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = store.update_key(&id, &mut |m| {
                m.description = "lost".into();
                panic!("closure panics");
            });
        }));
        assert!(panicked.is_err());
        assert_eq!(c.describe_key(id.as_str()).unwrap().description, "before");
        store
            .update_key(&id, &mut |m| {
                m.description = "after".into();
                Ok(())
            })
            .unwrap();
        assert_eq!(c.describe_key(id.as_str()).unwrap().description, "after");
    }
}
