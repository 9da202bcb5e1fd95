//! Rows to metadata and back: the key record and the policy as JSON text,
//! one row per grant (its JSON body, grantee and expiry as columns), every
//! row with its MAC (`auth.rs`), verified before anything in it is used.

use super::auth::{GrantRow, Keys, next_rev, not_authentic};
use super::{Attempt, Retry, pre};
use crate::error::{Error, Result};
use crate::key::{KeyId, KeyRecord};
use crate::policy::{Grant, KeyAccess, Policy};
use crate::store::KeyMetadata;
use postgres::{GenericClient, Transaction};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Other(Arc::new(e)))
}

fn corrupt(what: &str, id: &str, e: impl std::fmt::Display) -> Error {
    Error::CorruptStore {
        file: format!("postgres:{what}/{id}"),
        reason: e.to_string(),
    }
}

/// A key with its grants, and each grant row in insertion order (the grant
/// columns as parallel arrays from one snapshot).
pub(crate) const KEY_SELECT: &str = "SELECT k.key_id, k.rev, k.record, k.policy, k.mac, \
     ARRAY(SELECT g.grant_id FROM strongroom_grants g WHERE g.key_id = k.key_id ORDER BY g.seq), \
     ARRAY(SELECT g.grantee FROM strongroom_grants g WHERE g.key_id = k.key_id ORDER BY g.seq), \
     ARRAY(SELECT g.expires_at FROM strongroom_grants g WHERE g.key_id = k.key_id ORDER BY g.seq), \
     ARRAY(SELECT g.body FROM strongroom_grants g WHERE g.key_id = k.key_id ORDER BY g.seq), \
     ARRAY(SELECT g.mac FROM strongroom_grants g WHERE g.key_id = k.key_id ORDER BY g.seq) \
     FROM strongroom_keys k";

/// One grant row as read.
pub(crate) struct RawGrant<'a> {
    pub(crate) grant_id: &'a str,
    grantee: &'a str,
    expires_at: Option<i64>,
    body: &'a str,
    mac: Option<&'a [u8]>,
}

impl<'a> RawGrant<'a> {
    pub(crate) fn as_row(&self, key_id: &'a str) -> GrantRow<'a> {
        GrantRow {
            key_id,
            grant_id: self.grant_id,
            grantee: self.grantee,
            expires_at: self.expires_at,
            body: self.body,
        }
    }
}

/// A row of [`KEY_SELECT`], not yet verified.
pub(crate) struct RawKey<'a> {
    pub(crate) key_id: &'a str,
    pub(crate) rev: i64,
    pub(crate) record: &'a str,
    pub(crate) policy: Option<&'a str>,
    mac: Option<&'a [u8]>,
    pub(crate) grants: Vec<RawGrant<'a>>,
}

impl<'a> RawKey<'a> {
    pub(crate) fn from_row(r: &'a postgres::Row) -> RawKey<'a> {
        let ids: Vec<&str> = r.get(5);
        let grantees: Vec<&str> = r.get(6);
        let expiries: Vec<Option<i64>> = r.get(7);
        let bodies: Vec<&str> = r.get(8);
        let macs: Vec<Option<&[u8]>> = r.get(9);
        let grants = ids
            .into_iter()
            .zip(grantees)
            .zip(expiries)
            .zip(bodies)
            .zip(macs)
            .map(
                |((((grant_id, grantee), expires_at), body), mac)| RawGrant {
                    grant_id,
                    grantee,
                    expires_at,
                    body,
                    mac,
                },
            )
            .collect();
        RawKey {
            key_id: r.get(0),
            rev: r.get(1),
            record: r.get(2),
            policy: r.get(3),
            mac: r.get(4),
            grants,
        }
    }

    /// Checks every grant row's MAC and the key row's MAC (which covers
    /// the set of grant MACs); returns the grant MACs by grant id.
    pub(crate) fn verify(&self, keys: &Keys) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut macs = BTreeMap::new();
        for g in &self.grants {
            if !keys.grant_ok(&g.as_row(self.key_id), g.mac) {
                return Err(not_authentic(
                    "strongroom_grants",
                    &format!("{}/{}", self.key_id, g.grant_id),
                ));
            }
            macs.insert(g.grant_id.to_string(), g.mac.unwrap_or_default().to_vec());
        }
        let refs: Vec<&[u8]> = self
            .grants
            .iter()
            .map(|g| g.mac.unwrap_or_default())
            .collect();
        if !keys.key_ok(
            self.key_id,
            self.rev,
            self.record,
            self.policy,
            &refs,
            self.mac,
        ) {
            return Err(not_authentic("strongroom_keys", self.key_id));
        }
        Ok(macs)
    }
}

/// A key read and verified: the metadata, its revision and its grants' MACs.
pub(crate) struct Verified {
    pub(crate) meta: KeyMetadata,
    pub(crate) rev: i64,
    pub(crate) grant_macs: BTreeMap<String, Vec<u8>>,
}

/// Verifies and parses a row of [`KEY_SELECT`]; checks that the record
/// names the row's key and each grant body its row.
pub(crate) fn from_row(keys: &Keys, r: &postgres::Row) -> Result<Verified> {
    let raw = RawKey::from_row(r);
    let grant_macs = raw.verify(keys)?;
    let id = raw.key_id;
    let record: KeyRecord =
        serde_json::from_str(raw.record).map_err(|e| corrupt("strongroom_keys", id, e))?;
    if record.key_id.as_str() != id {
        return Err(corrupt("strongroom_keys", id, "record names another key"));
    }
    let policy: Option<Policy> = match raw.policy {
        Some(p) => Some(serde_json::from_str(p).map_err(|e| corrupt("strongroom_keys", id, e))?),
        None => None,
    };
    let mut access = KeyAccess::new(policy);
    for g in &raw.grants {
        let grant: Grant =
            serde_json::from_str(g.body).map_err(|e| corrupt("strongroom_grants", id, e))?;
        if grant.grant_id != g.grant_id || grant.grantee.to_string() != g.grantee {
            return Err(corrupt("strongroom_grants", id, "body names another grant"));
        }
        access
            .grants
            .entry(grant.grantee.clone())
            .or_default()
            .push(grant);
    }
    Ok(Verified {
        meta: KeyMetadata::new(record, access),
        rev: raw.rev,
        grant_macs,
    })
}

/// Reads one key, verified, and locks its row (`FOR UPDATE`) until the
/// transaction ends.
pub(crate) fn read_key_locked(
    c: &mut impl GenericClient,
    keys: &Keys,
    id: &KeyId,
) -> Attempt<Option<Verified>> {
    // Lock first, read after, in two statements: under READ COMMITTED a
    // `SELECT ... FOR UPDATE` that waited for another writer re-reads the
    // locked row but not its subqueries (the grants would be those of the
    // snapshot before that writer). The second statement's snapshot comes
    // after the lock, so the key and its grants are the latest, together.
    let locked = c
        .query_opt(
            "SELECT 1 FROM strongroom_keys WHERE key_id = $1 FOR UPDATE",
            &[&id.as_str()],
        )
        .map_err(pre("read key"))?;
    if locked.is_none() {
        return Ok(None);
    }
    let row = c
        .query_opt(
            &format!("{KEY_SELECT} WHERE k.key_id = $1"),
            &[&id.as_str()],
        )
        .map_err(pre("read key"))?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(from_row(keys, &r).map_err(Retry::Stop)?)),
    }
}

fn expiry(g: &Grant) -> Result<Option<i64>> {
    g.expires_at
        .map(|t| i64::try_from(t.0).map_err(|_| Error::invalid("grant expiry out of range")))
        .transpose()
}

/// Inserts one grant row with its MAC; returns the MAC.
fn insert_grant(tx: &mut Transaction<'_>, keys: &Keys, id: &KeyId, g: &Grant) -> Attempt<Vec<u8>> {
    let exp = expiry(g).map_err(Retry::Stop)?;
    let body = json(g).map_err(Retry::Stop)?;
    let grantee = g.grantee.to_string();
    let mac = keys.grant_mac(&GrantRow {
        key_id: id.as_str(),
        grant_id: &g.grant_id,
        grantee: &grantee,
        expires_at: exp,
        body: &body,
    });
    let n = tx
        .execute(
            "INSERT INTO strongroom_grants (key_id, grant_id, grantee, expires_at, body, mac) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[&id.as_str(), &g.grant_id, &grantee, &exp, &body, &mac],
        )
        .map_err(pre("insert grant"))?;
    if n == 0 {
        return Err(Retry::Stop(Error::invalid(format!(
            "grant {} already exists on this key",
            g.grant_id
        ))));
    }
    Ok(mac)
}

/// Writes `new` (a key read and verified as `old`, or a new key): the
/// grants that differ, row by row (the others untouched), then the key row
/// with a fresh revision and its MAC over the record, the policy and every
/// grant's MAC. Returns the new revision.
pub(crate) fn write_key(
    tx: &mut Transaction<'_>,
    keys: &Keys,
    new: &KeyMetadata,
    old: Option<&Verified>,
) -> Attempt<i64> {
    let id = &new.key_id;
    let record = json(&new.record).map_err(Retry::Stop)?;
    let policy = new
        .access
        .policy
        .as_ref()
        .map(json)
        .transpose()
        .map_err(Retry::Stop)?;
    if old.is_none() {
        // The row first (its grants refer to it), without a MAC; the
        // revision and MAC are set below, in this transaction, so no reader
        // ever sees it like this. The revision is drawn only once the row is
        // ours: a revision drawn before an insert that had to wait for a
        // concurrent delete could be older than one a reader already saw.
        let n = tx
            .execute(
                "INSERT INTO strongroom_keys (key_id, record, policy, rev, mac) \
                 VALUES ($1, $2, $3, 0, NULL) ON CONFLICT DO NOTHING",
                &[&id.as_str(), &record, &policy],
            )
            .map_err(pre("insert key"))?;
        if n == 0 {
            return Err(Retry::Stop(Error::invalid(format!(
                "key {id} already exists"
            ))));
        }
    }
    let empty = KeyAccess::new(None);
    let old_access = old.map_or(&empty, |o| &o.meta.access);
    let before: std::collections::HashMap<&str, &Grant> = old_access
        .all_grants()
        .map(|g| (g.grant_id.as_str(), g))
        .collect();
    let after: std::collections::HashMap<&str, &Grant> = new
        .access
        .all_grants()
        .map(|g| (g.grant_id.as_str(), g))
        .collect();
    let mut macs: BTreeMap<String, Vec<u8>> = old.map(|o| o.grant_macs.clone()).unwrap_or_default();
    for (gid, g) in &before {
        if after.get(gid) != Some(g) {
            tx.execute(
                "DELETE FROM strongroom_grants WHERE key_id = $1 AND grant_id = $2",
                &[&id.as_str(), gid],
            )
            .map_err(pre("delete grant"))?;
            macs.remove(*gid);
        }
    }
    for g in new.access.all_grants() {
        if before.get(g.grant_id.as_str()) != Some(&g) {
            let mac = insert_grant(tx, keys, id, g)?;
            macs.insert(g.grant_id.clone(), mac);
        }
    }
    let rev = next_rev(tx)?;
    let refs: Vec<&[u8]> = macs.values().map(Vec::as_slice).collect();
    let mac = keys.key_mac(id.as_str(), rev, &record, policy.as_deref(), &refs);
    tx.execute(
        "UPDATE strongroom_keys SET record = $2, policy = $3, rev = $4, mac = $5 \
         WHERE key_id = $1",
        &[&id.as_str(), &record, &policy, &rev, &mac],
    )
    .map_err(pre("update key"))?;
    Ok(rev)
}

/// Inserts or repoints an alias row with a fresh revision and its MAC.
pub(crate) fn write_alias(
    tx: &mut Transaction<'_>,
    keys: &Keys,
    alias: &str,
    key_id: &str,
    insert: bool,
) -> Attempt<bool> {
    if insert {
        // As for keys: the row first, its revision drawn once it is ours.
        let n = tx
            .execute(
                "INSERT INTO strongroom_aliases (alias, key_id, rev, mac) \
                 VALUES ($1, $2, 0, NULL) ON CONFLICT DO NOTHING",
                &[&alias, &key_id],
            )
            .map_err(pre("write alias"))?;
        if n == 0 {
            return Ok(false);
        }
    }
    let rev = next_rev(tx)?;
    let mac = keys.alias_mac(alias, key_id, rev);
    let n = tx
        .execute(
            "UPDATE strongroom_aliases SET key_id = $2, rev = $3, mac = $4 WHERE alias = $1",
            &[&alias, &key_id, &rev, &mac],
        )
        .map_err(pre("write alias"))?;
    Ok(n > 0)
}

/// Sends a change notification inside the current transaction.
pub(crate) fn notify(c: &mut impl GenericClient, payload: &str) -> Attempt<()> {
    c.execute(
        "SELECT pg_notify($1, $2)",
        &[&super::cache::CHANNEL, &payload],
    )
    .map_err(pre("notify"))?;
    Ok(())
}
