//! Opening a ring on a file keystore.

use super::{KeyRing, KeyRingBuilder};
use crate::backend::FileBackend;
use crate::error::Result;
use crate::store::keystore::Keystore;
use crate::store::{FileStore, KeystoreOptions, RootKey};
use std::path::Path;
use std::sync::Arc;

impl KeyRing {
    /// Opens (or creates) a durable keystore in `dir`: key metadata, aliases,
    /// tags, states, policies and grants, and master-key material encrypted
    /// at rest under `root` (docs/FORMAT.md, "File keystore"). A wrong root
    /// key or passphrase is [`crate::Error::WrongRootKey`] and changes
    /// nothing; a damaged, rolled-back or old-format file is
    /// [`crate::Error::CorruptStore`] naming it. A directory another user
    /// could write (group/world-writable, or owned by another user) is
    /// refused with [`crate::Error::Configuration`]; the directory's lock is
    /// waited for at most [`KeystoreOptions::lock_timeout`].
    pub fn open(dir: impl AsRef<Path>, root: RootKey) -> Result<KeyRing> {
        Ok(KeyRing::builder()
            .file_keystore(dir, &root, KeystoreOptions::default())?
            .build())
    }
}

impl KeyRingBuilder {
    /// Uses a file keystore in `dir` as both metadata store and backend.
    pub fn file_keystore(
        self,
        dir: impl AsRef<Path>,
        root: &RootKey,
        options: KeystoreOptions,
    ) -> Result<Self> {
        let ks = Keystore::open(dir.as_ref(), root, &options)?;
        let store = Arc::new(FileStore::load(ks.clone())?);
        let backend = Arc::new(FileBackend::load(ks)?);
        Ok(self.store(store).backend(backend))
    }
}
