//! Rows to metadata and back: the key record and the policy as JSON text,
//! one row per grant (its JSON body, grantee and expiry as columns).

use super::{Attempt, Retry, pre};
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::key::{KeyId, KeyRecord};
use crate::policy::{Grant, KeyAccess, Policy};
use crate::store::KeyMetadata;
use postgres::GenericClient;
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

/// Builds a key from its row and its grants' bodies; checks that the
/// record names the row's key.
pub(crate) fn assemble(
    id: &str,
    record: &str,
    policy: Option<&str>,
    grants: &[String],
) -> Result<KeyMetadata> {
    let record: KeyRecord =
        serde_json::from_str(record).map_err(|e| corrupt("strongroom_keys", id, e))?;
    if record.key_id.as_str() != id {
        return Err(corrupt("strongroom_keys", id, "record names another key"));
    }
    let policy: Option<Policy> = match policy {
        Some(p) => Some(serde_json::from_str(p).map_err(|e| corrupt("strongroom_keys", id, e))?),
        None => None,
    };
    let mut access = KeyAccess::new(policy);
    for body in grants {
        let g: Grant =
            serde_json::from_str(body).map_err(|e| corrupt("strongroom_grants", id, e))?;
        access.grants.entry(g.grantee.clone()).or_default().push(g);
    }
    Ok(KeyMetadata::new(record, access))
}

/// The grants' bodies of a key in insertion order (a subquery, so the key
/// and its grants come from one snapshot).
pub(crate) const KEY_SELECT: &str = "SELECT k.key_id, k.record, k.policy, \
     ARRAY(SELECT g.body FROM strongroom_grants g WHERE g.key_id = k.key_id ORDER BY g.seq) \
     FROM strongroom_keys k";

/// Reads one key and locks its row (`FOR UPDATE`) until the transaction ends.
pub(crate) fn read_key_locked(
    c: &mut impl GenericClient,
    id: &KeyId,
) -> Attempt<Option<KeyMetadata>> {
    let row = c
        .query_opt(
            &format!("{KEY_SELECT} WHERE k.key_id = $1 FOR UPDATE OF k"),
            &[&id.as_str()],
        )
        .map_err(pre("read key"))?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(from_row(&r).map_err(Retry::Stop)?)),
    }
}

/// A key from a row of [`KEY_SELECT`].
pub(crate) fn from_row(r: &postgres::Row) -> Result<KeyMetadata> {
    let id: &str = r.get(0);
    let grants: Vec<String> = r.get(3);
    assemble(id, r.get(1), r.get::<_, Option<&str>>(2), &grants)
}

fn expiry(t: Option<Timestamp>) -> Result<Option<i64>> {
    t.map(|t| i64::try_from(t.0).map_err(|_| Error::invalid("grant expiry out of range")))
        .transpose()
}

/// Inserts one grant row.
pub(crate) fn insert_grant(c: &mut impl GenericClient, id: &KeyId, g: &Grant) -> Attempt<()> {
    let exp = expiry(g.expires_at).map_err(Retry::Stop)?;
    let body = json(g).map_err(Retry::Stop)?;
    let n = c
        .execute(
            "INSERT INTO strongroom_grants (key_id, grant_id, grantee, expires_at, body) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &id.as_str(),
                &g.grant_id,
                &g.grantee.to_string(),
                &exp,
                &body,
            ],
        )
        .map_err(pre("insert grant"))?;
    if n == 0 {
        return Err(Retry::Stop(Error::invalid(format!(
            "grant {} already exists on this key",
            g.grant_id
        ))));
    }
    Ok(())
}

/// Writes the grants of `new` that differ from `old` (added, changed,
/// removed), leaving the others untouched.
pub(crate) fn write_grant_diff(
    c: &mut impl GenericClient,
    id: &KeyId,
    old: &KeyAccess,
    new: &KeyAccess,
) -> Attempt<()> {
    let before: std::collections::HashMap<&str, &Grant> =
        old.all_grants().map(|g| (g.grant_id.as_str(), g)).collect();
    let after: std::collections::HashMap<&str, &Grant> =
        new.all_grants().map(|g| (g.grant_id.as_str(), g)).collect();
    for (gid, g) in &before {
        if after.get(gid) != Some(g) {
            c.execute(
                "DELETE FROM strongroom_grants WHERE key_id = $1 AND grant_id = $2",
                &[&id.as_str(), gid],
            )
            .map_err(pre("delete grant"))?;
        }
    }
    for g in new.all_grants() {
        if before.get(g.grant_id.as_str()) != Some(&g) {
            insert_grant(c, id, g)?;
        }
    }
    Ok(())
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
