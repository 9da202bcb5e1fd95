//! Rewrapping an envelope message: a new set of wrapped keys over the same
//! data key, body untouched (docs/FORMAT.md, "Rewrap").
//!
//! The key commitment is derived from the data key and the message id only,
//! and each frame's associated data holds the message id, the final flag, the
//! sequence number and the length, never header bytes. So a new header with
//! other wrapped keys keeps the commitment and every body frame valid; only
//! the header tag, which covers the wrapped keys, is computed again, under
//! the same body key.

use super::message::{self, Derived, MessageHeader};
use crate::error::{Error, Result};

/// The message `h` with `wrapped_keys` in place of its own: the header
/// encoded again with the same suite, frame length, message id, context and
/// commitment, a new header tag (the caller verified the header and holds
/// its `derived` keys), then the body bytes exactly as they were.
pub(crate) fn assemble(
    h: &MessageHeader<'_>,
    derived: &Derived,
    wrapped_keys: &[Vec<u8>],
) -> Result<Vec<u8>> {
    let mut out = new_header(h, derived, wrapped_keys, h.body.len())?;
    out.extend_from_slice(h.body);
    Ok(out)
}

/// The header of [`assemble`] alone (header tag included), with room
/// reserved for `body_len` more bytes.
pub(crate) fn new_header(
    h: &MessageHeader<'_>,
    derived: &Derived,
    wrapped_keys: &[Vec<u8>],
    body_len: usize,
) -> Result<Vec<u8>> {
    let ctx = h
        .context
        .canonical_bytes()
        .map_err(|_| Error::DecryptionFailed)?;
    let mut out = message::encode_header(
        h.suite,
        h.frame_len,
        &h.message_id,
        &ctx,
        wrapped_keys,
        &h.commitment,
        0,
    )?;
    let tag = message::header_tag(derived, &out)?;
    out.reserve_exact(tag.len() + body_len);
    out.extend_from_slice(&tag);
    Ok(out)
}
