//! Policy documents: parsing, validation and evaluation.

use super::{Decision, Reason, Request};
use crate::action::Action;
use crate::error::{Error, Result};
use crate::key::KeyRecord;
use crate::principal::{ACCOUNT_PREFIX, AccountId, Principal, PrincipalKind, split_account};
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
///
/// Patterns without an account (`user:*`, `user:ops-*`, `user:alice`)
/// apply to principals of the ring's own account only;
/// `account:<id>/<pattern>` to principals of account `<id>` (the ring's own
/// id means the same as no account). `*` is everyone, of every account.
/// `account:<id>` is the account itself: in an `Allow` it delegates to the
/// identity policies of that account's principals (AWS's
/// `arn:aws:iam::<id>:root`), in a `Deny` it denies every principal of
/// that account.
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
    /// `account:<id>`: the whole account (delegation to its identity
    /// policies).
    Account(AccountId),
    /// `account:<id>/<pattern>`: principals of account `<id>` matching
    /// `<pattern>` (`*`, a kind, a prefix or one principal, read without
    /// an account).
    InAccount(AccountId, Box<PrincipalPattern>),
}

/// How a principal pattern applies to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// It does not.
    No,
    /// It names the caller (or everyone, or the caller's kind...).
    Direct,
    /// It names the caller's account as a whole (`account:<id>`).
    Account,
}

impl PrincipalPattern {
    /// True if the pattern names `p` directly, in a ring of the default
    /// account ([`AccountId::DEFAULT`]). Case-sensitive. Account patterns
    /// (`account:<id>`) never match directly: they delegate.
    pub fn matches(&self, p: &Principal) -> bool {
        self.match_in(p, &AccountId::default_account()) == Match::Direct
    }

    /// How the pattern applies to `p` in a ring of account `own`.
    pub(crate) fn match_in(&self, p: &Principal, own: &AccountId) -> Match {
        let acct = p.account_or(own);
        let hit = |b: bool| if b { Match::Direct } else { Match::No };
        match self {
            PrincipalPattern::Any => Match::Direct,
            PrincipalPattern::Account(a) => {
                if a == acct {
                    Match::Account
                } else {
                    Match::No
                }
            }
            PrincipalPattern::InAccount(a, inner) => {
                if a != acct {
                    return Match::No;
                }
                // The inner pattern is read in account `a`.
                inner.match_in(p, a)
            }
            PrincipalPattern::Kind(k) => hit(acct == own && p.kind() == *k),
            PrincipalPattern::Prefix(k, pre) => {
                hit(acct == own && p.kind() == *k && p.name().starts_with(pre.as_str()))
            }
            PrincipalPattern::Exact(e) => hit(e.same_in(p, own)),
        }
    }

    /// Parses a pattern without an account part.
    fn parse_local(s: &str) -> Result<Self> {
        if s == "*" {
            return Ok(PrincipalPattern::Any);
        }
        if let Some(prefix) = s.strip_suffix('*') {
            let (kind, name) = prefix.split_once(':').ok_or_else(|| {
                Error::invalid(format!(
                    "principal pattern {s:?} must be *, kind:*, kind:prefix*, kind:name, \
                     account:<id> or account:<id>/<one of those>"
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

impl TryFrom<String> for PrincipalPattern {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        if let Some(id) = s.strip_prefix(ACCOUNT_PREFIX)
            && !id.contains('/')
        {
            return Ok(PrincipalPattern::Account(AccountId::new(id)?));
        }
        if let Some(split) = split_account(&s) {
            let (account, rest) = split?;
            if rest.starts_with(ACCOUNT_PREFIX) {
                return Err(Error::invalid(format!(
                    "principal pattern {s:?} names two accounts"
                )));
            }
            let inner = PrincipalPattern::parse_local(rest)?;
            return Ok(PrincipalPattern::InAccount(account, Box::new(inner)));
        }
        PrincipalPattern::parse_local(&s)
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
            PrincipalPattern::Account(a) => write!(f, "{ACCOUNT_PREFIX}{a}"),
            PrincipalPattern::InAccount(a, inner) => write!(f, "{ACCOUNT_PREFIX}{a}/{inner}"),
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
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
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

    /// The strongest way any of the statement's patterns applies to `p`
    /// (direct beats account).
    fn match_principal(&self, p: &Principal, own: &AccountId) -> Match {
        let mut best = Match::No;
        for pat in self.principal.as_slice() {
            match pat.match_in(p, own) {
                Match::Direct => return Match::Direct,
                Match::Account => best = Match::Account,
                Match::No => {}
            }
        }
        best
    }

    fn conditions_hold(&self, req: &Request<'_>, key: Option<&KeyRecord>) -> bool {
        conditions_hold(&self.condition, req, key)
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
        validate_condition(&self.condition, &label)
    }
}

/// True if every condition of `condition` holds for `req` on `key`.
pub(crate) fn conditions_hold(
    condition: &Condition,
    req: &Request<'_>,
    key: Option<&KeyRecord>,
) -> bool {
    let empty = crate::EncryptionContext::new();
    let ctx = req.context.unwrap_or(&empty);
    condition.iter().all(|(op, entries)| {
        entries.iter().all(|(ckey, val)| match (op.as_str(), val) {
            ("StringEquals", v) => {
                let actual: Option<String> = if let Some(k) = ckey.strip_prefix(CONTEXT_PREFIX) {
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

/// Checks a `Condition` block: known operators, condition keys and value
/// types. `label` names the statement in errors.
pub(crate) fn validate_condition(condition: &Condition, label: &str) -> Result<()> {
    for (op, entries) in condition {
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
    ///
    /// The admins may also manage identity policies
    /// ([`Action::IDENTITY_POLICY_ACTIONS`]), which the open ring policy
    /// allows nobody.
    pub fn ring_admins(admins: impl IntoIterator<Item = Principal>) -> Policy {
        let admins = admins.into_iter().map(PrincipalPattern::Exact).collect();
        let mut p = Self::ring_wide("RingAdmins", OneOrMany::Many(admins));
        if let Some(s) = p.statements.first_mut()
            && let OneOrMany::Many(actions) = &mut s.action
        {
            actions.extend(
                Action::IDENTITY_POLICY_ACTIONS
                    .iter()
                    .map(|a| a.as_str().to_owned()),
            );
        }
        p
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

    /// Evaluates the statements alone (no grants, no identity policies) in
    /// a ring of the default account: Deny wins, then an Allow that names
    /// the caller, else the default deny. (`account:<id>` statements only
    /// delegate; [`crate::policy::decide_with`] weighs them.)
    pub fn evaluate(&self, req: &Request<'_>, key: Option<&KeyRecord>) -> Decision {
        let side = self.evaluate_side(req, key, &AccountId::default_account());
        if let Some(sid) = side.deny {
            return Decision::deny(Reason::DenyStatement(sid));
        }
        match side.direct {
            Some(sid) => Decision::allow(Reason::AllowStatement(sid)),
            None => Decision::deny(Reason::NoMatchingAllow),
        }
    }

    /// The resource side of a decision in a ring of account `own`: the
    /// first matching Deny, the first Allow naming the caller, the first
    /// Allow naming the caller's account as a whole.
    pub(crate) fn evaluate_side(
        &self,
        req: &Request<'_>,
        key: Option<&KeyRecord>,
        own: &AccountId,
    ) -> KeySide {
        let mut side = KeySide::default();
        for (i, s) in self.statements.iter().enumerate() {
            let m = s.match_principal(req.principal, own);
            if m == Match::No || !s.matches_action(req.action) || !s.conditions_hold(req, key) {
                continue;
            }
            match (s.effect, m) {
                (Effect::Deny, _) => {
                    side.deny = Some(s.label(i));
                    return side;
                }
                (Effect::Allow, Match::Direct) => {
                    side.direct.get_or_insert_with(|| s.label(i));
                }
                (Effect::Allow, _) => {
                    side.account.get_or_insert_with(|| s.label(i));
                }
            }
        }
        side
    }
}

/// What a key policy (or the ring policy) says about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeySide {
    /// The first matching Deny statement.
    pub deny: Option<String>,
    /// The first matching Allow naming the caller (or `*`, its kind...).
    pub direct: Option<String>,
    /// The first matching Allow naming the caller's account as a whole.
    pub account: Option<String>,
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
