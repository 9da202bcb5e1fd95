//! Streams on one thread and on every core, with their baselines in the
//! same run:
//!
//! - `stream`: 64 MiB through `seal_writer` (into `io::sink`) and
//!   `open_reader` (from memory), one thread vs the ring's default (every
//!   core), against raw AES-256-GCM over the same bytes in one call;
//! - `stream_file`: a file (1 GiB by default; `STRONGROOM_BENCH_STREAM_MB`)
//!   sealed file → file (`SealWriter::copy_from`) and opened file → file
//!   (`OpenReader::copy_to`), against the `age` CLI (X25519 recipient) on
//!   the same file, when `age` is installed (else the group says it
//!   skipped);
//!
//! The CPU cores kept busy and the peak memory of whole processes on such a
//! file (ours and `age`) are measured by `examples/stream_cost.rs`.
//!
//! `cargo bench --bench streams`; `cargo run --release --example
//! bench_report` prints the ratios.

use aes_gcm::aead::{AeadInOut, KeyInit};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use strongroom::{Client, CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};

fn client(threads: Option<usize>) -> (Client, String) {
    let mut b = KeyRing::builder();
    if let Some(t) = threads {
        b = b.threads(t);
    }
    let c = b.build().client(Principal::service("bench").unwrap());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    (c, key)
}

fn ctx() -> EncryptionContext {
    EncryptionContext::new().with("bench", "stream")
}

const MODES: [(&str, Option<usize>); 2] = [("all_cores", None), ("one_thread", Some(1))];

fn stream(c: &mut Criterion) {
    const N: usize = 64 << 20;
    let data: Vec<u8> = (0..N).map(|i| (i * 31 % 251) as u8).collect();
    let mut g = c.benchmark_group("stream");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(N as u64));
    for (label, threads) in MODES {
        let (client, key) = client(threads);
        g.bench_function(format!("seal_{label}"), |b| {
            b.iter(|| {
                let mut w = client
                    .seal_writer(&key, &ctx(), Default::default(), io::sink())
                    .unwrap();
                for piece in data.chunks(64 << 10) {
                    w.write_all(piece).unwrap();
                }
                w.finish().unwrap();
            })
        });
        let msg = client.seal(&key, &data, &ctx()).unwrap();
        g.bench_function(format!("open_{label}"), |b| {
            let mut buf = vec![0u8; 64 << 10];
            b.iter(|| {
                let mut r = client.open_reader(&msg[..], &ctx()).unwrap();
                let mut total = 0usize;
                loop {
                    let n = r.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                assert_eq!(total, N);
            })
        });
    }
    let raw = aes_gcm::Aes256Gcm::new(&Default::default());
    let nonce = aes_gcm::Nonce::default();
    let mut buf = data.clone();
    g.bench_function("raw_encrypt", |b| {
        b.iter(|| {
            raw.encrypt_inout_detached(&nonce, b"", buf.as_mut_slice().into())
                .unwrap()
        })
    });
    g.finish();
}

fn age_installed() -> bool {
    Command::new("age")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) {
    let st = cmd.status().expect("run age");
    assert!(st.success(), "{cmd:?} failed");
}

fn stream_file(c: &mut Criterion) {
    if !age_installed() {
        eprintln!(
            "stream_file: skipped (the age CLI is not installed; apt-get install age to measure it)"
        );
        return;
    }
    let mb: usize = std::env::var("STRONGROOM_BENCH_STREAM_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let n = mb << 20;
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    {
        let mut f = BufWriter::new(File::create(p("in")).unwrap());
        let block: Vec<u8> = (0..1 << 20).map(|i: usize| (i * 131 % 251) as u8).collect();
        for _ in 0..mb {
            f.write_all(&block).unwrap();
        }
        f.into_inner().unwrap().sync_all().unwrap();
    }
    run(Command::new("age-keygen").arg("-o").arg(p("age.key")));
    let key_text = std::fs::read_to_string(p("age.key")).unwrap();
    let recipient = key_text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen prints the public key")
        .to_owned();

    let mut g = c.benchmark_group("stream_file");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(100));
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(n as u64));
    // Every run, ours and age's alike, writes a new file with no backlog
    // of dirty pages from the run before: the output is flushed to disk
    // and removed in the (untimed) setup of the next run.
    let fresh = |out: &Path| {
        if let Ok(f) = File::open(out) {
            f.sync_all().unwrap();
            std::fs::remove_file(out).unwrap();
        }
    };
    g.bench_function("age_encrypt", |b| {
        b.iter_batched(
            || fresh(&p("out.age")),
            |()| {
                run(Command::new("age")
                    .arg("-r")
                    .arg(&recipient)
                    .arg("-o")
                    .arg(p("out.age"))
                    .arg(p("in")))
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("age_decrypt", |b| {
        b.iter_batched(
            || fresh(&p("dec.age")),
            |()| {
                run(Command::new("age")
                    .arg("-d")
                    .arg("-i")
                    .arg(p("age.key"))
                    .arg("-o")
                    .arg(p("dec.age"))
                    .arg(p("out.age")))
            },
            BatchSize::PerIteration,
        )
    });
    for (label, threads) in MODES {
        let (client, key) = client(threads);
        let seal = |to: &Path| seal_file(&client, &key, &p("in"), to);
        g.bench_function(format!("seal_{label}"), |b| {
            b.iter_batched(
                || fresh(&p("out.sr")),
                |()| seal(&p("out.sr")),
                BatchSize::PerIteration,
            )
        });
        seal(&p("out.sr"));
        g.bench_function(format!("open_{label}"), |b| {
            b.iter_batched(
                || fresh(&p("dec.sr")),
                |()| {
                    let copied = open_file(&client, &p("out.sr"), &p("dec.sr"));
                    assert_eq!(copied, n as u64);
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Seals the file `from` into the file `to` (straight into the frame
/// buffers).
fn seal_file(client: &Client, key: &str, from: &Path, to: &Path) {
    let mut input = File::open(from).unwrap();
    let out = File::create(to).unwrap();
    let mut w = client
        .seal_writer(key, &ctx(), Default::default(), out)
        .unwrap();
    w.copy_from(&mut input).unwrap();
    w.finish().unwrap();
}

/// Opens the file `from` into the file `to` (straight from the frame
/// buffers); the plaintext length.
fn open_file(client: &Client, from: &Path, to: &Path) -> u64 {
    let input = File::open(from).unwrap();
    let mut r = client.open_reader(input, &ctx()).unwrap();
    let mut out = File::create(to).unwrap();
    r.copy_to(&mut out).unwrap()
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = stream, stream_file
}

criterion_main!(benches);
