//! AWS Encryption SDK messages without Python: the frozen vectors the
//! Python SDK wrote (tests/vectors/esdk/), round trips, the pipeline, and
//! the negative cases, each of which must be the opaque
//! `Error::DecryptionFailed` and never a panic.
//!
//! A small independent encoder (raw aes-gcm / hkdf calls, written from the
//! spec, no strongroom internals) re-authenticates doctored headers, so the
//! commitment check is tested on its own, not hidden behind the header tag.
#![cfg(feature = "esdk")]

#[path = "esdk/common.rs"]
mod common;

use aes_gcm::aead::{AeadInOut, KeyInit};
use base64ct::{Base64, Encoding};
use serde::Deserialize;
use std::io::Read;
use std::sync::Arc;
use strongroom::audit::{MemorySink, Outcome};
use strongroom::interop::esdk::{EsdkOptions, EsdkSuite};
use strongroom::key::SymmetricAlgorithm;
use strongroom::{Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/esdk/python-4.0.7.json"
);

#[derive(Deserialize)]
struct VectorFile {
    sdk: String,
    key: String,
    key_namespace: String,
    key_name: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    suite: u16,
    frame_len: u32,
    context: std::collections::BTreeMap<String, String>,
    plaintext_len: usize,
    plaintext: String,
    ciphertext: String,
}

fn b64(s: &str) -> Vec<u8> {
    Base64::decode_vec(s).unwrap()
}

fn load() -> VectorFile {
    serde_json::from_str(&std::fs::read_to_string(VECTORS).unwrap()).unwrap()
}

fn key32(v: &[u8]) -> [u8; 32] {
    v.try_into().unwrap()
}

const KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
const F: u32 = 128;

fn ctx() -> EncryptionContext {
    EncryptionContext::new()
        .with("tenant", "acme")
        .with("purpose", "tests")
}

fn opts(suite: EsdkSuite) -> EsdkOptions {
    EsdkOptions::new().suite(suite).frame_len(F)
}

fn failed<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::DecryptionFailed))
}

/// Reads a whole stream; returns what was released and whether it ended
/// in an error.
fn stream_all(c: &Client, msg: &[u8], required: &EncryptionContext) -> (Vec<u8>, bool) {
    let mut r = match c.esdk_open_reader(common::ALIAS, msg, required, EsdkOptions::new()) {
        Ok(r) => r,
        Err(e) => {
            assert!(matches!(e, Error::DecryptionFailed), "{e}");
            return (Vec::new(), true);
        }
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 37];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (out, false),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
                return (out, true);
            }
        }
    }
}

/// Opening fails opaquely, in memory and streaming.
fn assert_rejected(c: &Client, msg: &[u8], required: &EncryptionContext, what: &str) {
    let r = c.esdk_open(common::ALIAS, msg, required);
    assert!(matches!(r, Err(Error::DecryptionFailed)), "{what}: {r:?}");
    let (_, err) = stream_all(c, msg, required);
    assert!(err, "{what}: streaming reader accepted it");
}

// ---- frozen vectors -----------------------------------------------------------

#[test]
fn frozen_python_vectors_open() {
    let file = load();
    assert!(file.sdk.contains("4.0.7"));
    let c = common::ring_with_key(&key32(&b64(&file.key)));
    let o = EsdkOptions::new()
        .key_namespace(&file.key_namespace)
        .key_name(&file.key_name);
    let mut seen = std::collections::BTreeSet::new();
    for (i, v) in file.vectors.iter().enumerate() {
        let msg = b64(&v.ciphertext);
        let want = b64(&v.plaintext);
        assert_eq!(want.len(), v.plaintext_len);
        let required: EncryptionContext = v.context.clone().into_iter().collect();
        let opened = c
            .esdk_open_with(common::ALIAS, &msg, &required, o.clone())
            .unwrap_or_else(|e| panic!("vector {i} ({:#06x}): {e}", v.suite));
        assert_eq!(
            opened.plaintext.expose_secret(),
            want.as_slice(),
            "vector {i}"
        );
        assert_eq!(opened.suite.id(), v.suite);
        assert_eq!(opened.frame_len, v.frame_len);
        assert!(opened.context.contains_all(&required));
        assert_eq!(
            opened.context.len(),
            required.len() + usize::from(opened.suite.is_signed())
        );
        // Streaming gives the same bytes.
        let mut r = c
            .esdk_open_reader(common::ALIAS, msg.as_slice(), &required, o.clone())
            .unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, want, "vector {i} streaming");
        // A different name or namespace does not open it.
        let wrong = o.clone().key_name("frozen-key-2");
        assert!(failed(c.esdk_open_with(
            common::ALIAS,
            &msg,
            &required,
            wrong.clone()
        )));
        let wrong = o.clone().key_namespace("other");
        assert!(failed(c.esdk_open_with(
            common::ALIAS,
            &msg,
            &required,
            wrong.clone()
        )));
        seen.insert((v.suite, v.frame_len == 0));
    }
    // Every suite, and v1 non-framed bodies, are covered.
    for s in [0x0478, 0x0578, 0x0178, 0x0378] {
        assert!(seen.contains(&(s, false)), "{s:#06x}");
    }
    assert!(seen.contains(&(0x0178, true)) && seen.contains(&(0x0378, true)));
}

#[test]
fn frozen_vectors_need_the_right_key_bytes() {
    let file = load();
    let mut other = key32(&b64(&file.key));
    other[0] ^= 1;
    let c = common::ring_with_key(&other);
    let o = EsdkOptions::new()
        .key_namespace(&file.key_namespace)
        .key_name(&file.key_name);
    for v in &file.vectors {
        let required: EncryptionContext = v.context.clone().into_iter().collect();
        assert!(failed(c.esdk_open_with(
            common::ALIAS,
            &b64(&v.ciphertext),
            &required,
            o.clone()
        )));
    }
}

// ---- round trips --------------------------------------------------------------

#[test]
fn round_trips_both_suites_in_memory_and_streaming() {
    let c = common::ring_with_key(&KEY);
    for suite in [
        EsdkSuite::AesGcmHkdfSha512Commit,
        EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384,
    ] {
        for (size, frame) in [
            (0usize, 1u32),
            (1, 1),
            (127, 128),
            (128, 128),
            (129, 128),
            (1000, 7),
            (10_000, 4096),
        ] {
            let data = common::data(size);
            let o = EsdkOptions::new().suite(suite).frame_len(frame);
            let m = c
                .esdk_seal_with(common::ALIAS, &data, &ctx(), o.clone())
                .unwrap();
            // Layout: suite in the header, final frame holds 0..frame bytes.
            assert_eq!(m[0], 2);
            assert_eq!(u16::from_be_bytes([m[1], m[2]]), suite.id());
            let opened = c.esdk_open(common::ALIAS, &m, &ctx()).unwrap();
            assert_eq!(opened.plaintext.expose_secret(), data.as_slice());
            let (streamed, err) = stream_all(&c, &m, &ctx());
            assert!(!err);
            assert_eq!(streamed, data);
            // Streaming writer output opens in memory.
            let mut w = c
                .esdk_seal_writer(common::ALIAS, &ctx(), o.clone(), Vec::new())
                .unwrap();
            for piece in data.chunks(333) {
                std::io::Write::write_all(&mut w, piece).unwrap();
            }
            let m2 = w.finish().unwrap();
            assert_eq!(m2.len(), m.len(), "same layout {suite:?} {size}/{frame}");
            let opened = c.esdk_open(common::ALIAS, &m2, &ctx()).unwrap();
            assert_eq!(opened.plaintext.expose_secret(), data.as_slice());
        }
    }
}

#[test]
fn empty_context_serializes_to_zero_bytes() {
    let c = common::ring_with_key(&KEY);
    let m = c
        .esdk_seal_with(
            common::ALIAS,
            b"x",
            &EncryptionContext::new(),
            opts(EsdkSuite::AesGcmHkdfSha512Commit),
        )
        .unwrap();
    // version, suite, message id, then the context length: zero.
    assert_eq!(&m[35..37], &[0, 0]);
    let opened = c
        .esdk_open(common::ALIAS, &m, &EncryptionContext::new())
        .unwrap();
    assert!(opened.context.is_empty());
}

// ---- the pipeline -------------------------------------------------------------

#[test]
fn calls_go_through_the_pipeline() {
    let sink = Arc::new(MemorySink::new());
    let ring = KeyRing::builder().audit_sink(sink.clone()).build();
    let owner = ring.client(Principal::service("owner").unwrap());
    let key = owner
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new().alias(common::ALIAS),
        )
        .unwrap();
    let m = owner.esdk_seal(common::ALIAS, b"hello", &ctx()).unwrap();
    owner.esdk_open(common::ALIAS, &m, &ctx()).unwrap();
    let ev = sink.events();
    let seal = &ev[ev.len() - 2];
    let open = &ev[ev.len() - 1];
    assert_eq!(seal.action, "strongroom:GenerateDataKey");
    assert_eq!(open.action, "strongroom:Decrypt");
    for e in [seal, open] {
        assert_eq!(e.key_id.as_deref(), Some(key.as_str()));
        assert_eq!(e.key_version, Some(1));
        assert_eq!(e.outcome, Outcome::Allowed);
    }
    // Open is authorized with the message's context (which holds the
    // signing key).
    assert!(
        open.context_keys
            .iter()
            .any(|k| k == "aws-crypto-public-key")
    );

    // Another principal is refused both ways, and that is recorded.
    let mallory = ring.client(Principal::service("mallory").unwrap());
    assert!(matches!(
        mallory.esdk_seal(common::ALIAS, b"x", &ctx()),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        mallory.esdk_open(common::ALIAS, &m, &ctx()),
        Err(Error::AccessDenied { .. })
    ));
    let ev = sink.events();
    assert!(matches!(ev[ev.len() - 1].outcome, Outcome::Denied { .. }));

    // A disabled key neither seals nor opens.
    owner.disable_key(common::ALIAS).unwrap();
    assert!(matches!(
        owner.esdk_open(common::ALIAS, &m, &ctx()),
        Err(Error::InvalidKeyState { .. })
    ));
}

#[test]
fn reserved_context_keys_are_refused_on_write() {
    let c = common::ring_with_key(&KEY);
    for k in ["aws-crypto-public-key", "aws-crypto-anything"] {
        let bad = ctx().with(k, "x");
        for suite in [
            EsdkSuite::AesGcmHkdfSha512Commit,
            EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384,
        ] {
            assert!(matches!(
                c.esdk_seal_with(common::ALIAS, b"x", &bad, opts(suite)),
                Err(Error::InvalidArgument(_))
            ));
            assert!(matches!(
                c.esdk_seal_writer(common::ALIAS, &bad, opts(suite), Vec::new()),
                Err(Error::InvalidArgument(_))
            ));
        }
    }
}

#[test]
fn bad_options_and_keys_are_refused() {
    let c = common::ring_with_key(&KEY);
    let o = EsdkOptions::new();
    assert!(matches!(
        c.esdk_seal_with(common::ALIAS, b"x", &ctx(), o.clone().frame_len(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.esdk_seal_with(common::ALIAS, b"x", &ctx(), o.clone().frame_len(u32::MAX)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.esdk_seal_with(
            common::ALIAS,
            b"x",
            &ctx(),
            o.clone().suite(EsdkSuite::LegacyAesGcmHkdfSha256)
        ),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        c.esdk_seal_with(
            common::ALIAS,
            b"x",
            &ctx(),
            o.clone().key_namespace("aws-kms")
        ),
        Err(Error::InvalidArgument(_))
    ));
    // A ChaCha20-Poly1305 key cannot be a raw AES keyring.
    c.create_key(
        KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305),
        CreateKeyOptions::new().alias("alias/chacha"),
    )
    .unwrap();
    assert!(matches!(
        c.esdk_seal("alias/chacha", b"x", &ctx()),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn rotated_keys_keep_opening_old_messages() {
    let c = common::ring_with_key(&KEY);
    let old = c.esdk_seal(common::ALIAS, b"old", &ctx()).unwrap();
    assert_eq!(c.rotate_key_on_demand(common::ALIAS).unwrap(), 2);
    let new = c.esdk_seal(common::ALIAS, b"new", &ctx()).unwrap();
    let o = c.esdk_open(common::ALIAS, &old, &ctx()).unwrap();
    assert_eq!(
        (o.plaintext.expose_secret(), o.key_version),
        (&b"old"[..], 1)
    );
    let o = c.esdk_open(common::ALIAS, &new, &ctx()).unwrap();
    assert_eq!(
        (o.plaintext.expose_secret(), o.key_version),
        (&b"new"[..], 2)
    );
}

// ---- negative cases -----------------------------------------------------------

#[test]
fn wrong_required_context_fails() {
    let c = common::ring_with_key(&KEY);
    let m = c.esdk_seal(common::ALIAS, b"data", &ctx()).unwrap();
    assert_rejected(&c, &m, &ctx().with("tenant", "zeta"), "other value");
    assert_rejected(&c, &m, &ctx().with("extra", "1"), "extra pair");
    // A subset is enough (the stored context also holds the signing key).
    let subset = EncryptionContext::new().with("tenant", "acme");
    assert!(c.esdk_open(common::ALIAS, &m, &subset).is_ok());
}

#[test]
fn wrong_key_name_namespace_or_material_fails() {
    let c = common::ring_with_key(&KEY);
    let m = c.esdk_seal(common::ALIAS, b"data", &ctx()).unwrap();
    let bad = EsdkOptions::new().key_name("someone-else");
    assert!(failed(c.esdk_open_with(
        common::ALIAS,
        &m,
        &ctx(),
        bad.clone()
    )));
    let bad = EsdkOptions::new().key_namespace("someone-else");
    assert!(failed(c.esdk_open_with(
        common::ALIAS,
        &m,
        &ctx(),
        bad.clone()
    )));
    // Same names, other key bytes.
    let mut other = KEY;
    other[31] ^= 0x80;
    let c2 = common::ring_with_key(&other);
    assert_rejected(&c2, &m, &ctx(), "other key material");
}

#[test]
fn tampered_headers_fail() {
    let c = common::ring_with_key(&KEY);
    for suite in [
        EsdkSuite::AesGcmHkdfSha512Commit,
        EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384,
    ] {
        let m = c
            .esdk_seal_with(common::ALIAS, &common::data(300), &ctx(), opts(suite))
            .unwrap();
        let h = Layout::parse(&m);
        // Every header byte, one bit at a time at a few positions each.
        for i in 0..h.body {
            let mut t = m.clone();
            t[i] ^= 0x01;
            let r = c.esdk_open(common::ALIAS, &t, &EncryptionContext::new());
            assert!(
                matches!(r, Err(Error::DecryptionFailed)),
                "{suite:?} header byte {i}: {r:?}"
            );
        }
    }
}

#[test]
fn commitment_mismatch_fails_even_with_a_valid_header_tag() {
    let c = common::ring_with_key(&KEY);
    for suite in [
        EsdkSuite::AesGcmHkdfSha512Commit,
        EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384,
    ] {
        let m = c
            .esdk_seal_with(common::ALIAS, b"commit", &ctx(), opts(suite))
            .unwrap();
        let h = Layout::parse(&m);
        // The independent decoder opens the untouched message...
        let dk = h.unwrap_data_key(&m, &KEY);
        assert!(h.header_tag_ok(&m, &dk));
        // ...and re-authenticates a header with another commitment, so only
        // the commitment check stands between it and the reader.
        let mut t = m.clone();
        t[h.commitment] ^= 0x42;
        h.reauthenticate(&mut t, &dk);
        assert!(h.header_tag_ok(&t, &dk));
        assert_rejected(&c, &t, &ctx(), "commitment mismatch");
    }
}

#[test]
fn dropped_reordered_duplicated_frames_fail() {
    let c = common::ring_with_key(&KEY);
    let suite = EsdkSuite::AesGcmHkdfSha512Commit;
    // Three regular frames and a final frame of 50 bytes.
    let data = common::data(3 * F as usize + 50);
    let m = c
        .esdk_seal_with(common::ALIAS, &data, &ctx(), opts(suite))
        .unwrap();
    let h = Layout::parse(&m);
    let fl = 4 + 12 + F as usize + 16;
    let frame = |i: usize| &m[h.body + i * fl..h.body + (i + 1) * fl];
    let head = &m[..h.body];
    let last = &m[h.body + 3 * fl..];
    let build = |order: &[usize], with_final: bool| {
        let mut v = head.to_vec();
        for i in order {
            v.extend_from_slice(frame(*i));
        }
        if with_final {
            v.extend_from_slice(last);
        }
        v
    };
    // The intact rebuild opens: the cases below differ only in frames.
    assert_eq!(
        c.esdk_open(common::ALIAS, &build(&[0, 1, 2], true), &ctx())
            .unwrap()
            .plaintext
            .expose_secret(),
        data.as_slice()
    );
    for (order, with_final, what) in [
        (&[0, 2][..], true, "dropped frame"),
        (&[1, 2][..], true, "dropped first frame"),
        (&[0, 2, 1][..], true, "reordered frames"),
        (&[0, 1, 1, 2][..], true, "duplicated frame"),
        (&[0, 0, 1, 2][..], true, "duplicated first frame"),
        (&[0, 1, 2][..], false, "dropped final frame"),
    ] {
        assert_rejected(&c, &build(order, with_final), &ctx(), what);
    }
    // A final frame twice, or anything after it.
    let mut twice = m.clone();
    twice.extend_from_slice(last);
    assert_rejected(&c, &twice, &ctx(), "final frame twice");
    let mut extra = m.clone();
    extra.push(0);
    assert_rejected(&c, &extra, &ctx(), "trailing byte");
}

#[test]
fn truncated_or_forged_footer_and_signature_fail() {
    let c = common::ring_with_key(&KEY);
    let suite = EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384;
    let m = c
        .esdk_seal_with(common::ALIAS, &common::data(300), &ctx(), opts(suite))
        .unwrap();
    let footer = 2 + 103;
    assert_eq!(
        u16::from_be_bytes([m[m.len() - footer], m[m.len() - footer + 1]]),
        103
    );
    for cut in [1, 2, 50, 103, footer - 1, footer, footer + 1, footer + 20] {
        assert_rejected(&c, &m[..m.len() - cut], &ctx(), &format!("cut {cut}"));
    }
    for i in (m.len() - footer..m.len()).step_by(9) {
        let mut t = m.clone();
        t[i] ^= 0x10;
        assert_rejected(&c, &t, &ctx(), &format!("footer byte {i}"));
    }
    let mut extra = m.clone();
    extra.push(0);
    assert_rejected(&c, &extra, &ctx(), "trailing byte");
    // A signature of the other message's signer does not verify.
    let other = c
        .esdk_seal_with(common::ALIAS, &common::data(300), &ctx(), opts(suite))
        .unwrap();
    let mut swapped = m[..m.len() - footer].to_vec();
    swapped.extend_from_slice(&other[other.len() - footer..]);
    assert_rejected(&c, &swapped, &ctx(), "foreign signature");
}

#[test]
fn streaming_reader_holds_the_final_frame_until_the_signature_verifies() {
    let c = common::ring_with_key(&KEY);
    let data = common::data(2 * F as usize + 44);
    for suite in [
        EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384,
        EsdkSuite::AesGcmHkdfSha512Commit,
    ] {
        let m = c
            .esdk_seal_with(common::ALIAS, &data, &ctx(), opts(suite))
            .unwrap();
        let (all, err) = stream_all(&c, &m, &ctx());
        assert!(!err);
        assert_eq!(all, data);
        // Break the end of the message: the signature (0x0578) or one
        // byte of the final frame's tag (0x0478).
        let mut t = m.clone();
        let at = t.len() - 1;
        t[at] ^= 1;
        let (released, err) = stream_all(&c, &t, &ctx());
        assert!(err);
        // The regular frames were released, the final frame never.
        assert_eq!(released, &data[..2 * F as usize], "{suite:?}");
    }
}

#[test]
fn every_truncation_and_many_bit_flips_fail_without_panic() {
    let c = common::ring_with_key(&KEY);
    for suite in [
        EsdkSuite::AesGcmHkdfSha512Commit,
        EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384,
    ] {
        let m = c
            .esdk_seal_with(common::ALIAS, &common::data(200), &ctx(), opts(suite))
            .unwrap();
        for cut in 0..m.len() {
            assert!(
                failed(c.esdk_open(common::ALIAS, &m[..cut], &ctx())),
                "cut {cut}"
            );
            let (_, err) = stream_all(&c, &m[..cut], &ctx());
            assert!(err, "stream cut {cut}");
        }
        for i in (0..m.len()).step_by(3) {
            let mut t = m.clone();
            t[i] = t[i].wrapping_add(0x81);
            assert!(failed(c.esdk_open(common::ALIAS, &t, &ctx())), "byte {i}");
        }
    }
}

// ---- an independent encoder, from the spec ------------------------------------

/// Offsets in a v2 message with one raw-AES encrypted data key.
struct Layout {
    message_id: std::ops::Range<usize>,
    context: std::ops::Range<usize>,
    provider_info: std::ops::Range<usize>,
    edk: std::ops::Range<usize>,
    commitment: usize,
    tag: usize,
    body: usize,
}

impl Layout {
    fn parse(m: &[u8]) -> Layout {
        let u16_at = |i: usize| usize::from(u16::from_be_bytes([m[i], m[i + 1]]));
        assert_eq!(m[0], 2);
        let message_id = 3..35;
        let cl = u16_at(35);
        let context = 37..37 + cl;
        let mut p = context.end;
        assert_eq!(u16_at(p), 1, "one encrypted data key");
        p += 2;
        let pid = u16_at(p);
        p += 2 + pid;
        let pil = u16_at(p);
        let provider_info = p + 2..p + 2 + pil;
        p = provider_info.end;
        let el = u16_at(p);
        let edk = p + 2..p + 2 + el;
        p = edk.end;
        assert_eq!(m[p], 2, "framed");
        p += 5;
        Layout {
            message_id,
            context,
            provider_info,
            edk,
            commitment: p,
            tag: p + 32,
            body: p + 32 + 16,
        }
    }

    fn unwrap_data_key(&self, m: &[u8], key: &[u8; 32]) -> [u8; 32] {
        let info = &m[self.provider_info.clone()];
        let iv = &info[info.len() - 12..];
        let edk = &m[self.edk.clone()];
        let mut buf = edk[..32].to_vec();
        let tag: [u8; 16] = edk[32..].try_into().unwrap();
        aes_gcm::Aes256Gcm::new(key.into())
            .decrypt_inout_detached(
                iv.try_into().unwrap(),
                &m[self.context.clone()],
                buf.as_mut_slice().into(),
                &tag.into(),
            )
            .expect("independent unwrap");
        buf.try_into().unwrap()
    }

    fn derived_key(&self, m: &[u8], dk: &[u8; 32]) -> [u8; 32] {
        let hk = hkdf::Hkdf::<sha2::Sha512>::new(Some(&m[self.message_id.clone()]), dk);
        let mut k = [0u8; 32];
        hk.expand_multi_info(&[&m[1..3], b"DERIVEKEY"], &mut k)
            .unwrap();
        k
    }

    fn tag_of(&self, m: &[u8], dk: &[u8; 32]) -> [u8; 16] {
        let k = self.derived_key(m, dk);
        let mut empty: [u8; 0] = [];
        aes_gcm::Aes256Gcm::new(&k.into())
            .encrypt_inout_detached(&[0u8; 12].into(), &m[..self.tag], (&mut empty[..]).into())
            .unwrap()
            .into()
    }

    fn header_tag_ok(&self, m: &[u8], dk: &[u8; 32]) -> bool {
        self.tag_of(m, dk) == m[self.tag..self.tag + 16]
    }

    fn reauthenticate(&self, m: &mut [u8], dk: &[u8; 32]) {
        let t = self.tag_of(m, dk);
        m[self.tag..self.tag + 16].copy_from_slice(&t);
    }
}

#[test]
fn any_frame_length_the_format_allows_is_read() {
    // A message whose body is only its final frame, re-labelled by the
    // independent encoder with the largest frame length the format allows
    // (2^32 − 1, beyond what strongroom or the Python SDK write) and
    // re-authenticated: it must open, in memory and streaming, without
    // allocating for the declared frame.
    let c = common::ring_with_key(&KEY);
    let data = common::data(100);
    let m = c
        .esdk_seal_with(
            common::ALIAS,
            &data,
            &ctx(),
            EsdkOptions::new()
                .suite(EsdkSuite::AesGcmHkdfSha512Commit)
                .frame_len(4096),
        )
        .unwrap();
    let h = Layout::parse(&m);
    let dk = h.unwrap_data_key(&m, &KEY);
    let at = h.commitment - 4;
    assert_eq!(&m[at..at + 4], &4096u32.to_be_bytes());
    for f in [u32::MAX, 1 << 31, 100] {
        let mut t = m.clone();
        t[at..at + 4].copy_from_slice(&f.to_be_bytes());
        h.reauthenticate(&mut t, &dk);
        let opened = c.esdk_open(common::ALIAS, &t, &ctx()).unwrap();
        assert_eq!(opened.plaintext.expose_secret(), data.as_slice());
        assert_eq!(opened.frame_len, f);
        let (streamed, err) = stream_all(&c, &t, &ctx());
        assert!(!err);
        assert_eq!(streamed, data);
    }
    // Below the final frame's length, or zero, it is refused.
    for f in [99u32, 0] {
        let mut t = m.clone();
        t[at..at + 4].copy_from_slice(&f.to_be_bytes());
        h.reauthenticate(&mut t, &dk);
        assert_rejected(&c, &t, &ctx(), &format!("frame length {f}"));
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn seal_open_round_trip(
            data in proptest::collection::vec(any::<u8>(), 0..1500),
            frame in 1u32..300,
            signed in any::<bool>(),
            pairs in proptest::collection::btree_map("[a-z]{1,8}", ".{0,12}", 0..4),
        ) {
            let c = common::ring_with_key(&KEY);
            let ctx: EncryptionContext = pairs.into_iter().collect();
            let suite = if signed {
                EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384
            } else {
                EsdkSuite::AesGcmHkdfSha512Commit
            };
            let o = EsdkOptions::new().suite(suite).frame_len(frame);
            let m = c.esdk_seal_with(common::ALIAS, &data, &ctx, o.clone()).unwrap();
            let opened = c.esdk_open(common::ALIAS, &m, &ctx).unwrap();
            prop_assert_eq!(opened.plaintext.expose_secret(), data.as_slice());
            prop_assert!(opened.context.contains_all(&ctx));
            let (streamed, err) = stream_all(&c, &m, &ctx);
            prop_assert!(!err);
            prop_assert_eq!(streamed, data);
        }
    }
}

/// A custodian with opaque payloads (the shape of a remote KMS): it cannot
/// act as the raw AES keyring, and says so.
#[derive(Debug)]
struct OpaqueBackend(strongroom::backend::MemoryBackend);

impl strongroom::backend::KeyBackend for OpaqueBackend {
    fn name(&self) -> &str {
        "opaque"
    }
    fn supports(&self, spec: KeySpec) -> bool {
        self.0.supports(spec)
    }
    fn generate(
        &self,
        id: &strongroom::backend::MaterialId,
        spec: KeySpec,
    ) -> strongroom::Result<()> {
        self.0.generate(id, spec)
    }
    fn encrypt(
        &self,
        id: &strongroom::backend::MaterialId,
        aad: &[u8],
        plaintext: &[u8],
    ) -> strongroom::Result<Vec<u8>> {
        let mut p = b"opaque:".to_vec();
        p.extend(self.0.encrypt(id, aad, plaintext)?);
        Ok(p)
    }
    fn decrypt(
        &self,
        id: &strongroom::backend::MaterialId,
        aad: &[u8],
        payload: &[u8],
    ) -> strongroom::Result<strongroom::SecretBytes> {
        let raw = payload
            .strip_prefix(b"opaque:")
            .ok_or(Error::DecryptionFailed)?;
        self.0.decrypt(id, aad, raw)
    }
    fn destroy(&self, id: &strongroom::backend::MaterialId) -> strongroom::Result<()> {
        self.0.destroy(id)
    }
    fn contains(&self, id: &strongroom::backend::MaterialId) -> strongroom::Result<bool> {
        self.0.contains(id)
    }
}

#[test]
fn a_backend_with_opaque_payloads_is_refused_clearly() {
    let ring = KeyRing::builder()
        .backend(Arc::new(OpaqueBackend(
            strongroom::backend::MemoryBackend::new(),
        )))
        .build();
    let c = ring.client(Principal::service("app").unwrap());
    c.create_key(
        KeySpec::default(),
        CreateKeyOptions::new().alias(common::ALIAS),
    )
    .unwrap();
    // strongroom's own format works on it...
    let m = c.seal(common::ALIAS, b"x", &ctx()).unwrap();
    assert!(c.open(&m, &ctx()).is_ok());
    // ...the raw AES keyring does not, in either direction.
    assert!(matches!(
        c.esdk_seal(common::ALIAS, b"x", &ctx()),
        Err(Error::Unsupported(_))
    ));
    let other = common::ring_with_key(&KEY);
    let m = other.esdk_seal(common::ALIAS, b"x", &ctx()).unwrap();
    assert!(matches!(
        c.esdk_open(common::ALIAS, &m, &ctx()),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn a_context_too_large_once_the_signing_key_is_added_is_refused_on_write() {
    let c = common::ring_with_key(&KEY);
    // 2 + (4 + 1 + 8135) = 8142 bytes canonical: within MAX_CONTEXT_BYTES
    // alone, beyond it with `aws-crypto-public-key` (93 more bytes).
    let big = EncryptionContext::new().with("k", "v".repeat(8135));
    let m = c
        .esdk_seal_with(
            common::ALIAS,
            b"x",
            &big,
            opts(EsdkSuite::AesGcmHkdfSha512Commit),
        )
        .unwrap();
    assert!(c.esdk_open(common::ALIAS, &m, &big).is_ok());
    assert!(matches!(
        c.esdk_seal_with(
            common::ALIAS,
            b"x",
            &big,
            opts(EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384)
        ),
        Err(Error::InvalidArgument(_))
    ));
}
