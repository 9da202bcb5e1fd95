//! The on-disk keystore shared by [`super::FileStore`] and
//! [`crate::backend::FileBackend`]: one directory, one root key, one record
//! format (docs/FORMAT.md, "File keystore").

use crate::crypto::{Cipher, NONCE_LEN};
use crate::error::{Error, Result};
use crate::key::SymmetricAlgorithm;
use crate::random::{RandomSource, random_array};
use crate::secret::SecretBytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

mod backup;
mod fs;
pub(crate) mod keys;
mod manifest;
mod open;
mod options;
mod records;
use fs::*;

pub use backup::{export_backup, restore_backup, rotate_root_key};
use keys::*;
use manifest::*;
pub use options::*;
use records::*;

const MAGIC: &[u8; 4] = b"SRKS";
const RECORD_VERSION: u8 = 2;
/// The keystore format this version reads and writes (header `version`).
const FORMAT_VERSION: u32 = 2;
const HEADER: &str = "header.json";
const MANIFEST: &str = "MANIFEST";
const MANIFEST_DIR: &str = "manifest";
const MANIFEST_MAGIC: &[u8; 4] = b"SRKM";
const SHARD_MAGIC: &[u8; 4] = b"SRKN";
/// Manifest shards: a change rewrites one shard, not the whole manifest.
const SHARDS: usize = 256;
const ROTATION_MARKER: &str = "ROOT-ROTATION.json";
const CHECK_TEXT: &[u8] = b"strongroom keystore check";
const RECORD_DIRS: [&str; 4] = ["keys", "material", "aliases", "records"];
const HKDF_SALT: &[u8] = b"strongroom keystore v2";

/// Record kinds (bound into each record's associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Check = 0,
    Key = 1,
    Material = 2,
    Alias = 3,
    /// A generic record (the secrets store): see [`encode_generic`].
    Record = 4,
}

/// The plaintext of a generic record: its kind and name (so a root-key
/// rotation can name the file again, and a read can check it got the
/// record it asked for), then its bytes. docs/FORMAT.md, "Generic records".
pub(crate) fn encode_generic(kind: &str, name: &str, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let kl = u16::try_from(kind.len()).map_err(|_| Error::invalid("record kind too long"))?;
    let nl = u16::try_from(name.len()).map_err(|_| Error::invalid("record name too long"))?;
    let mut out = Zeroizing::new(Vec::with_capacity(
        4 + kind.len() + name.len() + bytes.len(),
    ));
    out.extend_from_slice(&kl.to_be_bytes());
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&nl.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(bytes);
    Ok(out)
}

/// The inverse of [`encode_generic`]: (kind, name, bytes), or `None` if
/// malformed.
pub(crate) fn decode_generic(pt: &[u8]) -> Option<(String, String, &[u8])> {
    let take = |b: &[u8]| -> Option<(String, usize)> {
        let l = usize::from(u16::from_be_bytes(b.get(..2)?.try_into().ok()?));
        let s = std::str::from_utf8(b.get(2..2 + l)?).ok()?.to_owned();
        Some((s, 2 + l))
    };
    let (kind, a) = take(pt)?;
    let (name, b) = take(pt.get(a..)?)?;
    Some((kind, name, pt.get(a + b..)?))
}

#[derive(Debug, Default)]
struct LockState {
    owner: Option<ThreadId>,
    depth: usize,
}

/// The keystore: directory, keys, storage, lock, manifest.
pub(crate) struct Keystore {
    pub dir: PathBuf,
    keys: Keys,
    store_id: [u8; 16],
    header_bytes: Vec<u8>,
    storage: Arc<dyn Storage>,
    durability: Durability,
    lock_file: File,
    lock_timeout: Duration,
    lock_state: Mutex<LockState>,
    lock_cv: Condvar,
    view: RwLock<View>,
    rng: Arc<dyn RandomSource>,
}

impl fmt::Debug for Keystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Holds the keystore's cross-process write lock (re-entrant within a
/// thread: a backend write inside a store update joins it).
pub(crate) struct WriteLock<'a> {
    ks: &'a Keystore,
}

impl Drop for WriteLock<'_> {
    fn drop(&mut self) {
        let mut st = self.ks.lock_state.lock().unwrap_or_else(|e| e.into_inner());
        st.depth = st.depth.saturating_sub(1);
        if st.depth == 0 {
            let _ = self.ks.lock_file.unlock();
            st.owner = None;
            self.ks.lock_cv.notify_all();
        }
    }
}

impl Keystore {
    /// The cross-process write lock, waited for at most the lock timeout.
    /// Brings the manifest up to date before returning.
    pub(crate) fn lock(&self) -> Result<WriteLock<'_>> {
        let me = std::thread::current().id();
        let deadline = Instant::now() + self.lock_timeout;
        let lock_path = self.dir.join("LOCK");
        {
            let mut st = self.lock_state.lock().unwrap_or_else(|e| e.into_inner());
            if st.owner == Some(me) {
                st.depth += 1;
                return Ok(WriteLock { ks: self });
            }
            while st.owner.is_some() {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::Other(Arc::new(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "keystore: {} is held by another thread; gave up after {:?}",
                            lock_path.display(),
                            self.lock_timeout
                        ),
                    ))));
                }
                st = self
                    .lock_cv
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            st.owner = Some(me);
            st.depth = 1;
        }
        // From here the guard releases the in-process lock whatever happens
        // (unlocking a file lock not taken is harmless).
        let guard = WriteLock { ks: self };
        flock_bounded(&self.lock_file, &lock_path, self.lock_timeout, deadline)?;
        if self.dir.join(ROTATION_MARKER).exists() {
            return Err(Error::Configuration(
                "an interrupted root-key rotation is pending in this keystore: open it \
                 with the new root key to finish the rotation"
                    .into(),
            ));
        }
        self.refresh()?;
        Ok(guard)
    }

    /// Brings this ring's view of the manifest up to date: a `stat` when
    /// nothing changed, else the manifest and the changed shards. Fails if
    /// the manifest went back in time, or no longer authenticates (the root
    /// key was rotated: [`Error::WrongRootKey`]).
    pub(crate) fn refresh(&self) -> Result<()> {
        let path = self.dir.join(MANIFEST);
        for _ in 0..8 {
            let sig = match std::fs::metadata(&path) {
                Ok(m) => Some(stat_sig(&m)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(io_err(&path, "stat", e)),
            };
            let old = {
                let v = self.view.read().unwrap_or_else(|e| e.into_inner());
                if sig.is_some() && sig == v.stat {
                    return Ok(());
                }
                v.clone()
            };
            match read_view(&self.dir, &self.keys.mac, &self.store_id, Some(&old)) {
                Ok(v) => {
                    let mut cur = self.view.write().unwrap_or_else(|e| e.into_inner());
                    if v.counter < cur.counter {
                        return Err(corrupt_file(
                            MANIFEST,
                            format!(
                                "the store went back from change {} to change {}: \
                                 rolled back to an older copy",
                                cur.counter, v.counter
                            ),
                        ));
                    }
                    *cur = v;
                    return Ok(());
                }
                Err(ViewErr::Retry) => continue,
                Err(ViewErr::E(e)) => return Err(e),
                Err(ViewErr::NotAuthentic(f)) => {
                    let header = std::fs::read(self.dir.join(HEADER)).unwrap_or_default();
                    if header != self.header_bytes || self.dir.join(ROTATION_MARKER).exists() {
                        // Rotated under us: this ring's key is no longer the store's.
                        return Err(Error::WrongRootKey);
                    }
                    return Err(corrupt_file(
                        &f,
                        "not authentic: tampered, truncated, or from another store",
                    ));
                }
            }
        }
        Err(corrupt_file(MANIFEST, "changing too fast to read"))
    }

    /// The store-wide change counter of this ring's view.
    pub(crate) fn counter(&self) -> u64 {
        self.view.read().unwrap_or_else(|e| e.into_inner()).counter
    }

    /// The generation of record `name` in this ring's view.
    pub(crate) fn gen_of(&self, name: &str) -> Option<u64> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).shards[shard_of(name)]
            .entries
            .get(name)
            .copied()
    }

    /// Every record under `sub/` with its generation.
    pub(crate) fn names(&self, sub: &str) -> Vec<(String, u64)> {
        let prefix = format!("{sub}/");
        let v = self.view.read().unwrap_or_else(|e| e.into_inner());
        v.shards
            .iter()
            .flat_map(|s| s.entries.iter())
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(n, g)| (n.clone(), *g))
            .collect()
    }

    /// The record name of an alias.
    pub(crate) fn alias_name(&self, alias: &str) -> Result<String> {
        alias_name_with(&self.keys.names, alias)
    }

    /// The record name of generic record `name` of `kind`.
    pub(crate) fn generic_name(&self, kind: &str, name: &str) -> Result<String> {
        generic_name_with(&self.keys.names, kind, name)
    }

    /// Reads and authenticates the current generation of record `name`:
    /// `None` if the manifest does not list it.
    pub(crate) fn read(&self, kind: Kind, name: &str) -> Result<Option<(u64, Zeroizing<Vec<u8>>)>> {
        for _ in 0..8 {
            let Some(gn) = self.gen_of(name) else {
                return Ok(None);
            };
            let rel = record_file(name, gn);
            let path = self.dir.join(&rel);
            match std::fs::read(&path) {
                Ok(b) => {
                    return open_with(&self.keys.record, kind, &self.store_id, gn, &rel, &b)
                        .map(|pt| Some((gn, pt)));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Replaced by a newer change since this view was read?
                    let before = self.counter();
                    self.refresh()?;
                    if self.counter() == before {
                        return Err(corrupt_file(
                            &rel,
                            "missing: the manifest lists it (deleted or rolled back)",
                        ));
                    }
                }
                Err(e) => return Err(io_err(&path, "read", e)),
            }
        }
        Err(corrupt_file(name, "changing too fast to read"))
    }

    /// Writes records and removes others as one change (one manifest
    /// commit), under the lock. Returns the new change counter. On error
    /// nothing changed, unless only the final directory fsync failed (then
    /// the change is visible but may not survive a power loss).
    pub(crate) fn apply(
        &self,
        _lock: &WriteLock<'_>,
        puts: &[(Kind, &str, &[u8])],
        removes: &[&str],
    ) -> Result<u64> {
        let cur = self.view.read().unwrap_or_else(|e| e.into_inner()).clone();
        let gn = cur
            .counter
            .checked_add(1)
            .ok_or_else(|| Error::invalid("keystore change counter exhausted"))?;
        let mut shards = cur.shards.clone();
        let mut written: Vec<PathBuf> = Vec::new();
        let mut obsolete: Vec<PathBuf> = Vec::new();
        let mut committed = false;
        let result = (|| -> Result<()> {
            let mut touched = BTreeSet::new();
            for (kind, name, pt) in puts {
                if !valid_name(name) {
                    return Err(Error::invalid(format!("bad record name {name:?}")));
                }
                let rel = record_file(name, gn);
                let bytes = seal_with(
                    &self.keys.record,
                    self.rng.as_ref(),
                    *kind,
                    &self.store_id,
                    gn,
                    &rel,
                    pt,
                )?;
                self.write_new(&rel, &bytes, &mut written)?;
                let i = shard_of(name);
                if let Some(old) = Arc::make_mut(&mut shards[i])
                    .entries
                    .insert((*name).to_owned(), gn)
                {
                    obsolete.push(self.dir.join(record_file(name, old)));
                }
                touched.insert(i);
            }
            for name in removes {
                let i = shard_of(name);
                if let Some(old) = Arc::make_mut(&mut shards[i]).entries.remove(*name) {
                    obsolete.push(self.dir.join(record_file(name, old)));
                    touched.insert(i);
                }
            }
            for &i in &touched {
                let s = Arc::make_mut(&mut shards[i]);
                if s.gn > 0 {
                    obsolete.push(self.dir.join(shard_file(i, s.gn)));
                }
                if s.entries.is_empty() {
                    s.gn = 0;
                } else {
                    s.gn = gn;
                    let bytes = encode_shard(&self.keys.mac, &self.store_id, i, s)?;
                    self.write_new(&shard_file(i, gn), &bytes, &mut written)?;
                }
            }
            // The new files reach the disk before the manifest names them.
            if self.durability == Durability::Full {
                let dirs: BTreeSet<&Path> = written.iter().filter_map(|p| p.parent()).collect();
                for d in dirs {
                    self.storage
                        .fsync_dir(d)
                        .map_err(|e| io_err(d, "fsync", e))?;
                }
            }
            let gens: Vec<u64> = shards.iter().map(|s| s.gn).collect();
            let top = encode_top(&self.keys.mac, &self.store_id, gn, &gens)?;
            // The commit point.
            self.write_file(MANIFEST, &top).map_err(|(renamed, e)| {
                committed = renamed;
                e
            })?;
            committed = true;
            Ok(())
        })();
        if !committed {
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
            return result.map(|_| gn);
        }
        let stat = std::fs::metadata(self.dir.join(MANIFEST))
            .ok()
            .map(|m| stat_sig(&m));
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = View {
            counter: gn,
            stat,
            shards,
        };
        // Superseded files: best effort, and not fsynced (whatever a crash
        // leaves is unreferenced, and the next open removes it).
        for p in &obsolete {
            let _ = self.storage.remove(p);
        }
        result.map(|_| gn)
    }

    /// Writes a file under a name no manifest references yet (so it needs
    /// no temp file and rename: until the commit, nobody reads it).
    fn write_new(&self, rel: &str, bytes: &[u8], written: &mut Vec<PathBuf>) -> Result<()> {
        let path = self.dir.join(rel);
        written.push(path.clone());
        self.storage
            .write(&path, bytes)
            .map_err(|e| io_err(&path, "write", e))?;
        if self.durability == Durability::Full {
            self.storage
                .fsync(&path)
                .map_err(|e| io_err(&path, "fsync", e))?;
        }
        Ok(())
    }

    /// Writes `rel` atomically; the error says whether the rename happened.
    fn write_file(&self, rel: &str, bytes: &[u8]) -> std::result::Result<(), (bool, Error)> {
        let path = self.dir.join(rel);
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        atomic_write_inner(self.storage.as_ref(), self.durability, &dir, &name, bytes)
    }

    /// Re-encrypts every record under `new_root`, crash-safely: all records
    /// and manifest shards are written under the new key as new files, then
    /// a marker holding the new header and manifest commits the switch, then
    /// the manifest and header are replaced and the old files removed. An
    /// interrupted rotation is finished (marker present, by an open with the
    /// new key) or forgotten (no marker: the new files are unreferenced).
    pub(crate) fn rotate_root(&self, new_root: &RootKey, options: &KeystoreOptions) -> Result<()> {
        let _lock = self.lock()?;
        let kdf = new_kdf(new_root, options, self.rng.as_ref())?;
        let root_bytes = derive_root(new_root, &kdf, options.allow_weak_argon2)?;
        let new_keys = derive_keys(&root_bytes)?;
        let cur = self.view.read().unwrap_or_else(|e| e.into_inner()).clone();
        let gn = cur
            .counter
            .checked_add(1)
            .ok_or_else(|| Error::invalid("keystore change counter exhausted"))?;
        let mut shards: Vec<Shard> = vec![Shard::default(); SHARDS];
        for s in &cur.shards {
            for name in s.entries.keys() {
                let kind = kind_of(name).ok_or_else(|| corrupt_file(name, "unknown record"))?;
                let (_, pt) = self
                    .read(kind, name)?
                    .ok_or_else(|| corrupt_file(name, "vanished during rotation"))?;
                let new_name = if kind == Kind::Alias {
                    let (alias, _): (String, serde_json::Value) = serde_json::from_slice(&pt)
                        .map_err(|e| corrupt_file(name, format!("bad alias record: {e}")))?;
                    alias_name_with(&new_keys.names, &alias)?
                } else if kind == Kind::Record {
                    let (k, n, _) =
                        decode_generic(&pt).ok_or_else(|| corrupt_file(name, "bad record"))?;
                    generic_name_with(&new_keys.names, &k, &n)?
                } else {
                    name.clone()
                };
                let rel = record_file(&new_name, gn);
                let sealed = seal_with(
                    &new_keys.record,
                    self.rng.as_ref(),
                    kind,
                    &self.store_id,
                    gn,
                    &rel,
                    &pt,
                )?;
                self.write_file(&rel, &sealed).map_err(|(_, e)| e)?;
                shards[shard_of(&new_name)].entries.insert(new_name, gn);
            }
        }
        let mut gens = vec![0u64; SHARDS];
        for (i, s) in shards.iter_mut().enumerate() {
            if !s.entries.is_empty() {
                s.gn = gn;
                gens[i] = gn;
                let bytes = encode_shard(&new_keys.mac, &self.store_id, i, s)?;
                self.write_file(&shard_file(i, gn), &bytes)
                    .map_err(|(_, e)| e)?;
            }
        }
        let top = encode_top(&new_keys.mac, &self.store_id, gn, &gens)?;
        let header = build_header(kdf, &new_keys, &self.store_id, self.rng.as_ref())?;
        let marker = RotationMarker {
            header: String::from_utf8(header).map_err(|_| Error::invalid("header is not UTF-8"))?,
            manifest: hex(&top),
        };
        let marker_bytes = serde_json::to_vec(&marker).map_err(|e| Error::Other(Arc::new(e)))?;
        // The commit point.
        self.write_file(ROTATION_MARKER, &marker_bytes)
            .map_err(|(_, e)| e)?;
        finish_rotation(&self.dir, self.storage.as_ref(), self.durability, &marker)?;
        let view = View {
            counter: gn,
            stat: None,
            shards: shards.into_iter().map(Arc::new).collect(),
        };
        collect_garbage(&self.dir, self.storage.as_ref(), self.durability, &view)
    }

    /// Every file of the store, for a backup: header, manifest, shards,
    /// records (relative path, bytes).
    fn snapshot(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut rels = vec![MANIFEST.to_owned()];
        for (i, s) in view.shards.iter().enumerate() {
            if s.gn > 0 {
                rels.push(shard_file(i, s.gn));
            }
            for (name, gn) in &s.entries {
                rels.push(record_file(name, *gn));
            }
        }
        rels.iter()
            .map(|rel| {
                let p = self.dir.join(rel);
                std::fs::read(&p)
                    .map(|d| (rel.clone(), d))
                    .map_err(|e| io_err(&p, "read", e))
            })
            .collect()
    }

    /// The backup key (derived from the root key, separate from records).
    pub(crate) fn backup_cipher(&self, root: &RootKey) -> Result<Cipher> {
        let header = parse_header(&self.header_bytes, HEADER)?;
        backup_cipher_from(&derive_root(root, &header.kdf, true)?)
    }

    pub(crate) fn rng(&self) -> &dyn RandomSource {
        self.rng.as_ref()
    }
}
