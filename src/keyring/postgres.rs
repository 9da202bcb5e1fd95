//! Opening a ring on a PostgreSQL fleet database (feature `postgres`).

use super::KeyRingBuilder;
use crate::backend::PostgresBackend;
use crate::error::Result;
use crate::store::{PostgresOptions, PostgresStore, RootKey};
use std::sync::Arc;

impl KeyRingBuilder {
    /// Uses the PostgreSQL database at `url` as both metadata store and
    /// backend: metadata, aliases, policies and grants in tables, and
    /// software key material sealed under `root` (docs/FORMAT.md,
    /// "PostgreSQL material rows"). Every instance of a fleet points at the
    /// same database with the same root key. See
    /// [`crate::store::postgres`] for concurrency, freshness and failures.
    pub fn postgres(self, url: &str, root: &RootKey, options: PostgresOptions) -> Result<Self> {
        let store = PostgresStore::connect(url, root, options)?;
        let backend = PostgresBackend::open(&store)?;
        Ok(self.store(Arc::new(store)).backend(Arc::new(backend)))
    }

    /// Uses the PostgreSQL database at `url` for metadata only, beside a
    /// backend that keeps its own material (PKCS#11, a remote custodian):
    /// choose it with [`KeyRingBuilder::backend`]. No key material goes to
    /// the database. `root` authenticates the metadata rows (every
    /// instance of the fleet brings the same one; see
    /// [`PostgresStore::connect`]).
    pub fn postgres_metadata(
        self,
        url: &str,
        root: &RootKey,
        options: PostgresOptions,
    ) -> Result<Self> {
        Ok(self.store(Arc::new(PostgresStore::connect(url, root, options)?)))
    }
}
