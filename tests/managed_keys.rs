//! Managed keys: created on first use for one service, rotated every year,
//! under a fixed policy nobody can change.

use std::sync::Arc;
use strongroom::clock::ManualClock;
use strongroom::key::KeyManager;
use strongroom::keyring::{
    EnableRotationOptions, ListOptions, PutKeyPolicyOptions, ScheduleDeletionOptions, VersionFloors,
};
use strongroom::policy::{GrantRequest, Policy};
use strongroom::store::{KeystoreOptions, OpenMode, RootKey};
use strongroom::{Action, EncryptionContext, Error, KeyRing, Principal, Timestamp};

const T0: u64 = 1_800_000_000;

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

fn ring() -> (KeyRing, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Timestamp(T0)));
    let ring = KeyRing::builder()
        .clock(clock.clone())
        .ring_admins([p("user:admin")])
        .build();
    (ring, clock)
}

fn denied<T: std::fmt::Debug>(r: strongroom::Result<T>) {
    match r {
        Err(Error::AccessDenied { .. }) => {}
        other => panic!("expected AccessDenied, got {other:?}"),
    }
}

#[test]
fn a_service_gets_one_key_under_its_reserved_alias() {
    let (ring, _) = ring();
    let svc = ring.client(p("service:queue"));
    let id = svc.managed_key("queue").unwrap();
    assert_eq!(svc.managed_key("queue").unwrap(), id, "same key every time");
    let d = svc.describe_key("alias/strongroom/queue").unwrap();
    assert_eq!(d.key_id, id);
    assert_eq!(d.manager, KeyManager::Managed);
    assert_eq!(d.created_by, p("service:queue"));
    let rot = d.rotation.expect("managed keys rotate");
    assert_eq!(rot.period_days, 365);
    // Listing shows who manages each key.
    let admin = ring.client(p("user:admin"));
    admin
        .create_key(Default::default(), Default::default())
        .unwrap();
    let page = admin.list_keys(ListOptions::default()).unwrap();
    let managed: Vec<_> = page
        .items
        .iter()
        .filter(|e| e.manager == KeyManager::Managed)
        .collect();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].key_id, id);
    assert_eq!(page.items.len(), 2);
}

#[test]
fn only_the_service_itself_may_ask_for_its_key() {
    let (ring, _) = ring();
    denied(ring.client(p("user:admin")).managed_key("queue"));
    denied(ring.client(p("service:cache")).managed_key("queue"));
    denied(ring.client(p("role:queue")).managed_key("queue"));
    // Nothing was created by the refusals.
    let admin = ring.client(p("user:admin"));
    assert!(
        admin
            .list_keys(ListOptions::default())
            .unwrap()
            .items
            .is_empty()
    );
    // Bad service names are clear errors.
    let bad = ring.client(p("service:queue")).managed_key("");
    assert!(bad.is_err());
}

#[test]
fn the_service_uses_it_everyone_sees_it_nobody_controls_it() {
    let (ring, _) = ring();
    let svc = ring.client(p("service:queue"));
    let id = svc.managed_key("queue").unwrap();
    let ctx = EncryptionContext::new().with("q", "orders");
    let msg = svc.seal(&id, b"job", &ctx).unwrap();
    assert_eq!(
        svc.open(&msg, &ctx).unwrap().plaintext.expose_secret(),
        b"job"
    );
    let blob = svc.encrypt(&id, b"small", &ctx).unwrap();

    let admin = ring.client(p("user:admin"));
    // Everyone may look.
    assert_eq!(admin.describe_key(&id).unwrap().key_id, id);
    admin.get_key_policy(&id).unwrap();
    admin.get_key_rotation_status(&id).unwrap();
    // Nobody else may use it...
    denied(admin.encrypt(&id, b"x", &ctx));
    denied(admin.decrypt(&blob, &ctx));
    denied(admin.open(&msg, &ctx));
    // ...and nobody, the ring admin or the service, may control it.
    for c in [&admin, &svc] {
        denied(c.disable_key(&id));
        denied(c.enable_key(&id));
        denied(c.schedule_key_deletion(&id, ScheduleDeletionOptions::default()));
        denied(c.disable_key_rotation(&id));
        denied(c.enable_key_rotation(&id, EnableRotationOptions::default()));
        denied(c.rotate_key_on_demand(&id));
        denied(c.update_key_version_floors(&id, VersionFloors::default().min_decrypt(1)));
        denied(c.tag_resource(&id, &[("k", "v")]));
        denied(c.put_key_policy(
            &id,
            &Policy::default_for(&p("user:admin")),
            PutKeyPolicyOptions::default().bypass_policy_lockout_safety_check(),
        ));
        denied(c.delete_alias("alias/strongroom/queue"));
    }
    // The reserved alias cannot be taken or pointed elsewhere.
    let other = admin
        .create_key(Default::default(), Default::default())
        .unwrap();
    assert!(matches!(
        admin.create_alias("alias/strongroom/cache", &other),
        Err(Error::InvalidArgument(_))
    ));
    assert!(
        admin
            .update_alias("alias/strongroom/queue", &other)
            .is_err()
    );
    assert_eq!(
        svc.describe_key("alias/strongroom/queue").unwrap().key_id,
        id
    );
    // The key still works after all those refusals.
    assert!(svc.decrypt(&blob, &ctx).is_ok());
}

#[test]
fn the_service_may_grant_use_to_a_helper() {
    let (ring, _) = ring();
    let svc = ring.client(p("service:queue"));
    let id = svc.managed_key("queue").unwrap();
    let ctx = EncryptionContext::new();
    let blob = svc.encrypt(&id, b"for the worker", &ctx).unwrap();
    let worker = ring.client(p("service:worker"));
    denied(worker.decrypt(&blob, &ctx));
    let g = svc
        .create_grant(
            &id,
            GrantRequest::new(p("service:worker"), &[Action::Decrypt]),
        )
        .unwrap();
    assert!(worker.decrypt(&blob, &ctx).is_ok());
    // A grant never lets anyone control the key.
    denied(worker.disable_key(&id));
    // The admin cannot grant on it.
    denied(
        ring.client(p("user:admin"))
            .create_grant(&id, GrantRequest::new(p("user:admin"), &[Action::Decrypt])),
    );
    svc.revoke_grant(&id, &g.grant_id).unwrap();
    denied(worker.decrypt(&blob, &ctx));
}

#[test]
fn it_rotates_every_year_and_old_ciphertexts_still_open() {
    let (ring, clock) = ring();
    let svc = ring.client(p("service:queue"));
    let id = svc.managed_key("queue").unwrap();
    let ctx = EncryptionContext::new();
    let old = svc.encrypt(&id, b"year one", &ctx).unwrap();
    clock.set(Timestamp(T0 + 366 * Timestamp::DAY));
    let new = svc.encrypt(&id, b"year two", &ctx).unwrap();
    let d = svc.describe_key(&id).unwrap();
    assert_eq!(d.primary_version, 2, "rotated automatically on use");
    assert_eq!(svc.decrypt(&old, &ctx).unwrap().key_version, 1);
    assert_eq!(svc.decrypt(&new, &ctx).unwrap().key_version, 2);
}

#[test]
fn concurrent_first_use_creates_exactly_one_key() {
    let (ring, _) = ring();
    let ids: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    ring.client(p("service:queue"))
                        .managed_key("queue")
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let keys = ring
        .client(p("user:admin"))
        .list_keys(ListOptions::default())
        .unwrap();
    assert_eq!(keys.items.len(), 1);
}

/// Two rings on one file keystore stand for two processes: each ring has
/// its own cache and they meet only in the store's files and lock.
#[test]
fn two_rings_on_one_keystore_create_exactly_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = || RootKey::raw([7; 32]);
    // A generous lock bound: the keystore lock is not fair (a waiter
    // polls), and eight threads on a loaded machine with slow fsyncs could
    // keep one waiting past the default 10 s.
    let open = || {
        KeyRing::builder()
            .file_keystore(
                dir.path(),
                &root(),
                KeystoreOptions::default()
                    .mode(OpenMode::OpenOrCreate)
                    .lock_timeout(std::time::Duration::from_secs(120)),
            )
            .unwrap()
            .build()
    };
    let (a, b) = (open(), open());
    let ids: Vec<_> = std::thread::scope(|s| {
        let ha: Vec<_> = (0..4)
            .map(|_| s.spawn(|| a.client(p("service:queue")).managed_key("queue").unwrap()))
            .collect();
        let hb: Vec<_> = (0..4)
            .map(|_| s.spawn(|| b.client(p("service:queue")).managed_key("queue").unwrap()))
            .collect();
        ha.into_iter()
            .chain(hb)
            .map(|h| h.join().unwrap())
            .collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    drop((a, b));
    let ring = open();
    let svc = ring.client(p("service:queue"));
    assert_eq!(svc.managed_key("queue").unwrap(), ids[0]);
    // Exactly one key (the losers' material was destroyed, not stored).
    let all = svc.list_aliases(Default::default());
    assert!(all.is_ok());
    let admin_view = KeyRing::builder()
        .file_keystore(dir.path(), &root(), KeystoreOptions::default())
        .unwrap()
        .open_ring_policy()
        .build();
    let keys = admin_view
        .client(p("user:anyone"))
        .list_keys(ListOptions::default())
        .unwrap();
    assert_eq!(keys.items.len(), 1);
    let ctx = EncryptionContext::new();
    let blob = svc.encrypt(&ids[0], b"x", &ctx).unwrap();
    assert!(svc.decrypt(&blob, &ctx).is_ok());
}

fn keystore_ring(dir: &std::path::Path) -> KeyRing {
    KeyRing::builder()
        .file_keystore(
            dir,
            &RootKey::raw([7; 32]),
            KeystoreOptions::default()
                .mode(OpenMode::OpenOrCreate)
                .lock_timeout(std::time::Duration::from_secs(120)),
        )
        .unwrap()
        .build()
}

/// Two real processes, each with four threads, ask for the same managed key
/// on one file keystore at once: one key exists afterwards, and every
/// thread of both processes got its id.
#[test]
fn two_processes_create_exactly_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let children: Vec<_> = (0..2)
        .map(|i| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "managed_key_child_entry",
                    "--ignored",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env("STRONGROOM_MANAGED_CHILD_DIR", dir.path())
                .env("STRONGROOM_MANAGED_CHILD_GO", &go)
                .env(
                    "STRONGROOM_MANAGED_CHILD_OUT",
                    dir.path().join(format!("ids-{i}")),
                )
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Both start together once the flag file exists.
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(&go, b"go").unwrap();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let mut ids = Vec::new();
    for i in 0..2 {
        let text = std::fs::read_to_string(dir.path().join(format!("ids-{i}"))).unwrap();
        ids.extend(text.lines().map(str::to_owned));
    }
    assert_eq!(ids.len(), 8);
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let ring = keystore_ring(dir.path());
    assert_eq!(
        ring.client(p("service:queue"))
            .managed_key("queue")
            .unwrap()
            .to_string(),
        ids[0]
    );
    let keys = KeyRing::builder()
        .file_keystore(
            dir.path(),
            &RootKey::raw([7; 32]),
            KeystoreOptions::default(),
        )
        .unwrap()
        .open_ring_policy()
        .build()
        .client(p("user:anyone"))
        .list_keys(ListOptions::default())
        .unwrap();
    assert_eq!(keys.items.len(), 1);
}

/// The processes of `two_processes_create_exactly_one_key`.
#[test]
#[ignore = "child process entry point, run by two_processes_create_exactly_one_key"]
fn managed_key_child_entry() {
    let dir = std::env::var("STRONGROOM_MANAGED_CHILD_DIR").unwrap();
    let go = std::env::var("STRONGROOM_MANAGED_CHILD_GO").unwrap();
    let out = std::env::var("STRONGROOM_MANAGED_CHILD_OUT").unwrap();
    let ring = keystore_ring(std::path::Path::new(&dir));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::path::Path::new(&go).exists() {
        assert!(std::time::Instant::now() < deadline, "never told to go");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let ids: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    ring.client(p("service:queue"))
                        .managed_key("queue")
                        .unwrap()
                        .to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    std::fs::write(out, ids.join("\n")).unwrap();
}
