//! Rewrapping envelope messages without re-encrypting them:
//! [`Client::rewrap_message`].

use super::Client;
use super::pipeline::check_usable;
use crate::action::Action;
use crate::envelope::stream::read_header;
use crate::envelope::{EncryptionContext, blob, message, rewrap};
use crate::error::{Error, Result};
use crate::key::KeyRef;
use std::io::Read;

/// Options for [`Client::rewrap_message`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RewrapOptions {
    /// Keep the wrapped key that was unwrapped (the source) beside the new
    /// one. Default `false`: the new wrapped key takes the source's place.
    pub keep_source: bool,
}

impl RewrapOptions {
    /// Default options: replace the source wrapped key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`RewrapOptions::keep_source`]: `true` adds the new wrapped key
    /// (first, so it is the one tried first) and keeps every existing one.
    pub fn keep_source(mut self, keep: bool) -> Self {
        self.keep_source = keep;
        self
    }
}

impl Client {
    /// Moves an envelope message's data key to `destination_key`'s primary
    /// version without touching the body: the data key is unwrapped with the
    /// source key, wrapped again under the destination, and a new header is
    /// written over the same body bytes (byte for byte). Cheap whatever the
    /// message's size: the body is copied, never decrypted or encrypted.
    ///
    /// The source is the first wrapped key whose master key this ring holds,
    /// as [`Client::open`] picks it. By default the new wrapped key replaces
    /// it (other wrapped keys of the message stay); with
    /// [`RewrapOptions::keep_source`] it is added in front of them all.
    /// Pass the message's own key to move it to the newest version after a
    /// rotation; the old version can then be retired with a version floor.
    ///
    /// Authorized as `re_encrypt` is: `ReEncryptFrom` on the source key and
    /// `ReEncryptTo` on the destination, the destination decided before the
    /// source's material is touched; one audit event for each. `context`
    /// must equal the message's (which the output keeps).
    ///
    /// The key commitment is unchanged (it commits to the data key, not to
    /// its wrapping) and is verified, with the header tag, before anything is
    /// written. The body frames are not read: a message whose body was
    /// altered is rewrapped as it is, and fails when opened.
    pub fn rewrap_message<'k>(
        &self,
        message: &[u8],
        context: &EncryptionContext,
        destination_key: impl Into<KeyRef<'k>>,
        options: RewrapOptions,
    ) -> Result<Vec<u8>> {
        self.rewrap(
            message::parse_header(message),
            context,
            destination_key.into(),
            options,
            rewrap::assemble,
        )
    }

    /// [`Client::rewrap_message`] for a message in a stream (a file of any
    /// size): reads exactly the message's header from `input`, nothing of
    /// the body, and returns the rewrapped header (header tag included).
    /// Write it, then the rest of `input` unchanged, to get the rewrapped
    /// message; the cost does not depend on the message's size. Same
    /// authorization, audit and checks as [`Client::rewrap_message`].
    pub fn rewrap_header<'k, R: Read>(
        &self,
        mut input: R,
        context: &EncryptionContext,
        destination_key: impl Into<KeyRef<'k>>,
        options: RewrapOptions,
    ) -> Result<Vec<u8>> {
        let header_bytes = read_header(&mut input);
        let header = header_bytes
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|b| message::parse_header(b));
        self.rewrap(
            header,
            context,
            destination_key.into(),
            options,
            |h, derived, keys| rewrap::new_header(h, derived, keys, 0),
        )
    }

    /// The one rewrap flow: the pipeline (`ReEncryptFrom` on the source,
    /// `ReEncryptTo` on the destination), then `write` with the verified
    /// header, its keys and the new wrapped keys.
    fn rewrap(
        &self,
        header: Result<message::MessageHeader<'_>>,
        context: &EncryptionContext,
        destination_key: KeyRef<'_>,
        options: RewrapOptions,
        write: impl FnOnce(
            &message::MessageHeader<'_>,
            &message::Derived,
            &[Vec<u8>],
        ) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let inner = self.inner();
        // The source: the first wrapped key whose master key this ring holds.
        let chosen = header.as_ref().map_err(Clone::clone).and_then(|h| {
            h.wrapped_keys
                .iter()
                .enumerate()
                .filter_map(|(i, w)| blob::parse(w).ok().map(|b| (i, b)))
                .find(|(_, b)| matches!(inner.store.get_key(&b.key_id), Ok(Some(_))))
                .ok_or(Error::DecryptionFailed)
        });
        let key_id = chosen
            .as_ref()
            .map(|(_, b)| b.key_id.clone())
            .map_err(Clone::clone);
        // Authorize against the message's stored context, as open does.
        let authz_context = match &header {
            Ok(h) => &h.context,
            Err(_) => context,
        };
        self.on_ciphertext(
            Action::ReEncryptFrom,
            key_id,
            Some(authz_context),
            |call, source| {
                let h = header.as_ref().map_err(Clone::clone)?;
                let (index, wrapped) = chosen?;
                if h.context != *context {
                    return Err(Error::DecryptionFailed);
                }
                if options.keep_source && h.wrapped_keys.len() >= usize::from(u8::MAX) {
                    return Err(Error::invalid(
                        "the message already holds 255 wrapped keys: rewrap without keep_source",
                    ));
                }
                // The destination is decided (and checked) before the source
                // material is touched; its own pipeline run below decides
                // again and records it.
                let dest = inner.resolve(destination_key)?;
                inner.authorize(
                    self.principal(),
                    Action::ReEncryptTo,
                    Some(&dest),
                    Some(&h.context),
                )?;
                check_usable(&dest, Action::ReEncryptTo)?;
                // The stored bytes are the context's canonical encoding.
                let ctx = h.context_bytes;
                let dk = inner.unwrap_data_key(call, source, &wrapped, ctx)?;
                let derived = message::verify_header(self.inner().provider, h, dk.expose_secret())?;
                let new_wrapped = self.on_key(
                    Action::ReEncryptTo,
                    destination_key,
                    Some(&h.context),
                    |call, d| inner.encrypt_blob(call, d, dk.expose_secret(), ctx),
                )?;
                let old = h.wrapped_keys.iter().map(|w| w.to_vec());
                let keys: Vec<Vec<u8>> = if options.keep_source {
                    std::iter::once(new_wrapped).chain(old).collect()
                } else {
                    let mut keys: Vec<Vec<u8>> = old.collect();
                    let slot = keys.get_mut(index).ok_or(Error::DecryptionFailed)?;
                    *slot = new_wrapped;
                    keys
                };
                write(h, &derived, &keys)
            },
        )
    }
}
