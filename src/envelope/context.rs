//! Encryption context: non-secret key/value pairs bound to a ciphertext as
//! associated data.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub(crate) use crate::limits::MAX_CONTEXT_BYTES;

/// Non-secret string pairs bound to a ciphertext as associated data. The same
/// context must be given to decrypt, exactly.
///
/// A context is not secret: it is stored in envelope messages and may appear
/// in audit records. Never put a secret in it.
///
/// Its one canonical byte encoding (docs/FORMAT.md, "Encryption context") is
/// pairs sorted by the UTF-8 bytes of the key, each length-prefixed.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a pair, builder style.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Adds (or replaces) a pair.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The pairs in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True if every pair of `required` is in `self` with the same value.
    pub fn contains_all(&self, required: &EncryptionContext) -> bool {
        required
            .0
            .iter()
            .all(|(k, v)| self.0.get(k).is_some_and(|mine| mine == v))
    }

    /// Checks the limits: keys non-empty, every key and value at most 65535
    /// bytes, at most 65535 pairs, canonical encoding at most
    /// [`MAX_CONTEXT_BYTES`].
    /// Allocates nothing: the pipeline runs it on every call, before the
    /// access decision and before the context reaches an audit record.
    pub fn validate(&self) -> Result<()> {
        if u16::try_from(self.0.len()).is_err() {
            return Err(Error::invalid(
                "encryption context has more than 65535 pairs",
            ));
        }
        let mut total = 2usize;
        for (k, v) in &self.0 {
            if k.is_empty() {
                return Err(Error::invalid("encryption context keys must not be empty"));
            }
            if k.len() > usize::from(u16::MAX) || v.len() > usize::from(u16::MAX) {
                return Err(Error::invalid(
                    "encryption context keys and values must be at most 65535 bytes",
                ));
            }
            total += 4 + k.len() + v.len();
            if total > MAX_CONTEXT_BYTES {
                return Err(Error::invalid(format!(
                    "encryption context must encode to at most {MAX_CONTEXT_BYTES} bytes"
                )));
            }
        }
        Ok(())
    }

    /// The canonical encoding: `count u16 BE`, then per pair in key order
    /// `key_len u16 BE, key, value_len u16 BE, value`.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>> {
        let count = u16::try_from(self.0.len())
            .map_err(|_| Error::invalid("encryption context has more than 65535 pairs"))?;
        let mut out = Vec::with_capacity(2 + self.0.len() * 16);
        out.extend_from_slice(&count.to_be_bytes());
        for (k, v) in &self.0 {
            if k.is_empty() {
                return Err(Error::invalid("encryption context keys must not be empty"));
            }
            for s in [k, v] {
                let len = u16::try_from(s.len()).map_err(|_| {
                    Error::invalid("encryption context keys and values must be at most 65535 bytes")
                })?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            if out.len() > MAX_CONTEXT_BYTES {
                return Err(Error::invalid(format!(
                    "encryption context must encode to at most {MAX_CONTEXT_BYTES} bytes"
                )));
            }
        }
        Ok(out)
    }

    /// Parses a canonical encoding. Anything not canonical (unsorted or
    /// duplicate keys, empty keys, invalid UTF-8, trailing bytes) is rejected.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::invalid("malformed encryption context encoding");
        if bytes.len() > MAX_CONTEXT_BYTES {
            return Err(bad());
        }
        let mut r = crate::envelope::Reader::new(bytes);
        let count = r.u16().map_err(|_| bad())?;
        let mut map = BTreeMap::new();
        let mut last: Option<&[u8]> = None;
        for _ in 0..count {
            let klen = r.u16().map_err(|_| bad())? as usize;
            let k = r.take(klen).map_err(|_| bad())?;
            let vlen = r.u16().map_err(|_| bad())? as usize;
            let v = r.take(vlen).map_err(|_| bad())?;
            // Keys strictly increasing (byte order is `String` order), so
            // the encoding is the canonical one.
            if k.is_empty() || last.is_some_and(|l| l >= k) {
                return Err(bad());
            }
            last = Some(k);
            let k = std::str::from_utf8(k).map_err(|_| bad())?.to_owned();
            let v = std::str::from_utf8(v).map_err(|_| bad())?.to_owned();
            map.insert(k, v);
        }
        if !r.is_empty() {
            return Err(bad());
        }
        Ok(EncryptionContext(map))
    }
}

impl fmt::Debug for EncryptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for EncryptionContext {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        EncryptionContext(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for EncryptionContext {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}
