//! Object identity on a PKCS#11 token (security review item 17): the backend
//! finds objects by label, so it must refuse a label that names more than
//! one object, and a key object that is, or ever was, extractable, is not
//! sensitive, or was not generated on the token. The offending objects are
//! planted with cryptoki directly, next to (or instead of) what the backend
//! generated. Uses the SoftHSM2 token of `tests/support/softhsm.rs`, like
//! `conformance_pkcs11`.
#![cfg(feature = "pkcs11")]

#[path = "support/softhsm.rs"]
mod softhsm;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::sync::OnceLock;
use strongroom::backend::MaterialId;
use strongroom::backend::{KeyBackend, Pkcs11Backend, Pkcs11Config, SigningBackend};
use strongroom::{Error, KeyId, KeySpec, SecretBytes};

/// DER OID of prime256v1.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A backend on the test token whose labels start with a prefix unique to
/// this test and process, so tests cannot see each other's objects.
fn backend(prefix: &str) -> Pkcs11Backend {
    let config = Pkcs11Config::new(
        softhsm::module(),
        softhsm::label(),
        SecretBytes::from_slice(softhsm::pin().as_bytes()),
    )
    .label_prefix(prefix);
    Pkcs11Backend::connect(&config).unwrap()
}

fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("identity-{test}-{}-{nanos}/", std::process::id())
}

fn id() -> MaterialId {
    MaterialId::new(KeyId::parse("k1").unwrap(), 1)
}

/// The label the backend uses for `id` (docs/FORMAT.md, "PKCS#11 backend").
fn label(prefix: &str, id: &MaterialId) -> Vec<u8> {
    format!("{prefix}{}#v{}", id.key_id, id.version).into_bytes()
}

/// A logged-in session of our own, beside the backend's. The context lives
/// for the whole process (it is never finalized under the backend's feet).
fn raw_session() -> Session {
    static CTX: OnceLock<Pkcs11> = OnceLock::new();
    let ctx = CTX.get_or_init(|| {
        let ctx = Pkcs11::new(softhsm::module()).unwrap();
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => panic!("C_Initialize: {e}"),
        }
        ctx
    });
    let token = softhsm::label();
    let slot = ctx
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == token)
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    match s.login(UserType::User, Some(&AuthPin::new(softhsm::pin().into()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    s
}

/// Generates an AES-256 token key under `label` with the given flags.
fn plant_aes(label: Vec<u8>, sensitive: bool, extractable: bool) {
    raw_session()
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(sensitive),
                Attribute::Extractable(extractable),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(label),
            ],
        )
        .unwrap();
}

/// Generates a P-256 token key pair under `label`.
fn plant_p256(label: Vec<u8>, extractable: bool) {
    raw_session()
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::Verify(true),
                Attribute::Label(label.clone()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(extractable),
                Attribute::Sign(true),
                Attribute::Label(label),
            ],
        )
        .unwrap();
}

/// Asserts a clear refusal that names the label and `reason`.
fn assert_refused(r: Result<impl std::fmt::Debug, Error>, label: &[u8], reason: &str) {
    let e = r.expect_err("the backend used an object it must refuse");
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(std::str::from_utf8(label).unwrap()), "{msg}");
    assert!(msg.contains(reason), "{msg}");
}

#[test]
fn a_duplicate_secret_key_is_refused() {
    if !softhsm::available() {
        return;
    }
    let p = prefix("dup-aes");
    let id = id();
    let first = backend(&p);
    first.generate(&id, KeySpec::default()).unwrap();
    let blob = first.encrypt(&id, b"", b"secret").unwrap();
    // A second, perfectly good key under the same label.
    plant_aes(label(&p, &id), true, false);
    // A fresh instance (as after a restart) must not pick one of the two.
    let again = backend(&p);
    assert_refused(
        again.encrypt(&id, b"", b"secret"),
        &label(&p, &id),
        "2 secret key objects",
    );
    assert_refused(
        again.decrypt(&id, b"", &blob),
        &label(&p, &id),
        "2 secret key objects",
    );
    assert_refused(again.contains(&id), &label(&p, &id), "2 secret key objects");
    // Generating under a taken label is refused too.
    assert!(matches!(
        again.generate(&id, KeySpec::default()),
        Err(Error::InvalidArgument(_))
    ));
    again.destroy(&id).unwrap();
}

#[test]
fn an_extractable_secret_key_is_refused() {
    if !softhsm::available() {
        return;
    }
    let p = prefix("extractable-aes");
    plant_aes(label(&p, &id()), true, true);
    let b = backend(&p);
    assert_refused(
        b.encrypt(&id(), b"", b"secret"),
        &label(&p, &id()),
        "CKA_EXTRACTABLE",
    );
    assert_refused(
        b.is_non_extractable(&id()),
        &label(&p, &id()),
        "CKA_EXTRACTABLE",
    );
    b.destroy(&id()).unwrap();
}

#[test]
fn a_non_sensitive_secret_key_is_refused() {
    if !softhsm::available() {
        return;
    }
    let p = prefix("non-sensitive-aes");
    plant_aes(label(&p, &id()), false, false);
    let b = backend(&p);
    assert_refused(
        b.encrypt(&id(), b"", b"secret"),
        &label(&p, &id()),
        "CKA_SENSITIVE",
    );
    b.destroy(&id()).unwrap();
}

#[test]
fn a_once_extractable_secret_key_is_refused() {
    if !softhsm::available() {
        return;
    }
    let p = prefix("once-extractable-aes");
    let s = raw_session();
    let h = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(label(&p, &id())),
            ],
        )
        .unwrap();
    // Turning CKA_EXTRACTABLE off later leaves CKA_NEVER_EXTRACTABLE false:
    // the value may have been exported while it was on.
    s.update_attributes(h, &[Attribute::Extractable(false)])
        .unwrap();
    let b = backend(&p);
    assert_refused(
        b.encrypt(&id(), b"", b"secret"),
        &label(&p, &id()),
        "CKA_NEVER_EXTRACTABLE",
    );
    b.destroy(&id()).unwrap();
}

#[test]
fn an_imported_secret_key_is_refused() {
    if !softhsm::available() {
        return;
    }
    let p = prefix("imported-aes");
    // Sensitive and non-extractable, but its value came from outside the
    // token (CKA_LOCAL false).
    raw_session()
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Value(vec![0x42; 32]),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(label(&p, &id())),
        ])
        .unwrap();
    let b = backend(&p);
    assert_refused(
        b.encrypt(&id(), b"", b"secret"),
        &label(&p, &id()),
        "CKA_LOCAL",
    );
    b.destroy(&id()).unwrap();
}

#[test]
fn a_duplicate_signing_key_is_refused() {
    if !softhsm::available() {
        return;
    }
    let p = prefix("dup-p256");
    let first = backend(&p);
    first.generate(&id(), KeySpec::EccNistP256).unwrap();
    plant_p256(label(&p, &id()), false);
    let again = backend(&p);
    assert_refused(
        again.sign(&id(), &[7; 32]),
        &label(&p, &id()),
        "2 private key objects",
    );
    assert_refused(
        again.public_key(&id()),
        &label(&p, &id()),
        "2 public key objects",
    );
    again.destroy(&id()).unwrap();
}

#[test]
fn an_extractable_signing_key_is_refused() {
    if !softhsm::available() {
        return;
    }
    let p = prefix("extractable-p256");
    plant_p256(label(&p, &id()), true);
    let b = backend(&p);
    assert_refused(
        b.sign(&id(), &[7; 32]),
        &label(&p, &id()),
        "CKA_EXTRACTABLE",
    );
    b.destroy(&id()).unwrap();
}

#[test]
fn keys_the_backend_generates_pass_the_checks() {
    if !softhsm::available() {
        return;
    }
    // The checks must not refuse what the backend itself makes.
    let p = prefix("own");
    let b = backend(&p);
    let aes = id();
    let ec = MaterialId::new(KeyId::parse("ec").unwrap(), 1);
    let ed = MaterialId::new(KeyId::parse("ed").unwrap(), 1);
    b.generate(&aes, KeySpec::default()).unwrap();
    b.generate(&ec, KeySpec::EccNistP256).unwrap();
    b.generate(&ed, KeySpec::Ed25519).unwrap();
    let again = backend(&p);
    let blob = again.encrypt(&aes, b"ctx", b"secret").unwrap();
    assert_eq!(
        again.decrypt(&aes, b"ctx", &blob).unwrap().expose_secret(),
        b"secret"
    );
    assert!(again.is_non_extractable(&aes).unwrap());
    again.sign(&ec, &[7; 32]).unwrap();
    again.sign(&ed, b"message").unwrap();
    for m in [&aes, &ec, &ed] {
        assert!(again.contains(m).unwrap());
        again.destroy(m).unwrap();
    }
}
