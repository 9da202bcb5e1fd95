//! The conformance suite with PostgreSQL for metadata and a SoftHSM2 token
//! for material (`postgres_metadata` + `Pkcs11Backend`): only metadata goes
//! to the database.

#[path = "support/postgres.rs"]
mod pg;
#[path = "support/softhsm.rs"]
mod softhsm;

use std::sync::Arc;
use strongroom::backend::{KeyBackend, Pkcs11Backend};
use strongroom::clock::ManualClock;
use strongroom::store::{MetadataStore, PostgresOptions, RootKey};
use strongroom::{CreateKeyOptions, KeyRing, KeySpec, Principal};

fn available() -> bool {
    pg::available() && softhsm::available()
}

/// One fresh database per suite store (a second call with the same store
/// is a restart), the token's backend beside it.
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
    let backend: Arc<dyn KeyBackend> =
        Arc::new(Pkcs11Backend::connect(&softhsm::config()).unwrap());
    let ring = KeyRing::builder()
        .clock(clock)
        .postgres_metadata(&url, &RootKey::raw([8; 32]), PostgresOptions::default())
        .unwrap()
        .backend(backend.clone())
        .build();
    (ring, backend)
}

strongroom::conformance_suite!(make, persistent, when available);

#[test]
fn only_metadata_goes_to_the_database() {
    if !available() {
        return;
    }
    let url = pg::fresh_db();
    let backend: Arc<dyn KeyBackend> =
        Arc::new(Pkcs11Backend::connect(&softhsm::config()).unwrap());
    let ring = KeyRing::builder()
        .postgres_metadata(&url, &RootKey::raw([8; 32]), PostgresOptions::default())
        .unwrap()
        .backend(backend)
        .build();
    let c = ring.client(Principal::user("admin").unwrap());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    c.rotate_key_on_demand(key.as_str()).unwrap();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let keys: i64 = db
        .query_one("SELECT count(*) FROM strongroom_keys", &[])
        .unwrap()
        .get(0);
    let material: i64 = db
        .query_one("SELECT count(*) FROM strongroom_material", &[])
        .unwrap()
        .get(0);
    let store: i64 = db
        .query_one("SELECT count(*) FROM strongroom_store", &[])
        .unwrap()
        .get(0);
    // The store row holds the store id, the KDF description and the
    // root-key check (the root key authenticates the metadata rows); no
    // key material.
    assert_eq!((keys, material, store), (1, 0, 1));
}
