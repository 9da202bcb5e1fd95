//! The on-disk keystore shared by [`super::FileStore`] and
//! [`crate::backend::FileBackend`]: one directory, one root key, one record
//! format (docs/FORMAT.md, "File keystore").

use crate::crypto::{Cipher, NONCE_LEN};
use crate::error::{Error, Result};
use crate::key::SymmetricAlgorithm;
use crate::random::{OsRandom, RandomSource, random_array};
use crate::secret::SecretBytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"SRKS";
const RECORD_VERSION: u8 = 1;
const HEADER: &str = "header.json";
const ROTATION_MARKER: &str = "ROOT-ROTATION.json";
const CHECK_TEXT: &[u8] = b"strongroom keystore check";

/// Record kinds (bound into each record's associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Check = 0,
    Key = 1,
    Material = 2,
    Alias = 3,
}

/// The filesystem operations of the file keystore. The real implementation
/// is [`RealStorage`]; tests substitute one that fails the Nth operation.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates (or truncates) `path` and writes `data` to it.
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Flushes `path`'s data to stable storage.
    fn fsync(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to` (replacing `to`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Flushes a directory's entries (so renames and removals are durable).
    fn fsync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

impl Storage for RealStorage {
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        f.write_all(data)
    }
    fn fsync(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn fsync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// How hard the keystore works to make each change durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// A change returns only once it is on disk: temp file, fsync, rename,
    /// fsync of the directory. The default.
    #[default]
    Full,
    /// No fsync: atomic renames only. A crash never tears a record but may
    /// lose recent changes. For bulk loads and tests only.
    NoSync,
}

/// Argon2id parameters for passphrase root keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
}

impl Default for Argon2Params {
    /// 19 MiB, 2 iterations, 1 lane (the OWASP recommendation for Argon2id).
    fn default() -> Self {
        Argon2Params {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

/// Options of a file keystore.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeystoreOptions {
    /// Durability of each change.
    pub durability: Durability,
    /// Argon2id parameters used when a passphrase store is created (an
    /// existing store keeps the parameters in its header).
    pub argon2: Argon2Params,
    /// The filesystem (replace only to inject faults in tests).
    pub storage: Arc<dyn Storage>,
}

impl Default for KeystoreOptions {
    fn default() -> Self {
        KeystoreOptions {
            durability: Durability::Full,
            argon2: Argon2Params::default(),
            storage: Arc::new(RealStorage),
        }
    }
}

impl KeystoreOptions {
    /// Sets the durability.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
    /// Sets the Argon2id parameters for new passphrase stores.
    pub fn argon2(mut self, p: Argon2Params) -> Self {
        self.argon2 = p;
        self
    }
    /// Sets the storage implementation.
    pub fn storage(mut self, s: Arc<dyn Storage>) -> Self {
        self.storage = s;
        self
    }
}

/// The key that encrypts everything the keystore stores.
pub enum RootKey {
    /// 32 random bytes, kept outside the keystore (a file, an environment
    /// variable, a secret manager).
    Raw(SecretBytes),
    /// A passphrase, stretched with Argon2id (parameters and salt in the
    /// store header).
    Passphrase(SecretBytes),
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootKey::Raw(_) => f.write_str("RootKey::Raw(<redacted>)"),
            RootKey::Passphrase(_) => f.write_str("RootKey::Passphrase(<redacted>)"),
        }
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl RootKey {
    /// 32 raw bytes.
    pub fn raw(bytes: [u8; 32]) -> Self {
        let k = Zeroizing::new(bytes);
        RootKey::Raw(SecretBytes::from_slice(k.as_slice()))
    }

    /// A passphrase.
    pub fn passphrase(passphrase: &str) -> Self {
        RootKey::Passphrase(SecretBytes::from_slice(passphrase.as_bytes()))
    }

    /// 32 raw bytes from a file holding them raw or as 64 hex characters.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let data = Zeroizing::new(std::fs::read(path.as_ref()).map_err(|e| {
            Error::Configuration(format!(
                "cannot read root key file {}: {e}",
                path.as_ref().display()
            ))
        })?);
        Self::from_bytes_or_hex(&data)
    }

    /// 32 raw bytes from an environment variable holding 64 hex characters.
    pub fn from_env(var: &str) -> Result<Self> {
        let v =
            Zeroizing::new(std::env::var(var).map_err(|_| {
                Error::Configuration(format!("environment variable {var} is not set"))
            })?);
        Self::from_bytes_or_hex(v.as_bytes())
    }

    fn from_bytes_or_hex(data: &[u8]) -> Result<Self> {
        if data.len() == 32 {
            return Ok(RootKey::Raw(SecretBytes::from_slice(data)));
        }
        let text = std::str::from_utf8(data)
            .ok()
            .and_then(|t| unhex(t).map(Zeroizing::new));
        match text {
            Some(b) if b.len() == 32 => Ok(RootKey::Raw(SecretBytes::from_slice(&b))),
            _ => Err(Error::Configuration(
                "a raw root key must be 32 bytes, or 64 hex characters".into(),
            )),
        }
    }
}

/// KDF description in the header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Kdf {
    Raw,
    Argon2id {
        /// Argon2 version (0x13 = 19).
        version: u32,
        m_kib: u32,
        t: u32,
        p: u32,
        salt: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    format: String,
    version: u32,
    kdf: Kdf,
    /// A check record: proves the root key before anything is touched.
    check: String,
}

/// The keystore: directory, record key, storage, lock.
pub(crate) struct Keystore {
    pub dir: PathBuf,
    record_key: Cipher,
    storage: Arc<dyn Storage>,
    durability: Durability,
    lock_file: File,
    in_process: Mutex<()>,
    rng: Arc<dyn RandomSource>,
}

impl fmt::Debug for Keystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Holds the keystore's cross-process write lock (and the in-process one).
pub(crate) struct WriteLock<'a> {
    file: &'a File,
    _guard: MutexGuard<'a, ()>,
}

impl Drop for WriteLock<'_> {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

fn derive_root(root: &RootKey, kdf: &Kdf) -> Result<Zeroizing<[u8; 32]>> {
    match (root, kdf) {
        (RootKey::Raw(b), Kdf::Raw) => {
            let k: [u8; 32] = b
                .expose_secret()
                .try_into()
                .map_err(|_| Error::Configuration("a raw root key must be 32 bytes".into()))?;
            Ok(Zeroizing::new(k))
        }
        (
            RootKey::Passphrase(p),
            Kdf::Argon2id {
                version,
                m_kib,
                t,
                p: lanes,
                salt,
            },
        ) => {
            if *version != 0x13 {
                return Err(Error::Configuration(format!(
                    "unsupported Argon2 version {version}"
                )));
            }
            let salt = unhex(salt).ok_or_else(|| Error::CorruptStore {
                file: HEADER.into(),
                reason: "bad salt".into(),
            })?;
            let params = argon2::Params::new(*m_kib, *t, *lanes, Some(32)).map_err(|e| {
                Error::CorruptStore {
                    file: HEADER.into(),
                    reason: format!("bad Argon2 parameters: {e}"),
                }
            })?;
            let mut out = Zeroizing::new([0u8; 32]);
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(p.expose_secret(), &salt, out.as_mut_slice())
                .map_err(|e| Error::Configuration(format!("Argon2id failed: {e}")))?;
            Ok(out)
        }
        (RootKey::Raw(_), Kdf::Argon2id { .. }) => Err(Error::Configuration(
            "this keystore is protected by a passphrase, not a raw key".into(),
        )),
        (RootKey::Passphrase(_), Kdf::Raw) => Err(Error::Configuration(
            "this keystore is protected by a raw key, not a passphrase".into(),
        )),
    }
}

/// A header for `kdf`, with its check record sealed under `cipher`.
fn build_header(kdf: Kdf, cipher: &Cipher, rng: &dyn RandomSource) -> Result<(Header, Vec<u8>)> {
    let check = seal_with(cipher, rng, Kind::Check, HEADER, CHECK_TEXT)?;
    let header = Header {
        format: "strongroom-keystore".into(),
        version: 1,
        kdf,
        check: hex(&check),
    };
    let bytes = serde_json::to_vec_pretty(&header).map_err(|e| Error::Other(Arc::new(e)))?;
    Ok((header, bytes))
}

/// KDF parameters for a new header protected by `root`.
fn new_kdf(root: &RootKey, options: &KeystoreOptions, rng: &dyn RandomSource) -> Result<Kdf> {
    Ok(match root {
        RootKey::Raw(_) => Kdf::Raw,
        RootKey::Passphrase(_) => Kdf::Argon2id {
            version: 0x13,
            m_kib: options.argon2.m_kib,
            t: options.argon2.t,
            p: options.argon2.p,
            salt: hex(&random_array::<16>(rng)?),
        },
    })
}

/// The archive key of backups, derived from the root beside the record key.
fn backup_cipher_from(root: &Zeroizing<[u8; 32]>) -> Result<Cipher> {
    let (_records, backup) = crate::crypto::hkdf_sha256_pair(
        b"strongroom keystore v1",
        root.as_slice(),
        &[b"records"],
        &[b"backup"],
    )?;
    Ok(Cipher::new(SymmetricAlgorithm::Aes256Gcm, &backup))
}

fn record_cipher(root: &[u8; 32]) -> Result<Cipher> {
    let (records, _backup) = crate::crypto::hkdf_sha256_pair(
        b"strongroom keystore v1",
        root,
        &[b"records"],
        &[b"backup"],
    )?;
    Ok(Cipher::new(SymmetricAlgorithm::Aes256Gcm, &records))
}

fn io_err(file: &Path, what: &str, e: io::Error) -> Error {
    Error::Other(Arc::new(io::Error::new(
        e.kind(),
        format!("keystore: {what} {}: {e}", file.display()),
    )))
}

impl Keystore {
    /// Opens or creates the keystore at `dir`.
    pub(crate) fn open(
        dir: &Path,
        root: &RootKey,
        options: &KeystoreOptions,
    ) -> Result<Arc<Keystore>> {
        for sub in ["", "keys", "material", "aliases"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| io_err(&d, "create", e))?;
        }
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, "open", e))?;
        let rng: Arc<dyn RandomSource> = Arc::new(OsRandom);
        // Take the lock for the header / rotation recovery.
        lock_file
            .lock()
            .map_err(|e| io_err(&lock_path, "lock", e))?;
        let result = (|| {
            Self::recover_root_rotation(dir, options)?;
            let header_path = dir.join(HEADER);
            let header: Header = match std::fs::read(&header_path) {
                Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::CorruptStore {
                    file: HEADER.into(),
                    reason: format!("not a keystore header: {e}"),
                })?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Self::create_header(dir, root, options, rng.as_ref())?
                }
                Err(e) => return Err(io_err(&header_path, "read", e)),
            };
            if header.format != "strongroom-keystore" || header.version != 1 {
                return Err(Error::CorruptStore {
                    file: HEADER.into(),
                    reason: format!(
                        "unknown format {:?} version {}",
                        header.format, header.version
                    ),
                });
            }
            let root_bytes = derive_root(root, &header.kdf)?;
            let cipher = record_cipher(&root_bytes)?;
            let check = unhex(&header.check).ok_or(Error::WrongRootKey)?;
            open_with(&cipher, Kind::Check, HEADER, &check).map_err(|_| Error::WrongRootKey)?;
            Ok(cipher)
        })();
        let _ = lock_file.unlock();
        let record_key = result?;
        let ks = Keystore {
            dir: dir.to_path_buf(),
            record_key,
            storage: options.storage.clone(),
            durability: options.durability,
            lock_file,
            in_process: Mutex::new(()),
            rng,
        };
        Ok(Arc::new(ks))
    }

    fn create_header(
        dir: &Path,
        root: &RootKey,
        options: &KeystoreOptions,
        rng: &dyn RandomSource,
    ) -> Result<Header> {
        let kdf = new_kdf(root, options, rng)?;
        let root_bytes = derive_root(root, &kdf)?;
        let cipher = record_cipher(&root_bytes)?;
        let (header, bytes) = build_header(kdf, &cipher, rng)?;
        atomic_write(
            options.storage.as_ref(),
            options.durability,
            dir,
            HEADER,
            &bytes,
        )?;
        Ok(header)
    }

    /// Finishes or rolls back an interrupted root-key rotation.
    fn recover_root_rotation(dir: &Path, options: &KeystoreOptions) -> Result<()> {
        let marker = dir.join(ROTATION_MARKER);
        let committed = marker.exists();
        for sub in ["keys", "material", "aliases"] {
            let d = dir.join(sub);
            for entry in std::fs::read_dir(&d).map_err(|e| io_err(&d, "list", e))? {
                let p = entry.map_err(|e| io_err(&d, "list", e))?.path();
                let name = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("")
                    .to_owned();
                if let Some(base) = name.strip_suffix(".new") {
                    if committed {
                        options
                            .storage
                            .rename(&p, &d.join(base))
                            .map_err(|e| io_err(&p, "rename", e))?;
                    } else {
                        options
                            .storage
                            .remove(&p)
                            .map_err(|e| io_err(&p, "remove", e))?;
                    }
                } else if name.starts_with(".tmp-") {
                    options
                        .storage
                        .remove(&p)
                        .map_err(|e| io_err(&p, "remove", e))?;
                }
            }
            if committed && options.durability == Durability::Full {
                options
                    .storage
                    .fsync_dir(&d)
                    .map_err(|e| io_err(&d, "fsync", e))?;
            }
        }
        if committed {
            options
                .storage
                .rename(&marker, &dir.join(HEADER))
                .map_err(|e| io_err(&marker, "rename", e))?;
            if options.durability == Durability::Full {
                options
                    .storage
                    .fsync_dir(dir)
                    .map_err(|e| io_err(dir, "fsync", e))?;
            }
        }
        Ok(())
    }

    /// The cross-process write lock.
    pub(crate) fn lock(&self) -> Result<WriteLock<'_>> {
        let guard = self.in_process.lock().unwrap_or_else(|e| e.into_inner());
        self.lock_file
            .lock()
            .map_err(|e| io_err(&self.dir.join("LOCK"), "lock", e))?;
        Ok(WriteLock {
            file: &self.lock_file,
            _guard: guard,
        })
    }

    pub(crate) fn seal(&self, kind: Kind, rel: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        seal_with(&self.record_key, self.rng.as_ref(), kind, rel, plaintext)
    }

    pub(crate) fn open_record(
        &self,
        kind: Kind,
        rel: &str,
        bytes: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        open_with(&self.record_key, kind, rel, bytes)
    }

    /// Reads and authenticates a record; `None` if the file does not exist.
    pub(crate) fn read(&self, kind: Kind, rel: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let path = self.dir.join(rel);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(self.open_record(kind, rel, &b)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, "read", e)),
        }
    }

    /// Encrypts and writes a record atomically (and durably).
    pub(crate) fn write(&self, kind: Kind, rel: &str, plaintext: &[u8]) -> Result<()> {
        let bytes = self.seal(kind, rel, plaintext)?;
        self.write_raw(rel, &bytes)
    }

    pub(crate) fn write_raw(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(rel);
        let dir = path.parent().unwrap_or(&self.dir).to_path_buf();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        atomic_write(self.storage.as_ref(), self.durability, &dir, &name, bytes)
    }

    pub(crate) fn remove(&self, rel: &str) -> Result<()> {
        let path = self.dir.join(rel);
        match self.storage.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&path, "remove", e)),
        }
        if self.durability == Durability::Full {
            let dir = path.parent().unwrap_or(&self.dir);
            self.storage
                .fsync_dir(dir)
                .map_err(|e| io_err(dir, "fsync", e))?;
        }
        Ok(())
    }

    pub(crate) fn exists(&self, rel: &str) -> bool {
        self.dir.join(rel).exists()
    }

    /// File names in a subdirectory (records only).
    pub(crate) fn list(&self, sub: &str) -> Result<Vec<String>> {
        let d = self.dir.join(sub);
        let mut out = Vec::new();
        for e in std::fs::read_dir(&d).map_err(|e| io_err(&d, "list", e))? {
            let name = e.map_err(|e| io_err(&d, "list", e))?.file_name();
            if let Some(n) = name.to_str()
                && n.ends_with(".rec")
            {
                out.push(n.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Re-encrypts every record under `new_root`, crash-safely: all new
    /// records are written beside the old ones (`*.new`), then a marker with
    /// the new header commits the switch, then files are renamed. An
    /// interrupted rotation is finished (marker present) or rolled back
    /// (no marker) by the next open.
    pub(crate) fn rotate_root(&self, new_root: &RootKey, options: &KeystoreOptions) -> Result<()> {
        let _lock = self.lock()?;
        let kdf = new_kdf(new_root, options, self.rng.as_ref())?;
        let new_root_bytes = derive_root(new_root, &kdf)?;
        let new_cipher = record_cipher(&new_root_bytes)?;
        for (sub, kind) in [
            ("keys", Kind::Key),
            ("material", Kind::Material),
            ("aliases", Kind::Alias),
        ] {
            for name in self.list(sub)? {
                let rel = format!("{sub}/{name}");
                let Some(pt) = self.read(kind, &rel)? else {
                    continue;
                };
                let sealed = seal_with(&new_cipher, self.rng.as_ref(), kind, &rel, &pt)?;
                self.write_raw(&format!("{rel}.new"), &sealed)?;
            }
        }
        let (_header, bytes) = build_header(kdf, &new_cipher, self.rng.as_ref())?;
        // The commit point.
        self.write_raw(ROTATION_MARKER, &bytes)?;
        Self::recover_root_rotation(&self.dir, options)
    }

    /// The backup key (derived from the root key, separate from records).
    pub(crate) fn backup_cipher(&self, root: &RootKey) -> Result<Cipher> {
        let header: Header = serde_json::from_slice(
            &std::fs::read(self.dir.join(HEADER))
                .map_err(|e| io_err(&self.dir.join(HEADER), "read", e))?,
        )
        .map_err(|e| Error::CorruptStore {
            file: HEADER.into(),
            reason: e.to_string(),
        })?;
        backup_cipher_from(&derive_root(root, &header.kdf)?)
    }

    pub(crate) fn rng(&self) -> &dyn RandomSource {
        self.rng.as_ref()
    }
}

fn aad(kind: Kind, rel: &str) -> Vec<u8> {
    let mut a = MAGIC.to_vec();
    a.push(RECORD_VERSION);
    a.push(kind as u8);
    a.extend_from_slice(rel.as_bytes());
    a
}

fn seal_with(
    cipher: &Cipher,
    rng: &dyn RandomSource,
    kind: Kind,
    rel: &str,
    pt: &[u8],
) -> Result<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = random_array(rng)?;
    let mut out = MAGIC.to_vec();
    out.push(RECORD_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&nonce);
    cipher.seal_append(&nonce, &aad(kind, rel), pt, &mut out)?;
    Ok(out)
}

fn open_with(cipher: &Cipher, kind: Kind, rel: &str, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let corrupt = |reason: &str| Error::CorruptStore {
        file: rel.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < 6 + NONCE_LEN + 16 {
        return Err(corrupt("truncated"));
    }
    if &bytes[..4] != MAGIC {
        return Err(corrupt("not a strongroom keystore record"));
    }
    if bytes[4] != RECORD_VERSION {
        return Err(corrupt("unknown record format version"));
    }
    if bytes[5] != kind as u8 {
        return Err(corrupt("record of the wrong kind"));
    }
    let nonce: [u8; NONCE_LEN] = bytes[6..6 + NONCE_LEN]
        .try_into()
        .map_err(|_| corrupt("truncated"))?;
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    cipher
        .open_append(&nonce, &aad(kind, rel), &bytes[6 + NONCE_LEN..], &mut out)
        .map_err(|_| {
            corrupt("not authentic: tampered, truncated, renamed, or from another store")
        })?;
    Ok(out)
}

/// temp file, fsync, rename, fsync dir. On failure the temp file is removed
/// and the destination is untouched (or, if only the directory fsync
/// failed, already replaced).
fn atomic_write(
    storage: &dyn Storage,
    durability: Durability,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<()> {
    let mut suffix = [0u8; 8];
    let _ = getrandom::fill(&mut suffix);
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), hex(&suffix)));
    let target = dir.join(name);
    let steps = || -> io::Result<()> {
        storage.write(&tmp, bytes)?;
        if durability == Durability::Full {
            storage.fsync(&tmp)?;
        }
        storage.rename(&tmp, &target)?;
        Ok(())
    };
    if let Err(e) = steps() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(&target, "write", e));
    }
    if durability == Durability::Full {
        storage
            .fsync_dir(dir)
            .map_err(|e| io_err(dir, "fsync", e))?;
    }
    Ok(())
}

const BACKUP_MAGIC: &[u8; 4] = b"SRKB";

/// Re-encrypts a keystore under a new root key or passphrase, crash-safely
/// (an interrupted rotation is finished or rolled back by the next open).
/// Close every ring using the directory first: a ring opened before the
/// rotation still holds the old record key.
pub fn rotate_root_key(
    dir: impl AsRef<Path>,
    old: &RootKey,
    new: &RootKey,
    options: &KeystoreOptions,
) -> Result<()> {
    let ks = Keystore::open(dir.as_ref(), old, options)?;
    ks.rotate_root(new, options)
}

/// Exports the whole keystore as one encrypted archive file (the records
/// stay encrypted under the root key, and the archive as a whole is
/// authenticated under a key derived from it). Restore it with
/// [`restore_backup`] and the same root key.
pub fn export_backup(
    dir: impl AsRef<Path>,
    root: &RootKey,
    archive: impl AsRef<Path>,
) -> Result<()> {
    let dir = dir.as_ref();
    let ks = Keystore::open(dir, root, &KeystoreOptions::default())?;
    let _lock = ks.lock()?;
    let header =
        std::fs::read(dir.join(HEADER)).map_err(|e| io_err(&dir.join(HEADER), "read", e))?;
    let mut body = Zeroizing::new(Vec::new());
    for sub in ["keys", "material", "aliases"] {
        for name in ks.list(sub)? {
            let rel = format!("{sub}/{name}");
            let data =
                std::fs::read(dir.join(&rel)).map_err(|e| io_err(&dir.join(&rel), "read", e))?;
            let rl = u16::try_from(rel.len()).map_err(|_| Error::invalid("file name too long"))?;
            let dl = u32::try_from(data.len()).map_err(|_| Error::invalid("record too large"))?;
            body.extend_from_slice(&rl.to_be_bytes());
            body.extend_from_slice(rel.as_bytes());
            body.extend_from_slice(&dl.to_be_bytes());
            body.extend_from_slice(&data);
        }
    }
    let hl = u32::try_from(header.len()).map_err(|_| Error::invalid("header too large"))?;
    let mut out = BACKUP_MAGIC.to_vec();
    out.push(1);
    out.extend_from_slice(&hl.to_be_bytes());
    out.extend_from_slice(&header);
    let nonce: [u8; NONCE_LEN] = random_array(ks.rng())?;
    let prefix = out.clone();
    out.extend_from_slice(&nonce);
    ks.backup_cipher(root)?
        .seal_append(&nonce, &prefix, &body, &mut out)?;
    let path = archive.as_ref();
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid("bad archive path"))?;
    atomic_write(&RealStorage, Durability::Full, parent, name, &out)
}

/// Restores an archive made by [`export_backup`] into `new_dir` (which must
/// not exist or be empty), verifying everything before writing, then opens
/// it once to check it.
pub fn restore_backup(
    archive: impl AsRef<Path>,
    root: &RootKey,
    new_dir: impl AsRef<Path>,
) -> Result<()> {
    let path = archive.as_ref();
    let name = path.display().to_string();
    let corrupt = |reason: &str| Error::CorruptStore {
        file: name.clone(),
        reason: reason.to_owned(),
    };
    let data = std::fs::read(path).map_err(|e| io_err(path, "read", e))?;
    let mut r = crate::envelope::Reader::new(&data);
    let magic = r.take(4).map_err(|_| corrupt("truncated"))?;
    if magic != BACKUP_MAGIC || r.u8().map_err(|_| corrupt("truncated"))? != 1 {
        return Err(corrupt("not a strongroom keystore backup"));
    }
    let hl = r.u32().map_err(|_| corrupt("truncated"))? as usize;
    let header_bytes = r.take(hl).map_err(|_| corrupt("truncated"))?;
    let prefix_len = r.pos();
    let nonce: [u8; NONCE_LEN] = r.array().map_err(|_| corrupt("truncated"))?;
    let sealed = r.rest();
    let header: Header = serde_json::from_slice(header_bytes).map_err(|_| corrupt("bad header"))?;
    let cipher = backup_cipher_from(&derive_root(root, &header.kdf)?)?;
    let mut body = Zeroizing::new(Vec::new());
    cipher
        .open_append(&nonce, &data[..prefix_len], sealed, &mut body)
        .map_err(|_| Error::WrongRootKey)?;
    let dir = new_dir.as_ref();
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::invalid(format!("{} is not empty", dir.display())));
    }
    let mut files = Vec::new();
    let mut r = crate::envelope::Reader::new(&body);
    while !r.is_empty() {
        let rl = r.u16().map_err(|_| corrupt("bad archive body"))? as usize;
        let rel = std::str::from_utf8(r.take(rl).map_err(|_| corrupt("bad archive body"))?)
            .map_err(|_| corrupt("bad file name"))?
            .to_owned();
        let dl = r.u32().map_err(|_| corrupt("bad archive body"))? as usize;
        let content = r
            .take(dl)
            .map_err(|_| corrupt("bad archive body"))?
            .to_vec();
        let ok_name = matches!(rel.split_once('/'), Some((sub, f)) if ["keys", "material", "aliases"].contains(&sub)
            && !f.contains('/') && !f.starts_with('.') && f.ends_with(".rec"));
        if !ok_name {
            return Err(corrupt("archive names a file outside the keystore"));
        }
        files.push((rel, content));
    }
    for sub in ["keys", "material", "aliases"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| io_err(&d, "create", e))?;
    }
    for (rel, content) in &files {
        let p = dir.join(rel);
        let parent = p.parent().unwrap_or(dir).to_path_buf();
        let fname = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        atomic_write(&RealStorage, Durability::Full, &parent, &fname, content)?;
    }
    atomic_write(&RealStorage, Durability::Full, dir, HEADER, header_bytes)?;
    // Verify: the root key opens it and every record authenticates.
    let ks = Keystore::open(dir, root, &KeystoreOptions::default())?;
    crate::store::FileStore::load(ks.clone())?;
    crate::backend::FileBackend::load(ks)?;
    Ok(())
}
