//! Ranged open of envelope messages: [`Client::open_range`] and
//! [`Client::open_range_reader`]. What a ranged read authenticates is said
//! in `crate::envelope::ranged` and docs/FORMAT.md, "Ranged open".

use super::Client;
use super::messages::ContextMatch;
use crate::envelope::EncryptionContext;
use crate::envelope::message;
use crate::envelope::ranged::{self, OpenedRange, RangeParts, RangeReader};
use crate::envelope::stream::read_header;
use crate::error::Result;
use crate::secret::SecretBytes;
use std::io::{Read, Seek};

impl Client {
    /// Decrypts `len` plaintext bytes at `offset` of an envelope message,
    /// reading only the frames that cover them.
    ///
    /// Runs the pipeline as [`Client::open`] does (one `Decrypt` decision
    /// and one audit event; `context` must equal the message's), verifies
    /// the key commitment and the header tag, then decrypts and verifies the
    /// covering frames.
    ///
    /// What is authenticated: the header, and every byte returned (each
    /// covering frame's tag, which also binds its position). Not the rest of
    /// the message: a frame outside the range may be altered without this
    /// call noticing, and truncation or extension is detected only when the
    /// range reaches the end of the plaintext — then the final frame is
    /// verified and [`OpenedRange::end_verified`] is true. To know the whole
    /// message is authentic, [`Client::open`] it (or read an
    /// [`Client::open_reader`] to its end) at least once.
    ///
    /// Errors: a range past the end of the plaintext (as the message's size
    /// says) is [`crate::Error::InvalidArgument`]; a zero-length range is allowed
    /// and returns no bytes after the header verifies; a failure to verify
    /// anything read is [`crate::Error::DecryptionFailed`].
    ///
    /// ```
    /// use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};
    /// # fn main() -> Result<(), strongroom::Error> {
    /// let ring = KeyRing::in_memory();
    /// let c = ring.client(Principal::user("alice")?);
    /// let key = c.create_key(KeySpec::default(), CreateKeyOptions::new())?;
    /// let ctx = EncryptionContext::new().with("file", "log-7");
    /// let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    /// let message = c.seal(&key, &data, &ctx)?;
    /// // Decrypts one 64 KiB frame, not four.
    /// let part = c.open_range(&message, &ctx, 70_000, 100)?;
    /// assert_eq!(part.plaintext.expose_secret(), &data[70_000..70_100]);
    /// assert!(!part.end_verified); // the message's end was not read
    /// # Ok(()) }
    /// ```
    pub fn open_range(
        &self,
        message: &[u8],
        context: &EncryptionContext,
        offset: u64,
        len: usize,
    ) -> Result<OpenedRange> {
        let header = message::parse_header(message);
        self.with_message_key(
            header,
            context,
            ContextMatch::Exact,
            |h, derived, key_id, key_version| {
                let (plaintext, layout, end_verified) =
                    ranged::decrypt_range(h, &derived, offset, len)?;
                Ok(OpenedRange {
                    plaintext: SecretBytes::from_zeroizing(plaintext),
                    context: h.context.clone(),
                    key_id,
                    key_version,
                    message_len: layout.plaintext_len(),
                    end_verified,
                })
            },
        )
    }

    /// Opens an envelope message for random access: `input` is positioned at
    /// the message's first byte (the message runs to the input's end). The
    /// header is read and verified and the data key unwrapped now (one
    /// `Decrypt` decision and audit event, as [`Client::open_reader`];
    /// `context` must equal the message's); the returned [`RangeReader`]
    /// then decrypts, on each read, only the frame it reads from. What a
    /// ranged read authenticates is said on [`RangeReader`] and
    /// [`Client::open_range`].
    pub fn open_range_reader<R: Read + Seek>(
        &self,
        mut input: R,
        context: &EncryptionContext,
    ) -> Result<RangeReader<R>> {
        let mut start = 0u64;
        let header_bytes = input
            .stream_position()
            .map_err(ranged::from_io)
            .and_then(|s| {
                start = s;
                read_header(&mut input)
            });
        let header = header_bytes
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|b| message::parse_header(b));
        let header_len = header_bytes.as_ref().map(Vec::len).unwrap_or(0);
        let parts = self.with_message_key(
            header,
            context,
            ContextMatch::Exact,
            |h, derived, key_id, key_version| {
                let (layout, body_start) =
                    ranged::layout_of(&mut input, h.frame_len, start, header_len)?;
                Ok(RangeParts {
                    derived,
                    message_id: h.message_id,
                    layout,
                    body_start,
                    context: h.context.clone(),
                    key_id,
                    key_version,
                })
            },
        )?;
        Ok(RangeReader::new(input, parts))
    }
}
