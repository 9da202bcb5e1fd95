//! The keystore's filesystem checks: ownership and modes, private
//! directories, the bounded cross-process lock, file identities.

use super::*;
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) fn io_err(file: &Path, what: &str, e: io::Error) -> Error {
    Error::Other(Arc::new(io::Error::new(
        e.kind(),
        format!("keystore: {what} {}: {e}", file.display()),
    )))
}

pub(super) fn read_opt(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "read", e)),
    }
}

/// The effective user id of this process, without `unsafe`: from
/// `/proc/self/status` where there is one, else from the owner of a file
/// this process creates.
pub(super) fn current_uid(probe_dir: &Path) -> Result<u32> {
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
pub(super) fn check_dir(dir: &Path, uid: u32) -> Result<()> {
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

pub(super) fn no_keystore(dir: &Path) -> Error {
    Error::Configuration(format!(
        "no keystore at {}: the path does not exist or holds no keystore (create one \
         with KeyRing::create, or OpenMode::Create)",
        dir.display()
    ))
}

pub(super) fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(dir, "create", e))
}

/// Waits for the cross-process lock until `deadline`, polling.
pub(super) fn flock_bounded(
    file: &File,
    path: &Path,
    timeout: Duration,
    deadline: Instant,
) -> Result<()> {
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
pub(super) type StatSig = (u64, u64, u64, i64, i64, i64, i64);

pub(super) fn stat_sig(m: &std::fs::Metadata) -> StatSig {
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
