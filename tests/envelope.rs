//! Round trips, tampering and error behaviour of encrypt/decrypt, data keys
//! and envelope messages on the in-memory ring.

use proptest::prelude::*;
use strongroom::key::SymmetricAlgorithm;
use strongroom::{
    CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal, SealOptions,
};

const SPECS: [KeySpec; 2] = [
    KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm),
    KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305),
];

fn setup(spec: KeySpec) -> (strongroom::Client, String) {
    let ring = KeyRing::in_memory();
    let c = ring.client(Principal::user("alice").unwrap());
    let id = c.create_key(spec, CreateKeyOptions::new()).unwrap();
    (c, id.to_string())
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new()
        .with("tenant", "acme")
        .with("purpose", "test")
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 256) as u8).collect()
}

#[test]
fn seal_open_round_trips_every_spec_and_size() {
    for spec in SPECS {
        let (c, key) = setup(spec);
        for n in [0usize, 1, 4096, 65_536, 65_537, 10 * 1024 * 1024] {
            let d = data(n);
            let m = c.seal(&key, &d, &ctx()).unwrap();
            let o = c.open(&m, &ctx()).unwrap();
            assert_eq!(o.plaintext.expose_secret(), d.as_slice(), "{spec} {n}");
            assert_eq!(o.key_id.as_str(), key);
            assert_eq!(o.key_version, 1);
            assert_eq!(o.context, ctx());
        }
    }
}

#[test]
fn seal_open_with_small_frames() {
    let (c, key) = setup(KeySpec::default());
    for frame in [1u32, 7, 16] {
        for n in [0usize, 1, 15, 16, 17, 100] {
            let d = data(n);
            let m = c
                .seal_with(&key, &d, &ctx(), SealOptions::new().frame_len(frame))
                .unwrap();
            assert_eq!(
                c.open(&m, &ctx()).unwrap().plaintext.expose_secret(),
                &d[..]
            );
        }
    }
    let err = c
        .seal_with(&key, b"x", &ctx(), SealOptions::new().frame_len(0))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn encrypt_decrypt_round_trips_every_spec_and_size() {
    for spec in SPECS {
        let (c, key) = setup(spec);
        for n in [1usize, 2, 100, 4096] {
            let d = data(n);
            let blob = c.encrypt(&key, &d, &ctx()).unwrap();
            let out = c.decrypt(&blob, &ctx()).unwrap();
            assert_eq!(out.plaintext.expose_secret(), d.as_slice());
            assert_eq!(out.key_id.as_str(), key);
            assert_eq!(out.key_version, 1);
        }
    }
}

#[test]
fn encrypt_rejects_empty_and_oversized_plaintext() {
    let (c, key) = setup(KeySpec::default());
    for n in [0usize, 4097] {
        let err = c.encrypt(&key, &data(n), &ctx()).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument(ref m) if m.contains("4096")),
            "{err}"
        );
    }
}

#[test]
fn wrong_context_is_opaque() {
    let (c, key) = setup(KeySpec::default());
    let blob = c.encrypt(&key, b"secret", &ctx()).unwrap();
    let msg = c.seal(&key, b"secret", &ctx()).unwrap();
    let wrong = [
        EncryptionContext::new(),
        ctx().with("extra", "1"),
        EncryptionContext::new().with("tenant", "acme"),
        EncryptionContext::new()
            .with("tenant", "ACME")
            .with("purpose", "test"),
    ];
    for w in &wrong {
        assert!(matches!(c.decrypt(&blob, w), Err(Error::DecryptionFailed)));
        assert!(matches!(c.open(&msg, w), Err(Error::DecryptionFailed)));
    }
}

#[test]
fn open_requiring_checks_a_subset() {
    let (c, key) = setup(KeySpec::default());
    let msg = c.seal(&key, b"secret", &ctx()).unwrap();
    let sub = EncryptionContext::new().with("tenant", "acme");
    let o = c.open_requiring(&msg, &sub).unwrap();
    assert_eq!(o.context, ctx());
    assert_eq!(o.plaintext.expose_secret(), b"secret");
    let bad = EncryptionContext::new().with("tenant", "other");
    assert!(matches!(
        c.open_requiring(&msg, &bad),
        Err(Error::DecryptionFailed)
    ));
    let missing = EncryptionContext::new().with("region", "eu");
    assert!(matches!(
        c.open_requiring(&msg, &missing),
        Err(Error::DecryptionFailed)
    ));
}

#[test]
fn wrong_key_is_opaque() {
    // A different ring does not hold the key the message names.
    let (c1, k1) = setup(KeySpec::default());
    let (c2, _k2) = setup(KeySpec::default());
    let msg = c1.seal(&k1, b"secret", &ctx()).unwrap();
    assert!(matches!(
        c2.open(&msg, &ctx()),
        Err(Error::DecryptionFailed)
    ));

    // Same ring, the wrapped key rewritten to name another key of the ring.
    let ka = c1
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let kb = c1
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let blob = c1.encrypt(ka.as_str(), b"secret", &ctx()).unwrap();
    let msg = c1.seal(ka.as_str(), b"secret", &ctx()).unwrap();
    let swap = |bytes: &[u8]| -> Vec<u8> {
        let s = bytes.to_vec();
        let a = ka.as_str().as_bytes();
        let pos = s.windows(a.len()).position(|w| w == a).unwrap();
        let mut s = s;
        s[pos..pos + a.len()].copy_from_slice(kb.as_str().as_bytes());
        s
    };
    assert!(matches!(
        c1.decrypt(&swap(&blob), &ctx()),
        Err(Error::DecryptionFailed)
    ));
    assert!(matches!(
        c1.open(&swap(&msg), &ctx()),
        Err(Error::DecryptionFailed)
    ));
}

#[test]
fn truncations_are_opaque() {
    let (c, key) = setup(KeySpec::default());
    let blob = c.encrypt(&key, b"attack at dawn", &ctx()).unwrap();
    let msg = c
        .seal_with(&key, &data(300), &ctx(), SealOptions::new().frame_len(64))
        .unwrap();
    for cut in 0..blob.len() {
        assert!(
            matches!(
                c.decrypt(&blob[..cut], &ctx()),
                Err(Error::DecryptionFailed)
            ),
            "{cut}"
        );
    }
    for cut in 0..msg.len() {
        assert!(
            matches!(c.open(&msg[..cut], &ctx()), Err(Error::DecryptionFailed)),
            "{cut}"
        );
    }
    // Trailing bytes are refused too.
    let mut longer = msg.clone();
    longer.push(0);
    assert!(matches!(
        c.open(&longer, &ctx()),
        Err(Error::DecryptionFailed)
    ));
}

#[test]
fn every_bit_flip_of_a_sealed_message_is_opaque() {
    let (c, key) = setup(KeySpec::default());
    let msg = c
        .seal_with(
            &key,
            b"a short message",
            &ctx(),
            SealOptions::new().frame_len(8),
        )
        .unwrap();
    assert!(msg.len() >= 200, "message is {} bytes", msg.len());
    for i in 0..msg.len() * 8 {
        let mut m = msg.clone();
        m[i / 8] ^= 1 << (i % 8);
        match c.open(&m, &ctx()) {
            Err(Error::DecryptionFailed) => {}
            other => panic!("bit {i}: {other:?}"),
        }
    }
}

#[test]
fn every_bit_flip_of_a_blob_is_rejected() {
    let (c, key) = setup(KeySpec::default());
    let blob = c.encrypt(&key, b"attack at dawn", &ctx()).unwrap();
    for i in 0..blob.len() * 8 {
        let mut b = blob.clone();
        b[i / 8] ^= 1 << (i % 8);
        // Flips in the key id or version name a key that does not exist:
        // that is the not-found error; everything else is opaque.
        match c.decrypt(&b, &ctx()) {
            Err(Error::DecryptionFailed) | Err(Error::KeyNotFound(_)) => {}
            other => panic!("bit {i}: {other:?}"),
        }
    }
}

#[test]
fn unknown_key_is_not_found() {
    let (c1, k1) = setup(KeySpec::default());
    let (c2, _) = setup(KeySpec::default());
    let blob = c1.encrypt(&k1, b"secret", &ctx()).unwrap();
    assert!(matches!(c2.decrypt(&blob, &ctx()), Err(Error::KeyNotFound(ref k)) if k == &k1));
    assert!(matches!(
        c2.encrypt("alias/nope", b"x", &ctx()),
        Err(Error::AliasNotFound(_))
    ));
    assert!(matches!(
        c2.encrypt("00000000-0000-4000-8000-000000000000", b"x", &ctx()),
        Err(Error::KeyNotFound(_))
    ));
}

#[test]
fn expected_key_check() {
    let (c, k1) = setup(KeySpec::default());
    let k2 = c
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new().alias("alias/other"),
        )
        .unwrap();
    let blob = c.encrypt(&k1, b"secret", &ctx()).unwrap();
    assert!(c.decrypt_with_key(&blob, &ctx(), &k1).is_ok());
    let err = c
        .decrypt_with_key(&blob, &ctx(), "alias/other")
        .unwrap_err();
    assert!(
        matches!(err, Error::IncorrectKey { ref expected, ref found } if expected.as_str() == k2.as_str() && found.as_str() == k1.as_str()),
        "{err}"
    );
}

#[test]
fn data_keys() {
    let (c, key) = setup(KeySpec::default());
    let dk = c.generate_data_key(&key, &ctx()).unwrap();
    assert_eq!(dk.plaintext().len(), 32);
    assert_eq!(dk.key_id().as_str(), key);
    let back = c.decrypt_data_key(dk.ciphertext(), &ctx()).unwrap();
    assert_eq!(back.plaintext(), dk.plaintext());
    assert!(matches!(
        c.decrypt_data_key(dk.ciphertext(), &EncryptionContext::new()),
        Err(Error::DecryptionFailed)
    ));
    let other = c.generate_data_key(&key, &ctx()).unwrap();
    assert_ne!(other.plaintext(), dk.plaintext());

    let ct = c.generate_data_key_without_plaintext(&key, &ctx()).unwrap();
    let k = c.decrypt_data_key(&ct, &ctx()).unwrap();
    assert_eq!(k.plaintext().len(), 32);

    // A blob of something that is not a 32-byte key is not a data key.
    let blob = c.encrypt(&key, b"short", &ctx()).unwrap();
    assert!(matches!(
        c.decrypt_data_key(&blob, &ctx()),
        Err(Error::DecryptionFailed)
    ));
}

#[test]
fn re_encrypt_moves_between_keys_and_contexts() {
    let (c, k1) = setup(KeySpec::default());
    let k2 = c
        .create_key(
            KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305),
            CreateKeyOptions::new(),
        )
        .unwrap();
    let blob = c.encrypt(&k1, b"secret", &ctx()).unwrap();
    let dst = EncryptionContext::new().with("tenant", "beta");
    let moved = c.re_encrypt(&blob, &ctx(), k2.as_str(), &dst).unwrap();
    let out = c.decrypt(&moved, &dst).unwrap();
    assert_eq!(out.plaintext.expose_secret(), b"secret");
    assert_eq!(out.key_id, k2);
    assert!(matches!(
        c.decrypt(&moved, &ctx()),
        Err(Error::DecryptionFailed)
    ));
    assert!(matches!(
        c.re_encrypt(&blob, &dst, k2.as_str(), &dst),
        Err(Error::DecryptionFailed)
    ));
}

#[test]
fn generate_random_bounds() {
    let (c, _) = setup(KeySpec::default());
    assert_eq!(c.generate_random(1).unwrap().len(), 1);
    let a = c.generate_random(1024).unwrap();
    let b = c.generate_random(1024).unwrap();
    assert_eq!(a.len(), 1024);
    assert_ne!(a, b);
    assert!(matches!(
        c.generate_random(0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.generate_random(1025),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn invalid_context_is_an_argument_error() {
    let (c, key) = setup(KeySpec::default());
    let empty_key = EncryptionContext::new().with("", "v");
    assert!(matches!(
        c.encrypt(&key, b"x", &empty_key),
        Err(Error::InvalidArgument(_))
    ));
    let huge = EncryptionContext::new().with("k", "v".repeat(9000));
    assert!(matches!(
        c.seal(&key, b"x", &huge),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn debug_output_shows_no_key_bytes() {
    let (c, key) = setup(KeySpec::default());
    let dk = c.generate_data_key(&key, &ctx()).unwrap();
    let secret = dk.plaintext().expose_secret().to_vec();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let dbg = [
        format!("{dk:?}"),
        format!("{:?}", dk.plaintext()),
        format!("{c:?}"),
        format!("{:?}", c.decrypt(dk.ciphertext(), &ctx()).unwrap()),
    ];
    for d in &dbg {
        assert!(!d.contains(&hex), "{d}");
        assert!(!d.contains(&format!("{secret:?}")), "{d}");
        for w in secret.windows(4) {
            assert!(
                !d.contains(format!("{w:?}").trim_matches(['[', ']'])),
                "{d}"
            );
        }
    }
}

#[test]
fn garbage_never_panics() {
    let (c, _) = setup(KeySpec::default());
    for input in [
        &b""[..],
        b"S",
        b"SR",
        b"SR\x01",
        b"SR\x02\x01",
        b"SR\x01\x01\x01\xff",
        b"SR\x02\x01\x01\x02\xff\xff\xff\xff",
        &[0xffu8; 600][..],
    ] {
        assert!(c.decrypt(input, &ctx()).is_err());
        assert!(c.open(input, &ctx()).is_err());
        assert!(c.re_encrypt(input, &ctx(), "alias/x", &ctx()).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_seal_open(
        d in proptest::collection::vec(any::<u8>(), 0..3000),
        pairs in proptest::collection::btree_map("[a-z]{1,8}", ".{0,12}", 0..5),
        frame in 1u32..512,
        chacha in any::<bool>(),
    ) {
        let spec = if chacha { SPECS[1] } else { SPECS[0] };
        let (c, key) = setup(spec);
        let ctx: EncryptionContext = pairs.into_iter().collect();
        let m = c.seal_with(&key, &d, &ctx, SealOptions::new().frame_len(frame)).unwrap();
        let o = c.open(&m, &ctx).unwrap();
        prop_assert_eq!(o.plaintext.expose_secret(), d.as_slice());
        prop_assert_eq!(o.context, ctx);
    }

    #[test]
    fn prop_encrypt_decrypt(
        d in proptest::collection::vec(any::<u8>(), 1..=4096),
        pairs in proptest::collection::btree_map(".{1,8}", ".{0,12}", 0..5),
    ) {
        let (c, key) = setup(KeySpec::default());
        let ctx: EncryptionContext = pairs.into_iter().collect();
        let b = c.encrypt(&key, &d, &ctx).unwrap();
        let out = c.decrypt(&b, &ctx).unwrap();
        prop_assert_eq!(out.plaintext.expose_secret(), d.as_slice());
    }

    #[test]
    fn prop_context_encoding_round_trips(
        pairs in proptest::collection::btree_map(".{1,8}", ".{0,12}", 0..8),
    ) {
        let ctx: EncryptionContext = pairs.into_iter().collect();
        let bytes = ctx.canonical_bytes().unwrap();
        prop_assert_eq!(EncryptionContext::from_canonical_bytes(&bytes).unwrap(), ctx);
    }

    #[test]
    fn prop_arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (c, _) = setup(KeySpec::default());
        let _ = c.open(&bytes, &EncryptionContext::new());
        let _ = c.decrypt(&bytes, &EncryptionContext::new());
        let _ = EncryptionContext::from_canonical_bytes(&bytes);
    }
}

/// The buffer-reusing calls append, grow the buffer at most once, reuse it
/// when it is large enough, and leave it untouched on failure.
#[test]
fn seal_into_and_open_into_reuse_buffers() {
    let (c, key) = setup(KeySpec::default());
    let d = data(300_000);
    let mut msg = b"prefix".to_vec();
    c.seal_into(&key, &d, &ctx(), SealOptions::default(), &mut msg)
        .unwrap();
    assert_eq!(&msg[..6], b"prefix");
    let sealed = msg[6..].to_vec();
    assert_eq!(
        c.open(&sealed, &ctx()).unwrap().plaintext.expose_secret(),
        &d[..]
    );

    // Reused: cleared, the second message fits without reallocating.
    let ptr = msg.as_ptr();
    msg.clear();
    c.seal_into(&key, &d, &ctx(), SealOptions::default(), &mut msg)
        .unwrap();
    assert_eq!(msg.as_ptr(), ptr, "the buffer was reused");
    assert_eq!(msg.len(), sealed.len());

    let mut pt = zeroize::Zeroizing::new(b"x".to_vec());
    let info = c.open_into(&msg, &ctx(), &mut pt).unwrap();
    assert_eq!(&pt[1..], &d[..]);
    assert_eq!(info.context, ctx());
    assert_eq!(info.key_version, 1);

    // Failures change nothing.
    let before = pt.len();
    let mut bad = msg.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(
        c.open_into(&bad, &ctx(), &mut pt),
        Err(Error::DecryptionFailed)
    ));
    assert_eq!(pt.len(), before);
    let mut out = b"keep".to_vec();
    assert!(
        c.seal_into("alias/none", &d, &ctx(), SealOptions::default(), &mut out)
            .is_err()
    );
    assert_eq!(out, b"keep");
}
