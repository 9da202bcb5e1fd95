//! Remote custodians against the in-memory backend, in one run: `seal` and
//! `open` of 1 KiB through the memory backend, Vault/OpenBao Transit and
//! AWS KMS (moto), and the number of requests each remote backend sends per
//! 1,000 seals.
//!
//! Run (servers from `.ci/remote-setup`, or started here when
//! `.ci/remote-venv` exists; without either only the memory baseline runs):
//!
//! ```text
//! eval "$(.ci/remote-setup)"
//! cargo bench --features vault,aws-kms --bench remote -- --warm-up-time 1 --measurement-time 3
//! kill $STRONGROOM_REMOTE_PIDS
//! ```
//!
//! The servers are local, so the numbers are the cost of one HTTP round
//! trip to a process on the same machine plus the server's own work; a
//! real Vault or KMS over a network adds its latency per request.

#[path = "../tests/support/remote.rs"]
mod remote;

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use strongroom::backend::{
    AwsKmsBackend, AwsKmsConfig, KeyBackend, MemoryBackend, VaultConfig, VaultTransitBackend,
};
use strongroom::interop::sigv4::Credentials;
use strongroom::{
    Client, CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal, SecretBytes,
};

fn client(backend: Arc<dyn KeyBackend>) -> (Client, String) {
    let ring = KeyRing::builder().backend(backend).build();
    let c = ring.client(Principal::service("bench").unwrap());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    (c, key.to_string())
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A backend under test: its name, the backend, and its request counter.
type Subject = (
    &'static str,
    Arc<dyn KeyBackend>,
    Option<Box<dyn Fn() -> u64>>,
);

fn backends() -> Vec<Subject> {
    let mut out: Vec<Subject> = vec![("memory", Arc::new(MemoryBackend::new()), None)];
    // The support module fails a skip under CI=true; a bench just reports.
    let quiet =
        !in_ci() && remote::venv().is_none() && std::env::var("STRONGROOM_VAULT_ADDR").is_err();
    if quiet {
        eprintln!("remote backends skipped: run `eval \"$(.ci/remote-setup)\"` first");
        return out;
    }
    if let Some(v) = remote::vault() {
        let b = Arc::new(
            VaultTransitBackend::connect(&VaultConfig::new(
                &v.addr,
                SecretBytes::from_slice(v.token.as_bytes()),
            ))
            .unwrap(),
        );
        let counter = b.clone();
        out.push((
            "vault-transit",
            b,
            Some(Box::new(move || counter.remote_calls())),
        ));
    }
    if let Some(k) = remote::kms() {
        let cfg = AwsKmsConfig::new(
            "us-east-1",
            Credentials::new(&k.access_key_id, &k.secret_access_key),
        )
        .endpoint(&k.endpoint);
        let b = Arc::new(AwsKmsBackend::connect(&cfg).unwrap());
        let counter = b.clone();
        out.push(("aws-kms", b, Some(Box::new(move || counter.remote_calls()))));
    }
    out
}

fn bench(c: &mut Criterion) {
    let ctx = EncryptionContext::new().with("bench", "remote");
    let data = vec![0x5au8; 1024];
    let mut g = c.benchmark_group("remote_1KiB");
    let mut means = Vec::new();
    for (name, backend, calls) in backends() {
        let (client, key) = client(backend);
        let msg = client.seal(&key, &data, &ctx).unwrap();
        g.bench_function(format!("seal/{name}"), |b| {
            b.iter(|| black_box(client.seal(&key, &data, &ctx).unwrap()))
        });
        g.bench_function(format!("open/{name}"), |b| {
            b.iter_with_large_drop(|| client.open(&msg, &ctx).unwrap())
        });
        // Requests per 1,000 seals, and a plain mean for the ratio line.
        let before = calls.as_ref().map(|f| f());
        let start = Instant::now();
        for _ in 0..1000 {
            black_box(client.seal(&key, &data, &ctx).unwrap());
        }
        let mean = start.elapsed() / 1000;
        if let (Some(f), Some(b)) = (calls.as_ref(), before) {
            eprintln!(
                "{name}: {} requests to the remote service per 1,000 seals",
                f() - b
            );
        }
        means.push((name, mean));
    }
    g.finish();
    if let Some(&(_, base)) = means.first() {
        for (name, mean) in &means {
            eprintln!(
                "seal 1 KiB, mean of 1,000: {name} {mean:?} ({:.0}x memory)",
                mean.as_secs_f64() / base.as_secs_f64()
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
