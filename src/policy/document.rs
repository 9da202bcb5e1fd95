//! Policy documents: parsing, validation and evaluation.

use super::{Decision, Reason, Request};
use crate::action::Action;
use crate::error::{Error, Result};
use crate::key::KeyRecord;
use crate::principal::{Principal, PrincipalKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub(crate) use crate::limits::MAX_POLICY_BYTES;

const VERSION: &str = "2026-01-01";

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// The statement allows what it matches.
    Allow,
    /// The statement denies what it matches; beats every Allow and grant.
    Deny,
}

/// One value or a list, as in AWS policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values as a slice.
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

/// Who a statement applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum PrincipalPattern {
    /// `*`: everyone.
    Any,
    /// `user:*`, `service:*`, `role:*`: every principal of a kind.
    Kind(PrincipalKind),
    /// `user:ops-*`: principals of a kind whose name starts with a prefix.
    Prefix(PrincipalKind, String),
    /// One principal.
    Exact(Principal),
}

impl PrincipalPattern {
    /// True if `p` matches. Case-sensitive.
    pub fn matches(&self, p: &Principal) -> bool {
        match self {
            PrincipalPattern::Any => true,
            PrincipalPattern::Kind(k) => p.kind() == *k,
            PrincipalPattern::Prefix(k, pre) => {
                p.kind() == *k && p.name().starts_with(pre.as_str())
            }
            PrincipalPattern::Exact(e) => e == p,
        }
    }
}

impl TryFrom<String> for PrincipalPattern {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        if s == "*" {
            return Ok(PrincipalPattern::Any);
        }
        if let Some(prefix) = s.strip_suffix('*') {
            let (kind, name) = prefix.split_once(':').ok_or_else(|| {
                Error::invalid(format!(
                    "principal pattern {s:?} must be *, kind:*, kind:prefix* or kind:name"
                ))
            })?;
            let kind: Principal = format!("{kind}:x").parse()?;
            if name.contains('*') {
                return Err(Error::invalid(format!(
                    "principal pattern {s:?}: * is allowed only at the end"
                )));
            }
            if name.is_empty() {
                return Ok(PrincipalPattern::Kind(kind.kind()));
            }
            // Validate the prefix as a name.
            Principal::new(kind.kind(), name)?;
            return Ok(PrincipalPattern::Prefix(kind.kind(), name.to_owned()));
        }
        Ok(PrincipalPattern::Exact(s.parse().map_err(|e: Error| {
            Error::invalid(format!("principal pattern {s:?}: {e}"))
        })?))
    }
}

impl From<PrincipalPattern> for String {
    fn from(p: PrincipalPattern) -> String {
        p.to_string()
    }
}

impl fmt::Display for PrincipalPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalPattern::Any => f.write_str("*"),
            PrincipalPattern::Kind(k) => write!(f, "{}:*", k.as_str()),
            PrincipalPattern::Prefix(k, p) => write!(f, "{}:{p}*", k.as_str()),
            PrincipalPattern::Exact(p) => write!(f, "{p}"),
        }
    }
}

/// A condition value: a string, a list of strings, a number, or a map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConditionValue {
    /// A string.
    Str(String),
    /// A list of strings.
    List(Vec<String>),
    /// A number (Unix seconds for the date operators).
    Num(u64),
    /// A map (for the encryption-context operators).
    Map(BTreeMap<String, String>),
}

/// The `Condition` block: operator to (condition key to value).
pub type Condition = BTreeMap<String, BTreeMap<String, ConditionValue>>;

/// One statement of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Optional statement id, reported by decisions.
    #[serde(rename = "Sid", default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Allow or Deny.
    #[serde(rename = "Effect")]
    pub effect: Effect,
    /// Who it applies to.
    #[serde(rename = "Principal")]
    pub principal: OneOrMany<PrincipalPattern>,
    /// Which actions (patterns with `*`).
    #[serde(rename = "Action")]
    pub action: OneOrMany<String>,
    /// Conditions on the request; all must hold.
    #[serde(
        rename = "Condition",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub condition: Condition,
}

/// A key policy (or the ring policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Policy language version: `2026-01-01`.
    #[serde(rename = "Version", default = "version")]
    pub version: String,
    /// The statements.
    #[serde(rename = "Statement")]
    pub statements: Vec<Statement>,
}

fn version() -> String {
    VERSION.to_owned()
}

/// Case-insensitive glob match with `*` wildcards.
fn glob(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

const CONTEXT_PREFIX: &str = "strongroom:EncryptionContext:";

impl Statement {
    fn label(&self, index: usize) -> String {
        self.sid.clone().unwrap_or_else(|| format!("#{index}"))
    }

    fn matches_action(&self, action: Action) -> bool {
        self.action
            .as_slice()
            .iter()
            .any(|p| glob(p, action.as_str()))
    }

    fn matches_principal(&self, p: &Principal) -> bool {
        self.principal.as_slice().iter().any(|pat| pat.matches(p))
    }

    fn conditions_hold(&self, req: &Request<'_>, key: Option<&KeyRecord>) -> bool {
        let empty = crate::EncryptionContext::new();
        let ctx = req.context.unwrap_or(&empty);
        self.condition.iter().all(|(op, entries)| {
            entries.iter().all(|(ckey, val)| match (op.as_str(), val) {
                ("StringEquals", v) => {
                    let actual: Option<String> = if let Some(k) = ckey.strip_prefix(CONTEXT_PREFIX)
                    {
                        req.context.and_then(|c| c.get(k)).map(str::to_owned)
                    } else if ckey == "strongroom:KeyUsage" {
                        key.map(|m| m.usage.as_str().to_owned())
                    } else if ckey == "strongroom:KeySpec" {
                        key.map(|m| m.spec.as_str().to_owned())
                    } else {
                        None
                    };
                    match (actual, v) {
                        (Some(a), ConditionValue::Str(s)) => a == *s,
                        (Some(a), ConditionValue::List(l)) => l.contains(&a),
                        _ => false,
                    }
                }
                ("EncryptionContextEquals", ConditionValue::Map(m)) => {
                    req.context.is_some()
                        && ctx
                            .iter()
                            .eq(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                }
                ("EncryptionContextSubset", ConditionValue::Map(m)) => {
                    req.context.is_some() && m.iter().all(|(k, v)| ctx.get(k) == Some(v.as_str()))
                }
                ("EncryptionContextKeysPresent", ConditionValue::List(l)) => {
                    req.context.is_some() && l.iter().all(|k| ctx.get(k).is_some())
                }
                ("EncryptionContextKeysPresent", ConditionValue::Str(k)) => {
                    req.context.is_some() && ctx.get(k).is_some()
                }
                ("DateLessThan", ConditionValue::Num(n)) => req.now.as_secs() < *n,
                ("DateGreaterThan", ConditionValue::Num(n)) => req.now.as_secs() > *n,
                // Validation refuses anything else; refuse here too.
                _ => false,
            })
        })
    }

    fn validate(&self, index: usize) -> Result<()> {
        let label = self.label(index);
        if self.principal.as_slice().is_empty() {
            return Err(Error::invalid(format!(
                "statement {label}: Principal is empty"
            )));
        }
        if self.action.as_slice().is_empty() {
            return Err(Error::invalid(format!(
                "statement {label}: Action is empty"
            )));
        }
        for pat in self.action.as_slice() {
            if !Action::ALL.iter().any(|a| glob(pat, a.as_str())) {
                return Err(Error::invalid(format!(
                    "statement {label}: unknown action {pat:?} (actions are named like strongroom:Encrypt)"
                )));
            }
        }
        for (op, entries) in &self.condition {
            if entries.is_empty() {
                return Err(Error::invalid(format!(
                    "statement {label}: condition {op} is empty"
                )));
            }
            for (ckey, val) in entries {
                let ok = match op.as_str() {
                    "StringEquals" => {
                        let key_ok = ckey
                            .strip_prefix(CONTEXT_PREFIX)
                            .is_some_and(|k| !k.is_empty())
                            || ckey == "strongroom:KeyUsage"
                            || ckey == "strongroom:KeySpec";
                        if !key_ok {
                            return Err(Error::invalid(format!(
                                "statement {label}: unknown condition key {ckey:?} for StringEquals"
                            )));
                        }
                        matches!(val, ConditionValue::Str(_) | ConditionValue::List(_))
                    }
                    "EncryptionContextEquals" | "EncryptionContextSubset" => {
                        if ckey != "strongroom:EncryptionContext" {
                            return Err(Error::invalid(format!(
                                "statement {label}: condition key for {op} must be strongroom:EncryptionContext, not {ckey:?}"
                            )));
                        }
                        matches!(val, ConditionValue::Map(_))
                    }
                    "EncryptionContextKeysPresent" => {
                        if ckey != "strongroom:EncryptionContextKeys" {
                            return Err(Error::invalid(format!(
                                "statement {label}: condition key for {op} must be strongroom:EncryptionContextKeys, not {ckey:?}"
                            )));
                        }
                        matches!(val, ConditionValue::Str(_) | ConditionValue::List(_))
                    }
                    "DateLessThan" | "DateGreaterThan" => {
                        if ckey != "strongroom:CurrentTime" {
                            return Err(Error::invalid(format!(
                                "statement {label}: condition key for {op} must be strongroom:CurrentTime, not {ckey:?}"
                            )));
                        }
                        matches!(val, ConditionValue::Num(_))
                    }
                    other => {
                        return Err(Error::invalid(format!(
                            "statement {label}: unknown condition operator {other:?}"
                        )));
                    }
                };
                if !ok {
                    return Err(Error::invalid(format!(
                        "statement {label}: wrong value type for {op} {ckey}"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Policy {
    /// Parses and validates a JSON policy document.
    pub fn from_json(json: &str) -> Result<Policy> {
        if json.len() > MAX_POLICY_BYTES {
            return Err(Error::invalid(format!(
                "policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
                json.len()
            )));
        }
        let p: Policy = serde_json::from_str(json)
            .map_err(|e| Error::invalid(format!("policy is not valid: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    /// The policy as JSON.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail (string keys only).
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every statement: known actions, principals, operators and
    /// condition keys, version, size.
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
                "policy exceeds {MAX_POLICY_BYTES} bytes"
            )));
        }
        for (i, s) in self.statements.iter().enumerate() {
            s.validate(i)?;
        }
        Ok(())
    }

    /// The default key policy: the key's creator has full control.
    pub fn default_for(creator: &Principal) -> Policy {
        Policy {
            version: version(),
            statements: vec![Statement {
                sid: Some("KeyCreatorFullControl".into()),
                effect: Effect::Allow,
                principal: OneOrMany::One(PrincipalPattern::Exact(creator.clone())),
                action: OneOrMany::One("strongroom:*".into()),
                condition: BTreeMap::new(),
            }],
        }
    }

    /// The ring-wide actions ([`Action::RING_WIDE`]): those decided by the
    /// ring policy because they act on no existing key.
    pub const RING_ACTIONS: &'static [Action] = Action::RING_WIDE;

    /// A ring policy that lets only `admins` perform the ring-wide actions
    /// ([`Policy::RING_ACTIONS`]: create and import keys, list key ids and
    /// aliases, draw random bytes, list secrets). Everyone else can only use keys whose
    /// policies or grants name them.
    pub fn ring_admins(admins: impl IntoIterator<Item = Principal>) -> Policy {
        let admins = admins.into_iter().map(PrincipalPattern::Exact).collect();
        Self::ring_wide("RingAdmins", OneOrMany::Many(admins))
    }

    /// The open ring policy, the ring's default unless the builder names
    /// admins ([`crate::KeyRingBuilder::ring_admins`]): *any* principal may
    /// perform the ring-wide actions ([`Policy::RING_ACTIONS`]) — create (or
    /// import) keys, which it then owns, list key ids and aliases, draw
    /// random bytes, and list secrets (their names and metadata; reading a
    /// value is decided on the secret's key). It gives no right on any existing key: every action on a
    /// key is decided by that key's policy and grants alone.
    pub fn open_ring() -> Policy {
        Self::ring_wide(
            "AnyPrincipalMayCreateAndList",
            OneOrMany::One(PrincipalPattern::Any),
        )
    }

    /// One statement allowing `principal` every ring-wide action.
    fn ring_wide(sid: &str, principal: OneOrMany<PrincipalPattern>) -> Policy {
        Policy {
            version: version(),
            statements: vec![Statement {
                sid: Some(sid.into()),
                effect: Effect::Allow,
                principal,
                action: OneOrMany::Many(
                    Self::RING_ACTIONS
                        .iter()
                        .map(|a| a.as_str().into())
                        .collect(),
                ),
                condition: BTreeMap::new(),
            }],
        }
    }

    /// Evaluates the statements alone (no grants): Deny wins, then Allow,
    /// else the default deny.
    pub fn evaluate(&self, req: &Request<'_>, key: Option<&KeyRecord>) -> Decision {
        let mut allow: Option<String> = None;
        for (i, s) in self.statements.iter().enumerate() {
            if !s.matches_principal(req.principal)
                || !s.matches_action(req.action)
                || !s.conditions_hold(req, key)
            {
                continue;
            }
            match s.effect {
                Effect::Deny => return Decision::deny(Reason::DenyStatement(s.label(i))),
                Effect::Allow => {
                    allow.get_or_insert_with(|| s.label(i));
                }
            }
        }
        match allow {
            Some(sid) => Decision::allow(Reason::AllowStatement(sid)),
            None => Decision::deny(Reason::NoMatchingAllow),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches() {
        assert!(glob("strongroom:*", "strongroom:Encrypt"));
        assert!(glob("STRONGROOM:encrypt", "strongroom:Encrypt"));
        assert!(glob("strongroom:Generate*", "strongroom:GenerateDataKey"));
        assert!(glob("*Key*", "strongroom:GenerateDataKeyWithoutPlaintext"));
        assert!(!glob("strongroom:Encrypt", "strongroom:EncryptX"));
        assert!(!glob("strongroom:Gen*Z", "strongroom:GenerateDataKey"));
        assert!(glob("*", ""));
    }
}
