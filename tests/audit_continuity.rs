//! The signed audit log across restarts (anchors, log ids, the tail check on
//! open) and what "fail-closed" guarantees about the file.

use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strongroom::audit::{
    Anchor, AuditEvent, AuditSink, FsyncPolicy, JsonlFileSink, JsonlOptions, VerifyError,
    verify_log,
};
use strongroom::{Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal};

const SEED: [u8; 32] = [7u8; 32];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(b).into()
}

fn file1(dir: &Path) -> PathBuf {
    dir.join("audit-000001.jsonl")
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn is_digest(line: &str) -> bool {
    line.contains("\"digest\":")
}

/// A ring over `sink` (fail-closed, the default), a client and a key.
fn client(sink: Arc<JsonlFileSink>) -> (Client, String) {
    let ring = KeyRing::builder().audit_sink(sink).build();
    let c = ring.client(Principal::service("app").unwrap());
    let k = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    (c, k.as_str().to_owned())
}

/// Opens the log in `dir`, records `n` encryptions (plus a key creation),
/// flushes, and returns the sink's anchor and public key.
fn write_some(dir: &Path, opts: JsonlOptions, n: usize) -> (Anchor, [u8; 32]) {
    let sink = Arc::new(JsonlFileSink::open(dir, &SEED, opts).unwrap());
    let (c, k) = client(sink.clone());
    for _ in 0..n {
        c.encrypt(&k, b"x", &EncryptionContext::new()).unwrap();
    }
    c.flush_audit().unwrap();
    (sink.anchor().unwrap(), sink.verifying_key())
}

fn assert_tampered(r: Result<JsonlFileSink, Error>, what: &str) {
    match r {
        Err(Error::Configuration(m)) => {
            assert!(m.starts_with("audit log tampered:"), "{what}: {m}")
        }
        Err(e) => panic!("{what}: wrong error {e:?}"),
        Ok(_) => panic!("{what}: the sink reopened a tampered log"),
    }
}

/// Item 13, the attack: a truncation the anchor catches must still be caught
/// after a restart that continued the log.
#[test]
fn truncated_then_continued_log_fails_the_old_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JsonlOptions::default().digest_every(10);
    let (anchor, pk) = write_some(dir.path(), opts, 40);
    verify_log(dir.path(), &pk, Some(&anchor)).unwrap();
    // Cut back to record 15: header 1, events 2-11, digest 12, events 13-15.
    let f = file1(dir.path());
    let lines = read_lines(&f);
    assert!(anchor.seq() > 15 && is_digest(&lines[11]));
    write_lines(&f, &lines[..15]);
    assert!(matches!(
        verify_log(dir.path(), &pk, Some(&anchor)),
        Err(VerifyError::Truncated { last_seq: 15, .. })
    ));
    // A restart without the anchor cannot tell (the tail is genuine) and
    // continues the log well past the anchor's sequence number...
    let (after, _) = write_some(dir.path(), opts, 40);
    assert!(after.seq() > anchor.seq());
    verify_log(dir.path(), &pk, None).unwrap();
    // ...but the anchor names a record, not a number: the cut is caught.
    assert!(matches!(
        verify_log(dir.path(), &pk, Some(&anchor)),
        Err(VerifyError::AnchorMismatch { seq, .. }) if seq == anchor.seq()
    ));
    // And a sink given the anchor refuses to continue this log.
    let before = std::fs::read(&f).unwrap();
    assert_tampered(
        JsonlFileSink::open(dir.path(), &SEED, opts.anchor(anchor)),
        "continued past the anchor",
    );
    assert_eq!(std::fs::read(&f).unwrap(), before, "the refusal wrote");
}

/// Item 13: a sink given its anchor refuses a log cut back past it, even cut
/// exactly at an earlier digest (where the tail verifies), and a log that
/// was deleted.
#[test]
fn reopen_with_the_anchor_refuses_a_truncated_or_missing_log() {
    let opts = JsonlOptions::default().digest_every(10);
    for keep in [15, 12] {
        let dir = tempfile::tempdir().unwrap();
        let (anchor, _) = write_some(dir.path(), opts, 40);
        let f = file1(dir.path());
        let lines = read_lines(&f);
        write_lines(&f, &lines[..keep]);
        assert_tampered(
            JsonlFileSink::open(dir.path(), &SEED, opts.anchor(anchor)),
            "truncated",
        );
        assert_eq!(read_lines(&f).len(), keep);
    }
    let dir = tempfile::tempdir().unwrap();
    let (anchor, _) = write_some(dir.path(), opts, 5);
    std::fs::remove_file(file1(dir.path())).unwrap();
    assert_tampered(
        JsonlFileSink::open(dir.path(), &SEED, opts.anchor(anchor)),
        "deleted",
    );
    // The genuine log reopens with its anchor, and the reopened sink starts
    // from the verified last digest.
    let dir = tempfile::tempdir().unwrap();
    let (anchor, pk) = write_some(dir.path(), opts, 25);
    let sink = JsonlFileSink::open(dir.path(), &SEED, opts.anchor(anchor)).unwrap();
    assert_eq!(sink.anchor(), Some(anchor));
    drop(sink);
    let (later, _) = write_some(dir.path(), opts.anchor(anchor), 25);
    verify_log(dir.path(), &pk, Some(&anchor)).unwrap();
    verify_log(dir.path(), &pk, Some(&later)).unwrap();
    // An anchor from before the last restart is still checked.
    let sink = JsonlFileSink::open(dir.path(), &SEED, opts.anchor(anchor)).unwrap();
    assert_eq!(sink.anchor(), Some(later));
    drop(sink);
    let mut h = *anchor.hash();
    h[31] ^= 0x80;
    assert_tampered(
        JsonlFileSink::open(dir.path(), &SEED, opts.anchor(Anchor::new(anchor.seq(), h))),
        "old anchor, wrong hash",
    );
}

/// Item 13: on open, the tail back to the last digest is verified with the
/// sink's own key; a tail that does not verify is refused and left as is.
#[test]
fn reopen_refuses_a_tail_that_does_not_verify() {
    let opts = JsonlOptions::default().digest_every(10);
    type Edit = fn(&mut Vec<String>);
    let cases: [(&str, Edit); 4] = [
        ("record after the last digest altered", |l| {
            let n = l.len();
            l[n - 2] = l[n - 2].replace("service:app", "service:evl");
        }),
        (
            "record before the last digest altered and re-chained",
            |l| {
                let n = l.len();
                l[n - 4] = l[n - 4].replace("service:app", "service:evl");
                rechain(l, n - 4);
            },
        ),
        ("header swapped for another log id, re-chained", |l| {
            let other = fresh_header();
            l[0] = other;
            rechain(l, 0);
        }),
        ("last line cut mid-way", |l| {
            let n = l.len();
            let cut = l[n - 1].len() / 2;
            l[n - 1].truncate(cut);
        }),
    ];
    for (what, edit) in cases {
        let dir = tempfile::tempdir().unwrap();
        // 32 events: digests at 12, 23, 34, events 35 and 36, and the
        // digest of the final flush, removed to leave an unsigned tail.
        write_some(dir.path(), opts, 31);
        let f = file1(dir.path());
        let mut lines = read_lines(&f);
        assert!(is_digest(&lines.pop().unwrap()), "{what}");
        assert_eq!(lines.len(), 36);
        assert!(is_digest(&lines[33]), "{what}");
        edit(&mut lines);
        let mut text = lines.join("\n");
        if !what.contains("cut") {
            text.push('\n');
        }
        std::fs::write(&f, &text).unwrap();
        assert_tampered(JsonlFileSink::open(dir.path(), &SEED, opts), what);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), text, "{what}: wrote");
    }
    // Another key: the last digest does not verify with the sink's own key.
    let dir = tempfile::tempdir().unwrap();
    write_some(dir.path(), opts, 12);
    assert_tampered(
        JsonlFileSink::open(dir.path(), &[8u8; 32], opts),
        "another key",
    );
}

/// A header line of a new log (another log id).
fn fresh_header() -> String {
    let d = tempfile::tempdir().unwrap();
    drop(JsonlFileSink::open(d.path(), &SEED, JsonlOptions::default()).unwrap());
    read_lines(&file1(d.path())).remove(0)
}

/// Recomputes every `prev` after line index `from` (what an attacker without
/// the key can do).
fn rechain(lines: &mut [String], from: usize) {
    let mut prev = sha256(lines[from].as_bytes());
    for line in lines.iter_mut().skip(from + 1) {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["prev"] = serde_json::Value::String(hex(&prev));
        *line = serde_json::to_string(&v).unwrap();
        prev = sha256(line.as_bytes());
    }
}

/// Item 13: the anchor is a sequence number and that record's hash, and
/// both are checked.
#[test]
fn anchor_binds_sequence_number_and_record_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (a, pk) = write_some(dir.path(), JsonlOptions::default().digest_every(10), 30);
    let lines = read_lines(&file1(dir.path()));
    let line = &lines[a.seq() as usize - 1];
    assert!(is_digest(line));
    assert_eq!(a.hash(), &sha256(line.as_bytes()));
    let r = verify_log(dir.path(), &pk, Some(&a)).unwrap();
    assert_eq!(r.last_digest, Some(a));
    // Same number, another hash: refused.
    let mut h = *a.hash();
    h[0] ^= 1;
    assert!(matches!(
        verify_log(dir.path(), &pk, Some(&Anchor::new(a.seq(), h))),
        Err(VerifyError::AnchorMismatch { .. })
    ));
    // The right hash at another number: refused.
    assert!(matches!(
        verify_log(dir.path(), &pk, Some(&Anchor::new(a.seq() - 1, *a.hash()))),
        Err(VerifyError::AnchorMismatch { .. })
    ));
    assert!(matches!(
        verify_log(dir.path(), &pk, Some(&Anchor::new(a.seq() + 1, *a.hash()))),
        Err(VerifyError::Truncated { .. })
    ));
    // An earlier record as anchor works too: any record is anchored by its hash.
    let early = Anchor::new(5, sha256(lines[4].as_bytes()));
    verify_log(dir.path(), &pk, Some(&early)).unwrap();
    // Text form.
    let text = a.to_string();
    assert_eq!(text, format!("{}:{}", a.seq(), hex(a.hash())));
    assert_eq!(text.parse::<Anchor>().unwrap(), a);
    let h64 = hex(a.hash());
    for bad in [
        String::new(),
        "12".into(),
        format!("0:{h64}"),
        format!("-1:{h64}"),
        format!("+1:{h64}"),
        format!("12:{}", &h64[1..]),
        format!("12:{}", h64.to_uppercase()),
        format!("12:{h64}0"),
        format!("12:+{}", &h64[1..]),
    ] {
        assert!(
            matches!(bad.parse::<Anchor>(), Err(Error::InvalidArgument(_))),
            "{bad}"
        );
    }
}

fn event(n: u32) -> AuditEvent {
    serde_json::from_value(serde_json::json!({
        "time": 1_700_000_000u64 + n as u64,
        "request_id": format!("{n:032x}"),
        "principal": "service:app",
        "action": "strongroom:Encrypt",
        "key_id": null,
        "key_version": null,
        "outcome": {"result": "Allowed"},
        "context_keys": [],
        "context_values": null,
        "grant_id": null
    }))
    .unwrap()
}

/// The same events, recorded straight into a new log; its lines.
fn log_of_same_events(dir: &Path) -> (JsonlFileSink, Vec<String>) {
    let sink = JsonlFileSink::open(dir, &SEED, JsonlOptions::default().digest_every(4)).unwrap();
    for n in 0..10 {
        sink.record(&event(n)).unwrap();
    }
    sink.flush().unwrap();
    (sink, read_lines(&file1(dir)))
}

/// Item 13: every digest signs the log's random id, so digests cannot be
/// carried into another log signed by the same key.
#[test]
fn every_digest_binds_the_log_id() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, la) = log_of_same_events(da.path());
    let (b, lb) = log_of_same_events(db.path());
    assert_ne!(a.log_id(), b.log_id());
    let pk = a.verifying_key();
    let ra = verify_log(da.path(), &pk, None).unwrap();
    assert_eq!(ra.log_id, Some(a.log_id()));
    assert_eq!(ra.digests, 3);
    assert_eq!(
        la[0],
        format!(
            r#"{{"seq":1,"prev":"{}","log":{{"id":"{}"}}}}"#,
            "0".repeat(64),
            hex(&a.log_id())
        )
    );
    // Each digest verifies against the documented message with its own log
    // id, and not with the other log's.
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap();
    let mut checked = 0;
    for (lines, own, other) in [(&la, a.log_id(), b.log_id()), (&lb, b.log_id(), a.log_id())] {
        for i in 1..lines.len() {
            let v: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
            let Some(sig) = v["digest"]["signature"].as_str() else {
                continue;
            };
            let sig: Vec<u8> = (0..64)
                .map(|j| u8::from_str_radix(&sig[2 * j..2 * j + 2], 16).unwrap())
                .collect();
            let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
            let msg = |id: [u8; 16]| {
                let mut m = b"strongroom audit digest v2\0".to_vec();
                m.extend_from_slice(&id);
                m.extend_from_slice(&v["seq"].as_u64().unwrap().to_be_bytes());
                m.extend_from_slice(&sha256(lines[i - 1].as_bytes()));
                m
            };
            assert!(vk.verify_strict(&msg(own), &sig).is_ok());
            assert!(vk.verify_strict(&msg(other), &sig).is_err());
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
    // Splicing: log B's records and digests under log A's header, re-chained
    // (the events are identical), fail at B's first digest.
    let mut spliced = lb.clone();
    spliced[0] = la[0].clone();
    rechain(&mut spliced, 0);
    drop(b);
    write_lines(&file1(db.path()), &spliced);
    assert!(matches!(
        verify_log(db.path(), &pk, None),
        Err(VerifyError::BadSignature { seq: 6, .. })
    ));
    // A log without a header (the format before log ids) is refused.
    let mut headless = la.clone();
    headless.remove(0);
    for (i, l) in headless.iter_mut().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["seq"] = serde_json::json!(i + 1);
        *l = serde_json::to_string(&v).unwrap();
    }
    headless[0] = {
        let mut v: serde_json::Value = serde_json::from_str(&headless[0]).unwrap();
        v["prev"] = serde_json::Value::String("0".repeat(64));
        serde_json::to_string(&v).unwrap()
    };
    rechain(&mut headless, 0);
    drop(a);
    write_lines(&file1(da.path()), &headless);
    assert!(matches!(
        verify_log(da.path(), &pk, None),
        Err(VerifyError::NoHeader { line: 1, .. })
    ));
    assert_tampered(
        JsonlFileSink::open(da.path(), &SEED, JsonlOptions::default()),
        "headless",
    );
}

fn event_lines(path: &Path) -> Vec<String> {
    read_lines(path)
        .into_iter()
        .filter(|l| l.contains("\"event\":"))
        .collect()
}

/// Item 15: under fail-closed, with fsync batched far beyond the number of
/// calls, each call's event is in the file (read through another handle)
/// when the call returns.
#[test]
fn fail_closed_event_is_in_the_file_when_the_call_returns() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JsonlOptions::default()
        .digest_every(1000)
        .fsync(FsyncPolicy::Batched { max_events: 1000 });
    let sink = Arc::new(JsonlFileSink::open(dir.path(), &SEED, opts).unwrap());
    let (c, k) = client(sink.clone());
    let f = file1(dir.path());
    assert_eq!(event_lines(&f).len(), 1);
    for i in 0..5 {
        c.encrypt(&k, b"x", &EncryptionContext::new()).unwrap();
        let events = event_lines(&f);
        assert_eq!(
            events.len(),
            i + 2,
            "an acknowledged event is not in the file"
        );
        assert!(events[i + 1].contains("strongroom:Encrypt"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop((c, sink));
    verify_log(dir.path(), &ed25519_public(), None).unwrap();
}

fn ed25519_public() -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&SEED)
        .verifying_key()
        .to_bytes()
}

/// Item 15: a failed write is reported by the call whose event it was, not
/// by a later one. The log rolls over onto /dev/full (ENOSPC on write).
#[cfg(target_os = "linux")]
#[test]
fn write_error_is_reported_by_the_call_whose_event_failed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JsonlOptions::default()
        .digest_every(1000)
        .max_file_bytes(1024)
        .fsync(FsyncPolicy::Batched { max_events: 1000 });
    let sink = Arc::new(JsonlFileSink::open(dir.path(), &SEED, opts).unwrap());
    std::os::unix::fs::symlink("/dev/full", dir.path().join("audit-000002.jsonl")).unwrap();
    let (c, k) = client(sink.clone());
    let mut acknowledged = 1; // the key creation
    let mut error = None;
    for _ in 0..50 {
        match c.encrypt(&k, b"x", &EncryptionContext::new()) {
            Ok(_) => acknowledged += 1,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let error = error.expect("no call reported the failed write");
    assert!(matches!(error, Error::AuditUnavailable(_)), "{error:?}");
    // Every acknowledged event is in the first file: the first call after
    // the rollover is the one that failed.
    let f = file1(dir.path());
    assert_eq!(event_lines(&f).len(), acknowledged);
    assert!(is_digest(read_lines(&f).last().unwrap()));
    // The sink stays closed, and so does the ring.
    assert!(matches!(
        c.encrypt(&k, b"x", &EncryptionContext::new()),
        Err(Error::AuditUnavailable(_))
    ));
    assert!(sink.flush().is_err());
}
