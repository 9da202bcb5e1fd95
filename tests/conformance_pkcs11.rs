//! The backend conformance suite on a real SoftHSM2 token, plus PKCS#11
//! specifics. The token comes from `tests/support/softhsm.rs`: the one
//! `.ci/softhsm-setup` exported, else a private one this process
//! provisions when SoftHSM2 is installed; without SoftHSM2 the tests say
//! they skipped, and under `CI=true` they fail, so CI never skips the HSM.
#![cfg(feature = "pkcs11")]

#[path = "support/softhsm.rs"]
mod softhsm;
use softhsm::config;

use std::sync::Arc;
use strongroom::backend::MaterialId;
use strongroom::backend::{KeyBackend, Pkcs11Backend, Pkcs11Config, SigningBackend};
use strongroom::clock::ManualClock;
use strongroom::key::SymmetricAlgorithm;
use strongroom::store::MetadataStore;
use strongroom::{CreateKeyOptions, Error, KeyRing, KeySpec, Principal, SecretBytes};

fn make(store: Arc<dyn MetadataStore>, clock: Arc<ManualClock>) -> (KeyRing, Arc<dyn KeyBackend>) {
    let backend: Arc<dyn KeyBackend> = Arc::new(Pkcs11Backend::connect(&config()).unwrap());
    let ring = KeyRing::builder()
        .backend(backend.clone())
        .store(store)
        .clock(clock)
        .build();
    (ring, backend)
}

strongroom::conformance_suite!(make, persistent, when softhsm::available);

#[test]
fn master_keys_are_not_extractable() {
    if !softhsm::available() {
        return;
    }
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
    if !softhsm::available() {
        return;
    }
    let backend = Arc::new(Pkcs11Backend::connect(&config()).unwrap());
    let ring = KeyRing::builder().backend(backend.clone()).build();
    let c = ring.client(Principal::service("hsm").unwrap());
    for spec in [KeySpec::EccNistP256, KeySpec::Ed25519] {
        let k = c.create_key(spec, CreateKeyOptions::new()).unwrap();
        // A new backend instance (as after a restart) signs with the same key.
        let again: Arc<dyn KeyBackend> = Arc::new(Pkcs11Backend::connect(&config()).unwrap());
        let id = MaterialId::new(k.clone(), 1);
        assert_eq!(
            again.signing().unwrap().public_key(&id).unwrap(),
            backend.public_key(&id).unwrap()
        );
    }
}

#[test]
fn chacha_is_unsupported_clearly() {
    if !softhsm::available() {
        return;
    }
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
    if !softhsm::available() {
        return;
    }
    let mut bad_pin = config();
    bad_pin.user_pin = SecretBytes::from_slice(b"99999999");
    // Deterministic whatever else runs in this process: first with no
    // session logged in (the token checks the PIN), then while a backend
    // with the right PIN holds a logged-in session (PKCS#11 login state is
    // process-wide and the token answers "already logged in" without
    // checking: strongroom checks it against the PIN of its own login).
    let e = Pkcs11Backend::connect(&bad_pin).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    assert!(!e.to_string().contains("99999999"));
    let good = Pkcs11Backend::connect(&config()).unwrap();
    let e = Pkcs11Backend::connect(&bad_pin).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    assert!(!e.to_string().contains("99999999"));
    // The right PIN still connects beside it.
    Pkcs11Backend::connect(&config()).unwrap();
    drop(good);
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
    assert!(!format!("{:?}", config()).contains(softhsm::pin()));
}

// --- GCM IVs written back by the token (security review item 16) ---------
//
// SoftHSM2 uses the IV it is given and never generates one, so a token that
// does (FIPS-mode network HSMs) is emulated by a tiny PKCS#11 module, built
// here with the system C compiler (the one rustc links with), that forwards
// every call to SoftHSM2 and intercepts only C_EncryptInit with CKM_AES_GCM:
//
// - `WriteBack`: the shim generates the IV ("TOKEN-IV" + a counter), writes
//   it into the caller's CK_GCM_PARAMS.pIv as the spec asks of a generating
//   token, and SoftHSM2 encrypts with it. A backend that stores its own
//   software IV instead makes blobs that do not decrypt.
// - `Hidden`: the shim encrypts under an IV it generates but does not write
//   back (a misbehaving token). Every blob would be undecryptable, so
//   `connect()` must refuse the token through its self-test.

/// PKCS#11 pass-through module; see above. The function list layout is the
/// PKCS#11 2.40 one (the version, then 68 function pointers, C_EncryptInit
/// the 30th), which is what SoftHSM2's C_GetFunctionList returns.
const GCM_SHIM_C: &str = r#"
#include <dlfcn.h>
#include <string.h>

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef struct { unsigned char major, minor; } CK_VERSION;
typedef struct { CK_ULONG mechanism; void *pParameter; CK_ULONG ulParameterLen; } CK_MECHANISM;
typedef struct {
    unsigned char *pIv; CK_ULONG ulIvLen; CK_ULONG ulIvBits;
    unsigned char *pAAD; CK_ULONG ulAADLen; CK_ULONG ulTagBits;
} CK_GCM_PARAMS;
typedef struct { CK_VERSION version; void *fn[68]; } CK_FUNCTION_LIST;
typedef CK_RV (*get_function_list_t)(CK_FUNCTION_LIST **);
typedef CK_RV (*encrypt_init_t)(CK_ULONG, CK_MECHANISM *, CK_ULONG);

#define C_ENCRYPT_INIT 29
#define CKM_AES_GCM 0x1087UL
#define CKR_GENERAL_ERROR 5UL

static CK_FUNCTION_LIST list;
static encrypt_init_t real_encrypt_init;
static unsigned int counter;

static CK_RV shim_encrypt_init(CK_ULONG session, CK_MECHANISM *mech, CK_ULONG key) {
    if (mech != 0 && mech->mechanism == CKM_AES_GCM && mech->pParameter != 0
        && mech->ulParameterLen == sizeof(CK_GCM_PARAMS)) {
        CK_GCM_PARAMS *p = (CK_GCM_PARAMS *)mech->pParameter;
        if (p->ulIvLen == 12) {
            unsigned char iv[12];
            unsigned int n = __sync_add_and_fetch(&counter, 1);
            memcpy(iv, "TOKEN-IV", 8);
            iv[8] = n >> 24; iv[9] = n >> 16; iv[10] = n >> 8; iv[11] = n;
#ifdef WRITE_BACK
            memcpy(p->pIv, iv, 12);
            return real_encrypt_init(session, mech, key);
#else
            CK_GCM_PARAMS hidden = *p;
            CK_MECHANISM m = *mech;
            hidden.pIv = iv;
            m.pParameter = &hidden;
            return real_encrypt_init(session, &m, key);
#endif
        }
    }
    return real_encrypt_init(session, mech, key);
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST **out) {
    if (real_encrypt_init == 0) {
        void *lib = dlopen(REAL_MODULE, RTLD_NOW | RTLD_LOCAL);
        get_function_list_t get;
        CK_FUNCTION_LIST *real;
        if (lib == 0) return CKR_GENERAL_ERROR;
        get = (get_function_list_t)dlsym(lib, "C_GetFunctionList");
        if (get == 0 || get(&real) != 0) return CKR_GENERAL_ERROR;
        list = *real;
        real_encrypt_init = (encrypt_init_t)list.fn[C_ENCRYPT_INIT];
        list.fn[C_ENCRYPT_INIT] = (void *)shim_encrypt_init;
    }
    *out = &list;
    return 0;
}
"#;

#[derive(Clone, Copy, Debug)]
enum Shim {
    WriteBack,
    Hidden,
}

/// Builds the shim module (once per process and mode) and returns its path.
fn gcm_shim(mode: Shim) -> std::path::PathBuf {
    use std::path::PathBuf;
    use std::sync::OnceLock;
    static WRITE_BACK: OnceLock<PathBuf> = OnceLock::new();
    static HIDDEN: OnceLock<PathBuf> = OnceLock::new();
    let cell = match mode {
        Shim::WriteBack => &WRITE_BACK,
        Shim::Hidden => &HIDDEN,
    };
    cell.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let stem = format!("gcm-shim-{mode:?}-{}", std::process::id());
        let src = dir.join(format!("{stem}.c"));
        let lib = dir.join(format!("{stem}.so"));
        std::fs::write(&src, GCM_SHIM_C).unwrap();
        let mut cc = std::process::Command::new(std::env::var("CC").unwrap_or("cc".into()));
        cc.args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&lib)
            .arg(&src)
            .arg(format!("-DREAL_MODULE=\"{}\"", softhsm::module()));
        if let Shim::WriteBack = mode {
            cc.arg("-DWRITE_BACK");
        }
        let out = cc
            .arg("-ldl")
            .output()
            .expect("a C compiler (cc) is needed");
        assert!(
            out.status.success(),
            "building the GCM shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lib
    })
    .clone()
}

fn shim_config(mode: Shim, prefix: &str) -> Pkcs11Config {
    Pkcs11Config::new(
        gcm_shim(mode),
        softhsm::label(),
        SecretBytes::from_slice(softhsm::pin().as_bytes()),
    )
    .label_prefix(prefix)
}

fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}/", std::process::id())
}

#[test]
fn blobs_carry_the_iv_the_token_wrote_back() {
    if !softhsm::available() {
        return;
    }
    let prefix = unique_prefix("iv-write-back");
    // connect() runs the self-test through the shim: it must pass.
    let token = Pkcs11Backend::connect(&shim_config(Shim::WriteBack, &prefix)).unwrap();
    let id = MaterialId::new(strongroom::KeyId::parse("gcm-iv").unwrap(), 1);
    token.generate(&id, KeySpec::default()).unwrap();
    let first = token.encrypt(&id, b"context", b"a data key").unwrap();
    let second = token.encrypt(&id, b"context", b"a data key").unwrap();
    // The stored IV is the one the token wrote back, not the software one.
    assert_eq!(&first[..8], b"TOKEN-IV");
    assert_eq!(&second[..8], b"TOKEN-IV");
    assert_ne!(&first[..12], &second[..12]);
    assert_eq!(
        token
            .decrypt(&id, b"context", &first)
            .unwrap()
            .expose_secret(),
        b"a data key"
    );
    // The blob is self-contained: the plain module decrypts it too.
    let plain = Pkcs11Backend::connect(&config().label_prefix(prefix.as_str())).unwrap();
    assert_eq!(
        plain
            .decrypt(&id, b"context", &second)
            .unwrap()
            .expose_secret(),
        b"a data key"
    );
    plain.destroy(&id).unwrap();
}

#[test]
fn connect_refuses_a_token_that_hides_its_gcm_iv() {
    if !softhsm::available() {
        return;
    }
    let prefix = unique_prefix("iv-hidden");
    // Without the self-test, connect() would succeed and every blob made
    // through this token would be undecryptable.
    let e = Pkcs11Backend::connect(&shim_config(Shim::Hidden, &prefix)).unwrap_err();
    assert!(matches!(e, Error::Configuration(_)), "{e}");
    assert!(e.to_string().contains("self-test"), "{e}");
    assert!(!e.to_string().contains(softhsm::pin()));
    // The same token through the plain module passes it.
    Pkcs11Backend::connect(&config().label_prefix(prefix.as_str())).unwrap();
}
