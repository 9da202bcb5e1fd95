//! Encrypt throughput with the batched, signed file audit sink vs no sink,
//! in one run. Run: `cargo bench --bench audit`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use strongroom::audit::{FsyncPolicy, JsonlFileSink, JsonlOptions};
use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};

fn bench(c: &mut Criterion) {
    let ctx = EncryptionContext::new().with("tenant", "acme");
    let data = [0x5au8; 1024];
    let mut g = c.benchmark_group("audit");
    let dir = std::env::temp_dir().join(format!("strongroom-audit-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, sink) in [
        ("encrypt_1k_no_sink", None),
        (
            "encrypt_1k_batched_file_sink",
            Some(Arc::new(
                JsonlFileSink::open(
                    &dir,
                    &[1u8; 32],
                    JsonlOptions::default()
                        .fsync(FsyncPolicy::Batched { max_events: 1024 })
                        .digest_every(1000),
                )
                .unwrap(),
            )),
        ),
    ] {
        let mut b = KeyRing::builder();
        if let Some(s) = sink {
            b = b.audit_sink(s);
        }
        let client = b.build().client(Principal::service("bench").unwrap());
        let key = client
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap();
        g.bench_function(name, |b| {
            b.iter(|| black_box(client.encrypt(key.as_str(), &data, &ctx).unwrap()))
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
