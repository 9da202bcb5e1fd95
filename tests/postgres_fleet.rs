//! A fleet on one PostgreSQL database: two rings in one process and two OS
//! processes changing the same keys at once, and changes on one instance
//! enforced on another (by notification, by the staleness bound, and by
//! the flush after a lost listener connection). Real server (see
//! `support/postgres.rs`), no mocks. Failures (restart, SIGKILL) are in
//! `postgres_failures.rs`.

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/postgres.rs"]
mod pg;

use fleet::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strongroom::Action;
use strongroom::policy::GrantRequest;
use strongroom::store::{PostgresOptions, RootKey};
use strongroom::{CreateKeyOptions, KeyRing, KeySpec, Principal};

#[test]
fn two_rings_concurrent_rotations_aliases_grants() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (a, b) = (ring(&url), ring(&url));
    let (ca, cb) = (admin(&a), admin(&b));
    let key = ca
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let other = cb
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    ca.create_alias("alias/shared", key.as_str()).unwrap();

    let versions = Arc::new(Mutex::new(Vec::new()));
    let blobs = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for (t, c) in [ca.clone(), ca.clone(), cb.clone(), cb.clone()]
        .into_iter()
        .enumerate()
    {
        let (key, other) = (key.clone(), other.clone());
        let (versions, blobs) = (versions.clone(), blobs.clone());
        threads.push(std::thread::spawn(move || {
            for i in 0..5 {
                let v = retrying(|| c.rotate_key_on_demand(key.as_str()));
                versions.lock().unwrap().push(v);
                let pt = format!("thread {t} round {i}");
                let blob = retrying(|| c.encrypt(key.as_str(), pt.as_bytes(), &ctx()));
                blobs.lock().unwrap().push((blob, pt));
                // Own aliases, and a shared one moved back and forth.
                retrying(|| c.create_alias(&format!("alias/t{t}-{i}"), key.as_str()));
                let to = if i % 2 == 0 { &other } else { &key };
                retrying(|| c.update_alias("alias/shared", to.as_str()));
                // Grants: each thread adds two and revokes one of them.
                let g = |n: usize| {
                    GrantRequest::new(
                        Principal::user(&format!("g{t}-{i}-{n}")).unwrap(),
                        &[Action::Encrypt],
                    )
                };
                let keep = retrying(|| c.create_grant(key.as_str(), g(0)));
                let drop_ = retrying(|| c.create_grant(key.as_str(), g(1)));
                retrying(|| c.revoke_grant(key.as_str(), &drop_.grant_id));
                let _ = keep;
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }

    // Rotations: 20 of them, versions 2..=21, each made exactly once.
    let mut v = versions.lock().unwrap().clone();
    v.sort();
    assert_eq!(v, (2..=21).collect::<Vec<u32>>());
    // No material left by a loser: exactly one row per version.
    let mut conn = db(&url);
    let rows: i64 = conn
        .query_one(
            "SELECT count(*) FROM strongroom_material WHERE key_id = $1",
            &[&key.as_str()],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 21);
    // Every ciphertext opens on both instances.
    for (blob, pt) in blobs.lock().unwrap().iter() {
        for c in [&ca, &cb] {
            let out = retrying(|| c.decrypt(blob, &ctx()));
            assert_eq!(out.plaintext.expose_secret(), pt.as_bytes());
        }
    }
    for c in [&ca, &cb] {
        eventually("both see version 21", || {
            c.describe_key(key.as_str()).unwrap().primary_version == 21
        });
        // Every alias made is there.
        for t in 0..4 {
            for i in 0..5 {
                assert_eq!(
                    c.describe_key(format!("alias/t{t}-{i}").as_str())
                        .unwrap()
                        .key_id,
                    key
                );
            }
        }
    }
    // The shared alias points at one key, the same on both.
    eventually("both agree on alias/shared", || {
        ca.describe_key("alias/shared").unwrap().key_id
            == cb.describe_key("alias/shared").unwrap().key_id
    });
    // Grants: exactly the kept ones, none of the revoked.
    let grantees: BTreeSet<String> = conn
        .query(
            "SELECT grantee FROM strongroom_grants WHERE key_id = $1",
            &[&key.as_str()],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: BTreeSet<String> = (0..4)
        .flat_map(|t| (0..5).map(move |i| format!("user:g{t}-{i}-0")))
        .collect();
    assert_eq!(grantees, want);
}

/// Entry point of the child processes of the two-process test.
#[test]
#[ignore = "child process entry point, run by the two-process test"]
fn child_process_entry() {
    let mode = std::env::var("STRONGROOM_PG_CHILD_MODE").unwrap();
    let url = std::env::var("STRONGROOM_PG_CHILD_URL").unwrap();
    let arg = std::env::var("STRONGROOM_PG_CHILD_ARG").unwrap();
    let r = ring(&url);
    let c = admin(&r);
    let mut out = std::io::stdout().lock();
    // libtest printed "test child_process_entry ... " without a newline.
    writeln!(out).unwrap();
    match mode.as_str() {
        "rotate" => {
            // arg: "<key> <other key>".
            let (key, other) = arg.split_once(' ').unwrap();
            let me = std::process::id();
            for i in 0..10 {
                let v = retrying(|| c.rotate_key_on_demand(key));
                let pt = format!("pid {me} round {i}");
                let blob = retrying(|| c.encrypt(key, pt.as_bytes(), &ctx()));
                writeln!(out, "V {v} {} {}", hex(&blob), hex(pt.as_bytes())).unwrap();
                let alias = format!("alias/p{me}-{i}");
                retrying(|| c.create_alias(&alias, key));
                writeln!(out, "A {alias}").unwrap();
                let to = if i % 2 == 0 { other } else { key };
                retrying(|| c.update_alias("alias/shared", to));
                let g = |n: u32| {
                    GrantRequest::new(
                        Principal::user(&format!("p{me}-{i}-{n}")).unwrap(),
                        &[Action::Encrypt],
                    )
                };
                retrying(|| c.create_grant(key, g(0)));
                let gone = retrying(|| c.create_grant(key, g(1)));
                retrying(|| c.revoke_grant(key, &gone.grant_id));
                writeln!(out, "G user:p{me}-{i}-0").unwrap();
            }
            writeln!(out, "DONE").unwrap();
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn two_processes_rotate_alias_and_grant_at_once() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let r = ring(&url);
    let c = admin(&r);
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let other = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    c.create_alias("alias/shared", key.as_str()).unwrap();
    let arg = format!("{key} {other}");
    let kids: Vec<_> = (0..2)
        .map(|_| child("rotate", &url, &arg).spawn().unwrap())
        .collect();
    let mut versions = Vec::new();
    let mut blobs = Vec::new();
    let mut aliases = Vec::new();
    let mut grantees = BTreeSet::new();
    for kid in kids {
        let out = kid.wait_with_output().unwrap();
        assert!(out.status.success(), "a child failed");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.lines().any(|l| l == "DONE"), "child did not finish");
        for l in text.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            match f[0] {
                "V" => {
                    versions.push(f[1].parse::<u32>().unwrap());
                    blobs.push((unhex(f[2]), unhex(f[3])));
                }
                "A" => aliases.push(f[1].to_owned()),
                "G" => {
                    grantees.insert(f[1].to_owned());
                }
                _ => {}
            }
        }
    }
    // Consecutive versions, each made by exactly one process.
    versions.sort();
    assert_eq!(versions, (2..=21).collect::<Vec<u32>>());
    for (blob, pt) in &blobs {
        assert_eq!(
            retrying(|| c.decrypt(blob, &ctx()))
                .plaintext
                .expose_secret(),
            &pt[..]
        );
    }
    // Every alias either process made; the shared one on one of the keys.
    assert_eq!(aliases.len(), 20);
    for a in &aliases {
        assert_eq!(c.describe_key(a.as_str()).unwrap().key_id, key);
    }
    let shared = c.describe_key("alias/shared").unwrap().key_id;
    assert!(shared == key || shared == other);
    // Exactly the grants kept, none of those revoked.
    let in_db: BTreeSet<String> = db(&url)
        .query(
            "SELECT grantee FROM strongroom_grants WHERE key_id = $1",
            &[&key.as_str()],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(in_db.len(), 20);
    assert_eq!(in_db, grantees);
}

#[test]
fn revocation_disable_and_deletion_on_a_enforced_on_b() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (a, b) = (ring(&url), ring(&url));
    let ca = admin(&a);
    let bob = Principal::user("bob").unwrap();
    let bob_b = b.client(bob.clone());
    let cb = admin(&b);
    let k1 = ca
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let k2 = ca
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let k3 = ca
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let grant = ca
        .create_grant(
            k1.as_str(),
            GrantRequest::new(bob.clone(), &[Action::Encrypt]),
        )
        .unwrap();
    // B uses everything first, so its cache is warm.
    eventually("B sees bob's grant", || {
        bob_b.encrypt(k1.as_str(), b"x", &ctx()).is_ok()
    });
    for k in [&k2, &k3] {
        cb.encrypt(k.as_str(), b"x", &ctx()).unwrap();
    }
    ca.revoke_grant(k1.as_str(), &grant.grant_id).unwrap();
    ca.disable_key(k2.as_str()).unwrap();
    ca.schedule_key_deletion(
        k3.as_str(),
        strongroom::keyring::ScheduleDeletionOptions::default().pending_window_days(7),
    )
    .unwrap();
    eventually("revocation reaches B", || {
        refused(bob_b.encrypt(k1.as_str(), b"x", &ctx()))
    });
    eventually("disable reaches B", || {
        refused(cb.encrypt(k2.as_str(), b"x", &ctx()))
    });
    eventually("scheduled deletion reaches B", || {
        refused(cb.encrypt(k3.as_str(), b"x", &ctx()))
    });
    // A change that sends no notification at all (written behind the
    // store's back) still reaches B: by the staleness bound alone. Rows
    // are authenticated, so the change is a row strongroom wrote: A
    // disables k4, the disabled row is kept and the enabled one put back
    // before B first reads k4; then the disabled row goes back silently.
    let k4 = ca
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let mut conn = db(&url);
    let row = |conn: &mut postgres::Client| -> (String, i64, Vec<u8>) {
        let r = conn
            .query_one(
                "SELECT record, rev, mac FROM strongroom_keys WHERE key_id = $1",
                &[&k4.as_str()],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let put = |conn: &mut postgres::Client, r: &(String, i64, Vec<u8>)| {
        conn.execute(
            "UPDATE strongroom_keys SET record = $2, rev = $3, mac = $4 WHERE key_id = $1",
            &[&k4.as_str(), &r.0, &r.1, &r.2],
        )
        .unwrap()
    };
    let enabled = row(&mut conn);
    ca.disable_key(k4.as_str()).unwrap();
    let disabled = row(&mut conn);
    put(&mut conn, &enabled);
    cb.encrypt(k4.as_str(), b"x", &ctx()).unwrap();
    let n = put(&mut conn, &disabled);
    assert_eq!(n, 1);
    eventually("an unannounced disable reaches B", || {
        refused(cb.encrypt(k4.as_str(), b"x", &ctx()))
    });
}

#[test]
fn a_lost_listener_connection_flushes_the_cache() {
    if !pg::available() {
        return;
    }
    use strongroom::key::KeyState;
    use strongroom::store::{PostgresBackend, PostgresStore};
    let url = pg::fresh_db();
    let a = ring(&url);
    // Made before B listens: no notification of it can reach B later.
    let key = admin(&a)
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    // Rows are authenticated, so a change "behind the store's back" must be
    // a row strongroom wrote: disable the key (a row with the newer
    // revision), keep that row, and put the enabled one back, all before B
    // starts. Later the kept row goes back without a notification.
    let mut conn = db(&url);
    let row = |conn: &mut postgres::Client| -> (String, i64, Vec<u8>) {
        let r = conn
            .query_one(
                "SELECT record, rev, mac FROM strongroom_keys WHERE key_id = $1",
                &[&key.as_str()],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let put = |conn: &mut postgres::Client, r: &(String, i64, Vec<u8>)| {
        conn.execute(
            "UPDATE strongroom_keys SET record = $2, rev = $3, mac = $4 WHERE key_id = $1",
            &[&key.as_str(), &r.0, &r.1, &r.2],
        )
        .unwrap();
    };
    let enabled = row(&mut conn);
    admin(&a).disable_key(key.as_str()).unwrap();
    let disabled = row(&mut conn);
    put(&mut conn, &enabled);
    // B trusts its cache for an hour: only notifications and the flush on
    // reconnect can refresh it. Reads only, so B sends no notification.
    let opts = PostgresOptions::default().max_staleness(Duration::from_secs(3600));
    let store = Arc::new(PostgresStore::connect(&url, &RootKey::raw([7; 32]), opts).unwrap());
    let backend = Arc::new(PostgresBackend::open(&store).unwrap());
    let b = KeyRing::builder()
        .store(store.clone())
        .backend(backend)
        .build();
    let cb = admin(&b);
    assert!(store.wait_listening(Duration::from_secs(60)));
    assert_eq!(
        cb.describe_key(key.as_str()).unwrap().state,
        KeyState::Enabled
    );
    // The disable put back behind the store's back: no notification.
    put(&mut conn, &disabled);
    // B's cache still serves the old record (within its bound)...
    assert_eq!(
        cb.describe_key(key.as_str()).unwrap().state,
        KeyState::Enabled
    );
    // ...until its listener loses its connection: the reconnect flushes.
    let before = store.listener_reconnects();
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'strongroom-listener' AND datname = current_database()",
        &[],
    )
    .unwrap();
    eventually("the listener reconnects", || {
        store.listener_reconnects() > before && store.is_listening()
    });
    assert_eq!(
        cb.describe_key(key.as_str()).unwrap().state,
        KeyState::Disabled
    );
    assert!(refused(cb.encrypt(key.as_str(), b"x", &ctx())));
}

#[test]
fn many_threads_first_use_a_cold_key_at_once() {
    // Every new ring over the database starts with no material in memory:
    // 8 threads released together all miss the same version and load it.
    // No call may fail (a loader once evicted another's copy between its
    // insert and its check: "material ... already exists", or a user saw
    // the key missing), and each ring loads it into memory once.
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let old_key = admin(&ring(&url))
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    for round in 0..40 {
        let r = ring(&url);
        let c = admin(&r);
        // Odd rounds: a key made by this ring just now, whose own creation
        // notification may still be on its way (loads racing with it are
        // not remembered, so the next miss loads again).
        let key = if round % 2 == 1 {
            c.create_key(KeySpec::default(), CreateKeyOptions::new())
                .unwrap()
        } else {
            old_key.clone()
        };
        let key = &key;
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (c, barrier) = (&c, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let pt = format!("round {round} thread {t}");
                    let blob = c.encrypt(key.as_str(), pt.as_bytes(), &ctx()).unwrap();
                    let m = c.seal(key.as_str(), pt.as_bytes(), &ctx()).unwrap();
                    assert_eq!(
                        c.decrypt(&blob, &ctx()).unwrap().plaintext.expose_secret(),
                        pt.as_bytes()
                    );
                    assert_eq!(
                        c.open(&m, &ctx()).unwrap().plaintext.expose_secret(),
                        pt.as_bytes()
                    );
                });
            }
        });
    }
}
