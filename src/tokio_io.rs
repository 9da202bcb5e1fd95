//! Async streaming envelope messages for Tokio (feature `tokio`):
//! [`AsyncSealWriter`] (`AsyncWrite`) and [`AsyncOpenReader`] (`AsyncRead`).
//!
//! The same message format as [`Client::seal`], [`Client::seal_writer`] and
//! friends, byte for byte: a message sealed by any of them opens with any
//! opener, sync or async. The adapters are thin: the frame logic is the one
//! the blocking [`SealWriter`](crate::envelope::SealWriter) /
//! [`OpenReader`](crate::envelope::OpenReader) use.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal, SealOptions};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let ring = KeyRing::in_memory();
//! let app = ring.client(Principal::service("uploads")?);
//! app.create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/uploads"))?;
//! let ctx = EncryptionContext::new().with("file", "scan.pdf");
//!
//! // Any `AsyncWrite + Unpin`: a file, a socket, a `Vec<u8>`.
//! let mut w = app
//!     .seal_async_writer("alias/uploads", &ctx, SealOptions::default(), Vec::new())
//!     .await?;
//! w.write_all(b"page 1, page 2").await?;
//! w.shutdown().await?; // writes the final frame; without it nothing opens
//! let message = w.into_inner()?;
//!
//! let mut r = app.open_async_reader(&message[..], &ctx).await?;
//! let mut plaintext = Vec::new();
//! r.read_to_end(&mut plaintext).await?; // an error, never a short read, if truncated
//! assert_eq!(plaintext, b"page 1, page 2");
//! # Ok(()) }
//! ```
//!
//! ## What runs where
//!
//! - **Creating** a writer or reader calls the key backend (wrap or unwrap
//!   the data key), which may be slow: a PKCS#11 token, a remote custodian,
//!   a file keystore that re-reads its directory. [`Client::seal_async_writer`]
//!   and [`Client::open_async_reader`] run that step on Tokio's blocking
//!   pool (`spawn_blocking`), so the runtime's worker threads keep running
//!   other tasks meanwhile. They must be awaited inside a Tokio runtime (any
//!   flavor); elsewhere they return [`Error::Configuration`].
//! - **Frames** (at most [`SealOptions::frame_len`] bytes, 64 KiB by
//!   default) are encrypted and decrypted inline in `poll_write` /
//!   `poll_read`: a few tens of microseconds of CPU per 64 KiB frame, as
//!   any inline hashing or compression. Keep frames at or below the default
//!   if latency of other tasks matters.
//!
//! ## Calling the blocking API from async code
//!
//! Every other [`Client`] operation (`seal`, `open`, `encrypt`,
//! `create_key`, ...) is synchronous, and most of them call the key backend
//! (and a file keystore or audit log on disk). Called directly in an async
//! task they hold a runtime worker for as long as the backend takes, and on a
//! `current_thread` runtime they stop every other task. Run them on the
//! blocking pool; a [`Client`] is cheap to clone and `Send + Sync`:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};
//! # let ring = KeyRing::in_memory();
//! # let app = ring.client(Principal::service("billing")?);
//! # app.create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/invoices"))?;
//! let ctx = EncryptionContext::new().with("tenant", "acme");
//! let (client, c) = (app.clone(), ctx.clone());
//! let message = tokio::task::spawn_blocking(move || client.seal("alias/invoices", b"invoice #1", &c))
//!     .await??; // JoinError (a panic, or the runtime shutting down), then strongroom::Error
//! # let _ = message;
//! # Ok(()) }
//! ```
//!
//! Nothing here needs `tokio` features beyond `io-util` and `rt`.

use crate::envelope::message::TAG_LEN_PUB;
use crate::envelope::stream::{FrameSealer, OpenedStream, header_needs, io_err};
use crate::error::{Error, Result};
use crate::key::{KeyId, KeyRef};
use crate::{Client, EncryptionContext, SealOptions};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use zeroize::Zeroizing;

/// Runs a blocking call on Tokio's blocking pool. A panic in it is resumed
/// here, as if the call had been made inline.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let handle = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::Configuration(
            "strongroom's async streams must be awaited inside a Tokio runtime: \
             they run the key backend call on its blocking pool"
                .into(),
        )
    })?;
    match handle.spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Other(std::sync::Arc::new(io::Error::other(
            format!("the blocking key backend call did not complete: {e}"),
        )))),
    }
}

impl Client {
    /// Starts an async streaming envelope message written to `out`, as
    /// [`Client::seal_writer`]: the data key is generated and wrapped now
    /// (authorized as `GenerateDataKey`) on Tokio's blocking pool, then
    /// frames are encrypted as the returned writer fills. Finish with
    /// `shutdown().await` (or [`AsyncSealWriter::finish`] to keep `out`
    /// open): it writes the final frame, without which no reader opens the
    /// message.
    ///
    /// The header is written by the first `poll_write`, `poll_flush` or
    /// `poll_shutdown`. Must be awaited inside a Tokio runtime.
    pub async fn seal_async_writer<'k, W: AsyncWrite + Unpin>(
        &self,
        key: impl Into<KeyRef<'k>>,
        context: &EncryptionContext,
        options: SealOptions,
        out: W,
    ) -> Result<AsyncSealWriter<W>> {
        let key = key.into().as_str().to_owned();
        let (client, context) = (self.clone(), context.clone());
        let (header, sealer) =
            blocking(move || client.begin_stream(KeyRef::from(key.as_str()), &context, options))
                .await?;
        Ok(AsyncSealWriter {
            out,
            frame_capacity: sealer.frame_len() + 32,
            sealer,
            pending: header,
            written: 0,
            state: WriteState::Open,
        })
    }

    /// Opens an async streaming envelope message, as [`Client::open_reader`]:
    /// reads the header from `input`, then checks the context (it must equal
    /// the message's), unwraps the data key (authorized as `Decrypt`) and
    /// verifies the header on Tokio's blocking pool. Frames are verified and
    /// decrypted as the returned reader is read. Every failure is
    /// [`Error::DecryptionFailed`]. Must be awaited inside a Tokio runtime.
    pub async fn open_async_reader<R: AsyncRead + Unpin>(
        &self,
        mut input: R,
        context: &EncryptionContext,
    ) -> Result<AsyncOpenReader<R>> {
        let header = read_header(&mut input).await;
        let (client, context) = (self.clone(), context.clone());
        let opened = blocking(move || client.open_stream(header, &context)).await?;
        let f = opened.opener.frame_len();
        Ok(AsyncOpenReader {
            inner: input,
            opened,
            plain: Zeroizing::new(Vec::with_capacity(f)),
            pos: 0,
            ct: Vec::with_capacity(f + TAG_LEN_PUB),
            filled: 0,
            failed: false,
        })
    }
}

/// Reads exactly the header (the rules are [`header_needs`], shared with the
/// blocking reader).
async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>> {
    let mut h = Vec::with_capacity(256);
    while let Some(n) = header_needs(&h)? {
        let start = h.len();
        h.resize(start + n, 0);
        r.read_exact(&mut h[start..])
            .await
            .map_err(|_| Error::DecryptionFailed)?;
    }
    Ok(h)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WriteState {
    /// Taking data.
    Open,
    /// The final frame is sealed (in `pending`); draining and flushing.
    Finalizing,
    /// The final frame is written and `out` flushed.
    Finished,
    /// `out` is shut down too.
    ShutDown,
    /// A write or seal failed: the message is incomplete.
    Failed,
}

/// Encrypts an async stream into an envelope message, frame by frame
/// (`AsyncWrite`). Made by [`Client::seal_async_writer`].
///
/// Buffers at most two frames of plaintext (zeroized on drop) and one
/// frame of ciphertext. `poll_write` accepts data as soon as the previous
/// frame's ciphertext has been handed to the inner writer. `poll_shutdown`
/// writes the final frame, flushes and shuts the inner writer down;
/// [`AsyncSealWriter::finish`] does the same without the shutdown and
/// returns the inner writer. A writer dropped before either leaves a message
/// without its final frame, which every reader rejects.
pub struct AsyncSealWriter<W> {
    out: W,
    sealer: FrameSealer,
    /// Ciphertext (first the header) not yet accepted by `out`.
    pending: Vec<u8>,
    written: usize,
    frame_capacity: usize,
    state: WriteState,
}

impl<W: AsyncWrite + Unpin> AsyncSealWriter<W> {
    /// Hands `pending` to `out` until it has taken all of it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            match ready!(Pin::new(&mut self.out).poll_write(cx, &self.pending[self.written..])) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the inner writer accepted no bytes",
                    )));
                }
                Ok(n) => self.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.pending.clear();
        if self.pending.capacity() < self.frame_capacity {
            // The header was the first pending buffer; frames need more.
            self.pending.reserve_exact(self.frame_capacity);
        }
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn state_error(&self) -> io::Error {
        match self.state {
            WriteState::Failed => {
                io::Error::other("an earlier write failed; the message is incomplete")
            }
            _ => io::Error::other("the message is already finished"),
        }
    }

    /// Seals and writes the final frame, then flushes `out`.
    fn poll_finalize(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.state {
                WriteState::Open => {
                    ready!(self.poll_drain(cx))?;
                    self.sealer.seal_final(&mut self.pending).map_err(io_err)?;
                    self.state = WriteState::Finalizing;
                }
                WriteState::Finalizing => {
                    ready!(self.poll_drain(cx))?;
                    ready!(Pin::new(&mut self.out).poll_flush(cx))?;
                    self.state = WriteState::Finished;
                }
                WriteState::Finished | WriteState::ShutDown => return Poll::Ready(Ok(())),
                WriteState::Failed => return Poll::Ready(Err(self.state_error())),
            }
        }
    }

    /// Marks the writer failed if `r` is an error.
    fn track<T>(&mut self, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(_)) = &r {
            self.state = WriteState::Failed;
        }
        r
    }

    /// Writes the final frame and flushes, without shutting `out` down (a
    /// connection that carries more after the message); returns `out`.
    pub async fn finish(mut self) -> io::Result<W> {
        std::future::poll_fn(|cx| {
            let r = self.poll_finalize(cx);
            self.track(r)
        })
        .await?;
        Ok(self.out)
    }

    /// The inner writer, once the message is complete (after
    /// `shutdown().await`). Before that it is an error: the message would
    /// lack its final frame.
    pub fn into_inner(self) -> io::Result<W> {
        match self.state {
            WriteState::Finished | WriteState::ShutDown => Ok(self.out),
            _ => Err(io::Error::other(
                "the message is not finished: call shutdown().await (or finish()) first",
            )),
        }
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for AsyncSealWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.state != WriteState::Open {
            return Poll::Ready(Err(this.state_error()));
        }
        // The previous frame's ciphertext first: at most one frame waits.
        let drained = this.poll_drain(cx);
        ready!(this.track(drained))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = this.sealer.absorb(data);
        if let Err(e) = this.sealer.seal_ready(&mut this.pending) {
            this.state = WriteState::Failed;
            return Poll::Ready(Err(io_err(e)));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state == WriteState::Failed {
            return Poll::Ready(Err(this.state_error()));
        }
        let drained = this.poll_drain(cx);
        ready!(this.track(drained))?;
        let flushed = Pin::new(&mut this.out).poll_flush(cx);
        this.track(flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let finalized = this.poll_finalize(cx);
        ready!(this.track(finalized))?;
        if this.state == WriteState::ShutDown {
            return Poll::Ready(Ok(()));
        }
        let shut = Pin::new(&mut this.out).poll_shutdown(cx);
        ready!(this.track(shut))?;
        this.state = WriteState::ShutDown;
        Poll::Ready(Ok(()))
    }
}

impl<W> fmt::Debug for AsyncSealWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncSealWriter")
            .field("frame_len", &self.sealer.frame_len())
            .field("frames_sealed", &self.sealer.frames_sealed())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Decrypts an envelope message from an async stream (`AsyncRead`),
/// releasing each frame's plaintext only after its tag verifies. Made by
/// [`Client::open_async_reader`].
///
/// As with the blocking [`OpenReader`](crate::envelope::OpenReader), data
/// released before the end is authentic frame by frame, and the message is
/// known complete only at end of stream (a read that fills nothing): a
/// truncated message, or bytes after the final frame, fail with
/// `ErrorKind::InvalidData` instead, never with a clean end. The final
/// frame's plaintext is released only once the input has ended right after
/// it. Memory: one frame of plaintext (zeroized on drop) and one of
/// ciphertext.
pub struct AsyncOpenReader<R> {
    inner: R,
    opened: OpenedStream,
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    /// The bytes of the current step, `filled` of them read so far.
    ct: Vec<u8>,
    filled: usize,
    failed: bool,
}

impl<R> AsyncOpenReader<R> {
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
}

impl<R: AsyncRead + Unpin> AsyncOpenReader<R> {
    /// Reads and verifies until a frame's plaintext is in `plain` and may be
    /// released (for the final frame: until the input has ended after it).
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            let opener = &mut self.opened.opener;
            if opener.awaiting_end() {
                let mut one = [0u8; 1];
                let mut rb = ReadBuf::new(&mut one);
                ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))
                    .map_err(|_| Error::DecryptionFailed)?;
                return Poll::Ready(opener.at_end(rb.filled().is_empty()));
            }
            let want = opener.wanted();
            if self.filled == 0 {
                self.ct.resize(want, 0);
            }
            while self.filled < want {
                let mut rb = ReadBuf::new(&mut self.ct[self.filled..want]);
                ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))
                    .map_err(|_| Error::DecryptionFailed)?;
                match rb.filled().len() {
                    // The stream ended inside the message: truncated.
                    0 => return Poll::Ready(Err(Error::DecryptionFailed)),
                    n => self.filled += n,
                }
            }
            self.filled = 0;
            if opener.step(&self.ct, &mut self.plain)? {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncOpenReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // The final frame waits in `plain` until the end is confirmed.
            let held = this.opened.opener.awaiting_end();
            if !held && this.pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.pos);
                buf.put_slice(&this.plain[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.failed {
                return Poll::Ready(Err(io_err(Error::DecryptionFailed)));
            }
            if this.opened.opener.is_done() {
                return Poll::Ready(Ok(()));
            }
            if !held {
                this.plain.clear();
                this.pos = 0;
            }
            if let Err(e) = ready!(this.poll_frame(cx)) {
                this.failed = true;
                // Wipe, not just clear: nothing of a failed frame stays.
                zeroize::Zeroize::zeroize(&mut *this.plain);
                return Poll::Ready(Err(io_err(e)));
            }
        }
    }
}

impl<R> fmt::Debug for AsyncOpenReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncOpenReader")
            .field("key_id", &self.opened.key_id)
            .field("key_version", &self.opened.key_version)
            .field("frame_len", &self.opened.opener.frame_len())
            .finish_non_exhaustive()
    }
}
