//! Prints one table of ratios (ours / baseline) from the last criterion run.
//!
//! Run `cargo bench --bench envelope` first (with `--features aws-lc-rs`
//! for the accelerated provider's rows), then
//! `cargo run --release --example bench_report`.
//!
//! For throughput rows the ratio is our throughput over the baseline's
//! (higher is better, 1.00 = as fast as raw AEAD). For latency rows it is
//! baseline time over our time, i.e. the same "fraction of baseline speed".

use std::path::{Path, PathBuf};

fn mean_ns(root: &Path, group: &str, id: &str) -> Option<f64> {
    let path: PathBuf = root.join(group).join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(&path).ok()?;
    // Minimal extraction of "mean":{..."point_estimate":X: avoids a JSON
    // dependency in the library for an example.
    let mean = text.find("\"mean\"")?;
    let rest = &text[mean..];
    let pe = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let rest = &rest[pe..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse().ok()
}

/// The criterion output directory: `$CARGO_TARGET_DIR/criterion` when that
/// is set (as cargo does), else `target/criterion` in this crate.
fn criterion_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => {
            let t = PathBuf::from(t);
            let t = if t.is_absolute() {
                t
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(t)
            };
            t.join("criterion")
        }
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion"),
    }
}

/// The lower bound of a target such as "≥ 0.90" or "≥ 0.83 (...)".
fn target_min(target: &str) -> Option<f64> {
    target
        .strip_prefix("≥ ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whole processes streaming a file, ours and the `age` CLI
/// (`examples/stream_cost.rs`, written to `stream_file_cost.txt`): wall
/// time, CPU cores busy and peak RSS. Returns how many rows miss their
/// target (every core: ≥ 1.70 cores busy, peak RSS ≤ 32 MiB, ≥ 1.60× as
/// fast as `age`).
fn print_stream_cost(root: &Path) -> usize {
    let Ok(text) = std::fs::read_to_string(root.join("stream_file_cost.txt")) else {
        println!(
            "stream file→file CPU/RSS: not measured (run `cargo run --release --example stream_cost`)"
        );
        return 0;
    };
    let mut rows: Vec<(String, [f64; 4])> = Vec::new();
    let mut size = String::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            size = comment.split(';').next().unwrap_or_default().to_owned();
            continue;
        }
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        let v: Vec<f64> = parts.filter_map(|x| x.parse().ok()).collect();
        if let [e, u, s, m] = v[..] {
            rows.push((name.to_owned(), [e, u, s, m]));
        }
    }
    let get = |name: &str| rows.iter().find(|r| r.0 == name).map(|r| r.1);
    println!("stream file→file, whole processes ({size}; examples/stream_cost.rs, median of 3):");
    println!(
        "{:<20} {:>8} {:>11} {:>13} {:>9}  target",
        "process", "wall (s)", "cores busy", "peak RSS MiB", "vs age"
    );
    let mut missed = 0;
    for (name, [e, u, s, m]) in &rows {
        let cores = (u + s) / e.max(0.01);
        let rss = m / 1024.0;
        let age = if name.starts_with("seal") {
            get("age_encrypt")
        } else if name.starts_with("open") {
            get("age_decrypt")
        } else {
            None
        };
        let vs_age = age.map(|a| a[0] / e.max(0.01));
        let mut target = String::new();
        if name.ends_with("all_cores") {
            target.push_str("≥ 1.70 cores, ≤ 32 MiB, ≥ 1.60 vs age");
            let miss = cores < 1.70 || rss > 32.0 || vs_age.is_some_and(|r| r < 1.60);
            if miss {
                missed += 1;
                target.push_str("  << MISSES TARGET");
            }
        }
        println!(
            "{name:<20} {e:>8.2} {cores:>11.2} {rss:>13.1} {:>9}  {target}",
            vs_age.map_or("-".to_owned(), |r| format!("{r:.2}"))
        );
    }
    missed
}

fn main() {
    let root = criterion_dir();
    let sizes = [64usize, 1024, 16384, 1048576];
    let mut rows: Vec<(String, Option<f64>, Option<f64>, &str)> = Vec::new();
    for (group, aead) in [
        ("seal_aes", "AES-256-GCM"),
        ("seal_chacha", "ChaCha20-Poly1305"),
    ] {
        for n in sizes {
            let target = if n == 1048576 { "≥ 0.90" } else { "" };
            rows.push((
                format!("seal {n} B vs raw {aead} encrypt"),
                mean_ns(&root, group, &format!("seal/{n}")),
                mean_ns(&root, group, &format!("raw_encrypt/{n}")),
                target,
            ));
            rows.push((
                format!("open {n} B vs raw {aead} decrypt"),
                mean_ns(&root, group, &format!("open/{n}")),
                mean_ns(&root, group, &format!("raw_decrypt/{n}")),
                target,
            ));
        }
    }
    let d = |id: &str| mean_ns(&root, "direct", id);
    rows.push((
        "encrypt 1 KiB vs RNG nonce + AEAD".into(),
        d("encrypt_1k"),
        d("raw_aead_1k"),
        "",
    ));
    rows.push((
        "decrypt 1 KiB vs RNG nonce + AEAD".into(),
        d("decrypt_1k"),
        d("raw_aead_1k"),
        "",
    ));
    rows.push((
        "generate_data_key vs RNG fill + wrap".into(),
        d("generate_data_key"),
        d("composite_data_key"),
        "",
    ));
    rows.push((
        "seal 1 KiB vs RNG fill + wrap + body AEAD".into(),
        d("seal_1k"),
        d("composite_seal_1k"),
        "≥ 0.60",
    ));
    rows.push((
        "open 1 KiB vs unwrap + key schedule + body AEAD".into(),
        d("open_1k"),
        d("composite_open_1k"),
        "≥ 0.50",
    ));
    rows.push((
        "seal 1 KiB vs the format's minimum (+ HKDF, header tag)".into(),
        d("seal_1k"),
        d("format_seal_1k"),
        "(info: pipeline overhead)",
    ));
    rows.push((
        "open 1 KiB vs the format's minimum (+ HKDF, header tag)".into(),
        d("open_1k"),
        d("format_open_1k"),
        "(info: pipeline overhead)",
    ));
    rows.push((
        "encrypt 1 KiB, one key: 100,000 vs 10 keys".into(),
        mean_ns(&root, "scale", "encrypt_1k_one_key/100000"),
        mean_ns(&root, "scale", "encrypt_1k_one_key/10"),
        "≥ 0.83 (≤ 1.2× latency)",
    ));
    rows.push((
        "encrypt 1 KiB, spread: 100,000 vs 10 keys".into(),
        mean_ns(&root, "scale", "encrypt_1k_spread/100000"),
        mean_ns(&root, "scale", "encrypt_1k_spread/10"),
        "(cold keys: memory latency)",
    ));
    for (ours, base, label) in [
        (
            "p256_sign",
            "raw_p256_sign",
            "ECDSA P-256 sign vs p256 crate",
        ),
        (
            "p256_verify",
            "raw_p256_verify",
            "ECDSA P-256 verify vs p256 crate",
        ),
        (
            "ed25519_sign",
            "raw_ed25519_sign",
            "Ed25519 sign vs ed25519-dalek",
        ),
        (
            "ed25519_verify",
            "raw_ed25519_verify",
            "Ed25519 verify vs ed25519-dalek",
        ),
    ] {
        rows.push((
            label.into(),
            mean_ns(&root, "sign", ours),
            mean_ns(&root, "sign", base),
            "≥ 0.90",
        ));
    }
    // The accelerated provider (feature `aws-lc-rs`) against aws-lc-rs.
    for (ours, base, label) in [
        (
            "seal_1MiB",
            "raw_encrypt_1MiB",
            "aws-lc-rs provider: seal 1 MiB vs raw AES-GCM",
        ),
        (
            "open_1MiB",
            "raw_decrypt_1MiB",
            "aws-lc-rs provider: open 1 MiB vs raw AES-GCM",
        ),
        (
            "p256_sign",
            "raw_p256_sign",
            "aws-lc-rs provider: P-256 sign vs aws-lc-rs",
        ),
        (
            "p256_verify",
            "raw_p256_verify",
            "aws-lc-rs provider: P-256 verify vs aws-lc-rs",
        ),
    ] {
        rows.push((
            label.into(),
            mean_ns(&root, "provider", ours),
            mean_ns(&root, "provider", base),
            "≥ 0.80",
        ));
    }
    rows.push((
        "open 1 MiB AES incl. zeroize vs raw decrypt".into(),
        mean_ns(&root, "seal_aes", "open/1048576")
            .zip(mean_ns(&root, "zeroize", "1048576"))
            .map(|(a, b)| a + b),
        mean_ns(&root, "seal_aes", "raw_decrypt/1048576"),
        "(info: plaintext zeroized on drop)",
    ));

    for (op, base, target) in [
        ("seal", "raw_encrypt", "≥ 1.60"),
        ("open", "raw_decrypt", "≥ 1.60"),
    ] {
        rows.push((
            format!("{op} 64 MiB, every core vs raw AES-GCM"),
            mean_ns(&root, "large", &format!("{op}_all_cores")),
            mean_ns(&root, "large", base),
            target,
        ));
        rows.push((
            format!("{op} 64 MiB, one thread vs raw AES-GCM"),
            mean_ns(&root, "large", &format!("{op}_one_thread")),
            mean_ns(&root, "large", base),
            "≥ 0.90",
        ));
    }
    rows.push((
        "seal 1 KiB with the data-key cache vs without".into(),
        mean_ns(&root, "cache", "seal_1k_cached"),
        mean_ns(&root, "cache", "seal_1k_uncached"),
        "≥ 2.50",
    ));
    rows.push((
        "open 1 KiB with the data-key cache vs without".into(),
        mean_ns(&root, "cache", "open_1k_cached"),
        mean_ns(&root, "cache", "open_1k_uncached"),
        "",
    ));
    for (ours, base, label) in [
        (
            "open_range_4k",
            "open_full",
            "open_range 4 KiB vs open, 64 MiB message",
        ),
        (
            "rewrap",
            "re_encrypt_message",
            "rewrap_message vs re_encrypt, 64 MiB",
        ),
        (
            "rewrap_header",
            "re_encrypt_message",
            "rewrap_header vs re_encrypt, 64 MiB",
        ),
    ] {
        rows.push((
            label.into(),
            mean_ns(&root, "ranged", ours),
            mean_ns(&root, "ranged", base),
            "",
        ));
    }

    // Streams (benches/streams.rs): ratios are base ÷ ours, so "seal every
    // core vs one thread" is how many times faster the workers make it.
    for op in ["seal", "open"] {
        rows.push((
            format!("stream {op} 64 MiB, every core vs one thread"),
            mean_ns(&root, "stream", &format!("{op}_all_cores")),
            mean_ns(&root, "stream", &format!("{op}_one_thread")),
            "",
        ));
        rows.push((
            format!("stream {op} 64 MiB, every core vs raw AES-GCM"),
            mean_ns(&root, "stream", &format!("{op}_all_cores")),
            mean_ns(&root, "stream", "raw_encrypt"),
            "",
        ));
    }
    for (op, age) in [("seal", "age_encrypt"), ("open", "age_decrypt")] {
        rows.push((
            format!("stream {op} file→file, every core vs age CLI"),
            mean_ns(&root, "stream_file", &format!("{op}_all_cores")),
            mean_ns(&root, "stream_file", age),
            "≥ 1.60",
        ));
        rows.push((
            format!("stream {op} file→file, one thread vs age CLI"),
            mean_ns(&root, "stream_file", &format!("{op}_one_thread")),
            mean_ns(&root, "stream_file", age),
            "",
        ));
    }

    if rows.iter().all(|r| r.1.is_none() || r.2.is_none()) {
        eprintln!(
            "No benchmark results under {}.\nRun the benchmarks first, with the same \
             CARGO_TARGET_DIR:\n  cargo bench --bench envelope\nthen run this report again.",
            root.display()
        );
        std::process::exit(1);
    }
    // Two threads on one shared ring: ours = the 2-thread time per
    // operation, base = the 1-thread time, so the ratio is the speed-up.
    for (op, target) in [
        ("encrypt_1k", "≥ 1.80"),
        ("seal_1k", "≥ 1.85"),
        ("raw_aead_1k", "(info: raw AES-GCM)"),
    ] {
        rows.push((
            format!("{op}, 2 threads ÷ 1 thread (speed-up)"),
            mean_ns(&root, "scaling", &format!("{op}/2_threads")),
            mean_ns(&root, "scaling", &format!("{op}/1_threads")),
            target,
        ));
    }
    // Other envelope libraries (benches/references.rs): seal+open 1 KiB.
    let refs = std::fs::read_to_string(root.join("references.json")).unwrap_or_default();
    let ref_ns = |name: &str| -> Option<f64> {
        let at = refs.find(&format!("\"{name}\":"))? + name.len() + 3;
        let rest = &refs[at..];
        rest[..rest.find([',', '}'])?].trim().parse().ok()
    };
    for (name, label) in [
        ("tink_python", "seal+open 1 KiB vs Tink (Python) envelope"),
        (
            "esdk_python",
            "seal+open 1 KiB vs AWS ESDK (Python), raw AES",
        ),
    ] {
        rows.push((
            label.into(),
            ref_ns("strongroom"),
            ref_ns(name),
            "≥ 1.00 (keep ahead)",
        ));
    }
    println!("results from {}", root.display());
    println!(
        "{:<48} {:>12} {:>12} {:>7}  target",
        "comparison", "ours (µs)", "base (µs)", "ratio"
    );
    let mut missed = 0;
    for (name, ours, base, target) in rows {
        match (ours, base) {
            (Some(o), Some(b)) => {
                let ratio = b / o;
                let flag = match target_min(target) {
                    Some(min) if ratio < min => {
                        missed += 1;
                        "  << MISSES TARGET"
                    }
                    _ => "",
                };
                println!(
                    "{name:<48} {:>12.2} {:>12.2} {ratio:>7.2}  {target}{flag}",
                    o / 1000.0,
                    b / 1000.0,
                )
            }
            _ => println!(
                "{name:<48} {:>12} {:>12} {:>7}  (not measured: run its benchmark)",
                "-", "-", "-"
            ),
        }
    }
    missed += print_stream_cost(&root);
    if missed > 0 {
        println!("{missed} row(s) miss their target");
    }
    // Allocations per operation (benches/allocs.rs).
    if let Ok(text) = std::fs::read_to_string(root.join("allocs.json")) {
        println!("allocations per operation (benches/allocs.rs): {text}");
    }
}
