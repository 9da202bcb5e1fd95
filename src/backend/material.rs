//! Key material in software, shared by the memory and file backends.
//!
//! Raw bytes exist only transiently (in zeroizing buffers) while material is
//! generated, imported, or loaded from and written to an encrypted store;
//! in between, material is held as ready primitive instances whose secret
//! state is zeroized on drop.

use crate::crypto::{Cipher, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::key::KeySpec;
use crate::random::{RandomSource, random_array};
use crate::secret::SecretBytes;
use zeroize::Zeroizing;

/// Usable material of one key version.
#[derive(Debug)]
pub(crate) enum Material {
    Symmetric(Cipher),
}

impl Material {
    /// Fresh raw material for `spec` (the encoding [`Material::from_raw`] takes).
    pub(crate) fn generate_raw(
        spec: KeySpec,
        rng: &dyn RandomSource,
    ) -> Result<Zeroizing<Vec<u8>>> {
        match spec {
            KeySpec::Symmetric(_) => {
                let k = Zeroizing::new(random_array::<32>(rng)?);
                Ok(Zeroizing::new(k.to_vec()))
            }
        }
    }

    /// Builds usable material from its raw encoding: 32 key bytes for
    /// symmetric specs.
    pub(crate) fn from_raw(spec: KeySpec, raw: &[u8]) -> Result<Material> {
        match spec {
            KeySpec::Symmetric(alg) => {
                let k: Zeroizing<[u8; 32]> = Zeroizing::new(
                    raw.try_into()
                        .map_err(|_| Error::invalid("symmetric key material must be 32 bytes"))?,
                );
                Ok(Material::Symmetric(Cipher::new(alg, &k)))
            }
        }
    }

    /// `nonce || ciphertext || tag` with a fresh random nonce.
    pub(crate) fn encrypt(
        &self,
        rng: &dyn RandomSource,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let Material::Symmetric(cipher) = self;
        let nonce: [u8; NONCE_LEN] = random_array(rng)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        cipher.seal_append(&nonce, aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Reverses [`Material::encrypt`].
    pub(crate) fn decrypt(&self, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        let Material::Symmetric(cipher) = self;
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(Error::DecryptionFailed);
        }
        let (nonce, rest) = payload.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Error::DecryptionFailed)?;
        let mut out = Vec::with_capacity(rest.len());
        cipher.open_append(&nonce, aad, rest, &mut out)?;
        Ok(SecretBytes::new(out))
    }
}
