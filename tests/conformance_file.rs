//! The backend conformance suite on the file keystore (a real temp dir).

use std::sync::Arc;
use strongroom::KeyRing;
use strongroom::backend::KeyBackend;
use strongroom::clock::ManualClock;
use strongroom::store::OpenMode;
use strongroom::store::{KeystoreOptions, MetadataStore, RootKey};

/// The suite hands every factory call a store; for the file keystore the
/// store and backend come from the directory, so the factory keeps one
/// directory per suite store (keyed by the store's address) and reopens it:
/// a second call with the same store is a restart.
fn make(store: Arc<dyn MetadataStore>, clock: Arc<ManualClock>) -> (KeyRing, Arc<dyn KeyBackend>) {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static DIRS: OnceLock<Mutex<HashMap<usize, tempfile::TempDir>>> = OnceLock::new();
    let id = Arc::as_ptr(&store) as *const () as usize;
    let mut dirs = DIRS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap();
    let dir = dirs
        .entry(id)
        .or_insert_with(|| tempfile::tempdir().unwrap());
    let ring = KeyRing::builder()
        .clock(clock)
        .file_keystore(
            dir.path(),
            &RootKey::raw([9; 32]),
            KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
        )
        .unwrap()
        .build();
    let backend: Arc<dyn KeyBackend> = ring.dangerous_backend();
    (ring, backend)
}

strongroom::conformance_suite!(make, persistent);
