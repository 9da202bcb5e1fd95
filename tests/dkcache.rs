//! The data-key cache: exact backend call counts (a counting wrapper around
//! the real memory backend), limits on the manual clock, partitions, purges
//! on every change to a key, single flight across threads, and every call
//! still authorized and audited.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use strongroom::audit::MemorySink;
use strongroom::backend::{KeyBackend, MaterialId, MemoryBackend};
use strongroom::clock::ManualClock;
use strongroom::keyring::{DataKeyCacheLimits, RewrapOptions, VersionFloors};
use strongroom::policy::GrantRequest;
use strongroom::{
    Action, Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal,
    Result, SecretBytes, Timestamp,
};

/// The memory backend, counting the wraps and unwraps it performs.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryBackend,
    wraps: AtomicUsize,
    unwraps: AtomicUsize,
}

impl KeyBackend for Counting {
    fn name(&self) -> &str {
        "counting-memory"
    }
    fn supports(&self, spec: KeySpec) -> bool {
        self.inner.supports(spec)
    }
    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        self.inner.generate(id, spec)
    }
    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.wraps.fetch_add(1, Ordering::SeqCst);
        self.inner.encrypt(id, aad, plaintext)
    }
    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt(id, aad, payload)
    }
    fn destroy(&self, id: &MaterialId) -> Result<()> {
        self.inner.destroy(id)
    }
    fn contains(&self, id: &MaterialId) -> Result<bool> {
        self.inner.contains(id)
    }
}

struct Env {
    ring: KeyRing,
    backend: Arc<Counting>,
    clock: Arc<ManualClock>,
    audit: Arc<MemorySink>,
    owner: Client,
    key: String,
}

impl Env {
    fn wraps(&self) -> usize {
        self.backend.wraps.load(Ordering::SeqCst)
    }
    fn unwraps(&self) -> usize {
        self.backend.unwraps.load(Ordering::SeqCst)
    }
}

fn env(limits: Option<DataKeyCacheLimits>) -> Env {
    let backend = Arc::new(Counting::default());
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let audit = Arc::new(MemorySink::default());
    let mut b = KeyRing::builder()
        .backend(backend.clone())
        .clock(clock.clone())
        .audit_sink(audit.clone());
    if let Some(l) = limits {
        b = b.data_key_cache(l);
    }
    let ring = b.build();
    let owner = ring.client(Principal::service("owner").unwrap());
    let key = owner
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    Env {
        ring,
        backend,
        clock,
        audit,
        owner,
        key,
    }
}

fn ctx(v: &str) -> EncryptionContext {
    EncryptionContext::new().with("tenant", v)
}

fn minute() -> DataKeyCacheLimits {
    DataKeyCacheLimits::new(Duration::from_secs(60))
}

#[test]
fn without_a_cache_every_seal_and_open_calls_the_backend() {
    let e = env(None);
    let msgs: Vec<_> = (0..5)
        .map(|_| e.owner.seal(&e.key, b"data", &ctx("a")).unwrap())
        .collect();
    assert_eq!(e.wraps(), 5);
    for m in &msgs {
        e.owner.open(m, &ctx("a")).unwrap();
    }
    assert_eq!(e.unwraps(), 5);
}

#[test]
fn one_wrap_serves_many_messages_and_one_unwrap_many_opens() {
    let e = env(Some(minute()));
    let msgs: Vec<_> = (0..10)
        .map(|i| e.owner.seal(&e.key, &[i as u8; 100], &ctx("a")).unwrap())
        .collect();
    assert_eq!(e.wraps(), 1);
    // Each message still has its own message id, so its own body key.
    for w in msgs.windows(2) {
        assert_ne!(w[0], w[1]);
    }
    for (i, m) in msgs.iter().enumerate() {
        let out = e.owner.open(m, &ctx("a")).unwrap();
        assert_eq!(out.plaintext.expose_secret(), &[i as u8; 100]);
    }
    // They all share one wrapped data key: one unwrap.
    assert_eq!(e.unwraps(), 1);
    // Every call is audited; the events of cached calls say so.
    let events = e.audit.events();
    let seals: Vec<_> = events
        .iter()
        .filter(|ev| ev.action == Action::GenerateDataKey.as_str())
        .collect();
    assert_eq!(seals.len(), 10);
    assert_eq!(seals.iter().filter(|ev| ev.cached).count(), 9);
    assert!(seals.iter().all(|ev| ev.key_version == Some(1)));
    let opens: Vec<_> = events
        .iter()
        .filter(|ev| ev.action == Action::Decrypt.as_str())
        .collect();
    assert_eq!(opens.len(), 10);
    assert_eq!(opens.iter().filter(|ev| ev.cached).count(), 9);
}

#[test]
fn message_and_byte_limits_bound_each_key() {
    let e = env(Some(minute().max_messages(3)));
    for _ in 0..10 {
        e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    }
    assert_eq!(e.wraps(), 4); // 3 + 3 + 3 + 1

    let e = env(Some(minute().max_bytes(250)));
    for _ in 0..10 {
        e.owner.seal(&e.key, &[0u8; 100], &ctx("a")).unwrap();
    }
    assert_eq!(e.wraps(), 5); // two 100-byte messages per key
    // A message over the byte limit gets its own key and is not cached.
    e.owner.seal(&e.key, &[0u8; 251], &ctx("a")).unwrap();
    e.owner.seal(&e.key, &[0u8; 251], &ctx("a")).unwrap();
    assert_eq!(e.wraps(), 7);
}

#[test]
fn entries_expire_at_max_age_on_the_ring_clock() {
    let e = env(Some(minute()));
    e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    e.clock.advance_secs(59);
    let m = e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    assert_eq!(e.wraps(), 1);
    e.clock.advance_secs(1);
    e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    assert_eq!(e.wraps(), 2);
    // The decrypt side too.
    e.owner.open(&m, &ctx("a")).unwrap();
    e.owner.open(&m, &ctx("a")).unwrap();
    assert_eq!(e.unwraps(), 1);
    e.clock.advance_secs(60);
    e.owner.open(&m, &ctx("a")).unwrap();
    assert_eq!(e.unwraps(), 2);
}

#[test]
fn entries_are_partitioned_by_key_and_context() {
    let e = env(Some(minute()));
    let other = e
        .owner
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    for _ in 0..3 {
        e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
        e.owner.seal(&e.key, b"x", &ctx("b")).unwrap();
        e.owner.seal(other.as_str(), b"x", &ctx("a")).unwrap();
    }
    assert_eq!(e.wraps(), 3);
    // A message sealed under context a does not open under b, cache or not.
    let m = e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    e.owner.open(&m, &ctx("a")).unwrap();
    assert!(matches!(
        e.owner.open(&m, &ctx("b")),
        Err(Error::DecryptionFailed)
    ));
}

#[test]
fn rotation_floors_and_state_changes_purge_the_key() {
    let e = env(Some(minute()));
    e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    assert_eq!(e.wraps(), 1);
    // Rotation: the next message uses the new version.
    e.owner.rotate_key_on_demand(e.key.as_str()).unwrap();
    let m = e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    assert_eq!(e.wraps(), 2);
    assert_eq!(e.owner.open(&m, &ctx("a")).unwrap().key_version, 2);
    // Disable: refused although a key is cached; enable: a fresh key.
    e.owner.disable_key(e.key.as_str()).unwrap();
    assert!(matches!(
        e.owner.seal(&e.key, b"x", &ctx("a")),
        Err(Error::InvalidKeyState { .. })
    ));
    assert!(matches!(
        e.owner.open(&m, &ctx("a")),
        Err(Error::InvalidKeyState { .. })
    ));
    e.owner.enable_key(e.key.as_str()).unwrap();
    e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    assert_eq!(e.wraps(), 3);
    // A decrypt floor above a cached unwrapped key's version refuses it.
    let old = m;
    e.owner.open(&old, &ctx("a")).unwrap();
    let unwraps = e.unwraps();
    e.owner.open(&old, &ctx("a")).unwrap();
    assert_eq!(e.unwraps(), unwraps, "served from the cache");
    e.owner.rotate_key_on_demand(e.key.as_str()).unwrap();
    e.owner
        .update_key_version_floors(
            e.key.as_str(),
            VersionFloors::default().min_decrypt(3).min_encrypt(3),
        )
        .unwrap();
    assert!(e.owner.open(&old, &ctx("a")).is_err());
    // Scheduled deletion: refused.
    e.owner
        .schedule_key_deletion(e.key.as_str(), Default::default())
        .unwrap();
    assert!(e.owner.seal(&e.key, b"x", &ctx("a")).is_err());
}

#[test]
fn access_is_decided_on_every_call_and_grant_changes_purge() {
    let e = env(Some(minute()));
    let app = e.ring.client(Principal::service("app").unwrap());
    // The owner warms the cache; app has no rights and is refused.
    let m = e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    e.owner.open(&m, &ctx("a")).unwrap();
    assert!(matches!(
        app.seal(&e.key, b"x", &ctx("a")),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        app.open(&m, &ctx("a")),
        Err(Error::AccessDenied { .. })
    ));
    let wraps = e.wraps();
    // A grant: app may now seal and open; the grant change purged the key.
    let g = e
        .owner
        .create_grant(
            e.key.as_str(),
            GrantRequest::new(
                app.principal().clone(),
                &[Action::GenerateDataKey, Action::Decrypt],
            ),
        )
        .unwrap();
    app.seal(&e.key, b"x", &ctx("a")).unwrap();
    assert_eq!(e.wraps(), wraps + 1);
    app.open(&m, &ctx("a")).unwrap();
    // Revoked: refused again at once, cache or not.
    e.owner.revoke_grant(e.key.as_str(), &g.grant_id).unwrap();
    assert!(matches!(
        app.seal(&e.key, b"x", &ctx("a")),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        app.open(&m, &ctx("a")),
        Err(Error::AccessDenied { .. })
    ));
}

#[test]
fn a_miss_fills_once_for_every_waiting_thread() {
    let e = env(Some(minute()));
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let msgs: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (c, k, b) = (e.owner.clone(), e.key.clone(), barrier.clone());
                s.spawn(move || {
                    b.wait();
                    c.seal(&k, b"same partition", &ctx("a")).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(e.wraps(), 1);
    let barrier = Arc::new(Barrier::new(threads));
    std::thread::scope(|s| {
        for m in &msgs {
            let (c, b) = (e.owner.clone(), barrier.clone());
            s.spawn(move || {
                b.wait();
                c.open(m, &ctx("a")).unwrap();
            });
        }
    });
    assert_eq!(e.unwraps(), 1);
}

#[test]
fn streams_never_use_a_cached_key() {
    let e = env(Some(minute()));
    e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    assert_eq!(e.wraps(), 1);
    for _ in 0..2 {
        let mut out = Vec::new();
        let mut w = e
            .owner
            .seal_writer(&e.key, &ctx("a"), Default::default(), &mut out)
            .unwrap();
        std::io::Write::write_all(&mut w, b"streamed").unwrap();
        w.finish().unwrap();
    }
    assert_eq!(e.wraps(), 3);
}

#[test]
fn tampered_messages_fail_with_a_warm_cache() {
    let e = env(Some(minute()));
    let m = e.owner.seal(&e.key, &[5u8; 3000], &ctx("a")).unwrap();
    e.owner.open(&m, &ctx("a")).unwrap();
    for pos in [m.len() - 1, m.len() - 20, m.len() / 2] {
        let mut bad = m.clone();
        bad[pos] ^= 1;
        assert!(matches!(
            e.owner.open(&bad, &ctx("a")),
            Err(Error::DecryptionFailed)
        ));
    }
}

#[test]
fn the_oldest_partition_is_dropped_beyond_max_entries() {
    let e = env(Some(minute().max_entries(2)));
    for t in ["a", "b", "c"] {
        e.owner.seal(&e.key, b"x", &ctx(t)).unwrap();
    }
    assert_eq!(e.wraps(), 3);
    // "a" was dropped for "c"; "b" and "c" are still cached.
    e.owner.seal(&e.key, b"x", &ctx("c")).unwrap();
    assert_eq!(e.wraps(), 3);
    e.owner.seal(&e.key, b"x", &ctx("a")).unwrap();
    assert_eq!(e.wraps(), 4);
}

#[test]
fn rewrap_unwraps_through_the_cache_and_is_audited_as_cached() {
    let e = env(Some(minute()));
    let msgs: Vec<_> = (0..4)
        .map(|i| e.owner.seal(&e.key, &[i as u8; 50], &ctx("a")).unwrap())
        .collect();
    assert_eq!((e.wraps(), e.unwraps()), (1, 0));
    // Four rewraps of messages sharing one wrapped data key onto the same
    // key (a new wrap each: the destination is never served from cache)
    // unwrap once.
    let rewrapped: Vec<_> = msgs
        .iter()
        .map(|m| {
            e.owner
                .rewrap_message(m, &ctx("a"), e.key.as_str(), RewrapOptions::new())
                .unwrap()
        })
        .collect();
    assert_eq!(e.unwraps(), 1);
    assert_eq!(e.wraps(), 1 + 4);
    let froms: Vec<_> = e
        .audit
        .events()
        .into_iter()
        .filter(|ev| ev.action == Action::ReEncryptFrom.as_str())
        .collect();
    assert_eq!(froms.len(), 4);
    assert_eq!(froms.iter().filter(|ev| ev.cached).count(), 3);
    // The rewrapped messages open (each has its own new wrapped key, so a
    // cold unwrap each) with their plaintext.
    for (i, m) in rewrapped.iter().enumerate() {
        assert_eq!(
            e.owner
                .open(m, &ctx("a"))
                .unwrap()
                .plaintext
                .expose_secret(),
            &[i as u8; 50]
        );
    }
    assert_eq!(e.unwraps(), 1 + 4);
    // A tampered source still fails: the cache does not bypass the header
    // and commitment checks.
    let mut bad = msgs[0].clone();
    let n = bad.len();
    bad[n - 20] ^= 1;
    assert!(
        e.owner
            .rewrap_message(&bad, &ctx("a"), e.key.as_str(), RewrapOptions::new())
            .is_ok(),
        "the body is not read by rewrap (documented); it fails when opened"
    );
    let mut bad_header = msgs[0].clone();
    bad_header[12] ^= 1;
    assert!(
        e.owner
            .rewrap_message(&bad_header, &ctx("a"), e.key.as_str(), RewrapOptions::new())
            .is_err()
    );
}
