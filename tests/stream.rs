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
