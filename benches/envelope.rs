//! Envelope encryption against raw AEAD baselines measured in the same run.
//!
//! Run: `cargo bench --bench envelope`, then
//! `cargo run --release --example bench_report` for the table of ratios.
//!
//! Groups (each holds our path and its baseline, same bytes, same run):
//! - `seal_aes` / `seal_chacha`: `seal` and `open` vs raw AEAD encryption
//!   and decryption of the same bytes with a pre-built key;
//! - `direct`: `encrypt`/`decrypt` of 1 KiB vs one raw AEAD call with a
//!   fresh OS-random nonce; `generate_data_key` vs the composite minimum
//!   (one OS RNG fill + one AEAD wrap of 32 bytes); `seal` of 1 KiB vs the
//!   composite minimum of an envelope (RNG fill + wrap + body AEAD); `open`
//!   of 1 KiB vs its composite minimum (unwrap + key schedule + body AEAD);
//! - `scale`: `encrypt` of 1 KiB with 10 and with 100,000 keys in the ring,
//!   on one hot key and spread over every key.
//! - `zeroize`: the cost of zeroizing 1 MiB of returned plaintext on drop;
//! - `large`: seal and open of 64 MiB on every core and on one thread vs
//!   raw AES-256-GCM of the same bytes;
//! - `cache`: seal and open of 1 KiB with the data-key cache vs without;
//! - `scaling`: encrypt, seal and raw AEAD of 1 KiB, the same number of
//!   operations on one thread and split over two (one shared ring);
//! - `ranged`: on a 64 MiB message, `open_range` of 4 KiB vs `open` of the
//!   whole message, and `rewrap_message` (new header, body copied) and
//!   `rewrap_header` (the header of a stream) vs `re_encrypt_message` (open
//!   and seal again);
//! - `sign`: sign/verify through the ring (memory backend) vs the p256 and
//!   ed25519-dalek crates called directly with the same key (low-S
//!   normalization included on both sides for P-256; strict Ed25519 verify).
//! - `provider` (feature `aws-lc-rs`): a ring with the accelerated provider
//!   (`CryptoProvider::aws_lc_rs`, one thread) vs aws-lc-rs called directly:
//!   seal/open of 1 MiB vs raw AES-256-GCM of the same bytes, P-256
//!   sign/verify of 256 bytes vs `EcdsaKeyPair::sign` / `ParsedPublicKey`
//!   with the same key. Run only these rows with
//!   `cargo bench --bench envelope --features aws-lc-rs -- provider/`.

use aes_gcm::aead::{AeadInOut, KeyInit};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use strongroom::key::SymmetricAlgorithm;
use strongroom::keyring::{RewrapOptions, SignOptions};
use strongroom::{Client, CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};

const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 1024 * 1024];

fn client_with_key(alg: SymmetricAlgorithm) -> (Client, String) {
    let ring = KeyRing::in_memory();
    let c = ring.client(Principal::service("bench").unwrap());
    let id = c
        .create_key(KeySpec::Symmetric(alg), CreateKeyOptions::new())
        .unwrap();
    (c, id.to_string())
}

fn raw_seal<A: AeadInOut>(cipher: &A, nonce: &aes_gcm::aead::Nonce<A>, buf: &mut [u8]) {
    let tag = cipher
        .encrypt_inout_detached(nonce, b"", buf.into())
        .unwrap();
    black_box(tag);
}

fn seal_group<A: AeadInOut + KeyInit>(c: &mut Criterion, name: &str, alg: SymmetricAlgorithm) {
    let (client, key) = client_with_key(alg);
    let ctx = EncryptionContext::new().with("bench", "1");
    let raw = A::new(&Default::default());
    let nonce = aes_gcm::aead::Nonce::<A>::default();
    let mut g = c.benchmark_group(name);
    for n in SIZES {
        let data = vec![0x5au8; n];
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_with_input(BenchmarkId::new("seal", n), &data, |b, d| {
            b.iter(|| black_box(client.seal(&key, d, &ctx).unwrap()))
        });
        let msg = client.seal(&key, &data, &ctx).unwrap();
        g.bench_with_input(BenchmarkId::new("open", n), &msg, |b, m| {
            // The returned plaintext is zeroized on drop (volatile byte
            // writes); `iter_with_large_drop` keeps that out of the timed
            // decryption path, as the baseline's buffer drop is too. The
            // zeroize cost is measured on its own in `zeroize/1048576`.
            b.iter_with_large_drop(|| client.open(m, &ctx).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("raw_encrypt", n), &data, |b, d| {
            b.iter(|| {
                let mut buf = d.clone();
                raw_seal(&raw, &nonce, &mut buf);
                black_box(buf)
            })
        });
        let mut ct = data.clone();
        let tag = raw
            .encrypt_inout_detached(&nonce, b"", ct.as_mut_slice().into())
            .unwrap();
        g.bench_with_input(BenchmarkId::new("raw_decrypt", n), &ct, |b, ct| {
            // Same drop treatment as `open`, so both pay the same allocator
            // and page-fault costs.
            b.iter_with_large_drop(|| {
                let mut buf = ct.clone();
                raw.decrypt_inout_detached(&nonce, b"", buf.as_mut_slice().into(), &tag)
                    .unwrap();
                buf
            })
        });
    }
    g.finish();
}

fn zeroize_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("zeroize");
    let n = 1024 * 1024;
    g.throughput(Throughput::Bytes(n as u64));
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter_batched(
            || strongroom::SecretBytes::new(vec![0x5au8; n]),
            drop,
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn seal_aes(c: &mut Criterion) {
    seal_group::<aes_gcm::Aes256Gcm>(c, "seal_aes", SymmetricAlgorithm::Aes256Gcm);
}

fn seal_chacha(c: &mut Criterion) {
    seal_group::<chacha20poly1305::ChaCha20Poly1305>(
        c,
        "seal_chacha",
        SymmetricAlgorithm::ChaCha20Poly1305,
    );
}

fn direct(c: &mut Criterion) {
    let (client, key) = client_with_key(SymmetricAlgorithm::Aes256Gcm);
    let ctx = EncryptionContext::new().with("bench", "1");
    let raw = aes_gcm::Aes256Gcm::new(&Default::default());
    let data = vec![0x5au8; 1024];
    let mut g = c.benchmark_group("direct");

    // Composite minimum of one AEAD call: a fresh OS-random nonce + AEAD.
    g.bench_function("raw_aead_1k", |b| {
        b.iter(|| {
            let mut nonce = [0u8; 12];
            getrandom::fill(&mut nonce).unwrap();
            let mut buf = data.clone();
            raw_seal(&raw, &nonce.into(), &mut buf);
            black_box(buf)
        })
    });
    g.bench_function("encrypt_1k", |b| {
        b.iter(|| black_box(client.encrypt(&key, &data, &ctx).unwrap()))
    });
    let blob = client.encrypt(&key, &data, &ctx).unwrap();
    g.bench_function("decrypt_1k", |b| {
        b.iter(|| black_box(client.decrypt(&blob, &ctx).unwrap()))
    });

    // Composite minimum of a data key: one RNG fill (key + nonce) + one wrap.
    g.bench_function("composite_data_key", |b| {
        b.iter(|| {
            let mut rnd = [0u8; 44];
            getrandom::fill(&mut rnd).unwrap();
            let (dk, nonce) = rnd.split_at(32);
            let mut buf = dk.to_vec();
            raw_seal(&raw, &<[u8; 12]>::try_from(nonce).unwrap().into(), &mut buf);
            black_box(buf)
        })
    });
    g.bench_function("generate_data_key", |b| {
        b.iter(|| black_box(client.generate_data_key(&key, &ctx).unwrap()))
    });

    // Composite minimum of an envelope of 1 KiB: one RNG fill, a wrap of the
    // data key, and the AEAD of the body under the data key.
    g.bench_function("composite_seal_1k", |b| {
        b.iter(|| {
            let mut rnd = [0u8; 44];
            getrandom::fill(&mut rnd).unwrap();
            let (dk, nonce) = rnd.split_at(32);
            let nonce: [u8; 12] = nonce.try_into().unwrap();
            let mut wrapped = dk.to_vec();
            raw_seal(&raw, &nonce.into(), &mut wrapped);
            let body_cipher = aes_gcm::Aes256Gcm::new_from_slice(dk).unwrap();
            let mut buf = data.clone();
            raw_seal(&body_cipher, &nonce.into(), &mut buf);
            black_box((wrapped, buf))
        })
    });
    g.bench_function("seal_1k", |b| {
        b.iter(|| black_box(client.seal(&key, &data, &ctx).unwrap()))
    });

    // Composite minimum of opening an envelope of 1 KiB: unwrap the data
    // key (AEAD decrypt of 32 bytes under a ready master-key cipher), the
    // body cipher's key schedule, and the AEAD decrypt of the body.
    let mut rnd = [0u8; 44];
    getrandom::fill(&mut rnd).unwrap();
    let (dk, nonce) = rnd.split_at(32);
    let nonce: [u8; 12] = nonce.try_into().unwrap();
    let mut wrapped = dk.to_vec();
    let wrap_tag = raw
        .encrypt_inout_detached(&nonce.into(), b"", wrapped.as_mut_slice().into())
        .unwrap();
    let body_cipher = aes_gcm::Aes256Gcm::new_from_slice(dk).unwrap();
    let mut body = data.clone();
    let body_tag = body_cipher
        .encrypt_inout_detached(&nonce.into(), b"", body.as_mut_slice().into())
        .unwrap();
    g.bench_function("composite_open_1k", |b| {
        b.iter(|| {
            let mut dk = wrapped.clone();
            raw.decrypt_inout_detached(&nonce.into(), b"", dk.as_mut_slice().into(), &wrap_tag)
                .unwrap();
            let body_cipher = aes_gcm::Aes256Gcm::new_from_slice(&dk).unwrap();
            let mut buf = body.clone();
            body_cipher
                .decrypt_inout_detached(&nonce.into(), b"", buf.as_mut_slice().into(), &body_tag)
                .unwrap();
            black_box(buf)
        })
    });
    // The same with what the message format adds to any envelope: key
    // commitment and a per-message body key (one HKDF-SHA256 extract and
    // two expands), and the header's tag (an AEAD of the ~150-byte header).
    // Ours ÷ this is the pipeline's own overhead (lookup, policy, usage,
    // audit, encoding, allocations).
    let header = vec![0x11u8; 150];
    let format_keys = |dk: &[u8], message_id: &[u8]| {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(message_id), dk);
        let mut body_key = [0u8; 32];
        let mut commitment = [0u8; 32];
        hk.expand_multi_info(&[b"strongroom/v1 body key", &[1]], &mut body_key)
            .unwrap();
        hk.expand_multi_info(&[b"strongroom/v1 commitment", &[1]], &mut commitment)
            .unwrap();
        (
            aes_gcm::Aes256Gcm::new_from_slice(&body_key).unwrap(),
            commitment,
        )
    };
    g.bench_function("format_seal_1k", |b| {
        b.iter(|| {
            let mut rnd = [0u8; 76];
            getrandom::fill(&mut rnd).unwrap();
            let (dk, rest) = rnd.split_at(32);
            let (nonce, message_id) = rest.split_at(12);
            let nonce: [u8; 12] = nonce.try_into().unwrap();
            let mut wrapped = dk.to_vec();
            raw_seal(&raw, &nonce.into(), &mut wrapped);
            let (body_cipher, commitment) = format_keys(dk, message_id);
            let header_tag = body_cipher
                .encrypt_inout_detached(&nonce.into(), &header, (&mut [][..]).into())
                .unwrap();
            let mut buf = data.clone();
            raw_seal(&body_cipher, &nonce.into(), &mut buf);
            black_box((wrapped, commitment, header_tag, buf))
        })
    });
    let message_id = [7u8; 32];
    let (fmt_cipher, fmt_commitment) = format_keys(dk, &message_id);
    let fmt_header_tag = fmt_cipher
        .encrypt_inout_detached(&nonce.into(), &header, (&mut [][..]).into())
        .unwrap();
    let mut fmt_body = data.clone();
    let fmt_body_tag = fmt_cipher
        .encrypt_inout_detached(&nonce.into(), b"", fmt_body.as_mut_slice().into())
        .unwrap();
    g.bench_function("format_open_1k", |b| {
        b.iter(|| {
            let mut dk = wrapped.clone();
            raw.decrypt_inout_detached(&nonce.into(), b"", dk.as_mut_slice().into(), &wrap_tag)
                .unwrap();
            let (body_cipher, commitment) = format_keys(&dk, &message_id);
            assert!(commitment == fmt_commitment);
            body_cipher
                .decrypt_inout_detached(
                    &nonce.into(),
                    &header,
                    (&mut [][..]).into(),
                    &fmt_header_tag,
                )
                .unwrap();
            let mut buf = fmt_body.clone();
            body_cipher
                .decrypt_inout_detached(
                    &nonce.into(),
                    b"",
                    buf.as_mut_slice().into(),
                    &fmt_body_tag,
                )
                .unwrap();
            black_box(buf)
        })
    });
    let message = client.seal(&key, &data, &ctx).unwrap();
    g.bench_function("open_1k", |b| {
        b.iter(|| black_box(client.open(&message, &ctx).unwrap()))
    });
    g.finish();
}

fn scale(c: &mut Criterion) {
    let ctx = EncryptionContext::new().with("bench", "1");
    let data = vec![0x5au8; 1024];
    let mut g = c.benchmark_group("scale");
    for n in [10usize, 100_000] {
        let ring = KeyRing::in_memory();
        let client = ring.client(Principal::service("bench").unwrap());
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(
                client
                    .create_key(KeySpec::default(), CreateKeyOptions::new())
                    .unwrap()
                    .to_string(),
            );
        }
        // One key used over and over: measures how lookups scale with the
        // number of keys in the ring (hash maps: they should not).
        let hot = ids[ids.len() / 2].clone();
        g.bench_function(BenchmarkId::new("encrypt_1k_one_key", n), |b| {
            b.iter(|| black_box(client.encrypt(&hot, &data, &ctx).unwrap()))
        });
        // Calls spread over all keys: at 100,000 keys the working set
        // (metadata + key schedules, ~100 MB) exceeds the CPU caches, so this
        // adds the memory latency of cold keys.
        let mut i = 0usize;
        g.bench_function(BenchmarkId::new("encrypt_1k_spread", n), |b| {
            b.iter(|| {
                i = (i + 7919) % ids.len();
                black_box(client.encrypt(&ids[i], &data, &ctx).unwrap())
            })
        });
    }
    g.finish();
}

fn signing(c: &mut Criterion) {
    use p256::ecdsa::signature::{Signer, Verifier};
    use strongroom::verify::SignatureFormat;
    let client = KeyRing::in_memory().client(Principal::service("bench").unwrap());
    let msg = [0x5au8; 256];
    let mut g = c.benchmark_group("sign");
    // The same key material on both sides: imported into the ring.
    let raw_p256 = p256::ecdsa::SigningKey::from_slice(&[0x42u8; 32]).unwrap();
    let params = client
        .get_parameters_for_import(KeySpec::EccNistP256)
        .unwrap();
    let k = client
        .import_key(
            &params.import_token,
            &params.wrap(&raw_p256.to_bytes()).unwrap(),
            CreateKeyOptions::new(),
        )
        .unwrap();
    let k = k.as_str();
    g.bench_function("p256_sign", |b| {
        b.iter(|| {
            black_box(
                client
                    .sign(k, &msg, SignOptions::default().format(SignatureFormat::Raw))
                    .unwrap(),
            )
        })
    });
    g.bench_function("raw_p256_sign", |b| {
        b.iter(|| {
            let s: p256::ecdsa::Signature = raw_p256.sign(&msg);
            black_box(s.normalize_s())
        })
    });
    let sig = client
        .sign(k, &msg, SignOptions::default().format(SignatureFormat::Raw))
        .unwrap();
    let parsed = p256::ecdsa::Signature::from_slice(&sig).unwrap();
    g.bench_function("p256_verify", |b| {
        b.iter(|| {
            assert!(
                client
                    .verify(
                        k,
                        &msg,
                        &sig,
                        SignOptions::default().format(SignatureFormat::Raw)
                    )
                    .unwrap()
            )
        })
    });
    let vk = *raw_p256.verifying_key();
    g.bench_function("raw_p256_verify", |b| {
        b.iter(|| vk.verify(&msg, &parsed).unwrap())
    });
    let raw_ed = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let params = client.get_parameters_for_import(KeySpec::Ed25519).unwrap();
    let k = client
        .import_key(
            &params.import_token,
            &params.wrap(&raw_ed.to_bytes()).unwrap(),
            CreateKeyOptions::new(),
        )
        .unwrap();
    let k = k.as_str();
    g.bench_function("ed25519_sign", |b| {
        b.iter(|| {
            black_box(
                client
                    .sign(k, &msg, SignOptions::default().format(SignatureFormat::Raw))
                    .unwrap(),
            )
        })
    });
    g.bench_function("raw_ed25519_sign", |b| {
        b.iter(|| black_box(raw_ed.sign(&msg)))
    });
    let sig = client
        .sign(k, &msg, SignOptions::default().format(SignatureFormat::Raw))
        .unwrap();
    let parsed = ed25519_dalek::Signature::from_slice(&sig).unwrap();
    let vk = raw_ed.verifying_key();
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| {
            assert!(
                client
                    .verify(
                        k,
                        &msg,
                        &sig,
                        SignOptions::default().format(SignatureFormat::Raw)
                    )
                    .unwrap()
            )
        })
    });
    g.bench_function("raw_ed25519_verify", |b| {
        b.iter(|| vk.verify_strict(&msg, &parsed).unwrap())
    });
    g.finish();
}

/// The accelerated provider against aws-lc-rs itself (same run, same key).
#[cfg(feature = "aws-lc-rs")]
fn provider(c: &mut Criterion) {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
        ParsedPublicKey,
    };
    use strongroom::crypto::CryptoProvider;
    use strongroom::verify::SignatureFormat;
    const N: usize = 1 << 20;
    let client = KeyRing::builder()
        .crypto_provider(CryptoProvider::aws_lc_rs())
        .threads(1)
        .build()
        .client(Principal::service("bench").unwrap());
    let key = client
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let ctx = EncryptionContext::new().with("bench", "1");
    let data = vec![0x5au8; N];
    let mut g = c.benchmark_group("provider");
    g.throughput(Throughput::Bytes(N as u64));
    g.bench_function("seal_1MiB", |b| {
        b.iter(|| black_box(client.seal(&key, &data, &ctx).unwrap()))
    });
    let msg = client.seal(&key, &data, &ctx).unwrap();
    g.bench_function("open_1MiB", |b| {
        b.iter_with_large_drop(|| client.open(&msg, &ctx).unwrap())
    });
    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    let nonce = || Nonce::assume_unique_for_key([0u8; 12]);
    g.bench_function("raw_encrypt_1MiB", |b| {
        b.iter(|| {
            let mut buf = data.clone();
            let tag = raw
                .seal_in_place_separate_tag(nonce(), Aad::empty(), &mut buf)
                .unwrap();
            black_box((buf, tag))
        })
    });
    let mut ct = data.clone();
    let tag = raw
        .seal_in_place_separate_tag(nonce(), Aad::empty(), &mut ct)
        .unwrap();
    g.bench_function("raw_decrypt_1MiB", |b| {
        b.iter_with_large_drop(|| {
            let mut buf = ct.clone();
            raw.open_in_place_separate_tag(nonce(), Aad::empty(), tag.as_ref(), &mut buf)
                .unwrap();
            buf
        })
    });
    g.throughput(Throughput::Elements(1));
    // The same P-256 key on both sides: imported into the ring.
    let scalar = [0x42u8; 32];
    let params = client
        .get_parameters_for_import(KeySpec::EccNistP256)
        .unwrap();
    let k = client
        .import_key(
            &params.import_token,
            &params.wrap(&scalar).unwrap(),
            CreateKeyOptions::new(),
        )
        .unwrap();
    let k = k.as_str();
    let point = p256::ecdsa::SigningKey::from_slice(&scalar)
        .unwrap()
        .verifying_key()
        .to_sec1_point(false);
    let pair = EcdsaKeyPair::from_private_key_and_public_key(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &scalar,
        point.as_bytes(),
    )
    .unwrap();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let msg = [0x5au8; 256];
    let raw_opts = SignOptions::default().format(SignatureFormat::Raw);
    g.bench_function("p256_sign", |b| {
        b.iter(|| black_box(client.sign(k, &msg, raw_opts).unwrap()))
    });
    g.bench_function("raw_p256_sign", |b| {
        b.iter(|| black_box(pair.sign(&rng, &msg).unwrap()))
    });
    let sig = client.sign(k, &msg, raw_opts).unwrap();
    g.bench_function("p256_verify", |b| {
        b.iter(|| assert!(client.verify(k, &msg, &sig, raw_opts).unwrap()))
    });
    let parsed =
        ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref()).unwrap();
    g.bench_function("raw_p256_verify", |b| {
        b.iter(|| parsed.verify_sig(&msg, &sig).unwrap())
    });
    g.finish();
}

#[cfg(not(feature = "aws-lc-rs"))]
fn provider(_: &mut Criterion) {}

/// 64 MiB: seal and open on every core (the ring's default) and on one,
/// against raw AES-256-GCM over the same bytes in one call.
fn large(c: &mut Criterion) {
    const N: usize = 64 << 20;
    let data = vec![0x5au8; N];
    let ctx = EncryptionContext::new().with("bench", "1");
    let mut g = c.benchmark_group("large");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(N as u64));
    for (label, threads) in [("all_cores", None), ("one_thread", Some(1))] {
        let mut b = KeyRing::builder();
        if let Some(t) = threads {
            b = b.threads(t);
        }
        let client = b.build().client(Principal::service("bench").unwrap());
        let key = client
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap()
            .to_string();
        g.bench_function(format!("seal_{label}"), |b| {
            b.iter_with_large_drop(|| client.seal(&key, &data, &ctx).unwrap())
        });
        let msg = client.seal(&key, &data, &ctx).unwrap();
        g.bench_function(format!("open_{label}"), |b| {
            b.iter_with_large_drop(|| client.open(&msg, &ctx).unwrap())
        });
    }
    let raw = aes_gcm::Aes256Gcm::new(&Default::default());
    let nonce = aes_gcm::Nonce::default();
    g.bench_function("raw_encrypt", |b| {
        b.iter_with_large_drop(|| {
            let mut buf = data.clone();
            raw_seal(&raw, &nonce, &mut buf);
            buf
        })
    });
    let mut ct = data.clone();
    let tag = raw
        .encrypt_inout_detached(&nonce, b"", ct.as_mut_slice().into())
        .unwrap();
    g.bench_function("raw_decrypt", |b| {
        b.iter_with_large_drop(|| {
            let mut buf = ct.clone();
            raw.decrypt_inout_detached(&nonce, b"", buf.as_mut_slice().into(), &tag)
                .unwrap();
            buf
        })
    });
    g.finish();
}

/// Seal and open of 1 KiB with the data-key cache against without it (the
/// same ring setup otherwise).
fn cache(c: &mut Criterion) {
    let ctx = EncryptionContext::new().with("bench", "1");
    let data = vec![0x5au8; 1024];
    let mut g = c.benchmark_group("cache");
    for (label, cached) in [("cached", true), ("uncached", false)] {
        let mut b = KeyRing::builder();
        if cached {
            b = b.data_key_cache(strongroom::keyring::DataKeyCacheLimits::new(
                Duration::from_secs(3600),
            ));
        }
        let client = b.build().client(Principal::service("bench").unwrap());
        let key = client
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap()
            .to_string();
        g.bench_function(format!("seal_1k_{label}"), |b| {
            b.iter(|| black_box(client.seal(&key, &data, &ctx).unwrap()))
        });
        let msg = client.seal(&key, &data, &ctx).unwrap();
        g.bench_function(format!("open_1k_{label}"), |b| {
            b.iter(|| black_box(client.open(&msg, &ctx).unwrap()))
        });
    }
    g.finish();
}

fn ranged(c: &mut Criterion) {
    let (client, key) = client_with_key(SymmetricAlgorithm::Aes256Gcm);
    let ctx = EncryptionContext::new().with("bench", "1");
    let n = 64 * 1024 * 1024;
    let msg = client.seal(&key, &vec![0x5au8; n], &ctx).unwrap();
    let mut g = c.benchmark_group("ranged");
    g.sample_size(10);
    // 4 KiB in the middle, across a frame boundary (two frames decrypted).
    let offset = (n / 2 - 2048) as u64;
    g.bench_function("open_range_4k", |b| {
        b.iter_with_large_drop(|| client.open_range(&msg, &ctx, offset, 4096).unwrap())
    });
    g.bench_function("open_full", |b| {
        b.iter_with_large_drop(|| client.open(&msg, &ctx).unwrap())
    });
    g.bench_function("rewrap", |b| {
        b.iter_with_large_drop(|| {
            client
                .rewrap_message(&msg, &ctx, key.as_str(), RewrapOptions::new())
                .unwrap()
        })
    });
    g.bench_function("rewrap_header", |b| {
        b.iter(|| {
            client
                .rewrap_header(
                    std::io::Cursor::new(&msg),
                    &ctx,
                    key.as_str(),
                    RewrapOptions::new(),
                )
                .unwrap()
        })
    });
    g.bench_function("re_encrypt_message", |b| {
        b.iter_with_large_drop(|| client.re_encrypt_message(&msg, &ctx, key.as_str()).unwrap())
    });
    g.finish();
}

/// Scaling on one shared ring: `iters` encryptions (or seals) of 1 KiB done
/// by one thread vs split over two threads (wall time), and raw AES-GCM the
/// same way as the ceiling.
fn scaling(c: &mut Criterion) {
    let (client, key) = client_with_key(SymmetricAlgorithm::Aes256Gcm);
    let ctx = EncryptionContext::new().with("bench", "1");
    let data = vec![0x5au8; 1024];
    let raw = aes_gcm::Aes256Gcm::new(&Default::default());
    let nonce = aes_gcm::Nonce::default();
    let mut g = c.benchmark_group("scaling");
    type Op<'a> = Box<dyn Fn() + Sync + 'a>;
    let ops: Vec<(&str, Op<'_>)> = vec![
        (
            "encrypt_1k",
            Box::new(|| {
                black_box(client.encrypt(&key, &data, &ctx).unwrap());
            }),
        ),
        (
            "seal_1k",
            Box::new(|| {
                black_box(client.seal(&key, &data, &ctx).unwrap());
            }),
        ),
        (
            "raw_aead_1k",
            Box::new(|| {
                let mut buf = data.clone();
                raw_seal(&raw, &nonce, &mut buf);
                black_box(buf);
            }),
        ),
    ];
    for (name, op) in &ops {
        for threads in [1u64, 2] {
            g.bench_function(BenchmarkId::new(*name, format!("{threads}_threads")), |b| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(threads);
                    let start = std::time::Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            s.spawn(|| {
                                for _ in 0..per {
                                    op();
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            });
        }
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = seal_aes, seal_chacha, direct, scale, zeroize_cost, signing, large, cache, ranged, scaling, provider
}
criterion_main!(benches);
