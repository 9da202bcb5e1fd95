//! Regression tests of the security review (issue 12): each test is an
//! attack that worked against the ring before the fix, named after the item
//! it covers.

use std::sync::Arc;
use strongroom::audit::{
    ACTION_DELETE_KEY, ACTION_ROTATE_KEY, MemorySink, Outcome, SYSTEM_PRINCIPAL,
};
use strongroom::clock::ManualClock;
use strongroom::keyring::CreatedGrant;
use strongroom::keyring::GrantSelector;
use strongroom::keyring::{
    EnableRotationOptions, ListOptions, PutKeyPolicyOptions, ScheduleDeletionOptions,
};
use strongroom::policy::{GrantRequest, Policy};
use strongroom::store::OpenMode;
use strongroom::store::{MemoryStore, MetadataStore};
use strongroom::{
    Action, Alias, CreateKeyOptions, EncryptionContext, Error, KeyId, KeyRing, KeySpec, Principal,
    Timestamp,
};

fn p(s: &str) -> Principal {
    s.parse().unwrap()
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("tenant", "acme")
}

// ---- 1. alias hijack --------------------------------------------------------

#[test]
fn item01_alias_hijack_needs_rights_on_the_current_key() {
    let ring = KeyRing::in_memory();
    let alice = ring.client(p("user:alice"));
    let mallory = ring.client(p("user:mallory"));
    let a = alice
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new().alias("alias/invoices"),
        )
        .unwrap();
    let a2 = alice
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let m = mallory
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();

    // Mallory owns the destination but not the alias's current key.
    assert!(matches!(
        mallory.update_alias("alias/invoices", m.as_str()),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        mallory.delete_alias("alias/invoices"),
        Err(Error::AccessDenied { .. })
    ));
    // Nothing changed: Alice's seals still go to her key, and Mallory cannot
    // open them.
    assert_eq!(alice.describe_key("alias/invoices").unwrap().key_id, a);
    let sealed = alice.seal("alias/invoices", b"invoice", &ctx()).unwrap();
    assert!(mallory.open(&sealed, &ctx()).is_err());
    assert_eq!(
        alice.open(&sealed, &ctx()).unwrap().key_id,
        a,
        "the alias still names Alice's key"
    );

    // Alice cannot point her alias at a key she has no right on either.
    assert!(matches!(
        alice.update_alias("alias/invoices", m.as_str()),
        Err(Error::AccessDenied { .. })
    ));
    // With rights on both, it works.
    alice.update_alias("alias/invoices", a2.as_str()).unwrap();
    assert_eq!(alice.describe_key("alias/invoices").unwrap().key_id, a2);
    // CreateAlias needs rights on the key the alias will name.
    assert!(matches!(
        mallory.create_alias("alias/mine", a.as_str()),
        Err(Error::AccessDenied { .. })
    ));
}

#[test]
fn item01_store_repoints_an_alias_only_from_the_authorized_key() {
    let store = Arc::new(MemoryStore::new());
    let ring = KeyRing::builder().store(store.clone()).build();
    let c = ring.client(p("user:alice"));
    let ids: Vec<KeyId> = (0..3)
        .map(|_| {
            c.create_key(KeySpec::default(), CreateKeyOptions::new())
                .unwrap()
        })
        .collect();
    let alias = Alias::parse("alias/x").unwrap();
    store.create_alias(&alias, &ids[0]).unwrap();
    // A compare-and-set from a key the alias no longer names changes nothing.
    assert!(matches!(
        store.update_alias(&alias, &ids[1], &ids[2]),
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.delete_alias(&alias, &ids[1]),
        Err(Error::Conflict(_))
    ));
    assert_eq!(store.resolve_alias(&alias).unwrap(), Some(ids[0].clone()));
    store.update_alias(&alias, &ids[0], &ids[2]).unwrap();
    assert_eq!(store.resolve_alias(&alias).unwrap(), Some(ids[2].clone()));
    store.delete_alias(&alias, &ids[2]).unwrap();
    assert_eq!(store.resolve_alias(&alias).unwrap(), None);
}

// ---- 2. metadata disclosure -------------------------------------------------

#[test]
fn item02_describe_and_list_reveal_no_policy_or_grants() {
    let ring = KeyRing::in_memory();
    let alice = ring.client(p("user:alice"));
    let bob = ring.client(p("user:bob"));
    let carol = ring.client(p("user:carol"));
    let key = alice
        .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/k"))
        .unwrap();
    let k = key.as_str();
    let policy = Policy::from_json(
        r#"{"Version":"2026-01-01","Statement":[
          {"Sid":"Owner","Effect":"Allow","Principal":"user:alice","Action":"strongroom:*"},
          {"Sid":"BreakGlass","Effect":"Allow","Principal":"role:breakglass-7f3a","Action":"strongroom:*"}]}"#,
    )
    .unwrap();
    alice
        .put_key_policy(k, &policy, PutKeyPolicyOptions::default())
        .unwrap();
    let CreatedGrant { grant_id: gid, .. } = alice
        .create_grant(
            k,
            GrantRequest::new(p("user:bob"), &[Action::DescribeKey, Action::Encrypt]),
        )
        .unwrap();
    alice
        .create_grant(
            k,
            GrantRequest::new(p("service:secret-grantee"), &[Action::Decrypt]),
        )
        .unwrap();

    // A grantee allowed DescribeKey sees the key, not who else may use it.
    let d = bob.describe_key(k).unwrap();
    assert_eq!(d.key_id, key);
    let shown = format!("{d:?}");
    for hidden in [
        "breakglass-7f3a",
        "secret-grantee",
        gid.as_str(),
        "BreakGlass",
    ] {
        assert!(
            !shown.contains(hidden),
            "describe_key shows {hidden}: {shown}"
        );
    }
    // Anyone may list keys (the open ring policy): ids and aliases only.
    let page = carol.list_keys(ListOptions::default().limit(10)).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].key_id, key);
    assert_eq!(page.items[0].aliases[0].as_str(), "alias/k");
    let listed = format!("{:?}", page.items);
    for hidden in [
        "breakglass-7f3a",
        "secret-grantee",
        gid.as_str(),
        "user:alice",
    ] {
        assert!(
            !listed.contains(hidden),
            "list_keys shows {hidden}: {listed}"
        );
    }
    // Policies and grants are read only through their own, authorized calls.
    assert!(matches!(
        bob.get_key_policy(k),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        bob.list_grants(k),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        carol.describe_key(k),
        Err(Error::AccessDenied { .. })
    ));
    assert_eq!(alice.get_key_policy(k).unwrap(), policy);
    assert_eq!(alice.list_grants(k).unwrap().len(), 2);
}

// ---- 3. import tokens -------------------------------------------------------

#[test]
fn item03_import_tokens_are_bound_to_their_principal_and_key() {
    let ring = KeyRing::in_memory();
    let alice = ring.client(p("user:alice"));
    let bob = ring.client(p("user:bob"));
    let params = alice.get_parameters_for_import(KeySpec::default()).unwrap();
    let wrapped = params.wrap(&[7u8; 32]).unwrap();
    // Bob holds Alice's token and wrapped material: useless to him.
    assert!(matches!(
        bob.import_key(&params.import_token, &wrapped, CreateKeyOptions::new()),
        Err(Error::InvalidArgument(_))
    ));
    // Material that does not unwrap does not spend the token.
    assert!(matches!(
        alice.import_key(&params.import_token, b"garbage", CreateKeyOptions::new()),
        Err(Error::InvalidArgument(_))
    ));
    let mut bad = wrapped.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(
        alice
            .import_key(&params.import_token, &bad, CreateKeyOptions::new())
            .is_err()
    );
    let k = alice
        .import_key(&params.import_token, &wrapped, CreateKeyOptions::new())
        .unwrap();
    // Once used, gone.
    assert!(
        alice
            .import_key(&params.import_token, &wrapped, CreateKeyOptions::new())
            .is_err()
    );

    // Key-bound parameters: only import_key_version of that very key.
    let other = alice
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let kp = alice.get_parameters_for_key_import(k.as_str()).unwrap();
    let w = kp.wrap(&[8u8; 32]).unwrap();
    assert!(
        alice
            .import_key_version(other.as_str(), &kp.import_token, &w)
            .is_err()
    );
    assert!(
        alice
            .import_key(&kp.import_token, &w, CreateKeyOptions::new())
            .is_err()
    );
    assert!(matches!(
        bob.get_parameters_for_key_import(k.as_str()),
        Err(Error::AccessDenied { .. })
    ));
    assert_eq!(
        alice
            .import_key_version(k.as_str(), &kp.import_token, &w)
            .unwrap(),
        2
    );
    // Parameters for a new key do not import versions.
    let np = alice.get_parameters_for_import(KeySpec::default()).unwrap();
    assert!(
        alice
            .import_key_version(k.as_str(), &np.import_token, &np.wrap(&[9; 32]).unwrap())
            .is_err()
    );

    // Debug never shows the token.
    assert!(!format!("{np:?}").contains(&np.import_token));
}

#[test]
fn item03_import_needs_create_key_and_pending_imports_are_capped() {
    // A ring policy that allows importing but not creating keys.
    let policy = Policy::from_json(
        r#"{"Version":"2026-01-01","Statement":[
          {"Effect":"Allow","Principal":"user:*","Action":["strongroom:GetParametersForImport","strongroom:ImportKeyMaterial"]}]}"#,
    )
    .unwrap();
    let ring = KeyRing::builder().ring_policy(policy).build();
    let alice = ring.client(p("user:alice"));
    let params = alice.get_parameters_for_import(KeySpec::default()).unwrap();
    let wrapped = params.wrap(&[7u8; 32]).unwrap();
    assert!(matches!(
        alice.import_key(&params.import_token, &wrapped, CreateKeyOptions::new()),
        Err(Error::AccessDenied { .. })
    ));

    let ring = KeyRing::in_memory();
    let alice = ring.client(p("user:alice"));
    for _ in 1..strongroom::limits::MAX_PENDING_IMPORTS_PER_PRINCIPAL {
        alice.get_parameters_for_import(KeySpec::default()).unwrap();
    }
    let last = alice.get_parameters_for_import(KeySpec::default()).unwrap();
    assert!(matches!(
        alice.get_parameters_for_import(KeySpec::default()),
        Err(Error::InvalidArgument(_))
    ));
    // Another principal is not starved by Alice.
    ring.client(p("user:bob"))
        .get_parameters_for_import(KeySpec::default())
        .unwrap();
    // Using one frees a slot.
    alice
        .import_key(
            &last.import_token,
            &last.wrap(&[1; 32]).unwrap(),
            CreateKeyOptions::new(),
        )
        .unwrap();
    alice.get_parameters_for_import(KeySpec::default()).unwrap();
}

// ---- 4. ring policy ---------------------------------------------------------

#[test]
fn item04_ring_policy_is_explicit_and_grants_nothing_on_keys() {
    // The named open policy (the default): anyone may create and list, and
    // gains nothing on another principal's key.
    for ring in [
        KeyRing::in_memory(),
        KeyRing::builder().open_ring_policy().build(),
    ] {
        let alice = ring.client(p("user:alice"));
        let bob = ring.client(p("user:bob"));
        let key = alice
            .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/a"))
            .unwrap();
        let k = key.as_str();
        bob.create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
        assert_eq!(
            bob.list_keys(ListOptions::default().limit(10))
                .unwrap()
                .items
                .len(),
            2
        );
        let blob = alice.encrypt(k, b"x", &ctx()).unwrap();
        for (what, r) in [
            ("describe", bob.describe_key(k).map(drop)),
            ("encrypt", bob.encrypt(k, b"x", &ctx()).map(drop)),
            ("decrypt", bob.decrypt(&blob, &ctx()).map(drop)),
            ("policy", bob.get_key_policy(k).map(drop)),
            ("grants", bob.list_grants(k).map(drop)),
            ("tags", bob.list_resource_tags(k).map(drop)),
            ("disable", bob.disable_key(k)),
            (
                "delete",
                bob.schedule_key_deletion(k, ScheduleDeletionOptions::default())
                    .map(drop),
            ),
            ("alias", bob.delete_alias("alias/a")),
            ("rotate", bob.rotate_key_on_demand(k).map(drop)),
        ] {
            assert!(
                matches!(r, Err(Error::AccessDenied { .. })),
                "{what}: {r:?}"
            );
        }
    }
    // Named admins: only they create, import and list.
    let ring = KeyRing::builder().ring_admins([p("role:admin")]).build();
    let admin = ring.client(p("role:admin"));
    let bob = ring.client(p("user:bob"));
    let key = admin
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    assert!(matches!(
        bob.create_key(KeySpec::default(), CreateKeyOptions::new()),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        bob.list_keys(ListOptions::default().limit(10)),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        bob.get_parameters_for_import(KeySpec::default()),
        Err(Error::AccessDenied { .. })
    ));
    assert!(matches!(
        bob.generate_random(8),
        Err(Error::AccessDenied { .. })
    ));
    // A grant still works for bob: the ring policy does not touch keys.
    admin
        .create_grant(
            key.as_str(),
            GrantRequest::new(p("user:bob"), &[Action::Encrypt]),
        )
        .unwrap();
    bob.encrypt(key.as_str(), b"x", &ctx()).unwrap();
}

// ---- 6. encryption context validated first ---------------------------------

#[test]
fn item06_oversized_context_is_refused_before_the_decision_and_not_logged() {
    let sink = Arc::new(MemorySink::new());
    let ring = KeyRing::builder()
        .audit_sink(sink.clone())
        .audit_context_values(true)
        .build();
    let alice = ring.client(p("user:alice"));
    let bob = ring.client(p("user:bob"));
    let key = alice
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    sink.clear();
    let huge_key = "k".repeat(4 << 20);
    let huge = EncryptionContext::new().with(huge_key.clone(), "v");
    // Bob has no right on the key; the context is refused first anyway.
    assert!(matches!(
        bob.encrypt(key.as_str(), b"x", &huge),
        Err(Error::InvalidArgument(_))
    ));
    let bad = EncryptionContext::new().with("", "v");
    assert!(matches!(
        bob.generate_data_key(key.as_str(), &bad),
        Err(Error::InvalidArgument(_))
    ));
    let events = sink.events();
    assert_eq!(events.len(), 2);
    for e in &events {
        assert!(e.context_keys.is_empty(), "{:?}", e.context_keys.len());
        assert!(e.context_values.is_none());
        assert!(matches!(&e.outcome, Outcome::Failed { error } if error == "InvalidArgument"));
        let json = serde_json_len(e);
        assert!(json < 1024, "event of {json} bytes");
    }
}

fn serde_json_len(e: &strongroom::audit::AuditEvent) -> usize {
    serde_json::to_vec(e).unwrap().len()
}

// ---- 14. every change emits one event with its true outcome ---------------

#[test]
fn item14_maintenance_records_destruction_and_rotation() {
    let sink = Arc::new(MemorySink::new());
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000)));
    let ring = KeyRing::builder()
        .audit_sink(sink.clone())
        .clock(clock.clone())
        .build();
    let alice = ring.client(p("user:alice"));
    let doomed = alice
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let doomed_by_use = alice
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let rotating = alice
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    alice
        .schedule_key_deletion(
            doomed.as_str(),
            ScheduleDeletionOptions::default().pending_window_days(7),
        )
        .unwrap();
    alice
        .schedule_key_deletion(
            doomed_by_use.as_str(),
            ScheduleDeletionOptions::default().pending_window_days(7),
        )
        .unwrap();
    alice
        .enable_key_rotation(
            rotating.as_str(),
            EnableRotationOptions::default().rotation_period_days(90),
        )
        .unwrap();
    clock.advance_days(91);

    // Due deletion found by a caller's use: the caller's event, and one
    // system event for the destruction.
    sink.clear();
    assert!(matches!(
        alice.describe_key(doomed_by_use.as_str()),
        Err(Error::KeyNotFound(_))
    ));
    let ev = sink.events();
    let system: Vec<_> = ev
        .iter()
        .filter(|e| e.principal == SYSTEM_PRINCIPAL)
        .collect();
    assert_eq!(system.len(), 1, "{ev:#?}");
    assert_eq!(system[0].action, ACTION_DELETE_KEY);
    assert_eq!(system[0].key_id.as_deref(), Some(doomed_by_use.as_str()));
    assert_eq!(system[0].outcome, Outcome::Allowed);

    sink.clear();
    let report = ring.run_maintenance().unwrap();
    assert_eq!(report.deleted, vec![doomed.clone()]);
    assert_eq!(report.rotated, vec![(rotating.clone(), 2)]);
    let ev = sink.events();
    assert_eq!(ev.len(), 2, "{ev:#?}");
    let del = ev.iter().find(|e| e.action == ACTION_DELETE_KEY).unwrap();
    assert_eq!(del.principal, SYSTEM_PRINCIPAL);
    assert_eq!(del.key_id.as_deref(), Some(doomed.as_str()));
    let rot = ev.iter().find(|e| e.action == ACTION_ROTATE_KEY).unwrap();
    assert_eq!(rot.principal, SYSTEM_PRINCIPAL);
    assert_eq!(rot.key_id.as_deref(), Some(rotating.as_str()));
    assert_eq!(rot.key_version, Some(2));
    assert_eq!(rot.outcome, Outcome::Allowed);

    // A second pass has nothing to do and records nothing.
    sink.clear();
    ring.run_maintenance().unwrap();
    assert!(sink.events().is_empty());
}

#[test]
fn item14_grantee_retiring_its_grant_is_one_allowed_event() {
    let sink = Arc::new(MemorySink::new());
    let ring = KeyRing::builder().audit_sink(sink.clone()).build();
    let alice = ring.client(p("user:alice"));
    let bob = ring.client(p("user:bob"));
    let key = alice
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let CreatedGrant {
        grant_id: gid,
        grant_token: token,
        ..
    } = alice
        .create_grant(
            key.as_str(),
            GrantRequest::new(p("user:bob"), &[Action::Encrypt]),
        )
        .unwrap();
    sink.clear();
    bob.retire_grant(key.as_str(), GrantSelector::Token(token))
        .unwrap();
    let ev = sink.events();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    assert_eq!(ev[0].action, "strongroom:RetireGrant");
    assert_eq!(ev[0].principal, "user:bob");
    assert_eq!(ev[0].outcome, Outcome::Allowed);
    assert_eq!(ev[0].grant_id.as_deref(), Some(gid.as_str()));
    assert!(alice.list_grants(key.as_str()).unwrap().is_empty());
    // A stranger is still refused, and recorded as refused.
    let CreatedGrant { grant_id: gid2, .. } = alice
        .create_grant(
            key.as_str(),
            GrantRequest::new(p("user:bob"), &[Action::Encrypt]),
        )
        .unwrap();
    sink.clear();
    assert!(matches!(
        ring.client(p("user:eve"))
            .retire_grant(key.as_str(), GrantSelector::Id(gid2)),
        Err(Error::AccessDenied { .. })
    ));
    let ev = sink.events();
    assert_eq!(ev.len(), 1);
    assert!(matches!(ev[0].outcome, Outcome::Denied { .. }));
    assert_eq!(alice.list_grants(key.as_str()).unwrap().len(), 1);
}

// ---- 18. hash state wiped ---------------------------------------------------

#[test]
fn item18_hash_and_mac_state_is_zeroized_on_drop() {
    // HKDF and HMAC run on SHA-256/512 cores; with the "zeroize" features
    // those cores and their block buffers wipe themselves on drop. This is
    // a compile-time check: it does not build without the features.
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    wiped_on_drop::<sha2::Sha256>();
    wiped_on_drop::<sha2::Sha512>();
    wiped_on_drop::<sha2::Sha384>();
}

// ---- 19. the usage meter counts a version's whole life -----------------------

fn version_of(c: &strongroom::Client, blob: &[u8]) -> u32 {
    c.decrypt(blob, &ctx()).unwrap().key_version
}

#[test]
fn item19_encryption_count_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let root = strongroom::store::RootKey::raw([7; 32]);
    let open = || {
        KeyRing::builder()
            .file_keystore(
                dir.path(),
                &root,
                strongroom::store::KeystoreOptions::default().mode(OpenMode::OpenOrCreate),
            )
            .unwrap()
            .encryption_limit(5)
            .build()
    };
    let key = {
        let ring = open();
        let c = ring.client(p("user:alice"));
        let key = c
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
        for _ in 0..3 {
            let b = c.encrypt(key.as_str(), b"x", &ctx()).unwrap();
            assert_eq!(version_of(&c, &b), 1);
        }
        key
    };
    // A restarted process continues the count instead of starting at zero:
    // the fifth encryption under version 1 rotates.
    let ring = open();
    let c = ring.client(p("user:alice"));
    let status = c.get_key_rotation_status(key.as_str()).unwrap();
    assert_eq!(status.primary_encryptions, 3);
    let versions: Vec<u32> = (0..3)
        .map(|_| version_of(&c, &c.encrypt(key.as_str(), b"x", &ctx()).unwrap()))
        .collect();
    assert_eq!(versions, vec![1, 1, 2]);
}

#[test]
fn item19_rings_sharing_a_store_share_the_count() {
    let store = Arc::new(MemoryStore::new());
    let a = KeyRing::builder()
        .store(store.clone())
        .encryption_limit(4)
        .build();
    let b = KeyRing::builder()
        .store(store.clone())
        .backend(a.dangerous_backend())
        .encryption_limit(4)
        .build();
    let ca = a.client(p("user:alice"));
    let cb = b.client(p("user:alice"));
    let key = ca
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let k = key.as_str();
    let mut versions = Vec::new();
    for i in 0..6 {
        let c = if i % 2 == 0 { &ca } else { &cb };
        versions.push(version_of(c, &c.encrypt(k, b"x", &ctx()).unwrap()));
    }
    // The fourth encryption of the version (by either ring) rotates.
    assert_eq!(versions, vec![1, 1, 1, 1, 2, 2]);
}
