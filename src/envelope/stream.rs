//! Streaming envelope messages: [`SealWriter`] and [`OpenReader`].
//!
//! Same format as [`crate::Client::seal`] / [`crate::Client::open`]
//! (docs/FORMAT.md, "Envelope message"): a message written by either side
//! opens with either side. Memory use is bounded by two frames.
//!
//! The frame logic is IO-free ([`FrameSealer`], [`FrameOpener`],
//! [`header_needs`]) so the blocking wrappers here and the `AsyncRead` /
//! `AsyncWrite` adapters of feature `tokio` (`crate::tokio_io`) share one
//! implementation of the format.

use super::EncryptionContext;
use super::message::{self, Derived, FINAL, MESSAGE_ID_LEN, MessageHeader, TAG_LEN_PUB};
use crate::error::Error;
use crate::key::KeyId;
use std::fmt;
use std::io::{self, Read, Write};
use zeroize::Zeroizing;

pub(crate) fn io_err(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

// ---- the IO-free frame logic -------------------------------------------------

/// Sealing state without IO: buffers plaintext (at most two frames, in a
/// zeroizing buffer that is never reallocated) and seals frames on request.
pub(crate) struct FrameSealer {
    derived: Derived,
    message_id: [u8; MESSAGE_ID_LEN],
    frame_len: usize,
    buf: Zeroizing<Vec<u8>>,
    seq: u32,
}

impl FrameSealer {
    /// Appends the header tag to `header` (which ends in the commitment):
    /// `header` is then exactly the bytes to write before the first frame.
    pub(crate) fn new(
        header: &mut Vec<u8>,
        derived: Derived,
        message_id: [u8; MESSAGE_ID_LEN],
        frame_len: u32,
    ) -> crate::Result<Self> {
        let tag = message::header_tag(&derived, header)?;
        header.extend_from_slice(&tag);
        let f = frame_len as usize;
        Ok(FrameSealer {
            derived,
            message_id,
            frame_len: f,
            // Never reallocated (`absorb` keeps it within two frames), so
            // plaintext is never left behind in freed memory.
            buf: Zeroizing::new(Vec::with_capacity(2 * f)),
            seq: 1,
        })
    }

    /// Plaintext bytes per frame.
    pub(crate) fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Frames sealed so far.
    pub(crate) fn frames_sealed(&self) -> u32 {
        self.seq - 1
    }

    /// Buffers up to one frame of `data`; returns how many bytes it took
    /// (0 only for empty `data`, provided [`FrameSealer::seal_ready`] was
    /// drained since the last call).
    pub(crate) fn absorb(&mut self, data: &[u8]) -> usize {
        let room = (2 * self.frame_len).saturating_sub(self.buf.len());
        let n = data.len().min(self.frame_len).min(room);
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// Seals the next regular frame into `out` (cleared first) if more than
    /// one frame is buffered, and returns whether it did. A regular frame
    /// only while more than one frame is buffered: the final frame then
    /// holds the last 1..=F bytes, as `seal` does.
    pub(crate) fn seal_ready(&mut self, out: &mut Vec<u8>) -> crate::Result<bool> {
        if self.buf.len() <= self.frame_len {
            return Ok(false);
        }
        self.seal(false, out)?;
        Ok(true)
    }

    /// Seals the final frame (the 0..=F bytes buffered) into `out`.
    pub(crate) fn seal_final(&mut self, out: &mut Vec<u8>) -> crate::Result<()> {
        if self.buf.len() > self.frame_len {
            return Err(Error::invalid(
                "internal: final frame requested with more than one frame buffered",
            ));
        }
        self.seal(true, out)
    }

    fn seal(&mut self, is_final: bool, out: &mut Vec<u8>) -> crate::Result<()> {
        let n = if is_final {
            self.buf.len()
        } else {
            self.frame_len
        };
        out.clear();
        message::seal_frame(
            &self.derived,
            &self.message_id,
            self.seq,
            is_final,
            &self.buf[..n],
            out,
        )?;
        self.buf.drain(..n);
        self.seq += 1;
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    Marker,
    FinalHeader,
    Body {
        seq: u32,
        is_final: bool,
        len: usize,
    },
    /// The final frame is open; its plaintext waits for the end of input.
    End,
    Done,
}

/// Opening state without IO: told the next bytes of the body, exactly
/// [`FrameOpener::wanted`] at a time, it verifies and decrypts frame by frame.
pub(crate) struct FrameOpener {
    derived: Derived,
    message_id: [u8; MESSAGE_ID_LEN],
    frame_len: usize,
    expected: u32,
    next: Next,
}

impl FrameOpener {
    pub(crate) fn new(h: &MessageHeader<'_>, derived: Derived) -> Self {
        FrameOpener {
            derived,
            message_id: h.message_id,
            frame_len: h.frame_len as usize,
            expected: 1,
            next: Next::Marker,
        }
    }

    /// Plaintext bytes per frame (the largest a frame releases).
    pub(crate) fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// How many input bytes the next [`FrameOpener::step`] consumes; 0 when
    /// the final frame is open (call [`FrameOpener::at_end`]) or done.
    pub(crate) fn wanted(&self) -> usize {
        match self.next {
            Next::Marker => 4,
            Next::FinalHeader => 8,
            Next::Body { len, .. } => len + TAG_LEN_PUB,
            Next::End | Next::Done => 0,
        }
    }

    /// The final frame verified; the input must end here.
    pub(crate) fn awaiting_end(&self) -> bool {
        self.next == Next::End
    }

    /// The whole message verified, final frame and end of input included.
    pub(crate) fn is_done(&self) -> bool {
        self.next == Next::Done
    }

    /// Consumes exactly [`FrameOpener::wanted`] bytes. Returns true when a
    /// regular frame verified and its plaintext was appended to `plain`
    /// (release it). The final frame's plaintext is appended too, but must be
    /// held until [`FrameOpener::at_end`] confirms that nothing follows.
    pub(crate) fn step(&mut self, input: &[u8], plain: &mut Vec<u8>) -> crate::Result<bool> {
        if input.len() != self.wanted() || self.wanted() == 0 {
            return Err(Error::DecryptionFailed);
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([input[i], input[i + 1], input[i + 2], input[i + 3]]);
        match self.next {
            Next::Marker => {
                let marker = u32_at(0);
                if marker == FINAL {
                    self.next = Next::FinalHeader;
                } else if marker != self.expected || self.expected >= FINAL - 1 {
                    return Err(Error::DecryptionFailed);
                } else {
                    self.next = Next::Body {
                        seq: marker,
                        is_final: false,
                        len: self.frame_len,
                    };
                }
                Ok(false)
            }
            Next::FinalHeader => {
                let (seq, len) = (u32_at(0), u32_at(4) as usize);
                if seq != self.expected || len > self.frame_len {
                    return Err(Error::DecryptionFailed);
                }
                self.next = Next::Body {
                    seq,
                    is_final: true,
                    len,
                };
                Ok(false)
            }
            Next::Body { seq, is_final, .. } => {
                message::open_frame(&self.derived, &self.message_id, seq, is_final, input, plain)?;
                if is_final {
                    self.next = Next::End;
                    Ok(false)
                } else {
                    self.expected += 1;
                    self.next = Next::Marker;
                    Ok(true)
                }
            }
            Next::End | Next::Done => Err(Error::DecryptionFailed),
        }
    }

    /// After the final frame: `eof` says whether the input ended there.
    /// Anything after the final frame is the opaque error.
    pub(crate) fn at_end(&mut self, eof: bool) -> crate::Result<()> {
        if self.next != Next::End || !eof {
            return Err(Error::DecryptionFailed);
        }
        self.next = Next::Done;
        Ok(())
    }
}

/// How many more bytes an envelope message header needs, given its first
/// bytes `h`; `None` once `h` is the whole header (tag included). Lets a
/// stream read exactly the header, nothing of the body. Malformed input is
/// the opaque error.
pub(crate) fn header_needs(h: &[u8]) -> crate::Result<Option<usize>> {
    let need = |end: usize| Ok(Some(end - h.len()));
    if h.len() < 44 {
        return need(44);
    }
    let ctx_len = u16::from_be_bytes([h[42], h[43]]) as usize;
    let mut p = 44 + ctx_len + 1;
    if h.len() < p {
        return need(p);
    }
    let count = h[p - 1];
    for _ in 0..count {
        if h.len() < p + 2 {
            return need(p + 2);
        }
        let w = u16::from_be_bytes([h[p], h[p + 1]]) as usize;
        if w > message::MAX_WRAPPED_LEN {
            return Err(Error::DecryptionFailed);
        }
        p += 2 + w;
        if h.len() < p {
            return need(p);
        }
    }
    let end = p + 32 + TAG_LEN_PUB;
    if h.len() < end {
        return need(end);
    }
    if h.len() > end {
        return Err(Error::DecryptionFailed);
    }
    Ok(None)
}

/// What opening a message's header yields for a streaming reader: the frame
/// opener and what the reader reports.
pub(crate) struct OpenedStream {
    pub(crate) opener: FrameOpener,
    pub(crate) context: EncryptionContext,
    pub(crate) key_id: KeyId,
    pub(crate) key_version: u32,
}

impl OpenedStream {
    pub(crate) fn new(
        h: &MessageHeader<'_>,
        derived: Derived,
        key_id: KeyId,
        key_version: u32,
    ) -> Self {
        OpenedStream {
            opener: FrameOpener::new(h, derived),
            context: h.context.clone(),
            key_id,
            key_version,
        }
    }
}

// ---- blocking IO -------------------------------------------------------------

/// Encrypts a stream into an envelope message, frame by frame.
///
/// Write the data, then call [`SealWriter::finish`]: it writes the final
/// frame and returns the inner writer. A writer dropped without `finish`
/// leaves a message without its final frame, which every reader rejects.
pub struct SealWriter<W: Write> {
    out: Option<W>,
    sealer: FrameSealer,
    frame: Vec<u8>,
    failed: bool,
}

impl<W: Write> SealWriter<W> {
    /// Writes the header (tag included, from [`crate::Client::begin_stream`]).
    pub(crate) fn start(mut out: W, header: &[u8], sealer: FrameSealer) -> crate::Result<Self> {
        out.write_all(header)
            .map_err(|e| Error::Other(std::sync::Arc::new(e)))?;
        Ok(SealWriter {
            out: Some(out),
            frame: Vec::with_capacity(sealer.frame_len() + 32),
            sealer,
            failed: false,
        })
    }

    fn write_frame(&mut self) -> io::Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already finished"))?;
        out.write_all(&self.frame)
    }

    fn check(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier write failed; the message is incomplete",
            ));
        }
        Ok(())
    }

    /// Writes the final frame, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        self.sealer.seal_final(&mut self.frame).map_err(io_err)?;
        self.write_frame()?;
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("writer already finished"))?;
        out.flush()?;
        Ok(out)
    }

    fn write_inner(&mut self, data: &[u8]) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let n = self.sealer.absorb(rest);
            rest = &rest[n..];
            while self.sealer.seal_ready(&mut self.frame).map_err(io_err)? {
                self.write_frame()?;
            }
        }
        Ok(())
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check()?;
        if let Err(e) = self.write_inner(data) {
            self.failed = true;
            return Err(e);
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
            .field("frame_len", &self.sealer.frame_len())
            .field("frames_written", &self.sealer.frames_sealed())
            .finish_non_exhaustive()
    }
}

/// Reads an envelope message's header from a stream: exactly the header
/// bytes, nothing of the body. Malformed input is the opaque error.
pub(crate) fn read_header<R: Read>(r: &mut R) -> crate::Result<Vec<u8>> {
    let mut h = Vec::with_capacity(256);
    while let Some(n) = header_needs(&h)? {
        let start = h.len();
        h.resize(start + n, 0);
        r.read_exact(&mut h[start..])
            .map_err(|_| Error::DecryptionFailed)?;
    }
    Ok(h)
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
    opened: OpenedStream,
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    ct: Vec<u8>,
    failed: bool,
}

impl<R: Read> OpenReader<R> {
    pub(crate) fn new(inner: R, opened: OpenedStream) -> Self {
        let f = opened.opener.frame_len();
        OpenReader {
            inner,
            opened,
            plain: Zeroizing::new(Vec::with_capacity(f)),
            pos: 0,
            ct: Vec::with_capacity(f + TAG_LEN_PUB),
            failed: false,
        }
    }

    /// The message's full encryption context.
    pub fn context(&self) -> &EncryptionContext {
        &self.opened.context
    }

    /// The key whose wrapped data key opened the message.
    pub fn key_id(&self) -> &KeyId {
        &self.opened.key_id
    }

    /// Its version.
    pub fn key_version(&self) -> u32 {
        self.opened.key_version
    }

    /// Reads and verifies the next frame into `plain`; the final frame is
    /// released only once the input has ended right after it.
    fn next_frame(&mut self) -> crate::Result<()> {
        self.plain.clear();
        self.pos = 0;
        loop {
            let opener = &mut self.opened.opener;
            if opener.awaiting_end() {
                let mut extra = [0u8; 1];
                let eof = loop {
                    match self.inner.read(&mut extra) {
                        Ok(n) => break n == 0,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return Err(Error::DecryptionFailed),
                    }
                };
                return opener.at_end(eof);
            }
            self.ct.resize(opener.wanted(), 0);
            self.inner
                .read_exact(&mut self.ct)
                .map_err(|_| Error::DecryptionFailed)?;
            if opener.step(&self.ct, &mut self.plain)? {
                return Ok(());
            }
        }
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
            if self.failed {
                return Err(io_err(Error::DecryptionFailed));
            }
            if self.opened.opener.is_done() {
                return Ok(0);
            }
            if let Err(e) = self.next_frame() {
                self.failed = true;
                // Wipe, not just clear: nothing of a failed frame stays in
                // memory until the reader is dropped.
                zeroize::Zeroize::zeroize(&mut *self.plain);
                return Err(io_err(e));
            }
        }
    }
}

impl<R: Read> fmt::Debug for OpenReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenReader")
            .field("key_id", &self.opened.key_id)
            .field("key_version", &self.opened.key_version)
            .field("frame_len", &self.opened.opener.frame_len())
            .finish_non_exhaustive()
    }
}
