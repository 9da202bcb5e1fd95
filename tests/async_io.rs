//! Async streams (feature `tokio`): the same format as the blocking API in
//! both directions, the same rejection of truncation and tampering, no
//! frame released before it verifies, and a slow backend call that does not
//! stop the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use strongroom::backend::{KeyBackend, MaterialId, MemoryBackend};
use strongroom::{
    Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal, Result,
    SealOptions, SecretBytes,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn setup() -> (Client, String) {
    let ring = KeyRing::in_memory();
    let c = ring.client(Principal::user("alice").unwrap());
    let id = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    (c, id.to_string())
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("file", "report.pdf")
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// Seals `d` through the async writer into `out`, in writes of `piece` bytes.
async fn async_seal_into<W: AsyncWrite + Unpin>(
    c: &Client,
    key: &str,
    d: &[u8],
    frame: u32,
    piece: usize,
    out: W,
) -> W {
    let mut w = c
        .seal_async_writer(key, &ctx(), SealOptions::new().frame_len(frame), out)
        .await
        .unwrap();
    for p in d.chunks(piece.max(1)) {
        w.write_all(p).await.unwrap();
    }
    w.shutdown().await.unwrap();
    w.into_inner().unwrap()
}

async fn async_seal(c: &Client, key: &str, d: &[u8], frame: u32, piece: usize) -> Vec<u8> {
    async_seal_into(c, key, d, frame, piece, Vec::new()).await
}

/// Opens through the async reader in reads of at most `piece` bytes;
/// returns what was released before the end or the error.
async fn async_open_from<R: AsyncRead + Unpin>(
    c: &Client,
    input: R,
    piece: usize,
) -> (Vec<u8>, std::io::Result<()>) {
    let mut out = Vec::new();
    let mut r = match c.open_async_reader(input, &ctx()).await {
        Ok(r) => r,
        Err(e) => return (out, Err(std::io::Error::other(e))),
    };
    let mut buf = vec![0u8; piece];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Err(e)),
        }
    }
}

async fn async_open(c: &Client, m: &[u8], piece: usize) -> std::io::Result<Vec<u8>> {
    let (out, r) = async_open_from(c, m, piece).await;
    r.map(|()| out)
}

const SIZES: [(usize, u32, usize); 7] = [
    (0, 16, 1),
    (1, 16, 1),
    (16, 16, 5),
    (17, 16, 16),
    (1000, 64, 33),
    (200_001, 65_536, 4093),
    (5 * 1024 * 1024 + 3, 65_536, 65_537),
];

#[tokio::test]
async fn async_to_async_round_trips() {
    let (c, key) = setup();
    for (n, frame, piece) in SIZES {
        let d = data(n);
        let m = async_seal(&c, &key, &d, frame, piece).await;
        assert_eq!(async_open(&c, &m, piece + 3).await.unwrap(), d, "{n} bytes");
    }
}

#[tokio::test]
async fn async_and_sync_are_the_same_format() {
    let (c, key) = setup();
    for (n, frame, piece) in SIZES {
        let d = data(n);
        let opts = SealOptions::new().frame_len(frame);
        // async -> sync: in-memory open and the blocking stream reader.
        let m = async_seal(&c, &key, &d, frame, piece).await;
        assert_eq!(
            c.open(&m, &ctx()).unwrap().plaintext.expose_secret(),
            &d[..]
        );
        let mut r = c.open_reader(&m[..], &ctx()).unwrap();
        let mut via_sync = Vec::new();
        std::io::Read::read_to_end(&mut r, &mut via_sync).unwrap();
        assert_eq!(via_sync, d);
        // The same layout as `seal_with` (only ids, keys and tags differ).
        let sealed = c.seal_with(&key, &d, &ctx(), opts).unwrap();
        assert_eq!(sealed.len(), m.len(), "same layout for {n} bytes");
        // sync -> async: `seal_with` and the blocking writer.
        assert_eq!(async_open(&c, &sealed, 7).await.unwrap(), d);
        let mut w = c.seal_writer(&key, &ctx(), opts, Vec::new()).unwrap();
        std::io::Write::write_all(&mut w, &d).unwrap();
        let streamed = w.finish().unwrap();
        assert_eq!(async_open(&c, &streamed, 4096).await.unwrap(), d);
    }
}

#[tokio::test]
async fn through_a_small_pipe_with_backpressure() {
    // A 1 KiB duplex pipe: writes and reads return Pending again and again,
    // so every partial-progress path of both adapters runs.
    let (c, key) = setup();
    let d = data(300_007);
    let (tx, rx) = tokio::io::duplex(1024);
    let writer = {
        let (c, key, d) = (c.clone(), key.clone(), d.clone());
        tokio::spawn(async move {
            async_seal_into(&c, &key, &d, 4096, 777, tx).await;
        })
    };
    let (out, result) = async_open_from(&c, rx, 1000).await;
    writer.await.unwrap();
    result.unwrap();
    assert_eq!(out, d);
}

#[tokio::test]
async fn every_truncation_fails_and_never_looks_like_the_end() {
    let (c, key) = setup();
    let d = data(40);
    let m = async_seal(&c, &key, &d, 16, 3).await;
    for cut in 0..m.len() {
        let (released, result) = async_open_from(&c, &m[..cut], 5).await;
        assert!(result.is_err(), "a message cut at {cut} must fail");
        // Only whole, verified frames (16 bytes each) were released.
        assert_eq!(released.len() % 16, 0, "cut at {cut}");
        assert_eq!(released, d[..released.len()]);
    }
    // A large message cut mid-frame and at a frame boundary.
    let big = data(5 * 1024 * 1024);
    let m = async_seal(&c, &key, &big, 65_536, 65_537).await;
    let header = m.len() - (79 * (4 + 65_536 + 16)) - (12 + 65_536 + 16);
    for cut in [
        m.len() - 1,
        m.len() - 100,
        header + 4 + 65_536 + 16,
        header + 10,
    ] {
        let (released, result) = async_open_from(&c, &m[..cut], 8192).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "cut at {cut}");
        assert!(released.len() < big.len());
        assert_eq!(released, big[..released.len()]);
    }
}

#[tokio::test]
async fn every_flipped_byte_fails() {
    let (c, key) = setup();
    let d = data(40);
    let m = async_seal(&c, &key, &d, 16, 40).await;
    for i in 0..m.len() {
        let mut bad = m.clone();
        bad[i] ^= 0x01;
        let (released, result) = async_open_from(&c, &bad[..], 64).await;
        assert!(result.is_err(), "flipped byte {i} must fail");
        assert_eq!(released, d[..released.len()], "byte {i}");
    }
}

#[tokio::test]
async fn a_tampered_frame_is_never_released() {
    // Three frames of 16 bytes; flip a byte in the second frame's
    // ciphertext: the first frame is released, nothing of the second.
    let (c, key) = setup();
    let d = data(40);
    let m = async_seal(&c, &key, &d, 16, 40).await;
    let body = m.len() - (2 * (4 + 16 + 16) + (12 + 8 + 16));
    let second_frame_ct = body + (4 + 16 + 16) + 4 + 3;
    let mut bad = m.clone();
    bad[second_frame_ct] ^= 0x80;
    let (released, result) = async_open_from(&c, &bad[..], 64).await;
    assert!(result.is_err());
    assert_eq!(released, d[..16]);
    // Bytes after the final frame: the final frame's plaintext stays held.
    let mut long = m.clone();
    long.push(0);
    let (released, result) = async_open_from(&c, &long[..], 64).await;
    assert!(result.is_err());
    assert_eq!(released, d[..32]);
}

#[tokio::test]
async fn wrong_context_is_the_opaque_error() {
    let (c, key) = setup();
    let m = async_seal(&c, &key, b"secret", 16, 2).await;
    let wrong = EncryptionContext::new().with("file", "other.pdf");
    let err = c.open_async_reader(&m[..], &wrong).await.unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed), "{err:?}");
    // Garbage and an empty stream too.
    for input in [&b""[..], &b"SR\x02\x01garbage"[..], &[0u8; 200][..]] {
        let err = c.open_async_reader(input, &ctx()).await.unwrap_err();
        assert!(matches!(err, Error::DecryptionFailed), "{err:?}");
    }
}

#[tokio::test]
async fn an_unfinished_writer_leaves_an_unopenable_message() {
    let (c, key) = setup();
    let mut w = c
        .seal_async_writer(&key, &ctx(), SealOptions::new().frame_len(16), Vec::new())
        .await
        .unwrap();
    w.write_all(&data(100)).await.unwrap();
    w.flush().await.unwrap();
    let partial = w.get_ref().clone();
    assert!(partial.len() > 100, "header and full frames were written");
    let err = w.into_inner().unwrap_err();
    assert!(err.to_string().contains("shutdown"), "{err}");
    assert!(c.open(&partial, &ctx()).is_err());
    assert!(async_open(&c, &partial, 64).await.is_err());

    // After shutdown, writing is an error, not a silent second message.
    let mut w = c
        .seal_async_writer(&key, &ctx(), SealOptions::default(), Vec::new())
        .await
        .unwrap();
    w.write_all(b"done").await.unwrap();
    w.shutdown().await.unwrap();
    assert!(w.write_all(b"more").await.is_err());
    w.shutdown().await.unwrap();
    let m = w.into_inner().unwrap();
    assert_eq!(async_open(&c, &m, 64).await.unwrap(), b"done");
}

#[tokio::test]
async fn finish_keeps_the_inner_writer_open() {
    let (c, key) = setup();
    let (tx, mut rx) = tokio::io::duplex(1 << 20);
    let mut w = c
        .seal_async_writer(&key, &ctx(), SealOptions::default(), tx)
        .await
        .unwrap();
    w.write_all(b"first message").await.unwrap();
    let mut tx = w.finish().await.unwrap();
    // The same pipe carries more afterwards.
    tx.write_all(b"trailer").await.unwrap();
    drop(tx);
    let mut all = Vec::new();
    rx.read_to_end(&mut all).await.unwrap();
    let (m, trailer) = all.split_at(all.len() - 7);
    assert_eq!(trailer, b"trailer");
    assert_eq!(async_open(&c, m, 64).await.unwrap(), b"first message");
}

#[tokio::test]
async fn a_bad_frame_length_is_an_argument_error() {
    let (c, key) = setup();
    let err = c
        .seal_async_writer(&key, &ctx(), SealOptions::new().frame_len(0), Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[test]
fn outside_a_tokio_runtime_is_an_error_not_a_panic() {
    let (c, key) = setup();
    let err = block_on(c.seal_async_writer(&key, &ctx(), SealOptions::default(), Vec::new()))
        .unwrap_err();
    assert!(matches!(err, Error::Configuration(_)), "{err:?}");
    let m = c.seal(&key, b"x", &ctx()).unwrap();
    let err = block_on(c.open_async_reader(&m[..], &ctx())).unwrap_err();
    assert!(matches!(err, Error::Configuration(_)), "{err:?}");
}

/// A minimal executor that is not Tokio.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

// ---- the runtime is not blocked while a slow backend works -----------------

/// The memory backend, with every wrap and unwrap taking a while (as a
/// remote custodian or an HSM over the network would). Inline, a call
/// takes 200 ms; once `wait_for_ticks` is set, a call lasts until the
/// runtime's ticker has moved three times (at most 60 s, then it fails):
/// it can only finish if the runtime ran other tasks meanwhile, which
/// proves it without counting on how fast a loaded machine ticks.
#[derive(Debug)]
struct SlowBackend {
    inner: MemoryBackend,
    ticks: Arc<AtomicU64>,
    wait_for_ticks: AtomicBool,
}

impl SlowBackend {
    fn work(&self) -> Result<()> {
        if !self.wait_for_ticks.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            return Ok(());
        }
        let start = self.ticks.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.ticks.load(Ordering::SeqCst) < start + 3 {
            if Instant::now() > deadline {
                return Err(Error::Unavailable(
                    "the runtime ran no other task while the backend worked".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

impl KeyBackend for SlowBackend {
    fn name(&self) -> &str {
        "slow"
    }
    fn supports(&self, spec: KeySpec) -> bool {
        self.inner.supports(spec)
    }
    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        self.inner.generate(id, spec)
    }
    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        self.work()?;
        self.inner.encrypt(id, aad, plaintext)
    }
    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        self.work()?;
        self.inner.decrypt(id, aad, payload)
    }
    fn destroy(&self, id: &MaterialId) -> Result<()> {
        self.inner.destroy(id)
    }
    fn contains(&self, id: &MaterialId) -> Result<bool> {
        self.inner.contains(id)
    }
}

/// A task that counts 5 ms ticks on the current runtime, into `ticks`.
fn ticker(ticks: Arc<AtomicU64>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            ticks.fetch_add(1, Ordering::SeqCst);
        }
    });
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_backend_does_not_block_the_runtime() {
    let ticks = Arc::new(AtomicU64::new(0));
    let backend = Arc::new(SlowBackend {
        inner: MemoryBackend::new(),
        ticks: ticks.clone(),
        wait_for_ticks: AtomicBool::new(false),
    });
    let c = KeyRing::builder()
        .backend(backend.clone())
        .build()
        .client(Principal::service("app").unwrap());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    ticker(ticks.clone());
    // Let the ticker start.
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Control: the blocking call made inline holds the only runtime thread,
    // so the ticker cannot move while the backend sleeps.
    let before = ticks.load(Ordering::SeqCst);
    let w = c
        .seal_writer(&key, &ctx(), SealOptions::default(), Vec::new())
        .unwrap();
    assert_eq!(ticks.load(Ordering::SeqCst), before, "inline call blocks");
    drop(w);

    // From here on a backend call finishes only once the ticker moved.
    backend.wait_for_ticks.store(true, Ordering::SeqCst);
    // The async constructors: the ticker keeps ticking during the wrap.
    let before = ticks.load(Ordering::SeqCst);
    let mut w = c
        .seal_async_writer(&key, &ctx(), SealOptions::default(), Vec::new())
        .await
        .unwrap();
    let during_seal = ticks.load(Ordering::SeqCst) - before;
    assert!(
        during_seal >= 3,
        "the runtime ran other tasks during the wrap ({during_seal} ticks)"
    );
    w.write_all(b"hello").await.unwrap();
    w.shutdown().await.unwrap();
    let m = w.into_inner().unwrap();

    let before = ticks.load(Ordering::SeqCst);
    let mut r = c.open_async_reader(&m[..], &ctx()).await.unwrap();
    let during_open = ticks.load(Ordering::SeqCst) - before;
    assert!(
        during_open >= 3,
        "the runtime ran other tasks during the unwrap ({during_open} ticks)"
    );
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"hello");
}
