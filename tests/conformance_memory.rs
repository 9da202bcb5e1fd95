//! The backend conformance suite on the in-memory backend.

use std::sync::Arc;
use strongroom::KeyRing;
use strongroom::backend::{KeyBackend, MemoryBackend};
use strongroom::clock::ManualClock;
use strongroom::store::MetadataStore;

fn make(store: Arc<dyn MetadataStore>, clock: Arc<ManualClock>) -> (KeyRing, Arc<dyn KeyBackend>) {
    let backend: Arc<dyn KeyBackend> = Arc::new(MemoryBackend::new());
    let ring = KeyRing::builder()
        .backend(backend.clone())
        .store(store)
        .clock(clock)
        .build();
    (ring, backend)
}

strongroom::conformance_suite!(make);
