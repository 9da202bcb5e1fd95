//! Multi-region replica keys with PostgreSQL regions: two databases with
//! different root keys (two independent fleet stores), and a file keystore
//! region replicating to and from a database. Seal in one region, open in
//! the other; rotate, sync, promote; deletion in one region leaves the
//! other working; a second instance of a region sees the replica.

#[path = "support/postgres.rs"]
mod pg;

use std::sync::Arc;
use strongroom::clock::{ManualClock, Timestamp};
use strongroom::keyring::{ReplicaOptions, ScheduleDeletionOptions};
use strongroom::store::{
    KeystoreOptions, OpenMode, PostgresBackend, PostgresOptions, PostgresStore, RootKey,
};
use strongroom::{Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal};

const T0: Timestamp = Timestamp(1_800_000_000);

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("app", "pg-replicas")
}

fn pg_region(url: &str, root: [u8; 32], name: &str, clock: Arc<ManualClock>) -> KeyRing {
    let store = Arc::new(
        PostgresStore::connect(url, &RootKey::raw(root), PostgresOptions::default()).unwrap(),
    );
    let backend = Arc::new(PostgresBackend::open(&store).unwrap());
    KeyRing::builder()
        .store(store)
        .backend(backend)
        .region(name)
        .clock(clock)
        .build()
}

fn mrk(c: &Client) -> String {
    c.create_key(
        KeySpec::default(),
        CreateKeyOptions::new().multi_region(true),
    )
    .unwrap()
    .to_string()
}

#[test]
fn two_databases_as_two_regions() {
    if !pg::available() {
        return;
    }
    let (url_a, url_b) = (pg::fresh_db(), pg::fresh_db());
    let (clock_a, clock_b) = (
        Arc::new(ManualClock::new(T0)),
        Arc::new(ManualClock::new(T0)),
    );
    let a = pg_region(&url_a, [1; 32], "eu-1", clock_a.clone());
    let b = pg_region(&url_b, [2; 32], "us-1", clock_b.clone());
    let ca = a.client(p("user:alice"));
    let cb = b.client(p("user:bob"));
    let key = mrk(&ca);
    let message = ca.seal(&key, b"sealed in eu-1", &ctx()).unwrap();
    ca.replicate_key(&key, &cb, ReplicaOptions::new().alias("alias/orders"))
        .unwrap();
    // No call across: B opens with its own copy (A's ring is gone).
    drop((ca, a));
    assert_eq!(
        cb.open(&message, &ctx()).unwrap().plaintext.expose_secret(),
        b"sealed in eu-1"
    );
    // A second instance of region B (another process would do the same)
    // finds the replica in the database.
    let b2 = pg_region(&url_b, [2; 32], "us-1", clock_b.clone());
    let cb2 = b2.client(p("user:bob"));
    assert_eq!(
        cb2.open(&message, &ctx())
            .unwrap()
            .plaintext
            .expose_secret(),
        b"sealed in eu-1"
    );
    let back = cb2.seal("alias/orders", b"from us-1", &ctx()).unwrap();

    // Rotate in A, B is behind until it syncs.
    let a = pg_region(&url_a, [1; 32], "eu-1", clock_a.clone());
    let ca = a.client(p("user:alice"));
    assert_eq!(
        ca.open(&back, &ctx()).unwrap().plaintext.expose_secret(),
        b"from us-1"
    );
    assert_eq!(ca.rotate_key_on_demand(&key).unwrap(), 2);
    let m2 = ca.seal(&key, b"v2", &ctx()).unwrap();
    assert!(matches!(
        cb.open(&m2, &ctx()),
        Err(Error::ReplicaVersionUnknown { version: 2, .. })
    ));
    ca.sync_replica(&key, &cb).unwrap();
    assert_eq!(cb2.open(&m2, &ctx()).unwrap().key_version, 2);

    // Promote B; it rotates and syncs back to A.
    ca.update_primary_region(&key, &cb).unwrap();
    assert!(matches!(
        ca.rotate_key_on_demand(&key),
        Err(Error::Unsupported(_))
    ));
    assert_eq!(cb.rotate_key_on_demand(&key).unwrap(), 3);
    let m3 = cb.seal(&key, b"v3 from us-1", &ctx()).unwrap();
    cb.sync_replica(&key, &ca).unwrap();
    assert_eq!(ca.open(&m3, &ctx()).unwrap().key_version, 3);

    // Deletion in A is carried out; B keeps working.
    ca.schedule_key_deletion(
        &key,
        ScheduleDeletionOptions::default().pending_window_days(7),
    )
    .unwrap();
    clock_a.advance_days(8);
    a.run_maintenance().unwrap();
    assert!(matches!(ca.describe_key(&key), Err(Error::KeyNotFound(_))));
    for m in [&message, &m2, &m3] {
        assert!(cb.open(m, &ctx()).is_ok());
    }
    // The material left A's database with the key.
    let mut c = postgres::Client::connect(&url_a, postgres::NoTls).unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM strongroom_material WHERE key_id = $1",
            &[&key],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn file_keystore_and_database_replicate_both_ways() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let file = KeyRing::builder()
        .file_keystore(
            dir.path(),
            &RootKey::raw([3; 32]),
            KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
        )
        .unwrap()
        .region("edge")
        .clock(clock.clone())
        .build();
    let db = pg_region(&url, [4; 32], "core", clock);
    let cf = file.client(p("user:edge"));
    let cd = db.client(p("user:core"));
    // Database primary → file replica.
    let k1 = mrk(&cd);
    cd.replicate_key(&k1, &cf, ReplicaOptions::new()).unwrap();
    let m = cf.seal(&k1, b"edge to core", &ctx()).unwrap();
    assert_eq!(
        cd.open(&m, &ctx()).unwrap().plaintext.expose_secret(),
        b"edge to core"
    );
    // File primary → database replica, with a disabled key: the replica
    // starts disabled.
    let k2 = mrk(&cf);
    let blob = cf.encrypt(&k2, b"core to edge", &ctx()).unwrap();
    cf.disable_key(&k2).unwrap();
    cf.replicate_key(&k2, &cd, ReplicaOptions::new()).unwrap();
    assert!(matches!(
        cd.decrypt(&blob, &ctx()),
        Err(Error::InvalidKeyState { .. })
    ));
    cd.enable_key(&k2).unwrap();
    assert_eq!(
        cd.decrypt(&blob, &ctx()).unwrap().plaintext.expose_secret(),
        b"core to edge"
    );
}
