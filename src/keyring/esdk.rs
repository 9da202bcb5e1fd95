//! AWS Encryption SDK messages through the pipeline (feature `esdk`): the
//! raw AES keyring's wrapping done by a strongroom key. The format itself
//! is in [`crate::interop::esdk`].

use super::Client;
use super::pipeline::Call;
use crate::action::Action;
use crate::backend::MaterialId;
use crate::crypto::{Cipher, NONCE_LEN, TAG_LEN};
use crate::envelope::EncryptionContext;
use crate::error::{Error, Result};
use crate::interop::esdk::format::{self, EdkOut, Header, Signer};
use crate::interop::esdk::{
    DEFAULT_KEY_NAMESPACE, ESDK_MAX_MATCHING_EDKS, ESDK_MAX_WRITE_FRAME_LEN, EsdkOpened,
    EsdkOptions, EsdkReader, EsdkSuite, EsdkWriter, TAG_KEY_NAME, TAG_KEY_NAMESPACE,
    check_caller_context, parse_provider_info, provider_info,
};
use crate::key::KeyRef;
use crate::key::{KeyId, KeySpec, RotationKind, SymmetricAlgorithm};
use crate::random::random_array;
use crate::secret::SecretBytes;
use crate::store::KeyMetadata;
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// Length of a wrapped data key: 32 bytes of ciphertext and the tag.
const EDK_LEN: usize = 32 + TAG_LEN;

/// A message begun: the header with its tag, the body cipher, the message
/// id, the signer.
struct Begun {
    header: Vec<u8>,
    cipher: Cipher,
    message_id: [u8; 32],
    signer: Option<Signer>,
}

/// The key namespace and name for `meta`: options, then tags, then defaults.
fn names(meta: &KeyMetadata, options: &EsdkOptions) -> Result<(String, String)> {
    let ns = options
        .key_namespace
        .clone()
        .or_else(|| meta.tags.get(TAG_KEY_NAMESPACE).cloned())
        .unwrap_or_else(|| DEFAULT_KEY_NAMESPACE.to_owned());
    let name = options
        .key_name
        .clone()
        .or_else(|| meta.tags.get(TAG_KEY_NAME).cloned())
        .unwrap_or_else(|| meta.key_id.to_string());
    if ns.is_empty() || ns.len() > usize::from(u16::MAX) {
        return Err(Error::invalid(
            "ESDK key namespace must be 1 to 65535 bytes",
        ));
    }
    if ns.starts_with("aws-kms") {
        return Err(Error::invalid(
            "ESDK key namespaces beginning with \"aws-kms\" are reserved for AWS KMS keyrings",
        ));
    }
    if name.is_empty() || name.len() > usize::from(u16::MAX) - 20 {
        return Err(Error::invalid("ESDK key name must be 1 to 65515 bytes"));
    }
    Ok((ns, name))
}

/// The raw AES keyring needs AES-256-GCM material whose backend payload is
/// `nonce ‖ ciphertext ‖ tag` (docs/FORMAT.md, "Backend payload").
fn check_wrapping_key(meta: &KeyMetadata) -> Result<()> {
    if meta.spec != KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm) {
        return Err(Error::Unsupported(format!(
            "key {} ({}) cannot be an ESDK raw AES wrapping key: it must be an AES-256-GCM key",
            meta.key_id, meta.spec
        )));
    }
    Ok(())
}

/// The raw AES keyring's IV and `ciphertext ‖ tag` are the backend's
/// payload only for backends that say their payloads are raw AES-GCM
/// ([`crate::backend::KeyBackend::raw_aead_payloads`]); a remote custodian with
/// opaque payloads (AWS KMS, Vault Transit) cannot act as one.
fn check_raw_backend(backend: &dyn crate::backend::KeyBackend) -> Result<()> {
    if backend.raw_aead_payloads() {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "backend {} does not produce raw AES-GCM payloads; it cannot act as an ESDK \
             raw AES keyring (use the memory, file or PKCS#11 backend)",
            backend.name()
        )))
    }
}

impl Client {
    /// Encrypts `data` into an AWS Encryption SDK message (format v2, suite
    /// `0x0578` with default options): a fresh data key wrapped by `key` as
    /// the ESDK raw AES keyring wraps it. Any ESDK holding the same key
    /// bytes under the same namespace and name decrypts it. Authorized as
    /// `GenerateDataKey` on `key`.
    ///
    /// `context` must not use keys beginning with `aws-crypto-`
    /// ([`Error::InvalidArgument`]). See [`crate::interop::esdk`].
    pub fn esdk_seal<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        data: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        self.esdk_seal_with(key, data, context, EsdkOptions::default())
    }

    /// [`Client::esdk_seal`] with options: suite, frame length, key
    /// namespace and name.
    pub fn esdk_seal_with<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        data: &[u8],
        context: &EncryptionContext,
        options: EsdkOptions,
    ) -> Result<Vec<u8>> {
        let options = &options;
        let rng = self.inner().rng.clone();
        self.esdk_begin(key.into(), context, options, |b| {
            let mut out = b.header;
            format::encrypt_body(&b.cipher, &b.message_id, options.frame_len, data, &mut out)?;
            if let Some(mut s) = b.signer {
                s.update(&out);
                let footer = s.footer(rng.as_ref())?;
                out.extend_from_slice(&footer);
            }
            Ok(out)
        })
    }

    /// Starts a streaming ESDK message written to `out`: the data key is
    /// generated and wrapped now (authorized as `GenerateDataKey`), the
    /// header written, and every full frame encrypted as it fills. Call
    /// [`EsdkWriter::finish`] at the end.
    pub fn esdk_seal_writer<'k, W: Write>(
        &self,
        key: impl Into<KeyRef<'k>>,
        context: &EncryptionContext,
        options: EsdkOptions,
        out: W,
    ) -> Result<EsdkWriter<W>> {
        let options = &options;
        let rng = self.inner().rng.clone();
        self.esdk_begin(key.into(), context, options, |b| {
            EsdkWriter::start(
                out,
                b.header,
                b.cipher,
                b.message_id,
                options.frame_len,
                b.signer,
                rng,
            )
        })
    }

    /// Opens an AWS Encryption SDK message with `key` (its namespace and
    /// name from its tags or the defaults; see [`Client::esdk_open_with`]).
    pub fn esdk_open<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        message: &[u8],
        required: &EncryptionContext,
    ) -> Result<EsdkOpened> {
        self.esdk_open_with(key, message, required, EsdkOptions::default())
    }

    /// Opens an AWS Encryption SDK message (v2 `0x0478`/`0x0578`; v1
    /// `0x0178`/`0x0378`) whose data key `key` unwraps: an encrypted data key
    /// of the message must name the key's namespace and name (from
    /// `options`, the key's tags, or the defaults). Every pair of `required`
    /// must be in the message's context (which may hold more, such as the
    /// signing key); the whole context is returned. Authorized as `Decrypt`
    /// on `key` with the message's context.
    ///
    /// Nothing is returned before everything is checked: commitment, header
    /// tag, every frame, and the signature. Every failure to authenticate
    /// or parse is [`Error::DecryptionFailed`].
    ///
    /// The encrypted data key does not name a key version, so the key's
    /// versions that may decrypt are tried, newest first.
    pub fn esdk_open_with<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        message: &[u8],
        required: &EncryptionContext,
        options: EsdkOptions,
    ) -> Result<EsdkOpened> {
        let options = &options;
        let header = format::parse_header(message);
        self.esdk_unlock(
            key.into(),
            header,
            required,
            options,
            |h, cipher, key_id, v| {
                let body = message.get(h.len..).ok_or(Error::DecryptionFailed)?;
                let mut plaintext = Zeroizing::new(Vec::with_capacity(body.len()));
                let used = format::decrypt_body(h, &cipher, body, &mut plaintext)?;
                let end = h.len.checked_add(used).ok_or(Error::DecryptionFailed)?;
                let (signed, footer) = message
                    .split_at_checked(end)
                    .ok_or(Error::DecryptionFailed)?;
                if h.suite.is_signed() {
                    format::verify_footer(&h.context, signed, footer)?;
                } else if !footer.is_empty() {
                    return Err(Error::DecryptionFailed);
                }
                Ok(EsdkOpened {
                    plaintext: SecretBytes::from_zeroizing(plaintext),
                    context: h.context.clone(),
                    key_id,
                    key_version: v,
                    suite: h.suite,
                    frame_len: h.frame_len,
                })
            },
        )
    }

    /// Opens a streaming ESDK message: reads and authenticates the header
    /// and unwraps the data key now (authorized as `Decrypt`), then
    /// decrypts frame by frame as the returned reader is read. See
    /// [`EsdkReader`] for what is released before the signature verifies
    /// (never the final frame).
    pub fn esdk_open_reader<'k, R: Read>(
        &self,
        key: impl Into<KeyRef<'k>>,
        mut input: R,
        required: &EncryptionContext,
        options: EsdkOptions,
    ) -> Result<EsdkReader<R>> {
        let options = &options;
        let bytes = crate::interop::esdk::read_header(&mut input);
        let header = bytes
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|b| format::parse_header(b));
        self.esdk_unlock(
            key.into(),
            header,
            required,
            options,
            |h, cipher, key_id, v| {
                let hb = bytes.as_ref().map_err(Clone::clone)?;
                EsdkReader::new(input, h, hb, cipher, key_id, v)
            },
        )
    }

    /// The pipeline for a new ESDK message (action `GenerateDataKey`).
    fn esdk_begin<T>(
        &self,
        key: KeyRef<'_>,
        context: &EncryptionContext,
        options: &EsdkOptions,
        then: impl FnOnce(Begun) -> Result<T>,
    ) -> Result<T> {
        self.on_key(Action::GenerateDataKey, key, Some(context), |call, meta| {
            let inner = self.inner();
            check_caller_context(context)?;
            if !matches!(
                options.suite,
                EsdkSuite::AesGcmHkdfSha512Commit | EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384
            ) {
                return Err(Error::Unsupported(format!(
                    "strongroom writes ESDK suites 0x0478 and 0x0578 only, not {:#06x}",
                    options.suite.id()
                )));
            }
            if options.frame_len == 0 || options.frame_len > ESDK_MAX_WRITE_FRAME_LEN {
                return Err(Error::invalid(format!(
                    "ESDK frame length must be 1 to {ESDK_MAX_WRITE_FRAME_LEN} bytes"
                )));
            }
            check_wrapping_key(meta)?;
            let (ns, name) = names(meta, options)?;
            let (signer, full_context) = if options.suite.is_signed() {
                let (s, public) = Signer::generate(inner.rng.as_ref())?;
                let ctx = context
                    .clone()
                    .with(format::PUBLIC_KEY_KEY.to_owned(), public);
                (Some(s), ctx)
            } else {
                (None, context.clone())
            };
            // With the signing key added, the context must still be one
            // strongroom reads back (MAX_CONTEXT_BYTES).
            full_context.validate()?;
            let ctx_bytes = format::serialize_context(&full_context)?;
            let data_key = inner.random_key()?;
            let (iv, edk) = self.esdk_wrap(call, meta, data_key.as_slice(), &ctx_bytes)?;
            let message_id: [u8; 32] = random_array(inner.rng.as_ref())?;
            let keys = format::derive(options.suite, &message_id, data_key.as_slice())?;
            let commitment = keys
                .commitment
                .as_ref()
                .ok_or_else(|| Error::invalid("suite without commitment"))?;
            let mut header = format::encode_header_v2(
                options.suite,
                &message_id,
                &ctx_bytes,
                &[EdkOut {
                    provider_id: ns.into_bytes(),
                    provider_info: provider_info(name.as_bytes(), &iv),
                    ciphertext: edk,
                }],
                options.frame_len,
                commitment,
            )?;
            let tag = format::header_tag(&keys.cipher, &header)?;
            header.extend_from_slice(&tag);
            then(Begun {
                header,
                cipher: keys.cipher,
                message_id,
                signer,
            })
        })
    }

    /// Wraps a data key with the key's primary version: the backend's
    /// AES-256-GCM encryption with the serialized ESDK context as AAD.
    /// Metered and rotated on the usage limit like every encryption.
    fn esdk_wrap(
        &self,
        call: &Call<'_>,
        meta: &KeyMetadata,
        data_key: &[u8],
        ctx_bytes: &[u8],
    ) -> Result<([u8; NONCE_LEN], Vec<u8>)> {
        let inner = self.inner();
        let version = super::crypto::encrypting_version(meta)?;
        check_raw_backend(inner.backend.as_ref())?;
        let mref = MaterialId::new(meta.key_id.clone(), version);
        // Count first: a version at its hard limit refuses to encrypt.
        let count = inner.usage.record(&mref, inner.store.as_ref())?;
        call.note_version(version);
        let payload = inner.backend.encrypt(&mref, ctx_bytes, data_key)?;
        if payload.len() != NONCE_LEN + EDK_LEN {
            return Err(Error::Unsupported(format!(
                "backend {} does not return raw AES-GCM payloads; it cannot act as an ESDK \
                 raw AES keyring",
                inner.backend.name()
            )));
        }
        let (iv, edk) = payload.split_at(NONCE_LEN);
        let iv: [u8; NONCE_LEN] = iv.try_into().map_err(|_| Error::DecryptionFailed)?;
        if inner.usage.should_rotate(count) {
            inner.rotate_if_primary(meta, RotationKind::UsageLimit)?;
        }
        Ok((iv, edk.to_vec()))
    }

    /// The pipeline for opening an ESDK message (action `Decrypt` on `key`,
    /// with the message's context): checks the required context, unwraps
    /// the data key, verifies commitment and header tag, then hands the
    /// body cipher to `then`.
    fn esdk_unlock<T>(
        &self,
        key: KeyRef<'_>,
        header: Result<Header<'_>>,
        required: &EncryptionContext,
        options: &EsdkOptions,
        then: impl FnOnce(&Header<'_>, Cipher, KeyId, u32) -> Result<T>,
    ) -> Result<T> {
        let authz_context = header.as_ref().map(|h| h.context.clone()).ok();
        self.on_key(
            Action::Decrypt,
            key,
            Some(authz_context.as_ref().unwrap_or(required)),
            |call, meta| {
                let h = header?;
                check_wrapping_key(meta)?;
                check_raw_backend(self.inner().backend.as_ref())?;
                if !h.context.contains_all(required) {
                    return Err(Error::DecryptionFailed);
                }
                format::check_context_for_suite(&h)?;
                let (ns, name) = names(meta, options)?;
                let ctx_bytes =
                    format::serialize_context(&h.context).map_err(|_| Error::DecryptionFailed)?;
                let (data_key, version) = self
                    .esdk_unwrap(meta, &h, ns.as_bytes(), name.as_bytes(), &ctx_bytes)?
                    .ok_or(Error::DecryptionFailed)?;
                call.note_version(version);
                let cipher = format::verify_header(&h, data_key.expose_secret())?;
                then(&h, cipher, meta.key_id.clone(), version)
            },
        )
    }

    /// Tries the message's encrypted data keys that name `ns`/`name` (at
    /// most [`ESDK_MAX_MATCHING_EDKS`]) with the key's decryptable versions,
    /// newest first.
    fn esdk_unwrap(
        &self,
        meta: &KeyMetadata,
        h: &Header<'_>,
        ns: &[u8],
        name: &[u8],
        ctx_bytes: &[u8],
    ) -> Result<Option<(SecretBytes, u32)>> {
        let backend = &self.inner().backend;
        let mut versions: Vec<u32> = meta
            .versions
            .iter()
            .map(|v| v.version)
            .filter(|v| *v >= meta.min_decrypt_version)
            .collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        let candidates = h
            .edks
            .iter()
            .filter(|e| e.provider_id == ns && e.ciphertext.len() == EDK_LEN)
            .filter_map(|e| parse_provider_info(e.provider_info, name).map(|iv| (iv, e)))
            .take(ESDK_MAX_MATCHING_EDKS);
        for (iv, edk) in candidates {
            let mut payload = Vec::with_capacity(NONCE_LEN + EDK_LEN);
            payload.extend_from_slice(&iv);
            payload.extend_from_slice(edk.ciphertext);
            for v in &versions {
                let mref = MaterialId::new(meta.key_id.clone(), *v);
                match backend.decrypt(&mref, ctx_bytes, &payload) {
                    Ok(dk) if dk.len() == 32 => return Ok(Some((dk, *v))),
                    Ok(_) | Err(Error::DecryptionFailed) | Err(Error::KeyNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(None)
    }
}
