//! Writer latency under load: how long a rotation (and other key writes)
//! takes while 8 threads seal on the same key, against the same write with
//! no load, measured in the same run.
//!
//! Run: `cargo bench --bench rotation_load`. Besides criterion's means, it
//! prints one table of per-call medians and 99th percentiles, and the ratio
//! loaded ÷ unloaded of each.
//!
//! For each ring (in-memory; file keystore in a temporary directory) and
//! each write, two measurements:
//! - `unloaded`: the write alone;
//! - `loaded`: the write while 8 threads seal 1 KiB messages in a loop on
//!   the key being written (through an alias), stopped when it ends.
//!
//! Writes: `rotate_key_on_demand`; `disable_key` + `enable_key`; `revoke_grant` of a
//! grant created (untimed) just before. Rotations add a version per call, so
//! the alias moves to a fresh key every `ROTATIONS_PER_KEY` rotations
//! (untimed): loaded and unloaded runs rotate records of the same sizes.
//!
//! The per-call table also counts criterion's warm-up calls. On a shared
//! machine the p99 column mostly shows scheduling delay (9 runnable threads
//! here, plus whatever else runs): compare ratios within one run.

use criterion::{Criterion, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use strongroom::keyring::CreatedGrant;
use strongroom::policy::GrantRequest;
use strongroom::store::RootKey;
use strongroom::{
    Action, Client, CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal,
};

const SEALERS: usize = 8;
const MESSAGE_LEN: usize = 1024;
const ALIAS: &str = "alias/load";
const ROTATIONS_PER_KEY: u32 = 200;

/// 8 threads sealing on `ALIAS` until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    seals: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(client: &Client) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seals = Arc::new(AtomicU64::new(0));
        let threads = (0..SEALERS)
            .map(|_| {
                let (c, stop, seals) = (client.clone(), stop.clone(), seals.clone());
                std::thread::spawn(move || {
                    let data = vec![0x5a; MESSAGE_LEN];
                    let ctx = EncryptionContext::new().with("bench", "rotation_load");
                    while !stop.load(Ordering::Relaxed) {
                        // Fails while the key is disabled: that is expected.
                        if c.seal(ALIAS, &data, &ctx).is_ok() {
                            seals.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            seals,
            threads,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The key under `ALIAS`, replaced by a fresh one when it has rotated
/// `ROTATIONS_PER_KEY` times.
struct Target {
    client: Client,
    key: String,
    rotations: u32,
}

impl Target {
    fn new(client: Client) -> Target {
        let key = client
            .create_key(KeySpec::default(), CreateKeyOptions::new().alias(ALIAS))
            .unwrap()
            .to_string();
        Target {
            client,
            key,
            rotations: 0,
        }
    }

    fn fresh_if_full(&mut self) {
        if self.rotations < ROTATIONS_PER_KEY {
            return;
        }
        let key = self
            .client
            .create_key(KeySpec::default(), CreateKeyOptions::new())
            .unwrap()
            .to_string();
        self.client.update_alias(ALIAS, &key).unwrap();
        self.key = key;
        self.rotations = 0;
    }
}

/// Per-call latencies of every measurement, by name.
type Samples = Arc<Mutex<BTreeMap<String, Vec<Duration>>>>;

fn rings() -> Vec<(&'static str, KeyRing, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let file = KeyRing::open_or_create(dir.path(), RootKey::raw([7; 32])).unwrap();
    vec![
        ("memory", KeyRing::in_memory(), None),
        ("file", file, Some(dir)),
    ]
}

#[derive(Clone, Copy)]
enum Write {
    Rotate,
    DisableEnable,
    RevokeGrant,
}

impl Write {
    fn name(self) -> &'static str {
        match self {
            Write::Rotate => "rotate_now",
            Write::DisableEnable => "disable_enable",
            Write::RevokeGrant => "revoke_grant",
        }
    }

    /// One timed write (with any untimed preparation).
    fn once(self, t: &mut Target) -> Duration {
        match self {
            Write::Rotate => {
                t.fresh_if_full();
                let start = Instant::now();
                t.client.rotate_key_on_demand(&t.key).unwrap();
                let d = start.elapsed();
                t.rotations += 1;
                d
            }
            Write::DisableEnable => {
                let start = Instant::now();
                t.client.disable_key(&t.key).unwrap();
                t.client.enable_key(&t.key).unwrap();
                start.elapsed()
            }
            Write::RevokeGrant => {
                let CreatedGrant {
                    grant_id: grant, ..
                } = t
                    .client
                    .create_grant(
                        &t.key,
                        GrantRequest::new(Principal::user("grantee").unwrap(), &[Action::Decrypt]),
                    )
                    .unwrap();
                let start = Instant::now();
                t.client.revoke_grant(&t.key, &grant).unwrap();
                start.elapsed()
            }
        }
    }
}

fn writers_under_load(c: &mut Criterion) {
    let samples: Samples = Arc::default();
    let mut throughput = Vec::new();
    let rings = rings();
    for (ring_name, ring, _dir) in &rings {
        let admin = ring.client(Principal::role("admin").unwrap());
        let mut target = Target::new(admin.clone());
        let mut g = c.benchmark_group(format!("rotation_load/{ring_name}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for write in [Write::Rotate, Write::DisableEnable, Write::RevokeGrant] {
            for loaded in [false, true] {
                let id = format!(
                    "{}/{}",
                    write.name(),
                    if loaded { "loaded" } else { "unloaded" }
                );
                let load = loaded.then(|| Load::start(&admin));
                let started = Instant::now();
                let mut mine = Vec::new();
                g.bench_function(&id, |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let d = write.once(&mut target);
                            mine.push(d);
                            total += d;
                        }
                        total
                    })
                });
                if let Some(load) = load {
                    let seals = load.seals.load(Ordering::Relaxed);
                    drop(load);
                    throughput.push(format!(
                        "{ring_name}/{id}: {:.0} seals/s by {SEALERS} threads",
                        seals as f64 / started.elapsed().as_secs_f64()
                    ));
                }
                samples
                    .lock()
                    .unwrap()
                    .insert(format!("{ring_name}/{id}"), mine);
            }
        }
        g.finish();
    }
    report(&samples.lock().unwrap(), &throughput);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(samples: &BTreeMap<String, Vec<Duration>>, throughput: &[String]) {
    let stats = |name: &str| {
        let mut v = samples.get(name)?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort();
        Some((v.len(), percentile(&v, 0.5), percentile(&v, 0.99)))
    };
    println!();
    println!(
        "rotation_load: per-call latency, {SEALERS} threads sealing {MESSAGE_LEN} B (loaded) vs none (unloaded)"
    );
    println!(
        "{:<32} {:>7} {:>12} {:>12} {:>7} {:>12} {:>12} {:>9} {:>9}",
        "write", "n", "median", "p99", "n(load)", "median", "p99", "x median", "x p99"
    );
    for ring in ["memory", "file"] {
        for write in [Write::Rotate, Write::DisableEnable, Write::RevokeGrant] {
            let base = format!("{ring}/{}", write.name());
            let (Some(u), Some(l)) = (
                stats(&format!("{base}/unloaded")),
                stats(&format!("{base}/loaded")),
            ) else {
                continue;
            };
            println!(
                "{:<32} {:>7} {:>12.1?} {:>12.1?} {:>7} {:>12.1?} {:>12.1?} {:>9.1} {:>9.1}",
                base,
                u.0,
                u.1,
                u.2,
                l.0,
                l.1,
                l.2,
                l.1.as_secs_f64() / u.1.as_secs_f64(),
                l.2.as_secs_f64() / u.2.as_secs_f64()
            );
        }
    }
    for t in throughput {
        println!("{t}");
    }
    println!();
}

criterion_group!(benches, writers_under_load);
criterion_main!(benches);
