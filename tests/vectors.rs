//! Frozen format vectors: `tests/vectors/format-v2.json` (what the ring
//! writes now: version 2 blobs with a length-prefixed payload) and
//! `tests/vectors/format-v1.json` (version 1 blobs, written by earlier
//! releases; read only).
//!
//! The vectors were made by a ring seeded with `InsecureSeededRandom`, so
//! every key id, master key, nonce, data key and message id is reproducible.
//! This test checks three things:
//! 1. the ring decrypts/opens every frozen ciphertext;
//! 2. an independent decoder written here from docs/FORMAT.md alone (raw
//!    aes-gcm / chacha20poly1305 / hkdf calls, no strongroom internals)
//!    decrypts them with the master keys recorded in the file;
//! 3. re-running the same operations produces byte-identical output to the
//!    current (v2) file, so any change of the format fails CI; the v1 file
//!    is only opened (1 and 2).
//!
//! 1 and 3 run once per crypto provider compiled in (`CryptoProvider::all`),
//! and the independent decoder also reads what each provider writes.
//!
//! Regenerate (only for a deliberate format change, with a new format
//! version): `STRONGROOM_WRITE_VECTORS=1 cargo nextest run --test vectors ring_opens`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use strongroom::crypto::CryptoProvider;
use strongroom::hazmat::InsecureSeededRandom;
use strongroom::key::SymmetricAlgorithm;
use strongroom::random::RandomSource;
use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal, SealOptions};

/// The frozen output of the current writer.
const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/format-v2.json");
/// The frozen output of the version 1 writer: still opened, never written.
const PATH_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/format-v1.json");
const SEED: [u8; 32] = *b"strongroom format vectors seed 1";

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Vectors {
    description: String,
    seed_hex: String,
    keys: Vec<KeyVec>,
    blobs: Vec<BlobVec>,
    messages: Vec<MessageVec>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct KeyVec {
    alias: String,
    spec: String,
    key_id: String,
    master_key_hex: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct BlobVec {
    key: String,
    context: BTreeMap<String, String>,
    plaintext_hex: String,
    ciphertext_hex: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct MessageVec {
    key: String,
    context: BTreeMap<String, String>,
    frame_len: u32,
    plaintext_hex: String,
    message_hex: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const KEYS: [(&str, SymmetricAlgorithm); 2] = [
    ("alias/vectors-aes", SymmetricAlgorithm::Aes256Gcm),
    ("alias/vectors-chacha", SymmetricAlgorithm::ChaCha20Poly1305),
];

fn blob_inputs() -> Vec<(&'static str, BTreeMap<String, String>, Vec<u8>)> {
    let ctx = |p: &[(&str, &str)]| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    vec![
        ("alias/vectors-aes", ctx(&[]), b"x".to_vec()),
        (
            "alias/vectors-aes",
            ctx(&[("tenant", "acme"), ("app", "billing")]),
            b"hello, strongroom".to_vec(),
        ),
        ("alias/vectors-chacha", ctx(&[("k", "v")]), vec![0xa5; 100]),
    ]
}

type MessageInput = (&'static str, BTreeMap<String, String>, u32, Vec<u8>);

fn message_inputs() -> Vec<MessageInput> {
    let ctx = |p: &[(&str, &str)]| {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    vec![
        ("alias/vectors-aes", ctx(&[]), 65536, Vec::new()),
        (
            "alias/vectors-aes",
            ctx(&[("tenant", "acme")]),
            16,
            (0u8..40).collect(),
        ),
        (
            "alias/vectors-aes",
            ctx(&[("a", "1"), ("b", "2")]),
            32,
            (0u8..64).collect(),
        ),
        (
            "alias/vectors-chacha",
            ctx(&[("tenant", "zeta")]),
            64,
            b"framed chacha message body".to_vec(),
        ),
    ]
}

/// Produces the vectors from scratch with the seeded ring.
fn generate(provider: CryptoProvider) -> Vectors {
    let rng = Arc::new(InsecureSeededRandom::new(SEED));
    let ring = KeyRing::builder()
        .random(rng)
        .crypto_provider(provider)
        .build();
    let c = ring.client(Principal::service("vectors").unwrap());
    // Documented draw order of create_key: 16 bytes of key id, then 32 bytes
    // of key material (the memory backend shares the ring's generator).
    let shadow = InsecureSeededRandom::new(SEED);
    let mut keys = Vec::new();
    for (alias, alg) in KEYS {
        let id = c
            .create_key(
                KeySpec::Symmetric(alg),
                CreateKeyOptions::new().alias(alias),
            )
            .unwrap();
        let mut skip = [0u8; 16];
        shadow.fill(&mut skip).unwrap();
        let mut mk = [0u8; 32];
        shadow.fill(&mut mk).unwrap();
        keys.push(KeyVec {
            alias: alias.into(),
            spec: alg.as_str().into(),
            key_id: id.to_string(),
            master_key_hex: hex(&mk),
        });
    }
    let blobs = blob_inputs()
        .into_iter()
        .map(|(key, ctx, pt)| {
            let ec: EncryptionContext = ctx.clone().into_iter().collect();
            let ct = c.encrypt(key, &pt, &ec).unwrap();
            BlobVec {
                key: key.into(),
                context: ctx,
                plaintext_hex: hex(&pt),
                ciphertext_hex: hex(&ct),
            }
        })
        .collect();
    let messages = message_inputs()
        .into_iter()
        .map(|(key, ctx, frame_len, pt)| {
            let ec: EncryptionContext = ctx.clone().into_iter().collect();
            let m = c
                .seal_with(key, &pt, &ec, SealOptions::new().frame_len(frame_len))
                .unwrap();
            MessageVec {
                key: key.into(),
                context: ctx,
                frame_len,
                plaintext_hex: hex(&pt),
                message_hex: hex(&m),
            }
        })
        .collect();
    Vectors {
        description: "strongroom format v2 vectors: ciphertext blobs (version 2) and envelope messages; see docs/FORMAT.md".into(),
        seed_hex: hex(&SEED),
        keys,
        blobs,
        messages,
    }
}

fn load_from(path: &str) -> Vectors {
    let text = std::fs::read_to_string(path).expect(path);
    serde_json::from_str(&text).unwrap()
}

fn load() -> Vectors {
    load_from(PATH)
}

/// Both frozen files: the current one and the version 1 one.
fn all_frozen() -> [Vectors; 2] {
    [load(), load_from(PATH_V1)]
}

#[test]
fn ring_opens_frozen_vectors() {
    if std::env::var_os("STRONGROOM_WRITE_VECTORS").is_some() {
        let v = generate(CryptoProvider::rust_crypto());
        std::fs::write(PATH, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
    }
    for provider in CryptoProvider::all() {
        for v in all_frozen() {
            ring_opens(*provider, &v);
        }
    }
}

fn ring_opens(provider: CryptoProvider, v: &Vectors) {
    let rng = Arc::new(InsecureSeededRandom::new(SEED));
    let ring = KeyRing::builder()
        .random(rng)
        .crypto_provider(provider)
        .build();
    assert_eq!(ring.crypto_provider(), provider);
    let c = ring.client(Principal::service("vectors").unwrap());
    for k in &v.keys {
        let alg = KEYS.iter().find(|(a, _)| *a == k.alias).unwrap().1;
        let id = c
            .create_key(
                KeySpec::Symmetric(alg),
                CreateKeyOptions::new().alias(k.alias.clone()),
            )
            .unwrap();
        assert_eq!(id.as_str(), k.key_id);
    }
    for b in &v.blobs {
        let ec: EncryptionContext = b.context.clone().into_iter().collect();
        let out = c.decrypt(&unhex(&b.ciphertext_hex), &ec).unwrap();
        assert_eq!(hex(out.plaintext.expose_secret()), b.plaintext_hex);
    }
    for m in &v.messages {
        let ec: EncryptionContext = m.context.clone().into_iter().collect();
        let out = c.open(&unhex(&m.message_hex), &ec).unwrap();
        assert_eq!(hex(out.plaintext.expose_secret()), m.plaintext_hex);
    }
}

#[test]
fn output_is_byte_identical_to_frozen_vectors() {
    let frozen = load();
    for provider in CryptoProvider::all() {
        assert_eq!(
            generate(*provider),
            frozen,
            "{provider}: the format (or the RNG draw order) changed"
        );
    }
}

// ---- an independent decoder, written from docs/FORMAT.md -------------------

fn aead_open(suite: u8, key: &[u8], nonce: &[u8], aad: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    let payload = Payload { msg: ct, aad };
    match suite {
        1 => aes_gcm::Aes256Gcm::new_from_slice(key)
            .ok()?
            .decrypt(nonce.try_into().ok()?, payload)
            .ok(),
        2 => chacha20poly1305::ChaCha20Poly1305::new_from_slice(key)
            .ok()?
            .decrypt(nonce.try_into().ok()?, payload)
            .ok(),
        _ => None,
    }
}

fn context_bytes(ctx: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = (ctx.len() as u16).to_be_bytes().to_vec();
    for (k, v) in ctx {
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Decrypts a ciphertext blob; returns (key id, version, plaintext).
fn decode_blob(blob: &[u8], keys: &[KeyVec], ctx: &[u8]) -> (String, u32, Vec<u8>) {
    assert_eq!(&blob[0..3], &[b'S', b'R', 0x01]);
    let suite = blob[4];
    let l = blob[5] as usize;
    let key_id = String::from_utf8(blob[6..6 + l].to_vec()).unwrap();
    let version = u32::from_be_bytes(blob[6 + l..10 + l].try_into().unwrap());
    let header = &blob[..10 + l];
    // Version 1: the payload is the rest; version 2: it is length-prefixed
    // and ends the blob.
    let payload = match blob[3] {
        0x01 => &blob[10 + l..],
        0x02 => {
            let p = u16::from_be_bytes([blob[10 + l], blob[11 + l]]) as usize;
            assert_eq!(blob.len(), 12 + l + p, "the payload ends the blob");
            &blob[12 + l..]
        }
        v => panic!("unknown blob format version {v}"),
    };
    let nonce = &payload[..12];
    let ct = &payload[12..];
    let mk = unhex(
        &keys
            .iter()
            .find(|k| k.key_id == key_id)
            .unwrap()
            .master_key_hex,
    );
    let mut aad = header.to_vec();
    aad.extend_from_slice(ctx);
    let pt = aead_open(suite, &mk, nonce, &aad, ct).expect("blob authenticates");
    (key_id, version, pt)
}

fn decode_message(m: &[u8], keys: &[KeyVec]) -> Vec<u8> {
    assert_eq!(&m[0..4], &[b'S', b'R', 0x02, 0x01]);
    let suite = m[4];
    assert_eq!(m[5], 0x02, "framed layout");
    let frame_len = u32::from_be_bytes(m[6..10].try_into().unwrap()) as usize;
    let message_id = &m[10..42];
    let clen = u16::from_be_bytes(m[42..44].try_into().unwrap()) as usize;
    let ctx = &m[44..44 + clen];
    let mut p = 44 + clen;
    let count = m[p];
    p += 1;
    let mut data_key = None;
    for _ in 0..count {
        let wl = u16::from_be_bytes(m[p..p + 2].try_into().unwrap()) as usize;
        let (_, _, dk) = decode_blob(&m[p + 2..p + 2 + wl], keys, ctx);
        data_key.get_or_insert(dk);
        p += 2 + wl;
    }
    let dk = data_key.unwrap();
    let commitment = &m[p..p + 32];
    p += 32;
    let header = &m[..p];
    let header_tag = &m[p..p + 16];
    p += 16;
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(message_id), &dk);
    let mut body_key = [0u8; 32];
    hk.expand_multi_info(&[b"strongroom/v1 body key", &[suite]], &mut body_key)
        .unwrap();
    let mut commit = [0u8; 32];
    hk.expand_multi_info(&[b"strongroom/v1 commitment", &[suite]], &mut commit)
        .unwrap();
    assert_eq!(commit.as_slice(), commitment, "key commitment");
    let nonce = |seq: u32| {
        let mut n = [0u8; 12];
        n[8..].copy_from_slice(&seq.to_be_bytes());
        n
    };
    assert_eq!(
        aead_open(suite, &body_key, &nonce(0), header, header_tag),
        Some(Vec::new()),
        "header tag"
    );
    let frame_aad = |fin: u8, seq: u32, len: u64| {
        let mut a = message_id.to_vec();
        a.push(fin);
        a.extend_from_slice(&seq.to_be_bytes());
        a.extend_from_slice(&len.to_be_bytes());
        a
    };
    let mut out = Vec::new();
    let mut expect = 1u32;
    loop {
        let marker = u32::from_be_bytes(m[p..p + 4].try_into().unwrap());
        p += 4;
        if marker == 0xFFFF_FFFF {
            let seq = u32::from_be_bytes(m[p..p + 4].try_into().unwrap());
            let len = u32::from_be_bytes(m[p + 4..p + 8].try_into().unwrap()) as usize;
            p += 8;
            assert_eq!(seq, expect);
            let ct = &m[p..p + len + 16];
            out.extend(
                aead_open(
                    suite,
                    &body_key,
                    &nonce(seq),
                    &frame_aad(1, seq, len as u64),
                    ct,
                )
                .unwrap(),
            );
            p += len + 16;
            break;
        }
        assert_eq!(marker, expect);
        let ct = &m[p..p + frame_len + 16];
        out.extend(
            aead_open(
                suite,
                &body_key,
                &nonce(marker),
                &frame_aad(0, marker, frame_len as u64),
                ct,
            )
            .unwrap(),
        );
        p += frame_len + 16;
        expect += 1;
    }
    assert_eq!(p, m.len(), "no trailing bytes");
    out
}

#[test]
fn independent_decoder_reads_frozen_vectors() {
    for v in all_frozen() {
        independent_decoder_reads(&v);
    }
}

#[test]
fn independent_decoder_reads_every_providers_output() {
    for provider in CryptoProvider::all() {
        independent_decoder_reads(&generate(*provider));
    }
}

fn independent_decoder_reads(v: &Vectors) {
    for b in &v.blobs {
        let (key_id, version, pt) = decode_blob(
            &unhex(&b.ciphertext_hex),
            &v.keys,
            &context_bytes(&b.context),
        );
        let want = v.keys.iter().find(|k| k.alias == b.key).unwrap();
        assert_eq!(key_id, want.key_id);
        assert_eq!(version, 1);
        assert_eq!(hex(&pt), b.plaintext_hex);
    }
    for m in &v.messages {
        let msg = unhex(&m.message_hex);
        let clen = u16::from_be_bytes(msg[42..44].try_into().unwrap()) as usize;
        assert_eq!(&msg[44..44 + clen], context_bytes(&m.context).as_slice());
        assert_eq!(hex(&decode_message(&msg, &v.keys)), m.plaintext_hex);
    }
}
