//! Cost of the access decision.
//!
//! Run: `cargo bench --bench access`.
//!
//! - `grants/N`: one decision on a key holding N grants for N distinct
//!   grantees, for a grantee whose grant allows (grants are indexed by
//!   grantee, so N should not matter);
//! - `grants_same_grantee/N`: N grants for the SAME grantee, the allowing one
//!   last (the worst case: that grantee's grants are scanned);
//! - `keys/N`: `explain` (key lookup + decision) on one key of a ring of N
//!   keys, N = 10 and 100,000;
//! - `encrypt_1k/plain`: `Client::encrypt` of 1 KiB by the key's creator (no
//!   identity policy: the per-principal snapshot is empty);
//! - `encrypt_1k/identity`: the same by a principal allowed through the key
//!   policy's delegation to the account and an identity policy naming the
//!   key by alias (the snapshot, plus one alias lookup).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use strongroom::keyring::ExplainOptions;
use strongroom::policy::{GrantRequest, Policy, Request, decide};
use strongroom::store::{MemoryStore, MetadataStore};
use strongroom::{Action, CreateKeyOptions, KeyRing, KeySpec, Principal, Timestamp};

fn grants(c: &mut Criterion) {
    let mut g = c.benchmark_group("access");
    let ring_policy = Policy::open_ring();
    for n in [1usize, 100, 10_000] {
        for same in [false, true] {
            // The bench holds the store to read the full key record (policy
            // and grants), which `describe_key` does not return.
            let store = Arc::new(MemoryStore::new());
            let ring = KeyRing::builder().store(store.clone()).build();
            let admin = ring.client(Principal::role("admin").unwrap());
            let key = admin
                .create_key(KeySpec::default(), CreateKeyOptions::new())
                .unwrap();
            for i in 0..n {
                let who = if same {
                    "bob".to_string()
                } else {
                    format!("u{i}")
                };
                let op = if same && i + 1 < n {
                    Action::Decrypt
                } else {
                    Action::Encrypt
                };
                admin
                    .create_grant(
                        key.as_str(),
                        GrantRequest::new(Principal::user(&who).unwrap(), &[op]),
                    )
                    .unwrap();
            }
            let meta = store.get_key(&key).unwrap().unwrap();
            let who = Principal::user(if same { "bob" } else { "u0" }).unwrap();
            let name = if same {
                "grants_same_grantee"
            } else {
                "grants"
            };
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    let req = Request {
                        principal: &who,
                        action: Action::Encrypt,
                        context: None,
                        now: Timestamp(0),
                    };
                    let d = decide(&ring_policy, Some((&meta.record, &meta.access)), &req);
                    assert!(d.allowed);
                    black_box(d)
                })
            });
        }
    }
    for n in [10usize, 100_000] {
        let ring = KeyRing::in_memory();
        let admin = ring.client(Principal::role("admin").unwrap());
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(
                admin
                    .create_key(KeySpec::default(), CreateKeyOptions::new())
                    .unwrap(),
            );
        }
        let target = ids[n / 2].to_string();
        let who = Principal::role("admin").unwrap();
        g.bench_function(BenchmarkId::new("keys", n), |b| {
            b.iter(|| {
                black_box(
                    admin
                        .explain(
                            &who,
                            Action::Encrypt,
                            ExplainOptions::default().key(target.to_string()),
                        )
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

fn encrypt_1k(c: &mut Criterion) {
    use strongroom::EncryptionContext;
    use strongroom::keyring::PutKeyPolicyOptions;
    use strongroom::policy::IdentityPolicy;
    let mut g = c.benchmark_group("access");
    let ring = KeyRing::builder()
        .ring_admins([Principal::role("admin").unwrap()])
        .build();
    let admin = ring.client(Principal::role("admin").unwrap());
    let key = admin
        .create_key(
            KeySpec::default(),
            CreateKeyOptions::new().alias("alias/bench"),
        )
        .unwrap();
    let data = vec![7u8; 1024];
    let ctx = EncryptionContext::new().with("tenant", "acme");
    g.bench_function("encrypt_1k/plain", |b| {
        b.iter(|| black_box(admin.encrypt(&key, &data, &ctx).unwrap()))
    });
    admin
        .put_key_policy(
            &key,
            &Policy::from_json(
                r#"{"Statement":[
                {"Sid":"Admin","Effect":"Allow","Principal":"role:admin","Action":"strongroom:*"},
                {"Sid":"Root","Effect":"Allow","Principal":"account:000000000000","Action":"strongroom:*"}]}"#,
            )
            .unwrap(),
            PutKeyPolicyOptions::default(),
        )
        .unwrap();
    let alice = Principal::user("alice").unwrap();
    admin
        .put_identity_policy(
            &alice,
            "use",
            &IdentityPolicy::from_json(
                r#"{"Statement":[{"Sid":"Use","Effect":"Allow","Action":"strongroom:Encrypt","Resource":"alias/bench"}]}"#,
            )
            .unwrap(),
        )
        .unwrap();
    let alice = ring.client(alice);
    g.bench_function("encrypt_1k/identity", |b| {
        b.iter(|| black_box(alice.encrypt(&key, &data, &ctx).unwrap()))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = grants, encrypt_1k
}
criterion_main!(benches);
