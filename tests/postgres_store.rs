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
    let store = Arc::new(PostgresStore::connect(url, PostgresOptions::default()).unwrap());
    let backend = Arc::new(PostgresBackend::open(&store, &RootKey::raw(ROOT)).unwrap());
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
    let e = PostgresStore::connect(&url, PostgresOptions::default()).unwrap_err();
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
    let e = PostgresBackend::open(&store, &RootKey::raw([6; 32])).unwrap_err();
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
    let store = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
    let root = RootKey::passphrase("correct horse battery staple");
    let backend = Arc::new(PostgresBackend::open(&store, &root).unwrap());
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
    let store2 = PostgresStore::connect(&url, PostgresOptions::default()).unwrap();
    let again = PostgresBackend::open(&store2, &root).unwrap();
    assert_eq!(
        again.decrypt(&id, b"aad", &ct).unwrap().expose_secret(),
        b"secret"
    );
    let e = PostgresBackend::open(&store2, &RootKey::passphrase("wrong")).unwrap_err();
    assert!(matches!(e, Error::WrongRootKey), "{e}");
    // A raw key where a passphrase protects the store: a clear error.
    let e = PostgresBackend::open(&store2, &RootKey::raw(ROOT)).unwrap_err();
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
    let e = PostgresStore::connect(&wrong, PostgresOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    assert!(!e.to_string().contains("not-the-password-xyz"));
    let port = url.rsplit_once(':').unwrap().1.split('/').next().unwrap();
    let dead = url.replace(&format!(":{port}/"), ":1/");
    let opts = PostgresOptions::default().connect_timeout(Duration::from_secs(2));
    let e = PostgresStore::connect(&dead, opts).unwrap_err();
    assert!(
        e.is_retryable() && matches!(e, Error::Unavailable(_)),
        "{e}"
    );
    assert!(!e.to_string().contains(&pw) && !format!("{e:?}").contains(&pw));
    let bad = format!("{url}?sslmode=nonsense");
    let e = PostgresStore::connect(&bad, PostgresOptions::default()).unwrap_err();
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
    assert_eq!(n, 6);
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
    let store = Arc::new(PostgresStore::connect(&url, opts).unwrap());
    let backend = Arc::new(PostgresBackend::open(&store, &RootKey::raw(ROOT)).unwrap());
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
    assert!(PostgresStore::connect(&plain, PostgresOptions::default()).is_err());
    let e = PostgresStore::connect(&url, PostgresOptions::default()).unwrap_err();
    assert!(!e.to_string().contains(&cluster.password), "{e}");
}
