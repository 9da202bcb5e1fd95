//! The PostgreSQL fleet store against the in-memory store, in one run.
//!
//! Run: `cargo bench --features postgres --bench postgres` (with
//! `STRONGROOM_POSTGRES_URL` set, e.g. by `eval "$(.ci/postgres-setup)"`, or
//! with the PostgreSQL binaries installed: the bench then starts its own
//! throwaway cluster on 127.0.0.1).
//!
//! - `warm/{encrypt,seal}_1k/{memory,postgres}`: 1 KiB through the whole
//!   pipeline with the key record in the cache (the target: postgres at
//!   least 0.9× the memory store's throughput);
//! - `cold/{describe,encrypt_1k}`: the same with a maximum staleness of zero,
//!   so every call reads the key from the database;
//! - `rotate`: one on-demand rotation (material row + locked key update);
//! - `revocation_reaches_b`: time from `revoke_grant` on instance A until a
//!   call on instance B is refused (notification + invalidation).
//!
//! After criterion's output, one table of per-call medians and the
//! memory ÷ postgres ratios of the warm paths, measured in the same run.

#[path = "../tests/support/postgres.rs"]
mod pg;

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use strongroom::policy::GrantRequest;
use strongroom::store::{PostgresOptions, RootKey};
use strongroom::{
    Action, Client, CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal,
};

fn pg_ring(url: &str, opts: PostgresOptions) -> KeyRing {
    KeyRing::builder()
        .postgres(url, &RootKey::raw([3; 32]), opts)
        .expect("connect to PostgreSQL")
        .build()
}

fn setup(ring: &KeyRing) -> (Client, String) {
    let c = ring.client(Principal::user("bench").unwrap());
    let k = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    (c, k.to_string())
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("bench", "postgres")
}

fn median_ns(mut f: impl FnMut(), n: usize) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let mut t: Vec<u128> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_nanos()
        })
        .collect();
    t.sort_unstable();
    t[t.len() / 2] as f64
}

fn benches(c: &mut Criterion) {
    let Some(cluster) = pg::cluster() else {
        return;
    };
    let url = cluster.fresh_db();
    let data = vec![0x5au8; 1024];
    let mem = KeyRing::in_memory();
    let (cm, km) = setup(&mem);
    let warm = pg_ring(&url, PostgresOptions::default());
    let (cw, kw) = setup(&warm);
    let cold = pg_ring(
        &url,
        PostgresOptions::default().max_staleness(Duration::ZERO),
    );
    let cc = cold.client(Principal::user("bench").unwrap());

    let mut g = c.benchmark_group("warm");
    g.bench_function("encrypt_1k/memory", |b| {
        b.iter(|| black_box(cm.encrypt(km.as_str(), &data, &ctx()).unwrap()))
    });
    g.bench_function("encrypt_1k/postgres", |b| {
        b.iter(|| black_box(cw.encrypt(kw.as_str(), &data, &ctx()).unwrap()))
    });
    g.bench_function("seal_1k/memory", |b| {
        b.iter(|| black_box(cm.seal(km.as_str(), &data, &ctx()).unwrap()))
    });
    g.bench_function("seal_1k/postgres", |b| {
        b.iter(|| black_box(cw.seal(kw.as_str(), &data, &ctx()).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("cold");
    g.bench_function("describe", |b| {
        b.iter(|| black_box(cc.describe_key(kw.as_str()).unwrap()))
    });
    g.bench_function("encrypt_1k", |b| {
        b.iter(|| black_box(cc.encrypt(kw.as_str(), &data, &ctx()).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("write");
    g.sample_size(10);
    let (cr, kr) = setup(&warm);
    g.bench_function("rotate", |b| {
        b.iter(|| black_box(cr.rotate_key_on_demand(kr.as_str()).unwrap()))
    });
    // Revocation on A, refusal on B.
    let b_ring = pg_ring(&url, PostgresOptions::default());
    let bob = Principal::user("bob").unwrap();
    let bob_b = b_ring.client(bob.clone());
    g.bench_function("revocation_reaches_b", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let gid = cw
                    .create_grant(
                        kw.as_str(),
                        GrantRequest::new(bob.clone(), &[Action::Encrypt]),
                    )
                    .unwrap();
                while bob_b.encrypt(kw.as_str(), b"x", &ctx()).is_err() {
                    std::thread::sleep(Duration::from_micros(200));
                }
                let start = Instant::now();
                cw.revoke_grant(kw.as_str(), &gid.grant_id).unwrap();
                while bob_b.encrypt(kw.as_str(), b"x", &ctx()).is_ok() {
                    assert!(start.elapsed() < Duration::from_secs(30), "revocation lost");
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();

    // One table of medians and ratios, from this run.
    let n = 3000;
    let rows = [
        (
            "encrypt 1 KiB (warm)",
            median_ns(|| drop(cm.encrypt(km.as_str(), &data, &ctx()).unwrap()), n),
            median_ns(|| drop(cw.encrypt(kw.as_str(), &data, &ctx()).unwrap()), n),
        ),
        (
            "seal 1 KiB (warm)",
            median_ns(|| drop(cm.seal(km.as_str(), &data, &ctx()).unwrap()), n),
            median_ns(|| drop(cw.seal(kw.as_str(), &data, &ctx()).unwrap()), n),
        ),
        (
            "encrypt 1 KiB (cold)",
            median_ns(
                || drop(cm.encrypt(km.as_str(), &data, &ctx()).unwrap()),
                300,
            ),
            median_ns(
                || drop(cc.encrypt(kw.as_str(), &data, &ctx()).unwrap()),
                300,
            ),
        ),
    ];
    println!("\npath                    memory µs  postgres µs  throughput postgres/memory");
    for (name, m, p) in rows {
        println!(
            "{name:<22} {:>10.1} {:>12.1} {:>10.2}×",
            m / 1e3,
            p / 1e3,
            m / p
        );
    }
}

criterion_group! {
    name = postgres;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(postgres);
