//! Identity policies on PostgreSQL (generic records of kind
//! `identity-policy` in `strongroom_records`): two instances on one
//! database see each other's changes, and they survive a reconnect.

#[path = "support/postgres.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;
use strongroom::keyring::PutKeyPolicyOptions;
use strongroom::keyring::identity::IDENTITY_RECORD_KIND;
use strongroom::policy::{IdentityPolicy, Policy};
use strongroom::store::{MetadataStore, PostgresBackend, PostgresOptions, PostgresStore, RootKey};
use strongroom::{
    AccountId, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal,
};

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

fn ring(url: &str) -> (KeyRing, Arc<PostgresStore>) {
    let s = Arc::new(
        PostgresStore::connect(url, &RootKey::raw([9; 32]), PostgresOptions::default()).unwrap(),
    );
    let backend = Arc::new(PostgresBackend::open(&s).unwrap());
    let ring = KeyRing::builder()
        .store(s.clone())
        .backend(backend)
        .account(AccountId::new("111122223333").unwrap())
        .ring_admins([p("role:admin")])
        .identity_policy_refresh(Duration::ZERO)
        .build();
    (ring, s)
}

const DELEGATE: &str = r#"{"Statement":[
    {"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"},
    {"Sid":"Root","Effect":"Allow","Principal":"account:111122223333","Action":"strongroom:*"},
    {"Sid":"X","Effect":"Allow","Principal":"account:444455556666","Action":"strongroom:Encrypt"}]}"#;
const ALLOW: &str =
    r#"{"Statement":[{"Sid":"Use","Effect":"Allow","Action":"strongroom:*","Resource":"*"}]}"#;
const STOP: &str = r#"{"Statement":[{"Sid":"Stop","Effect":"Deny","Action":"*","Resource":"*"}]}"#;

fn doc(json: &str) -> IdentityPolicy {
    IdentityPolicy::from_json(json).unwrap()
}

#[test]
fn two_instances_share_identity_policies_across_a_reconnect() {
    if !pg::available() {
        return;
    }
    let url = pg::fresh_db();
    let (a, store) = ring(&url);
    let (b, _) = ring(&url);
    let admin_a = a.client(p("role:admin"));
    let key = admin_a
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    admin_a
        .put_key_policy(
            &key,
            &Policy::from_json(DELEGATE).unwrap(),
            PutKeyPolicyOptions::default(),
        )
        .unwrap();
    let partner = p("account:444455556666/role:payments");
    admin_a
        .put_identity_policy(&p("user:alice"), "use", &doc(ALLOW))
        .unwrap();
    admin_a
        .put_identity_policy(&partner, "use", &doc(ALLOW))
        .unwrap();
    let ctx = EncryptionContext::new();
    // B decides with A's policies: delegation inside the account, both
    // halves across accounts.
    assert!(b.client(p("user:alice")).encrypt(&key, b"x", &ctx).is_ok());
    assert!(b.client(partner.clone()).encrypt(&key, b"x", &ctx).is_ok());
    assert!(matches!(
        b.client(p("user:bob")).encrypt(&key, b"x", &ctx),
        Err(Error::AccessDenied { .. })
    ));
    // A deny put through B binds A at once.
    b.client(p("role:admin"))
        .put_identity_policy(&p("user:alice"), "stop", &doc(STOP))
        .unwrap();
    assert!(matches!(
        a.client(p("user:alice")).encrypt(&key, b"x", &ctx),
        Err(Error::AccessDenied { .. })
    ));
    // One record per principal, stored under its normalized name.
    let rec = store
        .get_record(IDENTITY_RECORD_KIND, "user:alice")
        .unwrap()
        .unwrap();
    assert!(!rec.bytes.is_empty());
    assert!(
        store
            .get_record(IDENTITY_RECORD_KIND, "account:111122223333/user:alice")
            .unwrap()
            .is_none()
    );
    drop((a, b, store));
    // A new connection: everything is still there.
    let (c, _) = ring(&url);
    let admin_c = c.client(p("role:admin"));
    assert_eq!(
        admin_c.list_identity_policies(&p("user:alice")).unwrap(),
        ["stop", "use"]
    );
    assert_eq!(admin_c.list_identity_policies(&partner).unwrap(), ["use"]);
    admin_c
        .delete_identity_policy(&p("user:alice"), "stop")
        .unwrap();
    assert!(c.client(p("user:alice")).encrypt(&key, b"x", &ctx).is_ok());
    // The partner's Decrypt is not in the key policy: denied.
    let blob = c.client(partner.clone()).encrypt(&key, b"x", &ctx).unwrap();
    assert!(matches!(
        c.client(partner).decrypt(&blob, &ctx),
        Err(Error::AccessDenied { .. })
    ));
}
