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
