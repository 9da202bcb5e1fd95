//! Streaming envelope messages: [`SealWriter`] and [`OpenReader`].
//!
//! Same format as [`crate::Client::seal`] / [`crate::Client::open`]
//! (docs/FORMAT.md, "Envelope message"): a message written by either side
//! opens with either side. Memory use is bounded: two frames on one
//! thread; with frame workers, `2 × threads + 1` jobs of about 1 MiB of
//! frames each (see [`SealWriter`] and [`OpenReader`]).
//!
//! The frame logic is IO-free ([`FrameSealer`], [`FrameOpener`],
//! [`header_needs`]) so the blocking wrappers here and the `AsyncRead` /
//! `AsyncWrite` adapters of feature `tokio` (`crate::tokio_io`) share one
//! implementation of the format.

use super::EncryptionContext;
use super::frames::{Frame, FrameFn, FramePool, Job, frames_per_job};
use super::message::{self, Derived, FINAL, MESSAGE_ID_LEN, MessageHeader, TAG_LEN_PUB};
use crate::error::Error;
use crate::key::KeyId;
use std::fmt;
use std::io::{self, BufRead, Read, Write};
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

    /// The in-place frame sealer for frame workers: a frame's slot is its
    /// header room, its plaintext and room for the tag.
    fn frame_fn(&self) -> Arc<FrameFn> {
        let (derived, id) = (self.derived.clone(), self.message_id);
        Arc::new(move |buf: &mut [u8], fr: &Frame| {
            let slot = buf
                .get_mut(fr.start..fr.start + fr.len)
                .ok_or_else(|| Error::invalid("internal: frame outside its job"))?;
            message::seal_frame_slot(&derived, &id, fr.seq, fr.is_final, slot)
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
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
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

    /// The in-place frame opener for frame workers: a frame's slot is its
    /// `ciphertext || tag`, and ends up holding its plaintext first.
    fn frame_fn(&self) -> Arc<FrameFn> {
        let (derived, id) = (self.derived.clone(), self.message_id);
        Arc::new(move |buf: &mut [u8], fr: &Frame| {
            let slot = buf
                .get_mut(fr.start..fr.start + fr.len)
                .ok_or(Error::DecryptionFailed)?;
            message::open_frame_slot(&derived, &id, fr.seq, fr.is_final, slot)
        })
    }

    /// True if the next bytes wanted start a frame (its marker).
    fn at_frame_start(&self) -> bool {
        self.next == Next::Marker
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

/// The frame workers of a [`SealWriter`] and the job being filled. In a
/// job's buffer frame `i` is at `i × stride` (the stride is the marker's 4
/// bytes, a frame of plaintext and the tag's 16): its marker, its
/// plaintext, its tag, so that a sealed job is written out in one piece. Only the job's last frame can be the final
/// one; its plaintext then moves 8 bytes on for the longer header (the
/// buffer has 8 bytes to spare).
struct ParSeal {
    pool: FramePool,
    cur: Job,
    /// Plaintext bytes in the open frame (the one after `cur.frames`).
    fill: usize,
    /// Sequence number of the open frame.
    seq: u32,
    /// Frames in the job being filled: doubles from 1 up to `max_frames`,
    /// so a short stream waits for no full job.
    frames: usize,
    max_frames: usize,
    frame_len: usize,
    stride: usize,
}

/// Encrypts a stream into an envelope message, frame by frame.
///
/// Write the data, then call [`SealWriter::finish`]: it writes the final
/// frame and returns the inner writer. A writer dropped without `finish`
/// leaves a message without its final frame, which every reader rejects.
///
/// After its first two frames, a writer of a ring with more than one
/// thread ([`crate::keyring::KeyRingBuilder::threads`], say `T`) seals
/// frames in jobs of about 1 MiB of consecutive frames (at least one
/// frame): `T - 1` worker threads, and the calling thread, which copies
/// data in, writes sealed jobs out in order, and seals a job itself when
/// it would otherwise wait. Memory stays bounded: at most `2 × T` jobs in
/// flight and one being filled, each of at most 1 MiB of data (less with
/// more than 8 threads: about 16 MiB in all) or one frame, whichever is
/// larger; with 64 KiB frames and `T = 2`, about 5 MiB. The bytes written
/// are the same either way.
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

    /// Copies `reader` to its end into the message and returns how many
    /// bytes it copied: like [`std::io::copy`], but once frame workers run
    /// ([`SealWriter`]) the data is read straight into the buffers the
    /// frames are sealed in, a frame at a time, with no copy in between.
    /// Call [`SealWriter::finish`] afterwards. An error of `reader` is
    /// returned as it is and leaves the writer usable (nothing of the failed
    /// read was taken); an error writing fails the writer, as with `write`.
    pub fn copy_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<u64> {
        self.check()?;
        let f = self.sealer.frame_len().min(1 << 20);
        let mut scratch: Option<Zeroizing<Vec<u8>>> = None;
        let mut total = 0u64;
        loop {
            let step = if self.par.is_some() {
                self.par_read_from(reader)
            } else {
                let s = scratch.get_or_insert_with(|| Zeroizing::new(vec![0u8; f]));
                match read_retry(reader, s) {
                    Ok(0) => Ok(0),
                    Ok(m) => self
                        .write_inner(&s[..m])
                        .map(|()| m)
                        .map_err(Failed::Writer),
                    Err(e) => Err(Failed::Reader(e)),
                }
            };
            match step {
                Ok(0) => return Ok(total),
                Ok(m) => total += m as u64,
                Err(Failed::Reader(e)) => return Err(e),
                Err(Failed::Writer(e)) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
    }

    /// Parallel mode: one read straight into the open frame, or, when it is
    /// full, into the next frame's place (the data that makes the full
    /// frame a regular one). 0 at the end of `reader`.
    fn par_read_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> Result<usize, Failed> {
        let par = self.par().map_err(Failed::Writer)?;
        let (f, stride) = (par.frame_len, par.stride);
        let idx = par.cur.frames.len();
        if par.fill < f {
            let at = idx * stride + 4 + par.fill;
            let m = read_retry(reader, &mut par.cur.buf[at..at + f - par.fill])
                .map_err(Failed::Reader)?;
            par.fill += m;
            return Ok(m);
        }
        let regular = Frame {
            seq: par.seq,
            is_final: false,
            start: idx * stride,
            len: stride,
        };
        let next_seq = par.seq.checked_add(1).ok_or_else(|| {
            Failed::Writer(io_err(Error::invalid(
                "too many frames: use a larger frame length",
            )))
        });
        if idx + 1 < par.frames {
            let at = (idx + 1) * stride + 4;
            let m = read_retry(reader, &mut par.cur.buf[at..at + f]).map_err(Failed::Reader)?;
            if m > 0 {
                par.seq = next_seq?;
                par.cur.frames.push(regular);
                par.fill = m;
            }
            return Ok(m);
        }
        let mut next = par.pool.job();
        let m = match read_retry(reader, &mut next.buf[4..4 + f]) {
            Ok(m) if m > 0 => m,
            other => {
                par.pool.recycle(next);
                return other.map_err(Failed::Reader);
            }
        };
        par.seq = next_seq?;
        par.cur.frames.push(regular);
        par.fill = m;
        let full = std::mem::replace(&mut par.cur, next);
        par.frames = (par.frames * 2).min(par.max_frames);
        self.submit(full).map_err(Failed::Writer)?;
        Ok(m)
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

    /// Moves the buffered plaintext (1 to F bytes after `seal_ready`) into
    /// the open frame of the first job. Without threads, stays serial.
    fn start_workers(&mut self) {
        let f = self.sealer.frame_len();
        let stride = 4 + f + TAG_LEN_PUB;
        let max_frames = frames_per_job(f, self.threads);
        let Some(mut pool) = FramePool::start(
            self.threads,
            self.sealer.frame_fn(),
            max_frames * stride + 8,
        ) else {
            return;
        };
        let mut cur = pool.job();
        let n = self.sealer.buf.len();
        cur.buf[4..4 + n].copy_from_slice(&self.sealer.buf);
        zeroize::Zeroize::zeroize(&mut *self.sealer.buf);
        self.sealer.buf.clear();
        self.par = Some(ParSeal {
            pool,
            cur,
            fill: n,
            seq: self.sealer.seq,
            frames: 1,
            max_frames,
            frame_len: f,
            stride,
        });
    }

    fn par(&mut self) -> io::Result<&mut ParSeal> {
        self.par
            .as_mut()
            .ok_or_else(|| io::Error::other("internal: no frame workers"))
    }

    /// Parallel mode: copies data into the open frame; a full frame
    /// followed by more data is a regular frame, and a job with all its
    /// frames goes to the workers.
    fn par_write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let par = self.par()?;
            if par.fill == par.frame_len {
                let start = par.cur.frames.len() * par.stride;
                par.cur.frames.push(Frame {
                    seq: par.seq,
                    is_final: false,
                    start,
                    len: par.stride,
                });
                par.seq = par.seq.checked_add(1).ok_or_else(|| {
                    io_err(Error::invalid("too many frames: use a larger frame length"))
                })?;
                par.fill = 0;
                if par.cur.frames.len() >= par.frames {
                    let next = par.pool.job();
                    let full = std::mem::replace(&mut par.cur, next);
                    par.frames = (par.frames * 2).min(par.max_frames);
                    self.submit(full)?;
                }
                continue;
            }
            let at = par.cur.frames.len() * par.stride + 4 + par.fill;
            let n = (par.frame_len - par.fill).min(rest.len());
            par.cur.buf[at..at + n].copy_from_slice(&rest[..n]);
            par.fill += n;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// Submits a job, first writing out sealed jobs while the pipeline is
    /// full.
    fn submit(&mut self, job: Job) -> io::Result<()> {
        while self.par()?.pool.is_full() {
            self.write_done()?;
        }
        self.par()?.pool.submit(job).map_err(io_err)
    }

    /// Writes the next sealed job in order; false if none is in flight.
    fn write_done(&mut self) -> io::Result<bool> {
        let Some(par) = self.par.as_mut() else {
            return Ok(false);
        };
        let Some(mut job) = par.pool.take().map_err(io_err)? else {
            return Ok(false);
        };
        let end = job.frames[..job.done]
            .last()
            .map_or(0, |fr| fr.start + fr.len);
        let error = job.error.take();
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already finished"));
        let r = out.and_then(|o| o.write_all(&job.buf[..end]));
        if let Some(par) = self.par.as_mut() {
            par.pool.recycle(job);
        }
        r?;
        match error {
            Some(e) => Err(io_err(e)),
            None => Ok(true),
        }
    }

    fn par_finish(&mut self) -> io::Result<()> {
        let par = self.par()?;
        let start = par.cur.frames.len() * par.stride;
        let fill = par.fill;
        // The final frame's header is 12 bytes, not 4.
        par.cur
            .buf
            .copy_within(start + 4..start + 4 + fill, start + 12);
        par.cur.frames.push(Frame {
            seq: par.seq,
            is_final: true,
            start,
            len: 12 + fill + TAG_LEN_PUB,
        });
        let last = std::mem::replace(&mut par.cur, Job::placeholder());
        self.submit(last)?;
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

/// Which side of a copy failed.
enum Failed {
    Reader(io::Error),
    Writer(io::Error),
}

/// `reader.read(buf)`, retried on interruption.
fn read_retry<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Reads into `buf`; 0 at the end of input. Any read error but an
/// interruption is the opaque error.
fn read_some<R: Read>(r: &mut R, buf: &mut [u8]) -> crate::Result<usize> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Error::DecryptionFailed),
        }
    }
}

/// The frame workers of an [`OpenReader`] and the job being released.
struct ParOpen {
    pool: FramePool,
    /// Frames in the next job read: doubles from 1 up to `max_frames`.
    frames: usize,
    max_frames: usize,
    stride: usize,
    /// The job whose plaintext is being read, from frame `frame`, byte
    /// `pos` of that frame's plaintext.
    released: Option<Job>,
    frame: usize,
    pos: usize,
    /// The error of the frame after the released job's last one.
    pending_error: Option<Error>,
}

impl ParOpen {
    /// Writes the released plaintext not yet read to `w` (one vectored
    /// write for the frames of the job, where `w` supports it) and marks
    /// it read; how many bytes. On an error nothing is marked read.
    fn write_released<W: Write + ?Sized>(&mut self, w: &mut W) -> io::Result<u64> {
        if self.available().is_empty() {
            return Ok(0);
        }
        let Some(job) = self.released.as_ref() else {
            return Ok(0);
        };
        let mut slices: Vec<io::IoSlice<'_>> = Vec::with_capacity(job.frames.len());
        let mut total = 0u64;
        for (i, fr) in job.frames.iter().enumerate().skip(self.frame) {
            let from = if i == self.frame { self.pos } else { 0 };
            let plain = &job.buf[fr.start + from..fr.start + fr.len - TAG_LEN_PUB];
            total += plain.len() as u64;
            slices.push(io::IoSlice::new(plain));
        }
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match w.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.frame = job.frames.len();
        self.pos = 0;
        Ok(total)
    }

    /// The released plaintext not yet read (of one frame); empty when the
    /// released job is read.
    fn available(&mut self) -> &[u8] {
        let Some(job) = self.released.as_ref() else {
            return &[];
        };
        while let Some(fr) = job.frames.get(self.frame) {
            let plain = fr.len - TAG_LEN_PUB;
            if self.pos < plain {
                return &job.buf[fr.start + self.pos..fr.start + plain];
            }
            self.frame += 1;
            self.pos = 0;
        }
        &[]
    }
}

/// Decrypts an envelope message from a stream, releasing each frame's
/// plaintext as soon as its tag verifies.
///
/// Data read before the end is authentic frame by frame, but the message as
/// a whole is known complete only when `read` returns `Ok(0)`: a truncated
/// message fails at its end with `ErrorKind::InvalidData`. Do not act on the
/// data until then if a truncated stream could matter.
///
/// The reader is also [`BufRead`]: `fill_buf` hands out released plaintext
/// where it was decrypted, without a copy.
///
/// After its first two frames, a reader of a ring with more than one
/// thread (say `T`) reads ahead in jobs of about 1 MiB of consecutive
/// frames (at least one frame), each read straight into the buffer it is
/// decrypted in, and opens them on `T - 1` worker threads and on the
/// calling thread (which decrypts a job itself when it would otherwise
/// wait). At most `2 × T` jobs are in flight besides the one being read
/// out, each of at most 1 MiB of data (less with more than 8 threads:
/// about 16 MiB in all) or one frame, whichever is larger.
/// Plaintext is still released strictly in order, each frame only after
/// every earlier one verified, and the final frame only once the input
/// has ended right after it.
pub struct OpenReader<R: Read> {
    inner: R,
    opened: OpenedStream,
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    ct: Vec<u8>,
    failed: bool,
    finished: bool,
    threads: usize,
    par: Option<ParOpen>,
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
            par: None,
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

    /// Copies the plaintext to `writer` up to the end of the message and
    /// returns how many bytes it copied: like [`std::io::copy`], but each
    /// released frame is written straight from the buffer it was decrypted
    /// in. Everything written is authentic frame by frame; the message is
    /// known complete only when this returns `Ok` (see [`OpenReader`]). A
    /// decryption failure is `ErrorKind::InvalidData`, after the frames
    /// before the bad one were written.
    pub fn copy_to<W: Write + ?Sized>(&mut self, writer: &mut W) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            if let Some(par) = self.par.as_mut() {
                // The rest of a released job in one vectored write.
                total += par.write_released(writer)?;
            }
            let plain = self.fill_buf()?;
            if plain.is_empty() {
                return Ok(total);
            }
            writer.write_all(plain)?;
            let n = plain.len();
            self.consume(n);
            total += n as u64;
        }
    }

    /// After the final frame: checks that the input ends there.
    fn check_end(&mut self) -> crate::Result<()> {
        let mut extra = [0u8; 1];
        let eof = read_some(&mut self.inner, &mut extra)? == 0;
        self.opened.opener.at_end(eof)
    }

    /// Reads and verifies the next frame into `plain`; the final frame is
    /// released only once the input has ended right after it.
    fn next_frame(&mut self) -> crate::Result<()> {
        self.plain.clear();
        self.pos = 0;
        if self.par.is_some() {
            return self.next_job();
        }
        loop {
            let opener = &mut self.opened.opener;
            if opener.awaiting_end() {
                self.check_end()?;
                self.finished = true;
                return Ok(());
            }
            if self.threads > 1
                && opener.at_frame_start()
                && opener.expected > FRAMES_BEFORE_WORKERS
            {
                self.start_workers();
                if self.par.is_some() {
                    return self.next_job();
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

    fn start_workers(&mut self) {
        let opener = &self.opened.opener;
        let stride = 4 + opener.frame_len() + TAG_LEN_PUB;
        let max_frames = frames_per_job(opener.frame_len(), self.threads);
        if let Some(pool) =
            FramePool::start(self.threads, opener.frame_fn(), max_frames * stride + 8)
        {
            self.par = Some(ParOpen {
                pool,
                frames: 1,
                max_frames,
                stride,
                released: None,
                frame: 0,
                pos: 0,
                pending_error: None,
            });
        }
    }

    /// Reads the next job (up to `frames` frames, or up to and including
    /// the final frame) straight into a job buffer and submits it; false
    /// when the pipeline is full or the input is read up to the final
    /// frame. Input that goes wrong ends the job before the bad frame (the
    /// frames before it still go to the workers) and is the error.
    fn read_ahead(&mut self) -> crate::Result<bool> {
        let Some(par) = self.par.as_mut() else {
            return Err(Error::DecryptionFailed);
        };
        let opener = &mut self.opened.opener;
        if par.pool.is_full() || !opener.at_frame_start() {
            return Ok(false);
        }
        let mut job = par.pool.job();
        let target = par.frames * par.stride;
        let (mut n, mut pos) = (0usize, 0usize);
        let parsed = loop {
            if opener.awaiting_end() {
                // Released only if the input ends right after it.
                let eof = if n > pos {
                    false
                } else {
                    let mut extra = [0u8; 1];
                    match read_some(&mut self.inner, &mut extra) {
                        Ok(m) => m == 0,
                        Err(e) => break Err(e),
                    }
                };
                break opener.at_end(eof);
            }
            if job.frames.len() == par.frames && opener.at_frame_start() {
                break Ok(());
            }
            let want = opener.wanted();
            if pos + want > n {
                // More input: up to the whole job at once (and for a final
                // frame in the last slot, up to its end).
                let limit = target.max(pos + want);
                if limit > job.buf.len() {
                    break Err(Error::DecryptionFailed);
                }
                match read_some(&mut self.inner, &mut job.buf[n..limit]) {
                    Ok(0) => break Err(Error::DecryptionFailed),
                    Ok(m) => n += m,
                    Err(e) => break Err(e),
                }
                continue;
            }
            if let Some((seq, is_final)) = opener.advance_body() {
                job.frames.push(Frame {
                    seq,
                    is_final,
                    start: pos,
                    len: want,
                });
            } else if let Err(e) = opener.step_header(&job.buf[pos..pos + want]) {
                break Err(e);
            }
            pos += want;
        };
        if parsed.is_err() && job.frames.last().is_some_and(|fr| fr.is_final) {
            job.frames.pop();
        }
        if job.frames.is_empty() {
            par.pool.recycle(job);
        } else {
            par.frames = (par.frames * 2).min(par.max_frames);
            par.pool.submit(job)?;
        }
        parsed?;
        Ok(opener.at_frame_start())
    }

    /// Parallel mode, once the released job is read: keeps the workers
    /// busy with the jobs that follow, then releases the next job in order.
    fn next_job(&mut self) -> crate::Result<()> {
        let Some(par) = self.par.as_mut() else {
            return Err(Error::DecryptionFailed);
        };
        if let Some(job) = par.released.take() {
            let had_final = job.frames.last().is_some_and(|fr| fr.is_final);
            par.pool.recycle(job);
            if let Some(e) = par.pending_error.take() {
                return Err(e);
            }
            if had_final {
                self.finished = true;
                return Ok(());
            }
        }
        // Read ahead while there is room in the pipeline. An input error
        // found ahead is held back until the frames before it are
        // released, as a one-thread reader would.
        while self.ahead_error.is_none() {
            match self.read_ahead() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => self.ahead_error = Some(e),
            }
        }
        let Some(par) = self.par.as_mut() else {
            return Err(Error::DecryptionFailed);
        };
        let Some(mut job) = par.pool.take()? else {
            // Nothing in flight and nothing more to read: the input went
            // wrong ahead.
            return Err(self.ahead_error.take().unwrap_or(Error::DecryptionFailed));
        };
        if let Some(e) = job.error.take() {
            // Exactly the frames before the bad one are released.
            job.frames.truncate(job.done);
            par.pending_error = Some(e);
        }
        par.released = Some(job);
        par.frame = 0;
        par.pos = 0;
        Ok(())
    }

    /// The failure path: wipe what is buffered and stop the workers (their
    /// buffers are wiped on drop).
    fn fail(&mut self, e: Error) -> io::Error {
        self.failed = true;
        zeroize::Zeroize::zeroize(&mut *self.plain);
        self.par = None;
        io_err(e)
    }
}

impl<R: Read> BufRead for OpenReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        loop {
            if self.failed {
                return Err(io_err(Error::DecryptionFailed));
            }
            let par_ready = self.par.as_mut().is_some_and(|p| !p.available().is_empty());
            if par_ready || self.pos < self.plain.len() || self.finished {
                break;
            }
            if let Err(e) = self.next_frame() {
                return Err(self.fail(e));
            }
        }
        if let Some(p) = self.par.as_mut() {
            let avail = p.available();
            if !avail.is_empty() {
                return Ok(p.available());
            }
        }
        Ok(&self.plain[self.pos..])
    }

    fn consume(&mut self, amount: usize) {
        if let Some(p) = self.par.as_mut() {
            let avail = p.available().len();
            if avail > 0 {
                p.pos += amount.min(avail);
                return;
            }
        }
        self.pos = (self.pos + amount).min(self.plain.len());
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = buf.len().min(avail.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> fmt::Debug for OpenReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenReader")
            .field("key_id", &self.opened.key_id)
            .field("key_version", &self.opened.key_version)
            .field("frame_len", &self.opened.opener.frame_len())
            .field("parallel", &self.par.is_some())
            .finish_non_exhaustive()
    }
}
