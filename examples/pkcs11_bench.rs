//! Envelope seal (1 KiB) operations per second on SoftHSM2 vs the memory
//! backend, in one run; and on each, with the data-key cache (one wrap per
//! 1,000 messages) vs without: the cache pays where a wrap is expensive.
//!
//! ```sh
//! eval "$(.ci/softhsm-setup)"
//! cargo run --release --features pkcs11 --example pkcs11_bench
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};
use strongroom::backend::{KeyBackend, MemoryBackend, Pkcs11Backend, Pkcs11Config};
use strongroom::keyring::DataKeyCacheLimits;
use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal, SecretBytes};

fn ops_per_sec(backend: Arc<dyn KeyBackend>, threads: usize, cache: bool) -> f64 {
    let mut builder = KeyRing::builder().backend(backend);
    if cache {
        builder = builder
            .data_key_cache(DataKeyCacheLimits::new(Duration::from_secs(300)).max_messages(1000));
    }
    let ring = builder.build();
    let c = ring.client(Principal::service("bench").unwrap());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap();
    let ctx = EncryptionContext::new().with("bench", "pkcs11");
    let data = vec![7u8; 1024];
    let run = Duration::from_secs(2);
    let start = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let c = c.clone();
                let key = key.clone();
                let (ctx, data) = (&ctx, &data);
                s.spawn(move || {
                    let mut n = 0u64;
                    while start.elapsed() < run {
                        let m = c.seal(key.as_str(), data, ctx).unwrap();
                        std::hint::black_box(m);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    counts.iter().sum::<u64>() as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let env = |n: &str| {
        std::env::var(n).unwrap_or_else(|_| panic!("{n} not set: eval \"$(.ci/softhsm-setup)\""))
    };
    let cfg = Pkcs11Config::new(
        env("STRONGROOM_PKCS11_MODULE"),
        env("STRONGROOM_PKCS11_TOKEN"),
        SecretBytes::from_slice(env("STRONGROOM_PKCS11_PIN").as_bytes()),
    );
    let hsm: Arc<dyn KeyBackend> = Arc::new(Pkcs11Backend::connect(&cfg).unwrap());
    for threads in [1usize, 2] {
        let mem = ops_per_sec(Arc::new(MemoryBackend::new()), threads, false);
        let soft = ops_per_sec(hsm.clone(), threads, false);
        println!(
            "seal 1 KiB, {threads} thread(s): memory {mem:>9.0} ops/s, SoftHSM2 {soft:>9.0} ops/s, ratio {:.2}",
            soft / mem
        );
    }
    let mem = ops_per_sec(Arc::new(MemoryBackend::new()), 1, false);
    let mem_cached = ops_per_sec(Arc::new(MemoryBackend::new()), 1, true);
    let soft = ops_per_sec(hsm.clone(), 1, false);
    let soft_cached = ops_per_sec(hsm, 1, true);
    println!(
        "seal 1 KiB with the data-key cache vs without, 1 thread: memory {:.2} ({mem_cached:.0} vs {mem:.0} ops/s), SoftHSM2 {:.2} ({soft_cached:.0} vs {soft:.0} ops/s)",
        mem_cached / mem,
        soft_cached / soft
    );
}
