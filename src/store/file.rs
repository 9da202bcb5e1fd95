//! The file-backed metadata store (see [`crate::KeyRing::open`]).

use super::MetadataStore;
use super::keystore::{Keystore, Kind, hex};
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId, KeyMetadata};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
struct Cache {
    keys: HashMap<KeyId, Arc<KeyMetadata>>,
    order: BTreeSet<KeyId>,
    aliases: BTreeMap<Alias, KeyId>,
}

/// Key metadata and aliases in a keystore directory: one encrypted,
/// authenticated record file per key and per alias, so one change costs one
/// or two small file writes however many keys there are.
///
/// Reads come from an in-memory copy loaded at open. Every write takes the
/// directory's cross-process lock and works on the record re-read from disk,
/// so concurrent rings (in this or other processes) never lose each other's
/// changes; another process's changes become visible to this ring's reads
/// when it next writes that key, or reopens.
#[derive(Debug)]
pub struct FileStore {
    ks: Arc<Keystore>,
    cache: RwLock<Cache>,
}

fn key_rel(id: &KeyId) -> String {
    format!("keys/{id}.rec")
}

fn alias_rel(a: &Alias) -> String {
    format!("aliases/{}.rec", hex(a.as_str().as_bytes()))
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Other(Arc::new(e)))
}

impl FileStore {
    pub(crate) fn load(ks: Arc<Keystore>) -> Result<Self> {
        let mut cache = Cache::default();
        for name in ks.list("keys")? {
            let rel = format!("keys/{name}");
            let Some(pt) = ks.read(Kind::Key, &rel)? else {
                continue;
            };
            let meta: KeyMetadata =
                serde_json::from_slice(&pt).map_err(|e| Error::CorruptStore {
                    file: rel.clone(),
                    reason: format!("bad key record: {e}"),
                })?;
            if format!("{}.rec", meta.key_id) != name {
                return Err(Error::CorruptStore {
                    file: rel,
                    reason: "record names another key".into(),
                });
            }
            cache.order.insert(meta.key_id.clone());
            cache.keys.insert(meta.key_id.clone(), Arc::new(meta));
        }
        for name in ks.list("aliases")? {
            let rel = format!("aliases/{name}");
            let Some(pt) = ks.read(Kind::Alias, &rel)? else {
                continue;
            };
            let (alias, key): (Alias, KeyId) =
                serde_json::from_slice(&pt).map_err(|e| Error::CorruptStore {
                    file: rel.clone(),
                    reason: format!("bad alias record: {e}"),
                })?;
            if alias_rel(&alias) != rel {
                return Err(Error::CorruptStore {
                    file: rel,
                    reason: "record names another alias".into(),
                });
            }
            // An alias whose key file is absent was left by an interrupted
            // create (the key file is written last) or delete: not visible.
            if cache.keys.contains_key(&key) {
                cache.aliases.insert(alias, key);
            }
        }
        Ok(FileStore {
            ks,
            cache: RwLock::new(cache),
        })
    }

    fn read_key_disk(&self, id: &KeyId) -> Result<Option<KeyMetadata>> {
        let rel = key_rel(id);
        match self.ks.read(Kind::Key, &rel)? {
            None => Ok(None),
            Some(pt) => serde_json::from_slice(&pt)
                .map(Some)
                .map_err(|e| Error::CorruptStore {
                    file: rel,
                    reason: format!("bad key record: {e}"),
                }),
        }
    }

    /// The key an alias points at on disk (ignoring dangling aliases).
    fn read_alias_disk(&self, a: &Alias) -> Result<Option<KeyId>> {
        let rel = alias_rel(a);
        match self.ks.read(Kind::Alias, &rel)? {
            None => Ok(None),
            Some(pt) => {
                let (_, key): (Alias, KeyId) =
                    serde_json::from_slice(&pt).map_err(|e| Error::CorruptStore {
                        file: rel,
                        reason: format!("bad alias record: {e}"),
                    })?;
                Ok(self.ks.exists(&key_rel(&key)).then_some(key))
            }
        }
    }

    /// Creates (`must_exist = false`) or repoints (`true`) an alias.
    /// Writes an alias: a new one (`from = None`), or a compare-and-set
    /// from the key it must still point at.
    fn put_alias(&self, alias: &Alias, key: &KeyId, from: Option<&KeyId>) -> Result<()> {
        let _lock = self.ks.lock()?;
        match (self.read_alias_disk(alias)?, from) {
            (Some(_), None) => return Err(Error::AliasExists(alias.to_string())),
            (None, Some(_)) => return Err(Error::AliasNotFound(alias.to_string())),
            (Some(cur), Some(want)) if &cur != want => return Err(Error::alias_moved(alias)),
            _ => {}
        }
        if !self.ks.exists(&key_rel(key)) {
            return Err(Error::KeyNotFound(key.to_string()));
        }
        self.ks
            .write(Kind::Alias, &alias_rel(alias), &json(&(alias, key))?)?;
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .aliases
            .insert(alias.clone(), key.clone());
        Ok(())
    }

    fn cache_put(&self, meta: KeyMetadata) -> Arc<KeyMetadata> {
        let meta = Arc::new(meta);
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        c.order.insert(meta.key_id.clone());
        c.keys.insert(meta.key_id.clone(), meta.clone());
        meta
    }
}

impl MetadataStore for FileStore {
    fn insert_key(&self, meta: KeyMetadata, alias: Option<&Alias>) -> Result<()> {
        let _lock = self.ks.lock()?;
        if self.ks.exists(&key_rel(&meta.key_id)) {
            return Err(Error::invalid(format!(
                "key {} already exists",
                meta.key_id
            )));
        }
        if let Some(a) = alias {
            if self.read_alias_disk(a)?.is_some() {
                return Err(Error::AliasExists(a.to_string()));
            }
            self.ks
                .write(Kind::Alias, &alias_rel(a), &json(&(a, &meta.key_id))?)?;
        }
        // The key record is the commit point.
        self.ks
            .write(Kind::Key, &key_rel(&meta.key_id), &json(&meta)?)?;
        let id = meta.key_id.clone();
        self.cache_put(meta);
        if let Some(a) = alias {
            self.cache
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .aliases
                .insert(a.clone(), id);
        }
        Ok(())
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyMetadata>>> {
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .get(id)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        // Not known here: another ring or process may have created it.
        Ok(self.read_key_disk(id)?.map(|m| self.cache_put(m)))
    }

    fn update_key(
        &self,
        id: &KeyId,
        f: &mut dyn FnMut(&mut KeyMetadata) -> Result<()>,
    ) -> Result<Arc<KeyMetadata>> {
        let _lock = self.ks.lock()?;
        let mut meta = self
            .read_key_disk(id)?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        f(&mut meta)?;
        self.ks.write(Kind::Key, &key_rel(id), &json(&meta)?)?;
        Ok(self.cache_put(meta))
    }

    fn remove_key(&self, id: &KeyId) -> Result<()> {
        let _lock = self.ks.lock()?;
        // Key record first: its aliases then dangle and are invisible.
        self.ks.remove(&key_rel(id))?;
        let aliases: Vec<Alias> = {
            let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
            c.keys.remove(id);
            c.order.remove(id);
            let a: Vec<Alias> = c
                .aliases
                .iter()
                .filter(|(_, k)| *k == id)
                .map(|(a, _)| a.clone())
                .collect();
            c.aliases.retain(|_, k| k != id);
            a
        };
        for a in aliases {
            self.ks.remove(&alias_rel(&a))?;
        }
        Ok(())
    }

    fn list_keys(&self, after: Option<&KeyId>, limit: usize) -> Result<Vec<Arc<KeyMetadata>>> {
        let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(c.order
            .range((lower, Bound::Unbounded))
            .take(limit)
            .filter_map(|id| c.keys.get(id).cloned())
            .collect())
    }

    fn resolve_alias(&self, alias: &Alias) -> Result<Option<KeyId>> {
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .aliases
            .get(alias)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        let found = self.read_alias_disk(alias)?;
        if let Some(k) = &found {
            self.cache
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .aliases
                .insert(alias.clone(), k.clone());
        }
        Ok(found)
    }

    fn create_alias(&self, alias: &Alias, key: &KeyId) -> Result<()> {
        self.put_alias(alias, key, None)
    }

    fn update_alias(&self, alias: &Alias, from: &KeyId, to: &KeyId) -> Result<()> {
        self.put_alias(alias, to, Some(from))
    }

    fn delete_alias(&self, alias: &Alias, expected: &KeyId) -> Result<()> {
        let _lock = self.ks.lock()?;
        match self.read_alias_disk(alias)? {
            None => return Err(Error::AliasNotFound(alias.to_string())),
            Some(cur) if &cur != expected => return Err(Error::alias_moved(alias)),
            Some(_) => {}
        }
        self.ks.remove(&alias_rel(alias))?;
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .aliases
            .remove(alias);
        Ok(())
    }

    fn list_aliases(
        &self,
        key: Option<&KeyId>,
        after: Option<&Alias>,
        limit: usize,
    ) -> Result<Vec<(Alias, KeyId)>> {
        let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(c.aliases
            .range((lower, Bound::Unbounded))
            .filter(|(_, k)| key.is_none_or(|want| *k == want))
            .take(limit)
            .map(|(a, k)| (a.clone(), k.clone()))
            .collect())
    }
}
