//! The secrets store on PostgreSQL (the generic record facility,
//! `strongroom_records`): shared by instances, durable across reconnects,
//! compare-and-set under concurrency, every row authenticated (tampered,
//! moved and rolled-back rows refused), root-key rotation, the deletion
//! window, and the record facility's own contract.

#[path = "support/postgres.rs"]
mod pg;

use std::sync::Arc;
use strongroom::clock::ManualClock;
use strongroom::keyring::ListOptions;
use strongroom::keyring::secrets::{SECRET_RECORD_KIND, SecretInput, SecretVersion, StagingLabel};
use strongroom::store::{MetadataStore, PostgresBackend, PostgresOptions, PostgresStore, RootKey};
use strongroom::{CreateKeyOptions, Error, KeyId, KeyRing, KeySpec, Principal, Timestamp};

const ROOT: [u8; 32] = [7; 32];
const START: u64 = 1_800_000_000;

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

fn store(url: &str, root: [u8; 32]) -> Arc<PostgresStore> {
    Arc::new(PostgresStore::connect(url, &RootKey::raw(root), PostgresOptions::default()).unwrap())
}

fn ring(url: &str, clock: Arc<ManualClock>) -> (KeyRing, Arc<PostgresStore>) {
    let s = store(url, ROOT);
    let backend = Arc::new(PostgresBackend::open(&s).unwrap());
    let ring = KeyRing::builder()
        .store(s.clone())
        .backend(backend)
        .clock(clock)
        .build();
    (ring, s)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp(START)))
}

fn text(v: &strongroom::keyring::secrets::SecretValue) -> String {
    v.expose_str().unwrap().to_owned()
}

fn db(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

fn new_key(r: &KeyRing) -> KeyId {
    r.client(p("user:owner"))
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
}

#[test]
fn two_instances_share_secrets_and_they_survive_a_reconnect() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let clock = clock();
    let (a, _) = ring(&url, clock.clone());
    let (b, _) = ring(&url, clock.clone());
    let key = new_key(&a);
    let ca = a.client(p("user:owner"));
    let cb = b.client(p("user:owner"));
    let v1 = ca
        .create_secret("/app/prod/db/password", &key, SecretInput::Text("hunter2"))
        .unwrap();
    ca.create_secret("/app/prod/db/user", &key, SecretInput::Text("app"))
        .unwrap();
    ca.create_secret("/app/dev/db/password", &key, SecretInput::Text("dev"))
        .unwrap();
    assert!(matches!(
        cb.create_secret("/app/prod/db/user", &key, SecretInput::Text("x")),
        Err(Error::SecretExists(_))
    ));
    // B sees A's secret and rotates it; A sees B's version.
    let v2 = cb
        .put_secret_value("/app/prod/db/password", SecretInput::Text("correct horse"))
        .unwrap();
    let cur = ca
        .get_secret_value("/app/prod/db/password", &SecretVersion::CURRENT)
        .unwrap();
    assert_eq!(text(&cur), "correct horse");
    let prev = ca
        .get_secret_value(
            "/app/prod/db/password",
            &SecretVersion::Label(StagingLabel::Previous),
        )
        .unwrap();
    assert_eq!(text(&prev), "hunter2");
    // Get by path, across instances.
    let got = cb
        .get_secrets_by_path("/app/prod", ListOptions::default())
        .unwrap();
    let names: Vec<_> = got.items.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["/app/prod/db/password", "/app/prod/db/user"]);
    drop((ca, cb, a, b));
    // A new instance (new connections, empty caches) finds everything.
    let (c, _) = ring(&url, clock);
    let cc = c.client(p("user:owner"));
    let d = cc.describe_secret("/app/prod/db/password").unwrap();
    let ids: Vec<_> = d.versions.iter().map(|v| v.version_id.clone()).collect();
    assert_eq!(ids, [v1, v2]);
    let listed = cc.list_secrets("/app/", ListOptions::default()).unwrap();
    assert_eq!(listed.items.len(), 3);
    // The value is not in the database in plaintext.
    let mut client = db(&url);
    for r in client
        .query("SELECT body FROM strongroom_records", &[])
        .unwrap()
    {
        let body: Vec<u8> = r.get(0);
        assert!(!body.windows(7).any(|w| w == b"hunter2"));
        assert!(!body.windows(13).any(|w| w == b"correct horse"));
    }
}

#[test]
fn concurrent_puts_from_two_instances_never_lose_a_version() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let clock = clock();
    let (a, _) = ring(&url, clock.clone());
    let (b, _) = ring(&url, clock);
    let key = new_key(&a);
    a.client(p("user:owner"))
        .create_secret("shared", &key, SecretInput::Text("v0"))
        .unwrap();
    const PUTS: usize = 4;
    const { assert!(4 * PUTS < strongroom::keyring::secrets::MAX_SECRET_VERSIONS) };
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .enumerate()
            .map(|(t, r)| {
                let c = r.client(p("user:owner"));
                s.spawn(move || {
                    (0..PUTS)
                        .map(|i| {
                            c.put_secret_value("shared", SecretInput::Text(&format!("t{t}-{i}")))
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let d = b.client(p("user:owner")).describe_secret("shared").unwrap();
    assert_eq!(d.versions.len(), 1 + 4 * PUTS);
    for id in &ids {
        assert!(d.versions.iter().any(|v| &v.version_id == id), "{id} lost");
    }
    let count = |l| d.versions.iter().filter(|v| v.labels.contains(&l)).count();
    assert_eq!(count(StagingLabel::Current), 1);
    assert_eq!(count(StagingLabel::Previous), 1);
}

#[test]
fn record_facility_contract() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let s = store(&url, ROOT);
    let other = store(&url, ROOT);
    assert!(s.get_record("k", "a").unwrap().is_none());
    let r1 = s.put_record_if("k", "a", None, b"one").unwrap();
    // A second create of the same name, and a stale revision, conflict and
    // change nothing.
    assert!(matches!(
        other.put_record_if("k", "a", None, b"x"),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        other.put_record_if("k", "a", Some(r1 + 100), b"x"),
        Err(Error::Conflict(_))
    ));
    let r2 = other.put_record_if("k", "a", Some(r1), b"two").unwrap();
    assert!(r2 > r1);
    assert!(matches!(
        s.put_record_if("k", "a", Some(r1), b"lost update"),
        Err(Error::Conflict(_))
    ));
    let got = s.get_record("k", "a").unwrap().unwrap();
    assert_eq!((got.revision, got.bytes.as_slice()), (r2, &b"two"[..]));
    // Kinds are separate namespaces.
    assert!(s.get_record("other", "a").unwrap().is_none());
    // Delete is compare-and-set too; revisions keep growing after it.
    assert!(matches!(
        s.delete_record("k", "a", r1),
        Err(Error::Conflict(_))
    ));
    s.delete_record("k", "a", r2).unwrap();
    assert!(matches!(
        s.delete_record("k", "a", r2),
        Err(Error::Conflict(_))
    ));
    let r3 = s.put_record_if("k", "a", None, b"three").unwrap();
    assert!(r3 > r2);
    // Listing: prefix, byte order, `%` and `_` are plain characters, paging.
    for n in ["p/1", "p/2", "p/%", "p/_x", "p0", "q", "p/10"] {
        s.put_record_if("k", n, None, n.as_bytes()).unwrap();
    }
    let names = |after: Option<&str>, limit| -> Vec<String> {
        s.list_records("k", "p/", after, limit)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect()
    };
    assert_eq!(names(None, 100), ["p/%", "p/1", "p/10", "p/2", "p/_x"]);
    assert_eq!(names(Some("p/1"), 2), ["p/10", "p/2"]);
    assert_eq!(names(Some("a"), 1), ["p/%"]);
    assert!(names(Some("p/_x"), 10).is_empty());
    for r in s.list_records("k", "p/", None, 100).unwrap() {
        assert_eq!(r.bytes, r.name.as_bytes());
    }
    // Bad names are refused before any query.
    assert!(matches!(
        s.get_record("", "a"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        s.put_record_if("k", "a\0b", None, b""),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn tampered_moved_and_rolled_back_records_are_refused() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let s = store(&url, ROOT);
    let mut c = db(&url);
    s.put_record_if("secret", "a", None, b"body a").unwrap();
    s.put_record_if("secret", "b", None, b"body b").unwrap();
    // A changed body.
    c.execute(
        "UPDATE strongroom_records SET body = 'body A' WHERE name = 'a'",
        &[],
    )
    .unwrap();
    let fresh = store(&url, ROOT);
    assert!(matches!(
        fresh.get_record("secret", "a"),
        Err(Error::CorruptStore { .. })
    ));
    // The listing refuses it too, and a write over it is refused (nothing
    // changes).
    assert!(matches!(
        fresh.list_records("secret", "", None, 10),
        Err(Error::CorruptStore { .. })
    ));
    c.execute(
        "UPDATE strongroom_records SET body = 'body a' WHERE name = 'a'",
        &[],
    )
    .unwrap();
    assert_eq!(
        fresh.get_record("secret", "a").unwrap().unwrap().bytes,
        b"body a"
    );
    // A row moved to another name (b's row copied over a).
    c.execute("DELETE FROM strongroom_records WHERE name = 'a'", &[])
        .unwrap();
    c.execute(
        "INSERT INTO strongroom_records (kind, name, rev, body, mac) \
         SELECT kind, 'a', rev, body, mac FROM strongroom_records WHERE name = 'b'",
        &[],
    )
    .unwrap();
    assert!(matches!(
        store(&url, ROOT).get_record("secret", "a"),
        Err(Error::CorruptStore { .. })
    ));
    // Another kind of the same name.
    c.execute(
        "UPDATE strongroom_records SET kind = 'identity' WHERE name = 'b'",
        &[],
    )
    .unwrap();
    assert!(matches!(
        store(&url, ROOT).get_record("identity", "b"),
        Err(Error::CorruptStore { .. })
    ));
    c.execute(
        "UPDATE strongroom_records SET kind = 'secret' WHERE name = 'b'",
        &[],
    )
    .unwrap();
    // A rollback: an instance that read revision N refuses the older row
    // put back afterwards.
    let live = store(&url, ROOT);
    let old = c
        .query_one(
            "SELECT rev, body, mac FROM strongroom_records WHERE name = 'b'",
            &[],
        )
        .unwrap();
    let (old_rev, old_body, old_mac): (i64, Vec<u8>, Vec<u8>) =
        (old.get(0), old.get(1), old.get(2));
    let cur = live.get_record("secret", "b").unwrap().unwrap();
    let newer = live
        .put_record_if("secret", "b", Some(cur.revision), b"body b2")
        .unwrap();
    assert!(live.get_record("secret", "b").unwrap().unwrap().revision == newer);
    c.execute(
        "UPDATE strongroom_records SET rev = $1, body = $2, mac = $3 WHERE name = 'b'",
        &[&old_rev, &old_body, &old_mac],
    )
    .unwrap();
    assert!(matches!(
        live.get_record("secret", "b"),
        Err(Error::CorruptStore { .. })
    ));
    // Another root key reads nothing of this store.
    assert!(matches!(
        PostgresStore::connect(&url, &RootKey::raw([8; 32]), PostgresOptions::default()),
        Err(Error::WrongRootKey)
    ));
}

#[test]
fn root_key_rotation_keeps_secrets_and_deletion_window_works() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let clock = clock();
    let (r, s) = ring(&url, clock.clone());
    let key = new_key(&r);
    let c = r.client(p("user:owner"));
    c.create_secret("keep", &key, SecretInput::Binary(&[0, 1, 2, 255]))
        .unwrap();
    c.create_secret("drop", &key, SecretInput::Text("bye"))
        .unwrap();
    s.rotate_root_key(&RootKey::raw([9; 32])).unwrap();
    drop((c, r, s));
    assert!(matches!(
        PostgresStore::connect(&url, &RootKey::raw(ROOT), PostgresOptions::default()),
        Err(Error::WrongRootKey)
    ));
    let s2 = store(&url, [9; 32]);
    let r2 = KeyRing::builder()
        .store(s2.clone())
        .backend(Arc::new(PostgresBackend::open(&s2).unwrap()))
        .clock(clock.clone())
        .build();
    let c = r2.client(p("user:owner"));
    let v = c.get_secret_value("keep", &SecretVersion::CURRENT).unwrap();
    assert_eq!(v.expose_bytes(), [0, 1, 2, 255]);
    // Deletion with a recovery window, then destruction by maintenance.
    c.delete_secret("drop", 7).unwrap();
    assert!(c.get_secret_value("drop", &SecretVersion::CURRENT).is_err());
    clock.advance_days(7);
    let report = r2.run_maintenance().unwrap();
    assert_eq!(report.secrets_destroyed, vec!["drop".to_owned()]);
    assert!(s2.get_record(SECRET_RECORD_KIND, "drop").unwrap().is_none());
    assert!(s2.get_record(SECRET_RECORD_KIND, "keep").unwrap().is_some());
}
