//! # strongroom
//!
//! An in-process key management service: what a cloud KMS gives an
//! application, as a library.
//!
//! - **Master keys never leave their backend in plaintext.** A [`backend::KeyBackend`]
//!   holds them and performs operations with them; nothing in its interface
//!   returns key bytes.
//! - **Envelope encryption.** [`Client::seal`] encrypts data of any size under
//!   a fresh data key, wraps the data key with a master key, commits to it, and
//!   binds an [`EncryptionContext`]; [`Client::open`] reverses it.
//! - **Self-describing ciphertexts.** Every blob and message names the key id
//!   and key version that opens it (see `docs/FORMAT.md`).
//! - **One pipeline.** Every call is made *as someone* (a [`Principal`],
//!   through a [`Client`]) and runs through one pipeline: resolve the key,
//!   authorize, check state and usage, do the work.
//!
//! ```
//! use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};
//!
//! # fn main() -> Result<(), strongroom::Error> {
//! let ring = KeyRing::in_memory();
//! let app = ring.client(Principal::service("billing")?);
//! app.create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/invoices"))?;
//!
//! let ctx = EncryptionContext::new().with("tenant", "acme");
//! let message = app.seal("alias/invoices", b"invoice #1", &ctx)?;
//! let opened = app.open(&message, &ctx)?;
//! assert_eq!(opened.plaintext.expose_secret(), b"invoice #1");
//!
//! // Small secrets can be encrypted directly (up to 4096 bytes).
//! let blob = app.encrypt("alias/invoices", b"api-token", &ctx)?;
//! assert_eq!(app.decrypt(&blob, &ctx)?.plaintext.expose_secret(), b"api-token");
//! # Ok(()) }
//! ```
//!
//! ## What else is here
//!
//! - **Rotation with versions**: automatic (on the ring's [`clock::Clock`]) and on
//!   demand; old versions keep decrypting; version floors retire versions;
//!   encryptions per version are metered against the AES-GCM nonce bound.
//! - **Lifecycle**: enable, disable, scheduled deletion with a 7-30 day window.
//! - **Access control**: key policies, a ring policy and grants, decided in
//!   the pipeline before any key material is touched; deny by default (see
//!   [`policy`]). The ring policy decides only ring-wide actions (create and
//!   import keys, list ids and aliases): open to every principal unless the
//!   builder names admins ([`KeyRingBuilder::ring_admins`]); it never gives
//!   rights on an existing key. `describe_key` and `list_keys` show no
//!   policies or grants.
//! - **Audit**: one event per operation to pluggable sinks, including a
//!   hash-chained, signed log verifiable offline (see [`audit`]).
//! - **Backends**: in memory ([`backend::MemoryBackend`]), a durable encrypted file
//!   keystore ([`KeyRing::open`]), and a PKCS#11 HSM (feature `pkcs11`).
//! - **Key types**: AES-256-GCM and ChaCha20-Poly1305 (symmetric), ECDSA
//!   P-256 and Ed25519 (signing, with an offline verifier in [`verify`]),
//!   HMAC, HPKE public-key encryption, data key pairs, and key import.
//! - **Streaming**: [`Client::seal_writer`] / [`Client::open_reader`] in the
//!   same message format; [`Client::seal_into`] / [`Client::open_into`]
//!   reuse the caller's buffers on hot paths.
//! - **Async** (feature `tokio`): `AsyncWrite` / `AsyncRead` adapters in
//!   the same format, with the backend call on Tokio's blocking pool; the
//!   `tokio_io` module docs say how to call the synchronous API from async
//!   code without blocking the runtime.
//! - **serde**: [`sealed::Encrypted<T>`] (a typed, sealed value stored as
//!   bytes or base64 text) and [`sealed_field!`] helpers that encrypt struct
//!   fields, each bound to its record and field name.
//! - **Custody anywhere**: backend payloads are opaque bytes of the
//!   backend's own shape, and optional abilities are narrow traits, so a
//!   remote custodian fits [`backend::KeyBackend`]; a backend or store from
//!   another crate runs the same conformance suite (feature `testing`).
//! - **Interop** (feature `esdk`): AWS Encryption SDK messages, read and
//!   written, proven against the real Python SDK.
//! - **SSH**: OpenSSH public keys and `ssh-keygen -Y` (SSHSIG) signatures
//!   from signing keys ([`Client::sign_ssh`], [`interop::ssh`]).
//! - **Remote custodians**: Vault/OpenBao Transit (feature `vault`) and
//!   AWS KMS or a KMS-compatible service (feature `aws-kms`) hold master
//!   keys; the ring does everything else in-process. AWS Signature
//!   Version 4 (`interop::sigv4`, feature `aws-kms`) is checked against
//!   AWS's test suite.
//! - **Bounds**: every documented limit is in [`limits`]; errors say what
//!   kind of failure they are and whether to retry ([`ErrorKind`]).
//!
//! The pipeline is `keyring/pipeline.rs`: every operation resolves the key,
//! is decided, checked for state and usage, done, and recorded, in that
//! order, through one function.
//!
//! Dangerous tools for tests (a seeded random generator, fuzz entry points)
//! live in [`hazmat`].
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod action;
pub mod audit;
pub mod backend;
pub mod clock;
pub mod crypto;
pub mod envelope;
mod error;
pub mod hazmat;
mod hex;
pub mod interop;
pub mod key;
pub mod keyring;
pub mod limits;
pub mod policy;
pub mod principal;
pub mod random;
pub mod sealed;
mod secret;
pub mod store;
mod sync;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio_io;
pub mod verify;

// The curated root: the types of the common path. Everything else lives in
// its module (`key`, `envelope`, `keyring`, `policy`, `audit`, `backend`,
// `store`, `clock`, `random`, `principal`, `limits`, `verify`).
pub use action::Action;
pub use clock::Timestamp;
pub use envelope::{EncryptionContext, SealOptions};
pub use error::{Error, ErrorKind, Result};
pub use key::{Alias, CreateKeyOptions, KeyId, KeyRef, KeySpec};
pub use keyring::{Client, KeyRing, KeyRingBuilder};
pub use principal::{AccountId, Principal};
pub use secret::SecretBytes;

/// The README's code blocks, compiled and run as doc tests so they cannot
/// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
