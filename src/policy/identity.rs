//! Identity policies: documents attached to a principal, saying what it may
//! do to which keys (the IAM half of access control).

use super::Request;
use super::document::{Condition, Effect, OneOrMany, conditions_hold, glob, validate_condition};
use crate::action::Action;
use crate::error::{Error, Result};
use crate::key::{Alias, KeyId, KeyRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub(crate) use crate::limits::MAX_POLICY_BYTES;

const VERSION: &str = "2026-01-01";

fn version() -> String {
    VERSION.to_owned()
}

/// Which keys an identity statement applies to.
///
/// - `*`: every key, and the ring itself (the only resource that matches
///   the ring-wide actions such as `CreateKey` and the identity-policy
///   management actions);
/// - a key id (`1234abcd-...` or `mrk-...`): that key;
/// - a key id prefix ending in `*` (`mrk-*`, `1234*`): every key whose id
///   starts with it;
/// - `alias/<name>` (no wildcard): the key the alias points at when the
///   request is decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum ResourcePattern {
    /// `*`.
    Any,
    /// One key id.
    Key(KeyId),
    /// Key ids starting with this prefix (written with a trailing `*`).
    KeyPrefix(String),
    /// The key an alias points at.
    Alias(Alias),
}

/// The resource a request is on, as identity policies see it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resource<'a> {
    /// No key: a ring-wide action.
    Ring,
    /// A key, and the aliases (among those the policies name) that point at
    /// it.
    Key(&'a KeyId, &'a [Alias]),
}

impl ResourcePattern {
    fn matches(&self, r: Resource<'_>) -> bool {
        match (self, r) {
            (ResourcePattern::Any, _) => true,
            (_, Resource::Ring) => false,
            (ResourcePattern::Key(k), Resource::Key(id, _)) => k == id,
            (ResourcePattern::KeyPrefix(p), Resource::Key(id, _)) => {
                id.as_str().starts_with(p.as_str())
            }
            (ResourcePattern::Alias(a), Resource::Key(_, aliases)) => aliases.contains(a),
        }
    }
}

impl TryFrom<String> for ResourcePattern {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        if s == "*" {
            return Ok(ResourcePattern::Any);
        }
        if s.starts_with(Alias::PREFIX) {
            if s.contains('*') {
                return Err(Error::invalid(format!(
                    "resource {s:?}: aliases are named exactly, without *"
                )));
            }
            return Ok(ResourcePattern::Alias(Alias::parse(&s)?));
        }
        if let Some(prefix) = s.strip_suffix('*') {
            if prefix.is_empty()
                || prefix.len() > 64
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
            {
                return Err(Error::invalid(format!(
                    "resource {s:?}: a key id prefix is 1 to 64 characters of a-z 0-9 - \
                     followed by one *"
                )));
            }
            return Ok(ResourcePattern::KeyPrefix(prefix.to_owned()));
        }
        KeyId::parse(&s).map(ResourcePattern::Key).map_err(|_| {
            Error::invalid(format!(
                "resource {s:?} must be *, a key id, a key id prefix followed by *, or alias/name"
            ))
        })
    }
}

impl From<ResourcePattern> for String {
    fn from(r: ResourcePattern) -> String {
        r.to_string()
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourcePattern::Any => f.write_str("*"),
            ResourcePattern::Key(k) => f.write_str(k.as_str()),
            ResourcePattern::KeyPrefix(p) => write!(f, "{p}*"),
            ResourcePattern::Alias(a) => f.write_str(a.as_str()),
        }
    }
}

/// One statement of an identity policy: like a key-policy statement, with a
/// `Resource` instead of a `Principal` (the principal is the one the policy
/// is attached to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityStatement {
    /// Optional statement id, reported by decisions.
    #[serde(rename = "Sid", default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Allow or Deny.
    #[serde(rename = "Effect")]
    pub effect: Effect,
    /// Which actions (patterns with `*`).
    #[serde(rename = "Action")]
    pub action: OneOrMany<String>,
    /// Which keys ([`ResourcePattern`]).
    #[serde(rename = "Resource")]
    pub resource: OneOrMany<ResourcePattern>,
    /// Conditions on the request; all must hold (the same operators and
    /// keys as key policies).
    #[serde(
        rename = "Condition",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub condition: Condition,
}

impl IdentityStatement {
    fn label(&self, index: usize) -> String {
        self.sid.clone().unwrap_or_else(|| format!("#{index}"))
    }

    fn applies(&self, req: &Request<'_>, resource: Resource<'_>, key: Option<&KeyRecord>) -> bool {
        self.action
            .as_slice()
            .iter()
            .any(|p| glob(p, req.action.as_str()))
            && self.resource.as_slice().iter().any(|r| r.matches(resource))
            && conditions_hold(&self.condition, req, key)
    }
}

/// An identity policy document: JSON like a key policy, each statement with
/// `Resource` and without `Principal`.
///
/// ```json
/// {
///   "Version": "2026-01-01",
///   "Statement": [
///     { "Sid": "UsePaymentKeys", "Effect": "Allow",
///       "Action": ["strongroom:Encrypt", "strongroom:Decrypt"],
///       "Resource": ["alias/payments", "mrk-*"] },
///     { "Sid": "NeverDelete", "Effect": "Deny",
///       "Action": "strongroom:ScheduleKeyDeletion", "Resource": "*" }
///   ]
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityPolicy {
    /// Policy language version: `2026-01-01`.
    #[serde(rename = "Version", default = "version")]
    pub version: String,
    /// The statements.
    #[serde(rename = "Statement")]
    pub statements: Vec<IdentityStatement>,
}

impl IdentityPolicy {
    /// Parses and validates a JSON identity policy.
    pub fn from_json(json: &str) -> Result<IdentityPolicy> {
        if json.len() > MAX_POLICY_BYTES {
            return Err(Error::invalid(format!(
                "identity policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
                json.len()
            )));
        }
        let p: IdentityPolicy = serde_json::from_str(json)
            .map_err(|e| Error::invalid(format!("identity policy is not valid: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    /// The policy as JSON.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail (string keys only).
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the version, the size, and every statement: known actions,
    /// resources, operators and condition keys.
    pub fn validate(&self) -> Result<()> {
        if self.version != VERSION {
            return Err(Error::invalid(format!(
                "unknown policy Version {:?}: use {VERSION:?}",
                self.version
            )));
        }
        if serde_json::to_vec(self)
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
            > MAX_POLICY_BYTES
        {
            return Err(Error::invalid(format!(
                "identity policy exceeds {MAX_POLICY_BYTES} bytes"
            )));
        }
        for (i, s) in self.statements.iter().enumerate() {
            let label = s.label(i);
            if s.action.as_slice().is_empty() {
                return Err(Error::invalid(format!(
                    "statement {label}: Action is empty"
                )));
            }
            if s.resource.as_slice().is_empty() {
                return Err(Error::invalid(format!(
                    "statement {label}: Resource is empty"
                )));
            }
            for pat in s.action.as_slice() {
                if !Action::ALL.iter().any(|a| glob(pat, a.as_str())) {
                    return Err(Error::invalid(format!(
                        "statement {label}: unknown action {pat:?} (actions are named like strongroom:Encrypt)"
                    )));
                }
            }
            validate_condition(&s.condition, &label)?;
        }
        Ok(())
    }

    /// The aliases the policy's statements name as resources.
    pub(crate) fn aliases(&self) -> impl Iterator<Item = &Alias> {
        self.statements
            .iter()
            .flat_map(|s| s.resource.as_slice())
            .filter_map(|r| match r {
                ResourcePattern::Alias(a) => Some(a),
                _ => None,
            })
    }
}

/// Checks an identity policy's name: 1 to 128 characters of
/// `[A-Za-z0-9+=,.@_-]`.
pub fn validate_policy_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
    {
        return Err(Error::invalid(format!(
            "identity policy name {name:?} must be 1 to 128 characters of A-Z a-z 0-9 + = , . @ _ -"
        )));
    }
    Ok(())
}

/// An identity policy and the name it is attached under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttachedPolicy {
    /// The policy's name (unique per principal).
    pub name: String,
    /// The document.
    pub policy: IdentityPolicy,
}

impl AttachedPolicy {
    /// `policy` under `name` (validated: [`validate_policy_name`]).
    pub fn new(name: &str, policy: IdentityPolicy) -> Result<Self> {
        validate_policy_name(name)?;
        Ok(AttachedPolicy {
            name: name.to_owned(),
            policy,
        })
    }
}

/// What a principal's identity policies say about one request: the first
/// matching Deny and the first matching Allow, each as (policy name,
/// statement label), policies in the order given (the ring keeps them in
/// name order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IdentitySide {
    pub deny: Option<(String, String)>,
    pub allow: Option<(String, String)>,
}

pub(crate) fn evaluate_identity(
    policies: &[AttachedPolicy],
    req: &Request<'_>,
    resource: Resource<'_>,
    key: Option<&KeyRecord>,
) -> IdentitySide {
    let mut side = IdentitySide::default();
    for ap in policies {
        for (i, s) in ap.policy.statements.iter().enumerate() {
            if !s.applies(req, resource, key) {
                continue;
            }
            match s.effect {
                Effect::Deny => {
                    side.deny = Some((ap.name.clone(), s.label(i)));
                    return side;
                }
                Effect::Allow => {
                    side.allow
                        .get_or_insert_with(|| (ap.name.clone(), s.label(i)));
                }
            }
        }
    }
    side
}
