//! The header, root-key derivation (raw or Argon2id) and the keys derived from the root.

use super::*;

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
pub(super) struct HeaderVersion {
    pub(super) format: String,
    pub(super) version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    pub(super) format: String,
    pub(super) version: u32,
    /// 16 random bytes (hex) naming this store, bound into every record and
    /// the manifest.
    pub(super) store_id: String,
    pub(super) kdf: Kdf,
    /// A check record: proves the root key before anything is touched.
    pub(super) check: String,
}

pub(super) fn corrupt_file(file: &str, reason: impl Into<String>) -> Error {
    Error::CorruptStore {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

pub(super) fn parse_header(bytes: &[u8], file: &str) -> Result<Header> {
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
    pub(super) fn store_id(&self, file: &str) -> Result<[u8; 16]> {
        unhex(&self.store_id)
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .ok_or_else(|| corrupt_file(file, "bad store id"))
    }
}

/// The keys derived from the root key.
pub(super) struct Keys {
    /// Encrypts records (AES-256-GCM).
    pub(super) record: Cipher,
    /// Authenticates the manifest (HMAC-SHA256).
    pub(super) mac: Zeroizing<[u8; 32]>,
    /// Names alias records (HMAC-SHA256 of the alias).
    pub(super) names: Zeroizing<[u8; 32]>,
}

pub(super) fn hkdf_expand(root: &[u8; 32], info: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(HKDF_SALT), root);
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand(info, out.as_mut_slice())
        .map_err(|_| Error::invalid("HKDF output length out of range"))?;
    Ok(out)
}

pub(super) fn derive_keys(root: &[u8; 32]) -> Result<Keys> {
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
pub(super) fn backup_cipher_from(root: &Zeroizing<[u8; 32]>) -> Result<Cipher> {
    Ok(Cipher::new(
        SymmetricAlgorithm::Aes256Gcm,
        &*hkdf_expand(root, b"backup")?,
    ))
}

pub(super) fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> Result<[u8; 32]> {
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
pub(super) fn alias_name_with(names: &[u8; 32], alias: &str) -> Result<String> {
    let h = hmac(names, &[b"alias\0", alias.as_bytes()])?;
    Ok(format!("aliases/{}", hex(&h[..16])))
}

/// The record name of a generic record: a keyed hash of its kind and
/// name, so no secret's name shows on disk.
pub(super) fn generic_name_with(names: &[u8; 32], kind: &str, name: &str) -> Result<String> {
    let h = hmac(
        names,
        &[b"record\0", kind.as_bytes(), b"\0", name.as_bytes()],
    )?;
    Ok(format!("records/{}", hex(&h[..16])))
}

pub(crate) fn derive_root(
    root: &RootKey,
    kdf: &Kdf,
    allow_weak: bool,
) -> Result<Zeroizing<[u8; 32]>> {
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
pub(super) fn build_header(
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
pub(crate) fn new_kdf(
    root: &RootKey,
    options: &KeystoreOptions,
    rng: &dyn RandomSource,
) -> Result<Kdf> {
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
pub(super) fn verify_root(
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
