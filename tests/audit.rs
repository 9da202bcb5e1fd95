//! Audit trail: one event per operation, tamper evidence, no secrets.

use std::path::Path;
use std::sync::Arc;
use strongroom::audit::{
    Anchor, AuditEvent, AuditSink, FailurePolicy, FsyncPolicy, JsonlFileSink, JsonlOptions,
    MemorySink, Outcome, VerifyError, verify_log,
};
use strongroom::keyring::CreatedGrant;
use strongroom::keyring::GrantSelector;
use strongroom::keyring::ListOptions;
use strongroom::policy::GrantRequest;
use strongroom::{
    Action, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal, SealOptions,
};

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

/// (principal, action, key id, key version, outcome)
type Expected<'a> = (&'a str, &'a str, Option<&'a str>, Option<u32>, &'a str);

#[test]
fn every_operation_emits_exactly_one_event() {
    let sink = Arc::new(MemorySink::new());
    let ring = KeyRing::builder().audit_sink(sink.clone()).build();
    let admin = ring.client(p("role:admin"));
    let bob = ring.client(p("user:bob"));
    let ctx = EncryptionContext::new().with("tenant", "acme");
    let n = std::cell::Cell::new(0usize);
    // Checks the events since the last check.
    let expect = |want: &[Expected<'_>]| {
        let ev = sink.events();
        let new = &ev[n.get()..];
        n.set(ev.len());
        assert_eq!(new.len(), want.len(), "{new:#?}");
        for (e, (who, action, key, version, outcome)) in new.iter().zip(want) {
            assert_eq!(e.principal, *who);
            assert_eq!(e.action, *action);
            assert_eq!(e.key_id.as_deref(), *key);
            assert_eq!(e.key_version, *version, "{action}");
            let o = match &e.outcome {
                Outcome::Allowed => "allowed".to_string(),
                Outcome::Denied { .. } => "denied".to_string(),
                Outcome::Failed { error } => error.clone(),
                _ => "other".to_string(),
            };
            assert_eq!(o, *outcome, "{action}");
            assert_eq!(e.request_id.len(), 32);
        }
    };
    let key = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/a"))
        .unwrap();
    let k = key.as_str();
    let ks = Some(k);
    expect(&[("role:admin", "strongroom:CreateKey", None, None, "allowed")]);
    let blob = admin.encrypt(k, b"secret", &ctx).unwrap();
    expect(&[("role:admin", "strongroom:Encrypt", ks, Some(1), "allowed")]);
    admin.decrypt(&blob, &ctx).unwrap();
    expect(&[("role:admin", "strongroom:Decrypt", ks, Some(1), "allowed")]);
    let e = &sink.events()[n.get() - 1];
    assert_eq!(e.context_keys, vec!["tenant"]);
    assert!(e.context_values.is_none());
    let msg = admin.seal(k, b"data", &ctx).unwrap();
    expect(&[(
        "role:admin",
        "strongroom:GenerateDataKey",
        ks,
        Some(1),
        "allowed",
    )]);
    admin.open(&msg, &ctx).unwrap();
    expect(&[("role:admin", "strongroom:Decrypt", ks, Some(1), "allowed")]);
    admin.rotate_key_on_demand(k).unwrap();
    expect(&[(
        "role:admin",
        "strongroom:RotateKeyOnDemand",
        ks,
        None,
        "allowed",
    )]);
    admin.re_encrypt(&blob, &ctx, k, &ctx).unwrap();
    // Two operations, two events: the destination's is recorded first (nested).
    expect(&[
        (
            "role:admin",
            "strongroom:ReEncryptTo",
            ks,
            Some(2),
            "allowed",
        ),
        (
            "role:admin",
            "strongroom:ReEncryptFrom",
            ks,
            Some(1),
            "allowed",
        ),
    ]);
    admin.generate_data_key_without_plaintext(k, &ctx).unwrap();
    expect(&[(
        "role:admin",
        "strongroom:GenerateDataKeyWithoutPlaintext",
        ks,
        Some(2),
        "allowed",
    )]);
    admin.describe_key("alias/a").unwrap();
    expect(&[("role:admin", "strongroom:DescribeKey", ks, None, "allowed")]);
    admin.list_keys(ListOptions::default().limit(10)).unwrap();
    expect(&[("role:admin", "strongroom:ListKeys", None, None, "allowed")]);
    admin.generate_random(4).unwrap();
    expect(&[(
        "role:admin",
        "strongroom:GenerateRandom",
        None,
        None,
        "allowed",
    )]);
    // Denied.
    assert!(bob.encrypt(k, b"x", &ctx).is_err());
    expect(&[("user:bob", "strongroom:Encrypt", ks, None, "denied")]);
    assert!(bob.decrypt(&blob, &ctx).is_err());
    expect(&[("user:bob", "strongroom:Decrypt", ks, None, "denied")]);
    // Failed: unknown key, malformed ciphertext, argument, wrong context.
    assert!(admin.encrypt("alias/none", b"x", &ctx).is_err());
    expect(&[(
        "role:admin",
        "strongroom:Encrypt",
        None,
        None,
        "AliasNotFound",
    )]);
    assert!(admin.decrypt(b"garbage", &ctx).is_err());
    expect(&[(
        "role:admin",
        "strongroom:Decrypt",
        None,
        None,
        "DecryptionFailed",
    )]);
    assert!(admin.encrypt(k, &[0u8; 5000], &ctx).is_err());
    expect(&[(
        "role:admin",
        "strongroom:Encrypt",
        ks,
        None,
        "InvalidArgument",
    )]);
    assert!(admin.decrypt(&blob, &EncryptionContext::new()).is_err());
    expect(&[(
        "role:admin",
        "strongroom:Decrypt",
        ks,
        Some(1),
        "DecryptionFailed",
    )]);
    // A grant is named in the event it allowed.
    let CreatedGrant { grant_id: gid, .. } = admin
        .create_grant(k, GrantRequest::new(p("user:bob"), &[Action::Encrypt]))
        .unwrap();
    expect(&[("role:admin", "strongroom:CreateGrant", ks, None, "allowed")]);
    bob.encrypt(k, b"x", &ctx).unwrap();
    expect(&[("user:bob", "strongroom:Encrypt", ks, Some(2), "allowed")]);
    assert_eq!(
        sink.events()[n.get() - 1].grant_id.as_deref(),
        Some(gid.as_str())
    );
    bob.retire_grant(k, GrantSelector::Id(gid.clone())).unwrap();
    // The grantee retires its own grant: one event, allowed, naming the grant.
    expect(&[("user:bob", "strongroom:RetireGrant", ks, None, "allowed")]);
    assert_eq!(
        sink.events()[n.get() - 1].grant_id.as_deref(),
        Some(gid.as_str())
    );
    admin.disable_key(k).unwrap();
    expect(&[("role:admin", "strongroom:DisableKey", ks, None, "allowed")]);
    assert!(admin.encrypt(k, b"x", &ctx).is_err());
    expect(&[(
        "role:admin",
        "strongroom:Encrypt",
        ks,
        None,
        "InvalidKeyState",
    )]);
    let usage = admin.get_key_last_usage(k).unwrap();
    expect(&[(
        "role:admin",
        "strongroom:GetKeyLastUsage",
        ks,
        None,
        "allowed",
    )]);
    assert!(usage.iter().all(|u| u.last_used.is_some()));
}

#[test]
fn context_values_only_when_configured() {
    let sink = Arc::new(MemorySink::new());
    let ring = KeyRing::builder()
        .audit_sink(sink.clone())
        .audit_context_values(true)
        .build();
    let c = ring.client(p("user:a"));
    let k = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    c.encrypt(k.as_str(), b"x", &EncryptionContext::new().with("t", "v1"))
        .unwrap();
    assert_eq!(
        sink.events()[1].context_values,
        Some(vec!["v1".to_string()])
    );
}

#[derive(Debug)]
struct Broken;
impl AuditSink for Broken {
    fn record(&self, _: &AuditEvent) -> strongroom::Result<()> {
        Err(Error::Configuration("disk full".into()))
    }
}

#[test]
fn fail_closed_withholds_results_fail_open_returns_them() {
    let ring = KeyRing::builder().audit_sink(Arc::new(Broken)).build();
    let c = ring.client(p("user:a"));
    let e = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap_err();
    assert!(matches!(e, Error::AuditUnavailable(_)), "{e}");
    assert!(matches!(
        c.generate_random(8),
        Err(Error::AuditUnavailable(_))
    ));
    let ring = KeyRing::builder()
        .audit_sink(Arc::new(Broken))
        .audit_failure_policy(FailurePolicy::Open)
        .build();
    let c = ring.client(p("user:a"));
    let k = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    assert!(
        c.encrypt(k.as_str(), b"x", &EncryptionContext::new())
            .is_ok()
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn b64(b: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

fn read_all(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        all.extend(std::fs::read(f).unwrap());
    }
    all
}

/// Makes a signed log with some activity; returns (dir, public key, last digest).
fn make_log(opts: JsonlOptions) -> (tempfile::TempDir, [u8; 32], Option<Anchor>, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(JsonlFileSink::open(dir.path(), &[7u8; 32], opts).unwrap());
    let ring = KeyRing::builder().audit_sink(sink.clone()).build();
    let c = ring.client(p("service:app"));
    let k = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let ctx = EncryptionContext::new().with("purpose", "audit-test");
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for i in 0..20u32 {
        let pt = format!("TOP-SECRET-PLAINTEXT-{i:04}").into_bytes();
        let blob = c.encrypt(k.as_str(), &pt, &ctx).unwrap();
        c.decrypt(&blob, &ctx).unwrap();
        let dk = c.generate_data_key(k.as_str(), &ctx).unwrap();
        secrets.push(dk.plaintext().expose_secret().to_vec());
        let m = c
            .seal_with(k.as_str(), &pt, &ctx, SealOptions::new())
            .unwrap();
        c.open(&m, &ctx).unwrap();
        secrets.push(pt);
    }
    c.flush_audit().unwrap();
    let pk = sink.verifying_key();
    let last = sink.anchor();
    (dir, pk, last, secrets)
}

#[test]
fn log_verifies_and_holds_no_secret() {
    let (dir, pk, last, secrets) = make_log(JsonlOptions::default().digest_every(10));
    let r = verify_log(dir.path(), &pk, last.as_ref()).unwrap();
    assert_eq!(r.records, 101);
    assert!(r.digests >= 8);
    assert_eq!(r.unsigned_tail, 0);
    let all = read_all(dir.path());
    let text = String::from_utf8_lossy(&all);
    for s in &secrets {
        for needle in [hex(s), b64(s), String::from_utf8_lossy(s).to_string()] {
            if needle.len() >= 8 {
                assert!(!text.contains(&needle), "secret found in log");
            }
        }
        assert!(!all.windows(s.len()).any(|w| w == s.as_slice()));
    }
    // A wrong public key fails at the first digest.
    let wrong = ed25519_public(&[8u8; 32]);
    assert!(matches!(
        verify_log(dir.path(), &wrong, None),
        Err(VerifyError::BadSignature { .. })
    ));
}

fn ed25519_public(seed: &[u8; 32]) -> [u8; 32] {
    let d = tempfile::tempdir().unwrap();
    JsonlFileSink::open(d.path(), seed, JsonlOptions::default())
        .unwrap()
        .verifying_key()
}

fn edit(dir: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let file = dir.join("audit-000001.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
}

#[test]
fn tampering_is_detected() {
    let opts = JsonlOptions::default()
        .digest_every(10)
        .fsync(FsyncPolicy::EveryEvent);
    // Altered: a field changed.
    let (dir, pk, last, _) = make_log(opts);
    edit(dir.path(), |l| {
        l[4] = l[4].replace("service:app", "service:evil")
    });
    assert!(matches!(
        verify_log(dir.path(), &pk, last.as_ref()),
        Err(VerifyError::Altered { line: 6, .. })
    ));
    // Altered beyond parsing.
    let (dir, pk, last, _) = make_log(opts);
    edit(dir.path(), |l| l[4].truncate(10));
    assert!(matches!(
        verify_log(dir.path(), &pk, last.as_ref()),
        Err(VerifyError::Malformed { line: 5, .. })
    ));
    // Removed.
    let (dir, pk, last, _) = make_log(opts);
    edit(dir.path(), |l| {
        l.remove(7);
    });
    assert!(matches!(
        verify_log(dir.path(), &pk, last.as_ref()),
        Err(VerifyError::Removed {
            expected: 8,
            found: 9,
            ..
        })
    ));
    // Reordered.
    let (dir, pk, last, _) = make_log(opts);
    edit(dir.path(), |l| l.swap(3, 4));
    assert!(matches!(
        verify_log(dir.path(), &pk, last.as_ref()),
        Err(VerifyError::Removed { .. } | VerifyError::Reordered { .. })
    ));
    // Inserted (a copy of an earlier record).
    let (dir, pk, last, _) = make_log(opts);
    edit(dir.path(), |l| {
        let dup = l[2].clone();
        l.insert(6, dup);
    });
    assert!(matches!(
        verify_log(dir.path(), &pk, last.as_ref()),
        Err(VerifyError::Reordered { .. })
    ));
    // Re-chained forgery: an altered record with every later hash recomputed
    // fails at the next signed digest.
    let (dir, pk, last, _) = make_log(opts);
    edit(dir.path(), |l| {
        l[1] = l[1].replace("service:app", "service:evi");
        let mut prev: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(l[1].as_bytes()).into()
        };
        for line in l.iter_mut().skip(2) {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["prev"] = serde_json::Value::String(hex(&prev));
            *line = serde_json::to_string(&v).unwrap();
            use sha2::Digest;
            prev = sha2::Sha256::digest(line.as_bytes()).into();
        }
    });
    assert!(matches!(
        verify_log(dir.path(), &pk, last.as_ref()),
        Err(VerifyError::BadSignature { .. })
    ));
    // Truncated back past the last digest: caught with the anchor.
    let (dir, pk, last, _) = make_log(opts);
    edit(dir.path(), |l| l.truncate(30));
    assert!(verify_log(dir.path(), &pk, None).is_ok());
    assert!(matches!(
        verify_log(dir.path(), &pk, last.as_ref()),
        Err(VerifyError::Truncated { .. })
    ));
    // Truncated mid-way: an unsigned tail is reported.
    let (dir, pk, _, _) = make_log(opts);
    edit(dir.path(), |l| l.truncate(25));
    let r = verify_log(dir.path(), &pk, None).unwrap();
    assert!(r.unsigned_tail > 0);
}

#[test]
fn rollover_and_reopen_keep_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JsonlOptions::default().digest_every(5).max_file_bytes(2048);
    for round in 0..2 {
        let sink = Arc::new(JsonlFileSink::open(dir.path(), &[9u8; 32], opts).unwrap());
        let ring = KeyRing::builder().audit_sink(sink.clone()).build();
        let c = ring.client(p("user:a"));
        let k = c
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
        for _ in 0..30 {
            c.encrypt(k.as_str(), b"x", &EncryptionContext::new())
                .unwrap();
        }
        c.flush_audit().unwrap();
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(files > 2 * (round + 1), "rollover made {files} files");
        let r = verify_log(dir.path(), &sink.verifying_key(), sink.anchor().as_ref()).unwrap();
        assert_eq!(r.records, 31 * (round as u64 + 1));
    }
}
