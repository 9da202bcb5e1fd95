//! The generic record facility on PostgreSQL (`strongroom_records`,
//! migration 3): the secrets store and identity policies keep their records
//! here, shared by every instance on the database.
//!
//! - Each row is `(kind, name, rev, body, mac)`. The revision is drawn from
//!   the store's one revision sequence (`strongroom_rev`), so it only grows,
//!   even for a record deleted and written again.
//! - The MAC (HMAC-SHA-256 under the metadata MAC key, docs/FORMAT.md) binds
//!   the kind, name, revision and body to this store: a row changed outside
//!   strongroom, moved to another name, or copied from another store is
//!   refused on every read ([`crate::Error::CorruptStore`]), never used.
//! - Every instance remembers the highest revision it read for each record
//!   and refuses an older one afterwards (a row rolled back outside
//!   strongroom), as for keys and aliases.
//! - Writes are compare-and-set on the revision inside one transaction that
//!   first takes the store guard (a write with the keys of a rotated root key
//!   is refused), so two instances never both win.
//!
//! Records are not cached: every read is one query, so a change made by one
//! instance is seen by the next read of any other.

use super::auth::{guard, next_rev, not_authentic};
use super::{PostgresStore, Retry, at_commit, pre};
use crate::error::{Error, Result};
use crate::store::{StoredRecord, check_record_name};
use std::time::Instant;

/// Upper bound on one record's body (the secrets store's records are far
/// smaller: 64 KiB values, a bounded number of versions).
const MAX_RECORD_BYTES: usize = 16 << 20;

fn conflict(kind: &str, name: &str) -> Error {
    Error::Conflict(format!("record {kind}/{name} changed since it was read"))
}

impl PostgresStore {
    /// Verifies a `(name, rev, body, mac)` row of `kind`, remembers its
    /// revision, and returns it.
    fn checked_record(
        &self,
        kind: &str,
        r: &postgres::Row,
        started: Instant,
    ) -> Result<StoredRecord> {
        let (name, rev, body): (&str, i64, &[u8]) = (r.get(0), r.get(1), r.get(2));
        let keys = self.core.keys();
        if !keys.record_ok(kind, name, rev, body, r.get::<_, Option<&[u8]>>(3)) {
            return Err(self.core.explain(not_authentic(
                "strongroom_records",
                &format!("{kind}/{name}"),
            )));
        }
        self.core
            .shared
            .witness(format!("r:{kind}/{name}"), rev, started)?;
        let revision = u64::try_from(rev).map_err(|_| Error::CorruptStore {
            file: format!("postgres:strongroom_records/{kind}/{name}"),
            reason: "negative revision".into(),
        })?;
        Ok(StoredRecord::new(name.to_owned(), revision, body.to_vec()))
    }

    pub(crate) fn pg_get_record(&self, kind: &str, name: &str) -> Result<Option<StoredRecord>> {
        check_record_name(kind, name)?;
        let started = Instant::now();
        let row = self.core.run(|c| {
            c.query_opt(
                "SELECT name, rev, body, mac FROM strongroom_records \
                 WHERE kind = $1 AND name = $2",
                &[&kind, &name],
            )
            .map_err(pre("get record"))
        })?;
        row.map(|r| self.checked_record(kind, &r, started))
            .transpose()
    }

    pub(crate) fn pg_put_record_if(
        &self,
        kind: &str,
        name: &str,
        expected: Option<u64>,
        bytes: &[u8],
    ) -> Result<u64> {
        check_record_name(kind, name)?;
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(Error::invalid(format!(
                "a record is at most {MAX_RECORD_BYTES} bytes"
            )));
        }
        let keys = self.core.keys();
        let rev = self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("put record"))?;
            guard(&mut tx, &keys)?;
            let started = Instant::now();
            let cur = tx
                .query_opt(
                    "SELECT name, rev, body, mac FROM strongroom_records \
                     WHERE kind = $1 AND name = $2 FOR UPDATE",
                    &[&kind, &name],
                )
                .map_err(pre("put record"))?;
            let cur_rev = match cur {
                Some(r) => Some(
                    self.checked_record(kind, &r, started)
                        .map_err(Retry::Stop)?
                        .revision,
                ),
                None => None,
            };
            if cur_rev != expected {
                return Err(Retry::Stop(conflict(kind, name)));
            }
            let rev = next_rev(&mut tx)?;
            let mac = keys.record_mac(kind, name, rev, bytes);
            // A concurrent first write of the same name makes this INSERT
            // wait, then fail on the primary key: a conflict, not a retry.
            let n = tx
                .execute(
                    "INSERT INTO strongroom_records (kind, name, rev, body, mac) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (kind, name) DO UPDATE SET rev = $3, body = $4, mac = $5 \
                     WHERE strongroom_records.rev = $6",
                    &[
                        &kind,
                        &name,
                        &rev,
                        &bytes,
                        &mac,
                        &expected.and_then(|e| i64::try_from(e).ok()).unwrap_or(-1),
                    ],
                )
                .map_err(pre("put record"))?;
            if n != 1 {
                return Err(Retry::Stop(conflict(kind, name)));
            }
            tx.commit().map_err(at_commit)?;
            Ok(rev)
        })?;
        // The writer has seen its own revision.
        self.core
            .shared
            .witness(format!("r:{kind}/{name}"), rev, Instant::now())?;
        u64::try_from(rev).map_err(|_| Error::invalid("revision out of range"))
    }

    pub(crate) fn pg_delete_record(&self, kind: &str, name: &str, expected: u64) -> Result<()> {
        check_record_name(kind, name)?;
        let keys = self.core.keys();
        self.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("delete record"))?;
            guard(&mut tx, &keys)?;
            let started = Instant::now();
            let cur = tx
                .query_opt(
                    "SELECT name, rev, body, mac FROM strongroom_records \
                     WHERE kind = $1 AND name = $2 FOR UPDATE",
                    &[&kind, &name],
                )
                .map_err(pre("delete record"))?;
            let Some(cur) = cur else {
                return Err(Retry::Stop(conflict(kind, name)));
            };
            let rec = self
                .checked_record(kind, &cur, started)
                .map_err(Retry::Stop)?;
            if rec.revision != expected {
                return Err(Retry::Stop(conflict(kind, name)));
            }
            tx.execute(
                "DELETE FROM strongroom_records WHERE kind = $1 AND name = $2",
                &[&kind, &name],
            )
            .map_err(pre("delete record"))?;
            tx.commit().map_err(at_commit)
        })
    }

    pub(crate) fn pg_list_records(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>> {
        if kind.is_empty() || kind.len() > 64 || kind.contains('\0') || prefix.contains('\0') {
            return Err(Error::invalid("record kind must be 1 to 64 bytes, no NUL"));
        }
        // Names with `prefix`: from `prefix` (or `after`) upwards, stopping
        // at the first name that no longer starts with it (byte order:
        // the column is COLLATE "C"). `starts_with` is checked here, not
        // with LIKE, so `%` and `_` in names need no escaping.
        let start = match after {
            Some(a) if a > prefix => a,
            _ => prefix,
        };
        let strict = after.is_some_and(|a| a >= prefix);
        let started = Instant::now();
        let mut out = Vec::new();
        let mut cursor = start.to_owned();
        let mut inclusive = !strict;
        while out.len() < limit {
            let page = (limit - out.len()).min(500);
            let rows = self.core.run(|c| {
                c.query(
                    "SELECT name, rev, body, mac FROM strongroom_records \
                     WHERE kind = $1 AND (name > $2 OR ($3 AND name = $2)) \
                     ORDER BY name LIMIT $4",
                    &[
                        &kind,
                        &cursor,
                        &inclusive,
                        &i64::try_from(page).unwrap_or(i64::MAX),
                    ],
                )
                .map_err(pre("list records"))
            })?;
            let n = rows.len();
            for r in &rows {
                let name: &str = r.get(0);
                if !name.starts_with(prefix) {
                    return Ok(out);
                }
                out.push(self.checked_record(kind, r, started)?);
            }
            if n < page {
                break;
            }
            if let Some(last) = out.last() {
                cursor.clone_from(&last.name);
            }
            inclusive = false;
        }
        Ok(out)
    }
}
