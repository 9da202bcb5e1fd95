//! Caller identity.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kind of a [`Principal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PrincipalKind {
    /// A human user: `user:alice`.
    User,
    /// A service or workload: `service:billing`.
    Service,
    /// A role assumed by users or services: `role:admin`.
    Role,
}

impl PrincipalKind {
    /// The prefix used in the text form.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Service => "service",
            PrincipalKind::Role => "role",
        }
    }
}

/// A typed caller identity, written `kind:name` (`user:alice`, `service:billing`,
/// `role:admin`).
///
/// Names are 1 to 128 characters of `[A-Za-z0-9._@+=,/-]` and case-sensitive.
/// strongroom does not authenticate callers: the application does, and then
/// acts through [`crate::KeyRing::client`] as the principal it authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal {
    kind: PrincipalKind,
    name: String,
}

impl Principal {
    /// Builds a principal, validating the name.
    pub fn new(kind: PrincipalKind, name: &str) -> Result<Self> {
        validate_name(name)?;
        Ok(Principal {
            kind,
            name: name.to_owned(),
        })
    }

    /// `user:<name>`.
    pub fn user(name: &str) -> Result<Self> {
        Self::new(PrincipalKind::User, name)
    }

    /// `service:<name>`.
    pub fn service(name: &str) -> Result<Self> {
        Self::new(PrincipalKind::Service, name)
    }

    /// `role:<name>`.
    pub fn role(name: &str) -> Result<Self> {
        Self::new(PrincipalKind::Role, name)
    }

    /// The kind.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// The name, without the kind prefix.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(Error::invalid(
            "principal name must be 1 to 128 characters long",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._@+=,/-".contains(&b))
    {
        return Err(Error::invalid(
            "principal name may contain only A-Z a-z 0-9 and . _ @ + = , / -",
        ));
    }
    Ok(())
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

impl FromStr for Principal {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, name) = s.split_once(':').ok_or_else(|| {
            Error::invalid(format!(
                "principal {s:?} must be written kind:name, e.g. user:alice"
            ))
        })?;
        let kind = match kind {
            "user" => PrincipalKind::User,
            "service" => PrincipalKind::Service,
            "role" => PrincipalKind::Role,
            other => {
                return Err(Error::invalid(format!(
                    "unknown principal kind {other:?}: use user, service or role"
                )));
            }
        };
        Principal::new(kind, name)
    }
}

impl TryFrom<String> for Principal {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Principal> for String {
    fn from(p: Principal) -> String {
        p.to_string()
    }
}
