//! The software backend's key material in PostgreSQL: one row per key
//! version in `strongroom_material`, sealed with AES-256-GCM under a key
//! derived from the ring's root key, with associated data binding the
//! table, the row's identity (key id, version), its generation and the
//! store id (docs/FORMAT.md, "PostgreSQL material rows"). No plaintext key
//! material is ever sent to the database.

use super::cache::{MaterialCache, payload_material};
use super::rows::notify;
use super::schema::LOCK;
use super::{Attempt, Core, PostgresStore, Retry, at_commit, pre};
use crate::backend::file::{decode, encode};
use crate::backend::material::Material;
use crate::backend::{
    HpkeBackend, ImportBackend, KeyBackend, MacBackend, MaterialId, MemoryBackend, SigningBackend,
};
use crate::crypto::{Cipher, NONCE_LEN};
use crate::error::{Error, Result};
use crate::key::{KeySpec, SymmetricAlgorithm};
use crate::random::{OsRandom, RandomSource, random_array};
use crate::secret::SecretBytes;
use crate::store::keystore::keys::{Kdf, derive_root, new_kdf};
use crate::store::{KeystoreOptions, RootKey};
use postgres::types::Type;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"SRPG";
const ROW_VERSION: u8 = 1;
const TABLE: &str = "strongroom_material";
const HKDF_SALT: &[u8] = b"strongroom postgres v1";
const CHECK_TEXT: &[u8] = b"strongroom postgres check";

/// Associated data of a material row (docs/FORMAT.md).
pub(crate) fn aad(store_id: &[u8; 16], gen_: u64, id: &MaterialId) -> Vec<u8> {
    let mut a = MAGIC.to_vec();
    a.push(ROW_VERSION);
    a.extend_from_slice(TABLE.as_bytes());
    a.push(0);
    a.extend_from_slice(store_id);
    a.extend_from_slice(&gen_.to_be_bytes());
    a.extend_from_slice(id.key_id.as_str().as_bytes());
    a.push(0);
    a.extend_from_slice(&id.version.to_be_bytes());
    a
}

fn check_aad(store_id: &[u8; 16]) -> Vec<u8> {
    let mut a = MAGIC.to_vec();
    a.push(ROW_VERSION);
    a.extend_from_slice(b"strongroom_store");
    a.push(0);
    a.extend_from_slice(store_id);
    a
}

fn seal(cipher: &Cipher, rng: &dyn RandomSource, aad: &[u8], pt: &[u8]) -> Result<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = random_array(rng)?;
    let mut out = MAGIC.to_vec();
    out.push(ROW_VERSION);
    out.extend_from_slice(&nonce);
    cipher.seal_append(&nonce, aad, pt, &mut out)?;
    Ok(out)
}

fn open(cipher: &Cipher, aad: &[u8], row: &str, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let corrupt = |reason: &str| Error::CorruptStore {
        file: format!("postgres:{row}"),
        reason: reason.into(),
    };
    if bytes.len() < 5 + NONCE_LEN + 16 || &bytes[..4] != MAGIC {
        return Err(corrupt("not a strongroom material row"));
    }
    if bytes[4] != ROW_VERSION {
        return Err(corrupt("unknown material row format version"));
    }
    let nonce: [u8; NONCE_LEN] = bytes[5..5 + NONCE_LEN]
        .try_into()
        .map_err(|_| corrupt("truncated"))?;
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    cipher
        .open_append(&nonce, aad, &bytes[5 + NONCE_LEN..], &mut out)
        .map_err(|_| {
            corrupt(
                "not authentic: tampered, moved to another row, another generation or \
                 another store, or sealed under another root key",
            )
        })?;
    Ok(out)
}

fn hkdf(root: &[u8; 32], info: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(HKDF_SALT), root);
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand(info, out.as_mut_slice())
        .map_err(|_| Error::invalid("HKDF output length out of range"))?;
    Ok(out)
}

struct Inner {
    core: Arc<Core>,
    cipher: Cipher,
    store_id: [u8; 16],
    memory: MemoryBackend,
    rng: Arc<dyn RandomSource>,
    /// Generation of each version held in memory.
    gens: RwLock<HashMap<MaterialId, i64>>,
}

impl MaterialCache for Inner {
    fn evict(&self, id: Option<&MaterialId>) {
        let mut gens = self.gens.write().unwrap_or_else(|e| e.into_inner());
        let ids: Vec<MaterialId> = match id {
            Some(id) => vec![id.clone()],
            None => gens.keys().cloned().collect(),
        };
        for id in ids {
            gens.remove(&id);
            let _ = self.memory.destroy(&id);
        }
    }
}

/// Master-key material in PostgreSQL beside a [`PostgresStore`]: each
/// version sealed under a key derived from the root key, loaded on first
/// use into memory (zeroized when dropped), and dropped from memory when
/// another instance destroys it (by notification, or by the listener's
/// flush after a reconnect). Generation happens here; the database only
/// ever receives sealed rows.
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("target", &self.inner.core.pool.conn.describe())
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    /// Opens the material of `store`'s database under `root`. The first
    /// instance to open a database sets its store id and root-key check
    /// (passphrases through Argon2id with the default parameters); later
    /// ones must bring the same root key, or get
    /// [`crate::Error::WrongRootKey`] and nothing changes.
    pub fn open(store: &PostgresStore, root: &RootKey) -> Result<PostgresBackend> {
        Self::open_with_random(store, root, Arc::new(OsRandom))
    }

    /// As [`PostgresBackend::open`], drawing key material and nonces from `rng`.
    pub fn open_with_random(
        store: &PostgresStore,
        root: &RootKey,
        rng: Arc<dyn RandomSource>,
    ) -> Result<PostgresBackend> {
        let core = store.core.clone();
        let (root_bytes, store_id) = core.run(|c| identify(c, root, rng.as_ref()))?;
        let cipher = Cipher::new(
            SymmetricAlgorithm::Aes256Gcm,
            &*hkdf(&root_bytes, b"material")?,
        );
        let inner = Arc::new(Inner {
            core,
            cipher,
            store_id,
            memory: MemoryBackend::with_random(rng.clone()),
            rng,
            gens: RwLock::new(HashMap::new()),
        });
        let weak: std::sync::Weak<dyn MaterialCache> =
            Arc::downgrade(&(inner.clone() as Arc<dyn MaterialCache>));
        inner.core.shared.register(weak);
        Ok(PostgresBackend { inner })
    }

    /// Makes sure `id`'s material is in memory, loading its row if needed.
    /// While the listener is away (no notifications), the row is checked
    /// on every use, so material destroyed elsewhere is never used.
    fn ensure(&self, id: &MaterialId) -> Result<()> {
        let i = &self.inner;
        let listening = i.core.shared.listening();
        let held = i
            .gens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied();
        if held.is_some() && listening {
            return Ok(());
        }
        let ticket = i.core.shared.ticket();
        let row = i.core.run(|c| {
            c.query_typed_opt(
                "SELECT gen, record FROM strongroom_material WHERE key_id = $1 AND version = $2",
                &[
                    (&id.key_id.as_str(), Type::TEXT),
                    (&i64::from(id.version), Type::INT8),
                ],
            )
            .map_err(pre("read material"))
        })?;
        let Some(row) = row else {
            i.evict(Some(id));
            return Err(Error::KeyNotFound(id.to_string()));
        };
        let gen_: i64 = row.get(0);
        if held == Some(gen_) {
            return Ok(());
        }
        i.evict(Some(id));
        let name = format!("{TABLE}/{id}");
        let g = u64::try_from(gen_).map_err(|_| Error::CorruptStore {
            file: format!("postgres:{name}"),
            reason: "bad generation".into(),
        })?;
        let pt = open(&i.cipher, &aad(&i.store_id, g, id), &name, row.get(1))?;
        let (spec, raw) = decode(&name, &pt)?;
        match i.memory.insert_raw(id, spec, raw) {
            Ok(()) => {}
            Err(_) if i.memory.contains(id)? => {}
            Err(e) => return Err(e),
        }
        // Remembered (trusted until a notification says otherwise) only if
        // no notification raced with this read; else checked again next use.
        if i.core.shared.unchanged(&ticket) {
            i.gens
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), gen_);
        }
        Ok(())
    }

    fn store_new(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        Material::from_raw(spec, raw)?;
        let i = &self.inner;
        let pt = encode(spec, raw)?;
        let version = i64::from(id.version);
        i.core.run(|c: &mut postgres::Client| -> Attempt<()> {
            let mut tx = c.transaction().map_err(pre("store material"))?;
            let gen_: i64 = tx
                .query_one("SELECT nextval('strongroom_material_gen')", &[])
                .map_err(pre("store material"))?
                .get(0);
            let g = u64::try_from(gen_)
                .map_err(|_| Retry::Stop(Error::invalid("bad material generation")))?;
            let sealed = seal(&i.cipher, i.rng.as_ref(), &aad(&i.store_id, g, id), &pt)
                .map_err(Retry::Stop)?;
            let n = tx
                .execute(
                    "INSERT INTO strongroom_material (key_id, version, gen, record) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&id.key_id.as_str(), &version, &gen_, &sealed],
                )
                .map_err(pre("store material"))?;
            if n == 0 {
                return Err(Retry::Stop(Error::invalid(format!(
                    "material {id} already exists"
                ))));
            }
            tx.commit().map_err(at_commit)
        })
    }
}

/// Reads or creates the store identity and checks the root key against it.
fn identify(
    c: &mut postgres::Client,
    root: &RootKey,
    rng: &dyn RandomSource,
) -> Attempt<(Zeroizing<[u8; 32]>, [u8; 16])> {
    let mut tx = c.transaction().map_err(pre("store identity"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .map_err(pre("store identity"))?;
    let row = tx
        .query_opt(
            "SELECT store_id, kdf, check_record FROM strongroom_store WHERE id = 1",
            &[],
        )
        .map_err(pre("store identity"))?;
    let bad = |r: &str| {
        Retry::Stop(Error::CorruptStore {
            file: "postgres:strongroom_store".into(),
            reason: r.into(),
        })
    };
    if let Some(row) = row {
        let store_id: [u8; 16] = row
            .get::<_, &[u8]>(0)
            .try_into()
            .map_err(|_| bad("bad store id"))?;
        let kdf: Kdf = serde_json::from_str(row.get(1)).map_err(|_| bad("bad KDF description"))?;
        let root_bytes = derive_root(root, &kdf, false).map_err(Retry::Stop)?;
        let cipher = Cipher::new(
            SymmetricAlgorithm::Aes256Gcm,
            &*hkdf(&root_bytes, b"check").map_err(Retry::Stop)?,
        );
        open(
            &cipher,
            &check_aad(&store_id),
            "strongroom_store",
            row.get(2),
        )
        .map_err(|_| Retry::Stop(Error::WrongRootKey))?;
        return Ok((root_bytes, store_id));
    }
    let store_id: [u8; 16] = random_array(rng).map_err(Retry::Stop)?;
    let kdf = new_kdf(root, &KeystoreOptions::default(), rng).map_err(Retry::Stop)?;
    let root_bytes = derive_root(root, &kdf, false).map_err(Retry::Stop)?;
    let cipher = Cipher::new(
        SymmetricAlgorithm::Aes256Gcm,
        &*hkdf(&root_bytes, b"check").map_err(Retry::Stop)?,
    );
    let check = seal(&cipher, rng, &check_aad(&store_id), CHECK_TEXT).map_err(Retry::Stop)?;
    let kdf_text = super::rows::json(&kdf).map_err(Retry::Stop)?;
    tx.execute(
        "INSERT INTO strongroom_store (id, store_id, kdf, check_record) VALUES (1, $1, $2, $3)",
        &[&store_id.as_slice(), &kdf_text, &check],
    )
    .map_err(pre("store identity"))?;
    tx.commit().map_err(at_commit)?;
    Ok((root_bytes, store_id))
}

impl KeyBackend for PostgresBackend {
    fn name(&self) -> &str {
        "postgres"
    }

    fn supports(&self, spec: KeySpec) -> bool {
        self.inner.memory.supports(spec)
    }

    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        let raw = Material::generate_raw(spec, self.inner.rng.as_ref())?;
        self.store_new(id, spec, &raw)
    }

    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.ensure(id)?;
        self.inner.memory.encrypt(id, aad, plaintext)
    }

    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        self.ensure(id)?;
        self.inner.memory.decrypt(id, aad, payload)
    }

    fn raw_aead_payloads(&self) -> bool {
        true
    }

    fn signing(&self) -> Option<&dyn SigningBackend> {
        Some(self)
    }

    fn macs(&self) -> Option<&dyn MacBackend> {
        Some(self)
    }

    fn hpke(&self) -> Option<&dyn HpkeBackend> {
        Some(self)
    }

    fn importing(&self) -> Option<&dyn ImportBackend> {
        Some(self)
    }

    /// Deletes the row (and tells every instance to drop it from memory).
    fn destroy(&self, id: &MaterialId) -> Result<()> {
        let i = &self.inner;
        let r = i.core.run(|c| {
            let mut tx = c.transaction().map_err(pre("destroy material"))?;
            tx.execute(
                "DELETE FROM strongroom_material WHERE key_id = $1 AND version = $2",
                &[&id.key_id.as_str(), &i64::from(id.version)],
            )
            .map_err(pre("destroy material"))?;
            notify(&mut tx, &payload_material(id))?;
            tx.commit().map_err(at_commit)
        });
        i.evict(Some(id));
        r
    }

    /// Whether the database holds a row for `id` (asked every time: another
    /// instance may have made or destroyed it).
    fn contains(&self, id: &MaterialId) -> Result<bool> {
        let row = self.inner.core.run(|c| {
            c.query_typed_opt(
                "SELECT 1 FROM strongroom_material WHERE key_id = $1 AND version = $2",
                &[
                    (&id.key_id.as_str(), Type::TEXT),
                    (&i64::from(id.version), Type::INT8),
                ],
            )
            .map_err(pre("read material"))
        })?;
        Ok(row.is_some())
    }
}

impl ImportBackend for PostgresBackend {
    fn import(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        self.store_new(id, spec, raw)
    }
}

impl SigningBackend for PostgresBackend {
    fn sign(&self, id: &MaterialId, data: &[u8]) -> Result<Vec<u8>> {
        self.ensure(id)?;
        self.inner.memory.sign(id, data)
    }

    fn public_key(&self, id: &MaterialId) -> Result<Vec<u8>> {
        self.ensure(id)?;
        self.inner.memory.public_key(id)
    }
}

impl MacBackend for PostgresBackend {
    fn mac(&self, id: &MaterialId, message: &[u8]) -> Result<Vec<u8>> {
        self.ensure(id)?;
        self.inner.memory.mac(id, message)
    }
}

impl HpkeBackend for PostgresBackend {
    fn hpke_open(
        &self,
        id: &MaterialId,
        info: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes> {
        self.ensure(id)?;
        self.inner.memory.hpke_open(id, info, aad, sealed)
    }
}
