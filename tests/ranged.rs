//! Ranged open (`open_range`, `open_range_reader`) and rewrap without
//! re-encryption (`rewrap_message`) on the in-memory ring.
//!
//! Byte offsets are computed here from docs/FORMAT.md, independently of the
//! crate's own parser.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;
use strongroom::audit::{MemorySink, Outcome};
use strongroom::clock::ManualClock;
use strongroom::envelope::{CiphertextInfo, inspect};
use strongroom::keyring::{RewrapOptions, VersionFloors};
use strongroom::policy::GrantRequest;
use strongroom::{
    Action, Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal,
    SealOptions, Timestamp,
};

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("tenant", "acme")
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

struct Setup {
    sink: Arc<MemorySink>,
    clock: Arc<ManualClock>,
    ring: KeyRing,
    admin: Client,
    key: String,
}

fn setup() -> Setup {
    let sink = Arc::new(MemorySink::new());
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let ring = KeyRing::builder()
        .audit_sink(sink.clone())
        .clock(clock.clone())
        .build();
    let admin = ring.client(p("role:admin"));
    let key = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    Setup {
        sink,
        clock,
        ring,
        admin,
        key,
    }
}

fn seal(c: &Client, key: &str, d: &[u8], frame: u32) -> Vec<u8> {
    c.seal_with(key, d, &ctx(), SealOptions::new().frame_len(frame))
        .unwrap()
}

/// Header length (tag included), from docs/FORMAT.md: 44 + C + 1 +
/// Σ(2 + W) + 32 + 16.
fn header_len(m: &[u8]) -> usize {
    let c = u16::from_be_bytes([m[42], m[43]]) as usize;
    let mut pos = 44 + c;
    let n = m[pos];
    pos += 1;
    for _ in 0..n {
        let w = u16::from_be_bytes([m[pos], m[pos + 1]]) as usize;
        pos += 2 + w;
    }
    pos + 32 + 16
}

fn commitment(m: &[u8]) -> &[u8] {
    let h = header_len(m);
    &m[h - 48..h - 16]
}

fn body(m: &[u8]) -> &[u8] {
    &m[header_len(m)..]
}

/// Offset in the message of the first ciphertext byte of regular frame
/// `index` (0-based).
fn regular_ct(m: &[u8], frame: usize, index: usize) -> usize {
    header_len(m) + index * (4 + frame + 16) + 4
}

/// Offset in the message of the final frame's first ciphertext byte.
fn final_ct(m: &[u8], frame: usize, data_len: usize) -> usize {
    let regular = if data_len == 0 {
        0
    } else {
        (data_len - 1) / frame
    };
    header_len(m) + regular * (4 + frame + 16) + 12
}

fn is_opaque<T: std::fmt::Debug>(r: strongroom::Result<T>) -> bool {
    matches!(r, Err(Error::DecryptionFailed))
}

// ---- open_range ---------------------------------------------------------------

#[test]
fn every_range_of_small_messages_matches_the_data() {
    let s = setup();
    let f = 7usize;
    for n in [0usize, 1, 6, 7, 8, 14, 15, 29] {
        let d = data(n);
        let m = seal(&s.admin, &s.key, &d, f as u32);
        for off in 0..=n {
            for len in 0..=(n - off) {
                let r = s.admin.open_range(&m, &ctx(), off as u64, len).unwrap();
                assert_eq!(
                    r.plaintext.expose_secret(),
                    &d[off..off + len],
                    "{n} {off} {len}"
                );
                assert_eq!(r.message_len, n as u64);
                assert_eq!(r.end_verified, off + len == n, "{n} {off} {len}");
                assert_eq!(r.key_id.as_str(), s.key);
                assert_eq!(r.key_version, 1);
                assert_eq!(r.context, ctx());
            }
        }
    }
}

#[test]
fn ranges_across_frame_boundaries_and_the_last_short_frame() {
    let s = setup();
    // Default 64 KiB frames: 3 regular frames and a short final frame.
    let n = 3 * 65_536 + 1000;
    let d = data(n);
    let m = s.admin.seal(&s.key, &d, &ctx()).unwrap();
    for (off, len) in [
        (65_530usize, 16usize), // crosses frame 1 | frame 2
        (65_536, 65_536),       // exactly frame 2
        (10, 3 * 65_536),       // spans all four frames
        (3 * 65_536 - 5, 10),   // last regular frame | final frame
        (3 * 65_536, 1000),     // exactly the short final frame
        (n - 1, 1),             // last byte
        (0, n),                 // everything
    ] {
        let r = s.admin.open_range(&m, &ctx(), off as u64, len).unwrap();
        assert_eq!(
            r.plaintext.expose_secret(),
            &d[off..off + len],
            "{off} {len}"
        );
        assert_eq!(r.end_verified, off + len == n);
    }
}

#[test]
fn out_of_range_is_an_argument_error_and_zero_length_is_empty() {
    let s = setup();
    let d = data(100);
    let m = seal(&s.admin, &s.key, &d, 16);
    for (off, len) in [
        (101u64, 0usize),
        (100, 1),
        (90, 11),
        (0, 101),
        (u64::MAX, 1),
    ] {
        let e = s.admin.open_range(&m, &ctx(), off, len).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{off} {len}: {e}");
    }
    let empty = s.admin.open_range(&m, &ctx(), 50, 0).unwrap();
    assert!(empty.plaintext.expose_secret().is_empty());
    assert!(!empty.end_verified);
    let at_end = s.admin.open_range(&m, &ctx(), 100, 0).unwrap();
    assert!(at_end.plaintext.expose_secret().is_empty());
    assert!(
        at_end.end_verified,
        "a zero-length read at the end verifies the final frame"
    );
    // The empty message: one empty final frame.
    let m0 = seal(&s.admin, &s.key, b"", 16);
    let r = s.admin.open_range(&m0, &ctx(), 0, 0).unwrap();
    assert!(r.end_verified && r.message_len == 0);
    assert!(matches!(
        s.admin.open_range(&m0, &ctx(), 1, 0),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn tamper_inside_the_range_fails_outside_is_not_detected() {
    let s = setup();
    let f = 16usize;
    let n = 5 * f + 7; // 5 regular frames, a final frame of 7
    let d = data(n);
    let m = seal(&s.admin, &s.key, &d, f as u32);
    // Flip a ciphertext byte of regular frame 2 (plaintext 32..48).
    let mut t = m.clone();
    t[regular_ct(&m, f, 2) + 3] ^= 1;
    for (off, len) in [(32u64, 16usize), (40, 1), (20, 20), (0, n)] {
        assert!(
            is_opaque(s.admin.open_range(&t, &ctx(), off, len)),
            "{off} {len}"
        );
    }
    assert!(is_opaque(s.admin.open(&t, &ctx())));
    // Outside the range: not detected. This documents the limit of a
    // ranged read, it is not a guarantee to rely on.
    let r = s.admin.open_range(&t, &ctx(), 0, 32).unwrap();
    assert_eq!(r.plaintext.expose_secret(), &d[..32]);
    let r = s.admin.open_range(&t, &ctx(), 48, n - 48).unwrap();
    assert_eq!(r.plaintext.expose_secret(), &d[48..]);

    // A flipped tag byte of the final frame: found only by a read that
    // reaches the end.
    let mut t = m.clone();
    t[final_ct(&m, f, n) + 7 + 5] ^= 0x80;
    let r = s.admin.open_range(&t, &ctx(), 0, 5 * f).unwrap();
    assert!(!r.end_verified);
    assert!(is_opaque(s.admin.open_range(&t, &ctx(), 5 * f as u64, 7)));
    assert!(is_opaque(s.admin.open_range(&t, &ctx(), n as u64, 0)));

    // The header is always verified, whatever the range.
    let mut t = m.clone();
    t[45] ^= 1; // inside the context
    assert!(is_opaque(s.admin.open_range(&t, &ctx(), 0, 0)));
    let mut t = m.clone();
    let h = header_len(&m);
    t[h - 20] ^= 1; // inside the commitment
    assert!(is_opaque(s.admin.open_range(&t, &ctx(), 0, 1)));
    t = m.clone();
    t[h - 1] ^= 1; // the header tag
    assert!(is_opaque(s.admin.open_range(&t, &ctx(), 0, 1)));
}

#[test]
fn truncation_is_detected_only_when_the_read_reaches_the_end() {
    let s = setup();
    let f = 16usize;
    let n = 2 * f + 8; // frames: 16, 16, final 8
    let d = data(n);
    let m = seal(&s.admin, &s.key, &d, f as u32);
    let h = header_len(&m);
    let stride = 4 + f + 16;
    // An adversary drops everything after regular frame 1 and turns regular
    // frame 2's ciphertext into a forged final frame (marker, seq 2, len F).
    let mut t = m[..h + stride].to_vec();
    t.extend_from_slice(&0xFFFF_FFFFu32.to_be_bytes());
    t.extend_from_slice(&2u32.to_be_bytes());
    t.extend_from_slice(&(f as u32).to_be_bytes());
    t.extend_from_slice(&m[h + stride + 4..h + 2 * stride]);
    // A read that stays in frame 1 succeeds and reports a (forged) length of
    // 32 bytes, not verified.
    let r = s.admin.open_range(&t, &ctx(), 0, f).unwrap();
    assert_eq!(r.plaintext.expose_secret(), &d[..f]);
    assert_eq!(r.message_len, 2 * f as u64);
    assert!(!r.end_verified);
    // A read reaching the (forged) end fails.
    assert!(is_opaque(s.admin.open_range(&t, &ctx(), f as u64, f)));
    assert!(is_opaque(s.admin.open_range(&t, &ctx(), 2 * f as u64, 0)));
    // Cut in the middle of a frame or with bytes appended: the layout
    // itself does not fit, the opaque error for any range.
    for bad in [
        m[..m.len() - 3].to_vec(),
        [m.as_slice(), &[0u8; 5]].concat(),
    ] {
        assert!(is_opaque(s.admin.open_range(&bad, &ctx(), 0, 1)));
    }
}

#[test]
fn every_bit_flip_fails_a_whole_range_read() {
    let s = setup();
    let d = data(40);
    let m = seal(&s.admin, &s.key, &d, 16);
    for i in 0..m.len() {
        for bit in [0u8, 7] {
            let mut t = m.clone();
            t[i] ^= 1 << bit;
            let r = s.admin.open_range(&t, &ctx(), 0, 40);
            assert!(r.is_err(), "flip at byte {i} bit {bit} went unnoticed");
        }
    }
}

#[test]
fn authorization_and_audit_are_those_of_open() {
    let s = setup();
    let m = seal(&s.admin, &s.key, &data(100), 16);
    let before = s.sink.events().len();
    s.admin.open_range(&m, &ctx(), 10, 20).unwrap();
    let _ = s.admin.open_range(&m, &ctx(), 1000, 1);
    let ev = s.sink.events();
    let new = &ev[before..];
    assert_eq!(new.len(), 2, "{new:#?}");
    for e in new {
        assert_eq!(e.action, "strongroom:Decrypt");
        assert_eq!(e.key_id.as_deref(), Some(s.key.as_str()));
        assert_eq!(e.key_version, Some(1));
    }
    assert!(matches!(new[0].outcome, Outcome::Allowed));
    assert!(matches!(&new[1].outcome, Outcome::Failed { error } if error == "InvalidArgument"));
    // Wrong context: opaque.
    let other = EncryptionContext::new().with("tenant", "evil");
    assert!(is_opaque(s.admin.open_range(&m, &other, 0, 1)));
    // No permission: denied, recorded as a denial.
    let bob = s.ring.client(p("user:bob"));
    let e = bob.open_range(&m, &ctx(), 0, 1).unwrap_err();
    assert!(
        matches!(
            e,
            Error::AccessDenied {
                action: Action::Decrypt,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        s.sink.events().last().unwrap().outcome,
        Outcome::Denied { .. }
    ));
    let e = bob.open_range_reader(Cursor::new(&m), &ctx()).unwrap_err();
    assert!(matches!(e, Error::AccessDenied { .. }), "{e}");
}

// ---- the Read + Seek reader ----------------------------------------------------

/// A `Read + Seek` input that counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(to)
    }
}

#[test]
fn reader_reads_seeks_and_verifies_the_end() {
    let s = setup();
    let f = 16usize;
    for n in [0usize, 1, 16, 17, 100] {
        let d = data(n);
        let m = seal(&s.admin, &s.key, &d, f as u32);
        let mut r = s.admin.open_range_reader(Cursor::new(&m), &ctx()).unwrap();
        assert_eq!(r.len(), n as u64);
        assert_eq!(r.key_id().as_str(), s.key);
        assert_eq!(r.context(), &ctx());
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, d, "{n}");
        assert!(r.end_verified(), "{n}");
        for pos in (0..n).step_by(5) {
            let len = (n - pos).min(23);
            r.seek(SeekFrom::Start(pos as u64)).unwrap();
            let mut buf = vec![0u8; len];
            r.read_exact(&mut buf).unwrap();
            assert_eq!(buf, &d[pos..pos + len], "{n} {pos}");
        }
        if n >= 5 {
            assert_eq!(r.seek(SeekFrom::End(-5)).unwrap(), n as u64 - 5);
            let mut tail = Vec::new();
            r.read_to_end(&mut tail).unwrap();
            assert_eq!(tail, &d[n - 5..]);
            r.seek(SeekFrom::Start(2)).unwrap();
            assert_eq!(r.seek(SeekFrom::Current(2)).unwrap(), 4);
            let mut one = [0u8; 1];
            r.read_exact(&mut one).unwrap();
            assert_eq!(one[0], d[4]);
        }
        // Past the end: Ok(0); before the start: an error.
        r.seek(SeekFrom::Start(n as u64 + 10)).unwrap();
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
        assert!(r.seek(SeekFrom::End(-(n as i64) - 1)).is_err());
    }
}

#[test]
fn reader_reads_only_the_covering_frames() {
    let s = setup();
    let n = 1 << 20;
    let d = data(n);
    let m = s.admin.seal(&s.key, &d, &ctx()).unwrap(); // 64 KiB frames
    let input = Counting {
        inner: Cursor::new(&m),
        read: 0,
    };
    let mut r = s.admin.open_range_reader(input, &ctx()).unwrap();
    r.seek(SeekFrom::Start(500_000)).unwrap();
    let mut buf = vec![0u8; 4096];
    r.read_exact(&mut buf).unwrap();
    assert_eq!(buf, &d[500_000..504_096]);
    assert!(!r.end_verified());
    // The header, the final frame's 12-byte header (checked at open), one
    // frame's sequence number, ciphertext and tag: far less than the 1 MiB
    // message.
    let header = header_len(&m) as u64;
    assert!(format!("{r:?}").contains("RangeReader"));
    let Counting { read, .. } = r.into_inner();
    assert_eq!(read, header + 12 + 4 + 65_536 + 16);
}

#[test]
fn reader_at_an_offset_in_a_larger_stream() {
    let s = setup();
    let d = data(50);
    let m = seal(&s.admin, &s.key, &d, 8);
    let mut file = vec![0xEEu8; 123];
    file.extend_from_slice(&m);
    let mut input = Cursor::new(file);
    input.seek(SeekFrom::Start(123)).unwrap();
    let mut r = s.admin.open_range_reader(input, &ctx()).unwrap();
    r.seek(SeekFrom::Start(20)).unwrap();
    let mut buf = [0u8; 20];
    r.read_exact(&mut buf).unwrap();
    assert_eq!(buf, &d[20..40]);
}

#[test]
fn reader_tamper_inside_poisons_outside_is_not_detected() {
    let s = setup();
    let f = 16usize;
    let n = 4 * f + 3;
    let d = data(n);
    let m = seal(&s.admin, &s.key, &d, f as u32);
    let mut t = m.clone();
    t[regular_ct(&m, f, 1)] ^= 0x40; // frame 1: plaintext 16..32
    let mut r = s.admin.open_range_reader(Cursor::new(&t), &ctx()).unwrap();
    let mut buf = [0u8; 16];
    // Frame 0 and frame 3 read fine: the tampered frame is not read.
    r.read_exact(&mut buf).unwrap();
    assert_eq!(buf, &d[..16]);
    r.seek(SeekFrom::Start(48)).unwrap();
    r.read_exact(&mut buf).unwrap();
    assert_eq!(buf, &d[48..64]);
    // Reading the tampered frame fails opaquely, and poisons the reader.
    r.seek(SeekFrom::Start(20)).unwrap();
    let e = r.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    r.seek(SeekFrom::Start(0)).unwrap();
    assert!(r.read(&mut buf).is_err(), "poisoned");
    // A truncated input (the last 3 bytes gone): the layout does not fit.
    let cut = &m[..m.len() - 3];
    assert!(is_opaque(
        s.admin.open_range_reader(Cursor::new(cut), &ctx())
    ));
    // A wrong context: opaque.
    let other = EncryptionContext::new().with("tenant", "evil");
    assert!(is_opaque(
        s.admin.open_range_reader(Cursor::new(&m), &other)
    ));
}

#[test]
fn reader_audits_once_at_open_not_per_read() {
    let s = setup();
    let m = seal(&s.admin, &s.key, &data(100), 16);
    let before = s.sink.events().len();
    let mut r = s.admin.open_range_reader(Cursor::new(&m), &ctx()).unwrap();
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    r.seek(SeekFrom::Start(3)).unwrap();
    r.read_exact(&mut [0u8; 30]).unwrap();
    let ev = s.sink.events();
    assert_eq!(ev.len() - before, 1);
    assert_eq!(ev[before].action, "strongroom:Decrypt");
    assert!(matches!(ev[before].outcome, Outcome::Allowed));
}

// ---- rewrap -----------------------------------------------------------------

fn wrapped_by(m: &[u8]) -> Vec<(String, u32)> {
    match inspect(m).unwrap() {
        CiphertextInfo::Message { wrapped_by, .. } => wrapped_by
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn rewrap_to_another_key_keeps_the_body_byte_for_byte() {
    let s = setup();
    let other = s
        .admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let d = data(300_000);
    let m = s.admin.seal(&s.key, &d, &ctx()).unwrap();
    let before = s.sink.events().len();
    let w = s
        .admin
        .rewrap_message(&m, &ctx(), other.as_str(), RewrapOptions::new())
        .unwrap();
    assert_eq!(body(&w), body(&m), "body frames must be byte-identical");
    assert_eq!(
        commitment(&w),
        commitment(&m),
        "the commitment is unchanged"
    );
    assert_eq!(&w[..44], &m[..44], "suite, frame length, message id");
    assert_eq!(wrapped_by(&w), vec![(other.clone(), 1)]);
    let o = s.admin.open(&w, &ctx()).unwrap();
    assert_eq!(o.plaintext.expose_secret(), d.as_slice());
    assert_eq!(o.key_id.as_str(), other);
    let r = s.admin.open_range(&w, &ctx(), 70_000, 100).unwrap();
    assert_eq!(r.plaintext.expose_secret(), &d[70_000..70_100]);
    // Audited as re_encrypt: ReEncryptFrom on the source, ReEncryptTo on
    // the destination, both allowed (the destination's, nested inside the
    // source's operation, is recorded first).
    let ev = s.sink.events();
    let ev = &ev[before..];
    assert_eq!(ev.len(), 2 + 2, "rewrap, open, open_range: {ev:#?}");
    assert_eq!(ev[0].action, "strongroom:ReEncryptTo");
    assert_eq!(ev[0].key_id.as_deref(), Some(other.as_str()));
    assert_eq!(ev[0].key_version, Some(1));
    assert_eq!(ev[1].action, "strongroom:ReEncryptFrom");
    assert_eq!(ev[1].key_id.as_deref(), Some(s.key.as_str()));
    assert_eq!(ev[1].key_version, Some(1));
    assert!(
        ev[..2]
            .iter()
            .all(|e| matches!(e.outcome, Outcome::Allowed))
    );
    // A tampered header of the output is caught as any other.
    let mut t = w.clone();
    let h = header_len(&w);
    t[h - 30] ^= 1;
    assert!(is_opaque(s.admin.open(&t, &ctx())));
}

#[test]
fn rewrap_across_suites_keeps_the_body_suite() {
    let s = setup();
    let chacha = s
        .admin
        .create_key(
            KeySpec::Symmetric(strongroom::key::SymmetricAlgorithm::ChaCha20Poly1305),
            CreateKeyOptions::new(),
        )
        .unwrap()
        .to_string();
    let d = data(5000);
    let m = seal(&s.admin, &s.key, &d, 1024); // AES-256-GCM body
    let w = s
        .admin
        .rewrap_message(&m, &ctx(), chacha.as_str(), RewrapOptions::new())
        .unwrap();
    assert_eq!(body(&w), body(&m));
    assert_eq!(w[4], m[4], "the body suite does not change");
    let o = s.admin.open(&w, &ctx()).unwrap();
    assert_eq!(o.plaintext.expose_secret(), d.as_slice());
    assert_eq!(o.key_id.as_str(), chacha);
}

#[test]
fn rewrap_to_the_newest_version_then_retire_the_old_one() {
    let s = setup();
    let d = data(70_000);
    let m = s.admin.seal(&s.key, &d, &ctx()).unwrap();
    assert_eq!(s.admin.rotate_key_on_demand(s.key.as_str()).unwrap(), 2);
    let w = s
        .admin
        .rewrap_message(&m, &ctx(), s.key.as_str(), RewrapOptions::new())
        .unwrap();
    assert_eq!(body(&w), body(&m));
    assert_eq!(wrapped_by(&w), vec![(s.key.clone(), 2)]);
    s.admin
        .update_key_version_floors(
            s.key.as_str(),
            VersionFloors::default().min_decrypt(2).min_encrypt(2),
        )
        .unwrap();
    // The old message is refused by the floor; the rewrapped one opens.
    let e = s.admin.open(&m, &ctx()).unwrap_err();
    assert!(matches!(e, Error::VersionRetired { .. }), "{e}");
    let o = s.admin.open(&w, &ctx()).unwrap();
    assert_eq!(o.plaintext.expose_secret(), d.as_slice());
    assert_eq!(o.key_version, 2);
    // And the old message can no longer be rewrapped either.
    let e = s
        .admin
        .rewrap_message(&m, &ctx(), s.key.as_str(), RewrapOptions::new())
        .unwrap_err();
    assert!(matches!(e, Error::VersionRetired { .. }), "{e}");
}

#[test]
fn rewrap_keep_source_adds_a_second_wrapped_key() {
    let s = setup();
    let other = s
        .admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let d = data(1000);
    let m = s.admin.seal(&s.key, &d, &ctx()).unwrap();
    let w = s
        .admin
        .rewrap_message(
            &m,
            &ctx(),
            other.as_str(),
            RewrapOptions::new().keep_source(true),
        )
        .unwrap();
    assert_eq!(body(&w), body(&m));
    assert_eq!(wrapped_by(&w), vec![(other.clone(), 1), (s.key.clone(), 1)]);
    // The new wrapped key comes first, so it is the one open uses.
    assert_eq!(s.admin.open(&w, &ctx()).unwrap().key_id.as_str(), other);
    // Replacing the source of a two-key message keeps the other key: rewrap
    // from `other` (the first held) to the first key's newest version.
    s.admin.rotate_key_on_demand(s.key.as_str()).unwrap();
    let w2 = s
        .admin
        .rewrap_message(&w, &ctx(), s.key.as_str(), RewrapOptions::new())
        .unwrap();
    assert_eq!(
        wrapped_by(&w2),
        vec![(s.key.clone(), 2), (s.key.clone(), 1)]
    );
    assert_eq!(body(&w2), body(&m));
    let o = s.admin.open(&w2, &ctx()).unwrap();
    assert_eq!((o.key_id.as_str(), o.key_version), (s.key.as_str(), 2));
    assert_eq!(o.plaintext.expose_secret(), d.as_slice());
}

#[test]
fn rewrap_refuses_a_wrong_context_and_unauthorized_principals() {
    let s = setup();
    let other = s
        .admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let m = s.admin.seal(&s.key, &data(100), &ctx()).unwrap();
    let wrong = EncryptionContext::new().with("tenant", "evil");
    assert!(is_opaque(s.admin.rewrap_message(
        &m,
        &wrong,
        other.as_str(),
        RewrapOptions::new()
    )));
    let bob = s.ring.client(p("user:bob"));
    // No permission on the source.
    let e = bob
        .rewrap_message(&m, &ctx(), other.as_str(), RewrapOptions::new())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::AccessDenied {
                action: Action::ReEncryptFrom,
                ..
            }
        ),
        "{e}"
    );
    // Permission on the source only: Decrypt alone is not enough, and
    // ReEncryptFrom without ReEncryptTo on the destination is refused
    // before the data key is unwrapped.
    s.admin
        .create_grant(
            s.key.as_str(),
            GrantRequest::new(p("user:bob"), &[Action::Decrypt]),
        )
        .unwrap();
    let e = bob
        .rewrap_message(&m, &ctx(), other.as_str(), RewrapOptions::new())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::AccessDenied {
                action: Action::ReEncryptFrom,
                ..
            }
        ),
        "{e}"
    );
    s.admin
        .create_grant(
            s.key.as_str(),
            GrantRequest::new(p("user:bob"), &[Action::ReEncryptFrom]),
        )
        .unwrap();
    // Time moves on, so a use of the source key would show in its last use.
    s.clock.advance_secs(100);
    let last_usage = s.admin.get_key_last_usage(s.key.as_str()).unwrap();
    let e = bob
        .rewrap_message(&m, &ctx(), other.as_str(), RewrapOptions::new())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::AccessDenied {
                action: Action::ReEncryptTo,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        s.sink.events().last().unwrap().outcome,
        Outcome::Denied { .. }
    ));
    assert_eq!(
        s.admin.get_key_last_usage(s.key.as_str()).unwrap(),
        last_usage,
        "the source key was not used"
    );
    // With both halves granted it works.
    s.admin
        .create_grant(
            other.as_str(),
            GrantRequest::new(p("user:bob"), &[Action::ReEncryptTo]),
        )
        .unwrap();
    let w = bob
        .rewrap_message(&m, &ctx(), other.as_str(), RewrapOptions::new())
        .unwrap();
    assert_eq!(wrapped_by(&w), vec![(other, 1)]);
}

#[test]
fn rewrap_does_not_read_the_body() {
    let s = setup();
    let d = data(200);
    let m = seal(&s.admin, &s.key, &d, 16);
    let mut t = m.clone();
    t[regular_ct(&m, 16, 3)] ^= 1;
    // The header verifies, so the rewrap goes through, body as it was; the
    // tampering is found when the result is opened.
    let w = s
        .admin
        .rewrap_message(&t, &ctx(), s.key.as_str(), RewrapOptions::new())
        .unwrap();
    assert_eq!(body(&w), body(&t));
    assert!(is_opaque(s.admin.open(&w, &ctx())));
    // A tampered header is refused.
    let mut t = m.clone();
    t[header_len(&m) - 1] ^= 1;
    assert!(is_opaque(s.admin.rewrap_message(
        &t,
        &ctx(),
        s.key.as_str(),
        RewrapOptions::new()
    )));
    // Garbage is refused, never a panic.
    for bad in [&b""[..], b"SR", &m[..50]] {
        assert!(is_opaque(s.admin.rewrap_message(
            bad,
            &ctx(),
            s.key.as_str(),
            RewrapOptions::new()
        )));
    }
}

#[test]
fn rewrap_header_reads_only_the_header_of_a_stream() {
    let s = setup();
    let other = s
        .admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let d = data(300_000);
    let m = s.admin.seal(&s.key, &d, &ctx()).unwrap();
    let mut input = Counting {
        inner: Cursor::new(&m),
        read: 0,
    };
    let header = s
        .admin
        .rewrap_header(&mut input, &ctx(), other.as_str(), RewrapOptions::new())
        .unwrap();
    assert_eq!(
        input.read,
        header_len(&m) as u64,
        "nothing of the body read"
    );
    // The new header, then the rest of the input unchanged.
    let mut w = header;
    input.read_to_end(&mut w).unwrap();
    assert_eq!(body(&w), body(&m));
    assert_eq!(wrapped_by(&w), vec![(other.clone(), 1)]);
    let o = s.admin.open(&w, &ctx()).unwrap();
    assert_eq!(o.plaintext.expose_secret(), d.as_slice());
    assert_eq!(o.key_id.as_str(), other);
    // Same refusals as rewrap_message.
    let wrong = EncryptionContext::new().with("tenant", "evil");
    assert!(is_opaque(s.admin.rewrap_header(
        Cursor::new(&m),
        &wrong,
        other.as_str(),
        RewrapOptions::new()
    )));
    assert!(is_opaque(s.admin.rewrap_header(
        Cursor::new(&m[..100]),
        &ctx(),
        other.as_str(),
        RewrapOptions::new()
    )));
}
