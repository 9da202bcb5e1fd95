//! Read snapshots (per-thread copies of key records, aliases and identity
//! policies) never serve a value older than a change the reading thread
//! already knows of: a change made on one thread applies to the next
//! operation of every other thread, however hot its copies are.
//!
//! Each step: a worker thread makes many operations (its copies are
//! promoted to thread-private ones), then waits; the main thread changes
//! something and tells the worker, whose very next operation must see it.

use std::sync::mpsc::{Receiver, Sender, channel};
use strongroom::keyring::PutKeyPolicyOptions;
use strongroom::policy::{IdentityPolicy, Policy};
use strongroom::{
    Client, CreateKeyOptions, EncryptionContext, ErrorKind, KeyRing, KeySpec, Principal,
};

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

/// What the worker reports for one step: the outcome of its next encrypt
/// through `target`, as the key the blob names or the error kind.
type Outcome = Result<String, ErrorKind>;

fn encrypt_outcome(c: &Client, target: &str, ctx: &EncryptionContext) -> Outcome {
    match c.encrypt(target, b"x", ctx) {
        Ok(blob) => {
            // The blob names its key; the admin-free way to read it back is
            // to decrypt (the worker may).
            Ok(c.decrypt(&blob, ctx)
                .map(|d| d.key_id.to_string())
                .unwrap_or_else(|e| format!("undecryptable: {:?}", e.kind())))
        }
        Err(e) => Err(e.kind()),
    }
}

/// The worker: for every target it receives, warms its copies with 64
/// operations, reports ready, waits for "go", and reports its next
/// operation's outcome.
fn worker(
    c: Client,
    ctx: EncryptionContext,
    targets: Receiver<String>,
    go: Receiver<()>,
    ready: Sender<()>,
    out: Sender<Outcome>,
) {
    for target in targets {
        for _ in 0..64 {
            let _ = encrypt_outcome(&c, &target, &ctx);
        }
        ready.send(()).unwrap();
        go.recv().unwrap();
        out.send(encrypt_outcome(&c, &target, &ctx)).unwrap();
    }
}

const ALLOW_WORKER: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"},
  {"Sid":"Worker","Effect":"Allow","Principal":"service:worker","Action":["strongroom:Encrypt","strongroom:Decrypt"]}]}"#;
const ADMIN_ONLY: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"}]}"#;
const DENY_ALL: &str =
    r#"{"Statement":[{"Sid":"No","Effect":"Deny","Action":"strongroom:*","Resource":"*"}]}"#;

#[test]
fn changes_apply_to_the_next_operation_of_a_hot_thread() {
    let ring = KeyRing::builder().ring_admins([p("role:admin")]).build();
    let admin = ring.client(p("role:admin"));
    let ctx = EncryptionContext::new().with("t", "snap");
    let k1 = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let k2 = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let allow = Policy::from_json(ALLOW_WORKER).unwrap();
    for k in [&k1, &k2] {
        admin
            .put_key_policy(k.as_str(), &allow, PutKeyPolicyOptions::default())
            .unwrap();
    }
    admin.create_alias("alias/snap", k1.as_str()).unwrap();

    let (targets_tx, targets) = channel();
    let (go_tx, go) = channel();
    let (ready, ready_rx) = channel();
    let (out, out_rx) = channel();
    let w = ring.client(p("service:worker"));
    let wctx = ctx.clone();
    let handle = std::thread::spawn(move || worker(w, wctx, targets, go, ready, out));
    // One step: the worker warms up on `target`, the main thread runs
    // `change`, the worker's next operation is returned.
    let step = |target: &str, change: &dyn Fn()| -> Outcome {
        targets_tx.send(target.to_owned()).unwrap();
        ready_rx.recv().unwrap();
        change();
        go_tx.send(()).unwrap();
        out_rx.recv().unwrap()
    };

    // Baseline: nothing changes, the hot thread keeps working.
    assert_eq!(step(&k1, &|| {}), Ok(k1.clone()));
    // Disable: refused at once; enable: works at once.
    assert_eq!(
        step(&k1, &|| admin.disable_key(k1.as_str()).unwrap()),
        Err(ErrorKind::KeyState)
    );
    assert_eq!(
        step(&k1, &|| admin.enable_key(k1.as_str()).unwrap()),
        Ok(k1.clone())
    );
    // An alias moved to another key: the next call through it uses that key.
    assert_eq!(step("alias/snap", &|| {}), Ok(k1.clone()));
    assert_eq!(
        step("alias/snap", &|| admin
            .update_alias("alias/snap", k2.as_str())
            .unwrap()),
        Ok(k2.clone())
    );
    // A deleted alias no longer resolves.
    assert_eq!(
        step("alias/snap", &|| admin.delete_alias("alias/snap").unwrap()),
        Err(ErrorKind::NotFound)
    );
    // A key policy that drops the worker: denied at once.
    assert_eq!(
        step(&k2, &|| admin
            .put_key_policy(
                k2.as_str(),
                &Policy::from_json(ADMIN_ONLY).unwrap(),
                PutKeyPolicyOptions::default(),
            )
            .unwrap()),
        Err(ErrorKind::Denied)
    );
    // An identity policy denying everything to the worker: denied at once,
    // although the key policy allows; deleting it: allowed at once.
    assert_eq!(
        step(&k1, &|| admin
            .put_identity_policy(
                &p("service:worker"),
                "deny",
                &IdentityPolicy::from_json(DENY_ALL).unwrap(),
            )
            .unwrap()),
        Err(ErrorKind::Denied)
    );
    assert_eq!(
        step(&k1, &|| admin
            .delete_identity_policy(&p("service:worker"), "deny")
            .unwrap()),
        Ok(k1.clone())
    );
    // Scheduled deletion: the key refuses at once.
    assert_eq!(
        step(&k1, &|| {
            admin
                .schedule_key_deletion(k1.as_str(), Default::default())
                .unwrap();
        }),
        Err(ErrorKind::KeyState)
    );
    drop(targets_tx);
    handle.join().unwrap();
}

#[test]
fn many_threads_agree_after_a_change() {
    // Four hot threads; after the disable every one of them is refused on
    // its next call, and after the enable every one succeeds.
    let ring = KeyRing::in_memory();
    let app = ring.client(p("service:app"));
    let ctx = EncryptionContext::new().with("t", "many");
    let key = app
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let barrier = std::sync::Barrier::new(5);
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for _ in 0..4 {
            let (app, key, ctx, barrier) = (&app, &key, &ctx, &barrier);
            handles.push(s.spawn(move || {
                for _ in 0..200 {
                    app.encrypt(key.as_str(), b"x", ctx).unwrap();
                }
                barrier.wait(); // warm
                barrier.wait(); // disabled
                let disabled = app.encrypt(key.as_str(), b"x", ctx).map(drop);
                barrier.wait(); // checked
                barrier.wait(); // enabled
                let enabled = app.encrypt(key.as_str(), b"x", ctx).map(drop);
                (
                    disabled.map_err(|e| e.kind()),
                    enabled.map_err(|e| e.kind()),
                )
            }));
        }
        barrier.wait();
        app.disable_key(key.as_str()).unwrap();
        barrier.wait();
        barrier.wait();
        app.enable_key(key.as_str()).unwrap();
        barrier.wait();
        for h in handles {
            assert_eq!(h.join().unwrap(), (Err(ErrorKind::KeyState), Ok(())));
        }
    });
}
