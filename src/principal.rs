//! Caller identity: principals and the accounts they belong to.

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

/// An account id: exactly 12 ASCII digits, as in AWS (`111122223333`).
///
/// Every ring belongs to one account ([`crate::KeyRingBuilder::account`],
/// default [`AccountId::DEFAULT`], `000000000000`); principals belong to an
/// account too. A principal written without an account is in the ring's own
/// account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// The account of a ring built without [`crate::KeyRingBuilder::account`]:
    /// `000000000000`.
    pub const DEFAULT: &'static str = "000000000000";

    /// Validates `id`: exactly 12 ASCII digits.
    pub fn new(id: &str) -> Result<Self> {
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid(format!(
                "account id {id:?} must be exactly 12 digits, e.g. 111122223333"
            )));
        }
        Ok(AccountId(id.to_owned()))
    }

    /// The default account ([`AccountId::DEFAULT`]).
    pub fn default_account() -> Self {
        AccountId(Self::DEFAULT.to_owned())
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for AccountId {
    fn default() -> Self {
        Self::default_account()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AccountId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        AccountId::new(s)
    }
}

impl TryFrom<String> for AccountId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        AccountId::new(&s)
    }
}

impl From<AccountId> for String {
    fn from(a: AccountId) -> String {
        a.0
    }
}

/// The text prefix of an account-qualified principal or pattern.
pub(crate) const ACCOUNT_PREFIX: &str = "account:";

/// Splits `account:<id>/<rest>` into the account and `rest`; `None` if `s`
/// does not start with `account:`.
pub(crate) fn split_account(s: &str) -> Option<Result<(AccountId, &str)>> {
    let after = s.strip_prefix(ACCOUNT_PREFIX)?;
    Some(match after.split_once('/') {
        Some((id, rest)) => AccountId::new(id).map(|a| (a, rest)),
        None => Err(Error::invalid(format!(
            "{s:?} must be written account:<12 digits>/kind:name"
        ))),
    })
}

/// A typed caller identity, written `kind:name` (`user:alice`, `service:billing`,
/// `role:admin`), or `account:<id>/kind:name` for a principal of a given
/// account (`account:111122223333/role:payments`).
///
/// Names are 1 to 128 characters of `[A-Za-z0-9._@+=,/-]` and case-sensitive.
/// strongroom does not authenticate callers: the application does, and then
/// acts through [`crate::KeyRing::client`] as the principal it authenticated.
///
/// A principal without an account is in the ring's own account
/// ([`crate::KeyRingBuilder::account`]). [`crate::KeyRing::client`]
/// normalizes once: `account:<the ring's id>/user:alice` becomes
/// `user:alice`, so both are the same caller for every decision, grant and
/// audit record, and the text of own-account principals is what it always
/// was. Outside a ring the two values are different ([`Principal::account`]
/// differs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal {
    // Field order matters for the derived `Ord`: principals without an
    // account sort first, as they always did among themselves.
    account: Option<AccountId>,
    kind: PrincipalKind,
    name: String,
}

impl Principal {
    /// Builds a principal, validating the name.
    pub fn new(kind: PrincipalKind, name: &str) -> Result<Self> {
        validate_name(name)?;
        Ok(Principal {
            account: None,
            kind,
            name: name.to_owned(),
        })
    }

    /// The same principal in `account`.
    pub fn in_account(mut self, account: AccountId) -> Self {
        self.account = Some(account);
        self
    }

    /// The principal's account, if it names one (`None`: the ring's own
    /// account).
    pub fn account(&self) -> Option<&AccountId> {
        self.account.as_ref()
    }

    /// The account the principal belongs to in a ring of account `own`.
    pub fn account_or<'a>(&'a self, own: &'a AccountId) -> &'a AccountId {
        self.account.as_ref().unwrap_or(own)
    }

    /// The principal as a ring of account `own` sees it: without an account
    /// if it is in `own` (the one normalization, done by
    /// [`crate::KeyRing::client`]).
    pub fn normalized(mut self, own: &AccountId) -> Self {
        if self.account.as_ref() == Some(own) {
            self.account = None;
        }
        self
    }

    /// True if `self` and `other` are the same caller in a ring of account
    /// `own`.
    pub fn same_in(&self, other: &Principal, own: &AccountId) -> bool {
        self.kind == other.kind
            && self.name == other.name
            && self.account_or(own) == other.account_or(own)
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
        if let Some(a) = &self.account {
            write!(f, "{ACCOUNT_PREFIX}{a}/")?;
        }
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

impl FromStr for Principal {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(split) = split_account(s) {
            let (account, rest) = split?;
            let p: Principal = rest.parse()?;
            if p.account.is_some() {
                return Err(Error::invalid(format!(
                    "principal {s:?} names two accounts"
                )));
            }
            return Ok(p.in_account(account));
        }
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
