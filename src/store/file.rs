//! The file-backed metadata store (see [`crate::KeyRing::open`]).

use super::KeyMetadata;
use super::MetadataStore;
use super::index::Index;
use super::keystore::{Keystore, Kind, decode_generic, encode_generic};
use super::{StoredRecord, check_record_name};
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// The shared [`Index`] plus the record generations it reflects.
#[derive(Debug, Default)]
struct Cache {
    /// The keystore change counter this cache reflects (`None` before the
    /// first load).
    seen: Option<u64>,
    index: Index,
    /// Key record name -> (record generation, key).
    key_recs: HashMap<String, (u64, KeyId)>,
    /// Alias record name -> (record generation, alias).
    alias_recs: HashMap<String, (u64, Alias)>,
}

impl Cache {
    fn put_key(&mut self, gn: u64, meta: Arc<KeyMetadata>) {
        self.key_recs
            .insert(key_name(&meta.key_id), (gn, meta.key_id.clone()));
        self.index.put_key(meta);
    }

    fn drop_key(&mut self, id: &KeyId) {
        self.index.drop_key(id);
        self.key_recs.remove(&key_name(id));
    }

    fn put_alias(&mut self, name: String, gn: u64, alias: Alias, key: KeyId) {
        if let Some((_, old)) = self.alias_recs.insert(name, (gn, alias.clone())) {
            self.index.remove_alias(&old);
        }
        self.index.set_alias(alias, key);
    }

    fn drop_alias(&mut self, name: &str) {
        if let Some((_, a)) = self.alias_recs.remove(name) {
            self.index.remove_alias(&a);
        }
    }

    /// Records that this ring's own change `gn` is in the cache.
    fn wrote(&mut self, gn: u64) {
        if self.seen.is_some_and(|s| s + 1 == gn) {
            self.seen = Some(gn);
        }
    }
}

/// Key metadata and aliases in a keystore directory: one encrypted,
/// authenticated record file per key and per alias, so one change costs a
/// few small file writes however many keys there are.
///
/// Reads come from an in-memory copy, brought up to date before every call:
/// a `stat` of the store's manifest tells whether any ring (in this or
/// another process) changed anything, and only the records whose generation
/// changed are read again. Every write takes the directory's cross-process
/// lock and works on the current records, so concurrent rings never lose
/// each other's changes.
#[derive(Debug)]
pub struct FileStore {
    ks: Arc<Keystore>,
    cache: RwLock<Cache>,
}

fn key_name(id: &KeyId) -> String {
    format!("keys/{id}")
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Other(Arc::new(e)))
}

enum Loaded {
    Key(u64, Box<KeyMetadata>),
    Alias(String, u64, Alias, KeyId),
}

impl FileStore {
    pub(crate) fn load(ks: Arc<Keystore>) -> Result<Self> {
        let s = FileStore {
            ks,
            cache: RwLock::new(Cache::default()),
        };
        s.sync()?;
        Ok(s)
    }

    fn read_key(&self, name: &str) -> Result<Option<(u64, KeyMetadata)>> {
        let Some((gn, pt)) = self.ks.read(Kind::Key, name)? else {
            return Ok(None);
        };
        let meta: KeyMetadata = serde_json::from_slice(&pt).map_err(|e| Error::CorruptStore {
            file: name.to_owned(),
            reason: format!("bad key record: {e}"),
        })?;
        if key_name(&meta.key_id) != name {
            return Err(Error::CorruptStore {
                file: name.to_owned(),
                reason: "record names another key".into(),
            });
        }
        Ok(Some((gn, meta)))
    }

    fn read_alias(&self, name: &str) -> Result<Option<(u64, Alias, KeyId)>> {
        let Some((gn, pt)) = self.ks.read(Kind::Alias, name)? else {
            return Ok(None);
        };
        let (alias, key): (Alias, KeyId) =
            serde_json::from_slice(&pt).map_err(|e| Error::CorruptStore {
                file: name.to_owned(),
                reason: format!("bad alias record: {e}"),
            })?;
        if self.ks.alias_name(alias.as_str())? != name {
            return Err(Error::CorruptStore {
                file: name.to_owned(),
                reason: "record names another alias".into(),
            });
        }
        Ok(Some((gn, alias, key)))
    }

    /// Brings the cache up to date with the store: a `stat` when nothing
    /// changed; otherwise re-reads the records whose generation changed and
    /// drops those that are gone.
    fn sync(&self) -> Result<()> {
        self.ks.refresh()?;
        let counter = self.ks.counter();
        if self.cache.read().unwrap_or_else(|e| e.into_inner()).seen == Some(counter) {
            return Ok(());
        }
        let keys = self.ks.names("keys");
        let aliases = self.ks.names("aliases");
        let mut loaded = Vec::new();
        {
            let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
            for (name, gn) in &keys {
                if c.key_recs.get(name).map(|e| e.0) != Some(*gn) {
                    loaded.push((Kind::Key, name.clone()));
                }
            }
            for (name, gn) in &aliases {
                if c.alias_recs.get(name).map(|e| e.0) != Some(*gn) {
                    loaded.push((Kind::Alias, name.clone()));
                }
            }
        }
        let mut fresh = Vec::with_capacity(loaded.len());
        for (kind, name) in loaded {
            if kind == Kind::Key {
                if let Some((g, m)) = self.read_key(&name)? {
                    fresh.push(Loaded::Key(g, Box::new(m)));
                }
            } else if let Some((g, a, k)) = self.read_alias(&name)? {
                fresh.push(Loaded::Alias(name, g, a, k));
            }
        }
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for l in fresh {
            match l {
                Loaded::Key(g, m) => {
                    // Another thread may have cached a newer generation.
                    if c.key_recs.get(&key_name(&m.key_id)).is_none_or(|e| e.0 < g) {
                        c.put_key(g, Arc::new(*m));
                    }
                }
                Loaded::Alias(name, g, a, k) => {
                    if c.alias_recs.get(&name).is_none_or(|e| e.0 < g) {
                        c.put_alias(name, g, a, k);
                    }
                }
            }
        }
        // Gone from the store as of `counter` (entries newer than `counter`
        // were cached by a later sync or write, and stay).
        let live: HashSet<&str> = keys
            .iter()
            .chain(aliases.iter())
            .map(|(n, _)| n.as_str())
            .collect();
        let gone_keys: Vec<KeyId> = c
            .key_recs
            .iter()
            .filter(|(n, (g, _))| *g <= counter && !live.contains(n.as_str()))
            .map(|(_, (_, id))| id.clone())
            .collect();
        for id in gone_keys {
            c.drop_key(&id);
        }
        let gone_aliases: Vec<String> = c
            .alias_recs
            .iter()
            .filter(|(n, (g, _))| *g <= counter && !live.contains(n.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone_aliases {
            c.drop_alias(&n);
        }
        c.seen = Some(c.seen.map_or(counter, |s| s.max(counter)));
        Ok(())
    }

    /// Writes an alias: a new one (`from = None`), or a compare-and-set
    /// from the key it must still point at.
    fn put_alias(&self, alias: &Alias, key: &KeyId, from: Option<&KeyId>) -> Result<()> {
        let lock = self.ks.lock()?;
        self.sync()?;
        {
            let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
            c.index.check_alias_write(alias, key, from)?;
        }
        let name = self.ks.alias_name(alias.as_str())?;
        let g = self
            .ks
            .apply(&lock, &[(Kind::Alias, &name, &json(&(alias, key))?)], &[])?;
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        c.put_alias(name, g, alias.clone(), key.clone());
        c.wrote(g);
        Ok(())
    }
}

impl FileStore {
    /// Reads generic record file `fname` and checks it is `kind`/`name`
    /// (or, with `name = None`, of `kind`): `None` if absent or another kind.
    fn read_generic(
        &self,
        fname: &str,
        kind: &str,
        name: Option<&str>,
    ) -> Result<Option<StoredRecord>> {
        let Some((gn, pt)) = self.ks.read(Kind::Record, fname)? else {
            return Ok(None);
        };
        let (k, n, bytes) = decode_generic(&pt).ok_or_else(|| Error::CorruptStore {
            file: fname.to_owned(),
            reason: "bad generic record".into(),
        })?;
        if k != kind {
            return Ok(None);
        }
        if name.is_some_and(|want| want != n) || self.ks.generic_name(&k, &n)? != fname {
            return Err(Error::CorruptStore {
                file: fname.to_owned(),
                reason: "record names another record".into(),
            });
        }
        Ok(Some(StoredRecord::new(n, gn, bytes.to_vec())))
    }

    /// Applies one generic-record change under the lock and notes it in the
    /// cache.
    fn apply_generic(
        &self,
        lock: &super::keystore::WriteLock<'_>,
        puts: &[(Kind, &str, &[u8])],
        removes: &[&str],
    ) -> Result<u64> {
        let g = self.ks.apply(lock, puts, removes)?;
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .wrote(g);
        Ok(g)
    }
}

impl MetadataStore for FileStore {
    fn get_record(&self, kind: &str, name: &str) -> Result<Option<StoredRecord>> {
        check_record_name(kind, name)?;
        self.ks.refresh()?;
        let fname = self.ks.generic_name(kind, name)?;
        self.read_generic(&fname, kind, Some(name))
    }

    fn put_record_if(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
        bytes: &[u8],
    ) -> Result<u64> {
        check_record_name(kind, name)?;
        let fname = self.ks.generic_name(kind, name)?;
        let pt = encode_generic(kind, name, bytes)?;
        // The lock brings the manifest up to date: the generation read
        // here is the current one, and no other writer runs until apply.
        let lock = self.ks.lock()?;
        if self.ks.gen_of(&fname) != expected {
            return Err(Error::Conflict(format!(
                "record {kind}/{name} changed since it was read"
            )));
        }
        self.apply_generic(&lock, &[(Kind::Record, &fname, &pt)], &[])
    }

    fn delete_record(&self, kind: &str, name: &str, expected: u64) -> Result<()> {
        check_record_name(kind, name)?;
        let fname = self.ks.generic_name(kind, name)?;
        let lock = self.ks.lock()?;
        if self.ks.gen_of(&fname) != Some(expected) {
            return Err(Error::Conflict(format!(
                "record {kind}/{name} changed since it was read"
            )));
        }
        self.apply_generic(&lock, &[], &[&fname]).map(drop)
    }

    /// Reads (and authenticates) every generic record to find the names:
    /// record file names are keyed hashes, so the names are only inside.
    fn list_records(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.ks.refresh()?;
        let mut out = Vec::new();
        for (fname, _) in self.ks.names("records") {
            if let Some(r) = self.read_generic(&fname, kind, None)?
                && r.name.starts_with(prefix)
                && after.is_none_or(|a| r.name.as_str() > a)
            {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.truncate(limit);
        Ok(out)
    }

    fn insert_key(&self, meta: KeyMetadata, alias: Option<&Alias>) -> Result<()> {
        let lock = self.ks.lock()?;
        self.sync()?;
        {
            let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
            c.index.check_new_key(&meta, alias)?;
        }
        let kname = key_name(&meta.key_id);
        let krec = json(&meta)?;
        let alias_rec = match alias {
            Some(a) => Some((self.ks.alias_name(a.as_str())?, json(&(a, &meta.key_id))?)),
            None => None,
        };
        let mut puts: Vec<(Kind, &str, &[u8])> = Vec::new();
        if let Some((n, r)) = &alias_rec {
            puts.push((Kind::Alias, n, r));
        }
        puts.push((Kind::Key, &kname, &krec));
        // One commit: the key and its alias appear together.
        let g = self.ks.apply(&lock, &puts, &[])?;
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        let id = meta.key_id.clone();
        c.put_key(g, Arc::new(meta));
        if let (Some(a), Some((n, _))) = (alias, alias_rec) {
            c.put_alias(n, g, a.clone(), id);
        }
        c.wrote(g);
        Ok(())
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyMetadata>>> {
        self.sync()?;
        Ok(self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .get(id)
            .cloned())
    }

    fn update_key(
        &self,
        id: &KeyId,
        f: &mut dyn FnMut(&mut KeyMetadata) -> Result<()>,
    ) -> Result<Arc<KeyMetadata>> {
        let lock = self.ks.lock()?;
        self.sync()?;
        let mut meta: KeyMetadata = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .get(id)
            .map(|m| (**m).clone())
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        f(&mut meta)?;
        let g = self
            .ks
            .apply(&lock, &[(Kind::Key, &key_name(id), &json(&meta)?)], &[])?;
        let meta = Arc::new(meta);
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        c.put_key(g, meta.clone());
        c.wrote(g);
        Ok(meta)
    }

    fn remove_key(&self, id: &KeyId) -> Result<()> {
        let lock = self.ks.lock()?;
        self.sync()?;
        let alias_names: Vec<String> = {
            let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
            c.alias_recs
                .iter()
                .filter(|(_, (_, a))| c.index.target(a) == Some(id))
                .map(|(n, _)| n.clone())
                .collect()
        };
        let kname = key_name(id);
        let mut removes: Vec<&str> = vec![&kname];
        removes.extend(alias_names.iter().map(String::as_str));
        // One commit: the key and its aliases go together.
        let g = self.ks.apply(&lock, &[], &removes)?;
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        c.drop_key(id);
        for n in &alias_names {
            c.drop_alias(n);
        }
        c.wrote(g);
        Ok(())
    }

    fn list_keys(&self, after: Option<&KeyId>, limit: usize) -> Result<Vec<Arc<KeyMetadata>>> {
        self.sync()?;
        Ok(self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .list_keys(after, limit))
    }

    fn resolve_alias(&self, alias: &Alias) -> Result<Option<KeyId>> {
        self.sync()?;
        Ok(self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .target(alias)
            .cloned())
    }

    fn create_alias(&self, alias: &Alias, key: &KeyId) -> Result<()> {
        self.put_alias(alias, key, None)
    }

    fn update_alias(&self, alias: &Alias, from: &KeyId, to: &KeyId) -> Result<()> {
        self.put_alias(alias, to, Some(from))
    }

    fn delete_alias(&self, alias: &Alias, expected: &KeyId) -> Result<()> {
        let lock = self.ks.lock()?;
        self.sync()?;
        self.cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .check_alias_delete(alias, expected)?;
        let name = self.ks.alias_name(alias.as_str())?;
        let g = self.ks.apply(&lock, &[], &[&name])?;
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        c.drop_alias(&name);
        c.wrote(g);
        Ok(())
    }

    fn list_aliases(
        &self,
        key: Option<&KeyId>,
        after: Option<&Alias>,
        limit: usize,
    ) -> Result<Vec<(Alias, KeyId)>> {
        self.sync()?;
        Ok(self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .list_aliases(key, after, limit))
    }
}
