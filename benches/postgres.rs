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
//! After criterion's output, in the same run:
//!
//! - one table of per-call medians and the postgres ÷ memory throughput
//!   ratios of the warm paths (each the median of 3 runs of 3000 calls,
//!   interleaved memory/postgres so drifts in machine load hit both);
//! - 2 instances (two rings on one database, one thread each) sealing at
//!   once vs 1 instance alone: the throughput ratio (median of 3 runs);
//! - the time for a revocation (`revoke_grant`) and for a disable on
//!   instance A to be enforced on instance B: median and p99 of 50 trials.

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

    // One table of medians and ratios, from this run: each figure the
    // median of 3 runs, memory and postgres interleaved.
    let n = 3000;
    let median3 = |mut f: Box<dyn FnMut() -> (f64, f64) + '_>| -> (f64, f64) {
        let mut runs: Vec<(f64, f64)> = (0..3).map(|_| f()).collect();
        runs.sort_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
        runs[1]
    };
    let rows = [
        (
            "encrypt 1 KiB (warm)",
            median3(Box::new(|| {
                (
                    median_ns(|| drop(cm.encrypt(km.as_str(), &data, &ctx()).unwrap()), n),
                    median_ns(|| drop(cw.encrypt(kw.as_str(), &data, &ctx()).unwrap()), n),
                )
            })),
        ),
        (
            "seal 1 KiB (warm)",
            median3(Box::new(|| {
                (
                    median_ns(|| drop(cm.seal(km.as_str(), &data, &ctx()).unwrap()), n),
                    median_ns(|| drop(cw.seal(kw.as_str(), &data, &ctx()).unwrap()), n),
                )
            })),
        ),
        (
            "encrypt 1 KiB (cold)",
            (
                median_ns(
                    || drop(cm.encrypt(km.as_str(), &data, &ctx()).unwrap()),
                    300,
                ),
                median_ns(
                    || drop(cc.encrypt(kw.as_str(), &data, &ctx()).unwrap()),
                    300,
                ),
            ),
        ),
    ];
    println!("\npath                    memory µs  postgres µs  throughput postgres/memory");
    for (name, (m, p)) in rows {
        println!(
            "{name:<22} {:>10.1} {:>12.1} {:>10.2}×",
            m / 1e3,
            p / 1e3,
            m / p
        );
    }

    // Two instances sealing at once vs one alone (seals per second).
    let second = pg_ring(&url, PostgresOptions::default());
    let (cs, ks) = setup(&second);
    let window = Duration::from_secs(2);
    let seal_for = |c: &Client, k: &str| -> u64 {
        let start = Instant::now();
        let mut ops = 0u64;
        while start.elapsed() < window {
            black_box(c.seal(k, &data, &ctx()).unwrap());
            ops += 1;
        }
        ops
    };
    let mut ratios: Vec<(f64, f64, f64)> = (0..3)
        .map(|_| {
            let one = seal_for(&cw, &kw) as f64 / window.as_secs_f64();
            let both = std::thread::scope(|s| {
                let a = s.spawn(|| seal_for(&cw, &kw));
                let b = s.spawn(|| seal_for(&cs, &ks));
                a.join().unwrap() + b.join().unwrap()
            }) as f64
                / window.as_secs_f64();
            (one, both, both / one)
        })
        .collect();
    ratios.sort_by(|a, b| a.2.total_cmp(&b.2));
    let (one, both, r) = ratios[1];
    println!(
        "\nseal 1 KiB, 1 instance: {one:.0}/s; 2 instances at once: {both:.0}/s; \
         ratio {r:.2}× (median of 3; {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Propagation: a change on A until B enforces it (B polls its warm
    // path; each trial starts with B's cache holding the permissive state).
    let trials = 50;
    let mut revoke = Vec::with_capacity(trials);
    let mut disable = Vec::with_capacity(trials);
    let ca_b = b_ring.client(Principal::user("bench").unwrap());
    for _ in 0..trials {
        let gid = cw
            .create_grant(
                kw.as_str(),
                GrantRequest::new(bob.clone(), &[Action::Encrypt]),
            )
            .unwrap();
        while bob_b.encrypt(kw.as_str(), b"x", &ctx()).is_err() {
            std::thread::sleep(Duration::from_micros(100));
        }
        let start = Instant::now();
        cw.revoke_grant(kw.as_str(), &gid.grant_id).unwrap();
        while bob_b.encrypt(kw.as_str(), b"x", &ctx()).is_ok() {
            assert!(start.elapsed() < Duration::from_secs(30), "revocation lost");
            std::thread::yield_now();
        }
        revoke.push(start.elapsed());

        while ca_b.encrypt(kr.as_str(), b"x", &ctx()).is_err() {
            std::thread::sleep(Duration::from_micros(100));
        }
        let start = Instant::now();
        cr.disable_key(kr.as_str()).unwrap();
        while ca_b.encrypt(kr.as_str(), b"x", &ctx()).is_ok() {
            assert!(start.elapsed() < Duration::from_secs(30), "disable lost");
            std::thread::yield_now();
        }
        disable.push(start.elapsed());
        cr.enable_key(kr.as_str()).unwrap();
    }
    for (name, mut v) in [("revoke_grant", revoke), ("disable_key", disable)] {
        v.sort_unstable();
        let p99 = v[(v.len() * 99).div_ceil(100) - 1];
        println!(
            "{name} on A enforced on B ({} trials, including A's own call): median {:.2} ms, \
             p99 {:.2} ms, max {:.2} ms",
            v.len(),
            v[v.len() / 2].as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3
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
