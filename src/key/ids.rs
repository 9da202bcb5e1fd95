//! Names of keys: ids, aliases, and the `KeyRef` every operation takes.

use crate::error::{Error, Result};
use crate::random::{RandomSource, random_array};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The identifier of a key in a ring: 36 characters, UUID form
/// (`1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633c`).
///
/// Any string of 1 to 255 characters of `[A-Za-z0-9_:-]` is accepted when
/// parsing (so ids from other stores round-trip), but the ring mints only the
/// UUID form, and for multi-region keys `mrk-` followed by 32 lowercase hex
/// digits ([`KeyId::MULTI_REGION_PREFIX`], as AWS KMS names them). The prefix
/// is reserved: only a key whose record says it is multi-region
/// ([`crate::key::KeyRecord::multi_region`]) carries it, and only such keys
/// can be replicated to another region.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// Parses and validates a key id.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > 255 {
            return Err(Error::invalid("key id must be 1 to 255 characters long"));
        }
        if s.starts_with(Alias::PREFIX) {
            return Err(Error::invalid(format!("{s:?} is an alias, not a key id")));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b':')
        {
            return Err(Error::invalid(
                "key id may contain only A-Z a-z 0-9 and - _ :",
            ));
        }
        Ok(KeyId(s.to_owned()))
    }

    /// Mints a fresh random id (UUID version 4 layout).
    pub(crate) fn generate(rng: &dyn RandomSource) -> Result<Self> {
        let mut b: [u8; 16] = random_array(rng)?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = crate::hex::encode(&b);
        Ok(KeyId(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )))
    }

    /// Mints a fresh multi-region id: `mrk-` and 32 random hex digits.
    pub(crate) fn generate_multi_region(rng: &dyn RandomSource) -> Result<Self> {
        let b: [u8; 16] = random_array(rng)?;
        Ok(KeyId(format!(
            "{}{}",
            Self::MULTI_REGION_PREFIX,
            crate::hex::encode(&b)
        )))
    }

    /// The prefix reserved for the ids of multi-region keys.
    pub const MULTI_REGION_PREFIX: &'static str = "mrk-";

    /// True if the id has the multi-region form (`mrk-...`).
    pub fn is_multi_region(&self) -> bool {
        self.0.starts_with(Self::MULTI_REGION_PREFIX)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        KeyId::parse(&s)
    }
}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.0
    }
}

/// A friendly name for a key: `alias/` followed by 1 or more characters of
/// `[A-Za-z0-9:/_-]`, at most 256 characters in all. Names beginning with
/// `alias/strongroom/` are reserved for managed keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Alias(String);

impl Alias {
    /// The prefix every alias starts with.
    pub const PREFIX: &'static str = "alias/";
    /// The prefix reserved for managed keys.
    pub const RESERVED_PREFIX: &'static str = "alias/strongroom/";

    /// Parses and validates an alias name.
    pub fn parse(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix(Self::PREFIX) else {
            return Err(Error::invalid(format!(
                "alias {s:?} must start with \"alias/\""
            )));
        };
        if rest.is_empty() {
            return Err(Error::invalid("alias needs a name after \"alias/\""));
        }
        if s.len() > 256 {
            return Err(Error::invalid("alias must be at most 256 characters long"));
        }
        if !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":/_-".contains(&b))
        {
            return Err(Error::invalid(
                "alias may contain only A-Z a-z 0-9 and : / _ - after \"alias/\"",
            ));
        }
        Ok(Alias(s.to_owned()))
    }

    /// Parses an alias a caller wants to create: also refuses the reserved prefix.
    pub(crate) fn parse_user(s: &str) -> Result<Self> {
        let a = Self::parse(s)?;
        if a.0.starts_with(Self::RESERVED_PREFIX) {
            return Err(Error::invalid(
                "aliases beginning with \"alias/strongroom/\" are reserved",
            ));
        }
        Ok(a)
    }

    /// The alias as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Alias({})", self.0)
    }
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Alias {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Alias::parse(&s)
    }
}

impl From<Alias> for String {
    fn from(a: Alias) -> String {
        a.0
    }
}

/// How a caller names a key: its id (`KeyId`, or its text) or one of its
/// aliases (`alias/...`). Every `Client` operation on a key takes
/// `impl Into<KeyRef>`, so a `&str`, a `&String`, a `&KeyId` or an `&Alias`
/// all work; the text is parsed (and refused with
/// [`crate::Error::InvalidArgument`] if it is neither) when the call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRef<'a>(&'a str);

impl<'a> KeyRef<'a> {
    /// The text as given.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// True if it names an alias.
    pub fn is_alias(&self) -> bool {
        self.0.starts_with(Alias::PREFIX)
    }
}

impl<'a> From<&'a str> for KeyRef<'a> {
    fn from(s: &'a str) -> Self {
        KeyRef(s)
    }
}

impl<'a> From<&&'a str> for KeyRef<'a> {
    fn from(s: &&'a str) -> Self {
        KeyRef(s)
    }
}

impl<'a> From<&'a String> for KeyRef<'a> {
    fn from(s: &'a String) -> Self {
        KeyRef(s.as_str())
    }
}

impl<'a> From<&'a KeyId> for KeyRef<'a> {
    fn from(id: &'a KeyId) -> Self {
        KeyRef(id.as_str())
    }
}

impl<'a> From<&'a Alias> for KeyRef<'a> {
    fn from(a: &'a Alias) -> Self {
        KeyRef(a.as_str())
    }
}

impl fmt::Display for KeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
