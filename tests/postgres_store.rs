//! PostgresStore and PostgresBackend against a real server: schema
//! versions, the root-key check, the password never showing, grants as
//! rows, hostile strings through parameters, a `pg_dump` scanned for
//! secrets, the material row format decoded independently (docs/FORMAT.md),
//! and tampered rows refused.

#[path = "support/postgres.rs"]
mod pg;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use std::sync::Arc;
use std::time::Duration;
use strongroom::backend::{KeyBackend, MaterialId};
use strongroom::policy::GrantRequest;
use strongroom::store::postgres::SCHEMA_VERSION;
use strongroom::store::{MetadataStore, PostgresBackend, PostgresOptions, PostgresStore, RootKey};
use strongroom::{
    Action, CreateKeyOptions, EncryptionContext, Error, KeyId, KeyRing, KeySpec, Principal,
};

const ROOT: [u8; 32] = [5; 32];

fn open(url: &str) -> (KeyRing, Arc<PostgresStore>, Arc<PostgresBackend>) {
    let store = Arc::new(
        PostgresStore::connect(url, &RootKey::raw(ROOT), PostgresOptions::default()).unwrap(),
    );
    let backend = Arc::new(PostgresBackend::open(&store).unwrap());
    let ring = KeyRing::builder()
        .store(store.clone())
        .backend(backend.clone())
        .build();
    (ring, store, backend)
}

fn db(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

fn admin() -> Principal {
    Principal::user("admin").unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn schema_is_versioned_and_a_newer_one_is_refused() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    drop(open(&url));
    // A second instance finds the schema in place and changes nothing.
    drop(open(&url));
    let mut c = db(&url);
    let versions: Vec<i32> = c
        .query(
            "SELECT version FROM strongroom_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    c.execute(
        "INSERT INTO strongroom_migrations (version, description) VALUES ($1, 'future')",
        &[&(SCHEMA_VERSION + 1)],
    )
    .unwrap();
    let e =
        PostgresStore::connect(&url, &RootKey::raw(ROOT), PostgresOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    assert!(e.to_string().contains("newer"), "{e}");
}

#[test]
fn a_wrong_root_key_is_refused() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (ring, store, _) = open(&url);
    let key = ring
        .client(admin())
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let e = PostgresStore::connect(&url, &RootKey::raw([6; 32]), PostgresOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::WrongRootKey), "{e}");
    // The right key still works, and the key is still there.
    assert!(store.get_key(&key).unwrap().is_some());
}

#[test]
fn a_passphrase_root_key_goes_through_argon2id() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let root = RootKey::passphrase("correct horse battery staple");
    let store = PostgresStore::connect(&url, &root, PostgresOptions::default()).unwrap();
    let backend = Arc::new(PostgresBackend::open(&store).unwrap());
    let id = MaterialId::new(KeyId::parse("pp-key").unwrap(), 1);
    backend.generate(&id, KeySpec::default()).unwrap();
    let ct = backend.encrypt(&id, b"aad", b"secret").unwrap();
    let kdf: String = db(&url)
        .query_one("SELECT kdf FROM strongroom_store", &[])
        .unwrap()
        .get(0);
    assert!(kdf.contains("argon2id"), "{kdf}");
    // Another instance: the same passphrase opens the material, another
    // is refused before anything is read.
    let store2 = PostgresStore::connect(&url, &root, PostgresOptions::default()).unwrap();
    let again = PostgresBackend::open(&store2).unwrap();
    assert_eq!(
        again.decrypt(&id, b"aad", &ct).unwrap().expose_secret(),
        b"secret"
    );
    let e = PostgresStore::connect(
        &url,
        &RootKey::passphrase("wrong"),
        PostgresOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::WrongRootKey), "{e}");
    // A raw key where a passphrase protects the store: a clear error.
    let e =
        PostgresStore::connect(&url, &RootKey::raw(ROOT), PostgresOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
}

#[test]
fn the_password_never_shows() {
    let Some(cluster) = pg::cluster() else {
        return;
    };
    let url = cluster.fresh_db();
    let pw = cluster.password.clone();
    assert!(!pw.is_empty(), "the test server must use a password");
    let (ring, store, backend) = open(&url);
    for text in [
        format!("{store:?}"),
        format!("{backend:?}"),
        format!("{ring:?}"),
        format!("{:?}", PostgresOptions::default()),
    ] {
        assert!(!text.contains(&pw), "password in Debug: {text}");
    }
    // A wrong password, an unreachable server, a malformed URL: errors
    // that say what is wrong, without the URL or the password.
    let wrong = url.replace(&pw, "not-the-password-xyz");
    let e = PostgresStore::connect(&wrong, &RootKey::raw(ROOT), PostgresOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    assert!(!e.to_string().contains("not-the-password-xyz"));
    let port = url.rsplit_once(':').unwrap().1.split('/').next().unwrap();
    let dead = url.replace(&format!(":{port}/"), ":1/");
    let opts = PostgresOptions::default().connect_timeout(Duration::from_secs(2));
    let e = PostgresStore::connect(&dead, &RootKey::raw(ROOT), opts).unwrap_err();
    assert!(
        e.is_retryable() && matches!(e, Error::Unavailable(_)),
        "{e}"
    );
    assert!(!e.to_string().contains(&pw) && !format!("{e:?}").contains(&pw));
    let bad = format!("{url}?sslmode=nonsense");
    let e =
        PostgresStore::connect(&bad, &RootKey::raw(ROOT), PostgresOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    assert!(!e.to_string().contains(&pw) && !format!("{e:?}").contains(&pw));
}

#[test]
fn grants_are_rows_and_one_is_written_without_rewriting_the_others() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (ring, store, _) = open(&url);
    let c = ring.client(admin());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let who = Principal::user(&format!("u{i}")).unwrap();
        ids.push(
            c.create_grant(key.as_str(), GrantRequest::new(who, &[Action::Encrypt]))
                .unwrap()
                .grant_id,
        );
    }
    let mut conn = db(&url);
    // xmin: the transaction that last wrote each row.
    let xmins = |conn: &mut postgres::Client| -> Vec<(String, String)> {
        conn.query(
            "SELECT grant_id, xmin::text FROM strongroom_grants WHERE key_id = $1 ORDER BY grant_id",
            &[&key.as_str()],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let before = xmins(&mut conn);
    assert_eq!(before.len(), 5);
    c.revoke_grant(key.as_str(), &ids[2]).unwrap();
    c.create_grant(
        key.as_str(),
        GrantRequest::new(Principal::user("u9").unwrap(), &[Action::Decrypt]),
    )
    .unwrap();
    let after = xmins(&mut conn);
    assert_eq!(after.len(), 5);
    for (gid, xmin) in &before {
        if *gid != ids[2] {
            assert!(
                after.contains(&(gid.clone(), xmin.clone())),
                "grant {gid} rewritten"
            );
        }
    }
    // The narrow reads: one principal's grants, every grant.
    let u1 = Principal::user("u1").unwrap();
    let a = store.access_for(&key, &u1).unwrap().unwrap();
    assert_eq!(a.grant_count(), 1);
    assert!(a.grants.contains_key(&u1));
    assert_eq!(store.list_grants(&key).unwrap().unwrap().len(), 5);
    // Removing a grant that is not there changes nothing.
    let e = store.remove_grant(&key, &ids[2]).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let missing = KeyId::parse("no-such-key").unwrap();
    assert!(matches!(
        store.remove_grant(&missing, "x"),
        Err(Error::KeyNotFound(_))
    ));
    assert!(store.access_for(&missing, &u1).unwrap().is_none());
    store.put_policy(&key, None).unwrap();
    assert_eq!(store.get_access(&key).unwrap().unwrap().grant_count(), 5);
}

#[test]
fn hostile_strings_go_through_parameters() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (ring, store, _) = open(&url);
    let c = ring.client(admin());
    let nasty = "'; DROP TABLE strongroom_keys; -- \\ \" $1 \\x00 %s";
    let long: String = nasty.chars().cycle().take(4096).collect();
    let with_nul = format!("a\0b'{long}");
    let key = c
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new()
                .description(with_nul.clone())
                .tag(nasty, nasty)
                .tag("quote'\"\\", "v'\"\\")
                .alias("alias/x-y_z:1"),
        )
        .unwrap();
    // Tags longer than the tag limit, or with NUL, are refused with a
    // clear error before reaching the database.
    for (k, v) in [("k", long.as_str()), ("k\0", "v"), ("k", "v\0")] {
        let e = c.tag_resource(key.as_str(), &[(k, v)]).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
    // Hostile key ids and aliases: clear errors, never SQL.
    for id in [
        nasty,
        "alias/'; DROP TABLE strongroom_aliases; --",
        "alias/\0",
    ] {
        let e = c.describe_key(id).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidArgument(_) | Error::KeyNotFound(_) | Error::AliasNotFound(_)
            ),
            "{e}"
        );
    }
    // Contexts: quotes, backslashes, NUL, 4 KiB, in a grant's constraint
    // (stored) and in encryption (bound, not stored).
    let ctx = EncryptionContext::new()
        .with(nasty, with_nul.as_str())
        .with("k\0", "\\");
    let blob = c.encrypt(key.as_str(), b"pt", &ctx).unwrap();
    let gid = c
        .create_grant(
            key.as_str(),
            GrantRequest::new(Principal::user("bob").unwrap(), &[Action::Decrypt]).constraints(
                strongroom::policy::GrantConstraints::context_equals(ctx.clone()),
            ),
        )
        .unwrap();
    // A fresh instance (no cache) reads back exactly what was written.
    let (ring2, store2, _) = open(&url);
    let m = store2.get_key(&key).unwrap().unwrap();
    assert_eq!(m.description, with_nul);
    assert_eq!(m.tags.get(nasty).map(String::as_str), Some(nasty));
    assert_eq!(m.tags.get("quote'\"\\").map(String::as_str), Some("v'\"\\"));
    assert_eq!(*m, *store.get_key(&key).unwrap().unwrap());
    let g = store2.list_grants(&key).unwrap().unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].grant_id, gid.grant_id);
    let bob = ring2.client(Principal::user("bob").unwrap());
    assert_eq!(
        bob.decrypt(&blob, &ctx).unwrap().plaintext.expose_secret(),
        b"pt"
    );
    // Every table is still there.
    let mut conn = db(&url);
    let n: i64 = conn
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'strongroom_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 7);
}

/// Decodes a material row as docs/FORMAT.md ("PostgreSQL material rows")
/// says, independently of the crate: the raw material.
fn decode_row(store_id: &[u8], key_id: &str, version: u32, gen_: i64, rec: &[u8]) -> Vec<u8> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"strongroom postgres v1"), &ROOT);
    let mut k = [0u8; 32];
    hk.expand(b"material", &mut k).unwrap();
    assert_eq!(&rec[..5], b"SRPG\x01");
    let mut aad = b"SRPG\x01strongroom_material\0".to_vec();
    aad.extend_from_slice(store_id);
    aad.extend_from_slice(&(gen_ as u64).to_be_bytes());
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    let pt = aes_gcm::Aes256Gcm::new_from_slice(&k)
        .unwrap()
        .decrypt(
            rec[5..17].try_into().unwrap(),
            Payload {
                msg: &rec[17..],
                aad: &aad,
            },
        )
        .expect("the row opens as FORMAT.md says");
    let n = u16::from_be_bytes([pt[0], pt[1]]) as usize;
    let spec: serde_json::Value = serde_json::from_slice(&pt[2..2 + n]).unwrap();
    assert!(!spec.is_null());
    pt[2 + n..].to_vec()
}

#[test]
fn pg_dump_holds_no_key_data_key_or_plaintext() {
    let Some(cluster) = pg::cluster() else {
        return;
    };
    let url = cluster.fresh_db();
    let (ring, _, _) = open(&url);
    let c = ring.client(admin());
    let ctx = EncryptionContext::new().with("tenant", "dump");
    let mut keys = Vec::new();
    for spec in [
        KeySpec::default(),
        KeySpec::EccNistP256,
        KeySpec::Ed25519,
        KeySpec::HpkeP256,
    ] {
        keys.push(c.create_key(spec, CreateKeyOptions::new()).unwrap());
    }
    c.rotate_key_on_demand(keys[0].as_str()).unwrap();
    let plaintext = b"plaintext that must never reach the database 1234567";
    let blob = c.encrypt(keys[0].as_str(), plaintext, &ctx).unwrap();
    let msg = c.seal(keys[0].as_str(), plaintext, &ctx).unwrap();
    let dk = c.generate_data_key(keys[0].as_str(), &ctx).unwrap();
    let dump = cluster.dump(&url);
    assert!(contains(&dump, b"strongroom_material"), "dump is empty?");
    // The scan sees what is there: every key id is in the dump.
    for k in &keys {
        assert!(contains(&dump, k.as_str().as_bytes()));
    }
    // The raw material of every version, decoded independently.
    let mut conn = db(&url);
    let store_id: Vec<u8> = conn
        .query_one("SELECT store_id FROM strongroom_store", &[])
        .unwrap()
        .get(0);
    let rows = conn
        .query(
            "SELECT key_id, version, gen, record FROM strongroom_material",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 5);
    let mut secrets: Vec<Vec<u8>> = vec![
        plaintext.to_vec(),
        dk.plaintext().expose_secret().to_vec(),
        ROOT.to_vec(),
    ];
    for r in &rows {
        let (id, v, g, rec): (&str, i64, i64, &[u8]) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let raw = decode_row(&store_id, id, v as u32, g, rec);
        assert!(raw.len() >= 32);
        secrets.push(raw);
    }
    for s in &secrets {
        for form in [s.clone(), hex(s).into_bytes(), s[..16].to_vec()] {
            assert!(!contains(&dump, &form), "a secret is in the pg_dump");
        }
    }
    // The ciphertexts still open (the decoding above changed nothing).
    assert!(c.decrypt(&blob, &ctx).is_ok());
    assert!(c.open(&msg, &ctx).is_ok());
}

#[test]
fn tampered_material_rows_are_refused() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (ring, _, _) = open(&url);
    let c = ring.client(admin());
    let ctx = EncryptionContext::new();
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    c.rotate_key_on_demand(key.as_str()).unwrap();
    let b1 = c.encrypt(key.as_str(), b"one", &ctx).unwrap();
    let mut conn = db(&url);
    // Version 1's record moved into version 2's row; version 2's row with
    // another generation.
    conn.execute(
        "UPDATE strongroom_material SET record = \
         (SELECT record FROM strongroom_material WHERE key_id = $1 AND version = 1) \
         WHERE key_id = $1 AND version = 2",
        &[&key.as_str()],
    )
    .unwrap();
    conn.execute(
        "UPDATE strongroom_material SET gen = gen + 1000 WHERE key_id = $1 AND version = 1",
        &[&key.as_str()],
    )
    .unwrap();
    // A fresh instance (nothing in memory) refuses both rows.
    let (_, _, backend) = open(&url);
    for v in [1, 2] {
        let e = backend
            .encrypt(&MaterialId::new(key.clone(), v), b"", b"x")
            .unwrap_err();
        assert!(matches!(e, Error::CorruptStore { .. }), "{e}");
    }
    drop(b1);
}

/// TLS (feature `postgres-tls`): a server that refuses plain TCP is reached
/// with `sslmode=require` and its certificate as the trusted root; without
/// that root the certificate is refused, with an error and no password.
#[cfg(feature = "postgres-tls")]
#[test]
fn tls_to_a_server_that_refuses_plain_connections() {
    let Some((cluster, pem)) = pg::Cluster::private_tls() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL and openssl are required under CI=true"
        );
        eprintln!("skipped: no PostgreSQL or openssl for the TLS test");
        return;
    };
    let url = format!("{}?sslmode=require", cluster.fresh_db());
    let opts = PostgresOptions::default().tls_root_certificate(pem.clone());
    let store = Arc::new(PostgresStore::connect(&url, &RootKey::raw(ROOT), opts).unwrap());
    let backend = Arc::new(PostgresBackend::open(&store).unwrap());
    let ring = KeyRing::builder()
        .store(store.clone())
        .backend(backend)
        .build();
    let c = ring.client(admin());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let blob = c
        .encrypt(key.as_str(), b"over tls", &EncryptionContext::new())
        .unwrap();
    assert!(c.decrypt(&blob, &EncryptionContext::new()).is_ok());
    assert!(
        // Returns as soon as it listens; the bound only stops a hang.
        store.wait_listening(Duration::from_secs(60)),
        "listener over TLS"
    );
    // Plain TCP is refused by the server; an untrusted certificate by us.
    let plain = url.replace("sslmode=require", "sslmode=disable");
    assert!(
        PostgresStore::connect(&plain, &RootKey::raw(ROOT), PostgresOptions::default()).is_err()
    );
    let e =
        PostgresStore::connect(&url, &RootKey::raw(ROOT), PostgresOptions::default()).unwrap_err();
    assert!(!e.to_string().contains(&cluster.password), "{e}");
}

/// A store with the cache off (every read goes to the database).
fn uncached(url: &str, root: [u8; 32]) -> PostgresStore {
    PostgresStore::connect(
        url,
        &RootKey::raw(root),
        PostgresOptions::default().max_staleness(Duration::ZERO),
    )
    .unwrap()
}

fn is_corrupt<T: std::fmt::Debug>(r: strongroom::Result<T>) -> bool {
    matches!(r, Err(Error::CorruptStore { .. }))
}

#[test]
fn tampered_metadata_rows_are_refused() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (ring, store, _) = open(&url);
    let c = ring.client(admin());
    let ctx = EncryptionContext::new();
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/t"))
        .unwrap();
    let other = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    store
        .put_policy(
            &key,
            Some(&strongroom::policy::Policy::default_for(&admin())),
        )
        .unwrap();
    let bob = Principal::user("bob").unwrap();
    let g1 = c
        .create_grant(
            key.as_str(),
            GrantRequest::new(bob.clone(), &[Action::Encrypt]),
        )
        .unwrap()
        .grant_id;
    let mut conn = db(&url);
    let reader = uncached(&url, ROOT);
    assert!(reader.get_key(&key).unwrap().is_some());
    let alias = strongroom::Alias::parse("alias/t").unwrap();
    assert_eq!(reader.resolve_alias(&alias).unwrap(), Some(key.clone()));

    // Each change is made, checked on a fresh instance (nothing cached),
    // and undone.
    let k = key.as_str();
    let cases: &[(&str, &str, &str)] = &[
        (
            "policy removed",
            "UPDATE strongroom_keys SET policy = NULL WHERE key_id = $1",
            "key",
        ),
        (
            "policy edited",
            "UPDATE strongroom_keys SET policy = replace(policy, 'admin', 'eve00') \
             WHERE key_id = $1",
            "key",
        ),
        (
            "grant widened",
            "UPDATE strongroom_grants SET body = replace(body, 'Encrypt', 'Decrypt') \
             WHERE key_id = $1",
            "key",
        ),
        (
            "grant given to another principal",
            "UPDATE strongroom_grants SET grantee = 'user:eve' WHERE key_id = $1",
            "key",
        ),
        (
            "grant moved to another key",
            "UPDATE strongroom_grants SET key_id = (SELECT key_id FROM strongroom_keys \
             WHERE key_id <> $1 LIMIT 1) WHERE key_id = $1",
            "other",
        ),
        (
            "a key row's MAC copied from another key",
            "UPDATE strongroom_keys SET mac = (SELECT mac FROM strongroom_keys \
             WHERE key_id <> $1 LIMIT 1) WHERE key_id = $1",
            "key",
        ),
        (
            "MAC removed",
            "UPDATE strongroom_keys SET mac = NULL WHERE key_id = $1",
            "key",
        ),
        (
            "revision changed",
            "UPDATE strongroom_keys SET rev = rev + 1 WHERE key_id = $1",
            "key",
        ),
        (
            "alias repointed",
            "UPDATE strongroom_aliases SET key_id = (SELECT key_id FROM strongroom_keys \
             WHERE key_id <> $1 LIMIT 1) WHERE key_id = $1",
            "alias",
        ),
    ];
    // A copy of the three tables as they are, to put back after each case.
    conn.batch_execute(
        "CREATE TABLE snap_keys AS SELECT * FROM strongroom_keys;
         CREATE TABLE snap_grants AS SELECT * FROM strongroom_grants;
         CREATE TABLE snap_aliases AS SELECT * FROM strongroom_aliases;",
    )
    .unwrap();
    let restore = |conn: &mut postgres::Client| {
        conn.batch_execute(
            "BEGIN;
             DELETE FROM strongroom_aliases; DELETE FROM strongroom_grants;
             DELETE FROM strongroom_keys;
             INSERT INTO strongroom_keys SELECT * FROM snap_keys;
             INSERT INTO strongroom_grants SELECT * FROM snap_grants;
             INSERT INTO strongroom_aliases SELECT * FROM snap_aliases;
             COMMIT;",
        )
        .unwrap();
    };
    for (what, sql, check) in cases {
        assert!(
            conn.execute(*sql, &[&k]).unwrap() > 0,
            "{what}: no row changed"
        );
        let fresh = uncached(&url, ROOT);
        match *check {
            "key" => {
                assert!(is_corrupt(fresh.get_key(&key)), "{what}: key accepted");
                assert!(is_corrupt(fresh.access_for(&key, &bob)), "{what}");
                assert!(is_corrupt(fresh.list_keys(None, 10)), "{what}");
                // A write must read the row first: refused too, so nothing
                // tampered is ever authenticated again by a later write.
                assert!(is_corrupt(fresh.put_policy(&key, None)), "{what}: write");
            }
            "other" => assert!(is_corrupt(fresh.get_key(&other)), "{what}: accepted"),
            _ => {
                assert!(is_corrupt(fresh.resolve_alias(&alias)), "{what}: accepted");
                assert!(is_corrupt(fresh.list_aliases(None, None, 10)), "{what}");
            }
        }
        restore(&mut conn);
        assert!(fresh.get_key(&key).unwrap().is_some(), "{what}: not undone");
        assert!(
            fresh.get_key(&other).unwrap().is_some(),
            "{what}: not undone"
        );
        assert_eq!(fresh.resolve_alias(&alias).unwrap(), Some(key.clone()));
    }

    // A state change undone by putting the old record back: refused, and
    // not retryable.
    let record = |conn: &mut postgres::Client| -> String {
        conn.query_one(
            "SELECT record FROM strongroom_keys WHERE key_id = $1",
            &[&k],
        )
        .unwrap()
        .get(0)
    };
    let enabled = record(&mut conn);
    c.disable_key(k).unwrap();
    let disabled = record(&mut conn);
    let set_record = |conn: &mut postgres::Client, r: &str| {
        conn.execute(
            "UPDATE strongroom_keys SET record = $2 WHERE key_id = $1",
            &[&k, &r],
        )
        .unwrap();
    };
    set_record(&mut conn, &enabled);
    let (fresh_ring, _, _) = open(&url);
    let e = fresh_ring
        .client(admin())
        .encrypt(k, b"x", &ctx)
        .unwrap_err();
    assert!(matches!(e, Error::CorruptStore { .. }), "{e}");
    assert!(!e.is_retryable());
    set_record(&mut conn, &disabled);
    c.enable_key(k).unwrap();

    // A revoked grant put back (its row exactly as it was, MAC and all):
    // refused, because the key row's MAC covers the set of its grants.
    conn.batch_execute(
        "CREATE TABLE snap_g1 AS SELECT * FROM strongroom_grants WHERE grant_id IS NOT NULL",
    )
    .unwrap();
    c.revoke_grant(k, &g1).unwrap();
    conn.execute(
        "INSERT INTO strongroom_grants SELECT * FROM snap_g1 WHERE key_id = $1 AND grant_id = $2",
        &[&k, &g1],
    )
    .unwrap();
    let fresh = uncached(&url, ROOT);
    assert!(is_corrupt(fresh.access_for(&key, &bob)));
    assert!(is_corrupt(fresh.get_key(&key)));
    conn.execute(
        "DELETE FROM strongroom_grants WHERE key_id = $1 AND grant_id = $2",
        &[&k, &g1],
    )
    .unwrap();
    let a = fresh.access_for(&key, &bob).unwrap().unwrap();
    assert_eq!(a.grant_count(), 0);

    // A whole key row rolled back (record, revision and MAC of an earlier
    // state, the grants unchanged): an instance that read the newer state
    // refuses it. (One that never saw the newer state cannot tell: see
    // the README, "What a database writer can and cannot do".)
    let old_row = conn
        .query_one(
            "SELECT record, rev, mac FROM strongroom_keys WHERE key_id = $1",
            &[&k],
        )
        .unwrap();
    let (r0, rev0, mac0): (String, i64, Vec<u8>) = (old_row.get(0), old_row.get(1), old_row.get(2));
    c.disable_key(k).unwrap();
    assert!(fresh.get_key(&key).unwrap().is_some());
    conn.execute(
        "UPDATE strongroom_keys SET record = $2, rev = $3, mac = $4 WHERE key_id = $1",
        &[&k, &r0, &rev0, &mac0],
    )
    .unwrap();
    let e = fresh.get_key(&key).unwrap_err();
    assert!(e.to_string().contains("older than revision"), "{e}");
}

/// Schema 1, as released (before metadata MACs).
const SCHEMA_1: &str = r#"
CREATE TABLE strongroom_migrations (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO strongroom_migrations (version, description) VALUES (1, 'v1');
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
CREATE TABLE strongroom_aliases (
    alias text COLLATE "C" PRIMARY KEY,
    key_id text COLLATE "C" NOT NULL
        REFERENCES strongroom_keys (key_id) ON DELETE CASCADE
);
CREATE SEQUENCE strongroom_material_gen;
CREATE TABLE strongroom_material (
    key_id text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    gen bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (key_id, version)
);
"#;

#[test]
fn rows_of_schema_1_are_authenticated_by_the_upgrade_and_then_checked() {
    if !pg::available() {
        return;
    }
    // Rows as a metadata-only fleet of schema 1 left them (no MACs, no
    // store identity), copied from a key made by this version.
    let src = pg::fresh_db();
    let (ring, _, _) = open(&src);
    let c = ring.client(admin());
    let key = c
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new().alias("alias/old"),
        )
        .unwrap();
    let bob = Principal::user("bob").unwrap();
    c.create_grant(
        key.as_str(),
        GrantRequest::new(bob.clone(), &[Action::Encrypt]),
    )
    .unwrap();
    let mut s = db(&src);
    let k = s
        .query_one("SELECT key_id, record, policy FROM strongroom_keys", &[])
        .unwrap();
    let g = s
        .query_one(
            "SELECT grant_id, grantee, expires_at, body FROM strongroom_grants",
            &[],
        )
        .unwrap();
    let url = pg::fresh_db();
    let mut conn = db(&url);
    conn.batch_execute(SCHEMA_1).unwrap();
    conn.execute(
        "INSERT INTO strongroom_keys (key_id, record, policy) VALUES ($1, $2, $3)",
        &[
            &k.get::<_, &str>(0),
            &k.get::<_, &str>(1),
            &k.get::<_, Option<&str>>(2),
        ],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO strongroom_grants (key_id, grant_id, grantee, expires_at, body) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &k.get::<_, &str>(0),
            &g.get::<_, &str>(0),
            &g.get::<_, &str>(1),
            &g.get::<_, Option<i64>>(2),
            &g.get::<_, &str>(3),
        ],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO strongroom_aliases (alias, key_id) VALUES ('alias/old', $1)",
        &[&k.get::<_, &str>(0)],
    )
    .unwrap();

    // The upgrade authenticates them; they read back as they were.
    let store = uncached(&url, [4; 32]);
    let m = store.get_key(&key).unwrap().unwrap();
    assert_eq!(m.access.grant_count(), 1);
    assert!(m.access.grants.contains_key(&bob));
    let alias = strongroom::Alias::parse("alias/old").unwrap();
    assert_eq!(store.resolve_alias(&alias).unwrap(), Some(key.clone()));
    let nulls: i64 = conn
        .query_one(
            "SELECT (SELECT count(*) FROM strongroom_keys WHERE mac IS NULL) + \
             (SELECT count(*) FROM strongroom_grants WHERE mac IS NULL) + \
             (SELECT count(*) FROM strongroom_aliases WHERE mac IS NULL)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(nulls, 0);
    // From now on a row without a MAC, or changed, is refused: the upgrade
    // happens once.
    conn.execute("UPDATE strongroom_grants SET mac = NULL", &[])
        .unwrap();
    let again = uncached(&url, [4; 32]);
    assert!(is_corrupt(again.get_key(&key)));
    // Another root key does not open the upgraded store.
    let e = PostgresStore::connect(&url, &RootKey::raw([3; 32]), PostgresOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::WrongRootKey), "{e}");
    // Putting the schema marker back to 1 does not get rows adopted again.
    conn.execute("DELETE FROM strongroom_migrations WHERE version > 1", &[])
        .unwrap();
    assert!(
        PostgresStore::connect(&url, &RootKey::raw([4; 32]), PostgresOptions::default()).is_err()
    );
}

#[test]
fn root_key_rotation_reseals_everything_and_the_old_key_opens_nothing() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (ring, store, _) = open(&url);
    // Another instance, opened with the old key before the rotation.
    let (old_ring, old_store, _) = open(&url);
    let c = ring.client(admin());
    let ctx = EncryptionContext::new();
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/r"))
        .unwrap();
    c.rotate_key_on_demand(key.as_str()).unwrap();
    let bob = Principal::user("bob").unwrap();
    c.create_grant(
        key.as_str(),
        GrantRequest::new(bob.clone(), &[Action::Encrypt]),
    )
    .unwrap();
    let blob = c.encrypt("alias/r", b"before", &ctx).unwrap();
    let mut conn = db(&url);
    let dump_before: Vec<Vec<u8>> = conn
        .query(
            "SELECT record FROM strongroom_material ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    let new = [42u8; 32];
    store.rotate_root_key(&RootKey::raw(new)).unwrap();

    // Every material row changed; the rotating instance goes on.
    let dump_after: Vec<Vec<u8>> = conn
        .query(
            "SELECT record FROM strongroom_material ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(dump_before.len(), 2);
    assert!(dump_before.iter().zip(&dump_after).all(|(a, b)| a != b));
    assert_eq!(
        c.decrypt(&blob, &ctx).unwrap().plaintext.expose_secret(),
        b"before"
    );
    c.create_grant(key.as_str(), GrantRequest::new(admin(), &[Action::Decrypt]))
        .unwrap();

    // A new instance with the new key sees everything.
    let (ring2, store2, _) = {
        let store = Arc::new(
            PostgresStore::connect(&url, &RootKey::raw(new), PostgresOptions::default()).unwrap(),
        );
        let backend = Arc::new(PostgresBackend::open(&store).unwrap());
        let ring = KeyRing::builder()
            .store(store.clone())
            .backend(backend.clone())
            .build();
        (ring, store, backend)
    };
    let c2 = ring2.client(admin());
    assert_eq!(
        c2.decrypt(&blob, &ctx).unwrap().plaintext.expose_secret(),
        b"before"
    );
    assert!(c2.encrypt("alias/r", b"after", &ctx).is_ok());
    assert_eq!(store2.list_grants(&key).unwrap().unwrap().len(), 2);

    // The old key opens nothing: a new instance is refused, and the
    // instance opened before the rotation can no longer write.
    let e =
        PostgresStore::connect(&url, &RootKey::raw(ROOT), PostgresOptions::default()).unwrap_err();
    assert!(matches!(e, Error::WrongRootKey), "{e}");
    let e = old_store.put_policy(&key, None).unwrap_err();
    assert!(matches!(e, Error::WrongRootKey), "{e}");
    let e = old_ring
        .client(admin())
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap_err();
    assert!(matches!(e, Error::WrongRootKey), "{e}");
    // Rows it has not cached read as "root key rotated", not as tampering.
    let uncached_old = old_store.list_keys(None, 10);
    assert!(
        matches!(uncached_old, Err(Error::WrongRootKey)),
        "{uncached_old:?}"
    );
}

/// Connections of `db` named `strongroom` (the pool's; the listener's
/// are named `strongroom-listener`), and how many of them wait for a lock.
fn pool_connections(watch: &mut postgres::Client) -> (i64, i64) {
    let r = watch
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE wait_event_type = 'Lock') \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'strongroom'",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1))
}

#[test]
fn the_connection_cap_holds_and_a_caller_past_it_gets_a_retryable_error() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let opts = PostgresOptions::default()
        .max_staleness(Duration::ZERO)
        .max_connections(1)
        .connection_wait(Duration::from_millis(300));
    let store = Arc::new(PostgresStore::connect(&url, &RootKey::raw(ROOT), opts).unwrap());
    let ring = KeyRing::builder()
        .store(store.clone())
        .backend(Arc::new(PostgresBackend::open(&store).unwrap()))
        .build();
    let key = ring
        .client(admin())
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    // The key's row locked from outside: a write of this instance holds
    // its only connection while it waits for the lock.
    let mut outside = db(&url);
    let mut tx = outside.transaction().unwrap();
    tx.query(
        "SELECT 1 FROM strongroom_keys WHERE key_id = $1 FOR UPDATE",
        &[&key.as_str()],
    )
    .unwrap();
    let writer = {
        let (store, key) = (store.clone(), key.clone());
        std::thread::spawn(move || store.put_policy(&key, None))
    };
    let mut watch = db(&url);
    let start = std::time::Instant::now();
    while pool_connections(&mut watch).1 == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the writer never waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Now the one connection is busy: a call waits its bounded time, then
    // fails with a retryable error that says why.
    let e = store.get_key(&key).unwrap_err();
    assert!(
        matches!(e, Error::Unavailable(_)) && e.is_retryable(),
        "{e}"
    );
    assert!(e.to_string().contains("max_connections"), "{e}");
    tx.commit().unwrap();
    writer.join().unwrap().unwrap();
    assert!(store.get_key(&key).unwrap().is_some());
    drop((ring, store));

    // Several threads through a cap of 1 with room to wait: every call
    // succeeds in turn, and the instance never has more than one
    // connection open (sampled while they run: a sample can only show
    // what is open, so this cannot fail by timing).
    let url2 = pg::fresh_db();
    let opts = PostgresOptions::default()
        .max_staleness(Duration::ZERO)
        .max_connections(1)
        .connection_wait(Duration::from_secs(60));
    let store = Arc::new(PostgresStore::connect(&url2, &RootKey::raw(ROOT), opts).unwrap());
    let ring = KeyRing::builder()
        .store(store.clone())
        .backend(Arc::new(PostgresBackend::open(&store).unwrap()))
        .build();
    let key = ring
        .client(admin())
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (store, key, done) = (store.clone(), key.clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..25 {
                    store.get_key(&key).unwrap().unwrap();
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    let mut watch = db(&url2);
    let mut most = 0;
    while done.load(std::sync::atomic::Ordering::SeqCst) < 4 {
        most = most.max(pool_connections(&mut watch).0);
        std::thread::sleep(Duration::from_millis(2));
    }
    for t in threads {
        t.join().unwrap();
    }
    assert!(most <= 1, "{most} connections open under a cap of 1");
}

/// A metadata MAC computed as docs/FORMAT.md ("PostgreSQL metadata MACs")
/// says, independently of the crate.
fn format_mac(store_id: &[u8], table: &str, fields: &[&[u8]]) -> Vec<u8> {
    use hmac::{KeyInit as _, Mac as _};
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"strongroom postgres v1"), &ROOT);
    let mut k = [0u8; 32];
    hk.expand(b"metadata mac", &mut k).unwrap();
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&k).unwrap();
    m.update(b"SRPG\x01");
    m.update(table.as_bytes());
    m.update(&[0]);
    m.update(store_id);
    for f in fields {
        m.update(&(f.len() as u32).to_be_bytes());
        m.update(f);
    }
    m.finalize().into_bytes().to_vec()
}

fn opt_field(v: Option<&[u8]>) -> Vec<u8> {
    match v {
        None => vec![0],
        Some(x) => [&[1u8][..], x].concat(),
    }
}

#[test]
fn metadata_macs_are_as_format_md_says() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (ring, _, _) = open(&url);
    let c = ring.client(admin());
    let key = c
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new().alias("alias/fmt"),
        )
        .unwrap();
    for who in ["u1", "u2"] {
        c.create_grant(
            key.as_str(),
            GrantRequest::new(Principal::user(who).unwrap(), &[Action::Encrypt]),
        )
        .unwrap();
    }
    let mut conn = db(&url);
    let store_id: Vec<u8> = conn
        .query_one("SELECT store_id FROM strongroom_store", &[])
        .unwrap()
        .get(0);
    let mut grant_macs = Vec::new();
    for g in conn
        .query(
            "SELECT key_id, grant_id, grantee, expires_at, body, mac FROM strongroom_grants",
            &[],
        )
        .unwrap()
    {
        let exp = g.get::<_, Option<i64>>(3).map(|e| e.to_be_bytes());
        let want = format_mac(
            &store_id,
            "strongroom_grants",
            &[
                g.get::<_, &str>(0).as_bytes(),
                g.get::<_, &str>(1).as_bytes(),
                g.get::<_, &str>(2).as_bytes(),
                &opt_field(exp.as_ref().map(|e| &e[..])),
                g.get::<_, &str>(4).as_bytes(),
            ],
        );
        assert_eq!(g.get::<_, Vec<u8>>(5), want, "grant MAC");
        grant_macs.push(want);
    }
    assert_eq!(grant_macs.len(), 2);
    grant_macs.sort();
    let k = conn
        .query_one(
            "SELECT key_id, rev, record, policy, mac FROM strongroom_keys",
            &[],
        )
        .unwrap();
    let count = (grant_macs.len() as u32).to_be_bytes();
    let rev = k.get::<_, i64>(1).to_be_bytes();
    let policy = opt_field(k.get::<_, Option<&str>>(3).map(str::as_bytes));
    let mut fields: Vec<&[u8]> = vec![
        k.get::<_, &str>(0).as_bytes(),
        &rev,
        k.get::<_, &str>(2).as_bytes(),
        &policy,
        &count,
    ];
    fields.extend(grant_macs.iter().map(Vec::as_slice));
    assert_eq!(
        k.get::<_, Vec<u8>>(4),
        format_mac(&store_id, "strongroom_keys", &fields),
        "key MAC"
    );
    let a = conn
        .query_one(
            "SELECT alias, key_id, rev, mac FROM strongroom_aliases",
            &[],
        )
        .unwrap();
    assert_eq!(
        a.get::<_, Vec<u8>>(3),
        format_mac(
            &store_id,
            "strongroom_aliases",
            &[
                a.get::<_, &str>(0).as_bytes(),
                a.get::<_, &str>(1).as_bytes(),
                &a.get::<_, i64>(2).to_be_bytes(),
            ],
        ),
        "alias MAC"
    );
}

#[test]
fn a_schema_1_store_with_material_is_upgraded_under_its_root_key_only() {
    if !pg::available() {
        return;
    }
    // A key record made by this version, put into a schema-1 database that
    // has a store identity of schema 1 (check record "strongroom postgres
    // check", sealed as docs/FORMAT.md says).
    let src = pg::fresh_db();
    let (ring, _, _) = open(&src);
    let key = ring
        .client(admin())
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let k = db(&src)
        .query_one("SELECT key_id, record, policy FROM strongroom_keys", &[])
        .unwrap();
    let url = pg::fresh_db();
    let mut conn = db(&url);
    conn.batch_execute(SCHEMA_1).unwrap();
    let store_id = [9u8; 16];
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"strongroom postgres v1"), &ROOT);
    let mut ck = [0u8; 32];
    hk.expand(b"check", &mut ck).unwrap();
    let mut aad = b"SRPG\x01strongroom_store\0".to_vec();
    aad.extend_from_slice(&store_id);
    let nonce = [7u8; 12];
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&ck).unwrap();
    let seal = |text: &[u8]| -> Vec<u8> {
        let ct = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: text,
                    aad: &aad,
                },
            )
            .unwrap();
        [&b"SRPG\x01"[..], &nonce, &ct].concat()
    };
    conn.execute(
        "INSERT INTO strongroom_store (id, store_id, kdf, check_record) \
         VALUES (1, $1, '{\"kind\":\"raw\"}', $2)",
        &[&store_id.as_slice(), &seal(b"strongroom postgres check")],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO strongroom_keys (key_id, record, policy) VALUES ($1, $2, $3)",
        &[
            &k.get::<_, &str>(0),
            &k.get::<_, &str>(1),
            &k.get::<_, Option<&str>>(2),
        ],
    )
    .unwrap();

    // Another root key: refused, and nothing changes (still schema 1).
    let e = PostgresStore::connect(&url, &RootKey::raw([1; 32]), PostgresOptions::default())
        .unwrap_err();
    assert!(matches!(e, Error::WrongRootKey), "{e}");
    let version: i32 = conn
        .query_one("SELECT max(version) FROM strongroom_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, 1);

    // Its own root key: upgraded, the rows authenticated, the check record
    // now the schema-2 one.
    let store = uncached(&url, ROOT);
    assert!(store.get_key(&key).unwrap().is_some());
    let check: Vec<u8> = conn
        .query_one("SELECT check_record FROM strongroom_store", &[])
        .unwrap()
        .get(0);
    let text = cipher
        .decrypt(
            check[5..17].try_into().unwrap(),
            Payload {
                msg: &check[17..],
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(
        text,
        b"strongroom postgres check v2: metadata rows authenticated"
    );
    // The old check record put back (with the schema at 2): refused.
    conn.execute(
        "UPDATE strongroom_store SET check_record = $1",
        &[&seal(b"strongroom postgres check")],
    )
    .unwrap();
    let e =
        PostgresStore::connect(&url, &RootKey::raw(ROOT), PostgresOptions::default()).unwrap_err();
    assert!(matches!(e, Error::CorruptStore { .. }), "{e}");
}

#[test]
fn list_keys_shows_each_keys_aliases_from_one_query() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (ring, store, _) = open(&url);
    let c = ring.client(admin());
    let mut made = Vec::new();
    for i in 0..5 {
        let k = c
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
        // Key i has i aliases (the first none).
        for j in 0..i {
            c.create_alias(&format!("alias/k{i}-{j}"), k.as_str())
                .unwrap();
        }
        made.push((k, i));
    }
    let mut seen = std::collections::BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let mut o = strongroom::keyring::ListOptions::default().limit(2);
        if let Some(m) = marker.take() {
            o = o.marker(m);
        }
        let page = c.list_keys(o).unwrap();
        assert!(page.items.len() <= 2);
        for e in page.items {
            seen.insert(e.key_id.to_string(), e.aliases.len());
        }
        match page.next_marker {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    for (k, n) in &made {
        assert_eq!(seen.get(k.as_str()), Some(n), "{k}");
    }
    // The store call itself: one key with aliases, one without, one unknown.
    let ids = [made[3].0.clone(), made[0].0.clone()];
    let map = store.aliases_of(&ids, 2).unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(map[&made[3].0].len(), 2, "limited per key");
    // A tampered alias row fails the listing instead of showing it.
    db(&url)
        .execute(
            "UPDATE strongroom_aliases SET key_id = $1 WHERE alias = 'alias/k4-0'",
            &[&made[1].0.as_str()],
        )
        .unwrap();
    let fresh = uncached(&url, ROOT);
    assert!(is_corrupt(fresh.aliases_of(&[made[1].0.clone()], 10)));
}
