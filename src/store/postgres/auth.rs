//! The store identity, the root-key check, and the authentication of
//! metadata rows (docs/FORMAT.md, "PostgreSQL metadata MACs").
//!
//! Every key, grant and alias row carries an HMAC-SHA-256 under a key
//! derived from the root key (HKDF, info `metadata mac`), bound to its
//! table, the store id and the row's identity; key and alias rows also to
//! their revision (`rev`, drawn from one sequence, so it never repeats or
//! goes back, even for a key deleted and created again), and a key row to
//! the MACs of all its grant rows (so a revoked grant cannot be put back
//! and a grant cannot move to another key). Every read verifies; a row that
//! does not verify is never used ([`crate::Error::CorruptStore`]).
//!
//! What this cannot prevent, and what bounds it (see the README): someone
//! who can write the database may put back an *older, complete* state of a
//! key (its row and all its grant rows as they were together) or of an
//! alias, or a deleted key's rows, the way restoring a backup would. An
//! instance refuses a row older than one it has already seen (it remembers
//! the highest revision it read for each key and alias), so such a
//! rollback is caught by every running instance that saw the newer state,
//! but not by one that starts after it.

use super::conn::pg_err;
use super::material::{open_row, seal_row};
use super::{Attempt, Retry, pre};
use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::key::SymmetricAlgorithm;
use crate::random::{RandomSource, random_array};
use crate::store::keystore::keys::{Kdf, derive_root, new_kdf};
use crate::store::{KeystoreOptions, RootKey};
use hmac::{Hmac, KeyInit, Mac};
use postgres::Transaction;
use std::fmt;
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"SRPG";
const MAC_VERSION: u8 = 1;
const HKDF_SALT: &[u8] = b"strongroom postgres v1";
/// The check record's plaintext of a store whose metadata rows are not
/// authenticated (schema 1).
const CHECK_V1: &[u8] = b"strongroom postgres check";
/// The check record's plaintext once every metadata row carries a MAC.
const CHECK_V2: &[u8] = b"strongroom postgres check v2: metadata rows authenticated";

type HmacSha256 = Hmac<sha2::Sha256>;

/// The keys of one root key: the metadata MAC key, the material cipher,
/// the store id, and the check record as stored (compared byte for byte
/// under a share lock by every write, so a write made with the keys of a
/// root key that was rotated meanwhile is refused).
pub(crate) struct Keys {
    pub(crate) store_id: [u8; 16],
    mac_key: Zeroizing<[u8; 32]>,
    pub(crate) material: Cipher,
    pub(crate) check: Vec<u8>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

fn hkdf(root: &[u8; 32], info: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(HKDF_SALT), root);
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand(info, out.as_mut_slice())
        .map_err(|_| Error::invalid("HKDF output length out of range"))?;
    Ok(out)
}

fn check_cipher(root: &[u8; 32]) -> Result<Cipher> {
    Ok(Cipher::new(
        SymmetricAlgorithm::Aes256Gcm,
        &*hkdf(root, b"check")?,
    ))
}

/// Associated data of the check record.
fn check_aad(store_id: &[u8; 16]) -> Vec<u8> {
    let mut a = MAGIC.to_vec();
    a.push(1);
    a.extend_from_slice(b"strongroom_store");
    a.push(0);
    a.extend_from_slice(store_id);
    a
}

impl Keys {
    fn derive(root: &[u8; 32], store_id: [u8; 16], check: Vec<u8>) -> Result<Keys> {
        Ok(Keys {
            store_id,
            mac_key: hkdf(root, b"metadata mac")?,
            material: Cipher::new(SymmetricAlgorithm::Aes256Gcm, &*hkdf(root, b"material")?),
            check,
        })
    }

    /// A MAC over `fields` of a row of `table` (each field length-prefixed).
    fn mac(&self, table: &str, fields: &[&[u8]]) -> Vec<u8> {
        self.hmac(table, fields).finalize().into_bytes().to_vec()
    }

    fn hmac(&self, table: &str, fields: &[&[u8]]) -> HmacSha256 {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(self.mac_key.as_slice())
            .expect("HMAC takes a key of any length");
        m.update(MAGIC);
        m.update(&[MAC_VERSION]);
        m.update(table.as_bytes());
        m.update(&[0]);
        m.update(&self.store_id);
        for f in fields {
            m.update(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
            m.update(f);
        }
        m
    }

    fn verify(&self, table: &str, fields: &[&[u8]], tag: Option<&[u8]>) -> bool {
        // Constant-time comparison (`verify_slice`).
        tag.is_some_and(|t| self.hmac(table, fields).verify_slice(t).is_ok())
    }

    /// The MAC of a grant row.
    pub(crate) fn grant_mac(&self, g: &GrantRow<'_>) -> Vec<u8> {
        let exp = opt_i64(g.expires_at);
        self.mac(
            "strongroom_grants",
            &[
                g.key_id.as_bytes(),
                g.grant_id.as_bytes(),
                g.grantee.as_bytes(),
                &exp,
                g.body.as_bytes(),
            ],
        )
    }

    /// True if `tag` is the grant row's MAC.
    pub(crate) fn grant_ok(&self, g: &GrantRow<'_>, tag: Option<&[u8]>) -> bool {
        let exp = opt_i64(g.expires_at);
        self.verify(
            "strongroom_grants",
            &[
                g.key_id.as_bytes(),
                g.grant_id.as_bytes(),
                g.grantee.as_bytes(),
                &exp,
                g.body.as_bytes(),
            ],
            tag,
        )
    }

    fn key_fields(
        key_id: &str,
        rev: i64,
        record: &str,
        policy: Option<&str>,
        grant_macs: &[&[u8]],
    ) -> Vec<Vec<u8>> {
        let mut sorted: Vec<&[u8]> = grant_macs.to_vec();
        sorted.sort_unstable();
        let mut f = vec![
            key_id.as_bytes().to_vec(),
            rev.to_be_bytes().to_vec(),
            record.as_bytes().to_vec(),
            opt_text(policy),
            u32::try_from(sorted.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes()
                .to_vec(),
        ];
        f.extend(sorted.into_iter().map(<[u8]>::to_vec));
        f
    }

    /// The MAC of a key row: its id, revision, record, policy and the MACs
    /// of all its grant rows (as a set).
    pub(crate) fn key_mac(
        &self,
        key_id: &str,
        rev: i64,
        record: &str,
        policy: Option<&str>,
        grant_macs: &[&[u8]],
    ) -> Vec<u8> {
        let f = Self::key_fields(key_id, rev, record, policy, grant_macs);
        let refs: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
        self.mac("strongroom_keys", &refs)
    }

    /// True if `tag` is the key row's MAC.
    pub(crate) fn key_ok(
        &self,
        key_id: &str,
        rev: i64,
        record: &str,
        policy: Option<&str>,
        grant_macs: &[&[u8]],
        tag: Option<&[u8]>,
    ) -> bool {
        let f = Self::key_fields(key_id, rev, record, policy, grant_macs);
        let refs: Vec<&[u8]> = f.iter().map(Vec::as_slice).collect();
        self.verify("strongroom_keys", &refs, tag)
    }

    /// The MAC of an alias row.
    pub(crate) fn alias_mac(&self, alias: &str, key_id: &str, rev: i64) -> Vec<u8> {
        self.mac(
            "strongroom_aliases",
            &[alias.as_bytes(), key_id.as_bytes(), &rev.to_be_bytes()],
        )
    }

    /// The MAC of a generic record row: its kind, name, revision and body.
    pub(crate) fn record_mac(&self, kind: &str, name: &str, rev: i64, body: &[u8]) -> Vec<u8> {
        self.mac(
            "strongroom_records",
            &[kind.as_bytes(), name.as_bytes(), &rev.to_be_bytes(), body],
        )
    }

    /// True if `tag` is the record row's MAC.
    pub(crate) fn record_ok(
        &self,
        kind: &str,
        name: &str,
        rev: i64,
        body: &[u8],
        tag: Option<&[u8]>,
    ) -> bool {
        self.verify(
            "strongroom_records",
            &[kind.as_bytes(), name.as_bytes(), &rev.to_be_bytes(), body],
            tag,
        )
    }

    /// True if `tag` is the alias row's MAC.
    pub(crate) fn alias_ok(&self, alias: &str, key_id: &str, rev: i64, tag: Option<&[u8]>) -> bool {
        self.verify(
            "strongroom_aliases",
            &[alias.as_bytes(), key_id.as_bytes(), &rev.to_be_bytes()],
            tag,
        )
    }
}

fn opt_i64(v: Option<i64>) -> Vec<u8> {
    match v {
        None => vec![0],
        Some(x) => {
            let mut o = vec![1];
            o.extend_from_slice(&x.to_be_bytes());
            o
        }
    }
}

fn opt_text(v: Option<&str>) -> Vec<u8> {
    match v {
        None => vec![0],
        Some(x) => {
            let mut o = vec![1];
            o.extend_from_slice(x.as_bytes());
            o
        }
    }
}

/// The authenticated columns of a grant row.
pub(crate) struct GrantRow<'a> {
    pub(crate) key_id: &'a str,
    pub(crate) grant_id: &'a str,
    pub(crate) grantee: &'a str,
    pub(crate) expires_at: Option<i64>,
    pub(crate) body: &'a str,
}

/// The error of a row that does not verify.
pub(crate) fn not_authentic(table: &str, id: &str) -> Error {
    Error::CorruptStore {
        file: format!("postgres:{table}/{id}"),
        reason: "row not authentic (its MAC does not verify): changed outside strongroom, \
                 moved from another row, or written under another root key; it was not used"
            .into(),
    }
}

fn bad_store(reason: &str) -> Retry {
    Retry::Stop(Error::CorruptStore {
        file: "postgres:strongroom_store".into(),
        reason: reason.into(),
    })
}

/// Refuses a write made with keys of a root key that was rotated since
/// (share-locks the store row: a rotation waits for the write, or the
/// write for the rotation).
pub(crate) fn guard(tx: &mut Transaction<'_>, keys: &Keys) -> Attempt<()> {
    let row = tx
        .query_opt(
            "SELECT check_record FROM strongroom_store WHERE id = 1 FOR SHARE",
            &[],
        )
        .map_err(pre("store identity"))?;
    match row {
        Some(r) if r.get::<_, &[u8]>(0) == keys.check.as_slice() => Ok(()),
        Some(_) => Err(Retry::Stop(Error::WrongRootKey)),
        None => Err(bad_store("the store identity row is missing")),
    }
}

/// Reads or creates the store identity, checks `root` against it, and
/// authenticates the metadata rows of an older schema (`schema_before`:
/// the schema version found before this connection migrated it).
///
/// Rows without a MAC are adopted (MAC'd as they are) only when this
/// transaction itself upgraded the schema from 1 and the check record is
/// of the unauthenticated kind (or absent): afterwards the check record
/// says the store is authenticated, and a row without a MAC is refused.
pub(crate) fn identify(
    tx: &mut Transaction<'_>,
    root: &RootKey,
    rng: &dyn RandomSource,
    schema_before: i32,
) -> Result<Keys> {
    let e = |err: postgres::Error| pg_err("store identity", &err);
    let row = tx
        .query_opt(
            "SELECT store_id, kdf, check_record FROM strongroom_store WHERE id = 1 FOR UPDATE",
            &[],
        )
        .map_err(e)?;
    let corrupt = |r: &str| Error::CorruptStore {
        file: "postgres:strongroom_store".into(),
        reason: r.into(),
    };
    let upgrading = schema_before < 2;
    if let Some(row) = row {
        let store_id: [u8; 16] = row
            .get::<_, &[u8]>(0)
            .try_into()
            .map_err(|_| corrupt("bad store id"))?;
        let kdf: Kdf = serde_json::from_str(row.get(1)).map_err(|_| corrupt("bad KDF"))?;
        let root_bytes = derive_root(root, &kdf, false)?;
        let check: Vec<u8> = row.get(2);
        let text = open_row(
            &check_cipher(&root_bytes)?,
            &check_aad(&store_id),
            "strongroom_store",
            &check,
        )
        .map_err(|_| Error::WrongRootKey)?;
        match (text.as_slice() == CHECK_V2, text.as_slice() == CHECK_V1) {
            (true, _) if upgrading => Err(corrupt(
                "the schema says metadata rows are not authenticated but the store says they \
                 are: the schema marker was changed outside strongroom",
            )),
            (true, _) => Keys::derive(&root_bytes, store_id, check),
            (false, true) if upgrading => {
                let keys = write_check(tx, &root_bytes, store_id, None, rng)?;
                adopt(tx, &keys)?;
                Ok(keys)
            }
            (false, true) => Err(corrupt(
                "the store identity is older than its schema: an old check record was put \
                 back outside strongroom",
            )),
            _ => Err(corrupt("unknown check record")),
        }
    } else {
        if !upgrading {
            let n: i64 = tx
                .query_one("SELECT count(*) FROM strongroom_keys", &[])
                .map_err(e)?
                .get(0);
            if n > 0 {
                return Err(corrupt(
                    "keys exist but the store identity row is missing: it was deleted outside \
                     strongroom",
                ));
            }
        }
        let store_id: [u8; 16] = random_array(rng)?;
        let kdf = new_kdf(root, &KeystoreOptions::default(), rng)?;
        let root_bytes = derive_root(root, &kdf, false)?;
        let keys = write_check(tx, &root_bytes, store_id, Some(&kdf), rng)?;
        if upgrading {
            adopt(tx, &keys)?;
        }
        Ok(keys)
    }
}

/// Writes the check record (v2) and, with `kdf`, the whole identity row.
fn write_check(
    tx: &mut Transaction<'_>,
    root_bytes: &[u8; 32],
    store_id: [u8; 16],
    kdf: Option<&Kdf>,
    rng: &dyn RandomSource,
) -> Result<Keys> {
    let e = |err: postgres::Error| pg_err("store identity", &err);
    let check = seal_row(
        &check_cipher(root_bytes)?,
        rng,
        &check_aad(&store_id),
        CHECK_V2,
    )?;
    match kdf {
        Some(kdf) => {
            let kdf_text = super::rows::json(kdf)?;
            tx.execute(
                "INSERT INTO strongroom_store (id, store_id, kdf, check_record) \
                 VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET store_id = $1, kdf = $2, check_record = $3",
                &[&store_id.as_slice(), &kdf_text, &check],
            )
            .map_err(e)?;
        }
        None => {
            tx.execute(
                "UPDATE strongroom_store SET check_record = $1 WHERE id = 1",
                &[&check],
            )
            .map_err(e)?;
        }
    }
    Keys::derive(root_bytes, store_id, check)
}

/// MACs every metadata row as it is (the upgrade from schema 1).
fn adopt(tx: &mut Transaction<'_>, keys: &Keys) -> Result<()> {
    let e = |err: postgres::Error| pg_err("authenticate rows", &err);
    let rows = tx
        .query(
            "SELECT key_id, record, policy FROM strongroom_keys ORDER BY key_id FOR UPDATE",
            &[],
        )
        .map_err(e)?;
    for r in &rows {
        let id: &str = r.get(0);
        let grants = tx
            .query(
                "SELECT grant_id, grantee, expires_at, body FROM strongroom_grants \
                 WHERE key_id = $1",
                &[&id],
            )
            .map_err(e)?;
        let mut macs = Vec::with_capacity(grants.len());
        for g in &grants {
            let row = GrantRow {
                key_id: id,
                grant_id: g.get(0),
                grantee: g.get(1),
                expires_at: g.get(2),
                body: g.get(3),
            };
            let mac = keys.grant_mac(&row);
            tx.execute(
                "UPDATE strongroom_grants SET mac = $3 WHERE key_id = $1 AND grant_id = $2",
                &[&id, &row.grant_id, &mac],
            )
            .map_err(e)?;
            macs.push(mac);
        }
        let rev = next_rev(tx).map_err(|r| match r {
            Retry::Again(x) | Retry::Stop(x) => x,
        })?;
        let refs: Vec<&[u8]> = macs.iter().map(Vec::as_slice).collect();
        let mac = keys.key_mac(id, rev, r.get(1), r.get(2), &refs);
        tx.execute(
            "UPDATE strongroom_keys SET rev = $2, mac = $3 WHERE key_id = $1",
            &[&id, &rev, &mac],
        )
        .map_err(e)?;
    }
    let aliases = tx
        .query(
            "SELECT alias, key_id FROM strongroom_aliases FOR UPDATE",
            &[],
        )
        .map_err(e)?;
    for a in &aliases {
        let rev = next_rev(tx).map_err(|r| match r {
            Retry::Again(x) | Retry::Stop(x) => x,
        })?;
        let mac = keys.alias_mac(a.get(0), a.get(1), rev);
        tx.execute(
            "UPDATE strongroom_aliases SET rev = $2, mac = $3 WHERE alias = $1",
            &[&a.get::<_, &str>(0), &rev, &mac],
        )
        .map_err(e)?;
    }
    Ok(())
}

/// The next revision (one sequence for all rows: never repeats).
pub(crate) fn next_rev(tx: &mut Transaction<'_>) -> Attempt<i64> {
    Ok(tx
        .query_one("SELECT nextval('strongroom_rev')", &[])
        .map_err(pre("revision"))?
        .get(0))
}

/// Re-MACs every metadata row and re-seals every material row under
/// `new`, after verifying each under `old`; replaces the KDF and the check
/// record. One transaction: all or nothing.
pub(crate) fn rotate(
    tx: &mut Transaction<'_>,
    old: &Keys,
    new_root: &RootKey,
    rng: &dyn RandomSource,
) -> Result<Keys> {
    let e = |err: postgres::Error| pg_err("rotate root key", &err);
    let unwrap = |r: Retry| match r {
        Retry::Again(x) | Retry::Stop(x) => x,
    };
    // The store row first, exclusively: every write share-locks it.
    let row = tx
        .query_opt(
            "SELECT check_record FROM strongroom_store WHERE id = 1 FOR UPDATE",
            &[],
        )
        .map_err(e)?
        .ok_or_else(|| unwrap(bad_store("the store identity row is missing")))?;
    if row.get::<_, &[u8]>(0) != old.check.as_slice() {
        return Err(Error::WrongRootKey);
    }
    let kdf = new_kdf(new_root, &KeystoreOptions::default(), rng)?;
    let root_bytes = derive_root(new_root, &kdf, false)?;
    let new = write_check(tx, &root_bytes, old.store_id, Some(&kdf), rng)?;

    // Keys and their grants: verified under the old key, MAC'd under the new.
    let rows = tx
        .query(
            &format!(
                "{} ORDER BY k.key_id FOR UPDATE OF k",
                super::rows::KEY_SELECT
            ),
            &[],
        )
        .map_err(e)?;
    for r in &rows {
        let raw = super::rows::RawKey::from_row(r);
        raw.verify(old)?;
        let mut macs = Vec::with_capacity(raw.grants.len());
        for g in &raw.grants {
            let mac = new.grant_mac(&g.as_row(raw.key_id));
            tx.execute(
                "UPDATE strongroom_grants SET mac = $3 WHERE key_id = $1 AND grant_id = $2",
                &[&raw.key_id, &g.grant_id, &mac],
            )
            .map_err(e)?;
            macs.push(mac);
        }
        let refs: Vec<&[u8]> = macs.iter().map(Vec::as_slice).collect();
        let mac = new.key_mac(raw.key_id, raw.rev, raw.record, raw.policy, &refs);
        tx.execute(
            "UPDATE strongroom_keys SET mac = $2 WHERE key_id = $1",
            &[&raw.key_id, &mac],
        )
        .map_err(e)?;
    }
    let aliases = tx
        .query(
            "SELECT alias, key_id, rev, mac FROM strongroom_aliases FOR UPDATE",
            &[],
        )
        .map_err(e)?;
    for a in &aliases {
        let (alias, key, rev): (&str, &str, i64) = (a.get(0), a.get(1), a.get(2));
        if !old.alias_ok(alias, key, rev, a.get::<_, Option<&[u8]>>(3)) {
            return Err(not_authentic("strongroom_aliases", alias));
        }
        let mac = new.alias_mac(alias, key, rev);
        tx.execute(
            "UPDATE strongroom_aliases SET mac = $2 WHERE alias = $1",
            &[&alias, &mac],
        )
        .map_err(e)?;
    }
    let records = tx
        .query(
            "SELECT kind, name, rev, body, mac FROM strongroom_records FOR UPDATE",
            &[],
        )
        .map_err(e)?;
    for r in &records {
        let (kind, name, rev, body): (&str, &str, i64, &[u8]) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        if !old.record_ok(kind, name, rev, body, r.get::<_, Option<&[u8]>>(4)) {
            return Err(not_authentic(
                "strongroom_records",
                &format!("{kind}/{name}"),
            ));
        }
        let mac = new.record_mac(kind, name, rev, body);
        tx.execute(
            "UPDATE strongroom_records SET mac = $3 WHERE kind = $1 AND name = $2",
            &[&kind, &name, &mac],
        )
        .map_err(e)?;
    }
    // Material: opened under the old key, sealed under the new (same
    // generation and identity: the associated data does not change).
    let material = tx
        .query(
            "SELECT key_id, version, gen, record FROM strongroom_material FOR UPDATE",
            &[],
        )
        .map_err(e)?;
    for m in &material {
        let (key, version, gen_): (&str, i64, i64) = (m.get(0), m.get(1), m.get(2));
        let name = format!("strongroom_material/{key}/{version}");
        let bad = || Error::CorruptStore {
            file: format!("postgres:{name}"),
            reason: "bad identity or generation".into(),
        };
        let id = crate::backend::MaterialId::new(
            crate::key::KeyId::parse(key).map_err(|_| bad())?,
            u32::try_from(version).map_err(|_| bad())?,
        );
        let ad = super::material::aad(&old.store_id, u64::try_from(gen_).map_err(|_| bad())?, &id);
        let pt = open_row(&old.material, &ad, &name, m.get(3))?;
        let sealed = seal_row(&new.material, rng, &ad, &pt)?;
        tx.execute(
            "UPDATE strongroom_material SET record = $3 WHERE key_id = $1 AND version = $2",
            &[&key, &version, &sealed],
        )
        .map_err(e)?;
    }
    tx.execute("SELECT pg_notify($1, '*')", &[&super::cache::CHANNEL])
        .map_err(e)?;
    Ok(new)
}
