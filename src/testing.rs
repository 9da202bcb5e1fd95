//! The backend conformance suite (feature `testing`), written once and run
//! against every backend, here and in other crates: a backend or store
//! written elsewhere instantiates it with [`crate::conformance_suite!`] (as
//! rustls runs its API tests per provider) and passes the same tests as the
//! built-in ones.
//!
//! A [`Factory`] builds a ring over a given metadata store and clock and
//! returns the backend too. Persistent backends also get the restart test:
//! a *new* backend instance over the same store must find every key again.
//!
//! ```ignore
//! fn make(store: Arc<dyn MetadataStore>, clock: Arc<ManualClock>) -> (KeyRing, Arc<dyn KeyBackend>) {
//!     let backend: Arc<dyn KeyBackend> = Arc::new(MyBackend::new());
//!     let ring = KeyRing::builder().backend(backend.clone()).store(store).clock(clock).build();
//!     (ring, backend)
//! }
//! crate::conformance_suite!(make);
//! ```
//!
//! Every function panics (with the failing assertion) when the backend does
//! not conform; they are test helpers, not library calls.

use crate::backend::KeyBackend;
use crate::backend::MaterialId;
use crate::clock::ManualClock;
use crate::keyring::{ScheduleDeletionOptions, SignOptions};
use crate::store::{MemoryStore, MetadataStore};
use crate::{CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal, Timestamp};
use std::sync::Arc;

/// Builds a ring over `store` and `clock` and returns it with its backend.
pub type Factory = fn(Arc<dyn MetadataStore>, Arc<ManualClock>) -> (KeyRing, Arc<dyn KeyBackend>);

/// One suite environment: a ring over a fresh memory store, its backend,
/// a manual clock, a client and one symmetric key.
pub struct Env {
    /// The ring under test.
    pub ring: KeyRing,
    /// Its backend.
    pub backend: Arc<dyn KeyBackend>,
    /// The metadata store the factory was given.
    pub store: Arc<dyn MetadataStore>,
    /// The clock the factory was given.
    pub clock: Arc<ManualClock>,
    /// A client acting as `service:conformance`.
    pub client: crate::Client,
    /// A symmetric key created by that client.
    pub key: String,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Env`] with `make`.
pub fn env(make: Factory) -> Env {
    let store: Arc<dyn MetadataStore> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let (ring, backend) = make(store.clone(), clock.clone());
    let client = ring.client(Principal::service("conformance").unwrap());
    let key = client
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    Env {
        ring,
        backend,
        store,
        clock,
        client,
        key,
    }
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("suite", "conformance")
}

/// Direct encryption round trips of 1, 32 and 4096 bytes.
pub fn encrypt_decrypt(make: Factory) {
    let e = env(make);
    for n in [1usize, 32, 4096] {
        let data = vec![0xabu8; n];
        let blob = e.client.encrypt(&e.key, &data, &ctx()).unwrap();
        assert_eq!(
            e.client
                .decrypt(&blob, &ctx())
                .unwrap()
                .plaintext
                .expose_secret(),
            &data[..]
        );
    }
}

/// A flipped bit, a wrong context and a truncated blob are all the opaque error.
pub fn tampering_is_opaque(make: Factory) {
    let e = env(make);
    let blob = e.client.encrypt(&e.key, b"secret", &ctx()).unwrap();
    let mut bad = blob.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        e.client.decrypt(&bad, &ctx()),
        Err(Error::DecryptionFailed)
    ));
    assert!(matches!(
        e.client.decrypt(&blob, &EncryptionContext::new()),
        Err(Error::DecryptionFailed)
    ));
    let mut bad_nonce = blob.clone();
    bad_nonce[blob.len() - 30] ^= 0x80;
    assert!(matches!(
        e.client.decrypt(&bad_nonce, &ctx()),
        Err(Error::DecryptionFailed)
    ));
    // The backend still works after failures.
    assert!(e.client.decrypt(&blob, &ctx()).is_ok());
}

/// Data keys: generate, decrypt, and without plaintext.
pub fn data_keys(make: Factory) {
    let e = env(make);
    let dk = e.client.generate_data_key(&e.key, &ctx()).unwrap();
    let back = e.client.decrypt_data_key(dk.ciphertext(), &ctx()).unwrap();
    assert_eq!(back.plaintext(), dk.plaintext());
    let ct = e
        .client
        .generate_data_key_without_plaintext(&e.key, &ctx())
        .unwrap();
    assert_eq!(
        e.client
            .decrypt_data_key(&ct, &ctx())
            .unwrap()
            .plaintext()
            .len(),
        32
    );
}

/// Envelope messages seal and open.
pub fn seal_open(make: Factory) {
    let e = env(make);
    for n in [0usize, 1000, 1 << 20] {
        let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let m = e.client.seal(&e.key, &data, &ctx()).unwrap();
        assert_eq!(
            e.client.open(&m, &ctx()).unwrap().plaintext.expose_secret(),
            &data[..]
        );
    }
}

/// Re-encryption to another key, and rotation keeping old versions decryptable.
pub fn re_encrypt_and_rotation(make: Factory) {
    let e = env(make);
    let other = e
        .client
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let blob = e.client.encrypt(&e.key, b"v1", &ctx()).unwrap();
    let msg = e.client.seal(&e.key, b"v1", &ctx()).unwrap();
    assert_eq!(e.client.rotate_key_on_demand(&e.key).unwrap(), 2);
    let blob2 = e.client.encrypt(&e.key, b"v2", &ctx()).unwrap();
    assert_eq!(e.client.decrypt(&blob, &ctx()).unwrap().key_version, 1);
    assert_eq!(e.client.decrypt(&blob2, &ctx()).unwrap().key_version, 2);
    assert_eq!(e.client.open(&msg, &ctx()).unwrap().key_version, 1);
    let moved = e
        .client
        .re_encrypt(&blob, &ctx(), other.as_str(), &ctx())
        .unwrap();
    assert_eq!(e.client.decrypt(&moved, &ctx()).unwrap().key_id, other);
}

/// Scheduled deletion destroys the material in the backend.
pub fn destroy(make: Factory) {
    let e = env(make);
    let blob = e.client.encrypt(&e.key, b"x", &ctx()).unwrap();
    let id = crate::KeyId::parse(&e.key).unwrap();
    assert!(e.backend.contains(&MaterialId::new(id.clone(), 1)).unwrap());
    e.client
        .schedule_key_deletion(
            &e.key,
            ScheduleDeletionOptions::default().pending_window_days(7),
        )
        .unwrap();
    e.clock.advance_days(7);
    assert_eq!(e.ring.run_maintenance().unwrap().deleted.len(), 1);
    assert!(!e.backend.contains(&MaterialId::new(id.clone(), 1)).unwrap());
    assert!(matches!(
        e.client.decrypt(&blob, &ctx()),
        Err(Error::KeyNotFound(_))
    ));
    // The backend's own decrypt has nothing to use either.
    assert!(matches!(
        e.backend
            .decrypt(&MaterialId::new(id, 1), b"", &blob[blob.len() - 34..]),
        Err(Error::KeyNotFound(_))
    ));
}

/// Eight threads encrypting, decrypting, sealing and opening at once.
pub fn threads(make: Factory) {
    let e = env(make);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let c = e.client.clone();
            let k = e.key.clone();
            std::thread::spawn(move || {
                let ctx = EncryptionContext::new().with("thread", t.to_string());
                for i in 0..25u32 {
                    let b = c.encrypt(&k, &i.to_be_bytes(), &ctx).unwrap();
                    assert_eq!(
                        c.decrypt(&b, &ctx).unwrap().plaintext.expose_secret(),
                        i.to_be_bytes()
                    );
                    let m = c.seal(&k, &i.to_be_bytes(), &ctx).unwrap();
                    assert!(c.open(&m, &ctx).is_ok());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Persistent backends: a new backend instance over the same store finds
/// every key (and version) again.
pub fn restart(make: Factory) {
    let e = env(make);
    e.client.rotate_key_on_demand(&e.key).unwrap();
    let blob1 = e.client.encrypt(&e.key, b"before restart", &ctx()).unwrap();
    let msg = e.client.seal(&e.key, b"message", &ctx()).unwrap();
    let store = e.store.clone();
    let clock = e.clock.clone();
    drop(e);
    let (ring2, _backend2) = make(store, clock);
    let c2 = ring2.client(Principal::service("conformance").unwrap());
    assert_eq!(
        c2.decrypt(&blob1, &ctx())
            .unwrap()
            .plaintext
            .expose_secret(),
        b"before restart"
    );
    assert_eq!(
        c2.open(&msg, &ctx()).unwrap().plaintext.expose_secret(),
        b"message"
    );
}

/// Instantiates the conformance suite ([`crate::testing`]) for one backend
/// factory: one `#[test]` per check; add `persistent` for backends whose
/// material survives a restart, and `when check` (a `fn() -> bool`) to run
/// the checks only when an outside service is there (the check itself says
/// it skipped, or fails under CI).
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!($make, when || true);
    };
    ($make:expr, persistent) => {
        $crate::conformance_suite!($make, persistent, when || true);
    };
    ($make:expr, persistent, when $avail:expr) => {
        $crate::conformance_suite!($make, when $avail);
        #[test]
        fn restart() {
            if ($avail)() {
                $crate::testing::restart($make)
            }
        }
    };
    ($make:expr, when $avail:expr) => {
        #[test]
        fn encrypt_decrypt() {
            if ($avail)() {
                $crate::testing::encrypt_decrypt($make)
            }
        }
        #[test]
        fn tampering_is_opaque() {
            if ($avail)() {
                $crate::testing::tampering_is_opaque($make)
            }
        }
        #[test]
        fn data_keys() {
            if ($avail)() {
                $crate::testing::data_keys($make)
            }
        }
        #[test]
        fn seal_open() {
            if ($avail)() {
                $crate::testing::seal_open($make)
            }
        }
        #[test]
        fn re_encrypt_and_rotation() {
            if ($avail)() {
                $crate::testing::re_encrypt_and_rotation($make)
            }
        }
        #[test]
        fn destroy() {
            if ($avail)() {
                $crate::testing::destroy($make)
            }
        }
        #[test]
        fn threads() {
            if ($avail)() {
                $crate::testing::threads($make)
            }
        }
        #[test]
        fn sign_verify() {
            if ($avail)() {
                $crate::testing::sign_verify($make)
            }
        }
    };
}

/// Signing keys, for backends that hold them (memory, file, PKCS#11).
pub fn sign_verify(make: Factory) {
    use crate::verify::{MessageType, PublicKeyVerifier, SignatureFormat};
    let e = env(make);
    for spec in [KeySpec::EccNistP256, KeySpec::Ed25519] {
        let k = e.client.create_key(spec, CreateKeyOptions::new()).unwrap();
        let k = k.as_str();
        let msg = b"conformance signature";
        let sig = e.client.sign(k, msg, SignOptions::default()).unwrap();
        assert!(
            e.client
                .verify(k, msg, &sig, SignOptions::default())
                .unwrap()
        );
        assert!(
            !e.client
                .verify(k, b"other", &sig, SignOptions::default())
                .unwrap()
        );
        let pk = e.client.get_public_key(k).unwrap();
        let v = PublicKeyVerifier::from_spki_der(&pk.der).unwrap();
        assert!(
            v.verify(msg, &sig, MessageType::Raw, SignatureFormat::Der)
                .unwrap()
        );
        // Destroying the key removes the signing material.
        e.client
            .schedule_key_deletion(k, ScheduleDeletionOptions::default().pending_window_days(7))
            .unwrap();
        e.clock.advance_days(7);
        e.ring.run_maintenance().unwrap();
        let id = crate::KeyId::parse(k).unwrap();
        assert!(!e.backend.contains(&MaterialId::new(id, 1)).unwrap());
    }
}
