//! The backend conformance suite on the PostgreSQL fleet store (a real
//! server, see `support/postgres.rs`): metadata and software key material
//! in the database.

#[path = "support/postgres.rs"]
mod pg;

use std::sync::Arc;
use strongroom::KeyRing;
use strongroom::backend::KeyBackend;
use strongroom::clock::ManualClock;
use strongroom::store::{MetadataStore, PostgresOptions, RootKey};

/// The suite hands every factory call a store; for PostgreSQL the store
/// and backend come from the database, so the factory keeps one fresh
/// database per suite store (keyed by the store's address) and reconnects
/// to it: a second call with the same store is a restart.
fn make(store: Arc<dyn MetadataStore>, clock: Arc<ManualClock>) -> (KeyRing, Arc<dyn KeyBackend>) {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static DBS: OnceLock<Mutex<HashMap<usize, String>>> = OnceLock::new();
    let id = Arc::as_ptr(&store) as *const () as usize;
    let url = DBS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap()
        .entry(id)
        .or_insert_with(pg::fresh_db)
        .clone();
    let ring = KeyRing::builder()
        .clock(clock)
        .postgres(&url, &RootKey::raw([9; 32]), PostgresOptions::default())
        .unwrap()
        .build();
    let backend: Arc<dyn KeyBackend> = ring.dangerous_backend();
    (ring, backend)
}

strongroom::conformance_suite!(make, persistent, when pg::available);
