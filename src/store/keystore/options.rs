//! Options of the file keystore: storage, durability, Argon2id parameters, root keys.

use super::*;

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

    pub(super) fn check_floor(&self) -> Result<()> {
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

/// Whether opening a keystore may create one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OpenMode {
    /// Open an existing keystore; a missing directory, or one that holds no
    /// keystore, is [`crate::Error::Configuration`] and nothing is created
    /// (a mistyped path never becomes a new, empty store). The default.
    #[default]
    Existing,
    /// Create a new keystore (and missing parent directories, mode 0700);
    /// a directory that already holds one is [`crate::Error::Configuration`].
    Create,
    /// Open the keystore, creating it if the directory holds none.
    OpenOrCreate,
}

/// Options of a file keystore.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeystoreOptions {
    /// Open an existing store (default), create a new one, or either.
    pub mode: OpenMode,
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
            mode: OpenMode::Existing,
            durability: Durability::Full,
            argon2: Argon2Params::default(),
            storage: Arc::new(RealStorage),
            lock_timeout: Duration::from_secs(10),
            allow_weak_argon2: false,
        }
    }
}

impl KeystoreOptions {
    /// Sets whether opening may create the store.
    pub fn mode(mut self, mode: OpenMode) -> Self {
        self.mode = mode;
        self
    }
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

/// The value of an environment variable, zeroized on drop; the error names
/// the variable, never its value.
fn env_secret(var: &str) -> Result<Zeroizing<String>> {
    match std::env::var(var) {
        Ok(v) => Ok(Zeroizing::new(v)),
        Err(std::env::VarError::NotPresent) => Err(Error::Configuration(format!(
            "environment variable {var} is not set"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::Configuration(format!(
            "environment variable {var} is not valid UTF-8"
        ))),
    }
}

pub(super) fn unhex(s: &str) -> Option<Vec<u8>> {
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

    /// 32 raw bytes from an environment variable holding exactly 64 hex
    /// characters (surrounding whitespace ignored). Anything else, such as
    /// a 32-character password, is refused with
    /// [`crate::Error::Configuration`]: a raw root key must be full-entropy
    /// random bytes; take a passphrase with [`RootKey::passphrase_from_env`].
    pub fn from_env(var: &str) -> Result<Self> {
        let v = env_secret(var)?;
        match unhex(&v).map(Zeroizing::new) {
            Some(b) if b.len() == 32 => Ok(RootKey::Raw(SecretBytes::from_slice(&b))),
            _ => Err(Error::Configuration(format!(
                "environment variable {var} must hold a raw root key as exactly 64 hex \
                 characters (32 random bytes); for a passphrase use \
                 RootKey::passphrase_from_env"
            ))),
        }
    }

    /// A passphrase from an environment variable (stretched with Argon2id
    /// when the store opens). An empty passphrase is refused.
    pub fn passphrase_from_env(var: &str) -> Result<Self> {
        let v = env_secret(var)?;
        if v.is_empty() {
            return Err(Error::Configuration(format!(
                "environment variable {var} holds an empty passphrase"
            )));
        }
        Ok(RootKey::Passphrase(SecretBytes::from_slice(v.as_bytes())))
    }

    pub(super) fn from_bytes_or_hex(data: &[u8]) -> Result<Self> {
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
