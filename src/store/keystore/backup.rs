//! Root-key rotation and backup archives of a keystore.

use super::*;

pub(super) const BACKUP_MAGIC: &[u8; 4] = b"SRKB";
pub(super) const BACKUP_VERSION: u8 = 2;

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
pub(super) fn restorable(rel: &str) -> bool {
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
