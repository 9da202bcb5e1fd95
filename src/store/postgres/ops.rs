//! [`MetadataStore`] on PostgreSQL: every change is one transaction that
//! ends with its `NOTIFY`; reads go through the cache (`cache.rs`).

use super::cache::{payload_alias, payload_key};
use super::rows::{
    KEY_SELECT, from_row, insert_grant, json, notify, read_key_locked, write_grant_diff,
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

    /// Writes an alias: new (`from = None`) or a compare-and-set from the
    /// key it must still point at.
    fn put_alias(&self, alias: &Alias, to: &KeyId, from: Option<&KeyId>) -> Result<()> {
        let r = self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("alias"))?;
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
                    let n = tx
                        .execute(
                            "INSERT INTO strongroom_aliases (alias, key_id) VALUES ($1, $2) \
                             ON CONFLICT DO NOTHING",
                            &[&alias.as_str(), &to.as_str()],
                        )
                        .map_err(pre("create alias"))?;
                    if n == 0 {
                        return Err(Retry::Stop(Error::AliasExists(alias.to_string())));
                    }
                }
                Some(from) => {
                    let cur = tx
                        .query_opt(
                            "SELECT key_id FROM strongroom_aliases WHERE alias = $1 FOR UPDATE",
                            &[&alias.as_str()],
                        )
                        .map_err(pre("update alias"))?;
                    match cur {
                        None => return Err(Retry::Stop(Error::AliasNotFound(alias.to_string()))),
                        Some(r) if r.get::<_, &str>(0) != from.as_str() => {
                            return Err(Retry::Stop(Error::alias_moved(alias)));
                        }
                        Some(_) => {}
                    }
                    tx.execute(
                        "UPDATE strongroom_aliases SET key_id = $2 WHERE alias = $1",
                        &[&alias.as_str(), &to.as_str()],
                    )
                    .map_err(pre("update alias"))?;
                }
            }
            notify(&mut tx, &payload_alias(alias))?;
            tx.commit().map_err(at_commit)
        });
        self.forget_alias(alias);
        r
    }

    /// One locked read-modify-write of a key's access part.
    fn change_access(
        &self,
        id: &KeyId,
        mut body: impl FnMut(&mut postgres::Transaction<'_>) -> std::result::Result<(), Retry>,
    ) -> Result<()> {
        let r = self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("access"))?;
            let n = tx
                .execute(
                    "UPDATE strongroom_keys SET rev = rev + 1 WHERE key_id = $1",
                    &[&id.as_str()],
                )
                .map_err(pre("access"))?;
            if n == 0 {
                return Err(Retry::Stop(Error::KeyNotFound(id.to_string())));
            }
            body(&mut tx)?;
            notify(&mut tx, &payload_key(id))?;
            tx.commit().map_err(at_commit)
        });
        self.forget_key(id);
        r
    }
}

impl MetadataStore for PostgresStore {
    fn insert_key(&self, meta: KeyMetadata, alias: Option<&Alias>) -> Result<()> {
        let record = json(&meta.record)?;
        let policy = meta.access.policy.as_ref().map(json).transpose()?;
        let id = meta.key_id.clone();
        let r = self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("insert key"))?;
            let n = tx
                .execute(
                    "INSERT INTO strongroom_keys (key_id, record, policy) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                    &[&id.as_str(), &record, &policy],
                )
                .map_err(pre("insert key"))?;
            if n == 0 {
                return Err(Retry::Stop(Error::invalid(format!(
                    "key {id} already exists"
                ))));
            }
            for g in meta.access.all_grants() {
                insert_grant(&mut tx, &id, g)?;
            }
            if let Some(a) = alias {
                let n = tx
                    .execute(
                        "INSERT INTO strongroom_aliases (alias, key_id) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                        &[&a.as_str(), &id.as_str()],
                    )
                    .map_err(pre("insert alias"))?;
                if n == 0 {
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
        let m = row.map(|r| from_row(&r)).transpose()?.map(Arc::new);
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
        let r = self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("update key"))?;
            let old = read_key_locked(&mut tx, id)?
                .ok_or_else(|| Retry::Stop(Error::KeyNotFound(id.to_string())))?;
            let mut new = old.clone();
            f(&mut new).map_err(Retry::from)?;
            if new.key_id != old.key_id {
                return Err(Retry::Stop(Error::invalid(
                    "an update cannot change a key's id",
                )));
            }
            if new.record != old.record || new.access.policy != old.access.policy {
                let record = json(&new.record).map_err(Retry::Stop)?;
                let policy = new
                    .access
                    .policy
                    .as_ref()
                    .map(json)
                    .transpose()
                    .map_err(Retry::Stop)?;
                tx.execute(
                    "UPDATE strongroom_keys SET record = $2, policy = $3, rev = rev + 1 \
                     WHERE key_id = $1",
                    &[&id.as_str(), &record, &policy],
                )
                .map_err(pre("update key"))?;
            }
            write_grant_diff(&mut tx, id, &old.access, &new.access)?;
            notify(&mut tx, &payload_key(id))?;
            tx.commit().map_err(at_commit)?;
            Ok(Arc::new(new))
        });
        self.forget_key(id);
        r
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
        let rows = self.core.run(|c| {
            c.query(
                &format!("{KEY_SELECT} WHERE k.key_id > $1 ORDER BY k.key_id LIMIT $2"),
                &[&after, &limit_i64(limit)],
            )
            .map_err(pre("list keys"))
        })?;
        rows.iter().map(|r| from_row(r).map(Arc::new)).collect()
    }

    fn resolve_alias(&self, alias: &Alias) -> Result<Option<KeyId>> {
        if let Some(k) = self.core.shared.alias(alias) {
            return Ok(Some(k));
        }
        let t = self.core.shared.ticket();
        let row = self.core.run(|c| {
            c.query_typed_opt(
                "SELECT key_id FROM strongroom_aliases WHERE alias = $1",
                &[(&alias.as_str(), Type::TEXT)],
            )
            .map_err(pre("resolve alias"))
        })?;
        let Some(row) = row else { return Ok(None) };
        let k = KeyId::parse(row.get::<_, &str>(0)).map_err(|_| Error::CorruptStore {
            file: format!("postgres:strongroom_aliases/{alias}"),
            reason: "not a key id".into(),
        })?;
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
            let cur = tx
                .query_opt(
                    "SELECT key_id FROM strongroom_aliases WHERE alias = $1 FOR UPDATE",
                    &[&alias.as_str()],
                )
                .map_err(pre("delete alias"))?;
            match cur {
                None => return Err(Retry::Stop(Error::AliasNotFound(alias.to_string()))),
                Some(r) if r.get::<_, &str>(0) != expected.as_str() => {
                    return Err(Retry::Stop(Error::alias_moved(alias)));
                }
                Some(_) => {}
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
        let rows = self.core.run(|c| {
            c.query(
                "SELECT alias, key_id FROM strongroom_aliases \
                 WHERE alias > $1 AND ($2::text IS NULL OR key_id = $2) \
                 ORDER BY alias LIMIT $3",
                &[&after, &key, &limit_i64(limit)],
            )
            .map_err(pre("list aliases"))
        })?;
        rows.iter()
            .map(|r| {
                let a: &str = r.get(0);
                let k: &str = r.get(1);
                let bad = || Error::CorruptStore {
                    file: format!("postgres:strongroom_aliases/{a}"),
                    reason: "not an alias or key id".into(),
                };
                Ok((
                    Alias::parse(a).map_err(|_| bad())?,
                    KeyId::parse(k).map_err(|_| bad())?,
                ))
            })
            .collect()
    }

    fn get_access(&self, id: &KeyId) -> Result<Option<KeyAccess>> {
        Ok(self.get_key(id)?.map(|m| m.access.clone()))
    }

    /// From the cache when fresh; otherwise the policy and only
    /// `principal`'s grant rows.
    fn access_for(&self, id: &KeyId, principal: &Principal) -> Result<Option<KeyAccess>> {
        if let Some(m) = self.core.shared.key(id) {
            let mut a = KeyAccess::new(m.access.policy.clone());
            if let Some(g) = m.access.grants.get(principal) {
                a.grants.insert(principal.clone(), g.clone());
            }
            return Ok(Some(a));
        }
        let who = principal.to_string();
        let row = self.core.run(|c| {
            c.query_opt(
                "SELECT k.key_id, k.record, k.policy, ARRAY(SELECT g.body FROM strongroom_grants g \
                 WHERE g.key_id = k.key_id AND g.grantee = $2 ORDER BY g.seq) \
                 FROM strongroom_keys k WHERE k.key_id = $1",
                &[&id.as_str(), &who],
            )
            .map_err(pre("access"))
        })?;
        row.map(|r| from_row(&r).map(|m| m.access)).transpose()
    }

    fn put_policy(&self, id: &KeyId, policy: Option<&Policy>) -> Result<()> {
        let text = policy.map(json).transpose()?;
        self.change_access(id, |tx| {
            tx.execute(
                "UPDATE strongroom_keys SET policy = $2 WHERE key_id = $1",
                &[&id.as_str(), &text],
            )
            .map_err(pre("put policy"))?;
            Ok(())
        })
    }

    fn add_grant(&self, id: &KeyId, grant: &Grant, limit: usize, now: Timestamp) -> Result<()> {
        let now = i64::try_from(now.0).unwrap_or(i64::MAX);
        self.change_access(id, |tx| {
            tx.execute(
                "DELETE FROM strongroom_grants WHERE key_id = $1 AND expires_at <= $2",
                &[&id.as_str(), &now],
            )
            .map_err(pre("add grant"))?;
            let n: i64 = tx
                .query_one(
                    "SELECT count(*) FROM strongroom_grants WHERE key_id = $1",
                    &[&id.as_str()],
                )
                .map_err(pre("add grant"))?
                .get(0);
            if usize::try_from(n).unwrap_or(usize::MAX) >= limit {
                return Err(Retry::Stop(Error::InvalidArgument(format!(
                    "a key may hold at most {limit} grants"
                ))));
            }
            insert_grant(tx, id, grant)
        })
    }

    fn remove_grant(&self, id: &KeyId, grant_id: &str) -> Result<()> {
        self.change_access(id, |tx| {
            let n = tx
                .execute(
                    "DELETE FROM strongroom_grants WHERE key_id = $1 AND grant_id = $2",
                    &[&id.as_str(), &grant_id],
                )
                .map_err(pre("remove grant"))?;
            if n == 0 {
                return Err(Retry::Stop(Error::InvalidArgument(
                    "no such grant on this key".into(),
                )));
            }
            Ok(())
        })
    }

    fn list_grants(&self, id: &KeyId) -> Result<Option<Vec<Grant>>> {
        if let Some(m) = self.core.shared.key(id) {
            return Ok(Some(m.access.all_grants().cloned().collect()));
        }
        Ok(self
            .get_key(id)?
            .map(|m| m.access.all_grants().cloned().collect()))
    }
}
