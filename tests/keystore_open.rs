//! Creating a keystore is separate from opening one: a mistyped path never
//! becomes a new, empty store; root keys from the environment take exactly
//! what their docs say.

use strongroom::store::{KeystoreOptions, OpenMode, RootKey};
use strongroom::{CreateKeyOptions, ErrorKind, KeyRing, KeySpec, Principal};

fn root() -> RootKey {
    RootKey::raw([0x5a; 32])
}

fn admin(ring: &KeyRing) -> strongroom::Client {
    ring.client(Principal::user("admin").unwrap())
}

#[test]
fn open_refuses_a_missing_path_and_creates_nothing() {
    let base = tempfile::tempdir().unwrap();
    let missing = base.path().join("typo").join("keys");
    let err = KeyRing::open(&missing, root()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(err.to_string().contains("no keystore"), "{err}");
    assert!(
        !base.path().join("typo").exists(),
        "open created directories"
    );
}

#[test]
fn open_refuses_a_directory_without_a_keystore_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let err = KeyRing::open(dir.path(), root()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
    // The builder's default is the same: open an existing store.
    let err = KeyRing::builder()
        .file_keystore(dir.path(), &root(), KeystoreOptions::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
}

#[test]
fn create_then_open_and_create_twice_is_refused_without_harm() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("new").join("keys");
    let id = {
        let ring = KeyRing::create(&dir, root()).unwrap();
        admin(&ring)
            .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/a"))
            .unwrap()
    };
    let err = KeyRing::create(&dir, root()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    let ring = KeyRing::open(&dir, root()).unwrap();
    assert_eq!(admin(&ring).describe_key("alias/a").unwrap().key_id, id);
    // The wrong root key on an existing store is still WrongRootKey.
    let err = KeyRing::open(&dir, RootKey::raw([1; 32])).unwrap_err();
    assert!(matches!(err, strongroom::Error::WrongRootKey), "{err}");
    // Either-mode opens the existing store too.
    let ring = KeyRing::builder()
        .file_keystore(
            &dir,
            &root(),
            KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
        )
        .unwrap()
        .build();
    assert_eq!(admin(&ring).describe_key("alias/a").unwrap().key_id, id);
}

/// One test for every environment case, so no other test of this binary
/// reads the environment while it changes.
#[test]
fn root_keys_from_the_environment() {
    const RAW: &str = "STRONGROOM_TEST_ROOT_KEY_RAW";
    const PASS: &str = "STRONGROOM_TEST_ROOT_KEY_PASS";
    let set = |k: &str, v: &str| {
        // SAFETY: this is the only test of this binary that touches the
        // environment, and it does not spawn threads.
        unsafe { std::env::set_var(k, v) }
    };
    // Exactly 64 hex characters (whitespace around is fine).
    set(RAW, &format!(" {} \n", "ab".repeat(32)));
    assert!(matches!(RootKey::from_env(RAW).unwrap(), RootKey::Raw(_)));
    // A 32-character password is not a raw key, and the error does not
    // repeat it.
    let weak = "correct-horse-battery-staple-123";
    assert_eq!(weak.len(), 32);
    set(RAW, weak);
    let err = RootKey::from_env(RAW).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("64 hex"), "{err}");
    assert!(!err.to_string().contains(weak), "{err}");
    set(RAW, &"ab".repeat(31));
    assert!(RootKey::from_env(RAW).is_err());
    // Not set: the error names the variable.
    let err = RootKey::from_env("STRONGROOM_TEST_UNSET_VARIABLE").unwrap_err();
    assert!(err.to_string().contains("STRONGROOM_TEST_UNSET_VARIABLE"));
    // A passphrase from the environment opens a passphrase store.
    set(PASS, weak);
    assert!(matches!(
        RootKey::passphrase_from_env(PASS).unwrap(),
        RootKey::Passphrase(_)
    ));
    set(PASS, "");
    let err = RootKey::passphrase_from_env(PASS).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(format!("{:?}", RootKey::passphrase(weak)).contains("redacted"));
}
