//! Encrypted values for serde: [`Encrypted<T>`] and `#[serde(with = ...)]`
//! helpers for encrypting struct fields.
//!
//! [`Encrypted<T>`] is a typed envelope message: the value is serialized
//! (as JSON, in a zeroizing buffer), sealed with [`Client::seal`] under a
//! key and an encryption context, and kept as the message bytes. It
//! serializes as those bytes in binary formats (CBOR, bincode, ...) and as
//! base64 text in human-readable ones (JSON, TOML, ...), so it can be stored
//! in a BLOB or TEXT column, a document, a config file:
//!
//! ```
//! use strongroom::sealed::Encrypted;
//! use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ring = KeyRing::in_memory();
//! let app = ring.client(Principal::service("crm")?);
//! app.create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/pii"))?;
//! let ctx = EncryptionContext::new().with("table", "customers").with("row", "42");
//!
//! let card: Encrypted<String> = Encrypted::seal(&app, "alias/pii", &"4111 1111".to_string(), &ctx)?;
//! let stored = serde_json::to_string(&card)?; // "\"U1IC...\"": base64 text
//! let back: Encrypted<String> = serde_json::from_str(&stored)?;
//! assert_eq!(back.open(&app, &ctx)?, "4111 1111");
//! # Ok(()) }
//! ```
//!
//! ## Encrypted fields
//!
//! To keep a struct's field types plain (`String`, `Option<u64>`, any
//! `Serialize + DeserializeOwned` type) and encrypt them only when the
//! struct is (de)serialized, declare one helper module per field with
//! [`sealed_field!`](crate::sealed_field) and name it in
//! `#[serde(with = ...)]`. The client, key and context come from a **scope**
//! around the (de)serialization call ([`with_scope`], or
//! [`with_open_scope`] for reading only); each field is sealed under the
//! scope's context plus [`FIELD_CONTEXT_KEY`]` = <field name>`, so a value
//! copied into another field does not open, and one copied into another row
//! does not either when the scope's context names the row:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use strongroom::sealed::{with_open_scope, with_scope};
//! use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};
//!
//! strongroom::sealed_field!(ssn); // module `ssn`, field name "ssn"
//! strongroom::sealed_field!(diagnosis_field = "diagnosis");
//!
//! #[derive(Serialize, Deserialize, PartialEq, Debug)]
//! struct Patient {
//!     id: u64,
//!     #[serde(with = "ssn")]
//!     ssn: String,
//!     #[serde(with = "diagnosis_field")]
//!     diagnosis: Option<String>,
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let ring = KeyRing::in_memory();
//! # let app = ring.client(Principal::service("clinic")?);
//! # app.create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/patients"))?;
//! let p = Patient { id: 7, ssn: "078-05-1120".into(), diagnosis: None };
//! let row = EncryptionContext::new().with("table", "patients").with("row", "7");
//!
//! let json = with_scope(&app, "alias/patients", &row, || serde_json::to_string(&p))?;
//! assert!(!json.contains("078-05-1120"));
//! let back: Patient = with_open_scope(&app, &row, || serde_json::from_str(&json))?;
//! assert_eq!(back, p);
//!
//! // Outside a scope: a serde error that says what to do, never a panic.
//! let err = serde_json::to_string(&p).unwrap_err();
//! assert!(err.to_string().contains("with_scope"));
//! # Ok(()) }
//! ```
//!
//! A scope is per thread and lasts for the closure; scopes nest (the inner
//! one wins, the outer one is back afterwards, also after a panic). The
//! closure is synchronous: (de)serialize inside it, not across an `.await`.
//!
//! Every field is its own envelope message (one `GenerateDataKey` or
//! `Decrypt` through the pipeline, audited), about 150 bytes of overhead
//! plus the wrapped data key. For many small fields of one record, an
//! [`Encrypted`] of a sub-struct costs one message instead of several.

use crate::envelope::EncryptionContext;
use crate::error::{Error, Result};
use crate::key::KeyRef;
use crate::keyring::Client;
use base64ct::{Base64, Encoding};
use serde::de::{self, DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::ser::{Error as _, Serializer};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use zeroize::Zeroizing;

/// The encryption-context key the field helpers add, with the field's name
/// as value. A scope's own context must not use it.
pub const FIELD_CONTEXT_KEY: &str = "field";

/// A value of type `T`, serialized as JSON and sealed in an envelope message
/// bound to an encryption context. Holds only the message (ciphertext):
/// cloning, comparing, storing and logging it reveal nothing of `T`.
///
/// (De)serializes as the message: bytes in binary formats, standard base64
/// (padded) in human-readable ones.
pub struct Encrypted<T> {
    message: Vec<u8>,
    _value: PhantomData<fn() -> T>,
}

impl<T: Serialize> Encrypted<T> {
    /// Serializes `value` as JSON (into a buffer zeroized afterwards) and
    /// seals it under `key` with `context`, as [`Client::seal`] (authorized
    /// as `GenerateDataKey`).
    pub fn seal<'k>(
        client: &Client,
        key: impl Into<KeyRef<'k>>,
        value: &T,
        context: &EncryptionContext,
    ) -> Result<Self> {
        let mut json = ZeroizingWriter::default();
        serde_json::to_writer(&mut json, value).map_err(|e| {
            Error::invalid(format!(
                "the value cannot be serialized as JSON ({:?} error)",
                e.classify()
            ))
        })?;
        let message = client.seal(key, &json.0, context)?;
        Ok(Encrypted::from_bytes(message))
    }
}

impl<T: DeserializeOwned> Encrypted<T> {
    /// Opens the message with `context` (exactly the one it was sealed
    /// with), as [`Client::open`] (authorized as `Decrypt`), and
    /// deserializes the value; the JSON plaintext is zeroized afterwards.
    /// A message that does not open is [`Error::DecryptionFailed`]; one that
    /// opens but is not a `T` is [`Error::InvalidArgument`], without any of
    /// its content in the message.
    pub fn open(&self, client: &Client, context: &EncryptionContext) -> Result<T> {
        let mut plain = Zeroizing::new(Vec::new());
        client.open_into(&self.message, context, &mut plain)?;
        serde_json::from_slice(&plain).map_err(|e| {
            Error::invalid(format!(
                "the decrypted value is not a valid {} ({:?} error at line {}, column {})",
                std::any::type_name::<T>(),
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

impl<T> Encrypted<T> {
    /// Wraps stored message bytes (from [`Encrypted::as_bytes`] or
    /// [`Client::seal`] of a JSON encoding of `T`). Nothing is checked
    /// until [`Encrypted::open`].
    pub fn from_bytes(message: Vec<u8>) -> Self {
        Encrypted {
            message,
            _value: PhantomData,
        }
    }

    /// Parses the base64 text of [`Encrypted::to_base64`].
    pub fn from_base64(text: &str) -> Result<Self> {
        let message = Base64::decode_vec(text.trim())
            .map_err(|_| Error::invalid("an encrypted value must be standard base64 text"))?;
        Ok(Encrypted::from_bytes(message))
    }

    /// The envelope message (for a BLOB column).
    pub fn as_bytes(&self) -> &[u8] {
        &self.message
    }

    /// The envelope message, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.message
    }

    /// The envelope message as standard, padded base64 (for a TEXT column).
    pub fn to_base64(&self) -> String {
        Base64::encode_string(&self.message)
    }
}

impl<T> Clone for Encrypted<T> {
    fn clone(&self) -> Self {
        Encrypted::from_bytes(self.message.clone())
    }
}

impl<T> PartialEq for Encrypted<T> {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl<T> Eq for Encrypted<T> {}

impl<T> fmt::Debug for Encrypted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encrypted")
            .field("type", &std::any::type_name::<T>())
            .field("message_len", &self.message.len())
            .finish_non_exhaustive()
    }
}

impl<T> Serialize for Encrypted<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_base64())
        } else {
            serializer.serialize_bytes(&self.message)
        }
    }
}

impl<'de, T> Deserialize<'de> for Encrypted<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct MessageVisitor;

        impl<'de> Visitor<'de> for MessageVisitor {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a strongroom envelope message (bytes, or base64 text)")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Vec<u8>, E> {
                Base64::decode_vec(v.trim())
                    .map_err(|_| E::custom("an encrypted value must be standard base64 text"))
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> std::result::Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> std::result::Result<Vec<u8>, E> {
                Ok(v)
            }

            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }

        let message = if deserializer.is_human_readable() {
            deserializer.deserialize_str(MessageVisitor)?
        } else {
            deserializer.deserialize_byte_buf(MessageVisitor)?
        };
        Ok(Encrypted::from_bytes(message))
    }
}

/// An `io::Write` into a zeroizing buffer that grows by copying into a new
/// zeroizing buffer (the old one is wiped), so no copy of the plaintext is
/// left in freed memory.
#[derive(Default)]
struct ZeroizingWriter(Zeroizing<Vec<u8>>);

impl io::Write for ZeroizingWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let need = self.0.len() + data.len();
        if need > self.0.capacity() {
            let cap = need.max(2 * self.0.capacity()).max(64);
            let mut bigger = Zeroizing::new(Vec::with_capacity(cap));
            bigger.extend_from_slice(&self.0);
            self.0 = bigger;
        }
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---- scopes and field helpers ------------------------------------------------

#[derive(Clone)]
struct Scope {
    client: Client,
    /// `None` in an open-only scope.
    key: Option<String>,
    context: EncryptionContext,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Puts the previous scope back when the closure returns or panics.
struct Restore(Option<Scope>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        let _ = SCOPE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = previous;
            }
        });
    }
}

fn scoped<R>(scope: Scope, f: impl FnOnce() -> R) -> R {
    let previous = SCOPE
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.replace(scope)))
        .ok()
        .flatten();
    let _restore = Restore(previous);
    f()
}

/// Runs `f` (which serializes or deserializes) with a sealing scope: the
/// [`sealed_field!`](crate::sealed_field) helpers seal under `key` and open
/// with `client`, each field bound to `context` plus
/// [`FIELD_CONTEXT_KEY`]` = <field name>`. Put what identifies the record
/// (table, row id) in `context`, so a value moved to another record fails
/// to open.
pub fn with_scope<'k, R>(
    client: &Client,
    key: impl Into<KeyRef<'k>>,
    context: &EncryptionContext,
    f: impl FnOnce() -> R,
) -> R {
    let scope = Scope {
        client: client.clone(),
        key: Some(key.into().as_str().to_owned()),
        context: context.clone(),
    };
    scoped(scope, f)
}

/// [`with_scope`] for reading only (opening needs no key: the message names
/// it). Serializing a sealed field in it is an error.
pub fn with_open_scope<R>(
    client: &Client,
    context: &EncryptionContext,
    f: impl FnOnce() -> R,
) -> R {
    let scope = Scope {
        client: client.clone(),
        key: None,
        context: context.clone(),
    };
    scoped(scope, f)
}

const NO_SCOPE: &str = "no sealing scope on this thread: \
    (de)serialize inside strongroom::sealed::with_scope (or with_open_scope to read)";

fn current_scope(field: &str) -> std::result::Result<Scope, String> {
    SCOPE
        .try_with(|s| s.try_borrow().ok().and_then(|s| s.clone()))
        .ok()
        .flatten()
        .ok_or_else(|| format!("strongroom::sealed: field `{field}`: {NO_SCOPE}"))
}

fn field_context(scope: &Scope, field: &str) -> std::result::Result<EncryptionContext, String> {
    if scope.context.get(FIELD_CONTEXT_KEY).is_some() {
        return Err(format!(
            "strongroom::sealed: field `{field}`: the scope's encryption context must not \
             have the key `{FIELD_CONTEXT_KEY}` (the field helpers add it)"
        ));
    }
    Ok(scope.context.clone().with(FIELD_CONTEXT_KEY, field))
}

/// Seals `value` as the field `field` under the current scope. What the
/// modules of [`sealed_field!`](crate::sealed_field) call; use the macro.
pub fn serialize_field<T, S>(
    value: &T,
    field: &str,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error>
where
    T: Serialize + ?Sized,
    S: Serializer,
{
    let scope = current_scope(field).map_err(S::Error::custom)?;
    let key = scope.key.as_deref().ok_or_else(|| {
        S::Error::custom(format!(
            "strongroom::sealed: field `{field}`: this scope only opens (with_open_scope); \
             serialize inside with_scope, which names the key"
        ))
    })?;
    let context = field_context(&scope, field).map_err(S::Error::custom)?;
    let mut json = ZeroizingWriter::default();
    serde_json::to_writer(&mut json, value).map_err(|e| {
        S::Error::custom(format!(
            "strongroom::sealed: field `{field}` cannot be serialized as JSON ({:?} error)",
            e.classify()
        ))
    })?;
    let message = scope
        .client
        .seal(key, &json.0, &context)
        .map_err(|e| S::Error::custom(format!("strongroom::sealed: field `{field}`: {e}")))?;
    Encrypted::<()>::from_bytes(message).serialize(serializer)
}

/// Opens the field `field` under the current scope. What the modules of
/// [`sealed_field!`](crate::sealed_field) call; use the macro.
pub fn deserialize_field<'de, T, D>(
    field: &str,
    deserializer: D,
) -> std::result::Result<T, D::Error>
where
    T: DeserializeOwned,
    D: Deserializer<'de>,
{
    let encrypted = Encrypted::<T>::deserialize(deserializer)?;
    let scope = current_scope(field).map_err(de::Error::custom)?;
    let context = field_context(&scope, field).map_err(de::Error::custom)?;
    encrypted
        .open(&scope.client, &context)
        .map_err(|e| de::Error::custom(format!("strongroom::sealed: field `{field}`: {e}")))
}

#[doc(hidden)]
pub use serde as __serde;

/// Declares a module for `#[serde(with = "<module>")]` that seals a struct
/// field under the current [`sealed`](crate::sealed) scope, binding the
/// field's name into its encryption context.
///
/// - `sealed_field!(ssn);` declares `mod ssn` for the field named `"ssn"`;
/// - `sealed_field!(card = "card_number");` declares `mod card` for the
///   field named `"card_number"`;
/// - a visibility may come first: `sealed_field!(pub(crate) ssn);`.
///
/// The field's type is any `Serialize + DeserializeOwned` type (an `Option`
/// is sealed whole, `None` included). The name is what the context binds:
/// keep it stable, renaming it makes stored values unopenable.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// strongroom::sealed_field!(api_token);
///
/// #[derive(Serialize, Deserialize)]
/// struct Integration {
///     name: String,
///     #[serde(with = "api_token")]
///     api_token: String,
/// }
/// ```
#[macro_export]
macro_rules! sealed_field {
    ($vis:vis $module:ident) => {
        $crate::sealed_field!($vis $module = ::core::stringify!($module));
    };
    ($vis:vis $module:ident = $field:expr) => {
        /// Seals a struct field under the current `strongroom::sealed` scope
        /// (`#[serde(with = ...)]`); made by `strongroom::sealed_field!`.
        $vis mod $module {
            /// Seals the field (serde `serialize_with`).
            pub fn serialize<T, S>(
                value: &T,
                serializer: S,
            ) -> ::core::result::Result<S::Ok, S::Error>
            where
                T: $crate::sealed::__serde::Serialize + ?Sized,
                S: $crate::sealed::__serde::Serializer,
            {
                $crate::sealed::serialize_field(value, $field, serializer)
            }

            /// Opens the field (serde `deserialize_with`).
            pub fn deserialize<'de, T, D>(deserializer: D) -> ::core::result::Result<T, D::Error>
            where
                T: $crate::sealed::__serde::de::DeserializeOwned,
                D: $crate::sealed::__serde::Deserializer<'de>,
            {
                $crate::sealed::deserialize_field($field, deserializer)
            }
        }
    };
}
