//! Hazardous tools: correct only in tests. Never use them in production.
//!
//! [`InsecureSeededRandom`] makes a ring fully deterministic (key ids, key
//! material, nonces), which is how the frozen format vectors under
//! `tests/vectors/` are produced and checked.

use crate::error::Result;
use crate::random::RandomSource;
use sha2::{Digest, Sha256};
use std::sync::Mutex;

/// A deterministic byte generator seeded by the caller: SHA-256 in counter
/// mode over the seed. **Not secure**: anyone who knows the seed knows every
/// key the ring makes. For reproducible test vectors only.
#[derive(Debug)]
pub struct InsecureSeededRandom {
    seed: [u8; 32],
    state: Mutex<(u64, Vec<u8>)>,
}

impl InsecureSeededRandom {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        InsecureSeededRandom {
            seed,
            state: Mutex::new((0, Vec::new())),
        }
    }
}

impl RandomSource for InsecureSeededRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut written = 0;
        while written < buf.len() {
            if st.1.is_empty() {
                let mut h = Sha256::new();
                h.update(b"strongroom insecure seeded random");
                h.update(self.seed);
                h.update(st.0.to_be_bytes());
                st.0 += 1;
                st.1 = h.finalize().to_vec();
            }
            let take = (buf.len() - written).min(st.1.len());
            buf[written..written + take].copy_from_slice(&st.1[..take]);
            st.1.drain(..take);
            written += take;
        }
        Ok(())
    }
}

/// Entry points for the fuzz targets under `fuzz/` and for the regression
/// test that replays their seeds and crashes (`tests/fuzz_regressions.rs`).
///
/// Each takes arbitrary bytes and must never panic. They run against a ring
/// built with [`InsecureSeededRandom`] from the seed of the frozen format
/// vectors, so it holds the real master keys that the vectors (the fuzz
/// seeds) name, and mutated inputs reach authentication and framing code,
/// not just key lookup.
///
/// Compiled only for fuzzing (`cfg(fuzzing)`, set by cargo-fuzz) or with the
/// `fuzzing` feature (the fuzz crate and the regression test enable it): not
/// part of an application's build.
#[cfg(any(fuzzing, feature = "fuzzing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "fuzzing")))]
pub mod fuzzing {
    use super::InsecureSeededRandom;
    use crate::key::SymmetricAlgorithm;
    use crate::{Client, CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};
    use std::sync::{Arc, OnceLock};

    /// The seed of `tests/vectors/format-v1.json`.
    pub const VECTOR_SEED: [u8; 32] = *b"strongroom format vectors seed 1";

    fn client() -> Option<&'static Client> {
        static CLIENT: OnceLock<Option<Client>> = OnceLock::new();
        CLIENT
            .get_or_init(|| {
                let ring = KeyRing::builder()
                    .random(Arc::new(InsecureSeededRandom::new(VECTOR_SEED)))
                    .build();
                let c = ring.client(Principal::service("vectors").ok()?);
                for (alias, alg) in [
                    ("alias/vectors-aes", SymmetricAlgorithm::Aes256Gcm),
                    ("alias/vectors-chacha", SymmetricAlgorithm::ChaCha20Poly1305),
                ] {
                    c.create_key(
                        KeySpec::Symmetric(alg),
                        CreateKeyOptions::new().alias(alias),
                    )
                    .ok()?;
                }
                Some(c)
            })
            .as_ref()
    }

    /// Splits an input into a context (first byte = length of a canonical
    /// context encoding) and the rest.
    fn split_context(data: &[u8]) -> (EncryptionContext, &[u8]) {
        let Some((&n, rest)) = data.split_first() else {
            return (EncryptionContext::new(), data);
        };
        let n = (n as usize).min(rest.len());
        let ctx = EncryptionContext::from_canonical_bytes(&rest[..n]).unwrap_or_default();
        (ctx, &rest[n..])
    }

    /// `decrypt` of arbitrary bytes, with the empty context and with the
    /// context of the second blob vector.
    pub fn decrypt_blob(data: &[u8]) {
        if let Some(c) = client() {
            let _ = c.decrypt(data, &EncryptionContext::new());
            let ctx = EncryptionContext::new()
                .with("app", "billing")
                .with("tenant", "acme");
            if let Ok(d) = c.decrypt(data, &ctx) {
                // Anything that authenticates must re-encrypt and decrypt.
                let again = c.encrypt(d.key_id.as_str(), d.plaintext.expose_secret(), &ctx);
                assert!(again.is_ok_and(|b| c.decrypt(&b, &ctx).is_ok()));
            }
        }
    }

    /// `open` of arbitrary bytes, with the stored context of every vector.
    pub fn open_message(data: &[u8]) {
        if let Some(c) = client() {
            for ctx in [
                EncryptionContext::new(),
                EncryptionContext::new().with("tenant", "acme"),
                EncryptionContext::new().with("a", "1").with("b", "2"),
                EncryptionContext::new().with("tenant", "zeta"),
            ] {
                if let Ok(o) = c.open(data, &ctx) {
                    assert_eq!(o.context, ctx);
                }
            }
        }
    }

    /// `open_range` and `open_range_reader` of arbitrary bytes: the first
    /// four bytes are the range (offset and length, u16 each), the rest the
    /// message. Whatever opens whole opens in every range of it, with the
    /// same bytes; a whole-range read that verified its end opens whole.
    pub fn open_range(data: &[u8]) {
        use std::io::{Read, Seek, SeekFrom};
        let (Some(c), Some((range, msg))) = (client(), data.split_at_checked(4)) else {
            return;
        };
        let offset = u16::from_be_bytes([range[0], range[1]]) as usize;
        let len = u16::from_be_bytes([range[2], range[3]]) as usize;
        for ctx in [
            EncryptionContext::new(),
            EncryptionContext::new().with("tenant", "acme"),
            EncryptionContext::new().with("a", "1").with("b", "2"),
            EncryptionContext::new().with("tenant", "zeta"),
        ] {
            let whole = c.open(msg, &ctx).ok();
            let ranged = c.open_range(msg, &ctx, offset as u64, len);
            if let Some(w) = &whole {
                let p = w.plaintext.expose_secret();
                if offset + len <= p.len() {
                    assert!(ranged.as_ref().is_ok_and(|r| {
                        r.plaintext.expose_secret() == &p[offset..offset + len]
                            && r.end_verified == (offset + len == p.len())
                    }));
                } else {
                    assert!(matches!(ranged, Err(crate::Error::InvalidArgument(_))));
                }
            }
            if let Ok(r) = &ranged
                && r.end_verified
                && offset == 0
                && len as u64 == r.message_len
            {
                assert!(whole.is_some());
            }
            if let Ok(mut reader) = c.open_range_reader(std::io::Cursor::new(msg), &ctx) {
                let mut buf = vec![0u8; len];
                if reader.seek(SeekFrom::Start(offset as u64)).is_ok()
                    && reader.read_exact(&mut buf).is_ok()
                    && let Ok(r) = &ranged
                {
                    assert_eq!(r.plaintext.expose_secret(), buf.as_slice());
                }
            }
        }
    }

    /// `open_reader` (streaming) of arbitrary bytes, read to the end.
    pub fn open_stream(data: &[u8]) {
        use std::io::Read;
        if let Some(c) = client() {
            let ctx = EncryptionContext::new().with("tenant", "acme");
            if let Ok(mut r) = c.open_reader(data, &ctx) {
                let mut out = Vec::new();
                if r.read_to_end(&mut out).is_ok() {
                    // A stream that reads to the end must open in memory too.
                    let whole = c.open(data, &ctx);
                    assert!(whole.is_ok_and(|o| o.plaintext.expose_secret() == out.as_slice()));
                }
            }
        }
    }

    /// `open_requiring` with a required context taken from the input.
    pub fn open_requiring(data: &[u8]) {
        let (required, msg) = split_context(data);
        if let Some(c) = client()
            && let Ok(o) = c.open_requiring(msg, &required)
        {
            assert!(o.context.contains_all(&required));
        }
    }

    /// Policy JSON: whatever parses must validate, re-serialize and parse to
    /// the same policy, and evaluating it must not panic.
    pub fn policy_json(data: &[u8]) {
        use crate::policy::{Policy, Request};
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Ok(p) = Policy::from_json(text) {
            let again = Policy::from_json(&p.to_json());
            assert!(again.is_ok_and(|q| q == p));
            if let Ok(who) = Principal::user("alice") {
                let ctx = EncryptionContext::new().with("tenant", "acme");
                for action in crate::Action::ALL {
                    let _ = p.evaluate(
                        &Request {
                            principal: &who,
                            action: *action,
                            context: Some(&ctx),
                            now: crate::Timestamp(1_800_000_000),
                        },
                        None,
                    );
                }
            }
        }
    }

    /// Untrusted public keys (SPKI DER, PEM) and signatures: parse, verify
    /// in both formats, and encrypt to the key if it is a P-256 point.
    pub fn public_key(data: &[u8]) {
        use crate::verify::{MessageType, PublicKeyVerifier, SignatureFormat, hpke_seal};
        // First byte: length of the key part; the rest is the signature.
        let Some((&n, rest)) = data.split_first() else {
            return;
        };
        let n = (n as usize).min(rest.len());
        let (key, sig) = rest.split_at(n);
        if let Ok(v) = PublicKeyVerifier::from_spki_der(key) {
            for f in [SignatureFormat::Der, SignatureFormat::Raw] {
                let _ = v.verify(b"fuzz", sig, MessageType::Raw, f);
                let _ = v.verify(sig, sig, MessageType::Digest, f);
            }
        }
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = PublicKeyVerifier::from_pem(text);
        }
        let _ = hpke_seal(key, b"fuzz", sig, b"");
    }

    /// Untrusted keystore files: the input replaces a key record (first
    /// byte even) or is restored as a backup archive (first byte odd) in a
    /// real temp directory. Anything but the original record must be refused.
    pub fn keystore_file(data: &[u8]) {
        use crate::store::{RootKey, restore_backup};
        use std::path::PathBuf;
        struct Fixture {
            dir: PathBuf,
            record: PathBuf,
            original: Vec<u8>,
        }
        static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
        let root = || RootKey::raw([0x46; 32]);
        let Some(fx) = FIXTURE
            .get_or_init(|| {
                let dir =
                    std::env::temp_dir().join(format!("strongroom-fuzz-ks-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let ring = KeyRing::open_or_create(&dir, root()).ok()?;
                ring.client(Principal::service("fuzz").ok()?)
                    .create_key(
                        KeySpec::default(),
                        CreateKeyOptions::new().alias("alias/fuzz"),
                    )
                    .ok()?;
                // The one key record (`keys/<id>.<generation>.rec`).
                let record = std::fs::read_dir(dir.join("keys"))
                    .ok()?
                    .next()?
                    .ok()?
                    .path();
                let original = std::fs::read(&record).ok()?;
                Some(Fixture {
                    dir,
                    record,
                    original,
                })
            })
            .as_ref()
        else {
            return;
        };
        let Some((&sel, body)) = data.split_first() else {
            return;
        };
        if sel % 2 == 0 {
            if std::fs::write(&fx.record, body).is_err() {
                return;
            }
            let r = KeyRing::open_or_create(&fx.dir, root());
            assert!(r.is_err() || body == fx.original.as_slice());
            let _ = std::fs::write(&fx.record, &fx.original);
        } else {
            let archive = fx.dir.with_extension("archive");
            let target = fx.dir.with_extension("restored");
            let _ = std::fs::remove_dir_all(&target);
            if std::fs::write(&archive, body).is_ok() {
                let _ = restore_backup(&archive, &root(), &target);
            }
            let _ = std::fs::remove_dir_all(&target);
        }
    }

    /// The raw AES key of the frozen ESDK vectors
    /// (`tests/vectors/esdk/python-4.0.7.json`): SHA-256 of
    /// `"strongroom esdk frozen vectors key"`.
    #[cfg(feature = "esdk")]
    pub fn esdk_vector_key() -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(b"strongroom esdk frozen vectors key").into()
    }

    #[cfg(feature = "esdk")]
    fn esdk_client() -> Option<&'static Client> {
        use crate::interop::esdk::{TAG_KEY_NAME, TAG_KEY_NAMESPACE};
        static CLIENT: OnceLock<Option<Client>> = OnceLock::new();
        CLIENT
            .get_or_init(|| {
                let ring = KeyRing::builder()
                    .random(Arc::new(InsecureSeededRandom::new(VECTOR_SEED)))
                    .build();
                let c = ring.client(Principal::service("vectors").ok()?);
                let params = c
                    .get_parameters_for_import(KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm))
                    .ok()?;
                let wrapped = params.wrap(&esdk_vector_key()).ok()?;
                c.import_key(
                    &params.import_token,
                    &wrapped,
                    CreateKeyOptions::new().alias("alias/esdk-vectors"),
                )
                .ok()?;
                c.tag_resource(
                    "alias/esdk-vectors",
                    &[
                        (TAG_KEY_NAMESPACE, "strongroom-vectors"),
                        (TAG_KEY_NAME, "frozen-key-1"),
                    ],
                )
                .ok()?;
                Some(c)
            })
            .as_ref()
    }

    /// Untrusted AWS Encryption SDK messages (header, body, footer) into
    /// `esdk_open` and the streaming `esdk_open_reader`, in a ring holding
    /// the key of the frozen ESDK vectors (the fuzz seeds). Whatever opens
    /// must open the same way streaming, and its plaintext must seal and
    /// open again.
    #[cfg(feature = "esdk")]
    pub fn esdk_message(data: &[u8]) {
        use crate::interop::esdk::EsdkOptions;
        use std::io::Read;
        let Some(c) = esdk_client() else {
            return;
        };
        let alias = "alias/esdk-vectors";
        let none = EncryptionContext::new();
        let whole = c.esdk_open(alias, data, &none);
        let mut streamed = Vec::new();
        let stream_ok = c
            .esdk_open_reader(alias, data, &none, EsdkOptions::new())
            .is_ok_and(|mut r| r.read_to_end(&mut streamed).is_ok());
        match &whole {
            Ok(o) => {
                assert!(stream_ok && streamed.as_slice() == o.plaintext.expose_secret());
                let ctx: EncryptionContext = o
                    .context
                    .iter()
                    .filter(|(k, _)| !k.starts_with("aws-crypto-"))
                    .collect();
                let again = c.esdk_seal(alias, o.plaintext.expose_secret(), &ctx);
                assert!(again.is_ok_and(|m| {
                    c.esdk_open(alias, &m, &ctx)
                        .is_ok_and(|p| p.plaintext == o.plaintext)
                }));
            }
            Err(e) => {
                assert!(!stream_ok);
                assert!(matches!(
                    e,
                    crate::Error::DecryptionFailed | crate::Error::InvalidArgument(_)
                ));
            }
        }
    }

    /// Canonical context decoding: whatever decodes must re-encode to the
    /// same bytes.
    pub fn context(data: &[u8]) {
        if let Ok(ctx) = EncryptionContext::from_canonical_bytes(data) {
            assert_eq!(ctx.canonical_bytes().ok().as_deref(), Some(data));
        }
    }
}

/// Lets a file keystore create and open passphrase stores whose Argon2id
/// parameters are below [`crate::store::Argon2Params::MINIMUM`], so tests
/// that exercise passphrases run in milliseconds. **Never in production**:
/// weak parameters make an offline guess of the passphrase cheap for anyone
/// who reads `header.json`.
pub fn weak_argon2_for_tests(
    options: crate::store::KeystoreOptions,
) -> crate::store::KeystoreOptions {
    crate::store::KeystoreOptions {
        allow_weak_argon2: true,
        ..options
    }
}
