//! Access control: a decision table, validation, lockout safety, grants, a
//! denial test for every operation, and a property test.

use proptest::prelude::*;
use std::sync::Arc;
use strongroom::clock::ManualClock;
use strongroom::keyring::CreatedGrant;
use strongroom::keyring::GrantSelector;
use strongroom::keyring::{
    EnableRotationOptions, ExplainOptions, ListAliasesOptions, ListOptions, PutKeyPolicyOptions,
    ScheduleDeletionOptions, SignOptions, VersionFloors,
};
use strongroom::policy::{
    Decision, GrantConstraints, GrantRequest, Policy, Reason, Request, decide,
};
use strongroom::store::{KeyMetadata, MemoryStore, MetadataStore};
use strongroom::{
    Action, Client, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal,
    SealOptions, Timestamp,
};

const T0: Timestamp = Timestamp(1_800_000_000);

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

/// A ring over a store the test holds, so the decision-table tests can read
/// the full key record (policy and grants), which `describe_key` no longer
/// returns.
fn setup() -> (KeyRing, Client, Arc<ManualClock>, String, Arc<MemoryStore>) {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(MemoryStore::new());
    let ring = KeyRing::builder()
        .clock(clock.clone())
        .store(store.clone())
        .build();
    let admin = ring.client(p("role:admin"));
    let key = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    (ring, admin, clock, key, store)
}

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs.iter().map(|(k, v)| (*k, *v)).collect()
}

fn full_record(store: &MemoryStore, key: &str) -> KeyMetadata {
    let id = strongroom::KeyId::parse(key).unwrap();
    KeyMetadata::clone(&store.get_key(&id).unwrap().unwrap())
}

fn with_policy(meta: &KeyMetadata, json: &str) -> KeyMetadata {
    let mut m = meta.clone();
    m.access.policy = Some(Policy::from_json(json).unwrap());
    m
}

fn ask(
    meta: &KeyMetadata,
    who: &str,
    action: Action,
    c: Option<&EncryptionContext>,
    now: Timestamp,
) -> Decision {
    let principal = p(who);
    decide(
        &Policy::open_ring(),
        Some((&meta.record, &meta.access)),
        &Request {
            principal: &principal,
            action,
            context: c,
            now,
        },
    )
}

const P_ALICE: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"AliceUse","Effect":"Allow","Principal":"user:alice","Action":["strongroom:Encrypt","strongroom:Decrypt"]}]}"#;
const P_DENY_MALLORY: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"All","Effect":"Allow","Principal":"*","Action":"strongroom:*"},
  {"Sid":"NoMallory","Effect":"Deny","Principal":"user:mallory","Action":"strongroom:Decrypt"}]}"#;
const P_GENERATE: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Gen","Effect":"Allow","Principal":"user:*","Action":"strongroom:Generate*"},
  {"Sid":"Upper","Effect":"Allow","Principal":"user:*","Action":"STRONGROOM:encrypt"}]}"#;
const P_PREFIX: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Ops","Effect":"Allow","Principal":"user:ops-*","Action":"strongroom:DescribeKey"}]}"#;
const P_TENANT: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Tenant","Effect":"Allow","Principal":"service:billing","Action":["strongroom:Encrypt","strongroom:Decrypt"],
   "Condition":{"StringEquals":{"strongroom:EncryptionContext:tenant":["acme","beta"]}}}]}"#;
const P_SUBSET: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Subset","Effect":"Allow","Principal":"*","Action":"strongroom:Encrypt",
   "Condition":{"EncryptionContextSubset":{"strongroom:EncryptionContext":{"tenant":"acme","app":"x"}}}}]}"#;
const P_EQUALS: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Equals","Effect":"Allow","Principal":"*","Action":"strongroom:Encrypt",
   "Condition":{"EncryptionContextEquals":{"strongroom:EncryptionContext":{"tenant":"acme"}}}}]}"#;
const P_PRESENT: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Present","Effect":"Allow","Principal":"*","Action":"strongroom:Encrypt",
   "Condition":{"EncryptionContextKeysPresent":{"strongroom:EncryptionContextKeys":["tenant"]}}}]}"#;
const P_USAGE: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Usage","Effect":"Allow","Principal":"*","Action":"strongroom:Encrypt",
   "Condition":{"StringEquals":{"strongroom:KeyUsage":"ENCRYPT_DECRYPT"}}},
  {"Sid":"Spec","Effect":"Allow","Principal":"*","Action":"strongroom:Decrypt",
   "Condition":{"StringEquals":{"strongroom:KeySpec":"SYMMETRIC_CHACHA20_POLY1305"}}}]}"#;
const P_TIME: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Before","Effect":"Allow","Principal":"*","Action":"strongroom:Encrypt",
   "Condition":{"DateLessThan":{"strongroom:CurrentTime":1800000100}}},
  {"Sid":"After","Effect":"Allow","Principal":"*","Action":"strongroom:Decrypt",
   "Condition":{"DateGreaterThan":{"strongroom:CurrentTime":1800000100}}}]}"#;
const P_ADMIN_ONLY: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"}]}"#;
const P_DENY_BOB: &str = r#"{"Version":"2026-01-01","Statement":[
  {"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"},
  {"Sid":"NoBob","Effect":"Deny","Principal":"user:bob","Action":"strongroom:Encrypt"}]}"#;
const P_EMPTY: &str = r#"{"Version":"2026-01-01","Statement":[]}"#;

/// (policy, principal, action, context, time, allowed, reason)
type Case<'a> = (
    &'a str,
    &'a str,
    Action,
    Option<&'a EncryptionContext>,
    Timestamp,
    bool,
    Reason,
);

#[test]
fn decision_table() {
    let (_ring, admin, _clock, key, store) = setup();
    let acme = ctx(&[("tenant", "acme")]);
    let beta = ctx(&[("tenant", "beta")]);
    let other = ctx(&[("tenant", "other")]);
    let acme_x = ctx(&[("tenant", "acme"), ("app", "x"), ("more", "1")]);
    let empty = EncryptionContext::new();
    let later = Timestamp(T0.0 + 1000);
    // Grants, made under the default policy (admin created the key).
    let CreatedGrant {
        grant_id: g_enc, ..
    } = admin
        .create_grant(&key, GrantRequest::new(p("user:bob"), &[Action::Encrypt]))
        .unwrap();
    admin
        .create_grant(
            &key,
            GrantRequest::new(p("user:carol"), &[Action::Decrypt]).expires_at(Timestamp(T0.0 + 10)),
        )
        .unwrap();
    admin
        .create_grant(
            &key,
            GrantRequest::new(p("user:dave"), &[Action::Encrypt])
                .constraints(GrantConstraints::context_equals(acme.clone())),
        )
        .unwrap();
    admin
        .create_grant(
            &key,
            GrantRequest::new(p("user:erin"), &[Action::Encrypt])
                .constraints(GrantConstraints::context_subset(acme.clone())),
        )
        .unwrap();
    let CreatedGrant {
        grant_id: g_ret, ..
    } = admin
        .create_grant(&key, GrantRequest::new(p("user:frank"), &[Action::Encrypt]))
        .unwrap();
    admin.revoke_grant(&key, &g_ret).unwrap();
    let meta = full_record(&store, &key);
    let allow = |sid: &str| Reason::AllowStatement(sid.into());
    let deny = |sid: &str| Reason::DenyStatement(sid.into());
    let none = Reason::NoMatchingAllow;
    let grant = Reason::Grant(g_enc.clone());
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        (P_ALICE, "user:alice", Action::Encrypt, None, T0, true, allow("AliceUse")),
        (P_ALICE, "user:alice", Action::Decrypt, None, T0, true, allow("AliceUse")),
        (P_ALICE, "user:alice", Action::GenerateDataKey, None, T0, false, none.clone()),
        (P_ALICE, "user:mallory", Action::Encrypt, None, T0, false, none.clone()),
        (P_ALICE, "service:alice", Action::Encrypt, None, T0, false, none.clone()),
        (P_ALICE, "user:Alice", Action::Encrypt, None, T0, false, none.clone()),
        (P_DENY_MALLORY, "user:mallory", Action::Encrypt, None, T0, true, allow("All")),
        (P_DENY_MALLORY, "user:mallory", Action::Decrypt, None, T0, false, deny("NoMallory")),
        (P_DENY_MALLORY, "user:alice", Action::Decrypt, None, T0, true, allow("All")),
        (P_DENY_MALLORY, "role:x", Action::ScheduleKeyDeletion, None, T0, true, allow("All")),
        (P_GENERATE, "user:alice", Action::GenerateDataKey, None, T0, true, allow("Gen")),
        (P_GENERATE, "user:alice", Action::GenerateDataKeyWithoutPlaintext, None, T0, true, allow("Gen")),
        (P_GENERATE, "service:x", Action::GenerateDataKey, None, T0, false, none.clone()),
        (P_GENERATE, "user:alice", Action::Encrypt, None, T0, true, allow("Upper")),
        (P_GENERATE, "user:alice", Action::Decrypt, None, T0, false, none.clone()),
        (P_PREFIX, "user:ops-1", Action::DescribeKey, None, T0, true, allow("Ops")),
        (P_PREFIX, "user:opsx", Action::DescribeKey, None, T0, false, none.clone()),
        (P_PREFIX, "role:ops-1", Action::DescribeKey, None, T0, false, none.clone()),
        (P_TENANT, "service:billing", Action::Encrypt, Some(&acme), T0, true, allow("Tenant")),
        (P_TENANT, "service:billing", Action::Decrypt, Some(&beta), T0, true, allow("Tenant")),
        (P_TENANT, "service:billing", Action::Encrypt, Some(&other), T0, false, none.clone()),
        (P_TENANT, "service:billing", Action::Encrypt, None, T0, false, none.clone()),
        (P_SUBSET, "user:a", Action::Encrypt, Some(&acme_x), T0, true, allow("Subset")),
        (P_SUBSET, "user:a", Action::Encrypt, Some(&acme), T0, false, none.clone()),
        (P_EQUALS, "user:a", Action::Encrypt, Some(&acme), T0, true, allow("Equals")),
        (P_EQUALS, "user:a", Action::Encrypt, Some(&acme_x), T0, false, none.clone()),
        (P_PRESENT, "user:a", Action::Encrypt, Some(&other), T0, true, allow("Present")),
        (P_PRESENT, "user:a", Action::Encrypt, Some(&empty), T0, false, none.clone()),
        (P_USAGE, "user:a", Action::Encrypt, None, T0, true, allow("Usage")),
        (P_USAGE, "user:a", Action::Decrypt, None, T0, false, none.clone()),
        (P_TIME, "user:a", Action::Encrypt, None, T0, true, allow("Before")),
        (P_TIME, "user:a", Action::Encrypt, None, later, false, none.clone()),
        (P_TIME, "user:a", Action::Decrypt, None, T0, false, none.clone()),
        (P_TIME, "user:a", Action::Decrypt, None, later, true, allow("After")),
        (P_ADMIN_ONLY, "user:bob", Action::Encrypt, None, T0, true, grant.clone()),
        (P_ADMIN_ONLY, "user:bob", Action::Decrypt, None, T0, false, none.clone()),
        (P_ADMIN_ONLY, "user:alice", Action::Encrypt, None, T0, false, none.clone()),
        (P_ADMIN_ONLY, "user:carol", Action::Decrypt, None, T0, true, Reason::Grant(String::new())),
        (P_ADMIN_ONLY, "user:carol", Action::Decrypt, None, Timestamp(T0.0 + 10), false, none.clone()),
        (P_ADMIN_ONLY, "user:dave", Action::Encrypt, Some(&acme), T0, true, Reason::Grant(String::new())),
        (P_ADMIN_ONLY, "user:dave", Action::Encrypt, Some(&acme_x), T0, false, none.clone()),
        (P_ADMIN_ONLY, "user:dave", Action::Encrypt, None, T0, false, none.clone()),
        (P_ADMIN_ONLY, "user:erin", Action::Encrypt, Some(&acme_x), T0, true, Reason::Grant(String::new())),
        (P_ADMIN_ONLY, "user:erin", Action::Encrypt, Some(&other), T0, false, none.clone()),
        (P_ADMIN_ONLY, "user:frank", Action::Encrypt, None, T0, false, none.clone()),
        (P_DENY_BOB, "user:bob", Action::Encrypt, None, T0, false, deny("NoBob")),
        (P_DENY_BOB, "role:admin", Action::Encrypt, None, T0, true, allow("Admin")),
        (P_EMPTY, "role:admin", Action::DescribeKey, None, T0, false, none.clone()),
    ];
    assert!(cases.len() >= 40);
    for (i, (policy, who, action, c, now, allowed, reason)) in cases.into_iter().enumerate() {
        let m = with_policy(&meta, policy);
        let d = ask(&m, who, action, c, now);
        assert_eq!(d.allowed, allowed, "case {i}: {who} {action} -> {d:?}");
        match (&reason, &d.reason) {
            // Grant ids other than bob's are random: only the kind is checked.
            (Reason::Grant(want), Reason::Grant(_)) if want.is_empty() => {}
            _ => assert_eq!(d.reason, reason, "case {i}"),
        }
    }
}

#[test]
fn policies_are_validated() {
    let bad = [
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Allow","Principal":"*","Action":"strongroom:Encrpyt"}]}"#,
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:Encrypt"}]}"#,
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Allow","Principal":"group:x","Action":"strongroom:*"}]}"#,
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Allow","Principal":"user:a*b*","Action":"strongroom:*"}]}"#,
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Permit","Principal":"*","Action":"strongroom:*"}]}"#,
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Allow","Principal":"*","Action":"strongroom:*","Condition":{"StringLike":{"strongroom:KeyUsage":"x"}}}]}"#,
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Allow","Principal":"*","Action":"strongroom:*","Condition":{"StringEquals":{"aws:SourceIp":"x"}}}]}"#,
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Allow","Principal":"*","Action":"strongroom:*","Condition":{"DateLessThan":{"strongroom:CurrentTime":"soon"}}}]}"#,
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Allow","Principal":"*","Action":"strongroom:*","Resource":"*"}]}"#,
        r#"{"Version":"2012-10-17","Statement":[]}"#,
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Allow","Principal":[],"Action":"strongroom:*"}]}"#,
        r#"not json"#,
    ];
    for b in bad {
        let e = Policy::from_json(b).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{b}: {e}");
    }
    let e = Policy::from_json(
        r#"{"Version":"2026-01-01","Statement":[{"Effect":"Allow","Principal":"*","Action":"strongroom:Encrpyt"}]}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("strongroom:Encrpyt"), "{e}");
    let huge = format!(
        r#"{{"Version":"2026-01-01","Statement":[{{"Sid":"{}","Effect":"Allow","Principal":"*","Action":"strongroom:*"}}]}}"#,
        "x".repeat(40_000)
    );
    assert!(matches!(
        Policy::from_json(&huge),
        Err(Error::InvalidArgument(_))
    ));
    // Round trip.
    let pol = Policy::from_json(P_TENANT).unwrap();
    assert_eq!(Policy::from_json(&pol.to_json()).unwrap(), pol);
}

#[test]
fn lockout_safety() {
    let (_ring, admin, _clock, key, _store) = setup();
    let lock_out = Policy::from_json(P_ALICE).unwrap();
    let e = admin
        .put_key_policy(&key, &lock_out, PutKeyPolicyOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("lockout"), "{e}");
    // Nothing changed.
    assert_eq!(
        admin.get_key_policy(&key).unwrap(),
        Policy::default_for(&p("role:admin"))
    );
    admin
        .put_key_policy(
            &key,
            &Policy::from_json(P_ADMIN_ONLY).unwrap(),
            PutKeyPolicyOptions::default(),
        )
        .unwrap();
    admin
        .put_key_policy(
            &key,
            &lock_out,
            PutKeyPolicyOptions::default().bypass_policy_lockout_safety_check(),
        )
        .unwrap();
    assert!(matches!(
        admin.describe_key(&key),
        Err(Error::AccessDenied { .. })
    ));
}

#[test]
fn policy_applies_to_real_operations() {
    let (ring, admin, _clock, key, _store) = setup();
    admin
        .put_key_policy(
            &key,
            &Policy::from_json(
                r#"{"Version":"2026-01-01","Statement":[
              {"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"},
              {"Sid":"Billing","Effect":"Allow","Principal":"service:billing",
               "Action":["strongroom:Encrypt","strongroom:Decrypt","strongroom:GenerateDataKey"],
               "Condition":{"StringEquals":{"strongroom:EncryptionContext:tenant":"acme"}}}]}"#,
            )
            .unwrap(),
            PutKeyPolicyOptions::default(),
        )
        .unwrap();
    let billing = ring.client(p("service:billing"));
    let acme = ctx(&[("tenant", "acme")]);
    let other = ctx(&[("tenant", "other")]);
    let blob = billing.encrypt(&key, b"x", &acme).unwrap();
    assert!(billing.decrypt(&blob, &acme).is_ok());
    let e = billing.encrypt(&key, b"x", &other).unwrap_err();
    assert!(
        matches!(e, Error::AccessDenied { action, ref key_id, .. }
            if action == Action::Encrypt && key_id.as_ref().map(|k| k.as_str()) == Some(key.as_str())),
        "{e}"
    );
    // The denial does not leak the policy text.
    assert!(!e.to_string().contains("Billing"));
    // Open is decided on the message's stored context.
    let msg = billing.seal(&key, b"m", &acme).unwrap();
    assert!(billing.open(&msg, &acme).is_ok());
    assert!(
        billing
            .open_requiring(&msg, &EncryptionContext::new())
            .is_ok()
    );
    let msg_other = admin.seal(&key, b"m", &other).unwrap();
    assert!(matches!(
        billing.open(&msg_other, &other),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        billing.open_requiring(&msg_other, &EncryptionContext::new()),
        Err(Error::AccessDenied { .. })
    ));
}

#[test]
fn grants_lifecycle() {
    let (ring, admin, clock, key, _store) = setup();
    let bob = ring.client(p("user:bob"));
    let carol = ring.client(p("user:carol"));
    let c = EncryptionContext::new();
    assert!(matches!(
        bob.encrypt(&key, b"x", &c),
        Err(Error::AccessDenied { .. })
    ));
    let CreatedGrant {
        grant_id: gid,
        grant_token: token,
        ..
    } = admin
        .create_grant(
            &key,
            GrantRequest::new(
                p("user:bob"),
                &[Action::Encrypt, Action::Decrypt, Action::RetireGrant],
            )
            .retiring_principal(p("user:carol"))
            .expires_at(Timestamp(T0.0 + 3600))
            .name("bob-batch"),
        )
        .unwrap();
    assert!(!format!("{token:?}").contains(token.expose_secret()));
    let blob = bob.encrypt(&key, b"x", &c).unwrap();
    assert!(bob.decrypt(&blob, &c).is_ok());
    assert!(matches!(
        bob.generate_data_key(&key, &c),
        Err(Error::AccessDenied { .. })
    ));
    // The decision names the grant.
    let d = admin
        .explain(
            &p("user:bob"),
            Action::Encrypt,
            ExplainOptions::default().key(key.to_string()),
        )
        .unwrap();
    assert_eq!(d.grant_id(), Some(gid.as_str()));
    let listed = admin.list_grants(&key).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name.as_deref(), Some("bob-batch"));
    // Bob cannot revoke; others cannot retire.
    assert!(matches!(
        bob.revoke_grant(&key, &gid),
        Err(Error::AccessDenied { .. })
    ));
    let mallory = ring.client(p("user:mallory"));
    assert!(matches!(
        mallory.retire_grant(&key, GrantSelector::Id(gid.clone())),
        Err(Error::AccessDenied { .. })
    ));
    // Expiry on the ring clock.
    clock.advance_secs(3600);
    assert!(matches!(
        bob.encrypt(&key, b"x", &c),
        Err(Error::AccessDenied { .. })
    ));
    clock.set(T0);
    // The retiring principal retires by token.
    carol
        .retire_grant(&key, GrantSelector::Token(token))
        .unwrap();
    assert!(matches!(
        bob.encrypt(&key, b"x", &c),
        Err(Error::AccessDenied { .. })
    ));
    assert!(admin.list_grants(&key).unwrap().is_empty());
    // The grantee retires its own grant; an admin revokes.
    let CreatedGrant { grant_id: g2, .. } = admin
        .create_grant(&key, GrantRequest::new(p("user:bob"), &[Action::Encrypt]))
        .unwrap();
    bob.retire_grant(&key, GrantSelector::Id(g2)).unwrap();
    let CreatedGrant { grant_id: g3, .. } = admin
        .create_grant(&key, GrantRequest::new(p("user:bob"), &[Action::Encrypt]))
        .unwrap();
    admin.revoke_grant(&key, &g3).unwrap();
    assert!(admin.list_grants(&key).unwrap().is_empty());
    // Grants cannot carry administration, nor be born expired.
    for bad in [
        Action::PutKeyPolicy,
        Action::ScheduleKeyDeletion,
        Action::CreateGrant,
    ] {
        assert!(matches!(
            admin.create_grant(&key, GrantRequest::new(p("user:bob"), &[bad])),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        admin.create_grant(
            &key,
            GrantRequest::new(p("user:bob"), &[Action::Encrypt]).expires_at(T0)
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        admin.create_grant(&key, GrantRequest::new(p("user:bob"), &[])),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_grant_never_overrides_a_deny() {
    let (ring, admin, _clock, key, _store) = setup();
    admin
        .create_grant(&key, GrantRequest::new(p("user:bob"), &[Action::Encrypt]))
        .unwrap();
    admin
        .put_key_policy(
            &key,
            &Policy::from_json(P_DENY_BOB).unwrap(),
            PutKeyPolicyOptions::default(),
        )
        .unwrap();
    let bob = ring.client(p("user:bob"));
    assert!(matches!(
        bob.encrypt(&key, b"x", &EncryptionContext::new()),
        Err(Error::AccessDenied { .. })
    ));
    let d = admin
        .explain(
            &p("user:bob"),
            Action::Encrypt,
            ExplainOptions::default().key(key.to_string()),
        )
        .unwrap();
    assert_eq!(d.reason, Reason::DenyStatement("NoBob".into()));
}

/// Every operation of the ring refuses a principal without permission.
#[test]
fn every_operation_has_a_denial() {
    let ring = KeyRing::builder()
        .ring_policy(Policy::from_json(P_ADMIN_ONLY).unwrap())
        .build();
    let admin = ring.client(p("role:admin"));
    let key = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/k"))
        .unwrap()
        .to_string();
    let c = EncryptionContext::new();
    let blob = admin.encrypt(&key, b"x", &c).unwrap();
    let msg = admin.seal(&key, b"x", &c).unwrap();
    let CreatedGrant { grant_id: gid, .. } = admin
        .create_grant(&key, GrantRequest::new(p("user:zed"), &[Action::Encrypt]))
        .unwrap();
    let bob = ring.client(p("user:bob"));
    let denied = |what: &str, r: Result<(), Error>| {
        assert!(
            matches!(r, Err(Error::AccessDenied { .. })),
            "{what}: {r:?}"
        );
    };
    let k = key.as_str();
    denied(
        "create_key",
        bob.create_key(KeySpec::default(), CreateKeyOptions::new())
            .map(drop),
    );
    denied("describe_key", bob.describe_key(k).map(drop));
    denied(
        "list_keys",
        bob.list_keys(ListOptions::default().limit(10)).map(drop),
    );
    denied("create_alias", bob.create_alias("alias/b", k));
    denied("update_alias", bob.update_alias("alias/k", k));
    denied("delete_alias", bob.delete_alias("alias/k"));
    denied(
        "list_aliases",
        bob.list_aliases(ListAliasesOptions::default().limit(10))
            .map(drop),
    );
    denied(
        "list_aliases(key)",
        bob.list_aliases(ListAliasesOptions::default().key(k.to_string()).limit(10))
            .map(drop),
    );
    denied("tag_key", bob.tag_resource(k, &[("a", "b")]));
    denied("untag_key", bob.untag_resource(k, &["a"]));
    denied("list_tags", bob.list_resource_tags(k).map(drop));
    denied("encrypt", bob.encrypt(k, b"x", &c).map(drop));
    denied("decrypt", bob.decrypt(&blob, &c).map(drop));
    denied(
        "decrypt_with_key",
        bob.decrypt_with_key(&blob, &c, k).map(drop),
    );
    denied(
        "decrypt_data_key",
        bob.decrypt_data_key(&blob, &c).map(drop),
    );
    denied("re_encrypt", bob.re_encrypt(&blob, &c, k, &c).map(drop));
    denied("generate_data_key", bob.generate_data_key(k, &c).map(drop));
    denied(
        "generate_data_key_without_plaintext",
        bob.generate_data_key_without_plaintext(k, &c).map(drop),
    );
    denied("seal", bob.seal(k, b"x", &c).map(drop));
    denied(
        "seal_with",
        bob.seal_with(k, b"x", &c, SealOptions::new()).map(drop),
    );
    denied(
        "seal_writer",
        bob.seal_writer(k, &c, SealOptions::new(), Vec::new())
            .map(drop),
    );
    denied("open", bob.open(&msg, &c).map(drop));
    denied("open_requiring", bob.open_requiring(&msg, &c).map(drop));
    denied("open_reader", bob.open_reader(&msg[..], &c).map(drop));
    denied(
        "re_encrypt_message",
        bob.re_encrypt_message(&msg, &c, k).map(drop),
    );
    denied("open_range", bob.open_range(&msg, &c, 0, 1).map(drop));
    denied(
        "open_range_reader",
        bob.open_range_reader(std::io::Cursor::new(&msg), &c)
            .map(drop),
    );
    denied(
        "rewrap_message",
        bob.rewrap_message(&msg, &c, k, strongroom::keyring::RewrapOptions::new())
            .map(drop),
    );
    denied(
        "rewrap_header",
        bob.rewrap_header(&msg[..], &c, k, strongroom::keyring::RewrapOptions::new())
            .map(drop),
    );
    denied("generate_random", bob.generate_random(8).map(drop));
    denied("enable_key", bob.enable_key(k));
    denied("disable_key", bob.disable_key(k));
    denied(
        "schedule_key_deletion",
        bob.schedule_key_deletion(k, ScheduleDeletionOptions::default())
            .map(drop),
    );
    denied("cancel_key_deletion", bob.cancel_key_deletion(k));
    denied(
        "enable_rotation",
        bob.enable_key_rotation(k, EnableRotationOptions::default())
            .map(drop),
    );
    denied("disable_rotation", bob.disable_key_rotation(k));
    denied("rotation_status", bob.get_key_rotation_status(k).map(drop));
    denied("rotate_now", bob.rotate_key_on_demand(k).map(drop));
    denied("list_rotations", bob.list_key_rotations(k).map(drop));
    denied(
        "set_version_floors",
        bob.update_key_version_floors(k, VersionFloors::default().min_decrypt(1)),
    );
    denied(
        "put_key_policy",
        bob.put_key_policy(
            k,
            &Policy::default_for(&p("user:bob")),
            PutKeyPolicyOptions::default().bypass_policy_lockout_safety_check(),
        ),
    );
    denied("get_key_policy", bob.get_key_policy(k).map(drop));
    denied(
        "create_grant",
        bob.create_grant(k, GrantRequest::new(p("user:bob"), &[Action::Encrypt]))
            .map(drop),
    );
    denied("list_grants", bob.list_grants(k).map(drop));
    denied(
        "retire_grant",
        bob.retire_grant(k, GrantSelector::Id(gid.clone())),
    );
    denied("revoke_grant", bob.revoke_grant(k, &gid));
    denied(
        "explain",
        bob.explain(
            &p("user:bob"),
            Action::Encrypt,
            ExplainOptions::default().key(k.to_string()),
        )
        .map(drop),
    );
    denied("key_last_usage", bob.get_key_last_usage(k).map(drop));
    // Asymmetric, MAC and HPKE keys, data key pairs and import.
    let sig_key = admin
        .create_key(KeySpec::EccNistP256, CreateKeyOptions::new())
        .unwrap();
    let sig_key = sig_key.as_str();
    let mac_key = admin
        .create_key(
            KeySpec::Hmac(strongroom::key::HmacAlgorithm::Sha256),
            CreateKeyOptions::new(),
        )
        .unwrap();
    let mac_key = mac_key.as_str();
    let hpke_key = admin
        .create_key(KeySpec::HpkeP256, CreateKeyOptions::new())
        .unwrap();
    let hpke_key = hpke_key.as_str();
    let sig = admin.sign(sig_key, b"m", SignOptions::default()).unwrap();
    denied(
        "sign",
        bob.sign(sig_key, b"m", SignOptions::default()).map(drop),
    );
    denied(
        "verify",
        bob.verify(sig_key, b"m", &sig, SignOptions::default())
            .map(drop),
    );
    denied("get_public_key", bob.get_public_key(sig_key).map(drop));
    denied("generate_mac", bob.generate_mac(mac_key, b"m").map(drop));
    denied(
        "verify_mac",
        bob.verify_mac(mac_key, b"m", &[0u8; 32]).map(drop),
    );
    let pk = admin.get_public_key(hpke_key).unwrap();
    let ct = strongroom::verify::hpke_seal(&pk.der, b"i", b"x", b"").unwrap();
    denied(
        "decrypt_hpke",
        bob.decrypt_hpke(hpke_key, &ct, b"i", b"").map(drop),
    );
    denied(
        "generate_data_key_pair",
        bob.generate_data_key_pair(k, strongroom::keyring::DataKeyPairSpec::Ed25519, &c)
            .map(drop),
    );
    denied(
        "generate_data_key_pair_without_plaintext",
        bob.generate_data_key_pair_without_plaintext(
            k,
            strongroom::keyring::DataKeyPairSpec::Ed25519,
            &c,
        )
        .map(drop),
    );
    denied(
        "get_parameters_for_import",
        bob.get_parameters_for_import(KeySpec::Ed25519).map(drop),
    );
    let params = admin.get_parameters_for_import(KeySpec::Ed25519).unwrap();
    let wrapped = params.wrap(&[5u8; 32]).unwrap();
    denied(
        "import_key",
        bob.import_key(&params.import_token, &wrapped, CreateKeyOptions::new())
            .map(drop),
    );
    denied(
        "import_key_version",
        bob.import_key_version(k, &params.import_token, &wrapped)
            .map(drop),
    );
    // The denied calls did not spend the import token.
    assert!(
        admin
            .import_key(&params.import_token, &wrapped, CreateKeyOptions::new())
            .is_ok()
    );
    // And nothing changed.
    assert_eq!(
        admin.describe_key(k).unwrap().state,
        strongroom::key::KeyState::Enabled
    );
    assert_eq!(admin.list_grants(k).unwrap().len(), 1);
}

// ---- property: nothing is allowed without a matching Allow or live grant ----

fn principals() -> Vec<&'static str> {
    vec![
        "user:alice",
        "user:bob",
        "service:billing",
        "role:admin",
        "user:ops-1",
    ]
}

fn principal_patterns() -> Vec<&'static str> {
    vec![
        "*",
        "user:*",
        "service:*",
        "user:alice",
        "user:ops-*",
        "role:admin",
        "user:bob",
    ]
}

fn action_patterns() -> Vec<&'static str> {
    vec![
        "strongroom:*",
        "strongroom:Encrypt",
        "strongroom:Decrypt",
        "strongroom:Generate*",
        "*Key*",
        "strongroom:Describe*",
    ]
}

fn actions() -> Vec<Action> {
    vec![
        Action::Encrypt,
        Action::Decrypt,
        Action::GenerateDataKey,
        Action::DescribeKey,
        Action::ScheduleKeyDeletion,
        Action::ReEncryptFrom,
    ]
}

fn glob(p: &str, t: &str) -> bool {
    // Independent oracle: regex-free recursive matcher.
    fn m(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], t) || (!t.is_empty() && m(p, &t[1..])),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => m(&p[1..], &t[1..]),
            _ => false,
        }
    }
    m(p.as_bytes(), t.as_bytes())
}

fn pmatch(pat: &str, who: &str) -> bool {
    if pat == "*" {
        return true;
    }
    match pat.strip_suffix('*') {
        Some(prefix) => who.starts_with(prefix),
        None => pat == who,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn never_allowed_without_a_matching_allow_or_live_grant(
        stmts in proptest::collection::vec((any::<bool>(), 0usize..7, 0usize..6), 0..5),
        grants in proptest::collection::vec((0usize..5, 0usize..6, proptest::option::of(0u64..20)), 0..4),
        who in 0usize..5,
        what in 0usize..6,
        at in 0u64..20,
    ) {
        let (_ring, admin, _clock, key, store) = setup();
        let now = Timestamp(T0.0 + at);
        for (g_who, g_what, exp) in &grants {
            let mut req = GrantRequest::new(p(principals()[*g_who]), &[actions()[*g_what]]);
            if let Some(e) = exp {
                req = req.expires_at(Timestamp(T0.0 + 1 + e));
            }
            if actions()[*g_what] != Action::ScheduleKeyDeletion {
                admin.create_grant(&key, req).unwrap();
            }
        }
        let statements: Vec<String> = stmts.iter().map(|(allow, pp, ap)| format!(
            r#"{{"Effect":"{}","Principal":"{}","Action":"{}"}}"#,
            if *allow { "Allow" } else { "Deny" }, principal_patterns()[*pp], action_patterns()[*ap]
        )).collect();
        let json = format!(r#"{{"Version":"2026-01-01","Statement":[{}]}}"#, statements.join(","));
        let meta = with_policy(&full_record(&store, &key), &json);
        let who_s = principals()[who];
        let action = actions()[what];
        let d = ask(&meta, who_s, action, None, now);
        let matching = |allow: bool| stmts.iter().any(|(a, pp, ap)| *a == allow
            && pmatch(principal_patterns()[*pp], who_s) && glob(action_patterns()[*ap], action.as_str()));
        let live_grant = grants.iter().any(|(g_who, g_what, exp)| principals()[*g_who] == who_s
            && actions()[*g_what] == action && action != Action::ScheduleKeyDeletion
            && exp.is_none_or(|e| now.0 < T0.0 + 1 + e));
        prop_assert_eq!(d.allowed, !matching(false) && (matching(true) || live_grant), "{:?}", d);
    }
}

#[test]
fn re_encrypt_checks_the_destination_before_decrypting() {
    let (ring, admin, _clock, key, _store) = setup();
    let other = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    admin
        .create_grant(
            &key,
            GrantRequest::new(p("user:bob"), &[Action::ReEncryptFrom]),
        )
        .unwrap();
    let c = EncryptionContext::new();
    let blob = admin.encrypt(&key, b"x", &c).unwrap();
    let bob = ring.client(p("user:bob"));
    let e = bob.re_encrypt(&blob, &c, &other, &c).unwrap_err();
    assert!(
        matches!(e, Error::AccessDenied { action, ref key_id, .. }
            if action == Action::ReEncryptTo && key_id.as_ref().map(|k| k.as_str()) == Some(other.as_str())),
        "{e}"
    );
    admin
        .create_grant(
            &other,
            GrantRequest::new(p("user:bob"), &[Action::ReEncryptTo]),
        )
        .unwrap();
    let moved = bob.re_encrypt(&blob, &c, &other, &c).unwrap();
    assert_eq!(admin.decrypt(&moved, &c).unwrap().key_id.as_str(), other);
}
