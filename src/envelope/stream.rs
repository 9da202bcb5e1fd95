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
use super::frames::{Buf, FrameFn, FramePool};
use super::message::{
    self, Derived, FINAL, FRAME_PREFIX, MESSAGE_ID_LEN, MessageHeader, TAG_LEN_PUB,
};
use crate::error::Error;
use crate::key::KeyId;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Frames a stream handles on the calling thread before it starts frame
/// workers: short streams never start a thread.
const FRAMES_BEFORE_WORKERS: u32 = 2;

pub(crate) fn io_err(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

// ---- the IO-free frame logic -------------------------------------------------

/// Sealing state without IO: buffers plaintext (at most two frames, in a
/// zeroizing buffer that is never reallocated) and seals frames on request.
pub(crate) struct FrameSealer {
    derived: Arc<Derived>,
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
            derived: Arc::new(derived),
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

    /// The in-place frame sealer for frame workers.
    fn frame_fn(&self) -> Arc<FrameFn> {
        let (derived, id) = (self.derived.clone(), self.message_id);
        Arc::new(move |seq, is_final, buf: &mut Vec<u8>| {
            message::seal_frame_in_place(&derived, &id, seq, is_final, buf)
        })
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
    derived: Arc<Derived>,
    message_id: [u8; MESSAGE_ID_LEN],
    frame_len: usize,
    expected: u32,
    next: Next,
}

impl FrameOpener {
    pub(crate) fn new(h: &MessageHeader<'_>, derived: Derived) -> Self {
        FrameOpener {
            derived: Arc::new(derived),
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
        if let Next::Body { seq, is_final, .. } = self.next {
            if input.len() != self.wanted() {
                return Err(Error::DecryptionFailed);
            }
            message::open_frame(&self.derived, &self.message_id, seq, is_final, input, plain)?;
            self.advance_body();
            return Ok(!is_final);
        }
        self.step_header(input)?;
        Ok(false)
    }

    /// The in-place frame opener for frame workers.
    fn frame_fn(&self) -> Arc<FrameFn> {
        let (derived, id) = (self.derived.clone(), self.message_id);
        Arc::new(move |seq, is_final, buf: &mut Vec<u8>| {
            message::open_frame_in_place(&derived, &id, seq, is_final, buf)?;
            Ok(0)
        })
    }

    /// True if the next bytes wanted are a frame's `ciphertext || tag`.
    fn body_next(&self) -> bool {
        matches!(self.next, Next::Body { .. })
    }

    /// Moves past the body announced by the last header, without opening
    /// it (the frame workers do): returns its `(sequence number, is final)`.
    fn advance_body(&mut self) -> Option<(u32, bool)> {
        let Next::Body { seq, is_final, .. } = self.next else {
            return None;
        };
        if is_final {
            self.next = Next::End;
        } else {
            self.expected += 1;
            self.next = Next::Marker;
        }
        Some((seq, is_final))
    }

    /// Consumes a frame marker or final-frame header.
    fn step_header(&mut self, input: &[u8]) -> crate::Result<()> {
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
                Ok(())
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
                Ok(())
            }
            Next::Body { .. } | Next::End | Next::Done => Err(Error::DecryptionFailed),
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

/// The frame workers of a [`SealWriter`] and the frame being filled: `cur`
/// is [`FRAME_PREFIX`] reserved bytes then up to one frame of plaintext.
struct ParSeal {
    pool: FramePool,
    cur: Buf,
    seq: u32,
}

/// Encrypts a stream into an envelope message, frame by frame.
///
/// Write the data, then call [`SealWriter::finish`]: it writes the final
/// frame and returns the inner writer. A writer dropped without `finish`
/// leaves a message without its final frame, which every reader rejects.
///
/// After its first two frames, a writer of a ring with more than one
/// thread ([`crate::keyring::KeyRingBuilder::threads`]) seals frames on
/// worker threads while the calling thread copies data in and writes
/// frames out, in order; at most `2 × threads` frames are in flight, so
/// memory stays bounded. The bytes written are the same either way.
pub struct SealWriter<W: Write> {
    out: Option<W>,
    sealer: FrameSealer,
    frame: Vec<u8>,
    failed: bool,
    threads: usize,
    par: Option<ParSeal>,
}

impl<W: Write> SealWriter<W> {
    /// Writes the header (tag included, from [`crate::Client::begin_stream`]).
    pub(crate) fn start(
        mut out: W,
        header: &[u8],
        sealer: FrameSealer,
        threads: usize,
    ) -> crate::Result<Self> {
        out.write_all(header)
            .map_err(|e| Error::Other(std::sync::Arc::new(e)))?;
        Ok(SealWriter {
            out: Some(out),
            frame: Vec::with_capacity(sealer.frame_len() + 32),
            sealer,
            failed: false,
            threads,
            par: None,
        })
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already finished"))
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
        if self.par.is_some() {
            self.par_finish()?;
        } else {
            self.sealer.seal_final(&mut self.frame).map_err(io_err)?;
            self.write_frame()?;
        }
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
            if self.par.is_some() {
                return self.par_write(rest);
            }
            let n = self.sealer.absorb(rest);
            rest = &rest[n..];
            while self.sealer.seal_ready(&mut self.frame).map_err(io_err)? {
                self.write_frame()?;
                if self.threads > 1 && self.sealer.frames_sealed() >= FRAMES_BEFORE_WORKERS {
                    self.start_workers();
                    if self.par.is_some() {
                        return self.par_write(rest);
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves the buffered plaintext (at most one frame after `seal_ready`)
    /// into the first frame of the workers. Without threads, stays serial.
    fn start_workers(&mut self) {
        let f = self.sealer.frame_len();
        let Some(mut pool) = FramePool::start(
            self.threads,
            self.sealer.frame_fn(),
            self.sealer.seq,
            FRAME_PREFIX + f + TAG_LEN_PUB,
        ) else {
            return;
        };
        let mut cur = pool.buffer();
        cur.resize(FRAME_PREFIX, 0);
        cur.extend_from_slice(&self.sealer.buf);
        zeroize::Zeroize::zeroize(&mut *self.sealer.buf);
        self.sealer.buf.clear();
        self.par = Some(ParSeal {
            pool,
            cur,
            seq: self.sealer.seq,
        });
    }

    /// Parallel mode: fills the current frame; a full frame followed by
    /// more data is a regular frame and goes to the workers.
    fn par_write(&mut self, data: &[u8]) -> io::Result<()> {
        let f = self.sealer.frame_len();
        let mut rest = data;
        while !rest.is_empty() {
            let Some(par) = self.par.as_mut() else {
                return Err(io::Error::other("internal: no frame workers"));
            };
            let room = f - (par.cur.len() - FRAME_PREFIX);
            if room > 0 {
                let n = room.min(rest.len());
                par.cur.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                continue;
            }
            if par.pool.is_full() {
                self.write_done()?;
                continue;
            }
            let par = self
                .par
                .as_mut()
                .ok_or_else(|| io::Error::other("internal"))?;
            let mut next = par.pool.buffer();
            next.resize(FRAME_PREFIX, 0);
            let full = std::mem::replace(&mut par.cur, next);
            par.pool.submit(par.seq, false, full).map_err(io_err)?;
            par.seq = par.seq.checked_add(1).ok_or_else(|| {
                io_err(Error::invalid("too many frames: use a larger frame length"))
            })?;
        }
        Ok(())
    }

    /// Writes the next sealed frame in order; false if none is in flight.
    fn write_done(&mut self) -> io::Result<bool> {
        let Some(par) = self.par.as_mut() else {
            return Ok(false);
        };
        let Some(d) = par.pool.take().map_err(io_err)? else {
            return Ok(false);
        };
        let start = d.result.map_err(io_err)?;
        let buf = d.buf;
        let r = self.out().and_then(|o| o.write_all(&buf[start..]));
        if let Some(par) = self.par.as_mut() {
            par.pool.recycle(buf);
        }
        r.map(|()| true)
    }

    fn par_finish(&mut self) -> io::Result<()> {
        let par = self
            .par
            .as_mut()
            .ok_or_else(|| io::Error::other("internal"))?;
        let last = std::mem::replace(&mut par.cur, Zeroizing::new(Vec::new()));
        while self.par.as_ref().is_some_and(|p| p.pool.is_full()) {
            self.write_done()?;
        }
        let par = self
            .par
            .as_mut()
            .ok_or_else(|| io::Error::other("internal"))?;
        par.pool.submit(par.seq, true, last).map_err(io_err)?;
        while self.write_done()? {}
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
            .field("parallel", &self.par.is_some())
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
///
/// After its first two frames, a reader of a ring with more than one
/// thread reads ahead and opens up to `2 × threads` frames at once on
/// worker threads; plaintext is still released strictly in order, each
/// frame only after every earlier one verified, and the final frame only
/// once the input has ended right after it.
pub struct OpenReader<R: Read> {
    inner: R,
    opened: OpenedStream,
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    ct: Vec<u8>,
    failed: bool,
    finished: bool,
    threads: usize,
    pool: Option<FramePool>,
    /// An input error met while reading ahead, returned once the frames
    /// before it are released.
    ahead_error: Option<Error>,
}

impl<R: Read> OpenReader<R> {
    pub(crate) fn new(inner: R, opened: OpenedStream, threads: usize) -> Self {
        let f = opened.opener.frame_len();
        OpenReader {
            inner,
            opened,
            plain: Zeroizing::new(Vec::with_capacity(f)),
            pos: 0,
            ct: Vec::with_capacity(f + TAG_LEN_PUB),
            failed: false,
            finished: false,
            threads,
            pool: None,
            ahead_error: None,
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

    /// After the final frame: checks that the input ends there.
    fn check_end(&mut self) -> crate::Result<()> {
        let mut extra = [0u8; 1];
        let eof = loop {
            match self.inner.read(&mut extra) {
                Ok(n) => break n == 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Error::DecryptionFailed),
            }
        };
        self.opened.opener.at_end(eof)
    }

    /// Reads and verifies the next frame into `plain`; the final frame is
    /// released only once the input has ended right after it.
    fn next_frame(&mut self) -> crate::Result<()> {
        self.plain.clear();
        self.pos = 0;
        if self.pool.is_some() {
            return self.next_frame_parallel();
        }
        loop {
            let opener = &mut self.opened.opener;
            if opener.awaiting_end() {
                self.check_end()?;
                self.finished = true;
                return Ok(());
            }
            if self.threads > 1 && opener.body_next() && opener.expected > FRAMES_BEFORE_WORKERS {
                self.pool = FramePool::start(
                    self.threads,
                    opener.frame_fn(),
                    opener.expected,
                    opener.frame_len() + TAG_LEN_PUB,
                );
                if self.pool.is_some() {
                    return self.next_frame_parallel();
                }
            }
            let opener = &mut self.opened.opener;
            self.ct.resize(opener.wanted(), 0);
            self.inner
                .read_exact(&mut self.ct)
                .map_err(|_| Error::DecryptionFailed)?;
            if opener.step(&self.ct, &mut self.plain)? {
                return Ok(());
            }
        }
    }

    /// Reads the next frame header or body into the pipeline; false when
    /// the pipeline is full or the input is read up to the final frame.
    fn read_ahead(&mut self) -> crate::Result<bool> {
        let Some(pool) = self.pool.as_mut() else {
            return Err(Error::DecryptionFailed);
        };
        let opener = &mut self.opened.opener;
        if pool.is_full() || opener.awaiting_end() || opener.is_done() {
            return Ok(false);
        }
        let want = opener.wanted();
        if opener.body_next() {
            let mut buf = pool.buffer();
            buf.resize(want, 0);
            self.inner
                .read_exact(&mut buf)
                .map_err(|_| Error::DecryptionFailed)?;
            let (seq, is_final) = opener.advance_body().ok_or(Error::DecryptionFailed)?;
            pool.submit(seq, is_final, buf)?;
        } else {
            self.ct.resize(want, 0);
            self.inner
                .read_exact(&mut self.ct)
                .map_err(|_| Error::DecryptionFailed)?;
            opener.step_header(&self.ct)?;
        }
        Ok(true)
    }

    /// Parallel mode: keeps the workers busy with the frames that follow,
    /// then releases the next frame in order.
    fn next_frame_parallel(&mut self) -> crate::Result<()> {
        // Read ahead while there is room in the pipeline. An input
        // error found ahead is held back until the frames before it
        // are released, as a one-thread reader would.
        while self.ahead_error.is_none() {
            match self.read_ahead() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => self.ahead_error = Some(e),
            }
        }
        let Some(pool) = self.pool.as_mut() else {
            return Err(Error::DecryptionFailed);
        };
        let Some(d) = pool.take()? else {
            // Nothing in flight and nothing more to read: the input
            // went wrong ahead.
            return Err(self.ahead_error.take().unwrap_or(Error::DecryptionFailed));
        };
        let released = d.result.map(|start| {
            self.plain.extend_from_slice(&d.buf[start..]);
        });
        pool.recycle(d.buf);
        released?;
        if d.is_final {
            // Released only if the input ends right after it.
            if self.opened.opener.awaiting_end() {
                self.check_end()?;
            }
            if !self.opened.opener.is_done() {
                return Err(Error::DecryptionFailed);
            }
            self.finished = true;
        }
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
            if self.failed {
                return Err(io_err(Error::DecryptionFailed));
            }
            if self.finished {
                return Ok(0);
            }
            if let Err(e) = self.next_frame() {
                self.failed = true;
                // Wipe, not just clear: nothing of a failed frame stays in
                // memory until the reader is dropped.
                zeroize::Zeroize::zeroize(&mut *self.plain);
                // Stop the workers; their buffers are wiped on drop.
                self.pool = None;
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
            .field("parallel", &self.pool.is_some())
            .finish_non_exhaustive()
    }
}
