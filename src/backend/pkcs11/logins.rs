//! The PINs this process logged in with, per (module, slot), as keyed
//! hashes under a random per-process key: enough to check a second
//! connect's PIN while the token reports the process already logged in,
//! without keeping another copy of any PIN.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use subtle::ConstantTimeEq;

type Logins = Mutex<HashMap<(PathBuf, u64), [u8; 32]>>;

fn table() -> &'static Logins {
    static T: OnceLock<Logins> = OnceLock::new();
    T.get_or_init(Logins::default)
}

/// The keyed hash of a PIN.
pub(super) fn tag(pin: &[u8]) -> [u8; 32] {
    // A full HMAC-SHA-256 block of key: `KeyInit::new` takes it by type,
    // so there is no length to get wrong and nothing to unwrap.
    static KEY: OnceLock<[u8; 64]> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut k = [0u8; 64];
        // Without OS randomness the tag is still a hash of the PIN,
        // only unkeyed; it never leaves the process.
        let _ = getrandom::fill(&mut k);
        k
    });
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&(*key).into());
    mac.update(pin);
    mac.finalize().into_bytes().into()
}

/// Records a successful login.
pub(super) fn remember(login: &(PathBuf, u64), pin_tag: [u8; 32]) {
    table()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(login.clone(), pin_tag);
}

/// Whether `pin` is the PIN of this process's login. A login made
/// outside strongroom (no record) cannot be checked and is accepted,
/// as the token accepts it.
pub(super) fn matches(login: &(PathBuf, u64), pin_tag: &[u8; 32]) -> bool {
    match table().lock().unwrap_or_else(|e| e.into_inner()).get(login) {
        Some(t) => bool::from(t.ct_eq(pin_tag)),
        None => true,
    }
}
