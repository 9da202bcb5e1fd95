//! Opening and creating a keystore: the root-key check before any change,
//! recovery of an interrupted root rotation, the empty store.

use super::fs::*;
use super::*;
use crate::error::{Error, Result};
use crate::random::{OsRandom, RandomSource, random_array};
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

impl Keystore {
    /// Opens or creates the keystore at `dir`, as `options.mode` allows.
    pub(crate) fn open(
        dir: &Path,
        root: &RootKey,
        options: &KeystoreOptions,
    ) -> Result<Arc<Keystore>> {
        let exists = dir.join(HEADER).exists() || dir.join(ROTATION_MARKER).exists();
        match options.mode {
            OpenMode::Existing if !exists => return Err(no_keystore(dir)),
            OpenMode::Create if exists => {
                return Err(Error::Configuration(format!(
                    "a keystore already exists at {}; open it instead of creating one",
                    dir.display()
                )));
            }
            _ => create_private_dir(dir)?,
        }
        let uid = current_uid(dir)?;
        check_dir(dir, uid)?;
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, "open", e))?;
        let lm = lock_file
            .metadata()
            .map_err(|e| io_err(&lock_path, "stat", e))?;
        if lm.permissions().mode() & 0o077 != 0 && lm.uid() == uid {
            lock_file
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io_err(&lock_path, "chmod", e))?;
        }
        let rng: Arc<dyn RandomSource> = Arc::new(OsRandom);
        let deadline = Instant::now() + options.lock_timeout;
        flock_bounded(&lock_file, &lock_path, options.lock_timeout, deadline)?;
        let result = Self::open_locked(dir, uid, root, options, rng.as_ref());
        let _ = lock_file.unlock();
        let (keys, store_id, header_bytes, view) = result?;
        Ok(Arc::new(Keystore {
            dir: dir.to_path_buf(),
            keys,
            store_id,
            header_bytes,
            storage: options.storage.clone(),
            durability: options.durability,
            lock_file,
            lock_timeout: options.lock_timeout,
            lock_state: Mutex::new(LockState::default()),
            lock_cv: Condvar::new(),
            view: RwLock::new(view),
            rng,
        }))
    }

    /// Under the lock: verifies the root key before changing anything, then
    /// recovers (finishes a committed root rotation, removes leftovers) and
    /// reads the manifest.
    fn open_locked(
        dir: &Path,
        uid: u32,
        root: &RootKey,
        options: &KeystoreOptions,
        rng: &dyn RandomSource,
    ) -> Result<(Keys, [u8; 16], Vec<u8>, View)> {
        let storage = options.storage.as_ref();
        let weak = options.allow_weak_argon2;
        if let Some(mb) = read_opt(&dir.join(ROTATION_MARKER))? {
            let marker: RotationMarker = serde_json::from_slice(&mb).map_err(|e| {
                corrupt_file(ROTATION_MARKER, format!("not a rotation marker: {e}"))
            })?;
            let header = parse_header(marker.header.as_bytes(), ROTATION_MARKER)?;
            // Only the new root key may finish the rotation.
            let (_, keys, store_id) = verify_root(root, &header, ROTATION_MARKER, weak)?;
            let manifest = unhex(&marker.manifest)
                .ok_or_else(|| corrupt_file(ROTATION_MARKER, "bad manifest"))?;
            match decode_top(&keys.mac, &store_id, &manifest) {
                Ok(_) => {}
                Err(ViewErr::E(e)) => return Err(e),
                Err(_) => return Err(corrupt_file(ROTATION_MARKER, "manifest not authentic")),
            }
            finish_rotation(dir, storage, options.durability, &marker)?;
        }
        let Some(header_bytes) = read_opt(&dir.join(HEADER))? else {
            // A store whose header is gone is not silently replaced by a new,
            // empty one (whose first open would remove the old records).
            for sub in RECORD_DIRS {
                let d = dir.join(sub);
                if std::fs::read_dir(&d).is_ok_and(|mut e| e.next().is_some()) {
                    return Err(corrupt_file(
                        HEADER,
                        format!("missing, but {sub}/ holds records: restore it from a backup"),
                    ));
                }
            }
            if options.mode == OpenMode::Existing {
                return Err(no_keystore(dir));
            }
            return Self::create(dir, root, options, rng);
        };
        if options.mode == OpenMode::Create {
            // Created by another process since the check above.
            return Err(Error::Configuration(format!(
                "a keystore already exists at {}; open it instead of creating one",
                dir.display()
            )));
        }
        let header = parse_header(&header_bytes, HEADER)?;
        let (_, keys, store_id) = verify_root(root, &header, HEADER, weak)?;
        // The key is right: from here on, repairs are allowed.
        for sub in RECORD_DIRS.iter().chain([&MANIFEST_DIR]) {
            let d = dir.join(sub);
            create_private_dir(&d)?;
            check_dir(&d, uid)?;
        }
        let view = match read_view(dir, &keys.mac, &store_id, None) {
            Ok(v) => v,
            Err(ViewErr::E(e)) => return Err(e),
            Err(ViewErr::NotAuthentic(f)) => {
                return Err(corrupt_file(
                    &f,
                    "not authentic: tampered, truncated, or from another store",
                ));
            }
            Err(ViewErr::Retry) => {
                return Err(corrupt_file(
                    MANIFEST,
                    "a manifest shard it lists is missing (deleted or rolled back)",
                ));
            }
        };
        collect_garbage(dir, storage, options.durability, &view)?;
        Ok((keys, store_id, header_bytes, view))
    }

    /// A new, empty store: directories, an empty manifest, then the header
    /// (whose presence means the store exists).
    fn create(
        dir: &Path,
        root: &RootKey,
        options: &KeystoreOptions,
        rng: &dyn RandomSource,
    ) -> Result<(Keys, [u8; 16], Vec<u8>, View)> {
        for sub in RECORD_DIRS.iter().chain([&MANIFEST_DIR]) {
            create_private_dir(&dir.join(sub))?;
        }
        let store_id: [u8; 16] = random_array(rng)?;
        let kdf = new_kdf(root, options, rng)?;
        let root_bytes = derive_root(root, &kdf, options.allow_weak_argon2)?;
        let keys = derive_keys(&root_bytes)?;
        let storage = options.storage.as_ref();
        let top = encode_top(&keys.mac, &store_id, 0, &[0; SHARDS])?;
        atomic_write(storage, options.durability, dir, MANIFEST, &top)?;
        let header_bytes = build_header(kdf, &keys, &store_id, rng)?;
        atomic_write(storage, options.durability, dir, HEADER, &header_bytes)?;
        let view = match read_view(dir, &keys.mac, &store_id, None) {
            Ok(v) => v,
            Err(ViewErr::E(e)) => return Err(e),
            Err(_) => return Err(corrupt_file(MANIFEST, "changed while being created")),
        };
        Ok((keys, store_id, header_bytes, view))
    }
}
