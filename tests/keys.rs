//! Key management: create, describe, list, aliases, tags, principals.

use std::collections::BTreeSet;
use strongroom::key::{KeyState, KeyUsage, SymmetricAlgorithm};
use strongroom::keyring::CreatedGrant;
use strongroom::keyring::{ListAliasesOptions, ListOptions};
use strongroom::{Action, CreateKeyOptions, EncryptionContext, Error, KeyRing, KeySpec, Principal};

fn client() -> strongroom::Client {
    KeyRing::in_memory().client(Principal::user("alice").unwrap())
}

#[test]
fn create_and_describe() {
    let c = client();
    let id = c
        .create_key(
            KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305),
            CreateKeyOptions::new()
                .description("payments")
                .alias("alias/payments")
                .tag("team", "core"),
        )
        .unwrap();
    assert_eq!(id.as_str().len(), 36);
    for r in [id.as_str(), "alias/payments"] {
        let m = c.describe_key(r).unwrap();
        assert_eq!(m.key_id, id);
        assert_eq!(
            m.spec,
            KeySpec::Symmetric(SymmetricAlgorithm::ChaCha20Poly1305)
        );
        assert_eq!(m.usage, KeyUsage::EncryptDecrypt);
        assert_eq!(m.state, KeyState::Enabled);
        assert_eq!(m.description, "payments");
        assert_eq!(m.created_by.to_string(), "user:alice");
        assert_eq!(m.primary_version, 1);
        assert_eq!(m.tags.get("team").map(String::as_str), Some("core"));
    }
}

#[test]
fn default_spec_is_aes_gcm_and_usage_is_enforced() {
    let c = client();
    let id = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    assert_eq!(
        c.describe_key(id.as_str()).unwrap().spec,
        KeySpec::Symmetric(SymmetricAlgorithm::Aes256Gcm)
    );
    let err = c
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new().usage(KeyUsage::SignVerify),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref m) if m.contains("SIGN_VERIFY")),
        "{err}"
    );
}

#[test]
fn alias_rules() {
    let c = client();
    let id = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let long_ok = format!("alias/{}", "a".repeat(250));
    assert!(c.create_alias(&long_ok, id.as_str()).is_ok());
    for bad in [
        "payments".to_string(),
        "alias/".to_string(),
        "alias/has space".to_string(),
        "alias/ümlaut".to_string(),
        "alias/semi;colon".to_string(),
        "Alias/x".to_string(),
        format!("alias/{}", "a".repeat(251)),
        "alias/strongroom/managed".to_string(),
    ] {
        let err = c.create_alias(&bad, id.as_str()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
        let err = c
            .create_key(
                KeySpec::default(),
                CreateKeyOptions::new().alias(bad.clone()),
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
    }
    assert!(c.create_alias("alias/ok:a/b_c-d", id.as_str()).is_ok());
}

#[test]
fn alias_lifecycle() {
    let c = client();
    let a = c
        .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/x"))
        .unwrap();
    let b = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    // Duplicate alias: the second key is not created.
    let before = c
        .list_keys(ListOptions::default().limit(100))
        .unwrap()
        .items
        .len();
    assert!(matches!(
        c.create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/x")),
        Err(Error::AliasExists(_))
    ));
    assert_eq!(
        c.list_keys(ListOptions::default().limit(100))
            .unwrap()
            .items
            .len(),
        before
    );
    assert!(matches!(
        c.create_alias("alias/x", b.as_str()),
        Err(Error::AliasExists(_))
    ));

    let ctx = EncryptionContext::new();
    let blob = c.encrypt("alias/x", b"1", &ctx).unwrap();
    assert_eq!(c.decrypt(&blob, &ctx).unwrap().key_id, a);
    c.update_alias("alias/x", b.as_str()).unwrap();
    let blob = c.encrypt("alias/x", b"1", &ctx).unwrap();
    assert_eq!(c.decrypt(&blob, &ctx).unwrap().key_id, b);
    assert!(matches!(
        c.update_alias("alias/none", b.as_str()),
        Err(Error::AliasNotFound(_))
    ));

    c.create_alias("alias/y", a.as_str()).unwrap();
    let all = c
        .list_aliases(ListAliasesOptions::default().limit(100))
        .unwrap();
    assert_eq!(
        all.items
            .iter()
            .map(|e| e.alias.as_str())
            .collect::<Vec<_>>(),
        vec!["alias/x", "alias/y"]
    );
    let of_a = c
        .list_aliases(
            ListAliasesOptions::default()
                .key(a.as_str().to_string())
                .limit(100),
        )
        .unwrap();
    assert_eq!(of_a.items.len(), 1);
    assert_eq!(of_a.items[0].alias.as_str(), "alias/y");

    c.delete_alias("alias/x").unwrap();
    assert!(matches!(
        c.delete_alias("alias/x"),
        Err(Error::AliasNotFound(_))
    ));
    assert!(matches!(
        c.describe_key("alias/x"),
        Err(Error::AliasNotFound(_))
    ));
    // The key stays.
    assert!(c.describe_key(b.as_str()).is_ok());
}

#[test]
fn list_keys_paginates() {
    let c = client();
    let mut made = BTreeSet::new();
    for _ in 0..25 {
        made.insert(
            c.create_key(KeySpec::default(), CreateKeyOptions::new())
                .unwrap(),
        );
    }
    let mut seen = BTreeSet::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = c
            .list_keys(
                ListOptions::default()
                    .limit(10)
                    .after(marker.as_deref().map(str::to_owned)),
            )
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 10);
        for k in page.items {
            assert!(seen.insert(k.key_id));
        }
        match page.next_marker {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, made);
    assert!(matches!(
        c.list_keys(ListOptions::default().limit(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.list_keys(ListOptions::default().limit(1001)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.list_keys(ListOptions::default().limit(10).marker("alias/x")),
        Err(Error::InvalidArgument(_))
    ));
    let page = c
        .list_aliases(ListAliasesOptions::default().limit(5))
        .unwrap();
    assert!(page.items.is_empty() && page.next_marker.is_none());
}

#[test]
fn tags() {
    let c = client();
    let id = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let id = id.as_str();
    c.tag_resource(id, &[("env", "prod"), ("team", "core")])
        .unwrap();
    c.tag_resource(id, &[("env", "staging")]).unwrap();
    let t = c.list_resource_tags(id).unwrap();
    assert_eq!(t.get("env").map(String::as_str), Some("staging"));
    assert_eq!(t.len(), 2);
    c.untag_resource(id, &["team", "absent"]).unwrap();
    assert_eq!(c.list_resource_tags(id).unwrap().len(), 1);
    for (k, v) in [("", "v"), ("strongroom:x", "v"), ("k\n", "v")] {
        assert!(matches!(
            c.tag_resource(id, &[(k, v)]),
            Err(Error::InvalidArgument(_))
        ));
    }
    let long = "v".repeat(257);
    assert!(matches!(
        c.tag_resource(id, &[("k", &long)]),
        Err(Error::InvalidArgument(_))
    ));
    let many: Vec<(String, String)> = (0..50).map(|i| (format!("k{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let err = c.tag_resource(id, &many).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(ref m) if m.contains("50")),
        "{err}"
    );
    // The failed call changed nothing.
    assert_eq!(c.list_resource_tags(id).unwrap().len(), 1);
}

#[test]
fn principals_parse_and_flow_into_metadata() {
    for ok in [
        "user:alice",
        "service:billing",
        "role:admin",
        "user:a.b@example.com",
    ] {
        let p: Principal = ok.parse().unwrap();
        assert_eq!(p.to_string(), ok);
    }
    for bad in ["alice", "group:x", "user:", "user:has space", ":x"] {
        assert!(
            matches!(bad.parse::<Principal>(), Err(Error::InvalidArgument(_))),
            "{bad}"
        );
    }
    let ring = KeyRing::in_memory();
    let svc = ring.client(Principal::service("billing").unwrap());
    let id = svc
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    assert_eq!(
        svc.describe_key(id.as_str())
            .unwrap()
            .created_by
            .to_string(),
        "service:billing"
    );
    // The default key policy gives the creator, and only the creator, access.
    let alice = ring.client(Principal::user("alice").unwrap());
    assert!(matches!(
        alice.describe_key(id.as_str()),
        Err(Error::AccessDenied { ref principal, ref action, .. })
            if principal.to_string() == "user:alice" && *action == Action::DescribeKey
    ));
}

#[test]
fn key_ids_are_validated() {
    let c = client();
    for bad in ["", "has space", "x/y"] {
        assert!(
            matches!(c.describe_key(bad), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn ring_is_send_sync_and_threads_share_it() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<KeyRing>();
    assert_send_sync::<strongroom::Client>();
    let c = client();
    let id = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let ctx = EncryptionContext::new().with("t", t.to_string());
                for i in 0..50u32 {
                    let m = c.seal(id.as_str(), &i.to_be_bytes(), &ctx).unwrap();
                    assert_eq!(
                        c.open(&m, &ctx).unwrap().plaintext.expose_secret(),
                        i.to_be_bytes()
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// A store in another crate can build key records with the public
/// constructors, and the narrow access operations change only the access
/// part.
#[test]
fn stores_build_records_and_change_access_narrowly() {
    use strongroom::key::KeyRecord;
    use strongroom::policy::{Grant, GrantRequest, KeyAccess, Policy};
    use strongroom::store::{KeyMetadata, MemoryStore, MetadataStore};
    use strongroom::{KeyId, Timestamp};
    let store = MemoryStore::new();
    let id = KeyId::parse("k-external-1").unwrap();
    let owner = Principal::user("owner").unwrap();
    let record = KeyRecord::new(
        id.clone(),
        KeySpec::default(),
        KeyUsage::EncryptDecrypt,
        owner.clone(),
        Timestamp(1_800_000_000),
    );
    store
        .insert_key(KeyMetadata::new(record.clone(), KeyAccess::new(None)), None)
        .unwrap();
    let policy = Policy::default_for(&owner);
    store.put_policy(&id, Some(&policy)).unwrap();
    assert_eq!(store.get_access(&id).unwrap().unwrap().policy, Some(policy));
    // Grants go through a ring (they carry a token hash); check the list
    // operation and the record staying untouched.
    let ring = KeyRing::builder().store(std::sync::Arc::new(store)).build();
    let c = ring.client(owner.clone());
    let CreatedGrant { grant_id: gid, .. } = c
        .create_grant(
            id.as_str(),
            GrantRequest::new(
                Principal::user("bob").unwrap(),
                &[strongroom::Action::Encrypt],
            ),
        )
        .unwrap();
    let grants: Vec<Grant> = c.list_grants(id.as_str()).unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].grant_id, gid);
    assert_eq!(c.describe_key(id.as_str()).unwrap(), record);
    c.revoke_grant(id.as_str(), &gid).unwrap();
    assert!(c.list_grants(id.as_str()).unwrap().is_empty());
}

/// One typed way to name a key: a `&str`, `&String`, `&KeyId` or `&Alias`
/// all name the same key, and bad text is a clear argument error.
#[test]
fn keys_are_named_by_id_or_alias_of_any_form() {
    use strongroom::{Alias, KeyRef};
    let c = KeyRing::in_memory().client(Principal::user("a").unwrap());
    let id = c
        .create_key(KeySpec::default(), CreateKeyOptions::new().alias("alias/k"))
        .unwrap();
    let alias = Alias::parse("alias/k").unwrap();
    let text = id.to_string();
    let ctx = EncryptionContext::new();
    for r in [
        KeyRef::from(&id),
        KeyRef::from(&alias),
        KeyRef::from(&text),
        KeyRef::from("alias/k"),
    ] {
        assert_eq!(c.describe_key(r).unwrap().key_id, id);
        let b = c.encrypt(r, b"x", &ctx).unwrap();
        assert_eq!(c.decrypt_with_key(&b, &ctx, r).unwrap().key_id, id);
    }
    assert!(KeyRef::from(&alias).is_alias() && !KeyRef::from(&id).is_alias());
    assert!(matches!(
        c.describe_key("no spaces allowed"),
        Err(Error::InvalidArgument(_))
    ));
}
