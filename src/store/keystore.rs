//! The on-disk keystore shared by [`super::FileStore`] and
//! [`crate::backend::FileBackend`]: one directory, one root key, one record
//! format (docs/FORMAT.md, "File keystore").

use crate::crypto::{Cipher, NONCE_LEN};
use crate::error::{Error, Result};
use crate::key::SymmetricAlgorithm;
use crate::random::{OsRandom, RandomSource, random_array};
use crate::secret::SecretBytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

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
const RECORD_DIRS: [&str; 3] = ["keys", "material", "aliases"];
const HKDF_SALT: &[u8] = b"strongroom keystore v2";

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
    /// Creates (or truncates) `path` and writes `data` to it. A file it
    /// creates must be readable and writable by the owner only (mode 0600).
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
            .mode(0o600)
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

impl Argon2Params {
    /// The weakest parameters the keystore accepts: 19 MiB, 2 iterations,
    /// 1 lane, the minimum the OWASP Password Storage Cheat Sheet
    /// recommends for Argon2id
    /// (<https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html#argon2id>).
    /// Creating, rotating to, or opening a passphrase store with any
    /// parameter below it is a [`Error::Configuration`] error.
    pub const MINIMUM: Argon2Params = Argon2Params {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    fn check_floor(&self) -> Result<()> {
        let min = Self::MINIMUM;
        if self.m_kib < min.m_kib || self.t < min.t || self.p < min.p {
            return Err(Error::Configuration(format!(
                "Argon2id parameters m={} KiB, t={}, p={} are below the minimum \
                 m={} KiB, t={}, p={} (OWASP Password Storage Cheat Sheet)",
                self.m_kib, self.t, self.p, min.m_kib, min.t, min.p
            )));
        }
        Ok(())
    }
}

impl Default for Argon2Params {
    /// 19 MiB, 2 iterations, 1 lane (the OWASP recommendation for Argon2id,
    /// and [`Argon2Params::MINIMUM`]).
    fn default() -> Self {
        Self::MINIMUM
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
    /// How long opening the store or making a change waits for the
    /// directory's lock (held by another ring or process) before failing
    /// with an error of kind [`std::io::ErrorKind::TimedOut`]. 10 seconds
    /// by default.
    pub lock_timeout: Duration,
    /// Accept Argon2id parameters below [`Argon2Params::MINIMUM`]: only
    /// through [`crate::hazmat::weak_argon2_for_tests`].
    pub(crate) allow_weak_argon2: bool,
}

impl Default for KeystoreOptions {
    fn default() -> Self {
        KeystoreOptions {
            durability: Durability::Full,
            argon2: Argon2Params::default(),
            storage: Arc::new(RealStorage),
            lock_timeout: Duration::from_secs(10),
            allow_weak_argon2: false,
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
    /// Sets how long to wait for the directory's lock.
    pub fn lock_timeout(mut self, d: Duration) -> Self {
        self.lock_timeout = d;
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
    crate::hex::decode(s.trim())
}

pub(crate) use crate::hex::encode as hex;

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

/// Just enough of a header to tell its format version.
#[derive(Deserialize)]
struct HeaderVersion {
    format: String,
    version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    format: String,
    version: u32,
    /// 16 random bytes (hex) naming this store, bound into every record and
    /// the manifest.
    store_id: String,
    kdf: Kdf,
    /// A check record: proves the root key before anything is touched.
    check: String,
}

fn corrupt_file(file: &str, reason: impl Into<String>) -> Error {
    Error::CorruptStore {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

fn parse_header(bytes: &[u8], file: &str) -> Result<Header> {
    let v: HeaderVersion = serde_json::from_slice(bytes)
        .map_err(|e| corrupt_file(file, format!("not a keystore header: {e}")))?;
    if v.format != "strongroom-keystore" {
        return Err(corrupt_file(file, format!("unknown format {:?}", v.format)));
    }
    if v.version != FORMAT_VERSION {
        return Err(corrupt_file(
            file,
            format!(
                "keystore format version {} is not supported: this version of strongroom \
                 reads only format {FORMAT_VERSION} (docs/FORMAT.md, \"File keystore\"); \
                 open the store with the strongroom that wrote it and move its keys",
                v.version
            ),
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| corrupt_file(file, format!("not a keystore header: {e}")))
}

impl Header {
    fn store_id(&self, file: &str) -> Result<[u8; 16]> {
        unhex(&self.store_id)
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .ok_or_else(|| corrupt_file(file, "bad store id"))
    }
}

/// The keys derived from the root key.
struct Keys {
    /// Encrypts records (AES-256-GCM).
    record: Cipher,
    /// Authenticates the manifest (HMAC-SHA256).
    mac: Zeroizing<[u8; 32]>,
    /// Names alias records (HMAC-SHA256 of the alias).
    names: Zeroizing<[u8; 32]>,
}

fn hkdf_expand(root: &[u8; 32], info: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(HKDF_SALT), root);
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand(info, out.as_mut_slice())
        .map_err(|_| Error::invalid("HKDF output length out of range"))?;
    Ok(out)
}

fn derive_keys(root: &[u8; 32]) -> Result<Keys> {
    Ok(Keys {
        record: Cipher::new(
            SymmetricAlgorithm::Aes256Gcm,
            &*hkdf_expand(root, b"records")?,
        ),
        mac: hkdf_expand(root, b"manifest")?,
        names: hkdf_expand(root, b"names")?,
    })
}

/// The archive key of backups, derived from the root beside the record key.
fn backup_cipher_from(root: &Zeroizing<[u8; 32]>) -> Result<Cipher> {
    Ok(Cipher::new(
        SymmetricAlgorithm::Aes256Gcm,
        &*hkdf_expand(root, b"backup")?,
    ))
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> Result<[u8; 32]> {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .map_err(|_| Error::invalid("bad HMAC key"))?;
    for p in parts {
        m.update(p);
    }
    Ok(m.finalize().into_bytes().into())
}

/// The record name of an alias: a keyed hash, so no alias shows on disk
/// and every valid alias fits a file name.
fn alias_name_with(names: &[u8; 32], alias: &str) -> Result<String> {
    let h = hmac(names, &[b"alias\0", alias.as_bytes()])?;
    Ok(format!("aliases/{}", hex(&h[..16])))
}

fn derive_root(root: &RootKey, kdf: &Kdf, allow_weak: bool) -> Result<Zeroizing<[u8; 32]>> {
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
            if !allow_weak {
                Argon2Params {
                    m_kib: *m_kib,
                    t: *t,
                    p: *lanes,
                }
                .check_floor()?;
            }
            let salt = unhex(salt).ok_or_else(|| corrupt_file(HEADER, "bad salt"))?;
            let params = argon2::Params::new(*m_kib, *t, *lanes, Some(32))
                .map_err(|e| corrupt_file(HEADER, format!("bad Argon2 parameters: {e}")))?;
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

/// A header for `kdf`, with its check record sealed under `keys`.
fn build_header(
    kdf: Kdf,
    keys: &Keys,
    store_id: &[u8; 16],
    rng: &dyn RandomSource,
) -> Result<Vec<u8>> {
    let check = seal_with(
        &keys.record,
        rng,
        Kind::Check,
        store_id,
        0,
        HEADER,
        CHECK_TEXT,
    )?;
    let header = Header {
        format: "strongroom-keystore".into(),
        version: FORMAT_VERSION,
        store_id: hex(store_id),
        kdf,
        check: hex(&check),
    };
    serde_json::to_vec_pretty(&header).map_err(|e| Error::Other(Arc::new(e)))
}

/// KDF parameters for a new header protected by `root`.
fn new_kdf(root: &RootKey, options: &KeystoreOptions, rng: &dyn RandomSource) -> Result<Kdf> {
    Ok(match root {
        RootKey::Raw(_) => Kdf::Raw,
        RootKey::Passphrase(_) => {
            if !options.allow_weak_argon2 {
                options.argon2.check_floor()?;
            }
            Kdf::Argon2id {
                version: 0x13,
                m_kib: options.argon2.m_kib,
                t: options.argon2.t,
                p: options.argon2.p,
                salt: hex(&random_array::<16>(rng)?),
            }
        }
    })
}

/// The root key checked against a header: the derived keys and store id,
/// or [`Error::WrongRootKey`].
fn verify_root(
    root: &RootKey,
    header: &Header,
    file: &str,
    allow_weak: bool,
) -> Result<(Zeroizing<[u8; 32]>, Keys, [u8; 16])> {
    let store_id = header.store_id(file)?;
    let root_bytes = derive_root(root, &header.kdf, allow_weak)?;
    let keys = derive_keys(&root_bytes)?;
    let check = unhex(&header.check).ok_or(Error::WrongRootKey)?;
    open_with(&keys.record, Kind::Check, &store_id, 0, HEADER, &check)
        .map_err(|_| Error::WrongRootKey)?;
    Ok((root_bytes, keys, store_id))
}

fn io_err(file: &Path, what: &str, e: io::Error) -> Error {
    Error::Other(Arc::new(io::Error::new(
        e.kind(),
        format!("keystore: {what} {}: {e}", file.display()),
    )))
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "read", e)),
    }
}

/// The effective user id of this process, without `unsafe`: from
/// `/proc/self/status` where there is one, else from the owner of a file
/// this process creates.
fn current_uid(probe_dir: &Path) -> Result<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(uid) = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|e| e.parse().ok())
    {
        return Ok(uid);
    }
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|_| Error::Random)?;
    let probe = probe_dir.join(format!(".tmp-uid-{}", hex(&suffix)));
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(|e| io_err(&probe, "create", e))?;
    let uid = f.metadata().map_err(|e| io_err(&probe, "stat", e))?.uid();
    let _ = std::fs::remove_file(&probe);
    Ok(uid)
}

/// Refuses a directory that another user could write (group/world
/// writable, or owned by another user).
fn check_dir(dir: &Path, uid: u32) -> Result<()> {
    let m = std::fs::metadata(dir).map_err(|e| io_err(dir, "stat", e))?;
    if !m.is_dir() {
        return Err(Error::Configuration(format!(
            "keystore path {} is not a directory",
            dir.display()
        )));
    }
    if m.uid() != uid {
        return Err(Error::Configuration(format!(
            "keystore directory {} belongs to user {}, not to this process's user {uid}: \
             its owner could replace the store's files; use a directory of your own",
            dir.display(),
            m.uid()
        )));
    }
    if m.permissions().mode() & 0o022 != 0 {
        return Err(Error::Configuration(format!(
            "keystore directory {} is writable by its group or by others (mode {:03o}): \
             they could replace the store's files or hold its lock; make it private \
             (chmod 700)",
            dir.display(),
            m.permissions().mode() & 0o777
        )));
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, "create", e))
}

/// Waits for the cross-process lock until `deadline`, polling.
fn flock_bounded(file: &File, path: &Path, timeout: Duration, deadline: Instant) -> Result<()> {
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(path, "lock", e)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Other(Arc::new(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "keystore: {} is held by another ring or process; gave up after {timeout:?}",
                    path.display()
                ),
            ))));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Identity of one version of a file: replacing it by rename changes the
/// inode, writing it in place changes the ctime.
type StatSig = (u64, u64, u64, i64, i64, i64, i64);

fn stat_sig(m: &std::fs::Metadata) -> StatSig {
    (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// One manifest shard: record name -> generation.
#[derive(Debug, Clone, Default)]
struct Shard {
    gn: u64,
    entries: BTreeMap<String, u64>,
}

/// The authenticated manifest as last read or written.
#[derive(Debug, Clone)]
struct View {
    counter: u64,
    stat: Option<StatSig>,
    shards: Vec<Arc<Shard>>,
}

fn shard_of(name: &str) -> usize {
    use sha2::Digest;
    sha2::Sha256::digest(name.as_bytes())[0] as usize
}

fn record_file(name: &str, gn: u64) -> String {
    format!("{name}.{gn}.rec")
}

fn shard_file(i: usize, gn: u64) -> String {
    format!("{MANIFEST_DIR}/{i:02x}.{gn}")
}

fn kind_of(name: &str) -> Option<Kind> {
    match name.split_once('/')?.0 {
        "keys" => Some(Kind::Key),
        "material" => Some(Kind::Material),
        "aliases" => Some(Kind::Alias),
        _ => None,
    }
}

fn valid_name(name: &str) -> bool {
    matches!(name.split_once('/'), Some((sub, rest)) if RECORD_DIRS.contains(&sub)
        && !rest.is_empty() && !rest.contains('/') && !rest.starts_with('.'))
}

/// Why a manifest could not be read.
enum ViewErr {
    /// A file vanished under a concurrent change: read again.
    Retry,
    /// A manifest file does not authenticate under this ring's key.
    NotAuthentic(String),
    E(Error),
}

impl From<Error> for ViewErr {
    fn from(e: Error) -> Self {
        ViewErr::E(e)
    }
}

fn encode_top(mac: &[u8; 32], store_id: &[u8; 16], counter: u64, gens: &[u64]) -> Result<Vec<u8>> {
    let mut out = MANIFEST_MAGIC.to_vec();
    out.push(RECORD_VERSION);
    out.extend_from_slice(store_id);
    out.extend_from_slice(&counter.to_be_bytes());
    for g in gens {
        out.extend_from_slice(&g.to_be_bytes());
    }
    let tag = hmac(mac, &[&out])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

fn check_mac(mac: &[u8; 32], bytes: &[u8], file: &str) -> std::result::Result<usize, ViewErr> {
    let body = bytes
        .len()
        .checked_sub(32)
        .ok_or_else(|| ViewErr::E(corrupt_file(file, "truncated")))?;
    let tag = hmac(mac, &[&bytes[..body]])?;
    if bool::from(tag.ct_eq(&bytes[body..])) {
        Ok(body)
    } else {
        Err(ViewErr::NotAuthentic(file.to_owned()))
    }
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The counter and shard generations of an authentic `MANIFEST`.
fn decode_top(
    mac: &[u8; 32],
    store_id: &[u8; 16],
    bytes: &[u8],
) -> std::result::Result<(u64, Vec<u64>), ViewErr> {
    let body = check_mac(mac, bytes, MANIFEST)?;
    let bad = |r: &str| ViewErr::E(corrupt_file(MANIFEST, r));
    if body != 4 + 1 + 16 + 8 + SHARDS * 8 {
        return Err(bad("wrong length"));
    }
    if &bytes[..4] != MANIFEST_MAGIC || bytes[4] != RECORD_VERSION {
        return Err(bad("not a keystore manifest"));
    }
    if &bytes[5..21] != store_id {
        return Err(bad("manifest of another store"));
    }
    let counter = be_u64(&bytes[21..29]);
    let gens = bytes[29..body].chunks_exact(8).map(be_u64).collect();
    Ok((counter, gens))
}

fn encode_shard(mac: &[u8; 32], store_id: &[u8; 16], i: usize, s: &Shard) -> Result<Vec<u8>> {
    let mut out = SHARD_MAGIC.to_vec();
    out.push(RECORD_VERSION);
    out.extend_from_slice(store_id);
    out.push(u8::try_from(i).map_err(|_| Error::invalid("shard index"))?);
    out.extend_from_slice(&s.gn.to_be_bytes());
    let n = u32::try_from(s.entries.len()).map_err(|_| Error::invalid("too many records"))?;
    out.extend_from_slice(&n.to_be_bytes());
    for (name, gn) in &s.entries {
        let l = u16::try_from(name.len()).map_err(|_| Error::invalid("record name too long"))?;
        out.extend_from_slice(&l.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&gn.to_be_bytes());
    }
    let tag = hmac(mac, &[&out])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

fn decode_shard(
    mac: &[u8; 32],
    store_id: &[u8; 16],
    i: usize,
    gn: u64,
    bytes: &[u8],
    file: &str,
) -> std::result::Result<Shard, ViewErr> {
    let body = check_mac(mac, bytes, file)?;
    let bad = |r: &str| ViewErr::E(corrupt_file(file, r));
    let b = &bytes[..body];
    if b.len() < 4 + 1 + 16 + 1 + 8 + 4 || &b[..4] != SHARD_MAGIC || b[4] != RECORD_VERSION {
        return Err(bad("not a manifest shard"));
    }
    if &b[5..21] != store_id || b[21] as usize != i || be_u64(&b[22..30]) != gn {
        return Err(bad(
            "shard of another store, index or generation (replaced or rolled back)",
        ));
    }
    let n = u32::from_be_bytes([b[30], b[31], b[32], b[33]]) as usize;
    let mut entries = BTreeMap::new();
    let mut pos = 34;
    for _ in 0..n {
        let l = b
            .get(pos..pos + 2)
            .map(|x| u16::from_be_bytes([x[0], x[1]]) as usize)
            .ok_or_else(|| bad("truncated"))?;
        let name = b
            .get(pos + 2..pos + 2 + l)
            .and_then(|x| std::str::from_utf8(x).ok())
            .filter(|n| valid_name(n) && shard_of(n) == i)
            .ok_or_else(|| bad("bad record name"))?;
        let g = b
            .get(pos + 2 + l..pos + 10 + l)
            .map(be_u64)
            .ok_or_else(|| bad("truncated"))?;
        if g == 0 || g > gn {
            return Err(bad("bad record generation"));
        }
        entries.insert(name.to_owned(), g);
        pos += 10 + l;
    }
    if pos != b.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(Shard { gn, entries })
}

/// Reads the manifest (and the shards that changed since `old`).
fn read_view(
    dir: &Path,
    mac: &[u8; 32],
    store_id: &[u8; 16],
    old: Option<&View>,
) -> std::result::Result<View, ViewErr> {
    let path = dir.join(MANIFEST);
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ViewErr::E(corrupt_file(MANIFEST, "missing")));
        }
        Err(e) => return Err(io_err(&path, "open", e).into()),
    };
    let sig = stat_sig(&f.metadata().map_err(|e| io_err(&path, "stat", e))?);
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| io_err(&path, "read", e))?;
    let (counter, gens) = decode_top(mac, store_id, &bytes)?;
    let mut shards = Vec::with_capacity(SHARDS);
    for (i, &gn) in gens.iter().enumerate() {
        if let Some(o) = old.map(|o| &o.shards[i])
            && o.gn == gn
        {
            shards.push(o.clone());
            continue;
        }
        if gn == 0 {
            shards.push(Arc::new(Shard::default()));
            continue;
        }
        if gn > counter {
            return Err(ViewErr::E(corrupt_file(MANIFEST, "bad shard generation")));
        }
        let rel = shard_file(i, gn);
        let data = match std::fs::read(dir.join(&rel)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ViewErr::Retry),
            Err(e) => return Err(io_err(&dir.join(&rel), "read", e).into()),
        };
        shards.push(Arc::new(decode_shard(mac, store_id, i, gn, &data, &rel)?));
    }
    Ok(View {
        counter,
        stat: Some(sig),
        shards,
    })
}

/// The files a view references, by subdirectory.
fn referenced(view: &View) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut out: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for (i, s) in view.shards.iter().enumerate() {
        if s.gn > 0
            && let Some(f) = shard_file(i, s.gn).strip_prefix("manifest/")
        {
            out.entry(MANIFEST_DIR).or_default().insert(f.to_owned());
        }
        for (name, gn) in &s.entries {
            if let Some((sub, rest)) = name.split_once('/')
                && let Some(sub) = RECORD_DIRS.iter().find(|d| **d == sub)
            {
                out.entry(sub).or_default().insert(record_file(rest, *gn));
            }
        }
    }
    out
}

/// Removes what no manifest references: files of interrupted changes and
/// rotations, temp files, records put back by someone else. Only under the
/// lock, with the right root key.
fn collect_garbage(
    dir: &Path,
    storage: &dyn Storage,
    durability: Durability,
    view: &View,
) -> Result<()> {
    let keep = referenced(view);
    let empty = BTreeSet::new();
    for sub in RECORD_DIRS.iter().chain([&MANIFEST_DIR]) {
        let d = dir.join(sub);
        let keep = keep.get(sub).unwrap_or(&empty);
        let mut removed = false;
        for e in std::fs::read_dir(&d).map_err(|e| io_err(&d, "list", e))? {
            let name = e.map_err(|e| io_err(&d, "list", e))?.file_name();
            if name.to_str().is_some_and(|n| keep.contains(n)) {
                continue;
            }
            let p = d.join(&name);
            storage.remove(&p).map_err(|e| io_err(&p, "remove", e))?;
            removed = true;
        }
        if removed && durability == Durability::Full {
            storage.fsync_dir(&d).map_err(|e| io_err(&d, "fsync", e))?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, "list", e))? {
        let name = e.map_err(|e| io_err(dir, "list", e))?.file_name();
        if name.to_str().is_some_and(|n| n.starts_with(".tmp-")) {
            let p = dir.join(&name);
            storage.remove(&p).map_err(|e| io_err(&p, "remove", e))?;
        }
    }
    Ok(())
}

/// The commit point of a root-key rotation: the new header and manifest.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotationMarker {
    header: String,
    manifest: String,
}

/// Installs a committed rotation: manifest, then header, then drops the
/// marker. Idempotent.
fn finish_rotation(
    dir: &Path,
    storage: &dyn Storage,
    durability: Durability,
    marker: &RotationMarker,
) -> Result<()> {
    let manifest =
        unhex(&marker.manifest).ok_or_else(|| corrupt_file(ROTATION_MARKER, "bad manifest"))?;
    atomic_write(storage, durability, dir, MANIFEST, &manifest)?;
    atomic_write(storage, durability, dir, HEADER, marker.header.as_bytes())?;
    let m = dir.join(ROTATION_MARKER);
    storage.remove(&m).map_err(|e| io_err(&m, "remove", e))?;
    if durability == Durability::Full {
        storage
            .fsync_dir(dir)
            .map_err(|e| io_err(dir, "fsync", e))?;
    }
    Ok(())
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
    /// Opens or creates the keystore at `dir`.
    pub(crate) fn open(
        dir: &Path,
        root: &RootKey,
        options: &KeystoreOptions,
    ) -> Result<Arc<Keystore>> {
        create_private_dir(dir)?;
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
            return Self::create(dir, root, options, rng);
        };
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

/// Associated data of a record: format, kind, store, generation, file.
fn aad(kind: Kind, store_id: &[u8; 16], gn: u64, rel: &str) -> Vec<u8> {
    let mut a = MAGIC.to_vec();
    a.push(RECORD_VERSION);
    a.push(kind as u8);
    a.extend_from_slice(store_id);
    a.extend_from_slice(&gn.to_be_bytes());
    a.extend_from_slice(rel.as_bytes());
    a
}

fn seal_with(
    cipher: &Cipher,
    rng: &dyn RandomSource,
    kind: Kind,
    store_id: &[u8; 16],
    gn: u64,
    rel: &str,
    pt: &[u8],
) -> Result<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = random_array(rng)?;
    let mut out = MAGIC.to_vec();
    out.push(RECORD_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&nonce);
    cipher.seal_append(&nonce, &aad(kind, store_id, gn, rel), pt, &mut out)?;
    Ok(out)
}

fn open_with(
    cipher: &Cipher,
    kind: Kind,
    store_id: &[u8; 16],
    gn: u64,
    rel: &str,
    bytes: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let corrupt = |reason: &str| corrupt_file(rel, reason);
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
        .open_append(
            &nonce,
            &aad(kind, store_id, gn, rel),
            &bytes[6 + NONCE_LEN..],
            &mut out,
        )
        .map_err(|_| {
            corrupt(
                "not authentic: tampered, truncated, renamed, rolled back to an older \
                 generation, or from another store",
            )
        })?;
    Ok(out)
}

/// temp file (mode 0600), fsync, rename, fsync dir. On failure the temp
/// file is removed and the destination is untouched (or, if only the
/// directory fsync failed, already replaced).
fn atomic_write(
    storage: &dyn Storage,
    durability: Durability,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<()> {
    atomic_write_inner(storage, durability, dir, name, bytes).map_err(|(_, e)| e)
}

/// [`atomic_write`], telling on failure whether the rename happened.
fn atomic_write_inner(
    storage: &dyn Storage,
    durability: Durability,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> std::result::Result<(), (bool, Error)> {
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
        return Err((false, io_err(&target, "write", e)));
    }
    if durability == Durability::Full {
        storage
            .fsync_dir(dir)
            .map_err(|e| (true, io_err(dir, "fsync", e)))?;
    }
    Ok(())
}

const BACKUP_MAGIC: &[u8; 4] = b"SRKB";
const BACKUP_VERSION: u8 = 2;

/// Re-encrypts a keystore under a new root key or passphrase, crash-safely
/// (an interrupted rotation is finished by the next open with the new key,
/// or forgotten if it had not committed). Rings that still have the store
/// open with the old key fail from then on with [`Error::WrongRootKey`]
/// (they change nothing); reopen them with the new key.
pub fn rotate_root_key(
    dir: impl AsRef<Path>,
    old: &RootKey,
    new: &RootKey,
    options: &KeystoreOptions,
) -> Result<()> {
    let ks = Keystore::open(dir.as_ref(), old, options)?;
    ks.rotate_root(new, options)
}

/// Exports the whole keystore as one encrypted archive file (mode 0600; the
/// records stay encrypted under the root key, and the archive as a whole is
/// authenticated under a key derived from it). Restore it with
/// [`restore_backup`] and the same root key.
pub fn export_backup(
    dir: impl AsRef<Path>,
    root: &RootKey,
    archive: impl AsRef<Path>,
) -> Result<()> {
    let dir = dir.as_ref();
    let ks = Keystore::open(dir, root, &KeystoreOptions::default())?;
    let lock = ks.lock()?;
    let header = ks.header_bytes.clone();
    let mut body = Zeroizing::new(Vec::new());
    for (rel, data) in ks.snapshot()? {
        let rl = u16::try_from(rel.len()).map_err(|_| Error::invalid("file name too long"))?;
        let dl = u32::try_from(data.len()).map_err(|_| Error::invalid("record too large"))?;
        body.extend_from_slice(&rl.to_be_bytes());
        body.extend_from_slice(rel.as_bytes());
        body.extend_from_slice(&dl.to_be_bytes());
        body.extend_from_slice(&data);
    }
    drop(lock);
    let hl = u32::try_from(header.len()).map_err(|_| Error::invalid("header too large"))?;
    let mut out = BACKUP_MAGIC.to_vec();
    out.push(BACKUP_VERSION);
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

/// Whether an archive may write `rel` into a new store.
fn restorable(rel: &str) -> bool {
    if rel == MANIFEST {
        return true;
    }
    matches!(rel.split_once('/'), Some((sub, f)) if (RECORD_DIRS.contains(&sub) || sub == MANIFEST_DIR)
        && !f.is_empty() && !f.contains('/') && !f.starts_with('.'))
}

/// Restores an archive made by [`export_backup`] into `new_dir` (which must
/// not exist or be empty), verifying everything before writing, then opens
/// it once to check it. The restored store is the store as it was at the
/// export (the same store id and change counter).
pub fn restore_backup(
    archive: impl AsRef<Path>,
    root: &RootKey,
    new_dir: impl AsRef<Path>,
) -> Result<()> {
    let path = archive.as_ref();
    let name = path.display().to_string();
    let corrupt = |reason: &str| corrupt_file(&name, reason);
    let data = std::fs::read(path).map_err(|e| io_err(path, "read", e))?;
    let mut r = crate::envelope::Reader::new(&data);
    let magic = r.take(4).map_err(|_| corrupt("truncated"))?;
    if magic != BACKUP_MAGIC {
        return Err(corrupt("not a strongroom keystore backup"));
    }
    let version = r.u8().map_err(|_| corrupt("truncated"))?;
    if version != BACKUP_VERSION {
        return Err(corrupt(&format!(
            "backup format version {version} is not supported (this version reads {BACKUP_VERSION})"
        )));
    }
    let hl = r.u32().map_err(|_| corrupt("truncated"))? as usize;
    let header_bytes = r.take(hl).map_err(|_| corrupt("truncated"))?;
    let prefix_len = r.pos();
    let nonce: [u8; NONCE_LEN] = r.array().map_err(|_| corrupt("truncated"))?;
    let sealed = r.rest();
    let header = parse_header(header_bytes, &name)?;
    let cipher = backup_cipher_from(&derive_root(root, &header.kdf, false)?)?;
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
        if !restorable(&rel) {
            return Err(corrupt("archive names a file outside the keystore"));
        }
        files.push((rel, content));
    }
    create_private_dir(dir)?;
    for sub in RECORD_DIRS.iter().chain([&MANIFEST_DIR]) {
        create_private_dir(&dir.join(sub))?;
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
