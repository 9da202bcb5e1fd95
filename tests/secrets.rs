//! The secrets store: versions and labels, paths, rotation, access,
//! audit, deletion, durability, concurrency, limits and tampering.

use std::path::Path;
use std::sync::Arc;
use strongroom::audit::{MemorySink, Outcome};
use strongroom::clock::ManualClock;
use strongroom::keyring::ListOptions;
use strongroom::keyring::secrets::{
    CONTEXT_SECRET, MAX_SECRET_LEN, MAX_SECRET_VERSIONS, SECRET_RECORD_KIND, SecretInput,
    SecretVersion, StagingLabel,
};
use strongroom::policy::{GrantConstraints, GrantRequest};
use strongroom::store::{
    KeystoreOptions, MemoryStore, MetadataStore, OpenMode, RootKey, export_backup, restore_backup,
    rotate_root_key,
};
use strongroom::{
    Action, CreateKeyOptions, EncryptionContext, Error, ErrorKind, KeyId, KeyRing, KeySpec,
    Principal, Timestamp,
};

const START: u64 = 1_800_000_000;

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

struct Env {
    ring: KeyRing,
    clock: Arc<ManualClock>,
    audit: Arc<MemorySink>,
    store: Arc<MemoryStore>,
    key: KeyId,
}

fn env() -> Env {
    let clock = Arc::new(ManualClock::new(Timestamp(START)));
    let audit = Arc::new(MemorySink::new());
    let store = Arc::new(MemoryStore::new());
    let ring = KeyRing::builder()
        .clock(clock.clone())
        .store(store.clone())
        .audit_sink(audit.clone())
        .audit_context_values(true)
        .build();
    let key = ring
        .client(p("user:owner"))
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    Env {
        ring,
        clock,
        audit,
        store,
        key,
    }
}

fn text(v: &strongroom::keyring::secrets::SecretValue) -> &str {
    v.expose_str().unwrap()
}

fn file_ring(dir: &Path, clock: Arc<ManualClock>) -> KeyRing {
    file_ring_with(dir, clock, &RootKey::raw([0x42; 32]))
}

fn file_ring_with(dir: &Path, clock: Arc<ManualClock>, root: &RootKey) -> KeyRing {
    KeyRing::builder()
        .file_keystore(
            dir,
            root,
            KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
        )
        .unwrap()
        .clock(clock)
        .build()
}

#[test]
fn versions_and_labels() {
    let e = env();
    let c = e.ring.client(p("user:owner"));
    let v1 = c
        .create_secret("/app/prod/db/password", &e.key, SecretInput::Text("one"))
        .unwrap();
    assert_eq!(v1.len(), 32);
    let v2 = c
        .put_secret_value("/app/prod/db/password", SecretInput::Text("two"))
        .unwrap();
    let v3 = c
        .put_secret_value("/app/prod/db/password", SecretInput::Text("three"))
        .unwrap();
    assert_ne!(v1, v2);
    let cur = c
        .get_secret_value("/app/prod/db/password", &SecretVersion::CURRENT)
        .unwrap();
    assert_eq!(
        (text(&cur), cur.version_id.as_str()),
        ("three", v3.as_str())
    );
    assert_eq!(cur.labels, vec![StagingLabel::Current]);
    let prev = c
        .get_secret_value(
            "/app/prod/db/password",
            &SecretVersion::Label(StagingLabel::Previous),
        )
        .unwrap();
    assert_eq!(
        (text(&prev), prev.version_id.as_str()),
        ("two", v2.as_str())
    );
    let first = c
        .get_secret_value("/app/prod/db/password", &SecretVersion::Id(v1.clone()))
        .unwrap();
    assert_eq!(text(&first), "one");
    assert!(first.labels.is_empty());
    let e2 = c
        .get_secret_value(
            "/app/prod/db/password",
            &SecretVersion::Label(StagingLabel::Pending),
        )
        .unwrap_err();
    assert!(matches!(e2, Error::SecretNotFound(_)), "{e2}");
    let d = c.describe_secret("/app/prod/db/password").unwrap();
    assert_eq!(d.key_id, e.key);
    let ids: Vec<_> = d.versions.iter().map(|v| v.version_id.clone()).collect();
    assert_eq!(ids, vec![v1, v2, v3]);
    // Binary values stay binary.
    c.create_secret("blob", &e.key, SecretInput::Binary(&[0, 159, 255]))
        .unwrap();
    let b = c.get_secret_value("blob", &SecretVersion::CURRENT).unwrap();
    assert!(b.is_binary());
    assert_eq!(b.expose_bytes(), &[0, 159, 255]);
    assert_eq!(b.expose_str(), None);
    assert!(!format!("{b:?}").contains("159"));
    // The name is taken.
    assert!(matches!(
        c.create_secret("blob", &e.key, SecretInput::Text("x")),
        Err(Error::SecretExists(_))
    ));
    // Only MAX_SECRET_VERSIONS are kept; labelled ones are never dropped.
    for i in 0..MAX_SECRET_VERSIONS + 5 {
        c.put_secret_value("blob", SecretInput::Text(&format!("v{i}")))
            .unwrap();
    }
    let d = c.describe_secret("blob").unwrap();
    assert_eq!(d.versions.len(), MAX_SECRET_VERSIONS);
    let last = c.get_secret_value("blob", &SecretVersion::CURRENT).unwrap();
    assert_eq!(text(&last), format!("v{}", MAX_SECRET_VERSIONS + 4));
}

#[test]
fn get_by_path_and_list_paged() {
    let e = env();
    let c = e.ring.client(p("user:owner"));
    for n in [
        "/app/prod/a",
        "/app/prod/b",
        "/app/prod/db/c",
        "/app/production/x",
        "/app/staging/a",
        "plain",
    ] {
        c.create_secret(n, &e.key, SecretInput::Text(&format!("value of {n}")))
            .unwrap();
    }
    let mut names = Vec::new();
    let mut opts = ListOptions::default().limit(2);
    loop {
        let page = c.get_secrets_by_path("/app/prod", opts.clone()).unwrap();
        for v in &page.items {
            assert_eq!(text(v), format!("value of {}", v.name));
            names.push(v.name.clone());
        }
        match page.next_marker {
            Some(m) => opts = ListOptions::default().limit(2).marker(m),
            None => break,
        }
    }
    assert_eq!(names, ["/app/prod/a", "/app/prod/b", "/app/prod/db/c"]);
    let all = c.get_secrets_by_path("/", ListOptions::default()).unwrap();
    assert_eq!(all.items.len(), 5);
    let listed = c.list_secrets("", ListOptions::default()).unwrap();
    assert_eq!(listed.items.len(), 6);
    assert!(listed.next_marker.is_none());
    assert!(matches!(
        c.get_secrets_by_path("app//x", ListOptions::default()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.list_secrets("", ListOptions::default().limit(0)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn rotation_success_and_failures() {
    let e = env();
    let c = e.ring.client(p("user:owner"));
    let v1 = c
        .create_secret("db", &e.key, SecretInput::Text("pw-1"))
        .unwrap();
    // Success: PENDING -> CURRENT, old CURRENT -> PREVIOUS.
    let v2 = c
        .rotate_secret(
            "db",
            |cur| {
                assert_eq!(cur.expose_str(), Some("pw-1"));
                Ok(b"pw-2".to_vec())
            },
            |new| {
                assert_eq!(new, b"pw-2");
                Ok(())
            },
        )
        .unwrap();
    let cur = c.get_secret_value("db", &SecretVersion::CURRENT).unwrap();
    assert_eq!((text(&cur), cur.version_id.as_str()), ("pw-2", v2.as_str()));
    let prev = c
        .get_secret_value("db", &SecretVersion::Label(StagingLabel::Previous))
        .unwrap();
    assert_eq!(prev.version_id, v1);
    let before = c.describe_secret("db").unwrap();
    // Failed create: nothing stored.
    let err = c
        .rotate_secret(
            "db",
            |_| Err(Error::Unavailable("password service down".into())),
            |_| panic!("test must not run after a failed create"),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)));
    assert_eq!(c.describe_secret("db").unwrap(), before);
    // Failed test: the PENDING version is removed, CURRENT untouched.
    let err = c
        .rotate_secret(
            "db",
            |_| Ok(b"pw-bad".to_vec()),
            |_| Err(Error::InvalidArgument("login failed".into())),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(ref m) if m == "login failed"));
    assert_eq!(c.describe_secret("db").unwrap(), before);
    let cur = c.get_secret_value("db", &SecretVersion::CURRENT).unwrap();
    assert_eq!(text(&cur), "pw-2");
    // A text secret's rotation must produce text, within the size limit.
    assert!(matches!(
        c.rotate_secret("db", |_| Ok(vec![0xff, 0xfe]), |_| Ok(())),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.rotate_secret("db", |_| Ok(vec![b'a'; MAX_SECRET_LEN + 1]), |_| Ok(())),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(c.describe_secret("db").unwrap(), before);
}

#[test]
fn access_denied_then_allowed_by_grant() {
    let e = env();
    let owner = e.ring.client(p("user:owner"));
    let bob = e.ring.client(p("user:bob"));
    owner
        .create_secret("/svc/token", &e.key, SecretInput::Text("t0k3n"))
        .unwrap();
    let denied = bob
        .get_secret_value("/svc/token", &SecretVersion::CURRENT)
        .unwrap_err();
    assert_eq!(denied.kind(), ErrorKind::Denied, "{denied}");
    assert!(matches!(
        bob.put_secret_value("/svc/token", SecretInput::Text("mine")),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        bob.delete_secret("/svc/token", 7),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        bob.get_secrets_by_path("/svc", ListOptions::default()),
        Err(Error::AccessDenied { .. })
    ));
    // A creator may not put a secret under someone else's key.
    assert!(matches!(
        bob.create_secret("/svc/other", &e.key, SecretInput::Text("x")),
        Err(Error::AccessDenied { .. })
    ));
    owner
        .create_grant(
            &e.key,
            GrantRequest::new(p("user:bob"), &[Action::GetSecretValue]),
        )
        .unwrap();
    let v = bob
        .get_secret_value("/svc/token", &SecretVersion::CURRENT)
        .unwrap();
    assert_eq!(text(&v), "t0k3n");
    // The grant is for reading only.
    assert!(matches!(
        bob.put_secret_value("/svc/token", SecretInput::Text("mine")),
        Err(Error::AccessDenied { .. })
    ));
    // A grant limited to one secret by the context.
    owner
        .create_secret("/svc/other", &e.key, SecretInput::Text("other"))
        .unwrap();
    let carol = e.ring.client(p("user:carol"));
    owner
        .create_grant(
            &e.key,
            GrantRequest::new(p("user:carol"), &[Action::GetSecretValue]).constraints(
                GrantConstraints::context_equals(
                    EncryptionContext::new().with(CONTEXT_SECRET, "/svc/other"),
                ),
            ),
        )
        .unwrap();
    let v = carol
        .get_secret_value("/svc/other", &SecretVersion::CURRENT)
        .unwrap();
    assert_eq!(text(&v), "other");
    assert!(matches!(
        carol.get_secret_value("/svc/token", &SecretVersion::CURRENT),
        Err(Error::AccessDenied { .. })
    ));
    // Deletion is not grantable.
    assert!(
        owner
            .create_grant(
                &e.key,
                GrantRequest::new(p("user:bob"), &[Action::DeleteSecret])
            )
            .is_err()
    );
}

#[test]
fn every_read_is_audited_without_the_value() {
    let e = env();
    let c = e.ring.client(p("user:owner"));
    let bob = e.ring.client(p("user:bob"));
    c.create_secret("/audit/me", &e.key, SecretInput::Text("hunter2-value"))
        .unwrap();
    let n0 = e.audit.events().len();
    c.get_secret_value("/audit/me", &SecretVersion::CURRENT)
        .unwrap();
    let _ = bob.get_secret_value("/audit/me", &SecretVersion::CURRENT);
    let _ = c.get_secret_value("/audit/missing", &SecretVersion::CURRENT);
    let events = e.audit.events();
    let new = &events[n0..];
    assert_eq!(new.len(), 3, "one event per call: {new:?}");
    for ev in new {
        assert_eq!(ev.action, "strongroom:GetSecretValue");
        let json = serde_json::to_string(ev).unwrap();
        assert!(!json.contains("hunter2"), "value leaked: {json}");
    }
    assert_eq!(new[0].outcome, Outcome::Allowed);
    assert_eq!(new[0].key_id.as_deref(), Some(e.key.as_str()));
    assert!(
        new[0]
            .context_values
            .as_ref()
            .is_some_and(|v| v.iter().any(|x| x == "/audit/me"))
    );
    assert!(matches!(new[1].outcome, Outcome::Denied { .. }));
    assert!(matches!(new[2].outcome, Outcome::Failed { .. }));
    // By path: one ListSecrets event and one GetSecretValue per secret.
    let n1 = e.audit.events().len();
    c.get_secrets_by_path("/audit", ListOptions::default())
        .unwrap();
    let actions: Vec<_> = e.audit.events()[n1..]
        .iter()
        .map(|e| e.action.clone())
        .collect();
    assert_eq!(
        actions,
        ["strongroom:ListSecrets", "strongroom:GetSecretValue"]
    );
    // No seal/open decision underneath: create and put are one event each.
    let n2 = e.audit.events().len();
    c.put_secret_value("/audit/me", SecretInput::Text("another-hunter2"))
        .unwrap();
    let evs = e.audit.events();
    assert_eq!(evs.len(), n2 + 1);
    assert_eq!(evs[n2].action, "strongroom:PutSecretValue");
}

#[test]
fn deletion_window_restore_and_destruction() {
    let e = env();
    let c = e.ring.client(p("user:owner"));
    c.create_secret("a", &e.key, SecretInput::Text("va"))
        .unwrap();
    c.create_secret("b", &e.key, SecretInput::Text("vb"))
        .unwrap();
    for bad in [0, 6, 31] {
        assert!(matches!(
            c.delete_secret("a", bad),
            Err(Error::InvalidArgument(_))
        ));
    }
    let date = c.delete_secret("a", 7).unwrap();
    assert_eq!(date, Timestamp(START).plus_days(7));
    assert_eq!(c.describe_secret("a").unwrap().deletion_date, Some(date));
    assert!(matches!(
        c.get_secret_value("a", &SecretVersion::CURRENT),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.put_secret_value("a", SecretInput::Text("x")),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.create_secret("a", &e.key, SecretInput::Text("x")),
        Err(Error::SecretExists(_))
    ));
    assert_eq!(
        c.list_secrets("", ListOptions::default())
            .unwrap()
            .items
            .len(),
        1
    );
    e.clock.advance_days(6);
    c.restore_secret("a").unwrap();
    assert!(matches!(
        c.restore_secret("a"),
        Err(Error::InvalidArgument(_))
    ));
    let v = c.get_secret_value("a", &SecretVersion::CURRENT).unwrap();
    assert_eq!(text(&v), "va");
    // Destroyed on access after the window.
    c.delete_secret("a", 7).unwrap();
    e.clock.advance_days(7);
    assert!(matches!(
        c.describe_secret("a"),
        Err(Error::SecretNotFound(_))
    ));
    assert!(
        e.store
            .get_record(SECRET_RECORD_KIND, "a")
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        c.restore_secret("a"),
        Err(Error::SecretNotFound(_))
    ));
    // The name is free again.
    c.create_secret("a", &e.key, SecretInput::Text("new"))
        .unwrap();
    // Destroyed by maintenance.
    c.delete_secret("b", 30).unwrap();
    e.clock.advance_days(29);
    assert!(
        e.ring
            .run_maintenance()
            .unwrap()
            .secrets_destroyed
            .is_empty()
    );
    e.clock.advance_days(1);
    let report = e.ring.run_maintenance().unwrap();
    assert_eq!(report.secrets_destroyed, vec!["b".to_owned()]);
    assert!(
        e.store
            .get_record(SECRET_RECORD_KIND, "b")
            .unwrap()
            .is_none()
    );
}

#[test]
fn file_keystore_keeps_secrets_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(START)));
    let (key, v2) = {
        let ring = file_ring(dir.path(), clock.clone());
        let c = ring.client(p("user:owner"));
        let key = c
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
        c.create_secret("/app/db/password", &key, SecretInput::Text("s3cr3t-one"))
            .unwrap();
        let v2 = c
            .put_secret_value("/app/db/password", SecretInput::Text("s3cr3t-two"))
            .unwrap();
        c.create_secret("gone", &key, SecretInput::Text("x"))
            .unwrap();
        c.delete_secret("gone", 7).unwrap();
        (key, v2)
    };
    // No plaintext (value or name) on disk; files are 0600.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains("s3cr3t"), "{entry:?} holds a value");
        assert!(!hay.contains("/app/db"), "{entry:?} holds a name");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{entry:?} is {mode:o}");
    }
    let ring = file_ring(dir.path(), clock.clone());
    let c = ring.client(p("user:owner"));
    let v = c
        .get_secret_value("/app/db/password", &SecretVersion::CURRENT)
        .unwrap();
    assert_eq!(
        (text(&v), v.version_id.as_str()),
        ("s3cr3t-two", v2.as_str())
    );
    let d = c.describe_secret("/app/db/password").unwrap();
    assert_eq!((d.key_id, d.versions.len()), (key, 2));
    assert!(c.describe_secret("gone").unwrap().deletion_date.is_some());
    let page = c
        .get_secrets_by_path("/app", ListOptions::default())
        .unwrap();
    assert_eq!(page.items.len(), 1);
    clock.advance_days(7);
    assert_eq!(
        ring.run_maintenance().unwrap().secrets_destroyed,
        vec!["gone".to_owned()]
    );
    drop(ring);
    let ring = file_ring(dir.path(), clock);
    assert!(matches!(
        ring.client(p("user:owner")).describe_secret("gone"),
        Err(Error::SecretNotFound(_))
    ));
}

#[test]
fn file_keystore_root_rotation_and_backup_keep_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(START)));
    let old = RootKey::raw([0x42; 32]);
    let new = RootKey::raw([0x43; 32]);
    let before: Vec<_> = {
        let ring = file_ring(dir.path(), clock.clone());
        let c = ring.client(p("user:owner"));
        let key = c
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
        c.create_secret("/r/a", &key, SecretInput::Text("alpha"))
            .unwrap();
        c.create_secret("/r/b", &key, SecretInput::Binary(b"beta"))
            .unwrap();
        walk(&dir.path().join("records"))
    };
    assert_eq!(before.len(), 2);
    rotate_root_key(
        dir.path(),
        &old,
        &new,
        &KeystoreOptions::default().mode(OpenMode::Existing),
    )
    .unwrap();
    // Renamed under the new names key: none of the old files is left.
    let after = walk(&dir.path().join("records"));
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|f| !before.contains(f)));
    let check = |d: &Path, root: &RootKey| {
        let ring = file_ring_with(d, clock.clone(), root);
        let c = ring.client(p("user:owner"));
        let a = c.get_secret_value("/r/a", &SecretVersion::CURRENT).unwrap();
        assert_eq!(text(&a), "alpha");
        let page = c.get_secrets_by_path("/r", ListOptions::default()).unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[1].expose_bytes(), b"beta");
    };
    check(dir.path(), &new);
    let archive = tempfile::tempdir().unwrap();
    let file = archive.path().join("backup.srkb");
    export_backup(dir.path(), &new, &file).unwrap();
    let restored = archive.path().join("restored");
    restore_backup(&file, &new, &restored).unwrap();
    check(&restored, &new);
}

#[test]
fn two_rings_on_one_keystore_share_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(START)));
    let a = file_ring(dir.path(), clock.clone());
    let b = file_ring(dir.path(), clock);
    let ca = a.client(p("user:owner"));
    let cb = b.client(p("user:owner"));
    let key = ca
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let v1 = ca
        .create_secret("shared", &key, SecretInput::Text("from-a"))
        .unwrap();
    assert!(matches!(
        cb.create_secret("shared", &key, SecretInput::Text("from-b")),
        Err(Error::SecretExists(_))
    ));
    let v2 = cb
        .put_secret_value("shared", SecretInput::Text("from-b"))
        .unwrap();
    let v3 = ca
        .put_secret_value("shared", SecretInput::Text("from-a-again"))
        .unwrap();
    for c in [&ca, &cb] {
        let d = c.describe_secret("shared").unwrap();
        let ids: Vec<_> = d.versions.iter().map(|v| v.version_id.clone()).collect();
        assert_eq!(ids, [v1.clone(), v2.clone(), v3.clone()]);
        let cur = c
            .get_secret_value("shared", &SecretVersion::CURRENT)
            .unwrap();
        assert_eq!(text(&cur), "from-a-again");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn file_keystore_tampered_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(START)));
    let ring = file_ring(dir.path(), clock.clone());
    let c = ring.client(p("user:owner"));
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    c.create_secret("t", &key, SecretInput::Text("value"))
        .unwrap();
    drop((c, ring));
    let recs: Vec<_> = walk(&dir.path().join("records"));
    assert_eq!(recs.len(), 1);
    let mut bytes = std::fs::read(&recs[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&recs[0], &bytes).unwrap();
    let ring = file_ring(dir.path(), clock);
    let err = ring
        .client(p("user:owner"))
        .get_secret_value("t", &SecretVersion::CURRENT)
        .unwrap_err();
    assert!(matches!(err, Error::CorruptStore { .. }), "{err}");
}

#[test]
fn concurrent_puts_never_lose_a_version() {
    for make_file in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp(START)));
        let ring = if make_file {
            file_ring(dir.path(), clock)
        } else {
            KeyRing::builder().clock(clock).build()
        };
        let c = ring.client(p("user:owner"));
        let key = c
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
        let first = c
            .create_secret("shared", &key, SecretInput::Text("v0"))
            .unwrap();
        const THREADS: usize = 4;
        const PUTS: usize = 4;
        let ids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let c = c.clone();
                    s.spawn(move || {
                        (0..PUTS)
                            .map(|i| {
                                c.put_secret_value(
                                    "shared",
                                    SecretInput::Text(&format!("t{t}-{i}")),
                                )
                                .unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        const { assert!(THREADS * PUTS < MAX_SECRET_VERSIONS) };
        let d = c.describe_secret("shared").unwrap();
        assert_eq!(d.versions.len(), 1 + THREADS * PUTS);
        let stored: std::collections::BTreeSet<_> =
            d.versions.iter().map(|v| v.version_id.clone()).collect();
        assert!(stored.contains(&first));
        for id in &ids {
            assert!(stored.contains(id), "version {id} lost");
            let v = c
                .get_secret_value("shared", &SecretVersion::Id(id.clone()))
                .unwrap();
            assert!(text(&v).starts_with('t'));
        }
        // Exactly one CURRENT and one PREVIOUS, whatever the interleaving.
        let count = |l| d.versions.iter().filter(|v| v.labels.contains(&l)).count();
        assert_eq!(count(StagingLabel::Current), 1);
        assert_eq!(count(StagingLabel::Previous), 1);
    }
}

#[test]
fn limits_and_bad_names_are_refused() {
    let e = env();
    let c = e.ring.client(p("user:owner"));
    let max = vec![7u8; MAX_SECRET_LEN];
    c.create_secret("big", &e.key, SecretInput::Binary(&max))
        .unwrap();
    let v = c.get_secret_value("big", &SecretVersion::CURRENT).unwrap();
    assert_eq!(v.expose_bytes(), max.as_slice());
    let over = vec![7u8; MAX_SECRET_LEN + 1];
    let err = c
        .put_secret_value("big", SecretInput::Binary(&over))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("65536")),
        "{err}"
    );
    assert!(matches!(
        c.create_secret("empty", &e.key, SecretInput::Text("")),
        Err(Error::InvalidArgument(_))
    ));
    let long = "a".repeat(513);
    for bad in [
        "",
        "has space",
        "app/prod",
        "/app//x",
        "/app/",
        "/",
        "naïve",
        long.as_str(),
    ] {
        let err = c
            .create_secret(bad, &e.key, SecretInput::Text("x"))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
        let err = c
            .get_secret_value(bad, &SecretVersion::CURRENT)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad:?}: {err}");
    }
    assert!(
        e.store
            .list_records(SECRET_RECORD_KIND, "", None, 100)
            .unwrap()
            .len()
            == 1
    );
}

#[test]
fn tampered_record_in_memory_store_is_refused() {
    let e = env();
    let c = e.ring.client(p("user:owner"));
    c.create_secret("one", &e.key, SecretInput::Text("value-one"))
        .unwrap();
    c.create_secret("two", &e.key, SecretInput::Text("value-two"))
        .unwrap();
    let one = e
        .store
        .get_record(SECRET_RECORD_KIND, "one")
        .unwrap()
        .unwrap();
    let two = e
        .store
        .get_record(SECRET_RECORD_KIND, "two")
        .unwrap()
        .unwrap();
    // Record "one" copied under the name "two": it names another secret.
    e.store
        .put_record_if(SECRET_RECORD_KIND, "two", Some(two.revision), &one.bytes)
        .unwrap();
    let err = c
        .get_secret_value("two", &SecretVersion::CURRENT)
        .unwrap_err();
    assert!(matches!(err, Error::CorruptStore { .. }), "{err}");
    // The name rewritten too: the sealed value is bound to "one".
    let forged = String::from_utf8(one.bytes.clone())
        .unwrap()
        .replace("\"name\":\"one\"", "\"name\":\"two\"");
    let two = e
        .store
        .get_record(SECRET_RECORD_KIND, "two")
        .unwrap()
        .unwrap();
    e.store
        .put_record_if(
            SECRET_RECORD_KIND,
            "two",
            Some(two.revision),
            forged.as_bytes(),
        )
        .unwrap();
    let err = c
        .get_secret_value("two", &SecretVersion::CURRENT)
        .unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed), "{err}");
    // A stale revision loses the compare-and-set.
    assert!(matches!(
        e.store
            .put_record_if(SECRET_RECORD_KIND, "two", Some(two.revision), b"x"),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        e.store.put_record_if(SECRET_RECORD_KIND, "one", None, b"x"),
        Err(Error::Conflict(_))
    ));
    // Garbage is a corrupt store, never a panic.
    let one = e
        .store
        .get_record(SECRET_RECORD_KIND, "one")
        .unwrap()
        .unwrap();
    e.store
        .put_record_if(SECRET_RECORD_KIND, "one", Some(one.revision), b"{not json")
        .unwrap();
    assert!(matches!(
        c.get_secret_value("one", &SecretVersion::CURRENT),
        Err(Error::CorruptStore { .. })
    ));
}

/// The default key: the secrets store's managed key, created on first
/// use, whose fixed policy delegates the secret actions to identity
/// policies; nobody uses or controls the key directly.
#[test]
fn managed_default_key_is_governed_by_identity_policies() {
    use strongroom::keyring::secrets::MANAGED_SECRETS_KEY;
    use strongroom::policy::IdentityPolicy;
    let ring = KeyRing::builder().ring_admins([p("role:admin")]).build();
    let admin = ring.client(p("role:admin"));
    let app = ring.client(p("user:app"));
    let other = ring.client(p("user:other"));
    // Without an identity policy, nobody may create a secret under it
    // (the key is created anyway on first use: it is the store's).
    assert!(matches!(
        app.create_managed_secret("/app/db", SecretInput::Text("pw")),
        Err(Error::AccessDenied { .. })
    ));
    admin
        .put_identity_policy(
            &p("user:app"),
            "app-secrets",
            &IdentityPolicy::from_json(
                r#"{"Statement":[{"Sid":"AppSecrets","Effect":"Allow",
                    "Action":["strongroom:CreateSecret","strongroom:GetSecretValue",
                              "strongroom:PutSecretValue","strongroom:DescribeSecret"],
                    "Resource":"alias/strongroom/secrets",
                    "Condition":{"StringEquals":{"strongroom:EncryptionContext:strongroom:secret":
                        ["/app/db","/app/other"]}}}]}"#,
            )
            .unwrap(),
        )
        .unwrap();
    let v1 = app
        .create_managed_secret("/app/db", SecretInput::Text("pw"))
        .unwrap();
    let got = app
        .get_secret_value("/app/db", &SecretVersion::CURRENT)
        .unwrap();
    assert_eq!((text(&got), got.version_id.as_str()), ("pw", v1.as_str()));
    // The condition on the secret's name holds.
    assert!(matches!(
        app.create_managed_secret("/billing/db", SecretInput::Text("x")),
        Err(Error::AccessDenied { .. })
    ));
    // Another principal, and the admin, have no identity allow.
    for c in [&other, &admin] {
        assert!(matches!(
            c.get_secret_value("/app/db", &SecretVersion::CURRENT),
            Err(Error::AccessDenied { .. })
        ));
    }
    // The key: managed, one per ring, nobody encrypts, decrypts or
    // controls it.
    let key = admin.describe_key(MANAGED_SECRETS_KEY).unwrap();
    assert_eq!(key.manager, strongroom::key::KeyManager::Managed);
    for c in [&app, &admin] {
        assert!(matches!(
            c.encrypt(MANAGED_SECRETS_KEY, b"x", &EncryptionContext::new()),
            Err(Error::AccessDenied { .. })
        ));
        assert!(matches!(
            c.disable_key(MANAGED_SECRETS_KEY),
            Err(Error::AccessDenied { .. })
        ));
    }
    // The same key for every secret; the service name is reserved.
    app.create_secret("/app/other", MANAGED_SECRETS_KEY, SecretInput::Text("y"))
        .unwrap();
    assert_eq!(
        app.describe_secret("/app/other").unwrap().key_id,
        app.describe_secret("/app/db").unwrap().key_id
    );
    assert!(matches!(
        ring.client(p("service:secrets")).managed_key("secrets"),
        Err(Error::InvalidArgument(_))
    ));
}
