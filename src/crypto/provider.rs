//! The crypto provider: which implementation of the primitives a ring uses.

use crate::error::{Error, Result};
use crate::random::{OsRandom, RandomSource};
use std::fmt;
use std::sync::Arc;

/// The implementation of the cryptographic primitives a ring uses: AES-256-GCM
/// and ChaCha20-Poly1305, HKDF-SHA256, ECDSA P-256 (SHA-256) and Ed25519
/// signing and verification, and the default random source.
///
/// Chosen once, when the ring is built ([`crate::KeyRingBuilder::crypto_provider`]),
/// and passed down; there is no process-wide setting. Every provider produces
/// the same bytes: ciphertexts, key derivations and Ed25519 signatures are
/// byte-identical given the same randomness, and every frozen format reads
/// and writes the same under each (the test suite checks this for every
/// provider compiled in). ECDSA nonces are each provider's own (RFC 6979
/// for RustCrypto, random for AWS-LC), so ECDSA signatures differ; each
/// provider verifies the other's, and both emit low-S signatures.
/// Verification makes the same decisions under every provider (strict DER
/// parsing of ECDSA signatures; Ed25519 refuses small-order public keys).
///
/// The set of providers is closed (this is a value, not a trait), so that
/// the promise above stays testable:
/// - [`CryptoProvider::rust_crypto`], the default: the pure-Rust RustCrypto
///   crates (`aes-gcm`, `chacha20poly1305`, `hkdf`, `p256`, `ed25519-dalek`)
///   and the OS generator (`getrandom`). Builds with only a Rust compiler.
/// - `CryptoProvider::aws_lc_rs` (feature `aws-lc-rs`): AWS-LC through the
///   `aws-lc-rs` crate, with assembly AES-GCM, ChaCha20-Poly1305 and P-256
///   for x86-64 and AArch64, and AWS-LC's generator. Its key objects live in
///   C memory that AWS-LC cleanses when it frees them (`OPENSSL_free`
///   overwrites every allocation).
///
/// What stays on RustCrypto under every provider: HMAC keys, HPKE (the
/// `hpke` crate), the ESDK's HKDF-SHA384/512 and P-384 signatures, key
/// encodings (SPKI, PKCS#8, PEM) and the stores' own encryption at rest
/// (file keystore, PostgreSQL), which use [`CryptoProvider::default`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CryptoProvider {
    pub(crate) imp: Imp,
}

/// The implementations compiled in.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Imp {
    RustCrypto,
    #[cfg(feature = "aws-lc-rs")]
    AwsLc,
}

impl fmt::Debug for CryptoProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CryptoProvider({})", self.name())
    }
}

impl fmt::Display for CryptoProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The environment variable that, in builds with the `testing` feature,
/// chooses what [`CryptoProvider::default`] returns (`rust-crypto` or
/// `aws-lc-rs`), so the whole test suite runs a second time under the
/// accelerated provider without a rebuild. Builds without `testing` never
/// read it.
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub const TEST_PROVIDER_ENV: &str = "STRONGROOM_TEST_CRYPTO_PROVIDER";

impl Default for CryptoProvider {
    /// [`CryptoProvider::rust_crypto`]. With the `testing` feature, the
    /// provider named by `STRONGROOM_TEST_CRYPTO_PROVIDER` if set (a name
    /// that is not compiled in panics, so a misconfigured CI run cannot
    /// silently test the wrong provider).
    fn default() -> Self {
        #[cfg(feature = "testing")]
        {
            static CHOSEN: std::sync::OnceLock<CryptoProvider> = std::sync::OnceLock::new();
            *CHOSEN.get_or_init(|| match std::env::var(TEST_PROVIDER_ENV) {
                Ok(name) => CryptoProvider::from_name(&name).unwrap_or_else(|_| {
                    panic!("{TEST_PROVIDER_ENV}={name}: not a provider compiled in")
                }),
                Err(_) => CryptoProvider::rust_crypto(),
            })
        }
        #[cfg(not(feature = "testing"))]
        {
            CryptoProvider::rust_crypto()
        }
    }
}

impl CryptoProvider {
    /// The pure-Rust provider (the RustCrypto crates). The default.
    pub const fn rust_crypto() -> Self {
        CryptoProvider {
            imp: Imp::RustCrypto,
        }
    }

    /// The AWS-LC provider (`aws-lc-rs`): assembly implementations of
    /// AES-GCM, ChaCha20-Poly1305 and P-256.
    #[cfg(feature = "aws-lc-rs")]
    #[cfg_attr(docsrs, doc(cfg(feature = "aws-lc-rs")))]
    pub const fn aws_lc_rs() -> Self {
        CryptoProvider { imp: Imp::AwsLc }
    }

    /// Every provider compiled into this build, the default first.
    pub fn all() -> &'static [CryptoProvider] {
        const ALL: &[CryptoProvider] = &[
            CryptoProvider::rust_crypto(),
            #[cfg(feature = "aws-lc-rs")]
            CryptoProvider::aws_lc_rs(),
        ];
        ALL
    }

    /// The provider's name: `rust-crypto` or `aws-lc-rs`.
    pub fn name(&self) -> &'static str {
        match self.imp {
            Imp::RustCrypto => "rust-crypto",
            #[cfg(feature = "aws-lc-rs")]
            Imp::AwsLc => "aws-lc-rs",
        }
    }

    /// The provider called `name` ([`CryptoProvider::name`]), if it is
    /// compiled in; otherwise an [`Error::InvalidArgument`] naming the ones
    /// that are.
    pub fn from_name(name: &str) -> Result<Self> {
        CryptoProvider::all()
            .iter()
            .copied()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = CryptoProvider::all().iter().map(|p| p.name()).collect();
                Error::invalid(format!(
                    "unknown crypto provider {name:?}: this build has {}",
                    known.join(", ")
                ))
            })
    }

    /// The provider's random source, the ring's default when the builder is
    /// given none: the OS generator ([`OsRandom`]) for `rust-crypto`,
    /// AWS-LC's generator for `aws-lc-rs`.
    pub fn random(&self) -> Arc<dyn RandomSource> {
        match self.imp {
            Imp::RustCrypto => Arc::new(OsRandom),
            #[cfg(feature = "aws-lc-rs")]
            Imp::AwsLc => Arc::new(AwsLcRandom),
        }
    }
}

/// AWS-LC's generator (`RAND_bytes`).
#[cfg(feature = "aws-lc-rs")]
#[derive(Debug, Clone, Copy)]
struct AwsLcRandom;

#[cfg(feature = "aws-lc-rs")]
impl RandomSource for AwsLcRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<()> {
        aws_lc_rs::rand::fill(buf).map_err(|_| Error::Random)
    }
}
