//! Envelope messages: seal and open, in one piece or streamed.

use super::Client;
use super::crypto::encrypting_version;
use super::dkcache::{SealKey, SealPartition};
use super::pipeline::symmetric;
use crate::action::Action;
use crate::envelope::blob;
use crate::envelope::message;
use crate::envelope::stream::{FrameSealer, OpenReader, OpenedStream, SealWriter, read_header};
use crate::envelope::{EncryptionContext, Opened, SealOptions};
use crate::error::{Error, Result};
use crate::key::KeyId;
use crate::key::KeyRef;
use crate::random::random_array;
use crate::secret::SecretBytes;
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// What [`Client::open_into`] returns besides the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageInfo {
    /// The full encryption context stored in (and authenticated by) the message.
    pub context: EncryptionContext,
    /// The key whose wrapped data key opened the message.
    pub key_id: KeyId,
    /// Its version.
    pub key_version: u32,
}

/// How `open` checks the caller's context against the message's.
#[derive(Clone, Copy)]
pub(crate) enum ContextMatch {
    Exact,
    Contains,
}

impl Client {
    // ---- envelope messages ------------------------------------------------

    /// Encrypts data of any size into a self-contained envelope message: a
    /// fresh data key wrapped by `key`, a key commitment, the context, and the
    /// data in 64 KiB frames. Authorized as `GenerateDataKey`.
    pub fn seal<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        data: &[u8],
        context: &EncryptionContext,
    ) -> Result<Vec<u8>> {
        self.seal_with(key, data, context, SealOptions::default())
    }

    /// [`Client::seal`] with options (frame length).
    pub fn seal_with<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        data: &[u8],
        context: &EncryptionContext,
        options: SealOptions,
    ) -> Result<Vec<u8>> {
        self.begin_message(
            key.into(),
            context,
            options,
            Some(data.len() as u64),
            // Small messages: the header's buffer becomes the message.
            message::header_room(data.len() as u64, options.frame_len),
            |header, derived, message_id| {
                message::encrypt_body(
                    header,
                    &derived,
                    &message_id,
                    options.frame_len,
                    data,
                    self.inner().threads,
                )
            },
        )
    }

    /// [`Client::seal_with`] appending the message to `out` (a buffer the
    /// caller reuses across calls on a hot path): `out` grows once, by the
    /// message's size. On failure `out` is left as it was.
    pub fn seal_into<'k>(
        &self,
        key: impl Into<KeyRef<'k>>,
        data: &[u8],
        context: &EncryptionContext,
        options: SealOptions,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let start = out.len();
        let result = self.begin_message(
            key.into(),
            context,
            options,
            Some(data.len() as u64),
            0,
            |header, derived, message_id| {
                out.extend_from_slice(&header);
                message::append_body(
                    out,
                    start,
                    &derived,
                    &message_id,
                    options.frame_len,
                    data,
                    self.inner().threads,
                )
            },
        );
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// Runs the pipeline for a new message (action `GenerateDataKey`): a fresh
    /// data key wrapped by `key` (or one from the data-key cache, if the ring
    /// has one and the message's length `len` is known), a fresh message id,
    /// the derived body cipher and the header up to the commitment (in a
    /// buffer with `room` spare bytes), handed to `then`.
    pub(crate) fn begin_message<T>(
        &self,
        key: KeyRef<'_>,
        context: &EncryptionContext,
        options: SealOptions,
        len: Option<u64>,
        room: usize,
        then: impl FnOnce(Vec<u8>, message::Derived, [u8; message::MESSAGE_ID_LEN]) -> Result<T>,
    ) -> Result<T> {
        self.on_key(Action::GenerateDataKey, key, Some(context), |call, meta| {
            let inner = self.inner();
            message::check_frame_len(options.frame_len)?;
            let ctx = context.canonical_bytes()?;
            let suite = symmetric(meta)?;
            let fresh = |ctx: &[u8]| -> Result<SealKey> {
                let data_key = inner.random_key()?;
                let wrapped = inner.encrypt_blob(call, meta, data_key.as_slice(), ctx)?;
                let version = call.version().unwrap_or(meta.primary_version);
                Ok(SealKey {
                    data_key,
                    wrapped,
                    version,
                })
            };
            let SealKey {
                data_key: dk,
                wrapped,
                ..
            } = match (&inner.dk_cache, len) {
                (Some(cache), Some(len)) => {
                    let partition = SealPartition {
                        key_id: meta.key_id.clone(),
                        version: encrypting_version(meta)?,
                        suite: suite.suite_id(),
                        context: ctx.clone(),
                    };
                    let now = inner.clock.now();
                    let (key, hit) = cache.seal_key(&partition, len, now, || fresh(&ctx))?;
                    if hit {
                        call.note_version(key.version);
                        call.note_cached();
                    } else {
                        cache.purge_stale_versions(&meta.key_id, key.version);
                    }
                    key
                }
                _ => fresh(&ctx)?,
            };
            let message_id: [u8; message::MESSAGE_ID_LEN] = random_array(inner.rng.as_ref())?;
            let derived =
                message::derive(self.inner().provider, suite, &message_id, dk.as_slice())?;
            let header = message::encode_header(
                suite,
                options.frame_len,
                &message_id,
                &ctx,
                &[wrapped],
                &derived.commitment,
                room,
            )?;
            then(header, derived, message_id)
        })
    }

    /// Opens an envelope message. `context` must equal the message's context
    /// exactly; every failure is [`Error::DecryptionFailed`].
    pub fn open(&self, message: &[u8], context: &EncryptionContext) -> Result<Opened> {
        self.open_inner(message, context, ContextMatch::Exact)
    }

    /// [`Client::open`] appending the plaintext to `out` (a buffer the caller
    /// reuses; it should be zeroized by the caller, e.g. a
    /// `Zeroizing<Vec<u8>>`): capacity is reserved once up front, so the
    /// plaintext is never reallocated and left behind. On failure nothing is
    /// appended. Returns what [`Opened`] says besides the plaintext.
    pub fn open_into(
        &self,
        message: &[u8],
        context: &EncryptionContext,
        out: &mut Vec<u8>,
    ) -> Result<MessageInfo> {
        let header = message::parse_header(message);
        self.with_message_key(
            header,
            context,
            ContextMatch::Exact,
            |h, derived, key_id, key_version| {
                message::append_plaintext(h, &derived, out, self.inner().threads)?;
                Ok(MessageInfo {
                    context: h.context.clone(),
                    key_id,
                    key_version,
                })
            },
        )
    }

    /// Opens an envelope message whose context contains every pair of
    /// `required` (and maybe more); the full context is returned in
    /// [`Opened::context`]. Use it when the reader knows only some pairs.
    pub fn open_requiring(&self, message: &[u8], required: &EncryptionContext) -> Result<Opened> {
        self.open_inner(message, required, ContextMatch::Contains)
    }

    fn open_inner(
        &self,
        msg: &[u8],
        context: &EncryptionContext,
        mode: ContextMatch,
    ) -> Result<Opened> {
        let header = message::parse_header(msg);
        self.with_message_key(header, context, mode, |h, derived, key_id, key_version| {
            let plaintext = message::decrypt_frames(h, &derived, self.inner().threads)?;
            Ok(Opened {
                plaintext: SecretBytes::from_zeroizing(plaintext),
                context: h.context.clone(),
                key_id,
                key_version,
            })
        })
    }

    /// Runs the pipeline for opening a message (action `Decrypt` on the key of
    /// the first wrapped key this ring holds): checks the caller's context,
    /// unwraps the data key, verifies commitment and header tag, then hands
    /// the body cipher to `then`.
    pub(crate) fn with_message_key<T>(
        &self,
        header: Result<message::MessageHeader<'_>>,
        context: &EncryptionContext,
        mode: ContextMatch,
        then: impl FnOnce(&message::MessageHeader<'_>, message::Derived, KeyId, u32) -> Result<T>,
    ) -> Result<T> {
        let inner = self.inner();
        // Pick the first wrapped key whose master key this ring holds.
        let chosen = header.as_ref().map_err(Clone::clone).and_then(|h| {
            h.wrapped_keys
                .iter()
                .filter_map(|w| blob::parse(w).ok())
                .find(|b| matches!(inner.store.get_key(&b.key_id), Ok(Some(_))))
                .ok_or(Error::DecryptionFailed)
        });
        let key_id = blob::key_id_of(&chosen);
        // Authorize against the message's stored context: the data key is
        // bound to it, so a forged header context cannot open anything.
        let authz_context = match &header {
            Ok(h) => &h.context,
            Err(_) => context,
        };
        self.on_ciphertext(Action::Decrypt, key_id, Some(authz_context), |call, m| {
            let h = header.as_ref().map_err(Clone::clone)?;
            let wrapped = chosen?;
            let ok = match mode {
                ContextMatch::Exact => h.context == *context,
                ContextMatch::Contains => h.context.contains_all(context),
            };
            if !ok {
                return Err(Error::DecryptionFailed);
            }
            // The stored bytes are the canonical encoding (the parser
            // accepts nothing else): no need to encode them again.
            let ctx = h.context_bytes;
            let dk = inner.unwrap_data_key(call, m, &wrapped, ctx)?;
            let derived = message::verify_header(self.inner().provider, h, dk.expose_secret())?;
            then(h, derived, wrapped.key_id.clone(), wrapped.version)
        })
    }
}

impl super::Inner {
    /// Unwraps a message's data key (from the data-key cache, if the ring
    /// has one) under the message's stored context `ctx`: the one unwrap
    /// of open, streams, ranged open and rewrap. Anything but a 32-byte key
    /// is the opaque decryption error; other errors (access, state, an
    /// unreachable backend) pass through.
    pub(crate) fn unwrap_data_key(
        &self,
        call: &super::pipeline::Call<'_>,
        m: &crate::store::KeyMetadata,
        wrapped: &blob::BlobHeader<'_>,
        ctx: &[u8],
    ) -> Result<SecretBytes> {
        let unwrap = || self.decrypt_blob(call, m, wrapped, ctx);
        let unwrapped = match &self.dk_cache {
            Some(cache) => self.check_blob(call, m, wrapped).and_then(|()| {
                let now = self.clock.now();
                let parts = [wrapped.header, wrapped.payload];
                let (dk, hit) = cache.open_key(&wrapped.key_id, &parts, ctx, now, || {
                    unwrap().map(|s| Zeroizing::new(s.expose_secret().to_vec()))
                })?;
                if hit {
                    call.note_cached();
                }
                Ok(SecretBytes::from_zeroizing(dk))
            }),
            None => unwrap(),
        };
        match unwrapped {
            Ok(dk) if dk.len() == 32 => Ok(dk),
            Ok(_) | Err(Error::DecryptionFailed) | Err(Error::KeyNotFound(_)) => {
                Err(Error::DecryptionFailed)
            }
            Err(e) => Err(e),
        }
    }
}

// ---- streaming -------------------------------------------------------------

impl Client {
    /// Starts a streaming envelope message written to `out`: the data key is
    /// generated and wrapped now (authorized as `GenerateDataKey`), the
    /// header written, and every full frame encrypted as it fills. Call
    /// [`SealWriter::finish`] at the end. Memory use is about two frames.
    pub fn seal_writer<'k, W: Write>(
        &self,
        key: impl Into<KeyRef<'k>>,
        context: &EncryptionContext,
        options: SealOptions,
        out: W,
    ) -> Result<SealWriter<W>> {
        let (header, sealer) = self.begin_stream(key.into(), context, options)?;
        SealWriter::start(out, &header, sealer, self.inner().threads)
    }

    /// The blocking part of every streaming seal (sync and async): runs
    /// [`Client::begin_message`] and returns the header bytes to write
    /// (header tag included) and the frame sealer.
    pub(crate) fn begin_stream(
        &self,
        key: KeyRef<'_>,
        context: &EncryptionContext,
        options: SealOptions,
    ) -> Result<(Vec<u8>, FrameSealer)> {
        self.begin_message(
            key,
            context,
            options,
            None,
            0,
            |mut header, derived, message_id| {
                let sealer = FrameSealer::new(&mut header, derived, message_id, options.frame_len)?;
                Ok((header, sealer))
            },
        )
    }

    /// Opens a streaming envelope message: reads and authenticates the
    /// header and unwraps the data key now (authorized as `Decrypt`;
    /// `context` must equal the message's), then decrypts frame by frame as
    /// the returned reader is read. See [`OpenReader`] for what "authentic"
    /// means before the end of the stream.
    pub fn open_reader<R: Read>(
        &self,
        mut input: R,
        context: &EncryptionContext,
    ) -> Result<OpenReader<R>> {
        let header_bytes = read_header(&mut input);
        let opened = self.open_stream(header_bytes, context)?;
        Ok(OpenReader::new(input, opened, self.inner().threads))
    }

    /// The blocking part of every streaming open (sync and async): given
    /// the header bytes read from the stream (or the error reading them,
    /// which still goes through the pipeline and is audited), checks the
    /// context, unwraps the data key and verifies the header.
    pub(crate) fn open_stream(
        &self,
        header_bytes: Result<Vec<u8>>,
        context: &EncryptionContext,
    ) -> Result<OpenedStream> {
        let header = header_bytes
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|b| message::parse_header(b));
        self.with_message_key(
            header,
            context,
            ContextMatch::Exact,
            |h, derived, key_id, v| Ok(OpenedStream::new(h, derived, key_id, v)),
        )
    }
}
