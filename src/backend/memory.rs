//! The in-memory backend: material lives in process memory, zeroized when
//! destroyed or dropped, and is lost when the process ends.

use super::material::Material;
use super::{HpkeBackend, ImportBackend, KeyBackend, MacBackend, MaterialId, SigningBackend};
use crate::crypto::CryptoProvider;
use crate::error::{Error, Result};
use crate::key::KeySpec;
use crate::random::{OsRandom, RandomSource};
use crate::secret::SecretBytes;
use crate::sync::WriterFirst;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Keeps master keys in process memory. The embedded default.
///
/// Symmetric keys are held as ready AEAD instances whose key schedules are
/// zeroized on drop; the raw key bytes are zeroized as soon as the instance
/// is built.
pub struct MemoryBackend {
    rng: Arc<dyn RandomSource>,
    /// The primitives of its keys (symmetric, P-256, Ed25519).
    provider: CryptoProvider,
    /// Read on every operation (a lookup; encrypt and decrypt run under the
    /// read lock without cloning the `Arc`); written only to insert or
    /// remove material, which is built and zeroized outside
    /// the lock. Writers are not held back by a stream of readers.
    keys: WriterFirst<HashMap<MaterialId, Arc<Material>>>,
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
            provider: CryptoProvider::default(),
            keys: WriterFirst::new(HashMap::new()),
        }
    }

    /// Uses `provider` for the primitives of its keys (default
    /// [`CryptoProvider::default`]). The ring's default backend gets the
    /// ring's provider ([`crate::KeyRingBuilder::crypto_provider`]).
    pub fn with_crypto_provider(mut self, provider: CryptoProvider) -> Self {
        self.provider = provider;
        self
    }

    /// Installs material from its raw encoding (used by stores that persist
    /// material and by key import). Fails if `id` exists.
    pub(crate) fn insert_raw(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        let material = Material::from_raw_with(self.provider, spec, raw)?;
        let mut keys = self.keys.write();
        if keys.contains_key(id) {
            return Err(Error::invalid(format!("material {id} already exists")));
        }
        keys.insert(id.clone(), Arc::new(material));
        Ok(())
    }

    /// Installs material from its raw encoding, replacing any held under
    /// `id` in one step (a loader refreshing a cached copy: a concurrent
    /// user sees the old or the new material, never none). The replaced
    /// material is dropped (zeroized) outside the lock.
    #[cfg(feature = "postgres")]
    pub(crate) fn replace_raw(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        let material = Arc::new(Material::from_raw_with(self.provider, spec, raw)?);
        let old = self.keys.write().insert(id.clone(), material);
        drop(old);
        Ok(())
    }

    fn with<T>(&self, id: &MaterialId, f: impl FnOnce(&Material) -> Result<T>) -> Result<T> {
        match self.keys.read().get(id) {
            Some(m) => f(m),
            None => Err(Error::KeyNotFound(id.to_string())),
        }
    }

    fn get(&self, id: &MaterialId) -> Result<Arc<Material>> {
        self.keys
            .read()
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
        let n = self.keys.read().len();
        f.debug_struct("MemoryBackend")
            .field("versions_held", &n)
            .field("crypto_provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl KeyBackend for MemoryBackend {
    fn name(&self) -> &str {
        "memory"
    }

    fn supports(&self, _spec: KeySpec) -> bool {
        true
    }

    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        let raw = Material::generate_raw(spec, self.rng.as_ref())?;
        self.insert_raw(id, spec, &raw)
    }

    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        // Under the read lock, without cloning the `Arc`: no shared
        // reference count is written per operation (the AEAD of a data key
        // is short; writers wait for it at most).
        self.with(id, |m| m.encrypt(self.rng.as_ref(), aad, plaintext))
    }

    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        self.with(id, |m| m.decrypt(aad, payload))
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
        // Dropping the last Arc drops the cipher, whose key schedule
        // zeroizes; that happens after the lock is released.
        let removed = self.keys.write().remove(id);
        drop(removed);
        Ok(())
    }

    fn contains(&self, id: &MaterialId) -> Result<bool> {
        Ok(self.keys.read().contains_key(id))
    }
}

impl SigningBackend for MemoryBackend {
    fn sign(&self, id: &MaterialId, data: &[u8]) -> Result<Vec<u8>> {
        self.get(id)?.sign(data)
    }

    fn public_key(&self, id: &MaterialId) -> Result<Vec<u8>> {
        self.get(id)?.public_key_der()
    }
}

impl MacBackend for MemoryBackend {
    fn mac(&self, id: &MaterialId, message: &[u8]) -> Result<Vec<u8>> {
        self.get(id)?.mac(message)
    }
}

impl HpkeBackend for MemoryBackend {
    fn hpke_open(
        &self,
        id: &MaterialId,
        info: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes> {
        self.get(id)?.hpke_open(info, aad, sealed)
    }
}

impl ImportBackend for MemoryBackend {
    fn import(&self, id: &MaterialId, spec: KeySpec, raw: &[u8]) -> Result<()> {
        self.insert_raw(id, spec, raw)
    }
}
