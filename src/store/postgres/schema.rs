//! The schema, created and upgraded by the crate: numbered migrations, each
//! applied once, recorded in `strongroom_migrations`, under an advisory lock
//! so instances starting together apply them once. A database whose schema
//! is newer than this crate knows is refused.
//!
//! Migration 2 adds the metadata MACs; the rows already there are MAC'd in
//! the same transaction (`auth::identify`, which needs the root key), so a
//! schema at version 2 never has a row without one. Migration 3 adds the
//! generic records (`records.rs`); each row is MAC'd when written.

use super::conn::pg_err;
use crate::error::{Error, Result};

/// Advisory lock key of migrations and store creation ("SRPG").
pub(crate) const LOCK: i64 = 0x5352_5047;

/// `(version, description, SQL)`, in order. Never edit a released entry:
/// add a new one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "keys, grants, aliases, material, store identity",
        r#"
CREATE TABLE strongroom_store (
    id integer PRIMARY KEY CHECK (id = 1),
    store_id bytea NOT NULL CHECK (length(store_id) = 16),
    kdf text NOT NULL,
    check_record bytea NOT NULL
);
CREATE TABLE strongroom_keys (
    key_id text COLLATE "C" PRIMARY KEY,
    rev bigint NOT NULL DEFAULT 1,
    record text NOT NULL,
    policy text
);
CREATE TABLE strongroom_grants (
    key_id text COLLATE "C" NOT NULL
        REFERENCES strongroom_keys (key_id) ON DELETE CASCADE,
    grant_id text COLLATE "C" NOT NULL,
    grantee text COLLATE "C" NOT NULL,
    expires_at bigint,
    seq bigserial NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (key_id, grant_id)
);
CREATE INDEX strongroom_grants_grantee ON strongroom_grants (key_id, grantee);
CREATE TABLE strongroom_aliases (
    alias text COLLATE "C" PRIMARY KEY,
    key_id text COLLATE "C" NOT NULL
        REFERENCES strongroom_keys (key_id) ON DELETE CASCADE
);
CREATE INDEX strongroom_aliases_key ON strongroom_aliases (key_id);
CREATE SEQUENCE strongroom_material_gen;
CREATE TABLE strongroom_material (
    key_id text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    gen bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (key_id, version)
);
"#,
    ),
    (
        2,
        "a MAC on every key, grant and alias row; revisions from one sequence",
        r#"
CREATE SEQUENCE strongroom_rev;
SELECT setval('strongroom_rev', GREATEST((SELECT max(rev) FROM strongroom_keys), 1));
ALTER TABLE strongroom_keys ADD COLUMN mac bytea;
ALTER TABLE strongroom_grants ADD COLUMN mac bytea;
ALTER TABLE strongroom_aliases ADD COLUMN rev bigint NOT NULL DEFAULT 0,
    ADD COLUMN mac bytea;
"#,
    ),
    (
        3,
        "generic records (the secrets store, identity policies), each with a MAC",
        r#"
CREATE TABLE strongroom_records (
    kind text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    rev bigint NOT NULL,
    body bytea NOT NULL,
    mac bytea NOT NULL,
    PRIMARY KEY (kind, name)
);
"#,
    ),
];

/// The newest schema version this crate knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings the schema up to [`SCHEMA_VERSION`] inside `tx` (which the
/// caller commits after authenticating the rows of an older schema, see
/// `auth::identify`); refuses a newer one. Returns the version found
/// before migrating (0: a new database).
pub(crate) fn migrate(tx: &mut postgres::Transaction<'_>) -> Result<i32> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .map_err(|e| pg_err("migrate", &e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS strongroom_migrations (
            version integer PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .map_err(|e| pg_err("migrate", &e))?;
    let found: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM strongroom_migrations",
            &[],
        )
        .map_err(|e| pg_err("migrate", &e))?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(Error::Configuration(format!(
            "the database's strongroom schema is version {found}, newer than this version of \
             strongroom knows ({SCHEMA_VERSION}): another instance was upgraded; upgrade this \
             one too (nothing was changed)"
        )));
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql)
            .map_err(|e| pg_err(&format!("migration {version}"), &e))?;
        tx.execute(
            "INSERT INTO strongroom_migrations (version, description) VALUES ($1, $2)",
            &[version, description],
        )
        .map_err(|e| pg_err("migrate", &e))?;
    }
    Ok(found)
}
