//! Opening a ring on a file keystore.

use super::{KeyRing, KeyRingBuilder};
use crate::backend::FileBackend;
use crate::error::Result;
use crate::store::keystore::Keystore;
use crate::store::{FileStore, KeystoreOptions, OpenMode, RootKey};
use std::path::Path;
use std::sync::Arc;

impl KeyRing {
    /// Opens the existing keystore in `dir`: key metadata, aliases, tags,
    /// states, policies and grants, and master-key material encrypted at
    /// rest under `root` (docs/FORMAT.md, "File keystore"). A path that does
    /// not exist or holds no keystore is [`crate::Error::Configuration`]
    /// and nothing is created: make a new store with [`KeyRing::create`].
    ///
    /// A wrong root key or passphrase is [`crate::Error::WrongRootKey`] and
    /// changes nothing; a damaged, rolled-back or old-format file is
    /// [`crate::Error::CorruptStore`] naming it. A directory another user
    /// could write (group/world-writable, or owned by another user) is
    /// refused with [`crate::Error::Configuration`]; the directory's lock is
    /// waited for at most [`KeystoreOptions::lock_timeout`].
    pub fn open(dir: impl AsRef<Path>, root: RootKey) -> Result<KeyRing> {
        Self::file(dir, root, OpenMode::Existing)
    }

    /// Creates a new, empty keystore in `dir` (and missing parent
    /// directories, mode 0700) and opens it. A directory that already holds
    /// a keystore is [`crate::Error::Configuration`] and is left untouched.
    pub fn create(dir: impl AsRef<Path>, root: RootKey) -> Result<KeyRing> {
        Self::file(dir, root, OpenMode::Create)
    }

    /// Opens the keystore in `dir`, creating it if there is none: for
    /// programs that own their directory (tests, first-run setup). Prefer
    /// [`KeyRing::open`] where a mistyped path must not become a new store.
    pub fn open_or_create(dir: impl AsRef<Path>, root: RootKey) -> Result<KeyRing> {
        Self::file(dir, root, OpenMode::OpenOrCreate)
    }

    fn file(dir: impl AsRef<Path>, root: RootKey, mode: OpenMode) -> Result<KeyRing> {
        Ok(KeyRing::builder()
            .file_keystore(dir, &root, KeystoreOptions::default().mode(mode))?
            .build())
    }
}

impl KeyRingBuilder {
    /// Uses a file keystore in `dir` as both metadata store and backend.
    /// [`KeystoreOptions::mode`] says whether it must exist (the default),
    /// must be new, or either.
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
