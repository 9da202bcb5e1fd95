//! Identity policies and accounts: the IAM half of access control.
//!
//! ```sh
//! cargo run --example identity_policies
//! ```
//!
//! A ring of account `111122223333` holds a payments key whose key policy
//! (1) lets the ring's administrator manage it, (2) delegates to the ring's
//! own account (`account:111122223333`, like AWS's `:root`), so identity
//! policies decide for its principals, and (3) names the partner account
//! `444455556666` for Encrypt. The example attaches identity policies and
//! prints how each request is decided, and which statement of which policy
//! decided it.

use strongroom::keyring::{ExplainOptions, PutKeyPolicyOptions};
use strongroom::policy::{IdentityPolicy, Policy};
use strongroom::{
    AccountId, Action, CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ring = KeyRing::builder()
        .account(AccountId::new("111122223333")?)
        .ring_admins([Principal::role("admin")?])
        .build();
    let admin = ring.client(Principal::role("admin")?);
    let key = admin.create_key(
        KeySpec::default(),
        CreateKeyOptions::new().alias("alias/payments"),
    )?;
    admin.put_key_policy(
        &key,
        &Policy::from_json(
            r#"{"Statement":[
              {"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"},
              {"Sid":"EnableIdentityPolicies","Effect":"Allow",
               "Principal":"account:111122223333","Action":"strongroom:*"},
              {"Sid":"PartnerMayEncrypt","Effect":"Allow",
               "Principal":"account:444455556666","Action":"strongroom:Encrypt"}
            ]}"#,
        )?,
        PutKeyPolicyOptions::default(),
    )?;

    let alice = Principal::user("alice")?;
    let partner: Principal = "account:444455556666/role:payments".parse()?;
    admin.put_identity_policy(
        &alice,
        "use-payments",
        &IdentityPolicy::from_json(
            r#"{"Statement":[{"Sid":"UsePayments","Effect":"Allow",
                "Action":["strongroom:Encrypt","strongroom:Decrypt"],
                "Resource":"alias/payments"}]}"#,
        )?,
    )?;
    admin.put_identity_policy(
        &alice,
        "guardrail",
        &IdentityPolicy::from_json(
            r#"{"Statement":[{"Sid":"NeverDelete","Effect":"Deny",
                "Action":"strongroom:ScheduleKeyDeletion","Resource":"*"}]}"#,
        )?,
    )?;
    admin.put_identity_policy(
        &partner,
        "partner",
        &IdentityPolicy::from_json(
            r#"{"Statement":[{"Sid":"PartnerAnything","Effect":"Allow",
                "Action":"strongroom:*","Resource":"*"}]}"#,
        )?,
    )?;

    let cases = [
        (&alice, Action::Encrypt),
        (&alice, Action::ScheduleKeyDeletion),
        (&partner, Action::Encrypt),
        (&partner, Action::Decrypt),
    ];
    for (who, action) in cases {
        let d = admin.explain(who, action, ExplainOptions::default().key(key.to_string()))?;
        println!(
            "{:<40} {:<32} {:<6} {:?}",
            who.to_string(),
            action.as_str(),
            if d.allowed { "ALLOW" } else { "DENY" },
            d.reason
        );
    }
    let bob = Principal::user("bob")?;
    let d = admin.explain(
        &bob,
        Action::Encrypt,
        ExplainOptions::default().key(key.to_string()),
    )?;
    println!(
        "{:<40} {:<32} {:<6} {:?}",
        bob.to_string(),
        Action::Encrypt.as_str(),
        if d.allowed { "ALLOW" } else { "DENY" },
        d.reason
    );

    // The decisions hold for the real operations.
    let ctx = EncryptionContext::new().with("purpose", "demo");
    let blob = ring
        .client(partner.clone())
        .encrypt("alias/payments", b"invoice 42", &ctx)?;
    let opened = ring.client(alice.clone()).decrypt(&blob, &ctx)?;
    assert_eq!(opened.plaintext.expose_secret(), b"invoice 42");
    assert!(ring.client(partner).decrypt(&blob, &ctx).is_err());
    println!("the partner encrypted, alice decrypted, the partner could not decrypt");
    Ok(())
}
