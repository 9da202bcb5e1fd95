//! A backend written outside the crate, run through the conformance suite.
//!
//! `CountingBackend` holds no material itself: it delegates every operation
//! to another backend (here the in-memory one) and counts the calls, the
//! shape of a metering, caching or routing layer in front of a real
//! custodian. It passes the same suite as the built-in backends
//! (`strongroom::testing`, feature `testing`):
//!
//! ```text
//! cargo run --example custom_backend --features testing
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use strongroom::backend::{KeyBackend, MaterialId, MemoryBackend, SigningBackend};
use strongroom::clock::ManualClock;
use strongroom::store::MetadataStore;
use strongroom::testing::{self, Factory};
use strongroom::{KeyRing, KeySpec, Result, SecretBytes};

/// Delegates to `inner`, counting calls per operation.
#[derive(Debug)]
struct CountingBackend {
    inner: Arc<dyn KeyBackend>,
    calls: Arc<Counts>,
}

/// Calls per operation, shared by every backend the factory makes.
#[derive(Debug, Default)]
struct Counts(Mutex<BTreeMap<&'static str, AtomicU64>>);

impl Counts {
    fn hit(&self, op: &'static str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl KeyBackend for CountingBackend {
    fn name(&self) -> &str {
        "counting"
    }

    fn supports(&self, spec: KeySpec) -> bool {
        self.inner.supports(spec)
    }

    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        self.calls.hit("generate");
        self.inner.generate(id, spec)
    }

    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.calls.hit("encrypt");
        self.inner.encrypt(id, aad, plaintext)
    }

    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        self.calls.hit("decrypt");
        self.inner.decrypt(id, aad, payload)
    }

    fn destroy(&self, id: &MaterialId) -> Result<()> {
        self.calls.hit("destroy");
        self.inner.destroy(id)
    }

    fn contains(&self, id: &MaterialId) -> Result<bool> {
        self.calls.hit("contains");
        self.inner.contains(id)
    }

    // Capabilities: this backend offers signing only where its inner
    // backend does, counting the calls too.
    fn signing(&self) -> Option<&dyn SigningBackend> {
        self.inner.signing().map(|_| self as &dyn SigningBackend)
    }
}

impl SigningBackend for CountingBackend {
    fn sign(&self, id: &MaterialId, data: &[u8]) -> Result<Vec<u8>> {
        self.calls.hit("sign");
        self.signer(id)?.sign(id, data)
    }

    fn public_key(&self, id: &MaterialId) -> Result<Vec<u8>> {
        self.calls.hit("public_key");
        self.signer(id)?.public_key(id)
    }
}

impl CountingBackend {
    fn signer(&self, id: &MaterialId) -> Result<&dyn SigningBackend> {
        self.inner
            .signing()
            .ok_or_else(|| strongroom::Error::Unsupported(format!("cannot sign with {id}")))
    }
}

fn counts() -> Arc<Counts> {
    static COUNTS: OnceLock<Arc<Counts>> = OnceLock::new();
    COUNTS.get_or_init(Default::default).clone()
}

/// The suite's factory: a ring over the given store and clock, with a
/// counting backend in front of a fresh memory backend.
fn make(store: Arc<dyn MetadataStore>, clock: Arc<ManualClock>) -> (KeyRing, Arc<dyn KeyBackend>) {
    let backend: Arc<dyn KeyBackend> = Arc::new(CountingBackend {
        inner: Arc::new(MemoryBackend::new()),
        calls: counts(),
    });
    let ring = KeyRing::builder()
        .backend(backend.clone())
        .store(store)
        .clock(clock)
        .build();
    (ring, backend)
}

/// One check of the suite, by name.
type Check = (&'static str, fn(Factory));

fn main() {
    let suite: &[Check] = &[
        ("encrypt_decrypt", testing::encrypt_decrypt),
        ("tampering_is_opaque", testing::tampering_is_opaque),
        ("data_keys", testing::data_keys),
        ("seal_open", testing::seal_open),
        ("re_encrypt_and_rotation", testing::re_encrypt_and_rotation),
        ("destroy", testing::destroy),
        ("threads", testing::threads),
        ("sign_verify", testing::sign_verify),
    ];
    for (name, check) in suite {
        // Each check panics (and so fails this program) if the backend
        // does not conform.
        check(make);
        println!("conformance {name}: ok");
    }
    println!("calls through the counting backend:");
    for (op, n) in counts().0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("  {op:<11} {}", n.load(Ordering::Relaxed));
    }
}
