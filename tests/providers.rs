//! Crypto providers: every provider compiled in (`CryptoProvider::all`)
//! writes the same bytes and reads every other provider's output.
//!
//! Rings seeded with the same `InsecureSeededRandom` draw the same key ids,
//! master keys, data keys, nonces and message ids, so everything they write
//! must be byte-identical whatever the provider. ECDSA nonces are the
//! provider's own (RFC 6979 for RustCrypto, random for AWS-LC), so ECDSA
//! signatures are checked by verifying each provider's signatures with
//! every provider instead.
//!
//! With only the default provider compiled in, the comparisons are between
//! a provider and itself (still real round trips); CI builds with
//! `--all-features`, which adds `aws-lc-rs`.

use std::io::{Read, Write};
use std::sync::Arc;
use strongroom::crypto::CryptoProvider;
use strongroom::hazmat::InsecureSeededRandom;
use strongroom::key::SymmetricAlgorithm;
use strongroom::keyring::SignOptions;
use strongroom::verify::{MessageType, PublicKeyVerifier, SignatureFormat};
use strongroom::{
    Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal, SealOptions,
};

const SEED: [u8; 32] = *b"strongroom crypto provider tests";

/// A deterministic ring (two sealing threads) with `provider`.
fn client(provider: CryptoProvider) -> Client {
    let ring = KeyRing::builder()
        .random(Arc::new(InsecureSeededRandom::new(SEED)))
        .crypto_provider(provider)
        .threads(2)
        .build();
    assert_eq!(ring.crypto_provider(), provider);
    ring.client(Principal::service("providers").unwrap())
}

/// Everything one provider writes, in a fixed order.
#[derive(Debug, PartialEq)]
struct Outputs {
    keys: Vec<String>,
    blobs: Vec<Vec<u8>>,
    messages: Vec<Vec<u8>>,
    streams: Vec<Vec<u8>>,
    data_key_ciphertexts: Vec<Vec<u8>>,
    data_key_plaintexts: Vec<Vec<u8>>,
    ed25519_signatures: Vec<Vec<u8>>,
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 131 % 251) as u8).collect()
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new()
        .with("tenant", "acme")
        .with("purpose", "providers")
}

/// Sizes: empty, short, a few frames, and above the parallel threshold
/// (512 KiB) so the threaded frame path runs too.
const SIZES: [usize; 4] = [0, 1000, 3 * 4096 + 5, 600 * 1024];

fn write_all(c: &Client) -> Outputs {
    let mut out = Outputs {
        keys: Vec::new(),
        blobs: Vec::new(),
        messages: Vec::new(),
        streams: Vec::new(),
        data_key_ciphertexts: Vec::new(),
        data_key_plaintexts: Vec::new(),
        ed25519_signatures: Vec::new(),
    };
    for alg in [
        SymmetricAlgorithm::Aes256Gcm,
        SymmetricAlgorithm::ChaCha20Poly1305,
    ] {
        let k = c
            .create_key(KeySpec::Symmetric(alg), CreateKeyOptions::new())
            .unwrap()
            .to_string();
        out.blobs.push(c.encrypt(&k, &data(1000), &ctx()).unwrap());
        for n in SIZES {
            out.messages.push(
                c.seal_with(&k, &data(n), &ctx(), SealOptions::new().frame_len(4096))
                    .unwrap(),
            );
        }
        let mut w = c
            .seal_writer(&k, &ctx(), SealOptions::new().frame_len(1024), Vec::new())
            .unwrap();
        w.write_all(&data(5000)).unwrap();
        out.streams.push(w.finish().unwrap());
        let dk = c.generate_data_key(&k, &ctx()).unwrap();
        out.data_key_ciphertexts.push(dk.ciphertext().to_vec());
        out.data_key_plaintexts
            .push(dk.plaintext().expose_secret().to_vec());
        out.keys.push(k);
    }
    let ed = c
        .create_key(KeySpec::Ed25519, CreateKeyOptions::new())
        .unwrap()
        .to_string();
    for m in [&b""[..], b"hello", &data(10_000)] {
        out.ed25519_signatures
            .push(c.sign(&ed, m, SignOptions::default()).unwrap());
    }
    out.keys.push(ed);
    out
}

#[test]
fn every_provider_writes_the_same_bytes() {
    let reference = write_all(&client(CryptoProvider::rust_crypto()));
    for p in CryptoProvider::all() {
        assert_eq!(write_all(&client(*p)), reference, "{p}");
    }
}

#[test]
fn every_provider_opens_every_providers_output() {
    for writer in CryptoProvider::all() {
        let w = client(*writer);
        let written = write_all(&w);
        for reader in CryptoProvider::all() {
            // A fresh ring with the same seed holds the same keys.
            let r = client(*reader);
            assert_eq!(write_all(&r).keys, written.keys);
            for b in &written.blobs {
                let out = r.decrypt(b, &ctx()).unwrap();
                assert_eq!(out.plaintext.expose_secret(), &data(1000)[..]);
            }
            for (m, n) in written.messages.iter().zip(SIZES.iter().cycle()) {
                let out = r.open(m, &ctx()).unwrap();
                assert_eq!(
                    out.plaintext.expose_secret(),
                    &data(*n)[..],
                    "{writer} -> {reader}"
                );
            }
            for s in &written.streams {
                let mut plain = Vec::new();
                r.open_reader(&s[..], &ctx())
                    .unwrap()
                    .read_to_end(&mut plain)
                    .unwrap();
                assert_eq!(plain, data(5000));
            }
            for (ct, pt) in written
                .data_key_ciphertexts
                .iter()
                .zip(&written.data_key_plaintexts)
            {
                assert_eq!(
                    r.decrypt(ct, &ctx()).unwrap().plaintext.expose_secret(),
                    &pt[..]
                );
            }
        }
    }
}

#[test]
fn tampering_is_the_opaque_error_under_every_provider() {
    for p in CryptoProvider::all() {
        let c = client(*p);
        let k = c
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
        let msg = c
            .seal_with(
                &k,
                &data(20_000),
                &ctx(),
                SealOptions::new().frame_len(4096),
            )
            .unwrap();
        let blob = c.encrypt(&k, b"secret", &ctx()).unwrap();
        for pos in [msg.len() - 1, msg.len() / 2, 60] {
            let mut bad = msg.clone();
            bad[pos] ^= 0x01;
            assert!(
                matches!(c.open(&bad, &ctx()), Err(Error::DecryptionFailed)),
                "{p}: flip at {pos}"
            );
        }
        let mut bad = blob.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x80;
        assert!(
            matches!(c.decrypt(&bad, &ctx()), Err(Error::DecryptionFailed)),
            "{p}"
        );
        let other = EncryptionContext::new().with("tenant", "other");
        assert!(c.open(&msg, &other).is_err(), "{p}");
    }
}

/// The order of the P-256 group, big-endian, and half of it: a low-S
/// signature has `s <= n / 2`.
const P256_HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

#[test]
fn ecdsa_signatures_verify_across_providers_and_are_low_s() {
    let raw = SignOptions::default().format(SignatureFormat::Raw);
    let der = SignOptions::default();
    let msg = data(3000);
    for signer in CryptoProvider::all() {
        let s = client(*signer);
        let k = s
            .create_key(KeySpec::EccNistP256, CreateKeyOptions::new())
            .unwrap();
        let public = PublicKeyVerifier::from_spki_der(&s.get_public_key(&k).unwrap().der).unwrap();
        let mut seen = Vec::new();
        for _ in 0..16 {
            let sig = s.sign(&k, &msg, raw).unwrap();
            assert_eq!(sig.len(), 64);
            assert!(sig[32..] <= P256_HALF_N[..], "{signer}: high S");
            seen.push(sig);
        }
        let mut distinct = seen.clone();
        distinct.sort();
        distinct.dedup();
        // RustCrypto's nonces are deterministic (RFC 6979), AWS-LC's random.
        let want = if *signer == CryptoProvider::rust_crypto() {
            1
        } else {
            16
        };
        assert_eq!(distinct.len(), want, "{signer}");
        let sig_der = s.sign(&k, &msg, der).unwrap();
        let digest = {
            use sha2::Digest;
            sha2::Sha256::digest(&msg).to_vec()
        };
        let sig_digest = s
            .sign(&k, &digest, raw.message_type(MessageType::Digest))
            .unwrap();
        for verifier in CryptoProvider::all() {
            // The same keys in a ring of the other provider.
            let v = client(*verifier);
            v.create_key(KeySpec::EccNistP256, CreateKeyOptions::new())
                .unwrap();
            for (sig, opts) in [(&seen[0], raw), (&sig_der, der)] {
                assert!(
                    v.verify(&k, &msg, sig, opts).unwrap(),
                    "{signer} -> {verifier}"
                );
                assert!(
                    public
                        .verify_with(*verifier, &msg, sig, MessageType::Raw, opts.format)
                        .unwrap()
                );
                let mut bad = sig.clone();
                let n = bad.len();
                bad[n - 3] ^= 0x10;
                assert!(
                    !v.verify(&k, &msg, &bad, opts).unwrap(),
                    "{signer} -> {verifier}"
                );
                assert!(!v.verify(&k, b"other message", sig, opts).unwrap());
            }
            assert!(
                public
                    .verify_with(
                        *verifier,
                        &digest,
                        &sig_digest,
                        MessageType::Digest,
                        SignatureFormat::Raw
                    )
                    .unwrap()
            );
            assert!(
                v.verify(
                    &k,
                    &digest,
                    &sig_digest,
                    raw.message_type(MessageType::Digest)
                )
                .unwrap()
            );
            // A digest of the wrong length is an argument error everywhere.
            assert!(matches!(
                public.verify_with(
                    *verifier,
                    b"short",
                    &sig_digest,
                    MessageType::Digest,
                    SignatureFormat::Raw
                ),
                Err(Error::InvalidArgument(_))
            ));
            // Malformed signatures are simply invalid.
            for junk in [&b""[..], &[0u8; 64], &[0xffu8; 64], &[0x30, 0x02, 0x01]] {
                for f in [SignatureFormat::Raw, SignatureFormat::Der] {
                    assert!(
                        !public
                            .verify_with(*verifier, &msg, junk, MessageType::Raw, f)
                            .unwrap()
                    );
                }
            }
        }
    }
}

#[test]
fn ed25519_signatures_verify_across_providers() {
    for signer in CryptoProvider::all() {
        let s = client(*signer);
        let k = s
            .create_key(KeySpec::Ed25519, CreateKeyOptions::new())
            .unwrap();
        let public = PublicKeyVerifier::from_spki_der(&s.get_public_key(&k).unwrap().der).unwrap();
        let sig = s.sign(&k, b"message", SignOptions::default()).unwrap();
        for verifier in CryptoProvider::all() {
            assert!(
                public
                    .verify_with(
                        *verifier,
                        b"message",
                        &sig,
                        MessageType::Raw,
                        SignatureFormat::Der
                    )
                    .unwrap()
            );
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert!(
                !public
                    .verify_with(
                        *verifier,
                        b"message",
                        &bad,
                        MessageType::Raw,
                        SignatureFormat::Der
                    )
                    .unwrap()
            );
            assert!(
                !public
                    .verify_with(
                        *verifier,
                        b"message",
                        &sig[..63],
                        MessageType::Raw,
                        SignatureFormat::Der
                    )
                    .unwrap()
            );
            assert!(matches!(
                public.verify_with(
                    *verifier,
                    b"message",
                    &sig,
                    MessageType::Digest,
                    SignatureFormat::Der
                ),
                Err(Error::InvalidArgument(_))
            ));
        }
    }
}

/// A small-order Ed25519 public key (the identity point, y = 1) is refused
/// by every provider, as ed25519-dalek's strict verification does, even for
/// a signature that satisfies the verification equation: with A the
/// identity, R = s·B for any s.
#[test]
fn small_order_ed25519_keys_are_refused_by_every_provider() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap();
    let spki = ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_der(&vk).unwrap();
    let public = PublicKeyVerifier::from_spki_der(spki.as_bytes()).unwrap();
    // s = 1: R = B (the base point's encoding), then s.
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&curve_base_point());
    sig[32] = 1;
    for p in CryptoProvider::all() {
        assert!(
            !public
                .verify_with(
                    *p,
                    b"anything",
                    &sig,
                    MessageType::Raw,
                    SignatureFormat::Der
                )
                .unwrap(),
            "{p}"
        );
    }
}

/// The Ed25519 base point's encoding (RFC 8032: y = 4/5).
fn curve_base_point() -> [u8; 32] {
    let mut b = [0x66u8; 32];
    b[0] = 0x58;
    b
}

#[test]
fn names_defaults_and_random_sources() {
    let all = CryptoProvider::all();
    assert_eq!(all[0], CryptoProvider::rust_crypto());
    for p in all {
        assert_eq!(CryptoProvider::from_name(p.name()).unwrap(), *p);
        assert_eq!(format!("{p:?}"), format!("CryptoProvider({})", p.name()));
        let rng = p.random();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        rng.fill(&mut a).unwrap();
        rng.fill(&mut b).unwrap();
        assert_ne!(a, b, "{p}");
        assert_ne!(a, [0u8; 32], "{p}");
    }
    let err = CryptoProvider::from_name("openssl").unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    assert!(err.to_string().contains("rust-crypto"), "{err}");
    #[cfg(feature = "aws-lc-rs")]
    assert_eq!(
        CryptoProvider::from_name("aws-lc-rs").unwrap(),
        CryptoProvider::aws_lc_rs()
    );
    // A ring with no provider set has the default.
    assert_eq!(
        KeyRing::in_memory().crypto_provider(),
        CryptoProvider::default()
    );
}

/// Under `testing`, `STRONGROOM_TEST_CRYPTO_PROVIDER` chooses the default
/// (CI runs the suite a second time with `aws-lc-rs`).
#[cfg(feature = "testing")]
#[test]
fn the_test_environment_variable_chooses_the_default() {
    let want = match std::env::var(strongroom::crypto::TEST_PROVIDER_ENV) {
        Ok(name) => CryptoProvider::from_name(&name).unwrap(),
        Err(_) => CryptoProvider::rust_crypto(),
    };
    assert_eq!(CryptoProvider::default(), want);
    assert_eq!(KeyRing::in_memory().crypto_provider(), want);
}
