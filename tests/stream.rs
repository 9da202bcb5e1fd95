//! Streaming seal/open: same format as seal/open, bounded memory, and the
//! same rejection of tampering and truncation.

use std::io::{Read, Write};
use strongroom::key::SymmetricAlgorithm;
use strongroom::{
    CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal, SealOptions,
};

fn setup() -> (strongroom::Client, String) {
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
    (0..n).map(|i| (i * 7 % 256) as u8).collect()
}

fn stream_seal(c: &strongroom::Client, key: &str, d: &[u8], frame: u32, piece: usize) -> Vec<u8> {
    let mut w = c
        .seal_writer(key, &ctx(), SealOptions::new().frame_len(frame), Vec::new())
        .unwrap();
    for p in d.chunks(piece.max(1)) {
        w.write_all(p).unwrap();
    }
    w.finish().unwrap()
}

fn stream_open(c: &strongroom::Client, m: &[u8], piece: usize) -> std::io::Result<Vec<u8>> {
    let mut r = c
        .open_reader(m, &ctx())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; piece];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn stream_and_in_memory_interoperate() {
    let (c, key) = setup();
    for (n, frame, piece) in [
        (0usize, 16u32, 1usize),
        (1, 16, 1),
        (16, 16, 5),
        (17, 16, 16),
        (1000, 64, 33),
        (200_000, 65_536, 4096),
    ] {
        let d = data(n);
        let streamed = stream_seal(&c, &key, &d, frame, piece);
        assert_eq!(
            c.open(&streamed, &ctx()).unwrap().plaintext.expose_secret(),
            &d[..]
        );
        assert_eq!(stream_open(&c, &streamed, piece + 3).unwrap(), d);
        let sealed = c
            .seal_with(&key, &d, &ctx(), SealOptions::new().frame_len(frame))
            .unwrap();
        assert_eq!(sealed.len(), streamed.len(), "same layout for {n} bytes");
        assert_eq!(stream_open(&c, &sealed, 7).unwrap(), d);
    }
}

#[test]
fn chacha_streams() {
    let ring = KeyRing::in_memory();
    let c = ring.client(Principal::user("alice").unwrap());
    let key = c
        .create_key(
            KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305),
            CreateKeyOptions::new(),
        )
        .unwrap();
    let d = data(5000);
    let m = stream_seal(&c, key.as_str(), &d, 100, 77);
    assert_eq!(stream_open(&c, &m, 64).unwrap(), d);
}

#[test]
fn reader_reports_key_and_context() {
    let (c, key) = setup();
    let m = stream_seal(&c, &key, b"hi", 16, 2);
    let r = c.open_reader(&m[..], &ctx()).unwrap();
    assert_eq!(r.key_id().as_str(), key);
    assert_eq!(r.key_version(), 1);
    assert_eq!(r.context(), &ctx());
}

#[test]
fn truncation_fails_at_the_end() {
    let (c, key) = setup();
    let d = data(100);
    let m = stream_seal(&c, &key, &d, 16, 10);
    for cut in 0..m.len() {
        assert!(stream_open(&c, &m[..cut], 8).is_err(), "cut at {cut}");
    }
    let mut longer = m.clone();
    longer.push(1);
    assert!(stream_open(&c, &longer, 8).is_err());
}

#[test]
fn every_bit_flip_fails() {
    let (c, key) = setup();
    let m = stream_seal(&c, &key, &data(40), 16, 9);
    for i in 0..m.len() * 8 {
        let mut b = m.clone();
        b[i / 8] ^= 1 << (i % 8);
        assert!(stream_open(&c, &b, 8).is_err(), "bit {i}");
    }
}

#[test]
fn wrong_context_is_opaque() {
    let (c, key) = setup();
    let m = stream_seal(&c, &key, b"x", 16, 1);
    let err = c
        .open_reader(&m[..], &EncryptionContext::new())
        .unwrap_err();
    assert!(matches!(err, Error::DecryptionFailed));
}

#[test]
fn unfinished_writer_leaves_an_unopenable_message() {
    let (c, key) = setup();
    let mut out = Vec::new();
    {
        let mut w = c
            .seal_writer(&key, &ctx(), SealOptions::new().frame_len(16), &mut out)
            .unwrap();
        w.write_all(&data(100)).unwrap();
        // dropped without finish
    }
    assert!(c.open(&out, &ctx()).is_err());
    assert!(stream_open(&c, &out, 8).is_err());
}

#[test]
fn bad_frame_length_is_an_argument_error() {
    let (c, key) = setup();
    let err = c
        .seal_writer(&key, &ctx(), SealOptions::new().frame_len(0), Vec::new())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
}

/// A ring with `threads` frame threads and a seeded random source: two
/// such rings make the same key and the same messages.
fn seeded(threads: usize) -> (strongroom::Client, String) {
    let ring = KeyRing::builder()
        .random(std::sync::Arc::new(
            strongroom::hazmat::InsecureSeededRandom::new([9; 32]),
        ))
        .threads(threads)
        .build();
    let c = ring.client(Principal::user("alice").unwrap());
    let id = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    (c, id.to_string())
}

#[test]
fn frame_workers_write_the_same_bytes_and_read_every_message() {
    // Sizes around the frame count at which workers start (after two
    // frames), write pieces smaller and larger than a frame.
    for (n, frame, piece) in [
        (0usize, 16u32, 1usize),
        (32, 16, 16),
        (33, 16, 5),
        (48, 16, 100),
        (49, 16, 3),
        (1000, 16, 7),
        (4096, 64, 4096),
        (300_000, 4096, 10_000),
        (1 << 20, 65_536, 65_536),
        ((1 << 20) + 1, 65_536, 1_000_000),
    ] {
        let d = data(n);
        let (serial, key) = seeded(1);
        let reference = stream_seal(&serial, &key, &d, frame, piece);
        for threads in [2, 3, 4] {
            let (c, key2) = seeded(threads);
            assert_eq!(key, key2);
            let m = stream_seal(&c, &key2, &d, frame, piece);
            assert_eq!(m, reference, "{n} bytes, {threads} threads");
            for read_piece in [1usize, 7, 100_000] {
                if n > 100_000 && read_piece == 1 {
                    continue;
                }
                assert_eq!(stream_open(&c, &m, read_piece).unwrap(), d, "{n}/{threads}");
            }
        }
        assert_eq!(stream_open(&serial, &reference, 64).unwrap(), d);
    }
}

#[test]
fn frame_workers_release_nothing_after_a_bad_frame() {
    let (c, key) = seeded(3);
    let frame = 64usize;
    let d = data(frame * 20 + 10);
    let m = stream_seal(&c, &key, &d, frame as u32, 500);
    let body_start = m.len() - (20 * (4 + frame + 16) + (12 + 10 + 16));
    for bad_frame in [0usize, 2, 3, 4, 10, 19, 20] {
        let at = body_start + bad_frame * (4 + frame + 16) + 4 + 1;
        let mut b = m.clone();
        b[at] ^= 0x40;
        let mut r = c.open_reader(&b[..], &ctx()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 13];
        let err = loop {
            match r.read(&mut buf) {
                Ok(0) => panic!("frame {bad_frame}: a tampered message read to the end"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        // Exactly the frames before the bad one were released, in order.
        assert_eq!(got.len(), bad_frame * frame, "frame {bad_frame}");
        assert_eq!(got, d[..got.len()]);
        // And the reader stays failed.
        assert!(r.read(&mut buf).is_err());
    }
    // Truncated anywhere in the body, and a byte after the end: errors.
    for cut in (body_start..m.len()).step_by(37) {
        assert!(stream_open(&c, &m[..cut], 64).is_err(), "cut at {cut}");
    }
    let mut longer = m.clone();
    longer.push(0);
    assert!(stream_open(&c, &longer, 64).is_err());
}

/// A reader that returns at most `piece` bytes per call, as a pipe or a
/// socket may.
struct Trickle<'a> {
    data: &'a [u8],
    piece: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.piece).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn copy_from_and_copy_to_write_the_same_bytes_around_job_sizes() {
    // Workers start after two frames; jobs then hold 1, 2, 4, ... frames up
    // to about 1 MiB (16 frames of 64 KiB, 3 of 300,000 bytes), so frame
    // counts 2 + 1 + 2 + 4 + 8 + 16 = 33 and 33 + 16 = 49 end a job.
    for (frames, frame) in [
        (33usize, 65_536u32),
        (49, 65_536),
        (2 + 1 + 2 + 3 + 3, 300_000),
        (3, 4096),
    ] {
        for n in [
            frames * frame as usize - 1,
            frames * frame as usize,
            frames * frame as usize + 1,
        ] {
            let d = data(n);
            let (serial, key) = seeded(1);
            let reference = stream_seal(&serial, &key, &d, frame, 65_536);
            for threads in [1, 2, 3] {
                for piece in [n + 1, 50_000, 65_536 + 3] {
                    // A fresh seeded ring per message: the same key, data
                    // key and message id as the reference.
                    let (c, key2) = seeded(threads);
                    assert_eq!(key, key2);
                    let mut w = c
                        .seal_writer(
                            &key2,
                            &ctx(),
                            SealOptions::new().frame_len(frame),
                            Vec::new(),
                        )
                        .unwrap();
                    let copied = w.copy_from(&mut Trickle { data: &d, piece }).unwrap();
                    assert_eq!(copied, n as u64);
                    let m = w.finish().unwrap();
                    assert!(
                        m == reference,
                        "{n} bytes, {threads} threads, pieces {piece}"
                    );
                }
                let (c, _) = seeded(threads);
                for piece in [1000, 1 << 20] {
                    let mut r = c
                        .open_reader(
                            Trickle {
                                data: &reference,
                                piece,
                            },
                            &ctx(),
                        )
                        .unwrap();
                    let mut out = Vec::new();
                    assert_eq!(r.copy_to(&mut out).unwrap(), n as u64);
                    assert!(out == d, "{n} bytes, {threads} threads, pieces {piece}");
                    // The end stays the end.
                    assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
                }
            }
        }
    }
}

#[test]
fn copy_to_writes_exactly_the_frames_before_a_bad_one() {
    let frame = 4096usize;
    let (c, key) = seeded(2);
    // 2 + 1 + 2 + 4 + 8 + 16 + 32 + 64 + 128 + 256 frames: jobs of every size.
    let d = data(frame * 600 + 7);
    let m = stream_seal(&c, &key, &d, frame as u32, 100_000);
    let body_start = m.len() - (600 * (4 + frame + 16) + (12 + 7 + 16));
    for bad_frame in [2usize, 3, 5, 100, 255, 256, 300, 599, 600] {
        let mut b = m.clone();
        b[body_start + bad_frame * (4 + frame + 16) + 9] ^= 1;
        let mut r = c
            .open_reader(
                Trickle {
                    data: &b,
                    piece: 70_000,
                },
                &ctx(),
            )
            .unwrap();
        let mut out = Vec::new();
        let err = r.copy_to(&mut out).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(out.len(), bad_frame * frame, "frame {bad_frame}");
        assert!(out == d[..out.len()], "frame {bad_frame}");
        assert!(r.copy_to(&mut out).is_err());
    }
    // Truncated inside a later job, and a byte after the end.
    for cut in [1, 17, 4096, 50_000, 1 << 20] {
        let mut r = c.open_reader(&m[..m.len() - cut], &ctx()).unwrap();
        assert!(r.copy_to(&mut Vec::new()).is_err(), "cut {cut}");
    }
    let mut longer = m.clone();
    longer.push(0);
    let mut r = c.open_reader(&longer[..], &ctx()).unwrap();
    let mut out = Vec::new();
    assert!(r.copy_to(&mut out).is_err());
    assert_eq!(
        out.len(),
        600 * frame,
        "every regular frame, not the final one"
    );
}

#[test]
fn a_failing_source_leaves_the_writer_usable() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("source broke"));
            }
            let n = buf.len().min(self.0).min(1000);
            buf[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }
    for threads in [1, 2] {
        let (c, key) = seeded(threads);
        let mut w = c
            .seal_writer(&key, &ctx(), SealOptions::new().frame_len(256), Vec::new())
            .unwrap();
        let err = w.copy_from(&mut Failing(10_000)).unwrap_err();
        assert_eq!(err.to_string(), "source broke");
        w.write_all(&[7u8; 5]).unwrap();
        let m = w.finish().unwrap();
        assert_eq!(stream_open(&c, &m, 999).unwrap(), vec![7u8; 10_005]);
    }
}

#[test]
fn copy_to_a_writer_that_takes_little_at_a_time() {
    /// Takes at most 777 bytes per call, and only from the first slice of
    /// a vectored write (the default `write_vectored`).
    struct Dribble(Vec<u8>);
    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(777);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (c, key) = seeded(2);
    let d = data(300 * 1024 + 5);
    let m = stream_seal(&c, &key, &d, 1024, 10_000);
    let mut r = c.open_reader(&m[..], &ctx()).unwrap();
    let mut out = Dribble(Vec::new());
    assert_eq!(r.copy_to(&mut out).unwrap(), d.len() as u64);
    assert!(out.0 == d);
}
