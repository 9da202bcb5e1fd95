//! Streaming seal and open.

use super::{Client, ContextMatch};
use crate::envelope::message;
use crate::envelope::stream::{OpenReader, SealWriter, read_header};
use crate::envelope::{EncryptionContext, SealOptions};
use crate::error::Result;
use std::io::{Read, Write};

impl Client {
    /// Starts a streaming envelope message written to `out`: the data key is
    /// generated and wrapped now (authorized as `GenerateDataKey`), the
    /// header written, and every full frame encrypted as it fills. Call
    /// [`SealWriter::finish`] at the end. Memory use is about two frames.
    pub fn seal_writer<W: Write>(
        &self,
        key: &str,
        context: &EncryptionContext,
        options: SealOptions,
        out: W,
    ) -> Result<SealWriter<W>> {
        self.begin_message(key, context, options, |header, derived, message_id| {
            SealWriter::start(out, header, derived, message_id, options.frame_len)
        })
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
        let header = header_bytes
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|b| message::parse_header(b));
        self.with_message_key(
            header,
            context,
            ContextMatch::Exact,
            |h, derived, key_id, v| Ok(OpenReader::new(input, h, derived, key_id, v)),
        )
    }
}
