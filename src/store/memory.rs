//! In-memory metadata store.
//!
//! Readers (every operation's key lookup) read their thread's snapshot of a
//! record or alias ([`crate::sync::LocalCache`]): one atomic load that no
//! other thread writes until something changes; on a miss they take the
//! state's read lock for a hash lookup and an `Arc` clone. Writers are serialized by a separate
//! mutex that readers never take, and hold the state's write lock only to
//! publish: [`MetadataStore::update_key`] runs its closure on a private copy
//! of the record (for a rotation that includes generating the new version's
//! material), so no reader waits for that work, and a writer never holds the
//! state lock while it waits for another lock (the backend's).

use super::KeyMetadata;
use super::MetadataStore;
use super::index::Index;
use super::{StoredRecord, check_record_name};
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId};
use crate::sync::{LocalCache, WriterFirst};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Keeps metadata in process memory; lost when the process ends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Serializes changes: held for the whole of every write, so
    /// read-modify-write sequences (rotation) never interleave. Readers
    /// never take it.
    writer: Mutex<()>,
    state: WriterFirst<Index>,
    /// Generic records: (kind, name) -> (revision, bytes), and the last
    /// revision given out (revisions are store-wide, so a record deleted
    /// and created again never repeats one).
    records: Mutex<(u64, Records)>,
    /// Per-thread snapshots of key records and aliases; every write to
    /// `state` invalidates them (see [`Written`]).
    keys: LocalCache<KeyId, Arc<KeyMetadata>>,
    aliases: LocalCache<Alias, KeyId>,
}

/// The state's write guard: dropping it (the change is published) marks
/// every thread's snapshots stale, before the lock is released.
struct Written<'a> {
    guard: std::sync::RwLockWriteGuard<'a, Index>,
    store: &'a MemoryStore,
}

impl std::ops::Deref for Written<'_> {
    type Target = Index;
    fn deref(&self) -> &Index {
        &self.guard
    }
}

impl std::ops::DerefMut for Written<'_> {
    fn deref_mut(&mut self) -> &mut Index {
        &mut self.guard
    }
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        self.store.keys.invalidate();
        self.store.aliases.invalidate();
    }
}

/// Generic records by (kind, name): (revision, bytes).
type Records = BTreeMap<(String, String), (u64, Vec<u8>)>;

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.state.read()
    }

    /// The state for a change; hold only while changing it (the caller
    /// holds the writer lock).
    fn write(&self) -> Written<'_> {
        Written {
            guard: self.state.write(),
            store: self,
        }
    }

    /// Serializes changes. A panic in an `update_key` closure poisons it
    /// without having changed anything (the closure works on a copy).
    fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MetadataStore for MemoryStore {
    fn insert_key(&self, meta: KeyMetadata, alias: Option<&Alias>) -> Result<()> {
        let _w = self.writer();
        let mut st = self.write();
        st.check_new_key(&meta, alias)?;
        if let Some(a) = alias {
            st.set_alias(a.clone(), meta.key_id.clone());
        }
        st.put_key(Arc::new(meta));
        Ok(())
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyMetadata>>> {
        self.keys.get(
            id,
            || Ok(self.read().get(id).cloned()),
            |m| Arc::new(KeyMetadata::clone(m)),
        )
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
            .get(id)
            .cloned()
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let mut next = KeyMetadata::clone(&cur);
        drop(cur);
        f(&mut next)?;
        let next = Arc::new(next);
        let old = self.write().put_key(next.clone());
        // The replaced record is freed here, outside the state lock.
        drop(old);
        Ok(next)
    }

    fn remove_key(&self, id: &KeyId) -> Result<()> {
        let _w = self.writer();
        let old = self.write().remove_key_and_aliases(id);
        drop(old);
        Ok(())
    }

    fn list_keys(&self, after: Option<&KeyId>, limit: usize) -> Result<Vec<Arc<KeyMetadata>>> {
        Ok(self.read().list_keys(after, limit))
    }

    fn resolve_alias(&self, alias: &Alias) -> Result<Option<KeyId>> {
        self.aliases.get(
            alias,
            || Ok(self.read().target(alias).cloned()),
            KeyId::clone,
        )
    }

    fn create_alias(&self, alias: &Alias, key: &KeyId) -> Result<()> {
        let _w = self.writer();
        let mut st = self.write();
        st.check_alias_write(alias, key, None)?;
        st.set_alias(alias.clone(), key.clone());
        Ok(())
    }

    fn update_alias(&self, alias: &Alias, from: &KeyId, to: &KeyId) -> Result<()> {
        let _w = self.writer();
        let mut st = self.write();
        st.check_alias_write(alias, to, Some(from))?;
        st.set_alias(alias.clone(), to.clone());
        Ok(())
    }

    fn delete_alias(&self, alias: &Alias, expected: &KeyId) -> Result<()> {
        let _w = self.writer();
        let mut st = self.write();
        st.check_alias_delete(alias, expected)?;
        st.remove_alias(alias);
        Ok(())
    }

    fn list_aliases(
        &self,
        key: Option<&KeyId>,
        after: Option<&Alias>,
        limit: usize,
    ) -> Result<Vec<(Alias, KeyId)>> {
        Ok(self.read().list_aliases(key, after, limit))
    }

    fn get_record(&self, kind: &str, name: &str) -> Result<Option<StoredRecord>> {
        check_record_name(kind, name)?;
        let r = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(r.1
            .get(&(kind.to_owned(), name.to_owned()))
            .map(|(rev, b)| StoredRecord::new(name.to_owned(), *rev, b.clone())))
    }

    fn put_record_if(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
        bytes: &[u8],
    ) -> Result<u64> {
        check_record_name(kind, name)?;
        let mut r = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let k = (kind.to_owned(), name.to_owned());
        if r.1.get(&k).map(|e| e.0) != expected {
            return Err(Error::Conflict(format!(
                "record {kind}/{name} changed since it was read"
            )));
        }
        let rev = r.0 + 1;
        r.0 = rev;
        r.1.insert(k, (rev, bytes.to_vec()));
        Ok(rev)
    }

    fn delete_record(&self, kind: &str, name: &str, expected: u64) -> Result<()> {
        check_record_name(kind, name)?;
        let mut r = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let k = (kind.to_owned(), name.to_owned());
        if r.1.get(&k).map(|e| e.0) != Some(expected) {
            return Err(Error::Conflict(format!(
                "record {kind}/{name} changed since it was read"
            )));
        }
        r.1.remove(&k);
        Ok(())
    }

    fn list_records(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>> {
        let r = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let start = match after {
            Some(a) if a > prefix => a,
            _ => prefix,
        };
        let from = (kind.to_owned(), start.to_owned());
        Ok(r.1
            .range(from..)
            .filter(|((k, n), _)| k == kind && after.is_none_or(|a| n.as_str() > a))
            .take_while(|((k, n), _)| k == kind && n.starts_with(prefix))
            .take(limit)
            .map(|((_, n), (rev, b))| StoredRecord::new(n.clone(), *rev, b.clone()))
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
