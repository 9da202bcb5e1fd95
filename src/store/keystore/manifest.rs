//! The authenticated manifest: record generations in 256 MAC'd shards, read, written, and garbage-collected.

use super::*;

/// One manifest shard: record name -> generation.
#[derive(Debug, Clone, Default)]
pub(super) struct Shard {
    pub(super) gn: u64,
    pub(super) entries: BTreeMap<String, u64>,
}

/// The authenticated manifest as last read or written.
#[derive(Debug, Clone)]
pub(super) struct View {
    pub(super) counter: u64,
    pub(super) stat: Option<StatSig>,
    pub(super) shards: Vec<Arc<Shard>>,
}

pub(super) fn shard_of(name: &str) -> usize {
    use sha2::Digest;
    sha2::Sha256::digest(name.as_bytes())[0] as usize
}

pub(super) fn record_file(name: &str, gn: u64) -> String {
    format!("{name}.{gn}.rec")
}

pub(super) fn shard_file(i: usize, gn: u64) -> String {
    format!("{MANIFEST_DIR}/{i:02x}.{gn}")
}

pub(super) fn kind_of(name: &str) -> Option<Kind> {
    match name.split_once('/')?.0 {
        "keys" => Some(Kind::Key),
        "material" => Some(Kind::Material),
        "aliases" => Some(Kind::Alias),
        "records" => Some(Kind::Record),
        _ => None,
    }
}

pub(super) fn valid_name(name: &str) -> bool {
    matches!(name.split_once('/'), Some((sub, rest)) if RECORD_DIRS.contains(&sub)
        && !rest.is_empty() && !rest.contains('/') && !rest.starts_with('.'))
}

/// Why a manifest could not be read.
pub(super) enum ViewErr {
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

pub(super) fn encode_top(
    mac: &[u8; 32],
    store_id: &[u8; 16],
    counter: u64,
    gens: &[u64],
) -> Result<Vec<u8>> {
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

pub(super) fn check_mac(
    mac: &[u8; 32],
    bytes: &[u8],
    file: &str,
) -> std::result::Result<usize, ViewErr> {
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

pub(super) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The counter and shard generations of an authentic `MANIFEST`.
pub(super) fn decode_top(
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

pub(super) fn encode_shard(
    mac: &[u8; 32],
    store_id: &[u8; 16],
    i: usize,
    s: &Shard,
) -> Result<Vec<u8>> {
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

pub(super) fn decode_shard(
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
pub(super) fn read_view(
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
pub(super) fn referenced(view: &View) -> BTreeMap<&'static str, BTreeSet<String>> {
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
pub(super) fn collect_garbage(
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
pub(super) struct RotationMarker {
    pub(super) header: String,
    pub(super) manifest: String,
}

/// Installs a committed rotation: manifest, then header, then drops the
/// marker. Idempotent.
pub(super) fn finish_rotation(
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
