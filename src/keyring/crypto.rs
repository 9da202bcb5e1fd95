//! Direct encryption under a master key, data keys and random bytes.

use super::pipeline::{Call, check_usable, symmetric};
use super::{Client, Inner, MAX_RANDOM_LEN};
use crate::action::Action;
use crate::backend::MaterialId;
use crate::envelope::blob::{self, BlobHeader};
use crate::envelope::{DataKey, Decrypted, EncryptionContext, MAX_PLAINTEXT_LEN};
use crate::error::{Error, Result};
use crate::key::KeyRef;
use crate::key::RotationKind;
use crate::random::random_array;
use crate::secret::SecretBytes;
use crate::store::KeyMetadata;
use zeroize::Zeroizing;

/// The version that encrypts: the primary one, unless it is below the key's
/// minimum encryption version. The one check of every encrypting path.
pub(crate) fn encrypting_version(meta: &KeyMetadata) -> Result<u32> {
    let version = meta.primary_version;
    if version < meta.min_encrypt_version {
        return Err(Error::VersionCannotEncrypt {
            key_id: meta.key_id.clone(),
            version,
            reason: format!(
                "below the minimum encryption version {}",
                meta.min_encrypt_version
            ),
        });
    }
    Ok(version)
}

impl Inner {
    pub(crate) fn random_key(&self) -> Result<Zeroizing<[u8; 32]>> {
        Ok(Zeroizing::new(random_array(self.rng.as_ref())?))
    }

    /// Encrypts up to 4 KiB under the key's primary version into a blob.
    pub(crate) fn encrypt_blob(
        &self,
        call: &Call<'_>,
        meta: &KeyMetadata,
        plaintext: &[u8],
        ctx: &[u8],
    ) -> Result<Vec<u8>> {
        let alg = symmetric(meta)?;
        let version = encrypting_version(meta)?;
        let mut out = blob::encode_header(alg.suite_id(), &meta.key_id, version)?;
        let aad = blob::aad(&out, ctx);
        let mref = MaterialId::new(meta.key_id.clone(), version);
        // Count first: a version at its hard limit refuses to encrypt.
        let count = self.usage.record(&mref, self.store.as_ref())?;
        call.note_version(version);
        let payload = self.backend.encrypt(&mref, &aad, plaintext)?;
        blob::append_payload(&mut out, &payload)?;
        if self.usage.should_rotate(count) {
            // The limit is reached: rotate so the next call uses a new version.
            self.rotate_if_primary(meta, RotationKind::UsageLimit)?;
        }
        Ok(out)
    }

    /// Decrypts a parsed blob with the key it names.
    pub(crate) fn decrypt_blob(
        &self,
        call: &Call<'_>,
        meta: &KeyMetadata,
        h: &BlobHeader<'_>,
        ctx: &[u8],
    ) -> Result<SecretBytes> {
        self.check_blob(call, meta, h)?;
        let aad = blob::aad(h.header, ctx);
        self.backend.decrypt(
            &MaterialId::new(meta.key_id.clone(), h.version),
            &aad,
            h.payload,
        )
    }

    /// What must hold before a blob is decrypted (by the backend, or from
    /// the data-key cache): the version exists, is not below the decrypt
    /// floor, and the suite is the key's. Notes the version for the audit
    /// record.
    pub(crate) fn check_blob(
        &self,
        call: &Call<'_>,
        meta: &KeyMetadata,
        h: &BlobHeader<'_>,
    ) -> Result<()> {
        if !meta.has_version(h.version) {
            return Err(meta.missing_version(h.version));
        }
        if h.version < meta.min_decrypt_version {
            return Err(Error::VersionRetired {
                key_id: meta.key_id.clone(),
                version: h.version,
                floor: meta.min_decrypt_version,
            });
        }
        call.note_version(h.version);
        if symmetric(meta)?.suite_id() != h.suite {
            return Err(Error::DecryptionFailed);
        }
        Ok(())
    }
}

impl Client {
    // ---- direct encryption ------------------------------------------------

    /// Encrypts 1 to 4096 bytes directly under the key's primary version. The
    /// blob names the key id and version; `context` must be given again,
    /// exactly, to decrypt. For larger data use [`Client::seal`].
    pub fn encrypt<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        self.on_key(Action::Encrypt, key, Some(context), |call, m| {
            if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT_LEN {
                return Err(Error::invalid(format!(
                    "plaintext must be 1 to {MAX_PLAINTEXT_LEN} bytes (got {}); use seal for larger data",
                    plaintext.len()
                )));
            }
            let ctx = context.canonical_bytes()?;
            self.inner().encrypt_blob(call, m, plaintext, &ctx)
        })
    }

    /// Decrypts a blob of [`Client::encrypt`] (or a data key's ciphertext). The
    /// key is read from the blob, as a KMS Decrypt does.
    pub fn decrypt(&self, ciphertext: &[u8], context: &EncryptionContext) -> Result<Decrypted> {
        self.decrypt_checked(ciphertext, context, None)
    }

    /// Like [`Client::decrypt`], but fails with [`Error::IncorrectKey`] unless
    /// the blob names `expected_key` (an id or alias).
    pub fn decrypt_with_key<'k>(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
        expected_key: impl Into<KeyRef<'k>>,
    ) -> Result<Decrypted> {
        self.decrypt_checked(ciphertext, context, Some(expected_key.into()))
    }

    fn decrypt_checked(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
        expected_key: Option<KeyRef<'_>>,
    ) -> Result<Decrypted> {
        let parsed = blob::parse(ciphertext);
        let key_id = blob::key_id_of(&parsed);
        self.on_ciphertext(Action::Decrypt, key_id, Some(context), |call, meta| {
            let h = parsed?;
            if let Some(exp) = expected_key {
                let want = self.inner().resolve(exp)?;
                if want.key_id != meta.key_id {
                    return Err(Error::IncorrectKey {
                        expected: want.key_id.clone(),
                        found: meta.key_id.clone(),
                    });
                }
            }
            let ctx = context.canonical_bytes()?;
            let plaintext = self.inner().decrypt_blob(call, meta, &h, &ctx)?;
            Ok(Decrypted {
                plaintext,
                key_id: meta.key_id.clone(),
                key_version: h.version,
            })
        })
    }

    /// Decrypts under the source key and encrypts under `destination_key`
    /// (its primary version) in one call: the plaintext never reaches the
    /// caller. Needs `ReEncryptFrom` on the source and `ReEncryptTo` on the
    /// destination.
    pub fn re_encrypt<'k>(
        &self,
        ciphertext: &[u8],
        source_context: &EncryptionContext,
        destination_key: impl Into<KeyRef<'k>>,
        destination_context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        let destination_key: KeyRef<'k> = destination_key.into();
        let parsed = blob::parse(ciphertext);
        let key_id = blob::key_id_of(&parsed);
        self.on_ciphertext(
            Action::ReEncryptFrom,
            key_id,
            Some(source_context),
            |call, m| {
                let h = parsed?;
                // The destination is authorized (and checked) before the source
                // material is touched; its own pipeline run below decides again
                // and records it.
                let dest = self.inner().resolve(destination_key)?;
                self.inner().authorize(
                    self.principal(),
                    Action::ReEncryptTo,
                    Some(&dest),
                    Some(destination_context),
                )?;
                check_usable(&dest, Action::ReEncryptTo)?;
                let src_ctx = source_context.canonical_bytes()?;
                let plaintext = self.inner().decrypt_blob(call, m, &h, &src_ctx)?;
                self.on_key(
                    Action::ReEncryptTo,
                    destination_key,
                    Some(destination_context),
                    |call, d| {
                        let dst_ctx = destination_context.canonical_bytes()?;
                        self.inner()
                            .encrypt_blob(call, d, plaintext.expose_secret(), &dst_ctx)
                    },
                )
            },
        )
    }

    // ---- data keys --------------------------------------------------------

    /// A fresh 256-bit data key: its plaintext and its ciphertext under the
    /// key's primary version, bound to `context`.
    pub fn generate_data_key<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        self.on_key(Action::GenerateDataKey, key, Some(context), |call, meta| {
            let ctx = context.canonical_bytes()?;
            let dk = self.inner().random_key()?;
            let ciphertext = self.inner().encrypt_blob(call, meta, dk.as_slice(), &ctx)?;
            Ok(DataKey {
                plaintext: SecretBytes::from_slice(dk.as_slice()),
                ciphertext,
                key_id: meta.key_id.clone(),
                key_version: meta.primary_version,
            })
        })
    }

    /// A fresh data key, returned only encrypted (for a component that will
    /// decrypt it later).
    pub fn generate_data_key_without_plaintext<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        self.on_key(
            Action::GenerateDataKeyWithoutPlaintext,
            key,
            Some(context),
            |call, m| {
                let ctx = context.canonical_bytes()?;
                let dk = self.inner().random_key()?;
                self.inner().encrypt_blob(call, m, dk.as_slice(), &ctx)
            },
        )
    }

    /// Decrypts a data key's ciphertext back into a [`DataKey`]. Fails with
    /// the opaque error if the blob does not hold a 32-byte key.
    pub fn decrypt_data_key(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
    ) -> Result<DataKey> {
        let d = self.decrypt(ciphertext, context)?;
        if d.plaintext.len() != 32 {
            return Err(Error::DecryptionFailed);
        }
        Ok(DataKey {
            plaintext: d.plaintext,
            ciphertext: ciphertext.to_vec(),
            key_id: d.key_id,
            key_version: d.key_version,
        })
    }

    // ---- randomness -------------------------------------------------------

    /// 1 to 1024 random bytes from the ring's generator.
    pub fn generate_random(&self, len: usize) -> Result<SecretBytes> {
        self.on_ring(Action::GenerateRandom, None, |_| {
            if len == 0 || len > MAX_RANDOM_LEN {
                return Err(Error::invalid(format!(
                    "random length must be 1 to {MAX_RANDOM_LEN} bytes"
                )));
            }
            let mut buf = vec![0u8; len];
            self.inner().rng.fill(&mut buf)?;
            Ok(SecretBytes::new(buf))
        })
    }
}
