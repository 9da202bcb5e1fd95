//! AWS Encryption SDK messages through strongroom against strongroom's own
//! envelope format, same ring, same key, same bytes, same run.
//!
//! Run: `cargo bench --features esdk --bench esdk`.
//!
//! Groups, for 1 KiB and 1 MiB:
//! - `esdk_0478`: `esdk_seal` / `esdk_open` of suite 0x0478 (unsigned);
//! - `esdk_0578`: the same with suite 0x0578 (ECDSA P-384 signature);
//! - `strongroom`: `seal` / `open` (strongroom's own format).
//!
//! The ESDK messages use a 64 KiB frame, as strongroom's default, so the
//! comparison is of formats, not of frame sizes (`esdk_0578_4k` uses the
//! ESDK's default 4 KiB frame).
//!
//! At the end, if the Python reference SDK is installed (`eval "$(.ci/esdk-setup)"`),
//! its encrypt/decrypt timings on the same sizes are printed for reference.

#[path = "../tests/esdk/common.rs"]
mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use std::time::Duration;
use strongroom::EncryptionContext;
use strongroom::interop::esdk::{EsdkOptions, EsdkSuite};

const SIZES: [usize; 2] = [1024, 1024 * 1024];
const KEY: [u8; 32] = [0x42; 32];

fn benches(c: &mut Criterion) {
    let client = common::ring_with_key(&KEY);
    let ctx = EncryptionContext::new().with("bench", "1");
    let groups = [
        (
            "esdk_0478",
            Some(
                EsdkOptions::new()
                    .suite(EsdkSuite::AesGcmHkdfSha512Commit)
                    .frame_len(64 * 1024),
            ),
        ),
        (
            "esdk_0578",
            Some(
                EsdkOptions::new()
                    .suite(EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384)
                    .frame_len(64 * 1024),
            ),
        ),
        (
            "esdk_0578_4k",
            Some(EsdkOptions::new().suite(EsdkSuite::AesGcmHkdfSha512CommitEcdsaP384)),
        ),
        ("strongroom", None),
    ];
    for (name, opts) in groups {
        let mut g = c.benchmark_group(name);
        for n in SIZES {
            let data = common::data(n);
            g.throughput(Throughput::Bytes(n as u64));
            match &opts {
                Some(o) => {
                    g.bench_with_input(BenchmarkId::new("seal", n), &data, |b, d| {
                        b.iter(|| {
                            black_box(
                                client
                                    .esdk_seal_with(common::ALIAS, d, &ctx, o.clone())
                                    .unwrap(),
                            )
                        })
                    });
                    let m = client
                        .esdk_seal_with(common::ALIAS, &data, &ctx, o.clone())
                        .unwrap();
                    g.bench_with_input(BenchmarkId::new("open", n), &m, |b, m| {
                        b.iter_with_large_drop(|| {
                            client
                                .esdk_open_with(common::ALIAS, m, &ctx, o.clone())
                                .unwrap()
                        })
                    });
                }
                None => {
                    g.bench_with_input(BenchmarkId::new("seal", n), &data, |b, d| {
                        b.iter(|| black_box(client.seal(common::ALIAS, d, &ctx).unwrap()))
                    });
                    let m = client.seal(common::ALIAS, &data, &ctx).unwrap();
                    g.bench_with_input(BenchmarkId::new("open", n), &m, |b, m| {
                        b.iter_with_large_drop(|| client.open(m, &ctx).unwrap())
                    });
                }
            }
        }
        g.finish();
    }
    python_reference();
}

/// The Python SDK's own timings on the same sizes, printed (not a
/// criterion measurement: another process, another language).
fn python_reference() {
    let Ok(py) = common::python() else {
        println!("python reference: skipped (no aws-encryption-sdk; eval \"$(.ci/esdk-setup)\")");
        return;
    };
    let job = json!({
        "op": "bench",
        "key": <base64ct::Base64 as base64ct::Encoding>::encode_string(&KEY),
        "namespace": common::NAMESPACE,
        "name": common::NAME,
        "context": {"bench": "1"},
        "sizes": SIZES,
        "suites": [0x0478, 0x0578],
        "frame_len": 64 * 1024,
        "seconds": 1.0,
    });
    let answer = common::run_python(&py, &job, Duration::from_secs(600));
    println!(
        "python reference (aws-encryption-sdk {}, 64 KiB frames):",
        answer["sdk"]
    );
    for r in answer["results"].as_array().into_iter().flatten() {
        println!(
            "  {:#06x} {:>8} {:<7} {:>12.1} µs/op {:>9.2} MiB/s",
            r["suite"].as_u64().unwrap_or(0),
            r["size"].as_u64().unwrap_or(0),
            r["op"].as_str().unwrap_or(""),
            r["per_op_us"].as_f64().unwrap_or(0.0),
            r["mib_per_s"].as_f64().unwrap_or(0.0)
        );
    }
}

criterion_group! {
    name = esdk;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(esdk);
