//! The envelope message (docs/FORMAT.md, "Envelope message").

use super::{EncryptionContext, MAGIC, Reader};
use crate::crypto::{Cipher, CryptoProvider, NONCE_LEN, TAG_LEN};
use crate::error::{Error, Result};
use crate::key::SymmetricAlgorithm;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Type byte of an envelope message.
pub(crate) const TYPE_MESSAGE: u8 = 0x02;
/// Format version of envelope messages written by this crate.
pub(crate) const VERSION_1: u8 = 0x01;
/// Body layout byte: framed.
pub(crate) const LAYOUT_FRAMED: u8 = 0x02;
pub(crate) use crate::limits::DEFAULT_FRAME_LEN;
pub(crate) use crate::limits::MAX_FRAME_LEN;
/// Marker that starts the final frame.
const FINAL_MARKER: u32 = 0xFFFF_FFFF;
/// Length of the message id.
pub(crate) const MESSAGE_ID_LEN: usize = 32;

const LABEL_BODY_KEY: &[u8] = b"strongroom/v1 body key";
const LABEL_COMMIT: &[u8] = b"strongroom/v1 commitment";

/// Options for [`crate::Client::seal_with`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SealOptions {
    /// Plaintext bytes per frame, 1 to [`MAX_FRAME_LEN`]. Default 64 KiB.
    pub frame_len: u32,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            frame_len: DEFAULT_FRAME_LEN,
        }
    }
}

impl SealOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the frame length.
    pub fn frame_len(mut self, len: u32) -> Self {
        self.frame_len = len;
        self
    }
}

/// A parsed, not yet authenticated, message header.
pub(crate) struct MessageHeader<'a> {
    pub suite: SymmetricAlgorithm,
    pub frame_len: u32,
    pub message_id: [u8; MESSAGE_ID_LEN],
    pub context: EncryptionContext,
    /// The context as stored: its canonical encoding
    /// ([`EncryptionContext::from_canonical_bytes`] accepts nothing else).
    pub context_bytes: &'a [u8],
    pub wrapped_keys: Vec<&'a [u8]>,
    pub commitment: [u8; 32],
    /// Every header byte before the header tag.
    pub authenticated: &'a [u8],
    pub header_tag: [u8; TAG_LEN],
    pub body: &'a [u8],
}

/// Keys derived from a data key for one message.
pub(crate) struct Derived {
    pub cipher: Cipher,
    pub commitment: Zeroizing<[u8; 32]>,
}

/// HKDF-SHA256 with the message id as salt and the data key as input:
/// one output keys the body AEAD, the other is the key commitment. Both
/// with `provider`'s primitives.
pub(crate) fn derive(
    provider: CryptoProvider,
    suite: SymmetricAlgorithm,
    message_id: &[u8; MESSAGE_ID_LEN],
    data_key: &[u8],
) -> Result<Derived> {
    let sid = [suite.suite_id()];
    let (body_key, commitment) = provider.hkdf_sha256_pair(
        message_id,
        data_key,
        &[LABEL_BODY_KEY, &sid],
        &[LABEL_COMMIT, &sid],
    )?;
    Ok(Derived {
        cipher: provider.cipher(suite, &body_key),
        commitment,
    })
}

fn nonce_for(seq: u32) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[8..].copy_from_slice(&seq.to_be_bytes());
    n
}

fn frame_aad(message_id: &[u8; MESSAGE_ID_LEN], is_final: bool, seq: u32, len: u64) -> [u8; 45] {
    let mut aad = [0u8; 45];
    aad[..32].copy_from_slice(message_id);
    aad[32] = u8::from(is_final);
    aad[33..37].copy_from_slice(&seq.to_be_bytes());
    aad[37..45].copy_from_slice(&len.to_be_bytes());
    aad
}

/// Number of regular (full) frames for `len` bytes: the final frame carries
/// the last 0..=frame_len bytes.
fn regular_frames(len: usize, frame_len: usize) -> usize {
    if len == 0 { 0 } else { (len - 1) / frame_len }
}

/// The room [`encode_header`] should leave for the body of `len` bytes of
/// data sealed in memory: the whole body for a message that stays on one
/// thread (the header's buffer becomes the message and never grows), none
/// for a large one, whose output is a fresh zeroed allocation that the
/// worker threads fault in, in parallel ([`append_body`]).
pub(crate) fn header_room(len: u64, frame_len: u32) -> usize {
    let body = body_size(len, frame_len);
    if body < PARALLEL_MIN_BYTES { body } else { 0 }
}

/// The size of the framed body (header tag included) of `len` bytes of
/// data. Saturates on lengths no message can have (the seal refuses those).
pub(crate) fn body_size(len: u64, frame_len: u32) -> usize {
    let f = u64::from(frame_len.max(1));
    let regular = if len == 0 { 0 } else { (len - 1) / f };
    let final_len = len - regular * f;
    let size = (TAG_LEN as u64)
        .saturating_add(regular.saturating_mul(4 + f + TAG_LEN as u64))
        .saturating_add(12 + final_len + TAG_LEN as u64);
    usize::try_from(size).unwrap_or(usize::MAX)
}

/// Writes the header fields up to and including the commitment, in a
/// buffer with `room` more bytes of capacity (the body that follows, see
/// [`header_room`], for a message whose data is in memory: the buffer then
/// never grows).
pub(crate) fn encode_header(
    suite: SymmetricAlgorithm,
    frame_len: u32,
    message_id: &[u8; MESSAGE_ID_LEN],
    context_bytes: &[u8],
    wrapped_keys: &[Vec<u8>],
    commitment: &[u8; 32],
    room: usize,
) -> Result<Vec<u8>> {
    let ctx_len = u16::try_from(context_bytes.len())
        .map_err(|_| Error::invalid("encryption context too large"))?;
    let count = u8::try_from(wrapped_keys.len())
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| Error::invalid("a message needs 1 to 255 wrapped keys"))?;
    let mut h = Vec::with_capacity(
        (128 + context_bytes.len() + wrapped_keys.len() * 128).saturating_add(room),
    );
    h.extend_from_slice(&MAGIC);
    h.push(TYPE_MESSAGE);
    h.push(VERSION_1);
    h.push(suite.suite_id());
    h.push(LAYOUT_FRAMED);
    h.extend_from_slice(&frame_len.to_be_bytes());
    h.extend_from_slice(message_id);
    h.extend_from_slice(&ctx_len.to_be_bytes());
    h.extend_from_slice(context_bytes);
    h.push(count);
    for w in wrapped_keys {
        let len = u16::try_from(w.len()).map_err(|_| Error::invalid("wrapped key too large"))?;
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(w);
    }
    h.extend_from_slice(commitment);
    Ok(h)
}

/// Encrypts `data` after `header` (which already ends in the commitment):
/// appends the header tag and the framed body.
pub(crate) fn encrypt_body(
    header: Vec<u8>,
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    frame_len: u32,
    data: &[u8],
    threads: usize,
) -> Result<Vec<u8>> {
    let mut out = header;
    append_body(&mut out, 0, derived, message_id, frame_len, data, threads)?;
    Ok(out)
}

/// Appends the header tag and the framed body to `out`, whose bytes from
/// `header_start` are the header. The buffer grows once, by exactly the
/// body's size: into a fresh zeroed allocation when it must grow, whose
/// pages the threads that write them fault in (so a large output is not
/// first written once by the calling thread alone).
pub(crate) fn append_body(
    out: &mut Vec<u8>,
    header_start: usize,
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    frame_len: u32,
    data: &[u8],
    threads: usize,
) -> Result<()> {
    check_frame_len(frame_len)?;
    let f = frame_len as usize;
    let n_regular = regular_frames(data.len(), f);
    if n_regular >= (FINAL_MARKER - 1) as usize {
        return Err(Error::invalid(
            "data too large for this frame length: use a larger frame length",
        ));
    }
    let stride = 4 + f + TAG_LEN;
    let final_len = data.len() - n_regular * f;
    let body = TAG_LEN + n_regular * stride + (4 + 4 + 4 + final_len + TAG_LEN);
    let tag = header_tag(derived, &out[header_start..])?;
    let base = out.len();
    grow_zeroed(out, base + body);
    let (tag_out, frames_out) = out[base..].split_at_mut(TAG_LEN);
    tag_out.copy_from_slice(&tag);
    let (regular_out, final_out) = frames_out.split_at_mut(n_regular * stride);
    let (regular_in, final_in) = data.split_at(n_regular * f);
    let workers = workers_for(threads, n_regular, data.len());
    let per = frames_per_task(n_regular, f, workers);
    let tasks: Vec<FramePart<'_>> = regular_out
        .chunks_mut(per * stride)
        .zip(regular_in.chunks(per * f))
        .enumerate()
        .map(|(t, p)| (t * per, p))
        .collect();
    run_tasks(tasks, workers, |(first, (dst, src))| {
        for (i, (slot, chunk)) in dst
            .chunks_exact_mut(stride)
            .zip(src.chunks_exact(f))
            .enumerate()
        {
            // Below 2^32 - 2 frames (checked above).
            let seq = (first + i + 1) as u32;
            seal_frame_to(derived, message_id, seq, false, chunk, slot)?;
        }
        Ok(())
    })
    .map_err(|e| e.unwrap_or_else(|| Error::invalid("a sealing thread failed")))?;
    // n_regular < 2^32 - 2 was checked above.
    let seq = n_regular as u32 + 1;
    seal_frame_to(derived, message_id, seq, true, final_in, final_out)
}

/// Grows `out` to `len` bytes (new bytes zero). When its capacity is too
/// small, the bytes move into a fresh zeroed allocation instead of being
/// reallocated and then zero-filled: a large allocation is fresh pages
/// from the OS, which are first touched (and faulted in) by the threads
/// that fill them. The old buffer is zeroized before it is freed (it may
/// hold a caller's plaintext).
fn grow_zeroed(out: &mut Vec<u8>, len: usize) {
    if out.capacity() >= len {
        out.resize(len, 0);
        return;
    }
    let mut fresh = vec![0u8; len];
    fresh[..out.len()].copy_from_slice(out);
    let mut old = std::mem::replace(out, fresh);
    zeroize::Zeroize::zeroize(&mut old);
}

/// Messages shorter than this stay on the caller's thread: below it, the
/// cost of starting threads is a noticeable part of the work.
pub(crate) const PARALLEL_MIN_BYTES: usize = 512 * 1024;

/// A task of the parallel paths: the index of its first frame, its part
/// of the output and its part of the input.
type FramePart<'a> = (usize, (&'a mut [u8], &'a [u8]));

/// Regular frames each thread handles at least.
const MIN_FRAMES_PER_WORKER: usize = 2;

/// How many threads work on a message of `len` bytes in `n_regular`
/// regular frames, given the ring's `threads` setting.
fn workers_for(threads: usize, n_regular: usize, len: usize) -> usize {
    if len < PARALLEL_MIN_BYTES {
        return 1;
    }
    threads.min(n_regular / MIN_FRAMES_PER_WORKER).max(1)
}

/// Frames per task: about [`super::frames::JOB_BYTES`] of data, and at
/// least four tasks per thread so that a thread slowed down by other work
/// on the machine leaves its share to the others.
fn frames_per_task(n_regular: usize, f: usize, workers: usize) -> usize {
    if workers <= 1 {
        return n_regular.max(1);
    }
    let balanced = n_regular.div_ceil(4 * workers);
    super::frames::frames_per_job(f, 1).min(balanced).max(1)
}

/// Runs `work` on every task, on `workers` threads: the calling thread
/// and `workers - 1` scoped threads, each taking the next task from a
/// shared queue until none is left (or one failed). `Err(Some(e))` is the
/// first error met, `Err(None)` a thread that panicked: a failure of one
/// thread never becomes a silent success. If threads cannot be started
/// the calling thread does every task.
fn run_tasks<T: Send>(
    tasks: Vec<T>,
    workers: usize,
    work: impl Fn(T) -> Result<()> + Sync,
) -> std::result::Result<(), Option<Error>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    if workers <= 1 {
        // The small-message path: no scope, no queue, no allocation.
        for task in tasks {
            work(task).map_err(Some)?;
        }
        return Ok(());
    }
    let failed = AtomicBool::new(false);
    let first_error = std::sync::Mutex::new(None);
    let queue = std::sync::Mutex::new(tasks.into_iter());
    let run = || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while !failed.load(Ordering::Relaxed) {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some(task) = next else { return };
                if let Err(e) = work(task) {
                    failed.store(true, Ordering::Relaxed);
                    let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert(e);
                    return;
                }
            }
        }));
        if outcome.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..workers)
            .map_while(|_| {
                std::thread::Builder::new()
                    .name("strongroom-frames".into())
                    .spawn_scoped(s, run)
                    .ok()
            })
            .collect();
        run();
        for h in helpers {
            if h.join().is_err() {
                failed.store(true, Ordering::Relaxed);
            }
        }
    });
    if !failed.load(Ordering::Relaxed) {
        return Ok(());
    }
    Err(first_error.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// The one frame-length rule: 1 to [`MAX_FRAME_LEN`] bytes.
pub(crate) fn check_frame_len(frame_len: u32) -> Result<()> {
    if frame_len == 0 || frame_len > MAX_FRAME_LEN {
        return Err(Error::invalid(format!(
            "frame length must be 1 to {MAX_FRAME_LEN} bytes"
        )));
    }
    Ok(())
}

/// The header tag: AEAD of the empty string under the body key, nonce 0,
/// with every header byte before the tag as associated data.
pub(crate) fn header_tag(derived: &Derived, header: &[u8]) -> Result<[u8; TAG_LEN]> {
    derived.cipher.seal_in_place(&nonce_for(0), header, &mut [])
}

/// Appends one frame (regular or final) holding `chunk` to `out`.
pub(crate) fn seal_frame(
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    seq: u32,
    is_final: bool,
    chunk: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    // Regular frames 1..=2^32-3, the final frame at most 2^32-2 (readers
    // enforce the same bounds).
    let max = if is_final {
        FINAL_MARKER - 1
    } else {
        FINAL_MARKER - 2
    };
    if seq == 0 || seq > max {
        return Err(Error::invalid("too many frames: use a larger frame length"));
    }
    let len = u32::try_from(chunk.len()).map_err(|_| Error::invalid("frame too large"))?;
    if is_final {
        out.extend_from_slice(&FINAL_MARKER.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.extend_from_slice(&seq.to_be_bytes());
    }
    let aad = frame_aad(message_id, is_final, seq, u64::from(len));
    derived
        .cipher
        .seal_append(&nonce_for(seq), &aad, chunk, out)
}

/// Writes one frame (regular or final) holding `chunk` into `slot`, which
/// is exactly the frame's size (header, `chunk.len()`, tag): the bytes of
/// [`seal_frame`], encrypted straight from `chunk` into place.
pub(crate) fn seal_frame_to(
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    seq: u32,
    is_final: bool,
    chunk: &[u8],
    slot: &mut [u8],
) -> Result<()> {
    let (head, h, len) = frame_head(seq, is_final, chunk.len())?;
    if slot.len() != h + chunk.len() + TAG_LEN {
        return Err(Error::invalid("internal: frame slot of the wrong size"));
    }
    let (slot_head, rest) = slot.split_at_mut(h);
    slot_head.copy_from_slice(&head[..h]);
    let (body, tag_out) = rest.split_at_mut(chunk.len());
    let aad = frame_aad(message_id, is_final, seq, u64::from(len));
    let tag = derived.cipher.seal_to(&nonce_for(seq), &aad, chunk, body)?;
    tag_out.copy_from_slice(&tag);
    Ok(())
}

/// Seals one frame in place: `slot` is the frame's header room (4 bytes
/// for a regular frame, 12 for the final one), its plaintext, then 16
/// bytes for the tag. The bytes are then exactly those of [`seal_frame`].
pub(crate) fn seal_frame_slot(
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    seq: u32,
    is_final: bool,
    slot: &mut [u8],
) -> Result<()> {
    let h = if is_final { 12 } else { 4 };
    let n = slot
        .len()
        .checked_sub(h + TAG_LEN)
        .ok_or_else(|| Error::invalid("internal: frame slot too short"))?;
    let (head, _, len) = frame_head(seq, is_final, n)?;
    let (slot_head, rest) = slot.split_at_mut(h);
    slot_head.copy_from_slice(&head[..h]);
    let (body, tag_out) = rest.split_at_mut(n);
    let aad = frame_aad(message_id, is_final, seq, u64::from(len));
    let tag = derived.cipher.seal_in_place(&nonce_for(seq), &aad, body)?;
    tag_out.copy_from_slice(&tag);
    Ok(())
}

/// A frame's header (4 bytes regular, 12 final) and its length field,
/// with the sequence-number bounds every writer applies.
fn frame_head(seq: u32, is_final: bool, len: usize) -> Result<([u8; 12], usize, u32)> {
    let max = if is_final {
        FINAL_MARKER - 1
    } else {
        FINAL_MARKER - 2
    };
    if seq == 0 || seq > max {
        return Err(Error::invalid("too many frames: use a larger frame length"));
    }
    let len = u32::try_from(len).map_err(|_| Error::invalid("frame too large"))?;
    let mut head = [0u8; 12];
    if is_final {
        head[..4].copy_from_slice(&FINAL_MARKER.to_be_bytes());
        head[4..8].copy_from_slice(&seq.to_be_bytes());
        head[8..].copy_from_slice(&len.to_be_bytes());
        Ok((head, 12, len))
    } else {
        head[..4].copy_from_slice(&seq.to_be_bytes());
        Ok((head, 4, len))
    }
}

/// Opens one frame in place: `slot` holds `ciphertext || tag` and ends up
/// holding the plaintext then the (verified) tag. On failure what it held
/// is wiped. Every failure is the opaque error.
pub(crate) fn open_frame_slot(
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    seq: u32,
    is_final: bool,
    slot: &mut [u8],
) -> Result<()> {
    let len = slot
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(Error::DecryptionFailed)?;
    let aad = frame_aad(message_id, is_final, seq, len as u64);
    let (body, tag) = slot.split_at_mut(len);
    let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::DecryptionFailed)?;
    if !derived
        .cipher
        .open_in_place(&nonce_for(seq), &aad, body, &tag)
    {
        zeroize::Zeroize::zeroize(slot);
        return Err(Error::DecryptionFailed);
    }
    Ok(())
}

/// Decrypts one frame's `ciphertext || tag`, appending the plaintext to `out`.
pub(crate) fn open_frame(
    derived: &Derived,
    message_id: &[u8; MESSAGE_ID_LEN],
    seq: u32,
    is_final: bool,
    ct_and_tag: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let len = ct_and_tag
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(Error::DecryptionFailed)? as u64;
    let aad = frame_aad(message_id, is_final, seq, len);
    derived
        .cipher
        .open_append(&nonce_for(seq), &aad, ct_and_tag, out)
}

/// The final-frame marker.
pub(crate) const FINAL: u32 = FINAL_MARKER;

/// Tag length, for the streaming module.
pub(crate) const TAG_LEN_PUB: usize = TAG_LEN;

/// Largest wrapped-key entry a reader accepts: a version 2 ciphertext blob
/// with a 255-byte key id and the largest backend payload (a version 1 blob
/// is always shorter).
pub(crate) const MAX_WRAPPED_LEN: usize = 6 + 255 + 4 + 2 + crate::backend::MAX_BACKEND_PAYLOAD;

/// Parses the header. Malformed input is the opaque decryption error.
pub(crate) fn parse_header(msg: &[u8]) -> Result<MessageHeader<'_>> {
    let mut r = Reader::new(msg);
    if r.array::<2>()? != MAGIC || r.u8()? != TYPE_MESSAGE || r.u8()? != VERSION_1 {
        return Err(Error::DecryptionFailed);
    }
    let suite = SymmetricAlgorithm::from_suite_id(r.u8()?).ok_or(Error::DecryptionFailed)?;
    if r.u8()? != LAYOUT_FRAMED {
        return Err(Error::DecryptionFailed);
    }
    let frame_len = r.u32()?;
    check_frame_len(frame_len).map_err(|_| Error::DecryptionFailed)?;
    let message_id = r.array::<MESSAGE_ID_LEN>()?;
    let ctx_len = r.u16()? as usize;
    let context_bytes = r.take(ctx_len)?;
    let context = EncryptionContext::from_canonical_bytes(context_bytes)
        .map_err(|_| Error::DecryptionFailed)?;
    let count = r.u8()?;
    if count == 0 {
        return Err(Error::DecryptionFailed);
    }
    let mut wrapped_keys = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = r.u16()? as usize;
        wrapped_keys.push(r.take(len)?);
    }
    let commitment = r.array::<32>()?;
    let authenticated = &msg[..r.pos()];
    let header_tag = r.array::<TAG_LEN>()?;
    let body = r.rest();
    Ok(MessageHeader {
        suite,
        frame_len,
        message_id,
        context,
        context_bytes,
        wrapped_keys,
        commitment,
        authenticated,
        header_tag,
        body,
    })
}

/// Recomputes the commitment from the data key (constant-time compare) and
/// verifies the header tag; returns the body cipher.
pub(crate) fn verify_header(
    provider: CryptoProvider,
    h: &MessageHeader<'_>,
    data_key: &[u8],
) -> Result<Derived> {
    let derived = derive(provider, h.suite, &h.message_id, data_key)?;
    if !bool::from(derived.commitment.ct_eq(&h.commitment)) {
        return Err(Error::DecryptionFailed);
    }
    let mut scratch = Vec::new();
    derived
        .cipher
        .open_append(&nonce_for(0), h.authenticated, &h.header_tag, &mut scratch)?;
    Ok(derived)
}

/// Decrypts every frame of an in-memory body.
pub(crate) fn decrypt_frames(
    h: &MessageHeader<'_>,
    derived: &Derived,
    threads: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(Vec::new());
    append_plaintext(h, derived, &mut out, threads)?;
    Ok(out)
}

/// Appends the authenticated plaintext of every frame to `out`. The buffer
/// grows once, by exactly the plaintext's size, before any decryption (the
/// plaintext is never reallocated, and so never left behind unzeroized;
/// a fresh allocation's pages are faulted in by the threads that decrypt
/// into them); on any failure what was appended is zeroized and removed,
/// and the error is the opaque one.
pub(crate) fn append_plaintext(
    h: &MessageHeader<'_>,
    derived: &Derived,
    out: &mut Vec<u8>,
    threads: usize,
) -> Result<()> {
    let start = out.len();
    let result = append_frames(h, derived, out, threads);
    if result.is_err() {
        zeroize::Zeroize::zeroize(&mut out[start..]);
        out.truncate(start);
    }
    result
}

/// Where the frames of a body are: `regular` full frames of `f` bytes, then
/// the final frame holding `final_len` bytes. Checks the whole layout (every
/// sequence number, the final marker, lengths, no trailing bytes) before any
/// decryption; anything else is the opaque error.
struct Layout {
    regular: usize,
    final_len: usize,
}

fn body_layout(body: &[u8], f: usize) -> Result<Layout> {
    let stride = 4 + f + TAG_LEN;
    let mut r = Reader::new(body);
    let mut expected: u32 = 1;
    loop {
        let marker = r.u32()?;
        if marker == FINAL_MARKER {
            let seq = r.u32()?;
            let len = r.u32()? as usize;
            if seq != expected || len > f {
                return Err(Error::DecryptionFailed);
            }
            r.take(len + TAG_LEN)?;
            if !r.is_empty() {
                return Err(Error::DecryptionFailed);
            }
            let regular = (expected - 1) as usize;
            debug_assert_eq!(body.len(), regular * stride + 12 + len + TAG_LEN);
            return Ok(Layout {
                regular,
                final_len: len,
            });
        }
        if marker != expected || expected >= FINAL_MARKER - 1 {
            return Err(Error::DecryptionFailed);
        }
        r.take(f + TAG_LEN)?;
        expected += 1;
    }
}

/// Decrypts the frames of `h` into `out`, on up to `threads` threads, each
/// decrypting tasks of consecutive frames straight from the body into its
/// part of the output. The caller zeroizes and removes what was appended
/// if this fails.
fn append_frames(
    h: &MessageHeader<'_>,
    derived: &Derived,
    out: &mut Vec<u8>,
    threads: usize,
) -> Result<()> {
    let f = h.frame_len as usize;
    let stride = 4 + f + TAG_LEN;
    let layout = body_layout(h.body, f)?;
    let n = layout.regular;
    let start = out.len();
    grow_zeroed(out, start + n * f + layout.final_len);
    let (regular_out, final_out) = out[start..].split_at_mut(n * f);
    let workers = workers_for(threads, n, n * f);
    let per = frames_per_task(n, f, workers);
    let tasks: Vec<FramePart<'_>> = regular_out
        .chunks_mut(per * f)
        .zip(h.body[..n * stride].chunks(per * stride))
        .enumerate()
        .map(|(t, p)| (t * per, p))
        .collect();
    let message_id = &h.message_id;
    run_tasks(tasks, workers, |(first, (dst, src))| {
        for (i, (plain, frame)) in dst
            .chunks_exact_mut(f)
            .zip(src.chunks_exact(stride))
            .enumerate()
        {
            // Below 2^32 - 2 frames (checked by `body_layout`).
            let seq = (first + i + 1) as u32;
            let (ct, tag) = frame[4..].split_at(f);
            let tag = <&[u8; TAG_LEN]>::try_from(tag).map_err(|_| Error::DecryptionFailed)?;
            let aad = frame_aad(message_id, false, seq, f as u64);
            if !derived
                .cipher
                .open_to(&nonce_for(seq), &aad, ct, plain, tag)
            {
                return Err(Error::DecryptionFailed);
            }
        }
        Ok(())
    })
    .map_err(|_| Error::DecryptionFailed)?;
    let fin = &h.body[n * stride + 12..];
    let (ct, tag) = fin.split_at(layout.final_len);
    let tag = <&[u8; TAG_LEN]>::try_from(tag).map_err(|_| Error::DecryptionFailed)?;
    let seq = n as u32 + 1;
    let aad = frame_aad(message_id, true, seq, layout.final_len as u64);
    if !derived
        .cipher
        .open_to(&nonce_for(seq), &aad, ct, final_out, tag)
    {
        return Err(Error::DecryptionFailed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(suite: SymmetricAlgorithm) -> (Derived, [u8; MESSAGE_ID_LEN]) {
        let id = [7u8; MESSAGE_ID_LEN];
        (
            derive(CryptoProvider::default(), suite, &id, &[9u8; 32]).unwrap(),
            id,
        )
    }

    fn sealed(threads: usize, suite: SymmetricAlgorithm, f: u32, data: &[u8]) -> Vec<u8> {
        let (d, id) = setup(suite);
        let ctx = EncryptionContext::new()
            .with("k", "v")
            .canonical_bytes()
            .unwrap();
        let header =
            encode_header(suite, f, &id, &ctx, &[vec![1, 2, 3]], &d.commitment, 0).unwrap();
        encrypt_body(header, &d, &id, f, data, threads).unwrap()
    }

    fn opened(threads: usize, msg: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let h = parse_header(msg)?;
        let d = verify_header(CryptoProvider::default(), &h, &[9u8; 32])?;
        decrypt_frames(&h, &d, threads)
    }

    #[test]
    fn parallel_and_sequential_frames_are_byte_identical() {
        for suite in [
            SymmetricAlgorithm::Aes256Gcm,
            SymmetricAlgorithm::ChaCha20Poly1305,
        ] {
            // Sizes around the parallel threshold and frame boundaries.
            for (f, len) in [
                (4096u32, 0),
                (4096, 10),
                (4096, 4096),
                (4096, 4097),
                (4096u32, PARALLEL_MIN_BYTES),
                (4096, PARALLEL_MIN_BYTES - 1),
                (1000, PARALLEL_MIN_BYTES + 4096 * 3 + 17),
                // Several tasks per thread, of a full job of frames and
                // of fewer (the last task shorter).
                (65_536, 64 * 65_536 + 1),
                (4096, (3 << 20) + 5),
                (300_000, 20 * 300_000),
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
                let one = sealed(1, suite, f, &data);
                for threads in [2, 3] {
                    assert_eq!(sealed(threads, suite, f, &data), one, "{f} {len} {threads}");
                    assert_eq!(opened(threads, &one).unwrap().as_slice(), &data[..]);
                }
                assert_eq!(opened(1, &one).unwrap().as_slice(), &data[..]);
            }
        }
    }

    #[test]
    fn a_flipped_bit_in_any_frame_fails_on_every_thread_count() {
        let f = 4096u32;
        let data = vec![0x42u8; PARALLEL_MIN_BYTES + 5000];
        let msg = sealed(1, SymmetricAlgorithm::Aes256Gcm, f, &data);
        let body_start = parse_header(&msg).unwrap().authenticated.len();
        // One position in every frame (marker, ciphertext and tag bytes),
        // and the last byte of the message.
        let stride = 4 + f as usize + TAG_LEN;
        let mut positions: Vec<usize> = (0..data.len() / f as usize)
            .step_by(16)
            .map(|i| body_start + TAG_LEN + i * stride + (i * 997) % stride)
            .collect();
        positions.push(msg.len() - 1);
        for (n, pos) in positions.into_iter().enumerate() {
            let mut bad = msg.clone();
            bad[pos] ^= 1 << (n % 8);
            for threads in [1, 3] {
                assert!(
                    matches!(opened(threads, &bad), Err(Error::DecryptionFailed)),
                    "flip at {pos} with {threads} threads"
                );
            }
        }
    }

    #[test]
    fn a_failed_open_leaves_the_output_as_it_was() {
        let data = vec![1u8; PARALLEL_MIN_BYTES * 2];
        let mut msg = sealed(1, SymmetricAlgorithm::Aes256Gcm, 4096, &data);
        let n = msg.len();
        msg[n / 2] ^= 0x80;
        let h = parse_header(&msg).unwrap();
        let d = verify_header(CryptoProvider::default(), &h, &[9u8; 32]).unwrap();
        let mut out = b"kept".to_vec();
        assert!(append_plaintext(&h, &d, &mut out, 4).is_err());
        assert_eq!(out, b"kept");
    }

    #[test]
    fn truncated_and_extended_bodies_fail() {
        let data = vec![3u8; PARALLEL_MIN_BYTES + 10];
        let msg = sealed(1, SymmetricAlgorithm::Aes256Gcm, 4096, &data);
        for cut in [1, TAG_LEN, 4096 + TAG_LEN + 4, msg.len() / 2] {
            assert!(opened(4, &msg[..msg.len() - cut]).is_err(), "cut {cut}");
        }
        let mut long = msg.clone();
        long.push(0);
        assert!(opened(4, &long).is_err());
    }
}
