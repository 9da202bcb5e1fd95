//! The software backend's key material in PostgreSQL: one row per key
//! version in `strongroom_material`, sealed with AES-256-GCM under a key
//! derived from the ring's root key, with associated data binding the
//! table, the row's identity (key id, version), its generation and the
//! store id (docs/FORMAT.md, "PostgreSQL material rows"). No plaintext key
//! material is ever sent to the database.

use super::auth::guard;
use super::cache::{MaterialCache, payload_material};
use super::rows::notify;
use super::{Attempt, Core, PostgresStore, Retry, at_commit, pre};
use crate::backend::file::{decode, encode};
use crate::backend::material::Material;
use crate::backend::{
    ExportBackend, ExportRecipient, HpkeBackend, ImportBackend, KeyBackend, MacBackend, MaterialId,
    MemoryBackend, SigningBackend,
};
use crate::crypto::{Cipher, NONCE_LEN};
use crate::error::{Error, Result};
use crate::key::KeySpec;
use crate::random::{OsRandom, RandomSource, random_array};
use crate::secret::SecretBytes;
use postgres::types::Type;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"SRPG";
const ROW_VERSION: u8 = 1;
const TABLE: &str = "strongroom_material";

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

/// Seals `pt` as a row: magic, format version, nonce, AES-256-GCM.
pub(crate) fn seal_row(
    cipher: &Cipher,
    rng: &dyn RandomSource,
    aad: &[u8],
    pt: &[u8],
) -> Result<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = random_array(rng)?;
    let mut out = MAGIC.to_vec();
    out.push(ROW_VERSION);
    out.extend_from_slice(&nonce);
    cipher.seal_append(&nonce, aad, pt, &mut out)?;
    Ok(out)
}

/// Opens a row sealed by [`seal_row`].
pub(crate) fn open_row(
    cipher: &Cipher,
    aad: &[u8],
    row: &str,
    bytes: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
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

struct Inner {
    core: Arc<Core>,
    memory: MemoryBackend,
    rng: Arc<dyn RandomSource>,
    /// Generation of each version held in memory.
    gens: RwLock<HashMap<MaterialId, i64>>,
    /// Serializes loading a row into `memory` (replace, remember):
    /// threads that missed the same version at once load it once, and
    /// never remove a copy another thread is about to use.
    load: std::sync::Mutex<()>,
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
    /// Opens the material of `store`'s database, sealed under the root
    /// key `store` was opened with ([`PostgresStore::connect`]).
    pub fn open(store: &PostgresStore) -> Result<PostgresBackend> {
        Self::open_with_random(store, Arc::new(OsRandom))
    }

    /// As [`PostgresBackend::open`], drawing key material and nonces from `rng`.
    pub fn open_with_random(
        store: &PostgresStore,
        rng: Arc<dyn RandomSource>,
    ) -> Result<PostgresBackend> {
        let inner = Arc::new(Inner {
            core: store.core.clone(),
            memory: MemoryBackend::with_random(rng.clone()),
            rng,
            gens: RwLock::new(HashMap::new()),
            load: std::sync::Mutex::new(()),
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
        let Some((gen_, record)) = self.fetch_row(id)? else {
            i.evict(Some(id));
            return Err(Error::KeyNotFound(id.to_string()));
        };
        if held == Some(gen_) {
            return Ok(());
        }
        let name = format!("{TABLE}/{id}");
        let pt = self.open_fetched(id, gen_, &record)?;
        let (spec, raw) = decode(&name, &pt)?;
        let _load = i.load.lock().unwrap_or_else(|e| e.into_inner());
        // Another thread loaded this generation while this one waited.
        let now_held = i
            .gens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied();
        if now_held == Some(gen_) && i.memory.contains(id)? {
            return Ok(());
        }
        // Replaced in one step: a thread using the copy loaded before sees
        // that one or this one, never none.
        i.memory.replace_raw(id, spec, raw)?;
        // Remembered (trusted until a notification says otherwise) only if
        // no notification raced with this read; else checked again next use.
        let mut gens = i.gens.write().unwrap_or_else(|e| e.into_inner());
        if i.core.shared.unchanged(&ticket) {
            gens.insert(id.clone(), gen_);
        } else {
            gens.remove(id);
        }
        Ok(())
    }

    /// `id`'s row as stored, `(generation, sealed record)`, or `None`.
    fn fetch_row(&self, id: &MaterialId) -> Result<Option<(i64, Vec<u8>)>> {
        let row = self.inner.core.run(|c| {
            c.query_typed_opt(
                "SELECT gen, record FROM strongroom_material WHERE key_id = $1 AND version = $2",
                &[
                    (&id.key_id.as_str(), Type::TEXT),
                    (&i64::from(id.version), Type::INT8),
                ],
            )
            .map_err(pre("read material"))
        })?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Opens a fetched row under the root key: the record's plaintext, in a
    /// zeroizing buffer.
    fn open_fetched(
        &self,
        id: &MaterialId,
        gen_: i64,
        record: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let i = &self.inner;
        let name = format!("{TABLE}/{id}");
        let g = u64::try_from(gen_).map_err(|_| Error::CorruptStore {
            file: format!("postgres:{name}"),
            reason: "bad generation".into(),
        })?;
        let keys = i.core.keys();
        open_row(&keys.material, &aad(&keys.store_id, g, id), &name, record)
            .map_err(|e| i.core.explain(e))
    }

    fn store_new(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        Material::from_raw(spec, raw)?;
        let i = &self.inner;
        let pt = encode(spec, raw)?;
        let version = i64::from(id.version);
        let keys = i.core.keys();
        i.core.run(|c: &mut postgres::Client| -> Attempt<()> {
            let mut tx = c.transaction().map_err(pre("store material"))?;
            guard(&mut tx, &keys)?;
            let gen_: i64 = tx
                .query_one("SELECT nextval('strongroom_material_gen')", &[])
                .map_err(pre("store material"))?
                .get(0);
            let g = u64::try_from(gen_)
                .map_err(|_| Retry::Stop(Error::invalid("bad material generation")))?;
            let sealed = seal_row(
                &keys.material,
                i.rng.as_ref(),
                &aad(&keys.store_id, g, id),
                &pt,
            )
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

    fn exporting(&self) -> Option<&dyn ExportBackend> {
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

impl ExportBackend for PostgresBackend {
    /// Reads the version's row (opened under the root key into a zeroizing
    /// buffer) and seals its raw material to the recipient; the plaintext
    /// never leaves this function. A multi-region key whose primary is on
    /// PostgreSQL can therefore be replicated to another region.
    fn export_sealed(&self, id: &MaterialId, to: &ExportRecipient) -> Result<Vec<u8>> {
        let (gen_, record) = self
            .fetch_row(id)?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let pt = self.open_fetched(id, gen_, &record)?;
        let name = format!("{TABLE}/{id}");
        let (_, raw) = decode(&name, &pt)?;
        to.seal(raw)
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
