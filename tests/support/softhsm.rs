//! The SoftHSM2 token of the PKCS#11 tests.
//!
//! `.ci/softhsm-setup` (CI) provisions a token and exports
//! `STRONGROOM_PKCS11_MODULE`, `STRONGROOM_PKCS11_TOKEN`,
//! `STRONGROOM_PKCS11_PIN` and `SOFTHSM2_CONF`; those win. Without them, if
//! SoftHSM2 is installed, this process provisions a private token in a temp
//! dir. If it is not installed, the tests print one line saying they
//! skipped and how to enable them, and pass, except under `CI=true`, where a
//! skip is a failure.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use strongroom::SecretBytes;
use strongroom::backend::Pkcs11Config;

/// Module, token label and user PIN.
pub struct Token {
    pub module: String,
    pub token: String,
    pub pin: String,
}

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn provision() -> Option<Token> {
    if let (Ok(module), Ok(token), Ok(pin)) = (
        std::env::var("STRONGROOM_PKCS11_MODULE"),
        std::env::var("STRONGROOM_PKCS11_TOKEN"),
        std::env::var("STRONGROOM_PKCS11_PIN"),
    ) {
        return Some(Token { module, token, pin });
    }
    if !Path::new(MODULE).exists() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("strongroom-softhsm-{}", std::process::id()));
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).ok()?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .ok()?;
    let ok = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", "strongroom-test"])
        .args(["--so-pin", "87654321", "--pin", "1234"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return None;
    }
    // SAFETY: set once, inside a OnceLock initializer that every test of
    // this binary passes through before the PKCS#11 module is loaded (which
    // reads SOFTHSM2_CONF at C_Initialize); no other thread of this test
    // binary reads or writes the environment meanwhile.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    Some(Token {
        module: MODULE.into(),
        token: "strongroom-test".into(),
        pin: "1234".into(),
    })
}

/// The token, provisioned once per process, or `None` (after saying so)
/// when SoftHSM2 is not installed and this is not CI.
pub fn token() -> Option<&'static Token> {
    static TOKEN: OnceLock<Option<Token>> = OnceLock::new();
    let t = TOKEN.get_or_init(provision).as_ref();
    if t.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "SoftHSM2 is required under CI=true: run `eval \"$(.ci/softhsm-setup)\"`"
        );
        eprintln!(
            "skipped: SoftHSM2 not installed; `apt-get install softhsm2` (or `eval \"$(.ci/softhsm-setup)\"`) to run the PKCS#11 tests"
        );
    }
    t
}

/// True if the PKCS#11 tests can run (see [`token`]).
pub fn available() -> bool {
    token().is_some()
}

/// The backend configuration of the token. Call only after [`available`].
pub fn config() -> Pkcs11Config {
    let t = token().expect("checked by available()");
    Pkcs11Config::new(
        t.module.clone(),
        t.token.clone(),
        SecretBytes::from_slice(t.pin.as_bytes()),
    )
}

/// The PIN (for checks that it never shows).
pub fn pin() -> &'static str {
    &token().expect("checked by available()").pin
}

/// The module path.
pub fn module() -> &'static str {
    &token().expect("checked by available()").module
}

/// The token label.
pub fn label() -> &'static str {
    &token().expect("checked by available()").token
}
