//! SSH through the ring: OpenSSH public key lines and SSHSIG signatures of
//! Ed25519 and ECDSA P-256 keys. The encodings are in
//! [`crate::interop::ssh`]; here they meet the pipeline.

use super::Client;
use super::pipeline::Call;
use crate::action::Action;
use crate::error::{Error, Result};
use crate::interop::ssh::{self as format, MessageHash, SshKey};
use crate::key::{KeyRef, KeySpec};
use crate::store::KeyMetadata;
use crate::verify::{MessageType, SignatureFormat};
use std::io::Read;

/// Bytes read at a time by [`Client::sign_ssh_reader`].
const READ_CHUNK: usize = 64 * 1024;

impl Client {
    /// The OpenSSH public key line of an Ed25519 or ECDSA P-256 key:
    /// `ssh-ed25519 AAAA… comment` or `ecdsa-sha2-nistp256 AAAA… comment`
    /// (no newline), for an `authorized_keys` or `allowed_signers` file.
    /// `comment` may be empty; at most
    /// [`crate::limits::SSH_MAX_COMMENT_LEN`] bytes, no control characters.
    ///
    /// Authorized and audited as [`Action::GetPublicKey`]. Any other key
    /// spec is [`Error::Unsupported`].
    pub fn get_ssh_public_key<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        comment: &str,
    ) -> Result<String> {
        let key: KeyRef<'k> = key.into();
        self.on_key(Action::GetPublicKey, key, None, |_, meta| {
            self.ssh_key(meta)?.line(comment)
        })
    }

    /// Signs `data` in the SSHSIG format of `ssh-keygen -Y sign` with an
    /// Ed25519 or ECDSA P-256 key, for `namespace` (`"file"`, `"git"`, or
    /// `name@your.domain`; required). Returns the armored signature
    /// (`-----BEGIN SSH SIGNATURE-----` … ending in a newline), which
    /// `ssh-keygen -Y verify -n namespace` accepts with the key's line from
    /// [`Client::get_ssh_public_key`] in its `allowed_signers`, and
    /// [`crate::interop::ssh::verify_sshsig`] verifies offline.
    ///
    /// `data` may be of any size: it is hashed (SHA-512) and the key signs
    /// the small SSHSIG blob. Authorized and audited as one
    /// [`Action::Sign`] on the key, through the same signing step as
    /// [`Client::sign`]; the public key the signature carries is read in
    /// the same call, so a `Sign` grant is enough. The signature is checked
    /// against the public key before it is returned.
    ///
    /// An empty or invalid namespace is [`Error::InvalidArgument`]; a key
    /// that is not Ed25519 or P-256 is [`Error::Unsupported`].
    pub fn sign_ssh<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        namespace: &str,
        data: &[u8],
    ) -> Result<String> {
        let mut hash = MessageHash::default();
        hash.update(data);
        self.sign_ssh_hashed(key.into(), namespace, hash)
    }

    /// As [`Client::sign_ssh`], reading the data to sign from `reader` to
    /// its end (a release tarball, a large file). A read error is
    /// [`Error::Other`] and nothing is signed.
    pub fn sign_ssh_reader<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        namespace: &str,
        mut reader: impl Read,
    ) -> Result<String> {
        format::check_namespace(namespace)?;
        let mut hash = MessageHash::default();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hash.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Other(std::sync::Arc::new(e))),
            }
        }
        self.sign_ssh_hashed(key.into(), namespace, hash)
    }

    fn sign_ssh_hashed(
        &self,
        key: KeyRef<'_>,
        namespace: &str,
        hash: MessageHash,
    ) -> Result<String> {
        format::check_namespace(namespace)?;
        let signed = hash.signed_data(namespace);
        self.on_key(Action::Sign, key, None, |call, meta| {
            let ssh_key = self.ssh_key(meta)?;
            let raw = self.ssh_sign_step(call, meta, &signed)?;
            let sig = ssh_key.signature_blob(&raw)?;
            if !ssh_key.verify(&signed, &sig)? {
                return Err(Error::invalid(format!(
                    "the signature of key {} does not verify under its public key; \
                     the backend is faulty",
                    meta.key_id
                )));
            }
            Ok(format::armor(&ssh_key, namespace, &sig))
        })
    }

    /// The one call into the signing path for SSH (Ed25519: the 64-byte
    /// signature of `signed`; P-256: raw `r ‖ s` over SHA-256(`signed`)).
    fn ssh_sign_step(&self, call: &Call<'_>, meta: &KeyMetadata, signed: &[u8]) -> Result<Vec<u8>> {
        self.sign_in_call(call, meta, signed, MessageType::Raw, SignatureFormat::Raw)
    }

    /// The SSH form of a key's public key; only signing specs have one.
    fn ssh_key(&self, meta: &KeyMetadata) -> Result<SshKey> {
        match meta.spec {
            KeySpec::Ed25519 | KeySpec::EccNistP256 => {
                SshKey::from_verifier(self.inner().verifier(meta)?.public())
            }
            other => Err(Error::Unsupported(format!(
                "key {} is {other}; SSH keys are Ed25519 or ECDSA P-256 signing keys",
                meta.key_id
            ))),
        }
    }
}
