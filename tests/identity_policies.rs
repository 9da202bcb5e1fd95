//! Identity policies and accounts (issue 19, part 2): a decision table run
//! through real rings, a property test against an independent oracle of the
//! AWS KMS rules, persistence on the file keystore (across reopen and
//! across rings), audit events of the management actions, and their
//! denials.

use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use strongroom::audit::{MemorySink, Outcome};
use strongroom::clock::ManualClock;
use strongroom::keyring::ExplainOptions;
use strongroom::keyring::PutKeyPolicyOptions;
use strongroom::policy::{
    AttachedPolicy, GrantRequest, Identity, IdentityPolicy, Policy, PrincipalPattern, Reason,
    Request, decide_with,
};
use strongroom::store::{
    KeyMetadata, KeystoreOptions, MemoryStore, MetadataStore, OpenMode, RootKey,
};
use strongroom::{
    AccountId, Action, CreateKeyOptions, EncryptionContext, Error, KeyId, KeyRing, KeySpec,
    Principal, Timestamp,
};

const T0: Timestamp = Timestamp(1_800_000_000);
const OWN: &str = "111122223333";
const OTHER: &str = "444455556666";

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

fn own() -> AccountId {
    AccountId::new(OWN).unwrap()
}

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs.iter().map(|(k, v)| (*k, *v)).collect()
}

/// The ring policy of the table: `role:admin` may do everything ring-wide,
/// and the ring delegates to its own account's identity policies.
fn table_ring_policy() -> Policy {
    Policy::from_json(&format!(
        r#"{{"Statement":[
            {{"Sid":"RingAdmin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"}},
            {{"Sid":"DelegateToAccount","Effect":"Allow","Principal":"account:{OWN}","Action":"strongroom:*"}}
        ]}}"#
    ))
    .unwrap()
}

/// One row: a key policy (its statements besides the admin's), identity
/// policies of the principal, grants to it, the request, and the expected
/// decision with what decided it.
struct Row {
    name: &'static str,
    key_policy: &'static str,
    identity: &'static [(&'static str, &'static str)],
    grant: &'static [Action],
    principal: &'static str,
    action: Action,
    on_key: bool,
    context: &'static [(&'static str, &'static str)],
    allowed: bool,
    reason: Expect,
}

/// The deciding reason, with the policy and statement names.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Allow(&'static str),
    Deny(&'static str),
    IdDeny(&'static str, &'static str),
    IdAllow(&'static str, &'static str, &'static str),
    Cross(&'static str, &'static str, &'static str),
    NoIdAllow(&'static str),
    NoKeyAllow(&'static str, &'static str),
    Grant,
    None,
}

fn reason_matches(e: Expect, r: &Reason) -> bool {
    let s = |x: &str| x.to_owned();
    match e {
        Expect::Allow(k) => *r == Reason::AllowStatement(s(k)),
        Expect::Deny(k) => *r == Reason::DenyStatement(s(k)),
        Expect::IdDeny(p, st) => {
            *r == Reason::IdentityDenyStatement {
                policy: s(p),
                statement: s(st),
            }
        }
        Expect::IdAllow(k, p, st) => {
            *r == Reason::IdentityAllowStatement {
                key_statement: s(k),
                policy: s(p),
                statement: s(st),
            }
        }
        Expect::Cross(k, p, st) => {
            *r == Reason::CrossAccountAllow {
                key_statement: s(k),
                policy: s(p),
                statement: s(st),
            }
        }
        Expect::NoIdAllow(k) => {
            *r == Reason::MissingIdentityAllow {
                key_statement: s(k),
            }
        }
        Expect::NoKeyAllow(p, st) => {
            *r == Reason::MissingKeyPolicyAllow {
                policy: s(p),
                statement: s(st),
            }
        }
        Expect::Grant => matches!(r, Reason::Grant(_)),
        Expect::None => *r == Reason::NoMatchingAllow,
    }
}

/// `{OWN}`, `{OTHER}`, `{KEY}`, `{KEYPFX}` (the key id's first 8
/// characters) and `{OKEY}` (another key) in a table text.
fn fill(s: &str, key: &KeyId, other_key: &KeyId) -> String {
    s.replace("{OWN}", OWN)
        .replace("{OTHER}", OTHER)
        .replace("{KEYPFX}", &key.as_str()[..8])
        .replace("{KEY}", key.as_str())
        .replace("{OKEY}", other_key.as_str())
}

const A: Action = Action::Encrypt;

macro_rules! row {
    ($name:expr, $kp:expr, $id:expr, $who:expr, $act:expr, $allowed:expr, $reason:expr) => {
        Row {
            name: $name,
            key_policy: $kp,
            identity: $id,
            grant: &[],
            principal: $who,
            action: $act,
            on_key: true,
            context: &[],
            allowed: $allowed,
            reason: $reason,
        }
    };
}

const ALICE_ENC: &str =
    r#"{"Sid":"KAlice","Effect":"Allow","Principal":"user:alice","Action":"strongroom:Encrypt"}"#;
const ROOT: &str =
    r#"{"Sid":"Root","Effect":"Allow","Principal":"account:{OWN}","Action":"strongroom:*"}"#;
const X_ROOT: &str =
    r#"{"Sid":"X","Effect":"Allow","Principal":"account:{OTHER}","Action":"strongroom:*"}"#;
const X_PAY: &str = r#"{"Sid":"XPay","Effect":"Allow","Principal":"account:{OTHER}/role:payments","Action":["strongroom:Encrypt","strongroom:Decrypt"]}"#;
const USE_KEY: &str =
    r#"{"Sid":"Use","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"{KEY}"}"#;
const USE_ANY: &str = r#"{"Sid":"Use","Effect":"Allow","Action":"strongroom:*","Resource":"*"}"#;
const NO_ENC: &str =
    r#"{"Sid":"NoEnc","Effect":"Deny","Action":"strongroom:Encrypt","Resource":"*"}"#;
const XP: &str = "account:444455556666/role:payments";

fn rows() -> Vec<Row> {
    use Expect::*;
    vec![
        // ---- inside the key's account -------------------------------------
        row!(
            "key policy alone allows",
            ALICE_ENC,
            &[],
            "user:alice",
            A,
            true,
            Allow("KAlice")
        ),
        row!(
            "identity deny beats a key-policy allow",
            ALICE_ENC,
            &[("p1", NO_ENC)],
            "user:alice",
            A,
            false,
            IdDeny("p1", "NoEnc")
        ),
        row!(
            "delegation + identity allow",
            ROOT,
            &[("p1", USE_KEY)],
            "user:alice",
            A,
            true,
            IdAllow("Root", "p1", "Use")
        ),
        row!(
            "delegation + identity allow on another key",
            ROOT,
            &[(
                "p1",
                r#"{"Sid":"Use","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"{OKEY}"}"#
            )],
            "user:alice",
            A,
            false,
            None
        ),
        row!(
            "delegation without identity policy",
            ROOT,
            &[],
            "user:alice",
            A,
            false,
            None
        ),
        row!(
            "identity allow without delegation",
            r#"{"Sid":"Bob","Effect":"Allow","Principal":"user:bob","Action":"strongroom:*"}"#,
            &[("p1", USE_KEY)],
            "user:alice",
            A,
            false,
            NoKeyAllow("p1", "Use")
        ),
        row!(
            "resource by alias",
            ROOT,
            &[(
                "p1",
                r#"{"Sid":"ByAlias","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"alias/pay"}"#
            )],
            "user:alice",
            A,
            true,
            IdAllow("Root", "p1", "ByAlias")
        ),
        row!(
            "resource by an alias of another key",
            ROOT,
            &[(
                "p1",
                r#"{"Sid":"ByAlias","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"alias/other"}"#
            )],
            "user:alice",
            A,
            false,
            None
        ),
        row!(
            "resource by key id prefix",
            ROOT,
            &[(
                "p1",
                r#"{"Sid":"Pfx","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"{KEYPFX}*"}"#
            )],
            "user:alice",
            A,
            true,
            IdAllow("Root", "p1", "Pfx")
        ),
        row!(
            "mrk-* does not match a single-region key",
            ROOT,
            &[(
                "p1",
                r#"{"Sid":"Mrk","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"mrk-*"}"#
            )],
            "user:alice",
            A,
            false,
            None
        ),
        row!(
            "key-policy deny beats delegation and identity allow",
            r#"{"Sid":"Root","Effect":"Allow","Principal":"account:{OWN}","Action":"strongroom:*"},
               {"Sid":"NoAlice","Effect":"Deny","Principal":"user:alice","Action":"strongroom:Encrypt"}"#,
            &[("p1", USE_KEY)],
            "user:alice",
            A,
            false,
            Deny("NoAlice")
        ),
        row!(
            "key-policy deny * on Decrypt",
            r#"{"Sid":"KAlice","Effect":"Allow","Principal":"user:alice","Action":"strongroom:*"},
               {"Sid":"NoDecrypt","Effect":"Deny","Principal":"*","Action":"strongroom:Decrypt"}"#,
            &[],
            "user:alice",
            Action::Decrypt,
            false,
            Deny("NoDecrypt")
        ),
        row!(
            "identity wildcard action",
            ROOT,
            &[(
                "p1",
                r#"{"Sid":"Gen","Effect":"Allow","Action":"strongroom:Generate*","Resource":"*"}"#
            )],
            "user:alice",
            Action::GenerateDataKey,
            true,
            IdAllow("Root", "p1", "Gen")
        ),
        row!(
            "identity allows Decrypt only",
            ROOT,
            &[(
                "p1",
                r#"{"Sid":"Dec","Effect":"Allow","Action":"strongroom:Decrypt","Resource":"*"}"#
            )],
            "user:alice",
            A,
            false,
            None
        ),
        row!(
            "two policies: the deny of b wins",
            ROOT,
            &[("a", USE_ANY), ("b", NO_ENC)],
            "user:alice",
            A,
            false,
            IdDeny("b", "NoEnc")
        ),
        row!(
            "two allowing policies: the first by name decides",
            ROOT,
            &[
                (
                    "a",
                    r#"{"Sid":"First","Effect":"Allow","Action":"strongroom:*","Resource":"*"}"#
                ),
                ("b", USE_KEY)
            ],
            "user:alice",
            A,
            true,
            IdAllow("Root", "a", "First")
        ),
        row!(
            "delegation of Decrypt only",
            r#"{"Sid":"RootDec","Effect":"Allow","Principal":"account:{OWN}","Action":"strongroom:Decrypt"}"#,
            &[("p1", USE_ANY)],
            "user:alice",
            A,
            false,
            NoKeyAllow("p1", "Use")
        ),
        row!(
            "unnamed statements are #index",
            ROOT,
            &[(
                "p1",
                r#"{"Effect":"Allow","Action":"strongroom:Encrypt","Resource":"{OKEY}"},
                       {"Effect":"Allow","Action":"strongroom:Encrypt","Resource":"{KEY}"}"#
            )],
            "user:alice",
            A,
            true,
            IdAllow("Root", "p1", "#1")
        ),
        row!(
            "account-qualified caller of the own account",
            ALICE_ENC,
            &[],
            "account:111122223333/user:alice",
            A,
            true,
            Allow("KAlice")
        ),
        row!(
            "account-qualified pattern of the own account",
            r#"{"Sid":"Q","Effect":"Allow","Principal":"account:{OWN}/user:alice","Action":"strongroom:Encrypt"}"#,
            &[],
            "user:alice",
            A,
            true,
            Allow("Q")
        ),
        row!(
            "kind pattern in the own account",
            r#"{"Sid":"Users","Effect":"Allow","Principal":"account:{OWN}/user:*","Action":"strongroom:Encrypt"}"#,
            &[],
            "account:111122223333/user:carol",
            A,
            true,
            Allow("Users")
        ),
        row!(
            "identity deny by account-qualified caller",
            ALICE_ENC,
            &[("p1", NO_ENC)],
            "account:111122223333/user:alice",
            A,
            false,
            IdDeny("p1", "NoEnc")
        ),
        row!(
            "delegation for a role",
            ROOT,
            &[("p1", USE_KEY)],
            "role:ops",
            A,
            true,
            IdAllow("Root", "p1", "Use")
        ),
        row!("no statement at all", "", &[], "user:alice", A, false, None),
        // ---- conditions, on both sides ---------------------------------------
        Row {
            context: &[("tenant", "acme")],
            ..row!(
                "delegation with a context condition, met",
                r#"{"Sid":"RootAcme","Effect":"Allow","Principal":"account:{OWN}","Action":"strongroom:*",
                "Condition":{"StringEquals":{"strongroom:EncryptionContext:tenant":"acme"}}}"#,
                &[("p1", USE_KEY)],
                "user:alice",
                A,
                true,
                IdAllow("RootAcme", "p1", "Use")
            )
        },
        Row {
            context: &[("tenant", "evil")],
            ..row!(
                "delegation with a context condition, not met",
                r#"{"Sid":"RootAcme","Effect":"Allow","Principal":"account:{OWN}","Action":"strongroom:*",
                "Condition":{"StringEquals":{"strongroom:EncryptionContext:tenant":"acme"}}}"#,
                &[("p1", USE_KEY)],
                "user:alice",
                A,
                false,
                NoKeyAllow("p1", "Use")
            )
        },
        Row {
            context: &[("tenant", "acme")],
            ..row!(
                "identity condition met",
                ROOT,
                &[(
                    "p1",
                    r#"{"Sid":"Acme","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"*",
                "Condition":{"StringEquals":{"strongroom:EncryptionContext:tenant":"acme"}}}"#
                )],
                "user:alice",
                A,
                true,
                IdAllow("Root", "p1", "Acme")
            )
        },
        Row {
            context: &[("tenant", "evil")],
            ..row!(
                "identity condition not met",
                ROOT,
                &[(
                    "p1",
                    r#"{"Sid":"Acme","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"*",
                "Condition":{"StringEquals":{"strongroom:EncryptionContext:tenant":"acme"}}}"#
                )],
                "user:alice",
                A,
                false,
                None
            )
        },
        Row {
            context: &[("tenant", "evil")],
            ..row!(
                "conditional identity deny applies",
                ALICE_ENC,
                &[(
                    "p1",
                    r#"{"Sid":"NoEvil","Effect":"Deny","Action":"*","Resource":"*",
                "Condition":{"StringEquals":{"strongroom:EncryptionContext:tenant":"evil"}}}"#
                )],
                "user:alice",
                A,
                false,
                IdDeny("p1", "NoEvil")
            )
        },
        Row {
            context: &[("tenant", "acme")],
            ..row!(
                "conditional identity deny does not apply",
                ALICE_ENC,
                &[(
                    "p1",
                    r#"{"Sid":"NoEvil","Effect":"Deny","Action":"*","Resource":"*",
                "Condition":{"StringEquals":{"strongroom:EncryptionContext:tenant":"evil"}}}"#
                )],
                "user:alice",
                A,
                true,
                Allow("KAlice")
            )
        },
        // ---- grants ------------------------------------------------------------
        Row {
            grant: &[Action::Encrypt],
            ..row!("a grant alone", "", &[], "user:alice", A, true, Grant)
        },
        Row {
            grant: &[Action::Encrypt],
            ..row!(
                "a grant never beats an identity deny",
                "",
                &[("p1", NO_ENC)],
                "user:alice",
                A,
                false,
                IdDeny("p1", "NoEnc")
            )
        },
        Row {
            grant: &[Action::Encrypt],
            ..row!(
                "a grant to another account suffices",
                "",
                &[],
                XP,
                A,
                true,
                Grant
            )
        },
        Row {
            grant: &[Action::Decrypt],
            ..row!(
                "a grant of another operation",
                ROOT,
                &[],
                "user:alice",
                A,
                false,
                None
            )
        },
        // ---- another account -----------------------------------------------------
        row!(
            "cross-account: account named + identity allow",
            X_ROOT,
            &[("p1", USE_KEY)],
            XP,
            A,
            true,
            Cross("X", "p1", "Use")
        ),
        row!(
            "cross-account: account named, no identity policy",
            X_ROOT,
            &[],
            XP,
            A,
            false,
            NoIdAllow("X")
        ),
        row!(
            "cross-account: principal named + identity allow",
            X_PAY,
            &[("p1", USE_KEY)],
            XP,
            A,
            true,
            Cross("XPay", "p1", "Use")
        ),
        row!(
            "cross-account: principal named, no identity policy",
            X_PAY,
            &[],
            XP,
            A,
            false,
            NoIdAllow("XPay")
        ),
        row!(
            "cross-account: an own-account pattern does not name it",
            r#"{"Sid":"Pay","Effect":"Allow","Principal":"role:payments","Action":"strongroom:*"}"#,
            &[("p1", USE_KEY)],
            XP,
            A,
            false,
            NoKeyAllow("p1", "Use")
        ),
        row!(
            "cross-account: * names every account",
            r#"{"Sid":"Everyone","Effect":"Allow","Principal":"*","Action":"strongroom:Encrypt"}"#,
            &[("p1", USE_KEY)],
            XP,
            A,
            true,
            Cross("Everyone", "p1", "Use")
        ),
        row!(
            "cross-account: identity allow on another key",
            X_ROOT,
            &[(
                "p1",
                r#"{"Sid":"Use","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"{OKEY}"}"#
            )],
            XP,
            A,
            false,
            NoIdAllow("X")
        ),
        row!(
            "cross-account: key-policy deny of the whole account",
            r#"{"Sid":"X","Effect":"Allow","Principal":"account:{OTHER}","Action":"strongroom:*"},
               {"Sid":"NoX","Effect":"Deny","Principal":"account:{OTHER}","Action":"strongroom:Encrypt"}"#,
            &[("p1", USE_KEY)],
            XP,
            A,
            false,
            Deny("NoX")
        ),
        row!(
            "cross-account: identity deny",
            X_ROOT,
            &[("a", USE_ANY), ("p1", NO_ENC)],
            XP,
            A,
            false,
            IdDeny("p1", "NoEnc")
        ),
        row!(
            "cross-account: a third account is named",
            r#"{"Sid":"Y","Effect":"Allow","Principal":"account:777788889999","Action":"strongroom:*"}"#,
            &[("p1", USE_KEY)],
            XP,
            A,
            false,
            NoKeyAllow("p1", "Use")
        ),
        row!(
            "cross-account: kind pattern in that account",
            r#"{"Sid":"XRoles","Effect":"Allow","Principal":"account:{OTHER}/role:*","Action":"strongroom:Encrypt"}"#,
            &[("p1", USE_KEY)],
            XP,
            A,
            true,
            Cross("XRoles", "p1", "Use")
        ),
        row!(
            "cross-account: prefix pattern that does not match",
            r#"{"Sid":"XOps","Effect":"Allow","Principal":"account:{OTHER}/role:ops-*","Action":"strongroom:Encrypt"}"#,
            &[("p1", USE_KEY)],
            XP,
            A,
            false,
            NoKeyAllow("p1", "Use")
        ),
        row!(
            "cross-account: own-account delegation does not cover it",
            ROOT,
            &[("p1", USE_KEY)],
            XP,
            A,
            false,
            NoKeyAllow("p1", "Use")
        ),
        row!(
            "cross-account: wrong action on the key side",
            X_PAY,
            &[("p1", USE_ANY)],
            XP,
            Action::ScheduleKeyDeletion,
            false,
            NoKeyAllow("p1", "Use")
        ),
        // ---- ring-wide actions: the ring policy in place of a key policy --------
        Row {
            on_key: false,
            ..row!(
                "ring: identity allow with Resource *",
                "",
                &[(
                    "p1",
                    r#"{"Sid":"Create","Effect":"Allow","Action":"strongroom:CreateKey","Resource":"*"}"#
                )],
                "user:alice",
                Action::CreateKey,
                true,
                IdAllow("DelegateToAccount", "p1", "Create")
            )
        },
        Row {
            on_key: false,
            ..row!(
                "ring: a key resource does not match the ring",
                "",
                &[(
                    "p1",
                    r#"{"Sid":"Create","Effect":"Allow","Action":"strongroom:CreateKey","Resource":"{KEY}"}"#
                )],
                "user:alice",
                Action::CreateKey,
                false,
                None
            )
        },
        Row {
            on_key: false,
            ..row!(
                "ring: another account is not delegated to",
                "",
                &[("p1", USE_ANY)],
                XP,
                Action::CreateKey,
                false,
                NoKeyAllow("p1", "Use")
            )
        },
        Row {
            on_key: false,
            ..row!(
                "ring: an identity administrator",
                "",
                &[(
                    "p1",
                    r#"{"Sid":"Iam","Effect":"Allow","Action":"strongroom:*IdentityPolic*","Resource":"*"}"#
                )],
                "user:alice",
                Action::PutIdentityPolicy,
                true,
                IdAllow("DelegateToAccount", "p1", "Iam")
            )
        },
        Row {
            on_key: false,
            ..row!(
                "ring: identity deny beats the ring policy",
                "",
                &[(
                    "p1",
                    r#"{"Sid":"NoKeys","Effect":"Deny","Action":"strongroom:CreateKey","Resource":"*"}"#
                )],
                "role:admin",
                Action::CreateKey,
                false,
                IdDeny("p1", "NoKeys")
            )
        },
        Row {
            on_key: false,
            ..row!(
                "ring: nothing attached",
                "",
                &[],
                "user:alice",
                Action::ListKeys,
                false,
                None
            )
        },
    ]
}

const ADMIN_STMT: &str = r#"{"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":["strongroom:GetKeyPolicy","strongroom:PutKeyPolicy","strongroom:CreateGrant"]}"#;

/// A ring of account OWN with the table's ring policy and two keys (`alias/pay`
/// and `alias/other`).
fn table_ring(store: Arc<MemoryStore>) -> (KeyRing, KeyId, KeyId) {
    let ring = KeyRing::builder()
        .account(own())
        .ring_policy(table_ring_policy())
        .clock(Arc::new(ManualClock::new(T0)))
        .store(store)
        .build();
    let admin = ring.client(p("role:admin"));
    let key = admin
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new().alias("alias/pay"),
        )
        .unwrap();
    let other = admin
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new().alias("alias/other"),
        )
        .unwrap();
    (ring, key, other)
}

#[test]
fn decision_table() {
    let rows = rows();
    assert!(rows.len() >= 40, "{} rows", rows.len());
    for row in rows {
        let (ring, key, other) = table_ring(Arc::new(MemoryStore::new()));
        let admin = ring.client(p("role:admin"));
        let stmts = if row.key_policy.is_empty() {
            ADMIN_STMT.to_owned()
        } else {
            format!("{ADMIN_STMT},{}", row.key_policy)
        };
        let policy = Policy::from_json(&fill(
            &format!(r#"{{"Statement":[{stmts}]}}"#),
            &key,
            &other,
        ))
        .unwrap_or_else(|e| panic!("{}: key policy: {e}", row.name));
        admin
            .put_key_policy(&key, &policy, PutKeyPolicyOptions::default())
            .unwrap();
        let who = p(row.principal);
        for (name, stmts) in row.identity {
            let doc = IdentityPolicy::from_json(&fill(
                &format!(r#"{{"Statement":[{stmts}]}}"#),
                &key,
                &other,
            ))
            .unwrap_or_else(|e| panic!("{}: identity policy: {e}", row.name));
            admin.put_identity_policy(&who, name, &doc).unwrap();
        }
        if !row.grant.is_empty() {
            admin
                .create_grant(&key, GrantRequest::new(who.clone(), row.grant))
                .unwrap();
        }
        let mut opts = ExplainOptions::default();
        if row.on_key {
            opts = opts.key(key.to_string());
        }
        if !row.context.is_empty() {
            opts = opts.context(ctx(row.context));
        }
        let d = admin.explain(&who, row.action, opts).unwrap();
        assert_eq!(d.allowed, row.allowed, "{}: {:?}", row.name, d.reason);
        assert!(
            reason_matches(row.reason, &d.reason),
            "{}: expected {:?}, got {:?}",
            row.name,
            row.reason,
            d.reason
        );
        // The real operation agrees with explain.
        if row.action == Action::Encrypt {
            let r = ring
                .client(who.clone())
                .encrypt(&key, b"x", &ctx(row.context));
            match (row.allowed, r) {
                (true, Ok(_)) => {}
                (false, Err(Error::AccessDenied { .. })) => {}
                (a, r) => panic!("{}: explain says {a}, encrypt gave {r:?}", row.name),
            }
        }
        if row.action == Action::CreateKey {
            let r = ring
                .client(who.clone())
                .create_key(KeySpec::default(), CreateKeyOptions::new());
            assert_eq!(r.is_ok(), row.allowed, "{}: create_key {r:?}", row.name);
        }
    }
}

// ---- property test against an independent oracle ---------------------------

const KEY_PATTERNS: &[&str] = &[
    "*",
    "user:*",
    "user:alice",
    "role:payments",
    "account:111122223333",
    "account:444455556666",
    "account:444455556666/role:payments",
    "account:444455556666/role:*",
    "account:444455556666/user:al*",
    "account:111122223333/user:alice",
];
const CALLERS: &[&str] = &[
    "user:alice",
    "user:bob",
    "role:payments",
    "account:111122223333/user:alice",
    "account:444455556666/role:payments",
    "account:444455556666/user:alice",
    "account:777788889999/user:alice",
];
const ACTIONS: &[Action] = &[Action::Encrypt, Action::Decrypt, Action::CreateKey];
const ACTION_PATTERNS: &[&str] = &[
    "strongroom:*",
    "strongroom:Encrypt",
    "strongroom:Decrypt",
    "strongroom:Create*",
];
const RESOURCES: &[&str] = &["*", "{KEY}", "{OKEY}", "{KEYPFX}*", "alias/pay", "mrk-*"];

/// The caller as `account/kind:name`, in a ring of account OWN.
fn canon(who: &str) -> (String, String) {
    match who.strip_prefix("account:") {
        Some(rest) => {
            let (a, local) = rest.split_once('/').unwrap();
            (a.to_owned(), local.to_owned())
        }
        None => (OWN.to_owned(), who.to_owned()),
    }
}

/// What a key-policy principal pattern means for a caller, on strings:
/// 0 = no, 1 = names it, 2 = names its account (delegation).
fn oracle_names(pattern: &str, who: &str) -> u8 {
    let (acct, local) = canon(who);
    if pattern == "*" {
        return 1;
    }
    let (pacct, plocal) = match pattern.strip_prefix("account:") {
        Some(rest) => match rest.split_once('/') {
            Some((a, l)) => (a.to_owned(), Some(l.to_owned())),
            None => (rest.to_owned(), None),
        },
        None => (OWN.to_owned(), Some(pattern.to_owned())),
    };
    if pacct != acct {
        return 0;
    }
    match plocal {
        None => 2,
        Some(l) => {
            let hit = match l.strip_suffix('*') {
                Some(prefix) => local.starts_with(prefix),
                None => local == l,
            };
            u8::from(hit)
        }
    }
}

fn oracle_action(pattern: &str, a: Action) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => a.as_str().starts_with(prefix),
        None => a.as_str() == pattern,
    }
}

#[derive(Debug, Clone)]
struct KStmt {
    deny: bool,
    principal: usize,
    action: usize,
}

#[derive(Debug, Clone)]
struct IStmt {
    deny: bool,
    action: usize,
    resource: usize,
}

/// The AWS rules, enumerated: an explicit deny anywhere; the key side's
/// direct and account allows; the identity allow on this resource; the
/// same-account and cross-account formulas; grants last.
fn oracle(
    kstmts: &[KStmt],
    istmts: &[Vec<IStmt>],
    who: &str,
    action: Action,
    on_key: bool,
    grant: bool,
) -> (bool, bool) {
    let key_deny = kstmts.iter().any(|s| {
        s.deny
            && oracle_names(KEY_PATTERNS[s.principal], who) > 0
            && oracle_action(ACTION_PATTERNS[s.action], action)
    });
    let resource_hit = |r: &str| {
        if !on_key {
            return r == "*";
        }
        // The key is `alias/pay`'s, its id starts with {KEYPFX}, it is not mrk-.
        matches!(r, "*" | "{KEY}" | "{KEYPFX}*" | "alias/pay")
    };
    let id_matching = |deny: bool| {
        istmts.iter().flatten().any(|s| {
            s.deny == deny
                && oracle_action(ACTION_PATTERNS[s.action], action)
                && resource_hit(RESOURCES[s.resource])
        })
    };
    if key_deny || id_matching(true) {
        return (false, true);
    }
    let allows = |kind: u8| {
        kstmts.iter().any(|s| {
            !s.deny
                && oracle_names(KEY_PATTERNS[s.principal], who) == kind
                && oracle_action(ACTION_PATTERNS[s.action], action)
        })
    };
    let (direct, account, id_allow) = (allows(1), allows(2), id_matching(false));
    let same = canon(who).0 == OWN;
    let by_policies = if same {
        direct || (account && id_allow)
    } else {
        (direct || account) && id_allow
    };
    (
        by_policies || (on_key && grant && action == Action::Encrypt),
        false,
    )
}

fn stmts_json(k: &[KStmt]) -> String {
    let parts: Vec<String> = k
        .iter()
        .map(|s| {
            format!(
                r#"{{"Effect":"{}","Principal":"{}","Action":"{}"}}"#,
                if s.deny { "Deny" } else { "Allow" },
                KEY_PATTERNS[s.principal],
                ACTION_PATTERNS[s.action]
            )
        })
        .collect();
    format!(r#"{{"Statement":[{}]}}"#, parts.join(","))
}

fn istmts_json(i: &[IStmt]) -> String {
    let parts: Vec<String> = i
        .iter()
        .map(|s| {
            format!(
                r#"{{"Effect":"{}","Action":"{}","Resource":"{}"}}"#,
                if s.deny { "Deny" } else { "Allow" },
                ACTION_PATTERNS[s.action],
                RESOURCES[s.resource]
            )
        })
        .collect();
    format!(r#"{{"Statement":[{}]}}"#, parts.join(","))
}

fn kstmt() -> impl Strategy<Value = KStmt> {
    (
        prop::bool::weighted(0.2),
        0..KEY_PATTERNS.len(),
        0..ACTION_PATTERNS.len(),
    )
        .prop_map(|(deny, principal, action)| KStmt {
            deny,
            principal,
            action,
        })
}

fn istmt() -> impl Strategy<Value = IStmt> {
    (
        prop::bool::weighted(0.2),
        0..ACTION_PATTERNS.len(),
        0..RESOURCES.len(),
    )
        .prop_map(|(deny, action, resource)| IStmt {
            deny,
            action,
            resource,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn decide_with_matches_the_oracle(
        kstmts in prop::collection::vec(kstmt(), 0..4),
        ring_stmts in prop::collection::vec(kstmt(), 0..3),
        istmts in prop::collection::vec(prop::collection::vec(istmt(), 1..3), 0..3),
        who in 0..CALLERS.len(),
        action in 0..ACTIONS.len(),
        grant in any::<bool>(),
    ) {
        let (mut meta, other, g) = FIXTURE.with(|f| f.clone());
        let key = meta.key_id.clone();
        let who_s = CALLERS[who];
        let action = ACTIONS[action];
        let on_key = action != Action::CreateKey;
        meta.access.policy = Some(Policy::from_json(&stmts_json(&kstmts)).unwrap());
        let principal = p(who_s);
        if grant {
            // A grant of Encrypt to the caller (as the ring stores grantees:
            // own-account ones without their account).
            let mut g = g;
            g.grantee = principal.clone().normalized(&own());
            meta.access.grants.insert(g.grantee.clone(), vec![g]);
        }
        let ring_policy = Policy::from_json(&stmts_json(&ring_stmts)).unwrap();
        let attached: Vec<AttachedPolicy> = istmts
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let doc = IdentityPolicy::from_json(&fill(&istmts_json(s), &key, &other)).unwrap();
                AttachedPolicy::new(&format!("p{i}"), doc).unwrap()
            })
            .collect();
        let account = own();
        let aliases = vec![strongroom::Alias::parse("alias/pay").unwrap()];
        let identity = Identity { account: &account, policies: &attached, key_aliases: &aliases };
        let req = Request { principal: &principal, action, context: None, now: T0 };
        let d = decide_with(
            &ring_policy,
            on_key.then_some((&meta.record, &meta.access)),
            &identity,
            &req,
        );
        let side = if on_key { &kstmts } else { &ring_stmts };
        let (allowed, explicit) = oracle(side, &istmts, who_s, action, on_key, grant);
        prop_assert_eq!(d.allowed, allowed, "{:?}", d.reason);
        prop_assert_eq!(d.reason.is_explicit_deny(), explicit, "{:?}", d.reason);
    }
}

thread_local! {
    /// A key's full record (without grants), another key's id, and a grant
    /// of Encrypt (its grantee is set per case).
    static FIXTURE: (KeyMetadata, KeyId, strongroom::policy::Grant) = {
        let store = Arc::new(MemoryStore::new());
        let (ring, key, other) = table_ring(store.clone());
        ring.client(p("role:admin"))
            .create_grant(&key, GrantRequest::new(p("user:x"), &[Action::Encrypt]))
            .unwrap();
        let mut meta = KeyMetadata::clone(&store.get_key(&key).unwrap().unwrap());
        let grant = meta.access.all_grants().next().unwrap().clone();
        meta.access.grants.clear();
        (meta, other, grant)
    };
}

// ---- principals, accounts and patterns ---------------------------------------

#[test]
fn principals_and_patterns_parse_and_print() {
    let q = p("account:444455556666/role:payments");
    assert_eq!(q.account().map(AccountId::as_str), Some(OTHER));
    assert_eq!(q.name(), "payments");
    assert_eq!(q.to_string(), "account:444455556666/role:payments");
    // Names may contain '/': the account part is read first.
    let r = p("account:444455556666/user:team/alice");
    assert_eq!(r.name(), "team/alice");
    assert_eq!(p("user:alice").account(), None);
    // Own account normalizes away; others stay.
    assert_eq!(
        p("account:111122223333/user:alice").normalized(&own()),
        p("user:alice")
    );
    assert_eq!(q.clone().normalized(&own()), q);
    for bad in [
        "account:12345/user:a",
        "account:1111222233334/user:a",
        "account:11112222333a/user:a",
        "account:111122223333",
        "account:111122223333/account:444455556666/user:a",
        "account:111122223333/group:a",
    ] {
        assert!(
            matches!(bad.parse::<Principal>(), Err(Error::InvalidArgument(_))),
            "{bad}"
        );
    }
    for good in [
        "account:111122223333",
        "account:111122223333/*",
        "account:111122223333/user:*",
        "account:111122223333/user:ops-*",
        "account:111122223333/user:alice",
    ] {
        let pat: PrincipalPattern = serde_json::from_str(&format!("{good:?}")).unwrap();
        assert_eq!(pat.to_string(), good);
    }
    assert!(serde_json::from_str::<PrincipalPattern>(r#""account:1/user:a""#).is_err());
    assert!(
        serde_json::from_str::<PrincipalPattern>(r#""account:111122223333/account:444455556666""#)
            .is_err()
    );
    assert!(AccountId::new("000000000000").is_ok());
    assert_eq!(AccountId::default().as_str(), AccountId::DEFAULT);
}

#[test]
fn identity_policies_are_validated() {
    let bad = [
        // A Principal element belongs to key policies.
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"strongroom:Encrypt","Resource":"*"}]}"#,
        r#"{"Statement":[{"Effect":"Allow","Action":"strongroom:Encrypt"}]}"#,
        r#"{"Statement":[{"Effect":"Allow","Action":"strongroom:Encrypt","Resource":[]}]}"#,
        r#"{"Statement":[{"Effect":"Allow","Action":"strongroom:Nope","Resource":"*"}]}"#,
        r#"{"Statement":[{"Effect":"Allow","Action":"strongroom:Encrypt","Resource":"alias/a*"}]}"#,
        r#"{"Statement":[{"Effect":"Allow","Action":"strongroom:Encrypt","Resource":"not a key"}]}"#,
        r#"{"Statement":[{"Effect":"Allow","Action":"strongroom:Encrypt","Resource":"AB*"}]}"#,
        r#"{"Statement":[{"Effect":"Allow","Action":"strongroom:Encrypt","Resource":"*","Condition":{"Bogus":{"x":"y"}}}]}"#,
        r#"{"Version":"2012-10-17","Statement":[]}"#,
    ];
    for json in bad {
        assert!(
            matches!(
                IdentityPolicy::from_json(json),
                Err(Error::InvalidArgument(_))
            ),
            "{json}"
        );
    }
    let huge = format!(
        r#"{{"Statement":[{{"Sid":"{}","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"*"}}]}}"#,
        "x".repeat(strongroom::limits::MAX_POLICY_BYTES)
    );
    assert!(matches!(
        IdentityPolicy::from_json(&huge),
        Err(Error::InvalidArgument(_))
    ));
    let ok = IdentityPolicy::from_json(
        r#"{"Statement":[{"Sid":"A","Effect":"Allow","Action":["strongroom:Encrypt"],"Resource":["mrk-*","alias/pay","*"]}]}"#,
    )
    .unwrap();
    assert_eq!(IdentityPolicy::from_json(&ok.to_json()).unwrap(), ok);
}

// ---- management through the ring: audit and denials ---------------------------

fn admin_ring(audit: Arc<MemorySink>) -> KeyRing {
    KeyRing::builder()
        .account(own())
        .ring_admins([p("role:admin")])
        .audit_sink(audit)
        .audit_context_values(true)
        .build()
}

fn doc(json: &str) -> IdentityPolicy {
    IdentityPolicy::from_json(json).unwrap()
}

const ALLOW_ALL: &str =
    r#"{"Statement":[{"Sid":"All","Effect":"Allow","Action":"strongroom:*","Resource":"*"}]}"#;

#[test]
fn management_is_audited() {
    let audit = Arc::new(MemorySink::new());
    let ring = admin_ring(audit.clone());
    let admin = ring.client(p("role:admin"));
    let alice = p("account:111122223333/user:alice");
    let n0 = audit.events().len();
    admin
        .put_identity_policy(&alice, "use", &doc(ALLOW_ALL))
        .unwrap();
    admin
        .put_identity_policy(&alice, "more", &doc(ALLOW_ALL))
        .unwrap();
    assert_eq!(
        admin.list_identity_policies(&p("user:alice")).unwrap(),
        ["more", "use"]
    );
    assert_eq!(
        admin.get_identity_policy(&p("user:alice"), "use").unwrap(),
        doc(ALLOW_ALL)
    );
    admin.delete_identity_policy(&alice, "more").unwrap();
    assert_eq!(admin.list_identity_policies(&alice).unwrap(), ["use"]);
    let evs = audit.events();
    let got: Vec<(&str, &Outcome)> = evs[n0..]
        .iter()
        .map(|e| (e.action.as_str(), &e.outcome))
        .collect();
    assert_eq!(
        got,
        [
            ("strongroom:PutIdentityPolicy", &Outcome::Allowed),
            ("strongroom:PutIdentityPolicy", &Outcome::Allowed),
            ("strongroom:ListIdentityPolicies", &Outcome::Allowed),
            ("strongroom:GetIdentityPolicy", &Outcome::Allowed),
            ("strongroom:DeleteIdentityPolicy", &Outcome::Allowed),
            ("strongroom:ListIdentityPolicies", &Outcome::Allowed),
        ]
    );
    // The event names whose policy changed (normalized), never its text.
    let put = &evs[n0];
    assert_eq!(put.principal, "role:admin");
    assert_eq!(
        put.context_keys,
        [
            "strongroom:identity-policy",
            "strongroom:identity-principal"
        ]
    );
    assert_eq!(
        put.context_values.as_deref(),
        Some(&["use".to_owned(), "user:alice".to_owned()][..])
    );
    for e in &evs[n0..] {
        let line = serde_json::to_string(e).unwrap();
        assert!(!line.contains("strongroom:*"), "{line}");
    }
    // An own-account caller written with its account is recorded without it.
    let _ = ring
        .client(p("account:111122223333/user:alice"))
        .list_identity_policies(&alice);
    assert_eq!(audit.events().last().unwrap().principal, "user:alice");
}

#[test]
fn management_denials() {
    let audit = Arc::new(MemorySink::new());
    let ring = admin_ring(audit.clone());
    let admin = ring.client(p("role:admin"));
    let mallory = ring.client(p("user:mallory"));
    let alice = p("user:alice");
    admin
        .put_identity_policy(&alice, "use", &doc(ALLOW_ALL))
        .unwrap();
    // Not a ring admin: every management action is refused and recorded.
    let denied = |r: Result<(), Error>| matches!(r, Err(Error::AccessDenied { .. }));
    assert!(denied(mallory.put_identity_policy(
        &p("user:mallory"),
        "me",
        &doc(ALLOW_ALL)
    )));
    assert!(denied(mallory.delete_identity_policy(&alice, "use")));
    assert!(denied(mallory.get_identity_policy(&alice, "use").map(drop)));
    assert!(denied(mallory.list_identity_policies(&alice).map(drop)));
    let last4: Vec<_> = audit
        .events()
        .iter()
        .rev()
        .take(4)
        .map(|e| e.outcome.clone())
        .collect();
    assert!(
        last4.iter().all(|o| matches!(o, Outcome::Denied { .. })),
        "{last4:?}"
    );
    // Nothing changed.
    assert_eq!(admin.list_identity_policies(&alice).unwrap(), ["use"]);
    assert!(
        admin
            .list_identity_policies(&p("user:mallory"))
            .unwrap()
            .is_empty()
    );
    // The open ring policy lets nobody write identity policies.
    let open = KeyRing::in_memory();
    assert!(denied(open.client(p("user:anyone")).put_identity_policy(
        &p("user:anyone"),
        "me",
        &doc(ALLOW_ALL)
    )));
    // An identity deny on the management actions binds even a ring admin.
    admin
        .put_identity_policy(
            &p("role:admin"),
            "guard",
            &doc(r#"{"Statement":[{"Sid":"NoIam","Effect":"Deny","Action":"strongroom:DeleteIdentityPolicy","Resource":"*"}]}"#),
        )
        .unwrap();
    assert!(denied(admin.delete_identity_policy(&alice, "use")));
    // Bad input: clear errors, nothing stored.
    let invalid = |r: Result<(), Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(admin.put_identity_policy(
        &alice,
        "",
        &doc(ALLOW_ALL)
    )));
    assert!(invalid(admin.put_identity_policy(
        &alice,
        "bad name",
        &doc(ALLOW_ALL)
    )));
    assert!(invalid(admin.put_identity_policy(
        &alice,
        &"n".repeat(129),
        &doc(ALLOW_ALL)
    )));
    assert!(invalid(
        admin.get_identity_policy(&alice, "missing").map(drop)
    ));
    let mut broken = doc(ALLOW_ALL);
    broken.version = "1999-01-01".into();
    assert!(invalid(
        admin.put_identity_policy(&alice, "broken", &broken)
    ));
    for i in 1..strongroom::limits::MAX_IDENTITY_POLICIES_PER_PRINCIPAL {
        admin
            .put_identity_policy(&alice, &format!("p{i:02}"), &doc(ALLOW_ALL))
            .unwrap();
    }
    assert!(invalid(admin.put_identity_policy(
        &alice,
        "one-too-many",
        &doc(ALLOW_ALL)
    )));
    // Replacing one by name is not adding one.
    admin
        .put_identity_policy(&alice, "p01", &doc(ALLOW_ALL))
        .unwrap();
    assert_eq!(
        admin.list_identity_policies(&alice).unwrap().len(),
        strongroom::limits::MAX_IDENTITY_POLICIES_PER_PRINCIPAL
    );
}

// ---- the file keystore: across reopen and across rings ---------------------------

fn file_ring(dir: &Path, refresh: Duration) -> KeyRing {
    KeyRing::builder()
        .file_keystore(
            dir,
            &RootKey::raw([0x42; 32]),
            KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
        )
        .unwrap()
        .account(own())
        .ring_admins([p("role:admin")])
        .identity_policy_refresh(refresh)
        .build()
}

const DELEGATE: &str = r#"{"Statement":[
    {"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"},
    {"Sid":"Root","Effect":"Allow","Principal":"account:111122223333","Action":"strongroom:*"},
    {"Sid":"X","Effect":"Allow","Principal":"account:444455556666","Action":["strongroom:Encrypt","strongroom:Decrypt"]}]}"#;

#[test]
fn file_keystore_keeps_identity_policies_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let payments = p(XP);
    let key = {
        let ring = file_ring(dir.path(), Duration::from_secs(1));
        let admin = ring.client(p("role:admin"));
        let key = admin
            .create_key(
                KeySpec::default(),
                CreateKeyOptions::new().alias("alias/pay"),
            )
            .unwrap();
        admin
            .put_key_policy(
                &key,
                &Policy::from_json(DELEGATE).unwrap(),
                PutKeyPolicyOptions::default(),
            )
            .unwrap();
        admin
            .put_identity_policy(
                &p("user:alice"),
                "use",
                &doc(r#"{"Statement":[{"Sid":"Use","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"alias/pay"}]}"#),
            )
            .unwrap();
        admin
            .put_identity_policy(&payments, "pay", &doc(ALLOW_ALL))
            .unwrap();
        key
    };
    // The policy text is not on disk in the clear.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("alias/pay"),
            "{entry:?}"
        );
    }
    let ring = file_ring(dir.path(), Duration::from_secs(1));
    let admin = ring.client(p("role:admin"));
    assert_eq!(
        admin.list_identity_policies(&p("user:alice")).unwrap(),
        ["use"]
    );
    assert_eq!(admin.list_identity_policies(&payments).unwrap(), ["pay"]);
    let ct = ring
        .client(p("user:alice"))
        .encrypt("alias/pay", b"hello", &EncryptionContext::new())
        .unwrap();
    // Cross-account: the key policy names the account, its identity policy allows.
    let opened = ring
        .client(payments.clone())
        .decrypt(&ct, &EncryptionContext::new())
        .unwrap();
    assert_eq!(opened.plaintext.expose_secret(), b"hello");
    // Not granted by the key side: the other account may not disable it.
    assert!(matches!(
        ring.client(payments).disable_key(&key),
        Err(Error::AccessDenied { .. })
    ));
    // Bob has no identity policy: delegation alone gives nothing.
    assert!(matches!(
        ring.client(p("user:bob"))
            .encrypt(&key, b"x", &EncryptionContext::new()),
        Err(Error::AccessDenied { .. })
    ));
}

#[test]
fn another_ring_sees_changes_within_its_refresh_interval() {
    let dir = tempfile::tempdir().unwrap();
    let writer = file_ring(dir.path(), Duration::from_secs(1));
    let admin = writer.client(p("role:admin"));
    let key = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    admin
        .put_key_policy(
            &key,
            &Policy::from_json(DELEGATE).unwrap(),
            PutKeyPolicyOptions::default(),
        )
        .unwrap();
    admin
        .put_identity_policy(&p("user:alice"), "use", &doc(ALLOW_ALL))
        .unwrap();
    let eager = file_ring(dir.path(), Duration::ZERO);
    let lazy = file_ring(dir.path(), Duration::from_millis(300));
    let enc = |r: &KeyRing| {
        r.client(p("user:alice"))
            .encrypt(&key, b"x", &EncryptionContext::new())
    };
    assert!(enc(&eager).is_ok());
    assert!(enc(&lazy).is_ok());
    // A deny written by the first ring: the eager ring sees it at once, the
    // lazy one within its interval; the writer at once.
    admin
        .put_identity_policy(
            &p("user:alice"),
            "stop",
            &doc(r#"{"Statement":[{"Sid":"Stop","Effect":"Deny","Action":"*","Resource":"*"}]}"#),
        )
        .unwrap();
    assert!(matches!(enc(&writer), Err(Error::AccessDenied { .. })));
    assert!(matches!(enc(&eager), Err(Error::AccessDenied { .. })));
    std::thread::sleep(Duration::from_millis(400));
    assert!(matches!(enc(&lazy), Err(Error::AccessDenied { .. })));
    let d = lazy
        .client(p("role:admin"))
        .explain(
            &p("user:alice"),
            Action::Encrypt,
            ExplainOptions::default().key(key.to_string()),
        )
        .unwrap();
    assert_eq!(
        d.reason,
        Reason::IdentityDenyStatement {
            policy: "stop".into(),
            statement: "Stop".into()
        }
    );
    // Detached from another ring: allowed again.
    eager
        .client(p("role:admin"))
        .delete_identity_policy(&p("user:alice"), "stop")
        .unwrap();
    assert!(enc(&eager).is_ok());
    std::thread::sleep(Duration::from_millis(1100));
    assert!(enc(&writer).is_ok());
}

#[test]
fn grantees_of_the_own_account_are_stored_without_it() {
    let store = Arc::new(MemoryStore::new());
    let (ring, key, _) = table_ring(store.clone());
    let admin = ring.client(p("role:admin"));
    admin
        .create_grant(
            &key,
            GrantRequest::new(p("account:111122223333/user:gina"), &[Action::Encrypt]),
        )
        .unwrap();
    let grants = store.list_grants(&key).unwrap().unwrap();
    assert_eq!(grants[0].grantee.to_string(), "user:gina");
    assert!(
        ring.client(p("user:gina"))
            .encrypt(&key, b"x", &EncryptionContext::new())
            .is_ok()
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

const STOP: &str = r#"{"Statement":[{"Sid":"Stop","Effect":"Deny","Action":"*","Resource":"*"}]}"#;

#[test]
fn a_deny_written_by_another_process_applies() {
    let dir = tempfile::tempdir().unwrap();
    let ring = file_ring(dir.path(), Duration::ZERO);
    let admin = ring.client(p("role:admin"));
    let key = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    admin
        .put_key_policy(
            &key,
            &Policy::from_json(DELEGATE).unwrap(),
            PutKeyPolicyOptions::default(),
        )
        .unwrap();
    admin
        .put_identity_policy(&p("user:alice"), "use", &doc(ALLOW_ALL))
        .unwrap();
    let alice = ring.client(p("user:alice"));
    assert!(alice.encrypt(&key, b"x", &EncryptionContext::new()).is_ok());
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--ignored",
            "--test-threads=1",
        ])
        .env("STRONGROOM_IAM_CHILD_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(matches!(
        alice.encrypt(&key, b"x", &EncryptionContext::new()),
        Err(Error::AccessDenied { .. })
    ));
    assert_eq!(
        admin.list_identity_policies(&p("user:alice")).unwrap(),
        ["stop", "use"]
    );
}

/// The other process of `a_deny_written_by_another_process_applies`.
#[test]
#[ignore = "child process entry point, run by a_deny_written_by_another_process_applies"]
fn child_process_entry() {
    let dir = std::env::var("STRONGROOM_IAM_CHILD_DIR").unwrap();
    let ring = file_ring(Path::new(&dir), Duration::ZERO);
    ring.client(p("role:admin"))
        .put_identity_policy(&p("user:alice"), "stop", &doc(STOP))
        .unwrap();
}

/// `explain` is not a side door to another principal's identity policies:
/// a key-policy reader who may not read identity policies learns nothing
/// of alice's; the caller's own, and a ring admin, do.
#[test]
fn explain_names_anothers_identity_policy_only_with_get_identity_policy() {
    let ring = KeyRing::builder()
        .account(own())
        .ring_admins([p("role:admin")])
        .build();
    let admin = ring.client(p("role:admin"));
    let key = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    // A key policy that delegates to the account and lets bob read it.
    admin
        .put_key_policy(
            &key,
            &Policy::from_json(
                r#"{"Statement":[
                {"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"},
                {"Sid":"Root","Effect":"Allow","Principal":"account:111122223333","Action":"strongroom:*"},
                {"Sid":"BobReads","Effect":"Allow","Principal":"user:bob","Action":"strongroom:GetKeyPolicy"}]}"#,
            )
            .unwrap(),
            PutKeyPolicyOptions::default(),
        )
        .unwrap();
    admin
        .put_identity_policy(&p("user:alice"), "secret-plan", &doc(ALLOW_ALL))
        .unwrap();
    let opts = || ExplainOptions::default().key(key.to_string());
    let bob = ring.client(p("user:bob"));
    assert!(matches!(
        bob.explain(&p("user:alice"), Action::Encrypt, opts()),
        Err(Error::AccessDenied { .. })
    ));
    // A decision that names no identity policy is still explained to bob.
    let d = bob
        .explain(&p("role:admin"), Action::Encrypt, opts())
        .unwrap();
    assert!(d.allowed && !d.reason.names_identity_policy());
    // The admin may read identity policies, so may see it.
    let d = admin
        .explain(&p("user:alice"), Action::Encrypt, opts())
        .unwrap();
    assert!(d.allowed && d.reason.names_identity_policy(), "{d:?}");
}
