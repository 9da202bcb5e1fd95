//! Ranged open of envelope messages: decrypt only the frames that cover a
//! plaintext range (docs/FORMAT.md, "Ranged open").
//!
//! Every frame of the format has a fixed place: regular frame `i` (0-based,
//! sequence number `i + 1`) starts `i × (20 + F)` bytes into the body, and
//! the final frame follows the last regular frame. So the frames covering a
//! range are found from the body's length and the frame length alone.
//!
//! ## What a ranged read authenticates
//!
//! - always: the whole header (suite, frame length, message id, context,
//!   wrapped keys), through the key commitment and the header tag, before
//!   any frame is released;
//! - each frame it decrypts: its bytes, its position (the sequence number
//!   is in the frame's associated data) and whether it is the final frame;
//! - the final frame, and with it the message's plaintext length, only when
//!   the range reaches the end of the plaintext ([`OpenedRange::end_verified`],
//!   [`RangeReader::end_verified`]).
//!
//! Frames outside the range are not read, so tampering with them is not
//! detected; neither is truncation or extension of the message unless the
//! read reaches the end. To know the whole message is authentic, open it
//! whole ([`crate::Client::open`]), or read an [`crate::Client::open_reader`]
//! to its end, at least once (for example when the message is stored).

use super::EncryptionContext;
use super::message::{self, Derived, FINAL, MESSAGE_ID_LEN, MessageHeader, TAG_LEN_PUB};
use super::stream::io_err;
use crate::error::{Error, Result};
use crate::key::KeyId;
use crate::secret::SecretBytes;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use zeroize::Zeroizing;

/// Length of the final frame's header: marker, sequence number, length.
const FINAL_HEADER_LEN: u64 = 12;

/// The result of [`crate::Client::open_range`].
#[derive(Debug)]
#[non_exhaustive]
pub struct OpenedRange {
    /// The plaintext of the requested range (exactly `len` bytes).
    pub plaintext: SecretBytes,
    /// The full encryption context stored in (and authenticated by) the message.
    pub context: EncryptionContext,
    /// The key whose wrapped data key opened the message.
    pub key_id: KeyId,
    /// Its version.
    pub key_version: u32,
    /// The message's plaintext length, as its size and frame length say.
    /// Authenticated only if [`OpenedRange::end_verified`] is true.
    pub message_len: u64,
    /// True when the range reached the end of the plaintext and the final
    /// frame verified: the message's length is then authentic, so it was
    /// neither truncated nor extended. False otherwise, whatever the bytes
    /// after the range hold.
    pub end_verified: bool,
}

/// Where one frame lies, in body offsets and plaintext offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameLoc {
    /// 0-based frame index (sequence number minus one).
    pub index: u64,
    /// Whether it is the final frame.
    pub is_final: bool,
    /// Body offset of the frame's first byte (its sequence number or marker).
    pub start: u64,
    /// Body offset of its `ciphertext || tag`.
    pub ct_start: u64,
    /// Plaintext offset of its first byte.
    pub plain_start: u64,
    /// Its plaintext length.
    pub plain_len: u64,
}

impl FrameLoc {
    fn seq(&self) -> u32 {
        // `Layout::new` bounds the frame count below 2^32 - 2.
        u32::try_from(self.index + 1).unwrap_or(u32::MAX)
    }

    fn ct_len(&self) -> Result<usize> {
        usize::try_from(self.plain_len + TAG_LEN_PUB as u64).map_err(|_| Error::DecryptionFailed)
    }
}

/// The frame layout of a body of known length. Nothing here is
/// authenticated: it only says where frames would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    frame_len: u64,
    regular: u64,
    final_len: u64,
}

impl Layout {
    /// The layout of a body (every byte after the header tag) of `body_len`
    /// bytes with frame length `frame_len`. A length no message has is the
    /// opaque error.
    pub(crate) fn new(frame_len: u32, body_len: u64) -> Result<Self> {
        let f = u64::from(frame_len);
        if f == 0 {
            return Err(Error::DecryptionFailed);
        }
        let stride = 4 + f + TAG_LEN_PUB as u64;
        let rest = body_len
            .checked_sub(FINAL_HEADER_LEN + TAG_LEN_PUB as u64)
            .ok_or(Error::DecryptionFailed)?;
        let regular = rest / stride;
        let final_len = rest % stride;
        // Regular frames 1..=2^32-3, the final frame at most 2^32-2: the
        // bounds of the whole-message reader.
        if final_len > f || regular > u64::from(FINAL - 2) {
            return Err(Error::DecryptionFailed);
        }
        Ok(Layout {
            frame_len: f,
            regular,
            final_len,
        })
    }

    /// The plaintext length the layout implies.
    pub(crate) fn plaintext_len(&self) -> u64 {
        self.regular * self.frame_len + self.final_len
    }

    fn stride(&self) -> u64 {
        4 + self.frame_len + TAG_LEN_PUB as u64
    }

    /// The final frame.
    pub(crate) fn final_frame(&self) -> FrameLoc {
        let start = self.regular * self.stride();
        FrameLoc {
            index: self.regular,
            is_final: true,
            start,
            ct_start: start + FINAL_HEADER_LEN,
            plain_start: self.regular * self.frame_len,
            plain_len: self.final_len,
        }
    }

    /// The frame holding plaintext byte `pos`; the final frame for any
    /// position at or past the regular frames.
    pub(crate) fn frame_at(&self, pos: u64) -> FrameLoc {
        let index = pos / self.frame_len;
        if index >= self.regular {
            return self.final_frame();
        }
        let start = index * self.stride();
        FrameLoc {
            index,
            is_final: false,
            start,
            ct_start: start + 4,
            plain_start: index * self.frame_len,
            plain_len: self.frame_len,
        }
    }

    /// Checks the final frame's header (read through `read(offset, len)`,
    /// body offsets) against the layout, as a message is opened: a message
    /// cut or padded by accident is refused before any range is read.
    pub(crate) fn check_final_head(
        &self,
        read: impl FnOnce(u64, usize) -> Result<Vec<u8>>,
    ) -> Result<()> {
        let loc = self.final_frame();
        let head = read(loc.start, FINAL_HEADER_LEN as usize)?;
        self.check_head(&loc, &head)
    }

    /// Checks the unauthenticated framing bytes before a frame's
    /// ciphertext (`head` is the 4 bytes of a regular frame's sequence
    /// number, or the 12 of the final frame's header) against the layout.
    /// Catches a message cut or padded by accident; an adversary can forge
    /// these bytes, which only the frame's tag then catches.
    pub(crate) fn check_head(&self, loc: &FrameLoc, head: &[u8]) -> Result<()> {
        let u32_at = |i: usize| -> Result<u32> {
            let b = head.get(i..i + 4).ok_or(Error::DecryptionFailed)?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let ok = if loc.is_final {
            head.len() == FINAL_HEADER_LEN as usize
                && u32_at(0)? == FINAL
                && u32_at(4)? == loc.seq()
                && u64::from(u32_at(8)?) == loc.plain_len
        } else {
            head.len() == 4 && u32_at(0)? == loc.seq()
        };
        if ok {
            Ok(())
        } else {
            Err(Error::DecryptionFailed)
        }
    }
}

fn head_len(loc: &FrameLoc) -> u64 {
    loc.ct_start - loc.start
}

/// Verifies and decrypts one frame of an in-memory body, appending its
/// plaintext to `out`.
fn open_frame_in(
    body: &[u8],
    layout: &Layout,
    loc: &FrameLoc,
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    out: &mut Vec<u8>,
) -> Result<()> {
    let slice = |from: u64, len: usize| -> Result<&[u8]> {
        let from = usize::try_from(from).map_err(|_| Error::DecryptionFailed)?;
        let to = from.checked_add(len).ok_or(Error::DecryptionFailed)?;
        body.get(from..to).ok_or(Error::DecryptionFailed)
    };
    layout.check_head(loc, slice(loc.start, head_len(loc) as usize)?)?;
    let ct = slice(loc.ct_start, loc.ct_len()?)?;
    message::open_frame(derived, message_id, loc.seq(), loc.is_final, ct, out)
}

/// The plaintext range `offset .. offset + len` of an in-memory message
/// whose header verified, and whether the read reached (and verified) the
/// end. Decrypts only the frames covering the range, plus the final frame
/// when the range ends at the end of the plaintext.
///
/// A range outside the plaintext is [`Error::InvalidArgument`]; anything
/// wrong with the bytes read is the opaque error.
pub(crate) fn decrypt_range(
    h: &MessageHeader<'_>,
    derived: &Derived,
    offset: u64,
    len: usize,
) -> Result<(Zeroizing<Vec<u8>>, Layout, bool)> {
    let layout = Layout::new(h.frame_len, h.body.len() as u64)?;
    layout.check_final_head(|from, len| {
        let from = usize::try_from(from).map_err(|_| Error::DecryptionFailed)?;
        from.checked_add(len)
            .and_then(|end| h.body.get(from..end))
            .map(<[u8]>::to_vec)
            .ok_or(Error::DecryptionFailed)
    })?;
    let total = layout.plaintext_len();
    let end = offset
        .checked_add(len as u64)
        .filter(|e| *e <= total)
        .ok_or_else(|| {
            Error::invalid(format!(
                "range of {len} bytes at offset {offset} is outside the message's {total} plaintext bytes"
            ))
        })?;
    // Exactly `len` bytes: never reallocated, so never left behind.
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    // Partial frames (at most the first and the last of the range) go
    // through a scratch buffer of one frame, allocated once, when needed.
    let mut scratch: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
    let mut final_read = false;
    let mut pos = offset;
    while pos < end {
        let loc = layout.frame_at(pos);
        let lo = pos - loc.plain_start;
        let hi = end.min(loc.plain_start + loc.plain_len) - loc.plain_start;
        if lo == 0 && hi == loc.plain_len {
            open_frame_in(h.body, &layout, &loc, derived, &h.message_id, &mut out)?;
        } else {
            if scratch.capacity() == 0 {
                scratch.reserve_exact(layout.frame_len as usize);
            }
            scratch.clear();
            open_frame_in(h.body, &layout, &loc, derived, &h.message_id, &mut scratch)?;
            out.extend_from_slice(&scratch[lo as usize..hi as usize]);
        }
        final_read |= loc.is_final;
        pos = loc.plain_start + hi;
    }
    let end_verified = end == total;
    if end_verified && !final_read {
        // The range ends where the final frame starts (or is empty at the
        // end): verify the final frame too, so the length is authentic.
        let loc = layout.final_frame();
        if scratch.capacity() == 0 {
            scratch.reserve_exact(loc.plain_len as usize);
        }
        scratch.clear();
        open_frame_in(h.body, &layout, &loc, derived, &h.message_id, &mut scratch)?;
    }
    Ok((out, layout, end_verified))
}

/// Parts of a verified header a [`RangeReader`] needs.
pub(crate) struct RangeParts {
    pub(crate) derived: Derived,
    pub(crate) message_id: [u8; MESSAGE_ID_LEN],
    pub(crate) layout: Layout,
    /// Stream position of the body's first byte.
    pub(crate) body_start: u64,
    pub(crate) context: EncryptionContext,
    pub(crate) key_id: KeyId,
    pub(crate) key_version: u32,
}

/// An IO error as the crate's error: input shorter than the layout says
/// is the opaque error; any other failure of the underlying reader is
/// reported as it is.
pub(crate) fn from_io(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::DecryptionFailed
    } else {
        Error::Other(std::sync::Arc::new(e))
    }
}

/// Finds the layout of a message whose header (of `header_len` bytes) starts
/// at stream position `start`, from the input's length, and checks the
/// final frame's header against it.
pub(crate) fn layout_of<R: Read + Seek>(
    input: &mut R,
    frame_len: u32,
    start: u64,
    header_len: usize,
) -> Result<(Layout, u64)> {
    let end = input.seek(SeekFrom::End(0)).map_err(from_io)?;
    let body_start = start
        .checked_add(header_len as u64)
        .ok_or(Error::DecryptionFailed)?;
    let body_len = end.checked_sub(body_start).ok_or(Error::DecryptionFailed)?;
    let layout = Layout::new(frame_len, body_len)?;
    layout.check_final_head(|from, len| {
        let at = body_start
            .checked_add(from)
            .ok_or(Error::DecryptionFailed)?;
        input.seek(SeekFrom::Start(at)).map_err(from_io)?;
        let mut head = vec![0u8; len];
        input.read_exact(&mut head).map_err(from_io)?;
        Ok(head)
    })?;
    Ok((layout, body_start))
}

/// Decrypts the plaintext range of an envelope message read through
/// `Read + Seek`: [`Read`] returns plaintext, [`Seek`] moves in plaintext
/// offsets (`SeekFrom::End` counts from the plaintext's end). Made by
/// [`crate::Client::open_range_reader`], which authorizes (`Decrypt`), audits
/// and verifies the header once; reads and seeks are not audited.
///
/// Each read verifies the frame it reads from before releasing any of it;
/// one frame's plaintext is kept, so reads within a frame decrypt it once.
/// What is authenticated is said in the module docs: frames read, not the
/// frames skipped over, and the message's length only once
/// [`RangeReader::end_verified`] is true. A read at or past the end of the
/// plaintext verifies the final frame before it returns `Ok(0)`, so `Ok(0)`
/// means the length is authentic.
///
/// A frame that fails to verify poisons the reader: that read and every
/// later one fail with `ErrorKind::InvalidData` (the opaque error).
pub struct RangeReader<R: Read + Seek> {
    inner: R,
    parts: RangeParts,
    pos: u64,
    /// Plaintext of frame `cached` (its index), if any.
    frame: Zeroizing<Vec<u8>>,
    cached: Option<u64>,
    ct: Vec<u8>,
    end_verified: bool,
    failed: bool,
}

impl<R: Read + Seek> RangeReader<R> {
    pub(crate) fn new(inner: R, parts: RangeParts) -> Self {
        RangeReader {
            inner,
            parts,
            pos: 0,
            frame: Zeroizing::new(Vec::new()),
            cached: None,
            ct: Vec::new(),
            end_verified: false,
            failed: false,
        }
    }

    /// The message's full encryption context (authenticated).
    pub fn context(&self) -> &EncryptionContext {
        &self.parts.context
    }

    /// The key whose wrapped data key opened the message.
    pub fn key_id(&self) -> &KeyId {
        &self.parts.key_id
    }

    /// Its version.
    pub fn key_version(&self) -> u32 {
        self.parts.key_version
    }

    /// The plaintext length the input's size implies. Authenticated only
    /// once [`RangeReader::end_verified`] is true.
    pub fn len(&self) -> u64 {
        self.parts.layout.plaintext_len()
    }

    /// True if [`RangeReader::len`] is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once the final frame has verified: the message's length is
    /// then authentic (not truncated, not extended).
    pub fn end_verified(&self) -> bool {
        self.end_verified
    }

    /// The current plaintext position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Gives back the input (the cached plaintext is zeroized).
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Reads and verifies frame `loc` into `self.frame`.
    fn load(&mut self, loc: FrameLoc) -> Result<()> {
        if self.cached == Some(loc.index) {
            return Ok(());
        }
        self.cached = None;
        zeroize::Zeroize::zeroize(&mut *self.frame);
        self.frame.clear();
        let p = &self.parts;
        let at = p
            .body_start
            .checked_add(loc.start)
            .ok_or(Error::DecryptionFailed)?;
        self.inner.seek(SeekFrom::Start(at)).map_err(from_io)?;
        let head = head_len(&loc) as usize;
        let need = head + loc.ct_len()?;
        self.ct.resize(need, 0);
        self.inner.read_exact(&mut self.ct).map_err(from_io)?;
        p.layout.check_head(&loc, &self.ct[..head])?;
        if self.frame.capacity() == 0 {
            // One frame, allocated once: never reallocated.
            self.frame.reserve_exact(p.layout.frame_len as usize);
        }
        message::open_frame(
            &p.derived,
            &p.message_id,
            loc.seq(),
            loc.is_final,
            &self.ct[head..],
            &mut self.frame,
        )?;
        self.cached = Some(loc.index);
        if loc.is_final {
            self.end_verified = true;
        }
        Ok(())
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> Result<usize> {
        let total = self.len();
        if self.pos >= total {
            if !self.end_verified {
                self.load(self.parts.layout.final_frame())?;
            }
            return Ok(0);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let loc = self.parts.layout.frame_at(self.pos);
        self.load(loc)?;
        let lo = (self.pos - loc.plain_start) as usize;
        let n = buf.len().min(self.frame.len() - lo);
        buf[..n].copy_from_slice(&self.frame[lo..lo + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Read for RangeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io_err(Error::DecryptionFailed));
        }
        match self.read_inner(buf) {
            Ok(n) => Ok(n),
            Err(Error::Other(e)) => {
                // The underlying reader failed (not the message): report it
                // as it is, without poisoning; the frame is read again.
                self.cached = None;
                Err(io::Error::other(e))
            }
            Err(e) => {
                self.failed = true;
                self.cached = None;
                zeroize::Zeroize::zeroize(&mut *self.frame);
                Err(io_err(e))
            }
        }
    }
}

impl<R: Read + Seek> Seek for RangeReader<R> {
    /// Moves in plaintext offsets; does no IO. Seeking past the end is
    /// allowed (reads there return `Ok(0)`), before the start is an error.
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(n) => {
                self.pos = n;
                return Ok(n);
            }
            SeekFrom::End(d) => (self.len(), d),
            SeekFrom::Current(d) => (self.pos, d),
        };
        let new = base.checked_add_signed(delta).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        self.pos = new;
        Ok(new)
    }
}

impl<R: Read + Seek> fmt::Debug for RangeReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeReader")
            .field("key_id", &self.parts.key_id)
            .field("key_version", &self.parts.key_version)
            .field("frame_len", &self.parts.layout.frame_len)
            .field("len", &self.len())
            .field("position", &self.pos)
            .field("end_verified", &self.end_verified)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_writer() {
        // F = 4: data of 0, 1, 4, 5, 8, 9 bytes.
        for (data_len, regular, final_len) in [
            (0u64, 0u64, 0u64),
            (1, 0, 1),
            (4, 0, 4),
            (5, 1, 1),
            (8, 1, 4),
            (9, 2, 1),
        ] {
            let body = regular * (4 + 4 + 16) + 12 + final_len + 16;
            let l = Layout::new(4, body).unwrap();
            assert_eq!((l.regular, l.final_len), (regular, final_len), "{data_len}");
            assert_eq!(l.plaintext_len(), data_len);
        }
    }

    #[test]
    fn impossible_body_lengths_are_opaque() {
        // Shorter than an empty final frame; a final frame longer than F.
        for body in [0u64, 27, 28 + 5, 28 + 23] {
            assert!(matches!(Layout::new(4, body), Err(Error::DecryptionFailed)));
        }
        assert!(Layout::new(0, 100).is_err());
    }

    #[test]
    fn frame_at_maps_positions() {
        let l = Layout::new(4, 2 * 24 + 12 + 3 + 16).unwrap();
        assert_eq!(l.plaintext_len(), 11);
        let f0 = l.frame_at(3);
        assert_eq!(
            (f0.index, f0.is_final, f0.start, f0.ct_start),
            (0, false, 0, 4)
        );
        let f1 = l.frame_at(4);
        assert_eq!((f1.index, f1.start, f1.plain_start), (1, 24, 4));
        let fin = l.frame_at(10);
        assert_eq!(
            (fin.index, fin.is_final, fin.start, fin.ct_start),
            (2, true, 48, 60)
        );
        assert_eq!((fin.plain_start, fin.plain_len), (8, 3));
    }
}
