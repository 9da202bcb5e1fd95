//! Results that carry plaintext: data keys, decrypted blobs, opened messages.

use super::EncryptionContext;
use crate::key::KeyId;
use crate::secret::SecretBytes;
use std::fmt;

/// A fresh data key: its plaintext (zeroized on drop) and the same key
/// encrypted under a master key version, to be stored beside the data.
///
/// Use the plaintext to encrypt locally, drop it as soon as possible, and keep
/// only [`DataKey::ciphertext`]; [`crate::Client::decrypt_data_key`] recovers
/// the plaintext later.
pub struct DataKey {
    pub(crate) plaintext: SecretBytes,
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) key_id: KeyId,
    pub(crate) key_version: u32,
}

impl DataKey {
    /// The 32 plaintext key bytes.
    pub fn plaintext(&self) -> &SecretBytes {
        &self.plaintext
    }

    /// The data key as a ciphertext blob (docs/FORMAT.md).
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// The master key that wrapped it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The master key version that wrapped it.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// Drops the plaintext (zeroizing it) and keeps the ciphertext.
    pub fn into_ciphertext(self) -> Vec<u8> {
        self.ciphertext
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"<redacted>")
            .field("ciphertext_len", &self.ciphertext.len())
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .finish()
    }
}

/// The result of [`crate::Client::decrypt`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Decrypted {
    /// The plaintext.
    pub plaintext: SecretBytes,
    /// The key that decrypted it.
    pub key_id: KeyId,
    /// The key version that decrypted it.
    pub key_version: u32,
}

/// The result of [`crate::Client::open`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Opened {
    /// The data.
    pub plaintext: SecretBytes,
    /// The full encryption context stored in (and authenticated by) the message.
    pub context: EncryptionContext,
    /// The key whose wrapped data key opened the message.
    pub key_id: KeyId,
    /// Its version.
    pub key_version: u32,
}
