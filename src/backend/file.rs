//! The file backend: key material encrypted at rest in a keystore directory.

use super::material::Material;
use super::{
    ExportBackend, ExportRecipient, HpkeBackend, ImportBackend, KeyBackend, MacBackend, MaterialId,
    MemoryBackend, SigningBackend,
};
use crate::error::{Error, Result};
use crate::key::KeySpec;
use crate::secret::SecretBytes;
use crate::store::keystore::{Keystore, Kind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// Master-key material in a keystore directory: one record per key version,
/// encrypted and authenticated under the root key, loaded into memory at open
/// and kept in step with the store before every use: a version another ring
/// or process created is loaded on demand, and the material of a version
/// whose record is gone (a deleted key) is dropped from memory.
#[derive(Debug)]
pub struct FileBackend {
    ks: Arc<Keystore>,
    memory: MemoryBackend,
    loaded: Mutex<Loaded>,
}

/// What is in memory, and the store change it reflects.
#[derive(Debug, Default)]
struct Loaded {
    seen: u64,
    gens: HashMap<MaterialId, u64>,
}

fn material_name(id: &MaterialId) -> String {
    format!("material/{}.v{}", id.key_id, id.version)
}

/// Record plaintext: `spec_len u16 BE || spec (JSON) || raw material`.
pub(crate) fn encode(spec: KeySpec, raw: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let s = serde_json::to_vec(&spec).map_err(|e| Error::Other(Arc::new(e)))?;
    let len = u16::try_from(s.len()).map_err(|_| Error::invalid("spec too long"))?;
    let mut out = Zeroizing::new(Vec::with_capacity(2 + s.len() + raw.len()));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s);
    out.extend_from_slice(raw);
    Ok(out)
}

pub(crate) fn decode<'a>(rel: &str, pt: &'a [u8]) -> Result<(KeySpec, &'a [u8])> {
    let corrupt = || Error::CorruptStore {
        file: rel.to_owned(),
        reason: "bad material record".into(),
    };
    let len = u16::from_be_bytes(
        pt.get(..2)
            .ok_or_else(corrupt)?
            .try_into()
            .map_err(|_| corrupt())?,
    ) as usize;
    let spec_bytes = pt.get(2..2 + len).ok_or_else(corrupt)?;
    let spec: KeySpec = serde_json::from_slice(spec_bytes).map_err(|_| corrupt())?;
    Ok((spec, pt.get(2 + len..).ok_or_else(corrupt)?))
}

impl FileBackend {
    pub(crate) fn load(ks: Arc<Keystore>) -> Result<Self> {
        let memory = MemoryBackend::new();
        let mut gens = HashMap::new();
        for (name, _) in ks.names("material") {
            let Some(id) = name.strip_prefix("material/").and_then(parse_name) else {
                return Err(Error::CorruptStore {
                    file: name,
                    reason: "not a material record name".into(),
                });
            };
            let Some((gn, pt)) = ks.read(Kind::Material, &name)? else {
                continue;
            };
            let (spec, raw) = decode(&name, &pt)?;
            memory
                .insert_raw(&id, spec, raw)
                .map_err(|_| Error::CorruptStore {
                    file: name,
                    reason: "material does not fit its key spec".into(),
                })?;
            gens.insert(id, gn);
        }
        let seen = ks.counter();
        Ok(FileBackend {
            ks,
            memory,
            loaded: Mutex::new(Loaded { seen, gens }),
        })
    }

    /// Drops from memory the material whose record is gone or was replaced
    /// since the last look (a `stat` when nothing changed).
    fn sync(&self) -> Result<()> {
        self.ks.refresh()?;
        let counter = self.ks.counter();
        let mut st = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if st.seen == counter {
            return Ok(());
        }
        let stale: Vec<MaterialId> = st
            .gens
            .iter()
            .filter(|(id, g)| self.ks.gen_of(&material_name(id)) != Some(**g))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.memory.destroy(&id)?;
            st.gens.remove(&id);
        }
        st.seen = counter;
        Ok(())
    }

    /// Makes sure the current material of `id` is in memory: loads a
    /// version another ring or process created since this one looked.
    fn ensure(&self, id: &MaterialId) -> Result<()> {
        self.sync()?;
        if self.memory.contains(id)? {
            return Ok(());
        }
        let name = material_name(id);
        let Some((gn, pt)) = self.ks.read(Kind::Material, &name)? else {
            return Err(Error::KeyNotFound(id.to_string()));
        };
        let (spec, raw) = decode(&name, &pt)?;
        match self.memory.insert_raw(id, spec, raw) {
            Ok(()) => {}
            // Another thread loaded it meanwhile.
            Err(_) if self.memory.contains(id)? => {}
            Err(e) => return Err(e),
        }
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gens
            .insert(id.clone(), gn);
        Ok(())
    }

    fn store_new(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        let lock = self.ks.lock()?;
        self.sync()?;
        let name = material_name(id);
        if self.ks.gen_of(&name).is_some() || self.memory.contains(id)? {
            return Err(Error::invalid(format!("material {id} already exists")));
        }
        // Validate before writing.
        Material::from_raw(spec, raw)?;
        let g = self
            .ks
            .apply(&lock, &[(Kind::Material, &name, &encode(spec, raw)?)], &[])?;
        self.memory.insert_raw(id, spec, raw)?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gens
            .insert(id.clone(), g);
        Ok(())
    }
}

fn parse_name(base: &str) -> Option<MaterialId> {
    let (key, v) = base.rsplit_once(".v")?;
    Some(MaterialId::new(
        crate::KeyId::parse(key).ok()?,
        v.parse().ok()?,
    ))
}

impl KeyBackend for FileBackend {
    fn name(&self) -> &str {
        "file"
    }

    fn supports(&self, spec: KeySpec) -> bool {
        self.memory.supports(spec)
    }

    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        let raw = Material::generate_raw(spec, self.ks.rng())?;
        self.store_new(id, spec, &raw)
    }

    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.ensure(id)?;
        self.memory.encrypt(id, aad, plaintext)
    }

    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        self.ensure(id)?;
        self.memory.decrypt(id, aad, payload)
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

    fn destroy(&self, id: &MaterialId) -> Result<()> {
        let lock = self.ks.lock()?;
        self.ks.apply(&lock, &[], &[&material_name(id)])?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .gens
            .remove(id);
        self.memory.destroy(id)
    }

    fn contains(&self, id: &MaterialId) -> Result<bool> {
        self.sync()?;
        Ok(self.memory.contains(id)? || self.ks.gen_of(&material_name(id)).is_some())
    }
}

impl ImportBackend for FileBackend {
    fn import(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        self.store_new(id, spec, raw)
    }
}

impl ExportBackend for FileBackend {
    /// Reads the version's record from the keystore (decrypted under the
    /// root key into a zeroizing buffer) and seals its raw material to the
    /// recipient; the plaintext never leaves this function.
    fn export_sealed(&self, id: &MaterialId, to: &ExportRecipient) -> Result<Vec<u8>> {
        self.sync()?;
        let name = material_name(id);
        let Some((_, pt)) = self.ks.read(Kind::Material, &name)? else {
            return Err(Error::KeyNotFound(id.to_string()));
        };
        let (_, raw) = decode(&name, &pt)?;
        to.seal(raw)
    }
}

impl SigningBackend for FileBackend {
    fn sign(&self, id: &MaterialId, data: &[u8]) -> Result<Vec<u8>> {
        self.ensure(id)?;
        self.memory.sign(id, data)
    }

    fn public_key(&self, id: &MaterialId) -> Result<Vec<u8>> {
        self.ensure(id)?;
        self.memory.public_key(id)
    }
}

impl MacBackend for FileBackend {
    fn mac(&self, id: &MaterialId, message: &[u8]) -> Result<Vec<u8>> {
        self.ensure(id)?;
        self.memory.mac(id, message)
    }
}

impl HpkeBackend for FileBackend {
    fn hpke_open(
        &self,
        id: &MaterialId,
        info: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes> {
        self.ensure(id)?;
        self.memory.hpke_open(id, info, aad, sealed)
    }
}
