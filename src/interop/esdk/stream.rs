//! Streaming ESDK messages: [`EsdkWriter`] and [`EsdkReader`].

use super::EsdkSuite;
use super::format::{self, FINAL_MARKER, Header, Signer, Verifier};
use crate::crypto::{Cipher, NONCE_LEN, TAG_LEN};
use crate::envelope::EncryptionContext;
use crate::error::Error;
use crate::key::KeyId;
use crate::random::RandomSource;
use sha2::Digest;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

fn io_err(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Writes an ESDK message frame by frame (from
/// [`crate::Client::esdk_seal_writer`]).
///
/// Write the data, then call [`EsdkWriter::finish`]: it writes the final
/// frame (and, for `0x0578`, the signature footer) and returns the inner
/// writer. A writer dropped without `finish` leaves a message without its
/// final frame, which every ESDK reader rejects. Memory use is about one
/// frame.
pub struct EsdkWriter<W: Write> {
    out: Option<W>,
    cipher: Cipher,
    message_id: [u8; 32],
    frame_len: usize,
    buf: Zeroizing<Vec<u8>>,
    frame: Vec<u8>,
    seq: u32,
    signer: Option<Signer>,
    rng: Arc<dyn RandomSource>,
    failed: bool,
}

impl<W: Write> EsdkWriter<W> {
    /// Writes the header (with its tag) and returns the writer.
    pub(crate) fn start(
        mut out: W,
        header: Vec<u8>,
        cipher: Cipher,
        message_id: [u8; 32],
        frame_len: u32,
        mut signer: Option<Signer>,
        rng: Arc<dyn RandomSource>,
    ) -> crate::Result<Self> {
        out.write_all(&header)
            .map_err(|e| Error::Other(Arc::new(e)))?;
        if let Some(s) = signer.as_mut() {
            s.update(&header);
        }
        let f = frame_len as usize;
        Ok(EsdkWriter {
            out: Some(out),
            cipher,
            message_id,
            frame_len: f,
            // Filled to at most one frame, so never reallocated: plaintext
            // is never left behind in freed memory.
            buf: Zeroizing::new(Vec::with_capacity(f)),
            frame: Vec::with_capacity(f.min(1 << 20) + 64),
            seq: 1,
            signer,
            rng,
            failed: false,
        })
    }

    fn emit(&mut self, is_final: bool) -> io::Result<()> {
        if !is_final && self.seq == FINAL_MARKER {
            return Err(io::Error::other(
                "too many frames for an ESDK message: use a larger frame length",
            ));
        }
        self.frame.clear();
        format::seal_frame(
            &self.cipher,
            &self.message_id,
            self.seq,
            is_final,
            &self.buf,
            &mut self.frame,
        )
        .map_err(io_err)?;
        if let Some(s) = self.signer.as_mut() {
            s.update(&self.frame);
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already finished"))?;
        out.write_all(&self.frame)?;
        self.buf.zeroize();
        self.seq = self.seq.wrapping_add(1);
        Ok(())
    }

    /// Writes the final frame and the footer, flushes, and returns the
    /// inner writer.
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
        if let Some(s) = self.signer.take() {
            let footer = s.footer(self.rng.as_ref()).map_err(io_err)?;
            out.write_all(&footer)?;
        }
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Write for EsdkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier write failed; the message is incomplete",
            ));
        }
        let mut rest = data;
        while !rest.is_empty() {
            let room = self.frame_len - self.buf.len();
            let (piece, tail) = rest.split_at(room.min(rest.len()));
            self.buf.extend_from_slice(piece);
            rest = tail;
            // A full frame is written at once; the final frame (written by
            // `finish`) holds the last 0..frame_len bytes, as the ESDK does.
            if self.buf.len() == self.frame_len
                && let Err(e) = self.emit(false)
            {
                self.failed = true;
                return Err(e);
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

impl<W: Write> fmt::Debug for EsdkWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EsdkWriter")
            .field("frame_len", &self.frame_len)
            .field("frames_written", &self.seq.wrapping_sub(1))
            .field("signed", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads `n` bytes exactly, growing `buf` only as data arrives (a header
/// may declare lengths far beyond the input).
fn read_n<R: Read>(r: &mut R, n: usize, buf: &mut Vec<u8>) -> crate::Result<()> {
    let start = buf.len();
    let got = r
        .take(n as u64)
        .read_to_end(buf)
        .map_err(|_| Error::DecryptionFailed)?;
    if got != n || buf.len() != start + n {
        return Err(Error::DecryptionFailed);
    }
    Ok(())
}

/// Reads exactly the header bytes of an ESDK message (authentication
/// included), nothing of the body. Malformed input is the opaque error.
pub(crate) fn read_header<R: Read>(r: &mut R) -> crate::Result<Vec<u8>> {
    fn u16_at(h: &[u8]) -> usize {
        let n = h.len();
        usize::from(u16::from_be_bytes([h[n - 2], h[n - 1]]))
    }
    let mut h = Vec::with_capacity(512);
    read_n(r, 1, &mut h)?;
    let version = h[0];
    if version == 0x01 {
        read_n(r, 1, &mut h)?;
    } else if version != 0x02 {
        return Err(Error::DecryptionFailed);
    }
    read_n(r, 2, &mut h)?;
    let n = h.len();
    let suite = EsdkSuite::from_id(u16::from_be_bytes([h[n - 2], h[n - 1]]))
        .ok_or(Error::DecryptionFailed)?;
    read_n(r, suite.message_id_len() + 2, &mut h)?;
    let ctx_len = u16_at(&h);
    read_n(r, ctx_len + 2, &mut h)?;
    let count = u16_at(&h);
    for _ in 0..count {
        for _ in 0..3 {
            read_n(r, 2, &mut h)?;
            let len = u16_at(&h);
            read_n(r, len, &mut h)?;
        }
    }
    // content type, [v1: reserved u32, IV length u8], frame length
    read_n(r, if version == 0x01 { 10 } else { 5 }, &mut h)?;
    let mut rest = TAG_LEN;
    if suite.is_committing() {
        rest += 32;
    }
    if version == 0x01 {
        rest += NONCE_LEN;
    }
    read_n(r, rest, &mut h)?;
    Ok(h)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Frames,
    Done,
    Failed,
}

/// Decrypts an ESDK message from a stream (from
/// [`crate::Client::esdk_open_reader`]).
///
/// What is released when:
///
/// - **Regular frames** are released as soon as their tag verifies: they
///   are authentic under the message's committed data key, so they were
///   written by someone who could unwrap that data key.
/// - **The final frame** is released only at the end of the message: for a
///   signed suite (`0x0578`, `0x0378`) only after the footer's ECDSA
///   signature over the whole message verifies, and in every case only
///   once nothing follows the message.
///
/// For a signed suite the signature is what shows that the *writer* held
/// the signing key (not merely the data key), so the message as a whole is
/// authentic only when `read` returns `Ok(0)`. A tampered, truncated or
/// unsigned stream fails at its end with `ErrorKind::InvalidData`. Do not
/// act on the data until then if that matters; use
/// [`crate::Client::esdk_open`] to release nothing before everything is
/// checked.
pub struct EsdkReader<R: Read> {
    inner: R,
    suite: EsdkSuite,
    cipher: Cipher,
    message_id: Vec<u8>,
    framed: bool,
    frame_len: usize,
    expected: u32,
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    ct: Vec<u8>,
    state: ReadState,
    context: EncryptionContext,
    key_id: KeyId,
    key_version: u32,
    verifier: Option<(Verifier, sha2::Sha384)>,
}

impl<R: Read> EsdkReader<R> {
    /// A reader positioned after the header `header_bytes` (already
    /// authenticated, parsed as `h`).
    pub(crate) fn new(
        inner: R,
        h: &Header<'_>,
        header_bytes: &[u8],
        cipher: Cipher,
        key_id: KeyId,
        key_version: u32,
    ) -> crate::Result<Self> {
        let verifier = if h.suite.is_signed() {
            let mut hash = sha2::Sha384::new();
            hash.update(header_bytes);
            Some((Verifier::from_context(&h.context)?, hash))
        } else {
            None
        };
        let f = h.frame_len as usize;
        Ok(EsdkReader {
            inner,
            suite: h.suite,
            cipher,
            message_id: h.message_id.to_vec(),
            framed: h.framed,
            frame_len: f,
            expected: 1,
            plain: Zeroizing::new(Vec::new()),
            pos: 0,
            ct: Vec::with_capacity(f.min(1 << 20) + TAG_LEN),
            state: ReadState::Frames,
            context: h.context.clone(),
            key_id,
            key_version,
            verifier,
        })
    }

    /// The message's whole encryption context.
    pub fn context(&self) -> &EncryptionContext {
        &self.context
    }

    /// The strongroom key that unwrapped the data key.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Its version.
    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// The message's suite.
    pub fn suite(&self) -> EsdkSuite {
        self.suite
    }

    /// Reads `n` message bytes into `self.ct` (replacing it), adding them
    /// to the signed hash.
    fn read_signed(&mut self, n: usize) -> crate::Result<()> {
        self.ct.clear();
        read_n(&mut self.inner, n, &mut self.ct)?;
        if let Some((_, hash)) = self.verifier.as_mut() {
            hash.update(&self.ct);
        }
        Ok(())
    }

    fn u32_signed(&mut self) -> crate::Result<u32> {
        self.read_signed(4)?;
        let b: [u8; 4] = self.ct[..]
            .try_into()
            .map_err(|_| Error::DecryptionFailed)?;
        Ok(u32::from_be_bytes(b))
    }

    fn iv_signed(&mut self) -> crate::Result<[u8; NONCE_LEN]> {
        self.read_signed(NONCE_LEN)?;
        self.ct[..].try_into().map_err(|_| Error::DecryptionFailed)
    }

    /// After the last body byte: verifies the footer (signed suites) and
    /// that nothing follows.
    fn finish_message(&mut self) -> crate::Result<()> {
        if let Some((verifier, hash)) = self.verifier.take() {
            let mut len = Vec::with_capacity(2);
            read_n(&mut self.inner, 2, &mut len)?;
            let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let mut sig = Vec::with_capacity(n.min(256));
            read_n(&mut self.inner, n, &mut sig)?;
            verifier.verify(hash, &sig)?;
        }
        let mut extra = [0u8; 1];
        loop {
            match self.inner.read(&mut extra) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(Error::DecryptionFailed),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Error::DecryptionFailed),
            }
        }
    }

    fn next_frame(&mut self) -> crate::Result<()> {
        self.plain.zeroize();
        self.pos = 0;
        if !self.framed {
            let iv = self.iv_signed()?;
            self.read_signed(8)?;
            let len: [u8; 8] = self.ct[..]
                .try_into()
                .map_err(|_| Error::DecryptionFailed)?;
            let len = usize::try_from(u64::from_be_bytes(len))
                .ok()
                .and_then(|l| l.checked_add(TAG_LEN))
                .ok_or(Error::DecryptionFailed)?;
            self.read_signed(len)?;
            let aad = format::body_aad(
                &self.message_id,
                format::SINGLE_BLOCK_STRING,
                1,
                (len - TAG_LEN) as u64,
            );
            self.cipher
                .open_append(&iv, &aad, &self.ct, &mut self.plain)?;
            self.finish_message()?;
            self.state = ReadState::Done;
            return Ok(());
        }
        let marker = self.u32_signed()?;
        if marker == FINAL_MARKER {
            let seq = self.u32_signed()?;
            let iv = self.iv_signed()?;
            let len = self.u32_signed()? as usize;
            if seq != self.expected || len > self.frame_len {
                return Err(Error::DecryptionFailed);
            }
            self.read_signed(len + TAG_LEN)?;
            format::open_frame(
                self.suite,
                &self.cipher,
                &self.message_id,
                seq,
                true,
                &iv,
                &self.ct,
                &mut self.plain,
            )?;
            // The final frame is held back until the signature (if any)
            // verifies and the stream ends.
            self.finish_message()?;
            self.state = ReadState::Done;
            return Ok(());
        }
        if marker != self.expected {
            return Err(Error::DecryptionFailed);
        }
        let iv = self.iv_signed()?;
        self.read_signed(self.frame_len + TAG_LEN)?;
        format::open_frame(
            self.suite,
            &self.cipher,
            &self.message_id,
            marker,
            false,
            &iv,
            &self.ct,
            &mut self.plain,
        )?;
        self.expected = marker + 1;
        Ok(())
    }
}

impl<R: Read> Read for EsdkReader<R> {
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
                        self.plain.zeroize();
                        return Err(io_err(e));
                    }
                }
            }
        }
    }
}

impl<R: Read> fmt::Debug for EsdkReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EsdkReader")
            .field("suite", &self.suite)
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field("frame_len", &self.frame_len)
            .finish_non_exhaustive()
    }
}
