//! The file backend: key material encrypted at rest in a keystore directory.

use super::material::Material;
use super::{
    HpkeBackend, ImportBackend, KeyBackend, MacBackend, MaterialId, MemoryBackend, SigningBackend,
};
use crate::error::{Error, Result};
use crate::key::KeySpec;
use crate::secret::SecretBytes;
use crate::store::keystore::{Keystore, Kind};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Master-key material in a keystore directory: one record per key version,
/// encrypted and authenticated under the root key, loaded into memory at open
/// (and on demand, for versions another process created).
#[derive(Debug)]
pub struct FileBackend {
    ks: Arc<Keystore>,
    memory: MemoryBackend,
}

fn material_rel(id: &MaterialId) -> String {
    format!("material/{}.v{}.rec", id.key_id, id.version)
}

/// Record plaintext: `spec_len u16 BE || spec (JSON) || raw material`.
fn encode(spec: KeySpec, raw: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let s = serde_json::to_vec(&spec).map_err(|e| Error::Other(Arc::new(e)))?;
    let len = u16::try_from(s.len()).map_err(|_| Error::invalid("spec too long"))?;
    let mut out = Zeroizing::new(Vec::with_capacity(2 + s.len() + raw.len()));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s);
    out.extend_from_slice(raw);
    Ok(out)
}

fn decode<'a>(rel: &str, pt: &'a [u8]) -> Result<(KeySpec, &'a [u8])> {
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
        for name in ks.list("material")? {
            let rel = format!("material/{name}");
            let Some(id) = parse_name(&name) else {
                return Err(Error::CorruptStore {
                    file: rel,
                    reason: "not a material file name".into(),
                });
            };
            let Some(pt) = ks.read(Kind::Material, &rel)? else {
                continue;
            };
            let (spec, raw) = decode(&rel, &pt)?;
            memory
                .insert_raw(&id, spec, raw)
                .map_err(|_| Error::CorruptStore {
                    file: rel,
                    reason: "material does not fit its key spec".into(),
                })?;
        }
        Ok(FileBackend { ks, memory })
    }

    /// Loads a version another process created since this one opened.
    fn ensure(&self, id: &MaterialId) -> Result<()> {
        if self.memory.contains(id)? {
            return Ok(());
        }
        let rel = material_rel(id);
        let Some(pt) = self.ks.read(Kind::Material, &rel)? else {
            return Err(Error::KeyNotFound(id.to_string()));
        };
        let (spec, raw) = decode(&rel, &pt)?;
        match self.memory.insert_raw(id, spec, raw) {
            Ok(()) => Ok(()),
            // Another thread loaded it meanwhile.
            Err(_) if self.memory.contains(id)? => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn store_new(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        let rel = material_rel(id);
        if self.ks.exists(&rel) || self.memory.contains(id)? {
            return Err(Error::invalid(format!("material {id} already exists")));
        }
        // Validate before writing.
        Material::from_raw(spec, raw)?;
        self.ks.write(Kind::Material, &rel, &encode(spec, raw)?)?;
        self.memory.insert_raw(id, spec, raw)
    }
}

fn parse_name(name: &str) -> Option<MaterialId> {
    let base = name.strip_suffix(".rec")?;
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

    fn destroy(&self, id: &MaterialId) -> Result<()> {
        self.ks.remove(&material_rel(id))?;
        self.memory.destroy(id)
    }

    fn contains(&self, id: &MaterialId) -> Result<bool> {
        Ok(self.memory.contains(id)? || self.ks.exists(&material_rel(id)))
    }
}

impl ImportBackend for FileBackend {
    fn import(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        self.store_new(id, spec, raw)
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
