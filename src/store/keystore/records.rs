//! Sealed records: associated data, AEAD, and crash-safe writes.

use super::*;

/// Associated data of a record: format, kind, store, generation, file.
pub(super) fn aad(kind: Kind, store_id: &[u8; 16], gn: u64, rel: &str) -> Vec<u8> {
    let mut a = MAGIC.to_vec();
    a.push(RECORD_VERSION);
    a.push(kind as u8);
    a.extend_from_slice(store_id);
    a.extend_from_slice(&gn.to_be_bytes());
    a.extend_from_slice(rel.as_bytes());
    a
}

pub(super) fn seal_with(
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

pub(super) fn open_with(
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
pub(super) fn atomic_write(
    storage: &dyn Storage,
    durability: Durability,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<()> {
    atomic_write_inner(storage, durability, dir, name, bytes).map_err(|(_, e)| e)
}

/// [`atomic_write`], telling on failure whether the rename happened.
pub(super) fn atomic_write_inner(
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
