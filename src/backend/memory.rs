//! The in-memory backend: material lives in process memory, zeroized when
//! destroyed or dropped, and is lost when the process ends.

use super::{KeyBackend, MaterialId};
use crate::crypto::{Cipher, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::key::KeySpec;
use crate::random::{OsRandom, RandomSource, random_array};
use crate::secret::{Key32, SecretBytes};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

/// Material of one key version.
enum Material {
    Symmetric(Cipher),
}

/// Keeps master keys in process memory. The embedded default.
///
/// Symmetric keys are held as ready AEAD instances whose key schedules are
/// zeroized on drop; the raw key bytes are zeroized as soon as the instance
/// is built.
pub struct MemoryBackend {
    rng: Arc<dyn RandomSource>,
    keys: RwLock<HashMap<MaterialId, Arc<Material>>>,
}

impl MemoryBackend {
    /// A backend drawing key material and nonces from the OS generator.
    pub fn new() -> Self {
        Self::with_random(Arc::new(OsRandom))
    }

    /// A backend drawing key material and nonces from `rng`.
    pub fn with_random(rng: Arc<dyn RandomSource>) -> Self {
        MemoryBackend {
            rng,
            keys: RwLock::new(HashMap::new()),
        }
    }

    fn get(&self, id: &MaterialId) -> Result<Arc<Material>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.keys.read().map(|k| k.len()).unwrap_or(0);
        f.debug_struct("MemoryBackend")
            .field("versions_held", &n)
            .finish_non_exhaustive()
    }
}

impl KeyBackend for MemoryBackend {
    fn name(&self) -> &str {
        "memory"
    }

    fn supports(&self, spec: KeySpec) -> bool {
        matches!(spec, KeySpec::Symmetric(_))
    }

    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        let material = match spec {
            KeySpec::Symmetric(alg) => {
                let key = Key32(random_array(self.rng.as_ref())?);
                Material::Symmetric(Cipher::new(alg, &key.0))
            }
        };
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if keys.contains_key(id) {
            return Err(Error::invalid(format!("material {id} already exists")));
        }
        keys.insert(id.clone(), Arc::new(material));
        Ok(())
    }

    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let m = self.get(id)?;
        let Material::Symmetric(cipher) = m.as_ref();
        let nonce: [u8; NONCE_LEN] = random_array(self.rng.as_ref())?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        cipher.seal_append(&nonce, aad, plaintext, &mut out)?;
        Ok(out)
    }

    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        let m = self.get(id)?;
        let Material::Symmetric(cipher) = m.as_ref();
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::DecryptionFailed);
        }
        let (nonce, rest) = payload.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::DecryptionFailed)?;
        let mut out = Vec::with_capacity(rest.len());
        cipher.open_append(&nonce, aad, rest, &mut out)?;
        Ok(SecretBytes::new(out))
    }

    fn destroy(&self, id: &MaterialId) -> Result<()> {
        // Dropping the last Arc drops the cipher, whose key schedule zeroizes.
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    fn contains(&self, id: &MaterialId) -> Result<bool> {
        Ok(self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id))
    }
}
