//! The backend conformance suite on a real SoftHSM2 token, plus PKCS#11
//! specifics. `.ci/softhsm-setup` creates the token and exports
//! `STRONGROOM_PKCS11_MODULE`, `STRONGROOM_PKCS11_TOKEN`,
//! `STRONGROOM_PKCS11_PIN` (and `SOFTHSM2_CONF`); without them these tests
//! fail, so a CI run can never skip the HSM silently.
#![cfg(feature = "pkcs11")]

mod conformance;

use std::sync::Arc;
use strongroom::backend::{KeyBackend, Pkcs11Backend, Pkcs11Config};
use strongroom::store::MetadataStore;
use strongroom::{
    CreateKeyOptions, Error, KeyRing, KeySpec, ManualClock, MaterialId, Principal, SecretBytes,
    SymmetricAlgorithm,
};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `eval \"$(.ci/softhsm-setup)\"` first (see README)")
    })
}

fn config() -> Pkcs11Config {
    Pkcs11Config::new(
        var("STRONGROOM_PKCS11_MODULE"),
        var("STRONGROOM_PKCS11_TOKEN"),
        SecretBytes::from_slice(var("STRONGROOM_PKCS11_PIN").as_bytes()),
    )
}

fn make(store: Arc<dyn MetadataStore>, clock: Arc<ManualClock>) -> (KeyRing, Arc<dyn KeyBackend>) {
    let backend: Arc<dyn KeyBackend> = Arc::new(Pkcs11Backend::connect(&config()).unwrap());
    let ring = KeyRing::builder()
        .backend(backend.clone())
        .store(store)
        .clock(clock)
        .build();
    (ring, backend)
}

conformance_suite!(make, persistent);

#[test]
fn master_keys_are_not_extractable() {
    let backend = Pkcs11Backend::connect(&config()).unwrap();
    let backend = Arc::new(backend);
    let ring = KeyRing::builder().backend(backend.clone()).build();
    let c = ring.client(Principal::service("hsm").unwrap());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    assert!(
        backend
            .is_non_extractable(&MaterialId::new(key, 1))
            .unwrap()
    );
}

#[test]
fn signing_keys_live_on_the_token() {
    let backend = Arc::new(Pkcs11Backend::connect(&config()).unwrap());
    let ring = KeyRing::builder().backend(backend.clone()).build();
    let c = ring.client(Principal::service("hsm").unwrap());
    for spec in [KeySpec::EccNistP256, KeySpec::Ed25519] {
        let k = c.create_key(spec, CreateKeyOptions::new()).unwrap();
        // A new backend instance (as after a restart) signs with the same key.
        let again: Arc<dyn KeyBackend> = Arc::new(Pkcs11Backend::connect(&config()).unwrap());
        let id = MaterialId::new(k.clone(), 1);
        assert_eq!(
            again.public_key(&id).unwrap(),
            backend.public_key(&id).unwrap()
        );
    }
}

#[test]
fn chacha_is_unsupported_clearly() {
    let backend: Arc<dyn KeyBackend> = Arc::new(Pkcs11Backend::connect(&config()).unwrap());
    let ring = KeyRing::builder().backend(backend).build();
    let c = ring.client(Principal::service("hsm").unwrap());
    let e = c
        .create_key(
            KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305),
            CreateKeyOptions::new(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}

#[test]
fn configuration_errors_are_clear_and_hide_the_pin() {
    let mut bad_pin = config();
    bad_pin.user_pin = SecretBytes::from_slice(b"99999999");
    let e = Pkcs11Backend::connect(&bad_pin).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    assert!(!e.to_string().contains("99999999"));
    let mut bad_token = config();
    bad_token.token_label = "no-such-token".into();
    assert!(matches!(
        Pkcs11Backend::connect(&bad_token),
        Err(Error::Configuration(_))
    ));
    let mut bad_module = config();
    bad_module.module = "/nonexistent/libpkcs11.so".into();
    assert!(matches!(
        Pkcs11Backend::connect(&bad_module),
        Err(Error::Configuration(_))
    ));
    assert!(!format!("{:?}", config()).contains(&var("STRONGROOM_PKCS11_PIN")));
}
