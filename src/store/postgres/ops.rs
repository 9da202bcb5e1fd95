//! [`MetadataStore`] on PostgreSQL: every change is one transaction that
//! ends with its `NOTIFY`; reads go through the cache (`cache.rs`).

use super::auth::{guard, not_authentic};
use super::cache::{payload_alias, payload_key};
use super::rows::{
    KEY_SELECT, Verified, from_row, notify, read_key_locked, write_alias, write_key,
};
use super::{PostgresStore, Retry, at_commit, pre};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId};
use crate::policy::{Grant, KeyAccess, Policy};
use crate::principal::Principal;
use crate::store::{KeyMetadata, MetadataStore};
use postgres::types::Type;
use std::sync::Arc;
use std::time::Instant;

fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// After a local change: drop the entry at once (the NOTIFY comes back too).
impl PostgresStore {
    fn forget_key(&self, id: &KeyId) {
        self.core.shared.invalidate(&payload_key(id));
    }

    fn forget_alias(&self, a: &Alias) {
        self.core.shared.invalidate(&payload_alias(a));
    }

    /// Verifies a key read, remembers its revision (a later read of an
    /// older one is refused), and turns it into metadata.
    fn checked(&self, r: &postgres::Row, started: Instant) -> Result<Verified> {
        let keys = self.core.keys();
        let v = from_row(&keys, r).map_err(|e| self.core.explain(e))?;
        self.core
            .shared
            .witness(format!("k:{}", v.meta.key_id), v.rev, started)?;
        Ok(v)
    }

    /// Verifies an alias row `(alias, key_id, rev, mac)` and remembers its
    /// revision.
    fn checked_alias(&self, r: &postgres::Row, started: Instant) -> Result<(Alias, KeyId)> {
        let (a, k, rev): (&str, &str, i64) = (r.get(0), r.get(1), r.get(2));
        if !self.core.keys().alias_ok(a, k, rev, r.get(3)) {
            return Err(not_authentic("strongroom_aliases", a));
        }
        self.core.shared.witness(format!("a:{a}"), rev, started)?;
        let bad = || Error::CorruptStore {
            file: format!("postgres:strongroom_aliases/{a}"),
            reason: "not an alias or key id".into(),
        };
        Ok((
            Alias::parse(a).map_err(|_| bad())?,
            KeyId::parse(k).map_err(|_| bad())?,
        ))
    }

    /// Writes an alias: new (`from = None`) or a compare-and-set from the
    /// key it must still point at (the current row verified first).
    fn put_alias(&self, alias: &Alias, to: &KeyId, from: Option<&KeyId>) -> Result<()> {
        let keys = self.core.keys();
        let r = self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("alias"))?;
            guard(&mut tx, &keys)?;
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM strongroom_keys WHERE key_id = $1 FOR SHARE",
                    &[&to.as_str()],
                )
                .map_err(pre("alias"))?;
            if exists.is_none() {
                return Err(Retry::Stop(Error::KeyNotFound(to.to_string())));
            }
            match from {
                None => {
                    if !write_alias(&mut tx, &keys, alias.as_str(), to.as_str(), true)? {
                        return Err(Retry::Stop(Error::AliasExists(alias.to_string())));
                    }
                }
                Some(from) => {
                    let started = Instant::now();
                    let cur = tx
                        .query_opt(
                            "SELECT alias, key_id, rev, mac FROM strongroom_aliases \
                             WHERE alias = $1 FOR UPDATE",
                            &[&alias.as_str()],
                        )
                        .map_err(pre("update alias"))?;
                    let Some(cur) = cur else {
                        return Err(Retry::Stop(Error::AliasNotFound(alias.to_string())));
                    };
                    let (_, k) = self.checked_alias(&cur, started).map_err(Retry::Stop)?;
                    if &k != from {
                        return Err(Retry::Stop(Error::alias_moved(alias)));
                    }
                    write_alias(&mut tx, &keys, alias.as_str(), to.as_str(), false)?;
                }
            }
            notify(&mut tx, &payload_alias(alias))?;
            tx.commit().map_err(at_commit)
        });
        self.forget_alias(alias);
        r
    }

    /// One locked read-modify-write of a key: the row locked and verified,
    /// `f` applied to a copy, the rows that changed written with fresh
    /// MACs. `f` may run more than once (see [`MetadataStore::update_key`]).
    fn mutate(
        &self,
        id: &KeyId,
        f: &mut dyn FnMut(&mut KeyMetadata) -> Result<()>,
    ) -> Result<Arc<KeyMetadata>> {
        let keys = self.core.keys();
        let r = self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("update key"))?;
            guard(&mut tx, &keys)?;
            let started = Instant::now();
            let old = read_key_locked(&mut tx, &keys, id)?
                .ok_or_else(|| Retry::Stop(Error::KeyNotFound(id.to_string())))?;
            self.core
                .shared
                .witness(format!("k:{id}"), old.rev, started)
                .map_err(Retry::Stop)?;
            let mut new = old.meta.clone();
            f(&mut new).map_err(Retry::from)?;
            if new.key_id != old.meta.key_id {
                return Err(Retry::Stop(Error::invalid(
                    "an update cannot change a key's id",
                )));
            }
            write_key(&mut tx, &keys, &new, Some(&old))?;
            notify(&mut tx, &payload_key(id))?;
            tx.commit().map_err(at_commit)?;
            Ok(Arc::new(new))
        });
        self.forget_key(id);
        r
    }
}

impl MetadataStore for PostgresStore {
    fn insert_key(&self, meta: KeyMetadata, alias: Option<&Alias>) -> Result<()> {
        let id = meta.key_id.clone();
        let keys = self.core.keys();
        let r = self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("insert key"))?;
            guard(&mut tx, &keys)?;
            write_key(&mut tx, &keys, &meta, None)?;
            if let Some(a) = alias {
                if !write_alias(&mut tx, &keys, a.as_str(), id.as_str(), true)? {
                    return Err(Retry::Stop(Error::AliasExists(a.to_string())));
                }
                notify(&mut tx, &payload_alias(a))?;
            }
            notify(&mut tx, &payload_key(&id))?;
            tx.commit().map_err(at_commit)
        });
        self.forget_key(&id);
        if let Some(a) = alias {
            self.forget_alias(a);
        }
        r
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<Arc<KeyMetadata>>> {
        if let Some(m) = self.core.shared.key(id) {
            return Ok(Some(m));
        }
        let t = self.core.shared.ticket();
        // One round trip (typed parameters, no separate prepare).
        let row = self.core.run(|c| {
            c.query_typed_opt(
                &format!("{KEY_SELECT} WHERE k.key_id = $1"),
                &[(&id.as_str(), Type::TEXT)],
            )
            .map_err(pre("read key"))
        })?;
        let m = row
            .map(|r| self.checked(&r, t.at))
            .transpose()?
            .map(|v| Arc::new(v.meta));
        if let Some(m) = &m {
            self.core.shared.put_key(&t, m.clone());
        }
        Ok(m)
    }

    /// Locks the key's row, runs `f` on the current copy, writes the result
    /// (the grants that changed, row by row) and commits. If the attempt
    /// fails before its commit with a retryable error, `f` **runs again** on
    /// a fresh copy: it must tolerate repetition.
    fn update_key(
        &self,
        id: &KeyId,
        f: &mut dyn FnMut(&mut KeyMetadata) -> Result<()>,
    ) -> Result<Arc<KeyMetadata>> {
        self.mutate(id, f)
    }

    fn remove_key(&self, id: &KeyId) -> Result<()> {
        let r = self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("remove key"))?;
            let rows = tx
                .query(
                    "DELETE FROM strongroom_aliases WHERE key_id = $1 RETURNING alias",
                    &[&id.as_str()],
                )
                .map_err(pre("remove key"))?;
            tx.execute(
                "DELETE FROM strongroom_keys WHERE key_id = $1",
                &[&id.as_str()],
            )
            .map_err(pre("remove key"))?;
            let mut aliases = Vec::with_capacity(rows.len());
            for r in &rows {
                match Alias::parse(r.get::<_, &str>(0)) {
                    Ok(a) => {
                        notify(&mut tx, &payload_alias(&a))?;
                        aliases.push(a);
                    }
                    Err(_) => notify(&mut tx, "*")?,
                }
            }
            notify(&mut tx, &payload_key(id))?;
            tx.commit().map_err(at_commit)?;
            Ok(aliases)
        });
        self.forget_key(id);
        match r {
            Ok(aliases) => {
                for a in &aliases {
                    self.forget_alias(a);
                }
                Ok(())
            }
            Err(e) => {
                // The outcome may be unknown: forget every alias.
                self.core.shared.forget_aliases();
                Err(e)
            }
        }
    }

    fn list_keys(&self, after: Option<&KeyId>, limit: usize) -> Result<Vec<Arc<KeyMetadata>>> {
        let after = after.map_or("", KeyId::as_str);
        let started = Instant::now();
        let rows = self.core.run(|c| {
            c.query(
                &format!("{KEY_SELECT} WHERE k.key_id > $1 ORDER BY k.key_id LIMIT $2"),
                &[&after, &limit_i64(limit)],
            )
            .map_err(pre("list keys"))
        })?;
        rows.iter()
            .map(|r| self.checked(r, started).map(|v| Arc::new(v.meta)))
            .collect()
    }

    fn resolve_alias(&self, alias: &Alias) -> Result<Option<KeyId>> {
        if let Some(k) = self.core.shared.alias(alias) {
            return Ok(Some(k));
        }
        let t = self.core.shared.ticket();
        let row = self.core.run(|c| {
            c.query_typed_opt(
                "SELECT alias, key_id, rev, mac FROM strongroom_aliases WHERE alias = $1",
                &[(&alias.as_str(), Type::TEXT)],
            )
            .map_err(pre("resolve alias"))
        })?;
        let Some(row) = row else { return Ok(None) };
        let (a, k) = self
            .checked_alias(&row, t.at)
            .map_err(|e| self.core.explain(e))?;
        if &a != alias {
            return Err(not_authentic("strongroom_aliases", alias.as_str()));
        }
        self.core.shared.put_alias(&t, alias.clone(), k.clone());
        Ok(Some(k))
    }

    fn create_alias(&self, alias: &Alias, key: &KeyId) -> Result<()> {
        self.put_alias(alias, key, None)
    }

    fn update_alias(&self, alias: &Alias, from: &KeyId, to: &KeyId) -> Result<()> {
        self.put_alias(alias, to, Some(from))
    }

    fn delete_alias(&self, alias: &Alias, expected: &KeyId) -> Result<()> {
        let r = self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("delete alias"))?;
            let started = Instant::now();
            let cur = tx
                .query_opt(
                    "SELECT alias, key_id, rev, mac FROM strongroom_aliases \
                     WHERE alias = $1 FOR UPDATE",
                    &[&alias.as_str()],
                )
                .map_err(pre("delete alias"))?;
            let Some(cur) = cur else {
                return Err(Retry::Stop(Error::AliasNotFound(alias.to_string())));
            };
            let (_, k) = self.checked_alias(&cur, started).map_err(Retry::Stop)?;
            if &k != expected {
                return Err(Retry::Stop(Error::alias_moved(alias)));
            }
            tx.execute(
                "DELETE FROM strongroom_aliases WHERE alias = $1",
                &[&alias.as_str()],
            )
            .map_err(pre("delete alias"))?;
            notify(&mut tx, &payload_alias(alias))?;
            tx.commit().map_err(at_commit)
        });
        self.forget_alias(alias);
        r
    }

    fn list_aliases(
        &self,
        key: Option<&KeyId>,
        after: Option<&Alias>,
        limit: usize,
    ) -> Result<Vec<(Alias, KeyId)>> {
        let after = after.map_or("", Alias::as_str);
        let key = key.map(KeyId::as_str);
        let started = Instant::now();
        let rows = self.core.run(|c| {
            c.query(
                "SELECT alias, key_id, rev, mac FROM strongroom_aliases \
                 WHERE alias > $1 AND ($2::text IS NULL OR key_id = $2) \
                 ORDER BY alias LIMIT $3",
                &[&after, &key, &limit_i64(limit)],
            )
            .map_err(pre("list aliases"))
        })?;
        rows.iter()
            .map(|r| self.checked_alias(r, started))
            .collect::<Result<_>>()
            .map_err(|e| self.core.explain(e))
    }

    /// One query for the whole page (not one per key); every row's MAC is
    /// checked as in `list_aliases`.
    fn aliases_of(
        &self,
        keys: &[KeyId],
        limit_per_key: usize,
    ) -> Result<std::collections::HashMap<KeyId, Vec<Alias>>> {
        let ids: Vec<&str> = keys.iter().map(KeyId::as_str).collect();
        let started = Instant::now();
        let rows = self.core.run(|c| {
            c.query(
                "SELECT alias, key_id, rev, mac FROM strongroom_aliases \
                 WHERE key_id = ANY($1) ORDER BY alias",
                &[&ids],
            )
            .map_err(pre("list aliases of keys"))
        })?;
        let mut out: std::collections::HashMap<KeyId, Vec<Alias>> = Default::default();
        for r in &rows {
            let (alias, key) = self
                .checked_alias(r, started)
                .map_err(|e| self.core.explain(e))?;
            let list = out.entry(key).or_default();
            if list.len() < limit_per_key {
                list.push(alias);
            }
        }
        Ok(out)
    }

    fn get_access(&self, id: &KeyId) -> Result<Option<KeyAccess>> {
        Ok(self.get_key(id)?.map(|m| m.access.clone()))
    }

    /// From the cache when fresh; otherwise the whole key is read (its
    /// MAC covers all its grants, so no subset of them can be verified).
    fn access_for(&self, id: &KeyId, principal: &Principal) -> Result<Option<KeyAccess>> {
        Ok(self.get_key(id)?.map(|m| {
            let mut a = KeyAccess::new(m.access.policy.clone());
            if let Some(g) = m.access.grants.get(principal) {
                a.grants.insert(principal.clone(), g.clone());
            }
            a
        }))
    }

    fn put_policy(&self, id: &KeyId, policy: Option<&Policy>) -> Result<()> {
        self.mutate(id, &mut |m| {
            m.access.policy = policy.cloned();
            Ok(())
        })
        .map(drop)
    }

    fn add_grant(&self, id: &KeyId, grant: &Grant, limit: usize, now: Timestamp) -> Result<()> {
        self.mutate(id, &mut |m| {
            if m.access.all_grants().any(|g| g.grant_id == grant.grant_id) {
                return Err(Error::invalid(format!(
                    "grant {} already exists on this key",
                    grant.grant_id
                )));
            }
            m.access.add_grant(grant.clone(), limit, now)
        })
        .map(drop)
    }

    fn remove_grant(&self, id: &KeyId, grant_id: &str) -> Result<()> {
        self.mutate(id, &mut |m| {
            if m.access.remove_grant(grant_id) {
                Ok(())
            } else {
                Err(Error::InvalidArgument("no such grant on this key".into()))
            }
        })
        .map(drop)
    }

    fn list_grants(&self, id: &KeyId) -> Result<Option<Vec<Grant>>> {
        if let Some(m) = self.core.shared.key(id) {
            return Ok(Some(m.access.all_grants().cloned().collect()));
        }
        Ok(self
            .get_key(id)?
            .map(|m| m.access.all_grants().cloned().collect()))
    }

    fn get_record(&self, kind: &str, name: &str) -> Result<Option<crate::store::StoredRecord>> {
        self.pg_get_record(kind, name)
    }

    fn put_record_if(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
        bytes: &[u8],
    ) -> Result<u64> {
        self.pg_put_record_if(kind, name, expected, bytes)
    }

    fn delete_record(&self, kind: &str, name: &str, expected: u64) -> Result<()> {
        self.pg_delete_record(kind, name, expected)
    }

    fn list_records(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<crate::store::StoredRecord>> {
        self.pg_list_records(kind, prefix, after, limit)
    }
}
