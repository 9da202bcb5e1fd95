//! The keystore directory as the tool lays it out, and the ring opened on it.
//!
//! ```text
//! <keystore>/header.json, MANIFEST, keys/ ...   the library's file keystore
//! <keystore>/cli/config.json                    admin principal, audit public key
//! <keystore>/cli/audit-signing-seed             Ed25519 seed of the audit log (0600)
//! <keystore>/cli/LOCK                           one CLI process at a time
//! <keystore>/audit/audit-*.jsonl                the hash-chained audit log
//! ```
//!
//! The audit signing seed is stored unencrypted (mode 0600): anyone who can
//! read the keystore directory can sign log digests. Verification against
//! the public key printed by `init` (kept elsewhere) plus an anchor detects
//! edits by anyone who cannot read the seed. See the README.

use crate::exit::{self, CliError};
use crate::passphrase;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strongroom::audit::{JsonlFileSink, JsonlOptions};
use strongroom::store::{KeystoreOptions, RootKey};
use strongroom::{Client, KeyRing, Principal};
use zeroize::Zeroizing;

/// The environment variable naming the keystore directory.
pub const ENV: &str = "STRONGROOM_KEYSTORE";

/// The library's marker of an existing keystore.
const HEADER: &str = "header.json";
/// Present while a root-key rotation is pending: also a keystore.
const ROTATION_MARKER: &str = "ROOT-ROTATION.json";
const CLI_DIR: &str = "cli";
const CONFIG: &str = "cli/config.json";
const SEED: &str = "cli/audit-signing-seed";
const LOCK: &str = "cli/LOCK";
/// The audit log's directory.
pub const AUDIT_DIR: &str = "audit";
const CONFIG_FORMAT: &str = "strongroom-cli";

/// How long a command waits for another CLI process on the same keystore.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The CLI's settings of one keystore.
#[derive(Debug, Clone)]
pub struct Config {
    /// The keystore's creator: the only principal allowed ring-wide actions
    /// (create keys, list), and the default `--as`.
    pub admin: Principal,
    /// The Ed25519 public key that verifies the audit log's digests.
    pub audit_public_key: [u8; 32],
}

/// The keystore directory from `--keystore` or the environment.
pub fn dir(flag: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(d) = flag {
        return Ok(d.to_path_buf());
    }
    match std::env::var_os(ENV) {
        Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
        _ => Err(CliError::usage(format!(
            "no keystore: use --keystore DIR or set {ENV}"
        ))),
    }
}

fn is_keystore(dir: &Path) -> bool {
    dir.join(HEADER).exists() || dir.join(ROTATION_MARKER).exists()
}

/// Checks that `dir` holds a keystore set up by `strongroom init`, and
/// reads its CLI config. Nothing is created: `KeyRing::open` would create
/// a missing store, so the check comes first.
pub fn existing(dir: &Path) -> Result<Config, CliError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::keystore(format!(
                "no keystore at {}: create one with `strongroom init`",
                dir.display()
            )));
        }
        Err(e) => return Err(CliError::io("read keystore directory", dir, e)),
        Ok(m) if !m.is_dir() => {
            return Err(CliError::keystore(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(_) => {}
    }
    if !is_keystore(dir) {
        return Err(CliError::keystore(format!(
            "{} is not a keystore (no {HEADER}): create one with `strongroom init`",
            dir.display()
        )));
    }
    read_config(dir)
}

fn read_config(dir: &Path) -> Result<Config, CliError> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::keystore(format!(
            "keystore {} was not set up by `strongroom init` ({CONFIG}: {e})",
            dir.display()
        ))
    })?;
    let bad = |why: &str| CliError::keystore(format!("{}: {why}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    if v["format"] != CONFIG_FORMAT || v["version"] != 1 {
        return Err(bad("unknown format or version"));
    }
    let admin = v["admin"]
        .as_str()
        .ok_or_else(|| bad("no admin"))?
        .parse::<Principal>()
        .map_err(|e| bad(&e.to_string()))?;
    let audit_public_key = v["audit_public_key"]
        .as_str()
        .and_then(crate::hex::decode32)
        .ok_or_else(|| bad("bad audit_public_key"))?;
    Ok(Config {
        admin,
        audit_public_key,
    })
}

/// Creates a file readable and writable by its owner only; fails if it exists.
fn create_private(path: &Path, data: &[u8]) -> Result<(), CliError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::io("create", path, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::io("write", path, e))
}

fn private_dir(path: &Path) -> Result<(), CliError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| CliError::io("create directory", path, e))
}

/// What `init` made.
#[derive(Debug)]
pub struct Initialized {
    /// The admin principal.
    pub admin: Principal,
    /// The audit log's public key.
    pub audit_public_key: [u8; 32],
}

/// `strongroom init`: a new keystore in `dir` (absent or empty), protected
/// by the passphrase, with `admin` as its administrator.
pub fn init(
    dir: &Path,
    admin: Principal,
    passphrase_file: Option<&Path>,
) -> Result<Initialized, CliError> {
    let existed = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if is_keystore(dir) {
                return Err(CliError::keystore(format!(
                    "{} is already a keystore: refusing to initialize it again",
                    dir.display()
                )));
            }
            if entries.next().is_some() {
                return Err(CliError::keystore(format!(
                    "{} is not empty: choose a new or empty directory",
                    dir.display()
                )));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(if dir.is_file() {
                CliError::keystore(format!("{} is a file, not a directory", dir.display()))
            } else {
                CliError::io("read", dir, e)
            });
        }
    };
    let pass = passphrase::obtain(passphrase_file, dir, true)?;
    let root = RootKey::passphrase(&pass);
    drop(pass);
    let result = init_in(dir, &root, admin);
    if result.is_err() {
        // Leave nothing half-made behind: the directory was absent or empty.
        if existed {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    result
}

fn init_in(dir: &Path, root: &RootKey, admin: Principal) -> Result<Initialized, CliError> {
    private_dir(dir)?;
    // The library creates the store (header last: its presence means the
    // store exists), then the CLI's files; config.json last, so a keystore
    // without it is one whose `init` did not finish.
    let builder = KeyRing::builder().file_keystore(dir, root, KeystoreOptions::default())?;
    private_dir(&dir.join(CLI_DIR))?;
    let seed = Zeroizing::new(random_seed()?);
    create_private(&dir.join(SEED), seed.as_slice())?;
    let sink = Arc::new(JsonlFileSink::open(
        dir.join(AUDIT_DIR),
        &seed,
        JsonlOptions::default(),
    )?);
    let audit_public_key = sink.verifying_key();
    let ring = builder
        .ring_admins([admin.clone()])
        .audit_sink(sink)
        .build();
    ring.client(admin.clone()).flush_audit()?;
    let config = serde_json::json!({
        "format": CONFIG_FORMAT,
        "version": 1,
        "admin": admin.to_string(),
        "audit_public_key": crate::hex::encode(&audit_public_key),
    });
    let mut text = serde_json::to_string_pretty(&config)
        .map_err(|e| CliError::new(exit::INTERNAL, e.to_string()))?;
    text.push('\n');
    create_private(&dir.join(CONFIG), text.as_bytes())?;
    Ok(Initialized {
        admin,
        audit_public_key,
    })
}

/// 32 random bytes from the library's OS random source.
fn random_seed() -> Result<[u8; 32], CliError> {
    use strongroom::random::RandomSource;
    let mut seed = [0u8; 32];
    strongroom::random::OsRandom.fill(&mut seed)?;
    Ok(seed)
}

/// An open ring on the keystore, acting as one principal, holding the CLI
/// lock (one CLI process writes the audit log at a time). Call
/// [`Session::finish`] when done: it signs the audit log's tail.
pub struct Session {
    /// The client of the chosen principal.
    pub client: Client,
    _lock: File,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens the keystore in `dir` (which must exist) as `principal`
    /// (default: the admin).
    pub fn open(
        dir: &Path,
        principal: Option<Principal>,
        passphrase_file: Option<&Path>,
    ) -> Result<Session, CliError> {
        let config = existing(dir)?;
        // The passphrase is asked before the lock is taken: nobody waits on
        // a user typing.
        let pass = passphrase::obtain(passphrase_file, dir, false)?;
        let root = RootKey::passphrase(&pass);
        drop(pass);
        let lock = lock(dir)?;
        // The keystore opens (and checks the passphrase) before the audit
        // log is touched.
        let builder = KeyRing::builder().file_keystore(dir, &root, KeystoreOptions::default())?;
        drop(root);
        let seed = read_seed(dir)?;
        let sink = JsonlFileSink::open(dir.join(AUDIT_DIR), &seed, JsonlOptions::default())?;
        if sink.verifying_key() != config.audit_public_key {
            return Err(CliError::keystore(format!(
                "{SEED} does not match the audit public key in {CONFIG}"
            )));
        }
        let ring = builder
            .ring_admins([config.admin.clone()])
            .audit_sink(Arc::new(sink))
            .build();
        let principal = principal.unwrap_or(config.admin);
        Ok(Session {
            client: ring.client(principal),
            _lock: lock,
        })
    }

    /// Signs and syncs the audit records of this session, then releases the
    /// lock. A failed operation is recorded too, so this runs on every path.
    pub fn finish(self) -> Result<(), CliError> {
        self.client.flush_audit()?;
        Ok(())
    }
}

fn read_seed(dir: &Path) -> Result<Zeroizing<[u8; 32]>, CliError> {
    let path = dir.join(SEED);
    let bytes = Zeroizing::new(
        std::fs::read(&path).map_err(|e| CliError::keystore(format!("{}: {e}", path.display())))?,
    );
    let mut seed = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(CliError::keystore(format!(
            "{}: an audit signing seed is 32 bytes",
            path.display()
        )));
    }
    seed.copy_from_slice(&bytes);
    Ok(seed)
}

/// The CLI lock of the keystore, waited for at most [`LOCK_TIMEOUT`].
fn lock(dir: &Path) -> Result<File, CliError> {
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| CliError::io("open", &path, e))?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CliError::new(
                    exit::RETRY,
                    format!(
                        "keystore {} is busy (another strongroom command holds {LOCK}); \
                         gave up after {} s",
                        dir.display(),
                        LOCK_TIMEOUT.as_secs()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(CliError::io("lock", &path, e)),
        }
    }
}
