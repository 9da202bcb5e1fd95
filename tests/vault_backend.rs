//! The Vault/OpenBao Transit backend against a real OpenBao server
//! (`tests/support/remote.rs`): the conformance suite, then failures: the
//! server stopped mid-run, a wrong token, tampered Transit ciphertexts.
#![cfg(all(feature = "vault", feature = "testing"))]

#[path = "support/remote.rs"]
mod remote;

use std::sync::Arc;
use std::time::{Duration, Instant};
use strongroom::backend::{KeyBackend, MaterialId, RetryPolicy, VaultConfig, VaultTransitBackend};
use strongroom::clock::ManualClock;
use strongroom::store::{MemoryStore, MetadataStore};
use strongroom::{
    CreateKeyOptions, EncryptionContext, Error, KeyId, KeyRing, KeySpec, Principal, SecretBytes,
};

fn quick() -> RetryPolicy {
    RetryPolicy::new()
        .max_attempts(3)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .attempt_timeout(Duration::from_secs(5))
}

fn config(addr: &str, token: &str) -> VaultConfig {
    VaultConfig::new(addr, SecretBytes::from_slice(token.as_bytes())).retry(quick())
}

fn shared() -> VaultTransitBackend {
    let v = remote::vault().expect("checked by available()");
    VaultTransitBackend::connect(&config(&v.addr, &v.token)).unwrap()
}

fn available() -> bool {
    remote::vault().is_some()
}

fn make(store: Arc<dyn MetadataStore>, clock: Arc<ManualClock>) -> (KeyRing, Arc<dyn KeyBackend>) {
    let backend: Arc<dyn KeyBackend> = Arc::new(shared());
    let ring = KeyRing::builder()
        .backend(backend.clone())
        .store(store)
        .clock(clock)
        .build();
    (ring, backend)
}

// Transit holds both signing specs the suite uses (ECDSA P-256, Ed25519),
// so nothing of the suite is skipped.
strongroom::conformance_suite!(make, persistent, when available);

fn material(name: &str) -> MaterialId {
    MaterialId::new(KeyId::parse(&remote::unique(name)).unwrap(), 1)
}

#[test]
fn tampered_transit_ciphertext_is_the_opaque_error() {
    if !available() {
        return;
    }
    let b = shared();
    let id = material("tamper");
    b.generate(&id, KeySpec::default()).unwrap();
    let payload = b.encrypt(&id, b"header+context", b"a data key").unwrap();
    assert_eq!(
        b.decrypt(&id, b"header+context", &payload)
            .unwrap()
            .expose_secret(),
        b"a data key"
    );
    // Every byte position: the Transit version, nonce, ciphertext and tag.
    for i in [0, 3, 4, 10, payload.len() / 2, payload.len() - 1] {
        let mut bad = payload.clone();
        bad[i] ^= 0x01;
        let e = b.decrypt(&id, b"header+context", &bad).unwrap_err();
        assert!(matches!(e, Error::DecryptionFailed), "byte {i}: {e}");
    }
    // Other aad (the encryption context is bound by Transit itself).
    assert!(matches!(
        b.decrypt(&id, b"other", &payload),
        Err(Error::DecryptionFailed)
    ));
    assert!(matches!(
        b.decrypt(&id, b"", &payload),
        Err(Error::DecryptionFailed)
    ));
    // Truncated and empty payloads.
    for bad in [
        &payload[..payload.len() - 1],
        &payload[..5],
        &payload[..4],
        &[][..],
    ] {
        assert!(matches!(
            b.decrypt(&id, b"header+context", bad),
            Err(Error::DecryptionFailed)
        ));
    }
    // Another key's ciphertext.
    let other = material("tamper-other");
    b.generate(&other, KeySpec::default()).unwrap();
    assert!(matches!(
        b.decrypt(&other, b"header+context", &payload),
        Err(Error::DecryptionFailed)
    ));
    b.destroy(&id).unwrap();
    b.destroy(&other).unwrap();
    assert!(matches!(
        b.decrypt(&id, b"header+context", &payload),
        Err(Error::KeyNotFound(_))
    ));
}

#[test]
fn a_wrong_token_is_a_configuration_error_that_hides_it() {
    if !available() {
        return;
    }
    let v = remote::vault().unwrap();
    let token = "hvs.not-a-real-token-7f3a9c";
    let e = VaultTransitBackend::connect(&config(&v.addr, token)).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    assert!(!e.is_retryable());
    assert!(!e.to_string().contains(token), "{e}");
    assert!(!format!("{e:?}").contains(token));
    let cfg = config(&v.addr, token);
    assert!(!format!("{cfg:?}").contains(token));
    let b = shared();
    assert!(!format!("{b:?}").contains(&v.token));
    // A mount that is not there is a configuration error too, not "key not found".
    let b =
        VaultTransitBackend::connect(&config(&v.addr, &v.token).mount("no-such-transit")).unwrap();
    let e = b
        .generate(&material("mount"), KeySpec::default())
        .unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
}

#[test]
fn bad_configuration_is_refused_before_any_request() {
    for addr in ["127.0.0.1:8200", "ftp://x", "http://", "http://h/v1"] {
        let e = VaultTransitBackend::connect(&config(addr, "t")).unwrap_err();
        assert!(matches!(e, Error::Configuration(_)), "{addr}: {e}");
    }
    let e =
        VaultTransitBackend::connect(&config("http://127.0.0.1:1", "t").mount("a b")).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    let e = VaultTransitBackend::connect(&config("http://127.0.0.1:1", "")).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    let e = VaultTransitBackend::connect(
        &config("http://127.0.0.1:1", "t").retry(RetryPolicy::new().max_attempts(0)),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
}

#[test]
fn nobody_listening_is_retryable_after_bounded_retries() {
    // Port 1: privileged and outside the ephemeral range, so no server of
    // a test running alongside can be listening there (a port from
    // `free_port` could be taken by one between the check and the call).
    let start = Instant::now();
    let e =
        VaultTransitBackend::connect(&config("http://127.0.0.1:1", "secret-token-1")).unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e}");
    assert!(e.is_retryable());
    assert!(e.to_string().contains("3 attempt"), "{e}");
    assert!(!e.to_string().contains("secret-token-1"));
    // Bounded: 3 attempts of at most 5 s each, plus short backoffs (a
    // refused connection normally fails at once; the margin is for load).
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "bounded: {:?}",
        start.elapsed()
    );
}

#[test]
fn server_stopped_mid_run_then_restarted() {
    if !available() {
        return;
    }
    let Some(mut server) = remote::PersistentVault::start() else {
        return;
    };
    let backend =
        Arc::new(VaultTransitBackend::connect(&config(&server.addr, &server.token)).unwrap());
    let store: Arc<dyn MetadataStore> = Arc::new(MemoryStore::new());
    let ring = KeyRing::builder()
        .backend(backend.clone())
        .store(store.clone())
        .build();
    let c = ring.client(Principal::service("app").unwrap());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let ctx = EncryptionContext::new().with("tenant", "t1");
    let mut acknowledged = Vec::new();
    for i in 0..5u8 {
        acknowledged.push((i, c.seal(&key, &[i; 100], &ctx).unwrap()));
    }

    server.stop();
    let calls = backend.remote_calls();
    let e = c.seal(&key, b"while down", &ctx).unwrap_err();
    assert!(
        matches!(e, Error::Unavailable(_)) && e.is_retryable(),
        "{e}"
    );
    assert_eq!(
        backend.remote_calls() - calls,
        3,
        "exactly the configured attempts"
    );
    let e = c.open(&acknowledged[0].1, &ctx).unwrap_err();
    assert!(e.is_retryable(), "{e}");
    // A key whose creation failed remotely does not exist locally.
    let keys_before = store.list_keys(None, 1000).unwrap().len();
    assert!(
        c.create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap_err()
            .is_retryable()
    );
    assert_eq!(store.list_keys(None, 1000).unwrap().len(), keys_before);
    let orphan = material("while-down");
    assert!(
        backend
            .generate(&orphan, KeySpec::default())
            .unwrap_err()
            .is_retryable()
    );

    server.restart();
    // Nothing acknowledged is lost; the same backend instance recovers.
    for (i, m) in &acknowledged {
        assert_eq!(
            c.open(m, &ctx).unwrap().plaintext.expose_secret(),
            &[*i; 100][..]
        );
    }
    let m = c.seal(&key, b"after restart", &ctx).unwrap();
    assert_eq!(
        c.open(&m, &ctx).unwrap().plaintext.expose_secret(),
        b"after restart"
    );
    assert!(!backend.contains(&orphan).unwrap());
}

#[test]
fn transit_key_names_never_collide() {
    if !available() {
        return;
    }
    let b = shared();
    let a = MaterialId::new(KeyId::parse("a:b").unwrap(), 1);
    let c = MaterialId::new(KeyId::parse("a_b").unwrap(), 1);
    assert_ne!(b.transit_key_name(&a), b.transit_key_name(&c));
    assert_eq!(b.transit_key_name(&a), "strongroom-a.b.v1");
    // Unsupported specs are refused clearly, before any key is made.
    assert!(!b.supports(KeySpec::HpkeP256));
    let e = b
        .generate(&material("hpke"), KeySpec::HpkeP256)
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    // Generating existing material is an error, not a silent reuse.
    let id = material("twice");
    b.generate(&id, KeySpec::default()).unwrap();
    assert!(matches!(
        b.generate(&id, KeySpec::default()),
        Err(Error::InvalidArgument(_))
    ));
    b.destroy(&id).unwrap();
    b.destroy(&id).unwrap();
    assert!(!b.contains(&id).unwrap());
}
