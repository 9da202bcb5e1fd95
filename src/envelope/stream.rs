//! Streaming envelope messages: [`SealWriter`] and [`OpenReader`].
//!
//! Same format as [`crate::Client::seal`] / [`crate::Client::open`]
//! (docs/FORMAT.md, "Envelope message"): a message written by either side
//! opens with either side. Memory use is bounded by two frames.

use super::EncryptionContext;
use super::message::{self, Derived, FINAL, MESSAGE_ID_LEN, MessageHeader, TAG_LEN_PUB};
use crate::error::Error;
use crate::key::KeyId;
use std::fmt;
use std::io::{self, Read, Write};
use zeroize::Zeroizing;

fn io_err(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Encrypts a stream into an envelope message, frame by frame.
///
/// Write the data, then call [`SealWriter::finish`]: it writes the final
/// frame and returns the inner writer. A writer dropped without `finish`
/// leaves a message without its final frame, which every reader rejects.
pub struct SealWriter<W: Write> {
    out: Option<W>,
    derived: Derived,
    message_id: [u8; MESSAGE_ID_LEN],
    frame_len: usize,
    buf: Zeroizing<Vec<u8>>,
    frame: Vec<u8>,
    seq: u32,
    failed: bool,
}

impl<W: Write> SealWriter<W> {
    /// Writes the header (which ends in the commitment) and its tag.
    pub(crate) fn start(
        mut out: W,
        header: Vec<u8>,
        derived: Derived,
        message_id: [u8; MESSAGE_ID_LEN],
        frame_len: u32,
    ) -> crate::Result<Self> {
        let tag = message::header_tag(&derived, &header)?;
        out.write_all(&header)
            .and_then(|_| out.write_all(&tag))
            .map_err(|e| Error::Other(std::sync::Arc::new(e)))?;
        let f = frame_len as usize;
        Ok(SealWriter {
            out: Some(out),
            derived,
            message_id,
            frame_len: f,
            // Never reallocated (input is fed in pieces of at most one
            // frame), so plaintext is never left behind in freed memory.
            buf: Zeroizing::new(Vec::with_capacity(2 * f)),
            frame: Vec::with_capacity(f + 32),
            seq: 1,
            failed: false,
        })
    }

    fn emit(&mut self, is_final: bool) -> io::Result<()> {
        let n = if is_final {
            self.buf.len()
        } else {
            self.frame_len
        };
        self.frame.clear();
        message::seal_frame(
            &self.derived,
            &self.message_id,
            self.seq,
            is_final,
            &self.buf[..n],
            &mut self.frame,
        )
        .map_err(io_err)?;
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already finished"))?;
        out.write_all(&self.frame)?;
        self.buf.drain(..n);
        self.seq += 1;
        Ok(())
    }

    /// Writes the final frame, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier write failed; the message is incomplete",
            ));
        }
        self.emit(true)?;
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("writer already finished"))?;
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier write failed; the message is incomplete",
            ));
        }
        for piece in data.chunks(self.frame_len) {
            self.buf.extend_from_slice(piece);
            // A regular frame only while more than one frame is buffered:
            // the final frame then holds the last 1..=F bytes, as `seal` does.
            while self.buf.len() > self.frame_len {
                if let Err(e) = self.emit(false) {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl<W: Write> fmt::Debug for SealWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealWriter")
            .field("frame_len", &self.frame_len)
            .field("frames_written", &(self.seq - 1))
            .finish_non_exhaustive()
    }
}

/// Reads an envelope message's header from a stream: exactly the header
/// bytes, nothing of the body. Malformed input is the opaque error.
pub(crate) fn read_header<R: Read>(r: &mut R) -> crate::Result<Vec<u8>> {
    fn take<R: Read>(r: &mut R, buf: &mut Vec<u8>, n: usize) -> crate::Result<()> {
        let start = buf.len();
        buf.resize(start + n, 0);
        r.read_exact(&mut buf[start..])
            .map_err(|_| Error::DecryptionFailed)
    }
    let mut h = Vec::with_capacity(256);
    take(r, &mut h, 44)?;
    let ctx_len = u16::from_be_bytes([h[42], h[43]]) as usize;
    take(r, &mut h, ctx_len + 1)?;
    let count = h[h.len() - 1];
    for _ in 0..count {
        take(r, &mut h, 2)?;
        let n = h.len();
        let w = u16::from_be_bytes([h[n - 2], h[n - 1]]) as usize;
        if w > message::MAX_WRAPPED_LEN {
            return Err(Error::DecryptionFailed);
        }
        take(r, &mut h, w)?;
    }
    take(r, &mut h, 32 + TAG_LEN_PUB)?;
    Ok(h)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Frames,
    Done,
    Failed,
}

/// Decrypts an envelope message from a stream, releasing each frame's
/// plaintext as soon as its tag verifies.
///
/// Data read before the end is authentic frame by frame, but the message as
/// a whole is known complete only when `read` returns `Ok(0)`: a truncated
/// message fails at its end with `ErrorKind::InvalidData`. Do not act on the
/// data until then if a truncated stream could matter.
pub struct OpenReader<R: Read> {
    inner: R,
    derived: Derived,
    message_id: [u8; MESSAGE_ID_LEN],
    frame_len: usize,
    expected: u32,
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    ct: Vec<u8>,
    state: ReadState,
    context: EncryptionContext,
    key_id: KeyId,
    key_version: u32,
}

impl<R: Read> OpenReader<R> {
    pub(crate) fn new(
        inner: R,
        h: &MessageHeader<'_>,
        derived: Derived,
        key_id: KeyId,
        key_version: u32,
    ) -> Self {
        let f = h.frame_len as usize;
        OpenReader {
            inner,
            derived,
            message_id: h.message_id,
            frame_len: f,
            expected: 1,
            plain: Zeroizing::new(Vec::with_capacity(f)),
            pos: 0,
            ct: Vec::with_capacity(f + TAG_LEN_PUB),
            state: ReadState::Frames,
            context: h.context.clone(),
            key_id,
            key_version,
        }
    }

    /// The message's full encryption context.
    pub fn context(&self) -> &EncryptionContext {
        &self.context
    }

    /// The key whose wrapped data key opened the message.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Its version.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    fn read_u32(&mut self) -> crate::Result<u32> {
        let mut b = [0u8; 4];
        self.inner
            .read_exact(&mut b)
            .map_err(|_| Error::DecryptionFailed)?;
        Ok(u32::from_be_bytes(b))
    }

    fn read_ct(&mut self, n: usize) -> crate::Result<()> {
        self.ct.resize(n, 0);
        self.inner
            .read_exact(&mut self.ct)
            .map_err(|_| Error::DecryptionFailed)
    }

    fn next_frame(&mut self) -> crate::Result<()> {
        self.plain.clear();
        self.pos = 0;
        let marker = self.read_u32()?;
        if marker == FINAL {
            let seq = self.read_u32()?;
            let len = self.read_u32()? as usize;
            if seq != self.expected || len > self.frame_len {
                return Err(Error::DecryptionFailed);
            }
            self.read_ct(len + TAG_LEN_PUB)?;
            message::open_frame(
                &self.derived,
                &self.message_id,
                seq,
                true,
                &self.ct,
                &mut self.plain,
            )?;
            // Nothing may follow the final frame.
            let mut extra = [0u8; 1];
            loop {
                match self.inner.read(&mut extra) {
                    Ok(0) => break,
                    Ok(_) => return Err(Error::DecryptionFailed),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(Error::DecryptionFailed),
                }
            }
            self.state = ReadState::Done;
            return Ok(());
        }
        if marker != self.expected || self.expected >= FINAL - 1 {
            return Err(Error::DecryptionFailed);
        }
        self.read_ct(self.frame_len + TAG_LEN_PUB)?;
        message::open_frame(
            &self.derived,
            &self.message_id,
            marker,
            false,
            &self.ct,
            &mut self.plain,
        )?;
        self.expected += 1;
        Ok(())
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.pos);
                buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.state {
                ReadState::Done => return Ok(0),
                ReadState::Failed => return Err(io_err(Error::DecryptionFailed)),
                ReadState::Frames => {
                    if let Err(e) = self.next_frame() {
                        self.state = ReadState::Failed;
                        // Wipe, not just clear: nothing of a failed frame
                        // stays in memory until the reader is dropped.
                        zeroize::Zeroize::zeroize(&mut *self.plain);
                        return Err(io_err(e));
                    }
                }
            }
        }
    }
}

impl<R: Read> fmt::Debug for OpenReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenReader")
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field("frame_len", &self.frame_len)
            .finish_non_exhaustive()
    }
}
