//! Backend payloads are opaque: a backend that returns its own text shape
//! (as Vault Transit's `vault:v1:...` does) works through every operation,
//! and a payload over the documented bound is refused clearly.

use std::sync::Arc;
use strongroom::backend::{KeyBackend, MaterialId, MemoryBackend};
use strongroom::limits::MAX_BACKEND_PAYLOAD;
use strongroom::{
    CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal, Result, SecretBytes,
};

/// Wraps another backend's payload as `opaque:v<version>:<hex>` text, padded
/// with `pad` extra bytes: nothing like `nonce || ct || tag`.
#[derive(Debug)]
struct TextBackend {
    inner: MemoryBackend,
    pad: usize,
}

impl KeyBackend for TextBackend {
    fn name(&self) -> &str {
        "text"
    }

    fn supports(&self, spec: KeySpec) -> bool {
        spec.symmetric_algorithm().is_some()
    }

    fn generate(&self, id: &MaterialId, spec: KeySpec) -> Result<()> {
        self.inner.generate(id, spec)
    }

    fn encrypt(&self, id: &MaterialId, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let raw = self.inner.encrypt(id, aad, plaintext)?;
        let mut out = format!("opaque:v{}:", id.version).into_bytes();
        out.extend(raw.iter().flat_map(|b| format!("{b:02x}").into_bytes()));
        out.extend(std::iter::repeat_n(b'.', self.pad));
        Ok(out)
    }

    fn decrypt(&self, id: &MaterialId, aad: &[u8], payload: &[u8]) -> Result<SecretBytes> {
        let prefix = format!("opaque:v{}:", id.version);
        let text = std::str::from_utf8(payload).map_err(|_| Error::DecryptionFailed)?;
        let hex = text
            .strip_prefix(&prefix)
            .ok_or(Error::DecryptionFailed)?
            .trim_end_matches('.');
        let raw = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| Error::DecryptionFailed)?;
        self.inner.decrypt(id, aad, &raw)
    }

    fn destroy(&self, id: &MaterialId) -> Result<()> {
        self.inner.destroy(id)
    }

    fn contains(&self, id: &MaterialId) -> Result<bool> {
        self.inner.contains(id)
    }
}

fn ring(pad: usize) -> strongroom::Client {
    let backend = Arc::new(TextBackend {
        inner: MemoryBackend::new(),
        pad,
    });
    KeyRing::builder()
        .backend(backend)
        .build()
        .client(Principal::service("app").unwrap())
}

#[test]
fn a_backend_with_its_own_payload_shape_works_everywhere() {
    let c = ring(17);
    let k = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let k = k.as_str();
    let ctx = EncryptionContext::new().with("tenant", "acme");
    let blob = c.encrypt(k, b"small secret", &ctx).unwrap();
    assert!(
        blob.windows(9).any(|w| w == b"opaque:v1"),
        "the blob carries the backend's own bytes"
    );
    assert_eq!(
        c.decrypt(&blob, &ctx).unwrap().plaintext.expose_secret(),
        b"small secret"
    );
    // A flipped bit in the opaque payload is the opaque error.
    let mut bad = blob.clone();
    let at = bad.len() - 20;
    bad[at] ^= 0x01;
    assert!(matches!(
        c.decrypt(&bad, &ctx),
        Err(Error::DecryptionFailed)
    ));
    // Data keys, messages (in one piece and streamed) and rotation.
    let dk = c.generate_data_key(k, &ctx).unwrap();
    assert_eq!(
        c.decrypt_data_key(dk.ciphertext(), &ctx)
            .unwrap()
            .plaintext()
            .expose_secret(),
        dk.plaintext().expose_secret()
    );
    let data = vec![7u8; 200_000];
    let msg = c.seal(k, &data, &ctx).unwrap();
    assert_eq!(
        c.open(&msg, &ctx).unwrap().plaintext.expose_secret(),
        &data[..]
    );
    let opened = {
        use std::io::Read;
        let mut r = c.open_reader(&msg[..], &ctx).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    };
    assert_eq!(opened, data);
    c.rotate_key_on_demand(k).unwrap();
    let blob2 = c.encrypt(k, b"v2", &ctx).unwrap();
    assert!(blob2.windows(9).any(|w| w == b"opaque:v2"));
    assert_eq!(c.decrypt(&blob, &ctx).unwrap().key_version, 1);
    assert_eq!(c.decrypt(&blob2, &ctx).unwrap().key_version, 2);
}

#[test]
fn a_payload_over_the_bound_is_refused_clearly() {
    // 4096 bytes of plaintext become 2 * (12 + 4096 + 16) hex characters:
    // over the bound once padded.
    let c = ring(MAX_BACKEND_PAYLOAD);
    let k = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let ctx = EncryptionContext::new();
    assert!(matches!(
        c.encrypt(k.as_str(), &[1u8; 4096], &ctx),
        Err(Error::Unsupported(m)) if m.contains("payload")
    ));
}
