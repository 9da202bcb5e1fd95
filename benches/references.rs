//! Seal + open of 1 KiB against other envelope libraries, in one run:
//! Tink's `KmsEnvelopeAead` (Python, a local AES-256-GCM key as the KEK;
//! `eval "$(.ci/tink-setup)"`) and the AWS Encryption SDK for Python (raw
//! AES-256 keyring, committing suite without signature;
//! `eval "$(.ci/esdk-setup)"`). Each side times the same loop the same way
//! (best of three timed loops after a warm-up, one thread); a reference
//! that is not installed is reported as skipped.
//!
//! `cargo bench --bench references`; writes
//! `target/criterion/references.json`, which `examples/bench_report.rs`
//! prints as "ours ÷ theirs" speed ratios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use strongroom::{CreateKeyOptions, EncryptionContext, KeyRing, KeySpec, Principal};

/// Best of three loops of `n` calls of `f`, in ns per call.
fn best_of_three(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

/// A reference's ns per seal+open, or why it was skipped.
fn python(var: &str, venv: &str, script: &str, n: u32) -> Result<f64, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(venv).join("bin/python"));
    let out = Command::new(&py)
        .arg(root.join("benches/reference").join(script))
        .arg(n.to_string())
        .output()
        .map_err(|e| format!("{}: {e}", py.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
            .to_owned());
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("bad output: {e}"))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that is not ours means
    // another bench was asked for.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"references".contains(a.as_str()))
    {
        return;
    }
    let ring = KeyRing::builder().threads(1).build();
    let c = ring.client(Principal::service("bench").unwrap());
    let key = c
        .create_key(KeySpec::default(), CreateKeyOptions::new())
        .unwrap()
        .to_string();
    let ctx = EncryptionContext::new().with("bench", "1");
    let data = vec![0x5au8; 1024];
    let ours = best_of_three(20_000, || {
        let m = c.seal(&key, &data, &ctx).unwrap();
        let o = c.open(&m, &ctx).unwrap();
        std::hint::black_box(o);
    });
    println!("seal+open 1 KiB, one thread (ns per seal+open; ratio = theirs ÷ ours):");
    println!("  strongroom             {ours:>10.0}");
    let mut json = format!("{{\"strongroom\":{ours:.0}");
    for (name, var, venv, script, n) in [
        (
            "tink_python",
            "STRONGROOM_TINK_PYTHON",
            ".ci/tink-venv",
            "tink_envelope.py",
            20_000,
        ),
        (
            "esdk_python",
            "STRONGROOM_ESDK_PYTHON",
            ".ci/esdk-venv",
            "esdk_envelope.py",
            2_000,
        ),
    ] {
        match python(var, venv, script, n) {
            Ok(ns) => {
                println!("  {name:<22} {ns:>10.0}   {:.1}×", ns / ours);
                json.push_str(&format!(",\"{name}\":{ns:.0}"));
            }
            Err(why) => println!("  {name:<22} skipped ({why}; set {var})"),
        }
    }
    json.push('}');
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("references.json"), json);
    }
}
